//! Fuzz target: one whole text-protocol connection without a socket, the text and
//! meta sibling of `connection`. The input is decoded into a stream of classic and meta
//! commands over a few keys; the stream arrives in arbitrary chunks and goes through
//! `dispatch::process` as `server/connection.rs` drives it (unconsumed bytes kept,
//! `skip` honoured, nothing after `close`), against a real `Store`. A model of every
//! key (absent, or exactly these bytes and flags) gives the exact answer to each
//! command, and the whole output must match the answers byte for byte (CAS values and
//! the version string as patterns). The store never evicts here (a few small keys in
//! 4 MB) and exptimes are 0 or -1, so the model is exact.
//!
//! ```text
//!  input:  | c0 | op0 a0 b0 | op1 a1 b1 | ...
//!    c0: bits 0-1 output high-water mark, bits 2-3 the value size from which a
//!        data block is read in place (1, 6, 12, never), all: chunking seed;
//!        each op: command, key, argument
//! ```

#![no_main]

use std::collections::HashMap;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use pincache::config::Config;
use pincache::protocol::Limits;
use pincache::server::arrival::Arrival;
use pincache::server::conns::ConnTable;
use pincache::server::dispatch::{process, Context, Protocol, Session};
use pincache::server::log_limit::LogLimit;
use pincache::server::stats::{Settings, Stats};
use pincache::store::{Clock, Store, StoreConfig};

const ITEM_SIZE_MAX: usize = 64 * 1024;
const HIGH_WATER: [usize; 4] = [256 * 1024, 1, 50, 4096];
/// Keys holding text (values start with a letter) and keys holding numbers.
const TEXT_KEYS: [&str; 3] = ["a", "b", "key:c"];
const NUMERIC_KEYS: [&str; 2] = ["n0", "n1"];

fuzz_target!(|data: &[u8]| {
    let Some((&config, ops)) = data.split_first() else {
        return;
    };
    let mut model = Model::default();
    let mut stream = Vec::new();
    let mut want = String::new();
    for op in ops.chunks_exact(3) {
        if model.closed || stream.len() > 1 << 20 {
            break;
        }
        model.op(op, &mut stream, &mut want);
    }
    let got = run(config, &stream);
    if let Err(at) = matches(want.as_bytes(), &got) {
        panic!(
            "answer differs at byte {at}\nstream: {:?}\nwant:   {:?}\ngot:    {:?}",
            String::from_utf8_lossy(&stream),
            want,
            String::from_utf8_lossy(&got)
        );
    }
});

/// Feeds the stream in chunks through `process`; returns everything answered.
fn run(config: u8, stream: &[u8]) -> Vec<u8> {
    let mut store = match Store::new(
        StoreConfig {
            memory_limit: 4 << 20,
            item_size_max: ITEM_SIZE_MAX,
        },
        Clock::start(),
    ) {
        Ok(store) => store,
        Err(e) => panic!("cannot map the store: {e}"),
    };
    let settings = Settings {
        started: Instant::now(),
        port: 11211,
        config: Config {
            memory_limit_mb: 4,
            item_size_max: ITEM_SIZE_MAX,
            ..Config::default()
        },
    };
    let mut stats = Stats::default();
    let mut log = LogLimit::new(Instant::now());
    let conns = ConnTable::new(3, "tcp:127.0.0.1:11211".into(), Instant::now());
    let mut session = Session {
        protocol: Protocol::Text,
        ..Session::default()
    };
    let high_water = HIGH_WATER[usize::from(config & 3)];
    let in_place_min = [1, 6, 12, usize::MAX][usize::from((config >> 2) & 3)];
    let mut arriving: Option<Arrival> = None;
    let mut rng = u64::from(config) << 8 | 1;
    let (mut input, mut got, mut out) = (Vec::new(), Vec::new(), Vec::new());
    let (mut fed, mut skip) = (0usize, 0u64);
    while fed < stream.len() {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let mut chunk = (1 + (rng % 300) as usize).min(stream.len() - fed);
        // A read while a value arrives may go straight into its item.
        if let Some(a) = arriving.as_mut().filter(|a| a.value_left() > 0) {
            if rng & 0x100 != 0 {
                let n = chunk.min(a.value_left());
                a.room(&mut store)[..n].copy_from_slice(&stream[fed..fed + n]);
                a.advance(n);
                (fed, chunk) = (fed + n, chunk - n);
            }
        }
        input.extend_from_slice(&stream[fed..fed + chunk]);
        fed += chunk;
        loop {
            let dropped = skip.min(input.len() as u64) as usize;
            input.drain(..dropped);
            skip -= dropped as u64;
            if skip > 0 {
                break;
            }
            let mut ctx = Context {
                store: &mut store,
                stats: &mut stats,
                settings: &settings,
                sasl: None,
                limits: Limits {
                    max_value_len: ITEM_SIZE_MAX,
                },
                log: &mut log,
                conns: &conns,
                in_place_min,
            };
            if let Some(a) = arriving.as_mut() {
                let n = a.feed(&input, ctx.store);
                input.drain(..n);
                if !a.is_complete() {
                    break;
                }
                if let Some(a) = arriving.take() {
                    a.finish(&mut ctx, &mut got);
                }
            }
            if input.is_empty() {
                break;
            }
            out.clear();
            let p = process(
                &input,
                &mut out,
                None,
                high_water,
                &mut ctx,
                &mut session,
                "fuzz",
            );
            assert!(p.consumed <= input.len());
            got.extend_from_slice(&out);
            input.drain(..p.consumed);
            skip = p.skip;
            if p.close {
                return got;
            }
            if p.arrival.is_some() {
                arriving = p.arrival;
                continue;
            }
            if !p.throttled {
                break;
            }
        }
        if let Err(e) = store.check_consistency() {
            panic!("store inconsistent: {e}");
        }
    }
    if let Some(a) = arriving.take() {
        a.abandon(&mut store);
    }
    got
}

/// `got` must be exactly `want`, where `%d` in `want` stands for one or more digits and
/// `%s` for one or more bytes other than space and line ends. Err: offset in `got`.
fn matches(want: &[u8], got: &[u8]) -> Result<(), usize> {
    let (mut w, mut g) = (0, 0);
    while w < want.len() {
        let placeholder = want[w] == b'%' && matches!(want.get(w + 1), Some(b'd' | b's'));
        if !placeholder {
            if got.get(g) != Some(&want[w]) {
                return Err(g);
            }
            (w, g) = (w + 1, g + 1);
            continue;
        }
        let digits = want[w + 1] == b'd';
        let run = got[g..]
            .iter()
            .take_while(|&&b| {
                if digits {
                    b.is_ascii_digit()
                } else {
                    !b" \r\n".contains(&b)
                }
            })
            .count();
        if run == 0 {
            return Err(g);
        }
        (w, g) = (w + 2, g + run);
    }
    if g == got.len() {
        Ok(())
    } else {
        Err(g)
    }
}

/// What the model knows of one key: present with these bytes and flags, or absent.
#[derive(Clone, Debug)]
struct Item {
    value: Vec<u8>,
    flags: u32,
}

#[derive(Default)]
struct Model {
    items: HashMap<&'static str, Item>,
    closed: bool,
}

/// Which store command a classic line or an `ms` mode is.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Set,
    Add,
    Replace,
    Append,
    Prepend,
}

impl Model {
    /// Decodes one op (command, key, argument), appends its request and its answer.
    fn op(&mut self, op: &[u8], stream: &mut Vec<u8>, want: &mut String) {
        let (cmd, k, arg) = (op[0], op[1], op[2]);
        let text_key = TEXT_KEYS[usize::from(k) % TEXT_KEYS.len()];
        let num_key = NUMERIC_KEYS[usize::from(k) % NUMERIC_KEYS.len()];
        let any_key = if k & 0x80 != 0 { num_key } else { text_key };
        let noreply = arg & 0x80 != 0;
        match cmd % 16 {
            0..=2 => self.store(classic_mode(cmd / 16), text_key, arg, noreply, stream, want),
            3 => self.set_number(num_key, arg, stream, want),
            4 => self.get(any_key, k & 0x40 != 0, stream, want),
            5 => self.delete(any_key, noreply, stream, want),
            6 => self.arith(num_key, arg, k & 0x40 != 0, noreply, stream, want),
            7 => self.touch(any_key, arg, noreply, stream, want),
            8 | 9 => self.mg(any_key, arg, stream, want),
            10 | 11 => self.ms(text_key, cmd / 16, arg, stream, want),
            12 => self.md(any_key, arg, stream, want),
            13 => self.ma(num_key, arg, stream, want),
            14 => self.misc(arg, stream, want),
            _ => self.cas_mismatch(text_key, arg, stream, want),
        }
    }

    fn present(&self, key: &str) -> Option<&Item> {
        self.items.get(key)
    }
}

fn classic_mode(n: u8) -> Mode {
    [
        Mode::Set,
        Mode::Add,
        Mode::Replace,
        Mode::Append,
        Mode::Prepend,
    ][usize::from(n) % 5]
}

/// A text value from one byte: starts with a letter, sometimes holds CRLF, rarely too
/// large for the store.
fn value_of(arg: u8) -> Vec<u8> {
    if arg & 0x7f == 0x7f {
        return vec![b'x'; ITEM_SIZE_MAX + 1];
    }
    let len = 1 + usize::from(arg % 13);
    let mut v: Vec<u8> = (0..len)
        .map(|i| b'a' + ((usize::from(arg) + i * 7) % 26) as u8)
        .collect();
    if arg % 5 == 0 && len > 3 {
        v[1] = b'\r';
        v[2] = b'\n';
    }
    v
}

fn push_block(stream: &mut Vec<u8>, line: &str, value: &[u8]) {
    stream.extend_from_slice(line.as_bytes());
    stream.extend_from_slice(value);
    stream.extend_from_slice(b"\r\n");
}

/// The stored bytes after incr/decr: the new number, padded with spaces to the old
/// length when shorter (the store rewrites the value in place).
fn arith_result(old: &[u8], incr: bool, delta: u64) -> Option<Vec<u8>> {
    let digits = old.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || old[digits..].iter().any(|&b| b != b' ') {
        return None;
    }
    let n: u64 = std::str::from_utf8(&old[..digits]).ok()?.parse().ok()?;
    let new = if incr {
        n.wrapping_add(delta)
    } else {
        n.saturating_sub(delta)
    };
    let mut text = new.to_string().into_bytes();
    if text.len() < old.len() {
        text.resize(old.len(), b' ');
    }
    Some(text)
}

/// Appends ` k<key>` / ` O<token>` echoes in the order the request gave them.
/// The base64 form of a model key (`ms ... b`).
fn base64_of(key: &str) -> &'static str {
    match key {
        "a" => "YQ==",
        "b" => "Yg==",
        _ => "a2V5OmM=",
    }
}

fn echo(order: &[(&str, String)], want: &mut String) {
    for (_, text) in order {
        want.push(' ');
        want.push_str(text);
    }
}

impl Model {
    fn store(
        &mut self,
        mode: Mode,
        key: &'static str,
        arg: u8,
        noreply: bool,
        stream: &mut Vec<u8>,
        want: &mut String,
    ) {
        let value = value_of(arg);
        let (flags, expired) = (u32::from(arg % 4) * 1000, arg % 11 == 0);
        let name = ["set", "add", "replace", "append", "prepend"][mode as usize];
        let exptime = if expired { "-1" } else { "0" };
        let tail = if noreply { " noreply" } else { "" };
        let line = format!("{name} {key} {flags} {exptime} {}{tail}\r\n", value.len());
        push_block(stream, &line, &value);
        let answer = if value.len() > ITEM_SIZE_MAX {
            if mode == Mode::Set {
                self.items.remove(key);
            }
            "SERVER_ERROR object too large for cache"
        } else if self.apply(mode, key, value, flags, expired) {
            "STORED"
        } else {
            "NOT_STORED"
        };
        if !noreply {
            want.push_str(answer);
            want.push_str("\r\n");
        }
    }

    /// Applies a store to the model; false when the mode refuses it. Append and prepend
    /// keep the item's flags and expiry.
    fn apply(
        &mut self,
        mode: Mode,
        key: &'static str,
        value: Vec<u8>,
        flags: u32,
        expired: bool,
    ) -> bool {
        let present = self.items.get_mut(key);
        match (mode, present) {
            (Mode::Add, Some(_)) | (Mode::Replace | Mode::Append | Mode::Prepend, None) => false,
            (Mode::Append, Some(item)) => {
                item.value.extend_from_slice(&value);
                true
            }
            (Mode::Prepend, Some(item)) => {
                let mut v = value;
                v.extend_from_slice(&item.value);
                item.value = v;
                true
            }
            _ => {
                if expired {
                    self.items.remove(key);
                } else {
                    self.items.insert(key, Item { value, flags });
                }
                true
            }
        }
    }

    fn set_number(&mut self, key: &'static str, arg: u8, stream: &mut Vec<u8>, want: &mut String) {
        let value = (u32::from(arg) * 7).to_string().into_bytes();
        push_block(
            stream,
            &format!("set {key} 0 0 {}\r\n", value.len()),
            &value,
        );
        want.push_str("STORED\r\n");
        self.items.insert(key, Item { value, flags: 0 });
    }

    fn get(&mut self, key: &'static str, gets: bool, stream: &mut Vec<u8>, want: &mut String) {
        let cmd = if gets { "gets" } else { "get" };
        stream.extend_from_slice(format!("{cmd} {key}\r\n").as_bytes());
        if let Some(item) = self.present(key) {
            let cas = if gets { " %d" } else { "" };
            want.push_str(&format!(
                "VALUE {key} {} {}{cas}\r\n",
                item.flags,
                item.value.len()
            ));
            want.push_str(&String::from_utf8_lossy(&item.value));
            want.push_str("\r\n");
        }
        want.push_str("END\r\n");
    }

    fn delete(
        &mut self,
        key: &'static str,
        noreply: bool,
        stream: &mut Vec<u8>,
        want: &mut String,
    ) {
        let tail = if noreply { " noreply" } else { "" };
        stream.extend_from_slice(format!("delete {key}{tail}\r\n").as_bytes());
        let answer = if self.items.remove(key).is_some() {
            "DELETED\r\n"
        } else {
            "NOT_FOUND\r\n"
        };
        if !noreply {
            want.push_str(answer);
        }
    }

    fn arith(
        &mut self,
        key: &'static str,
        arg: u8,
        decr: bool,
        noreply: bool,
        stream: &mut Vec<u8>,
        want: &mut String,
    ) {
        let (cmd, delta) = (if decr { "decr" } else { "incr" }, u64::from(arg % 50));
        let tail = if noreply { " noreply" } else { "" };
        stream.extend_from_slice(format!("{cmd} {key} {delta}{tail}\r\n").as_bytes());
        let answer = match self.items.get_mut(key) {
            None => "NOT_FOUND".to_string(),
            Some(item) => match arith_result(&item.value, !decr, delta) {
                Some(new) => {
                    item.value = new;
                    String::from_utf8_lossy(&item.value).trim_end().to_string()
                }
                None => "CLIENT_ERROR cannot increment or decrement non-numeric value".to_string(),
            },
        };
        if !noreply {
            want.push_str(&answer);
            want.push_str("\r\n");
        }
    }

    fn touch(
        &mut self,
        key: &'static str,
        arg: u8,
        noreply: bool,
        stream: &mut Vec<u8>,
        want: &mut String,
    ) {
        let expire = arg % 3 == 0;
        let tail = if noreply { " noreply" } else { "" };
        let exptime = if expire { "-1" } else { "0" };
        stream.extend_from_slice(format!("touch {key} {exptime}{tail}\r\n").as_bytes());
        let hit = self.items.contains_key(key);
        if hit && expire {
            self.items.remove(key);
        }
        if !noreply {
            want.push_str(if hit { "TOUCHED\r\n" } else { "NOT_FOUND\r\n" });
        }
    }

    fn mg(&mut self, key: &'static str, arg: u8, stream: &mut Vec<u8>, want: &mut String) {
        let names = ["v", "k", "f", "s", "O", "c", "q", "t"];
        let picked: Vec<&str> = (0..8)
            .filter(|i| arg >> i & 1 == 1)
            .map(|i| names[i])
            .collect();
        let token = |f: &str| {
            if f == "O" {
                format!("O{arg}")
            } else {
                f.to_string()
            }
        };
        let flags: Vec<String> = picked.iter().map(|f| token(f)).collect();
        stream.extend_from_slice(
            format!("mg {key} {}\r\n", flags.join(" "))
                .trim_end()
                .as_bytes(),
        );
        stream.extend_from_slice(b"\r\n");
        let Some(item) = self.present(key) else {
            if !picked.contains(&"q") {
                want.push_str("EN");
                for f in picked.iter().filter(|f| **f == "k" || **f == "O") {
                    want.push(' ');
                    want.push_str(&if *f == "k" {
                        format!("k{key}")
                    } else {
                        token(f)
                    });
                }
                want.push_str("\r\n");
            }
            return;
        };
        let with_value = picked.contains(&"v");
        want.push_str(&if with_value {
            format!("VA {}", item.value.len())
        } else {
            "HD".to_string()
        });
        for f in &picked {
            let text = match *f {
                "k" => format!("k{key}"),
                "f" => format!("f{}", item.flags),
                "s" => format!("s{}", item.value.len()),
                "O" => token(f),
                "c" => "c%d".to_string(),
                "t" => "t-1".to_string(),
                _ => continue,
            };
            want.push(' ');
            want.push_str(&text);
        }
        want.push_str("\r\n");
        if with_value {
            want.push_str(&String::from_utf8_lossy(&item.value));
            want.push_str("\r\n");
        }
    }
}

impl Model {
    fn ms(
        &mut self,
        key: &'static str,
        modebits: u8,
        arg: u8,
        stream: &mut Vec<u8>,
        want: &mut String,
    ) {
        let value = value_of(arg);
        let (flags, expired, quiet) = (u32::from(arg % 3) * 5, arg % 11 == 0, arg & 0x40 != 0);
        let (mode_token, mode) = [
            ("", Mode::Set),
            (" MS", Mode::Set),
            (" ME", Mode::Add),
            (" MA", Mode::Append),
            (" MP", Mode::Prepend),
            (" MR", Mode::Replace),
        ][usize::from(modebits) % 6];
        // `b`: the key sent base64; its echo is `k<base64> b`.
        let base64 = arg & 0x20 != 0;
        let sent_key = if base64 { base64_of(key) } else { key };
        let mut line = format!("ms {sent_key} {}{mode_token}", value.len());
        if base64 {
            line.push_str(" b");
        }
        if arg & 1 == 1 {
            line.push_str(&format!(" F{flags}"));
        }
        if expired {
            line.push_str(" T-1");
        }
        if quiet {
            line.push_str(" q");
        }
        let mut order = Vec::new();
        if arg & 2 != 0 {
            let b = if base64 { " b" } else { "" };
            order.push(("k", format!("k{sent_key}{b}")));
        }
        if arg & 4 != 0 {
            order.push(("O", format!("O{arg}")));
        }
        // `c`: the new CAS (c0 when not stored).
        if modebits >= 8 {
            order.push(("c", "c%d".to_string()));
        }
        if arg & 8 != 0 {
            order.reverse();
        }
        for (name, text) in &order {
            line.push(' ');
            line.push_str(if *name == "O" { text } else { name });
        }
        line.push_str("\r\n");
        push_block(stream, &line, &value);
        let flags = if arg & 1 == 1 { flags } else { 0 };
        if value.len() > ITEM_SIZE_MAX {
            // Refused in every mode, and the old item goes (memcached 1.6.18).
            self.items.remove(key);
            want.push_str("SERVER_ERROR object too large for cache\r\n");
            return;
        }
        let stored = self.apply(mode, key, value, flags, expired);
        if stored && quiet {
            return;
        }
        want.push_str(if stored { "HD" } else { "NS" });
        echo(&order, want);
        want.push_str("\r\n");
    }

    fn md(&mut self, key: &'static str, arg: u8, stream: &mut Vec<u8>, want: &mut String) {
        let quiet = arg & 1 != 0;
        let mut order = Vec::new();
        if arg & 2 != 0 {
            order.push(("O", format!("O{arg}")));
        }
        if arg & 4 != 0 {
            order.push(("k", format!("k{key}")));
        }
        let mut line = format!("md {key}");
        if quiet {
            line.push_str(" q");
        }
        for (name, text) in &order {
            line.push(' ');
            line.push_str(if *name == "k" { "k" } else { text });
        }
        line.push_str("\r\n");
        stream.extend_from_slice(line.as_bytes());
        let hit = self.items.remove(key).is_some();
        if hit && quiet {
            return;
        }
        want.push_str(if hit { "HD" } else { "NF" });
        echo(&order, want);
        want.push_str("\r\n");
    }

    fn ma(&mut self, key: &'static str, arg: u8, stream: &mut Vec<u8>, want: &mut String) {
        let delta = if arg & 1 != 0 { u64::from(arg % 20) } else { 1 };
        let (decr, with_value, vivify) = (arg & 2 != 0, arg & 4 != 0, arg & 0x20 != 0);
        let initial = u64::from(arg % 9) * 11;
        let mut line = format!("ma {key}");
        if arg & 1 != 0 {
            line.push_str(&format!(" D{delta}"));
        }
        if decr {
            line.push_str(" MD");
        }
        if vivify {
            line.push_str(&format!(" N0 J{initial}"));
        }
        if with_value {
            line.push_str(" v");
        }
        let mut order = Vec::new();
        if arg & 8 != 0 {
            order.push(("O", format!("O{arg}")));
        }
        if arg & 0x10 != 0 {
            order.push(("k", format!("k{key}")));
        }
        for (name, text) in &order {
            line.push(' ');
            line.push_str(if *name == "k" { "k" } else { text });
        }
        line.push_str("\r\n");
        stream.extend_from_slice(line.as_bytes());
        let number = match self.items.get_mut(key) {
            Some(item) => match arith_result(&item.value, !decr, delta) {
                Some(new) => {
                    item.value = new;
                    String::from_utf8_lossy(&item.value).trim_end().to_string()
                }
                None => {
                    want.push_str(
                        "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
                    );
                    return;
                }
            },
            None if vivify => {
                let value = initial.to_string().into_bytes();
                self.items.insert(key, Item { value, flags: 0 });
                initial.to_string()
            }
            None => {
                want.push_str("NF");
                echo(&order, want);
                want.push_str("\r\n");
                return;
            }
        };
        if with_value {
            want.push_str(&format!("VA {}", number.len()));
        } else {
            want.push_str("HD");
        }
        echo(&order, want);
        want.push_str("\r\n");
        if with_value {
            want.push_str(&number);
            want.push_str("\r\n");
        }
    }

    fn misc(&mut self, arg: u8, stream: &mut Vec<u8>, want: &mut String) {
        let (request, answer) = match arg % 8 {
            0 | 1 => ("mn\r\n", "MN\r\n"),
            2 => ("version\r\n", "VERSION %s\r\n"),
            3 => ("bogus command\r\n", "ERROR\r\n"),
            4 => ("get\r\n", "ERROR\r\n"),
            5 => ("flush_all\r\n", "OK\r\n"),
            6 => ("flush_all noreply\r\n", ""),
            _ if arg == 0xff => ("quit\r\n", ""),
            _ => ("verbosity 1\r\n", "OK\r\n"),
        };
        if request.starts_with("flush_all") {
            self.items.clear();
        }
        self.closed = request == "quit\r\n";
        stream.extend_from_slice(request.as_bytes());
        want.push_str(answer);
    }

    /// A `cas` whose CAS no item has: EXISTS on a hit, NOT_FOUND on a miss.
    fn cas_mismatch(
        &mut self,
        key: &'static str,
        arg: u8,
        stream: &mut Vec<u8>,
        want: &mut String,
    ) {
        let value = value_of(arg & 0x7e);
        push_block(
            stream,
            &format!("cas {key} 0 0 {} 999999999999\r\n", value.len()),
            &value,
        );
        want.push_str(if self.items.contains_key(key) {
            "EXISTS\r\n"
        } else {
            "NOT_FOUND\r\n"
        });
    }
}
