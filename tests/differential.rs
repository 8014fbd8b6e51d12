//! Differential test: the same request streams go to memcached and to pincache, and the
//! answers must match byte for byte, except for what legitimately differs between two
//! servers (CAS values, compared as a pattern; the VERSION string).
//!
//! A stream is a list of batches. A batch is written at once (in one write, in random
//! pieces, or a byte at a time) and ends with a request that is always answered (a NOOP,
//! a GETK, any non-quiet command), so the reader knows when the batch is complete: it
//! reads until the answer carrying that last request's opaque. CAS values in requests are
//! symbolic ("the CAS this server last returned for this key", "some CAS seen earlier",
//! a literal, zero) and resolved against each server's own answers.
//!
//! Run one seed: `DIFF_SEED=123 cargo test --release --test differential -- --nocapture`.
//! More streams: `DIFF_STREAMS=2000`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::rng::Rng;
use common::{op, status, Client, Read1, Request, Response, Server};
use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Streams per run by default; keeps this file well under a minute in release mode.
const DEFAULT_STREAMS: u64 = 500;
/// Base of the seeds; stream `i` uses seed `BASE_SEED + i`.
const BASE_SEED: u64 = 0x9e37_79b9_0000_0000;
/// How long we wait for one answer before recording a timeout.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(3);
/// memcached's default item size limit (`-I 1m`); values this much over it are surely
/// too large for both servers whatever their per-item overhead.
const ITEM_SIZE_MAX_BYTES: usize = 1024 * 1024;
/// How many mismatches are printed in full.
const MAX_REPORTED: usize = 5;

// ---------------------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------------------

/// A CAS to put in a request, resolved against each server's own earlier answers.
#[derive(Clone, Copy, Debug)]
enum CasSpec {
    Zero,
    /// The last CAS this server returned (successfully) for the request's key; 0 if none.
    LastForKey,
    /// The n-th (mod count) distinct CAS this server has returned so far; 0 if none.
    AnySeen(u64),
    /// A literal value (almost surely wrong).
    Literal(u64),
}

#[derive(Clone, Debug)]
struct Spec {
    req: Request,
    cas: CasSpec,
}

#[derive(Clone, Copy, Debug)]
enum Chunking {
    OneWrite,
    /// Split into pieces at points chosen from this seed.
    Pieces(u64),
    ByteByByte,
}

#[derive(Clone, Debug)]
enum End {
    /// Read until the answer with this opaque.
    Opaque(u32),
    /// Read until the server closes the connection.
    Close,
}

#[derive(Clone, Debug)]
struct Batch {
    specs: Vec<Spec>,
    chunking: Chunking,
    end: End,
}

/// Numeric keys only ever hold numbers (or junk that INCR rejects); text keys only ever
/// hold text that starts with a letter. memcached pads an INCR/DECR result with spaces
/// when it rewrites the value in place ("10" - 1 = "9 "), but only when no queued answer
/// still holds the item (its refcount is 2); after a GET of the same key in the same
/// batch it writes a new, unpadded item instead. pincache always pads (the common case),
/// so GET answers compare numbers without trailing spaces, and the key spaces are kept
/// apart so that padding never reaches APPEND/PREPEND, where it could not be told apart.
const NUMERIC_KEYS: [&[u8]; 4] = [b"n0", b"n1", b"num:\xff\x00", b"n3"];

fn text_keys() -> Vec<Vec<u8>> {
    vec![
        b"k0".to_vec(),
        b"k1".to_vec(),
        "clé-ключ-鍵".as_bytes().to_vec(),
        vec![b'L'; 250],
    ]
}

struct Gen {
    rng: Rng,
    next_index: u32,
    opaque_salt: u32,
    text_keys: Vec<Vec<u8>>,
    now: u32,
}

const EXPTIMES_FIXED: [u32; 7] = [
    0,
    0,
    0,
    1000,          // relative, far enough away for the test's lifetime
    2_592_000,     // 30 days: the largest relative value
    2_592_001,     // absolute: 1970-01-31, long past -> expired at once
    1_000_000_000, // absolute: 2001, past
];

impl Gen {
    fn new(seed: u64) -> Gen {
        let mut rng = Rng::new(seed);
        let opaque_salt = (rng.next() as u32) & 0xfff0_0000;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs() as u32;
        Gen {
            rng,
            next_index: 0,
            opaque_salt,
            text_keys: text_keys(),
            now,
        }
    }

    fn opaque(&mut self) -> u32 {
        let o = self.opaque_salt | self.next_index;
        self.next_index += 1;
        o
    }

    fn exptime(&mut self) -> u32 {
        match self.rng.below(10) {
            0 => 0xffff_ffff,       // 2106: absolute, far future
            1 => self.now + 86_400, // absolute, tomorrow
            _ => *self.rng.pick(&EXPTIMES_FIXED),
        }
    }

    fn flags(&mut self) -> u32 {
        match self.rng.below(6) {
            0 | 1 => 0,
            2 => 0xffff_ffff,
            3 => 1,
            _ => self.rng.next() as u32,
        }
    }

    fn key(&mut self, numeric: bool) -> Vec<u8> {
        if numeric {
            self.rng.pick(&NUMERIC_KEYS).to_vec()
        } else {
            let i = self.rng.below(self.text_keys.len() as u64) as usize;
            self.text_keys[i].clone()
        }
    }

    /// Counters stay below 2^63 in these streams. memcached 1.6.18 reads a stored
    /// number of 2^63 or more as negative and then looks for a '-' with strchr, past the
    /// value's end into whatever the slab chunk held before, so whether it answers the
    /// next INCR/DECR with 0x0006 depends on old memory: it disagrees with itself from
    /// run to run (seen: 1 run in 30 failed). DECR may still use huge deltas (it stops
    /// at 0); INCR's largest delta would need 2^22 steps to reach 2^63. The
    /// handcrafted stream keeps one wrap past u64::MAX.
    fn counter_delta(&mut self, opcode: u8) -> u64 {
        let decrement = opcode == op::DECREMENT || opcode == op::DECREMENTQ;
        match self.rng.below(10) {
            0 if decrement => u64::MAX,
            1 if decrement => 1 << 63,
            0 | 1 => 1 << 40,
            2 => 0,
            _ => self.rng.range(1, 100),
        }
    }

    fn numeric_value(&mut self) -> Vec<u8> {
        let choices: [&[u8]; 16] = [
            b"0",
            b"1",
            b"9",
            b"10",
            b"99",
            b"100",
            // Large, but below 2^63: see `counter_delta`.
            b"4611686018427387904",
            b"4611686018427387903",
            b"18446744073709551616", // overflows: non-numeric
            b" 12",
            b"+7",
            b"007",
            b"1 2",
            b"12abc", // non-numeric
            b"-5",    // non-numeric
            b"",      // non-numeric
        ];
        if self.rng.chance(40) {
            self.rng.below(100_000).to_string().into_bytes()
        } else {
            self.rng.pick(&choices).to_vec()
        }
    }

    fn text_value(&mut self, allow_big: bool) -> Vec<u8> {
        let len = match self.rng.below(100) {
            0..=9 => 0,
            10..=79 => self.rng.range(1, 40),
            80..=95 => self.rng.range(41, 2000),
            96..=98 if allow_big => self.rng.range(50_000, 120_000),
            99 if allow_big => (ITEM_SIZE_MAX_BYTES + 1000) as u64 + self.rng.below(1000),
            _ => self.rng.range(1, 10),
        } as usize;
        let mut v = Vec::with_capacity(len);
        for i in 0..len {
            let b = if i == 0 {
                b'a' + self.rng.below(26) as u8
            } else {
                match self.rng.below(10) {
                    0 => self.rng.next() as u8, // any byte, binary values work
                    _ => b'a' + self.rng.below(26) as u8,
                }
            };
            v.push(b);
        }
        v
    }

    fn cas_for_write(&mut self) -> CasSpec {
        match self.rng.below(20) {
            0..=9 => CasSpec::Zero,
            10..=14 => CasSpec::LastForKey,
            15..=17 => CasSpec::AnySeen(self.rng.next()),
            _ => CasSpec::Literal(self.rng.range(1, 1 << 40)),
        }
    }

    fn cas_for_other(&mut self) -> CasSpec {
        match self.rng.below(20) {
            0 => CasSpec::Literal(self.rng.range(1, 1 << 40)),
            1 => CasSpec::LastForKey,
            _ => CasSpec::Zero,
        }
    }

    /// One well-formed request; `quiet_ok` allows quiet opcodes.
    fn request(&mut self, quiet_ok: bool) -> Spec {
        let quiet = quiet_ok && self.rng.chance(50);
        let q = |base: u8, quiet_op: u8| if quiet { quiet_op } else { base };
        let numeric = self.rng.chance(40);
        let roll = self.rng.below(100);
        let (req, cas) = match roll {
            0..=29 => {
                let opcode = match self.rng.below(4) {
                    0 => q(op::GET, op::GETQ),
                    1 => q(op::GET, op::GETQ),
                    2 => q(op::GETK, op::GETKQ),
                    _ => q(op::GETK, op::GETKQ),
                };
                let key = self.key(numeric);
                (common::get(opcode, key), self.cas_for_other())
            }
            30..=54 => {
                let opcode = match self.rng.below(4) {
                    0 | 1 => q(op::SET, op::SETQ),
                    2 => q(op::ADD, op::ADDQ),
                    _ => q(op::REPLACE, op::REPLACEQ),
                };
                let key = self.key(numeric);
                let value = if numeric {
                    self.numeric_value()
                } else {
                    self.text_value(true)
                };
                let flags = self.flags();
                let exp = self.exptime();
                (
                    common::store(opcode, key, value, flags, exp),
                    self.cas_for_write(),
                )
            }
            55..=64 => {
                // APPEND/PREPEND only on text keys (see NUMERIC_KEYS), with text that
                // keeps "starts with a letter" true.
                let opcode = match self.rng.below(2) {
                    0 => q(op::APPEND, op::APPENDQ),
                    _ => q(op::PREPEND, op::PREPENDQ),
                };
                let key = self.key(false);
                let mut value = self.text_value(false);
                if opcode == op::PREPEND || opcode == op::PREPENDQ {
                    if let Some(b) = value.first_mut() {
                        *b = b'p';
                    }
                }
                (common::concat(opcode, key, value), self.cas_for_write())
            }
            65..=79 => {
                let opcode = match self.rng.below(2) {
                    0 => q(op::INCREMENT, op::INCREMENTQ),
                    _ => q(op::DECREMENT, op::DECREMENTQ),
                };
                let key = self.key(numeric);
                let delta = self.counter_delta(opcode);
                // Not u64::MAX as the initial value (see `counter_delta`);
                // tests/protocol.rs covers that case.
                let initial = match self.rng.below(4) {
                    0 => u64::MAX / 3,
                    1 => 0,
                    _ => self.rng.below(1000),
                };
                // Text keys must not be created by INCR (they would then hold a number).
                let exp = if numeric { self.exptime() } else { 0xffff_ffff };
                (
                    common::counter(opcode, key, delta, initial, exp),
                    self.cas_for_write(),
                )
            }
            80..=86 => {
                let opcode = q(op::DELETE, op::DELETEQ);
                let key = self.key(numeric);
                (common::get(opcode, key), self.cas_for_write())
            }
            87..=94 => {
                let opcode = match self.rng.below(5) {
                    0 => op::TOUCH,
                    1 => op::GAT,
                    2 => q(op::GAT, op::GATQ),
                    3 => op::GATK,
                    _ => q(op::GATK, op::GATKQ),
                };
                let key = self.key(numeric);
                let exp = self.exptime();
                (common::touch(opcode, key, exp), self.cas_for_other())
            }
            _ => {
                let req = match self.rng.below(9) {
                    0 | 1 => common::noop(),
                    2 => Request::new(op::VERSION),
                    3 => Request::new(op::FLUSH),
                    4 => Request::new(q(op::FLUSH, op::FLUSHQ)),
                    // memcached 1.6 answers VERBOSITY 0x0081; with its 4 extras it then
                    // misreads the stream (it skips 4 bytes too many), so no extras here.
                    5 => Request::new(op::VERBOSITY),
                    6 => Request::new(op::STAT).key("reset"),
                    7 => Request::new(op::STAT).key("no-such-group"),
                    // An unknown opcode with a body. memcached skips key_len+extras_len
                    // bytes too many after one with a key or extras, so value only here.
                    _ => Request::new(*self.rng.pick(&[0x1f, 0x25, 0x40, 0x7f, 0xfe, 0xff]))
                        .value(self.text_value(false)),
                };
                (req, CasSpec::Zero)
            }
        };
        let mut req = req;
        req.opaque = self.opaque();
        Spec { req, cas }
    }

    fn chunking(&mut self, batch_len: usize) -> Chunking {
        match self.rng.below(20) {
            0 if batch_len < 2000 => Chunking::ByteByByte,
            1..=3 => Chunking::Pieces(self.rng.next()),
            _ => Chunking::OneWrite,
        }
    }

    /// A batch: some requests (quiet ones allowed) closed by one that is always answered.
    fn batch(&mut self) -> Batch {
        let n = match self.rng.below(10) {
            0..=3 => 0,
            4..=7 => self.rng.range(1, 6),
            _ => self.rng.range(7, 20),
        };
        let mut specs: Vec<Spec> = (0..n).map(|_| self.request(true)).collect();
        let last = match self.rng.below(10) {
            0..=4 => {
                let mut r = common::noop();
                r.opaque = self.opaque();
                Spec {
                    req: r,
                    cas: CasSpec::Zero,
                }
            }
            5 => {
                // The other multi-get shape: GETKQs closed by a plain GETK.
                let numeric = self.rng.chance(40);
                let key = self.key(numeric);
                let mut r = common::get(op::GETK, key);
                r.opaque = self.opaque();
                Spec {
                    req: r,
                    cas: CasSpec::Zero,
                }
            }
            _ => self.request(false),
        };
        let end = End::Opaque(last.req.opaque);
        specs.push(last);
        let bytes: usize = specs.iter().map(|s| 24 + s.req.value.len()).sum();
        Batch {
            specs,
            chunking: self.chunking(bytes),
            end,
        }
    }

    /// The malformed (or closing) requests that may end a stream: after them memcached
    /// closes the connection.
    fn finale(&mut self) -> Batch {
        let key = self.key(false);
        let mut req = match self.rng.below(12) {
            0 => common::get(op::GET, &key).extras([0, 0, 0, 0]), // extras not allowed
            1 => common::concat(op::SET, &key, "v"),              // SET without extras
            2 => common::get(op::INCREMENT, &key).extras([0u8; 8]), // 8 of 20 extras
            3 => common::noop().extras([1, 2, 3, 4]),
            4 => Request::new(op::VERSION).key("k"),
            5 => Request::new(op::FLUSH).extras([0u8; 8]),
            6 => common::get(op::GET, ""), // empty key
            7 => common::get(op::GETK, vec![b'x'; 251]),
            // (key length + extras length > body length is left to tests/protocol.rs:
            // memcached waits for the missing bytes and then answers 0x0081, pincache
            // answers 0x0004 from the header alone: docs/differences.md.)
            8 => Request::new(op::STAT).key(&key).extras([0u8; 4]),
            9 => common::touch(op::TOUCH, &key, 0).magic(0x81), // bad magic
            10 => Request::new(op::QUIT),
            _ => Request::new(op::QUITQ),
        };
        req.opaque = self.opaque();
        Batch {
            specs: vec![Spec {
                req,
                cas: CasSpec::Zero,
            }],
            chunking: Chunking::OneWrite,
            end: End::Close,
        }
    }

    fn stream(&mut self) -> Vec<Batch> {
        let batches = self.rng.range(10, 40);
        let mut out: Vec<Batch> = (0..batches).map(|_| self.batch()).collect();
        if self.rng.chance(20) {
            out.push(self.finale());
        }
        out
    }
}

// ---------------------------------------------------------------------------------------
// Running a stream against one server
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
enum Event {
    Answer(Response),
    Closed,
    Timeout,
    Truncated(Vec<u8>),
}

/// What one server did with one stream.
struct Outcome {
    /// Per batch: the requests as sent (CAS resolved), and the events read.
    batches: Vec<(Vec<Request>, Vec<Event>)>,
}

/// Per-server CAS bookkeeping.
#[derive(Default)]
struct CasState {
    last_for_key: HashMap<Vec<u8>, u64>,
    seen: Vec<u64>,
}

impl CasState {
    fn resolve(&self, spec: CasSpec, key: &[u8]) -> u64 {
        match spec {
            CasSpec::Zero => 0,
            CasSpec::LastForKey => self.last_for_key.get(key).copied().unwrap_or(0),
            CasSpec::AnySeen(n) if self.seen.is_empty() => {
                let _ = n;
                0
            }
            CasSpec::AnySeen(n) => self.seen[(n % self.seen.len() as u64) as usize],
            CasSpec::Literal(c) => c,
        }
    }

    fn observe(&mut self, r: &Response, key_of: &HashMap<u32, Vec<u8>>) {
        if r.cas == 0 {
            return;
        }
        if !self.seen.contains(&r.cas) {
            self.seen.push(r.cas);
        }
        if r.status == status::OK {
            if let Some(k) = key_of.get(&r.opaque) {
                self.last_for_key.insert(k.clone(), r.cas);
            }
        }
    }
}

fn write_chunked(client: &mut Client, bytes: &[u8], chunking: Chunking) -> bool {
    match chunking {
        Chunking::OneWrite => client.try_send_raw(bytes),
        Chunking::ByteByByte => bytes.iter().all(|b| client.try_send_raw(&[*b])),
        Chunking::Pieces(seed) => {
            let mut rng = Rng::new(seed);
            let mut pos = 0;
            while pos < bytes.len() {
                let n = (rng.range(1, 64) as usize).min(bytes.len() - pos);
                if !client.try_send_raw(&bytes[pos..pos + n]) {
                    return false;
                }
                client.stream.flush().expect("flush");
                pos += n;
            }
            true
        }
    }
}

fn run_stream(server: &Server, stream: &[Batch]) -> Outcome {
    // Every stream starts from an empty cache, on a fresh connection.
    {
        let mut c = server.connect();
        c.call(&Request::new(op::FLUSH))
            .expect(op::FLUSH, status::OK);
    }
    let mut client = server.connect();
    let mut cas = CasState::default();
    let mut key_of: HashMap<u32, Vec<u8>> = HashMap::new();
    let mut out = Outcome {
        batches: Vec::new(),
    };
    for batch in stream {
        let mut sent = Vec::with_capacity(batch.specs.len());
        let mut bytes = Vec::new();
        for spec in &batch.specs {
            let mut req = spec.req.clone();
            req.cas = cas.resolve(spec.cas, &req.key);
            key_of.insert(req.opaque, req.key.clone());
            bytes.extend_from_slice(&req.encode());
            sent.push(req);
        }
        // A write may fail if the server already closed; what it answered still counts.
        let _ = write_chunked(&mut client, &bytes, batch.chunking);
        let mut events = Vec::new();
        let mut connection_over = false;
        loop {
            match client.read_one(ANSWER_TIMEOUT) {
                Read1::Response(r) => {
                    cas.observe(&r, &key_of);
                    let done = matches!(batch.end, End::Opaque(o) if o == r.opaque);
                    events.push(Event::Answer(r));
                    if done {
                        break;
                    }
                }
                Read1::Closed => {
                    events.push(Event::Closed);
                    connection_over = true;
                    break;
                }
                Read1::Timeout => {
                    events.push(Event::Timeout);
                    connection_over = true;
                    break;
                }
                Read1::Truncated(b) => {
                    events.push(Event::Truncated(b));
                    connection_over = true;
                    break;
                }
            }
        }
        out.batches.push((sent, events));
        if connection_over {
            break;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Normalising and comparing
// ---------------------------------------------------------------------------------------

fn is_padded_number(v: &[u8]) -> bool {
    let digits = v.iter().take_while(|b| b.is_ascii_digit()).count();
    digits > 0 && v[digits..].iter().all(|&b| b == b' ')
}

fn is_get_family(opcode: u8) -> bool {
    matches!(
        opcode,
        op::GET | op::GETQ | op::GETK | op::GETKQ | op::GAT | op::GATQ | op::GATK | op::GATKQ
    )
}

/// Replace what may legitimately differ: CAS values become the index (1-based) of the
/// first answer that carried them; the VERSION string becomes a placeholder; a number
/// that memcached padded with spaces after an in-place INCR/DECR loses the padding
/// (see NUMERIC_KEYS for why memcached itself does not always pad).
fn normalise(outcome: &Outcome) -> Vec<Vec<Event>> {
    let mut first_seen: HashMap<u64, u64> = HashMap::new();
    let mut answer_index = 0u64;
    let mut result = Vec::new();
    for (_, events) in &outcome.batches {
        let mut norm = Vec::new();
        for e in events {
            match e {
                Event::Answer(r) => {
                    answer_index += 1;
                    let mut r = r.clone();
                    if r.cas != 0 {
                        let idx = *first_seen.entry(r.cas).or_insert(answer_index);
                        r.cas = idx;
                    }
                    if r.opcode == op::VERSION && r.status == status::OK {
                        r.value = b"<version>".to_vec();
                    }
                    if is_get_family(r.opcode)
                        && r.status == status::OK
                        && is_padded_number(&r.value)
                    {
                        while r.value.last() == Some(&b' ') {
                            r.value.pop();
                        }
                    }
                    r.body_len = (r.extras.len() + r.key.len() + r.value.len()) as u32;
                    norm.push(Event::Answer(r));
                }
                other => norm.push(other.clone()),
            }
        }
        result.push(norm);
    }
    result
}

fn event_bytes(e: &Event) -> Vec<u8> {
    match e {
        Event::Answer(r) => r.encode(),
        Event::Closed => b"<closed>".to_vec(),
        Event::Timeout => b"<timeout>".to_vec(),
        Event::Truncated(b) => {
            let mut v = b"<truncated>".to_vec();
            v.extend_from_slice(b);
            v
        }
    }
}

fn describe_event(e: &Event) -> String {
    match e {
        Event::Answer(r) => r.describe(),
        Event::Closed => "<connection closed>".to_string(),
        Event::Timeout => format!("<no answer within {ANSWER_TIMEOUT:?}>"),
        Event::Truncated(b) => format!("<connection closed mid-answer after {} bytes>", b.len()),
    }
}

/// Compare two outcomes; `None` if they match, else a readable report.
fn compare(seed: Option<u64>, names: (&str, &str), a: &Outcome, b: &Outcome) -> Option<String> {
    let na = normalise(a);
    let nb = normalise(b);
    let batches = na.len().max(nb.len());
    for i in 0..batches {
        let ea = na.get(i).map(Vec::as_slice).unwrap_or(&[]);
        let eb = nb.get(i).map(Vec::as_slice).unwrap_or(&[]);
        let same = ea.len() == eb.len()
            && ea
                .iter()
                .zip(eb.iter())
                .all(|(x, y)| event_bytes(x) == event_bytes(y));
        if same {
            continue;
        }
        let first_diff = ea
            .iter()
            .zip(eb.iter())
            .position(|(x, y)| event_bytes(x) != event_bytes(y))
            .unwrap_or(ea.len().min(eb.len()));
        let reqs = a
            .batches
            .get(i)
            .or(b.batches.get(i))
            .map(|(r, _)| r.clone())
            .unwrap_or_default();
        let base_index: usize = a.batches.iter().take(i).map(|(r, _)| r.len()).sum();
        // The request behind the first differing answer, found by its opaque.
        let culprit_opaque = ea
            .get(first_diff)
            .or(eb.get(first_diff))
            .and_then(|e| match e {
                Event::Answer(r) => Some(r.opaque),
                _ => None,
            });
        let culprit = culprit_opaque
            .and_then(|o| reqs.iter().position(|r| r.opaque == o))
            .or_else(|| {
                // No answer to name it (close/timeout/missing): blame the batch's last one.
                reqs.len().checked_sub(1)
            });
        let mut s = String::new();
        match seed {
            Some(seed) => s.push_str(&format!("MISMATCH seed={seed} (DIFF_SEED={seed})")),
            None => s.push_str("MISMATCH in the handcrafted stream"),
        }
        s.push_str(&format!(
            " batch {i}, first differing answer #{first_diff} of the batch"
        ));
        if let Some(c) = culprit {
            s.push_str(&format!(
                ", request index {} in the stream:\n    {}\n",
                base_index + c,
                reqs[c].describe()
            ));
        } else {
            s.push('\n');
        }
        s.push_str("  batch requests:\n");
        for (j, r) in reqs.iter().enumerate() {
            s.push_str(&format!("    [{}] {}\n", base_index + j, r.describe()));
        }
        s.push_str(&format!("  {} answered (normalised):\n", names.0));
        for e in ea {
            s.push_str(&format!("    {}\n", describe_event(e)));
        }
        s.push_str(&format!("  {} answered (normalised):\n", names.1));
        for e in eb {
            s.push_str(&format!("    {}\n", describe_event(e)));
        }
        return Some(s);
    }
    None
}

/// Print a whole stream and both servers' raw answers (`DIFF_VERBOSE=1`).
fn dump(seed: u64, a: &Outcome, b: &Outcome) {
    eprintln!("=== seed {seed}");
    for (i, (reqs, events)) in a.batches.iter().enumerate() {
        eprintln!("--- batch {i}");
        for r in reqs {
            eprintln!("  > {}", r.describe());
        }
        for e in events {
            eprintln!("  A {}", describe_event(e));
        }
        if let Some((_, events)) = b.batches.get(i) {
            for e in events {
                eprintln!("  B {}", describe_event(e));
            }
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, got {v:?}"))
    })
}

fn request_count(stream: &[Batch]) -> usize {
    stream.iter().map(|b| b.specs.len()).sum()
}

#[test]
fn random_streams_match_memcached() {
    let Some(reference) = Server::memcached(&[]) else {
        return;
    };
    let subject = Server::pincache(&[]);
    let seeds: Vec<u64> = match env_u64("DIFF_SEED") {
        Some(seed) => vec![seed],
        None => {
            let n = env_u64("DIFF_STREAMS").unwrap_or(DEFAULT_STREAMS);
            (0..n).map(|i| BASE_SEED + i).collect()
        }
    };
    let started = Instant::now();
    let mut requests = 0;
    let mut mismatches = 0;
    let mut finales = 0;
    let mut unstable = 0;
    for &seed in &seeds {
        let stream = Gen::new(seed).stream();
        requests += request_count(&stream);
        if matches!(stream.last().map(|b| &b.end), Some(End::Close)) {
            finales += 1;
        }
        let a = run_stream(&reference, &stream);
        let b = run_stream(&subject, &stream);
        if std::env::var_os("DIFF_VERBOSE").is_some() {
            dump(seed, &a, &b);
        }
        if let Some(report) = compare(Some(seed), ("memcached", "pincache"), &a, &b) {
            // Rarely (about one stream in a few hundred, under load) memcached 1.6 does
            // not agree with itself on a stream; a mismatch only counts when memcached
            // answers the same stream the same way again and pincache matches neither run.
            let again = run_stream(&reference, &stream);
            let memcached_stable = compare(None, ("", ""), &a, &again).is_none();
            let matches_again = compare(None, ("", ""), &again, &b).is_none();
            if !memcached_stable || matches_again {
                unstable += 1;
                eprintln!(
                    "differential: seed {seed}: memcached answered this stream differently on a \
                     second run; not counted (first report follows)\n{report}"
                );
            } else {
                mismatches += 1;
                if mismatches <= MAX_REPORTED {
                    eprintln!("{report}");
                }
            }
        }
    }
    let line = format!(
        "differential: {} streams, {} requests, {} mismatches ({} streams ended with a \
         malformed or closing request; {} where memcached disagreed with itself; {:.1} s)",
        seeds.len(),
        requests,
        mismatches,
        finales,
        unstable,
        started.elapsed().as_secs_f64()
    );
    eprintln!("{line}");
    println!("{line}");
    assert_eq!(mismatches, 0, "{line}");
}

// ---------------------------------------------------------------------------------------
// The handcrafted stream: the cases docs/differences.md calls out, in a fixed order
// ---------------------------------------------------------------------------------------

struct Script {
    batches: Vec<Batch>,
    next_opaque: u32,
}

impl Script {
    fn new() -> Script {
        Script {
            batches: Vec::new(),
            next_opaque: 1,
        }
    }

    /// A batch of requests (the last must be answered), with the given CAS specs.
    fn batch_cas(&mut self, reqs: Vec<(Request, CasSpec)>) {
        let mut specs = Vec::new();
        for (mut req, cas) in reqs {
            req.opaque = self.next_opaque;
            self.next_opaque += 1;
            specs.push(Spec { req, cas });
        }
        let end = End::Opaque(specs.last().expect("non-empty batch").req.opaque);
        self.batches.push(Batch {
            specs,
            chunking: Chunking::OneWrite,
            end,
        });
    }

    fn batch(&mut self, reqs: Vec<Request>) {
        self.batch_cas(reqs.into_iter().map(|r| (r, CasSpec::Zero)).collect());
    }

    fn one(&mut self, req: Request) {
        self.batch(vec![req]);
    }

    fn one_cas(&mut self, req: Request, cas: CasSpec) {
        self.batch_cas(vec![(req, cas)]);
    }

    fn finale(&mut self, mut req: Request) {
        req.opaque = self.next_opaque;
        self.next_opaque += 1;
        self.batches.push(Batch {
            specs: vec![Spec {
                req,
                cas: CasSpec::Zero,
            }],
            chunking: Chunking::OneWrite,
            end: End::Close,
        });
    }
}

fn handcrafted_stream() -> Vec<Batch> {
    use common::{concat, counter, get, noop, set, store, touch};
    let mut s = Script::new();
    let past = 1_000_000_000; // absolute time in 2001

    // Basic hit/miss shapes of every retrieval opcode.
    s.one(get(op::GET, "missing"));
    s.one(get(op::GETK, "missing"));
    s.batch(vec![
        get(op::GETQ, "missing"),
        get(op::GETKQ, "missing"),
        noop(),
    ]);
    s.one(store(op::SET, "a", "alpha", 0xffff_ffff, 0));
    s.batch(vec![
        get(op::GET, "a"),
        get(op::GETQ, "a"),
        get(op::GETK, "a"),
        get(op::GETKQ, "a"),
        noop(),
    ]);

    // The two multi-get shapes.
    s.one(store(op::SET, "b", "beta", 2, 0));
    s.batch(vec![
        get(op::GETKQ, "a"),
        get(op::GETKQ, "nope1"),
        get(op::GETKQ, "b"),
        get(op::GETKQ, "nope2"),
        noop(),
    ]);
    s.batch(vec![
        get(op::GETKQ, "a"),
        get(op::GETKQ, "nope1"),
        get(op::GETKQ, "b"),
        get(op::GETK, "nope2"), // the closing GETK misses: must be answered, key echoed
    ]);
    s.batch(vec![get(op::GETKQ, "nope1"), get(op::GETK, "b")]);

    // All flag bits, empty value, binary and UTF-8 keys, a 250-byte key.
    s.one(store(op::SET, "empty", "", 0x8000_0001, 0));
    s.one(get(op::GETK, "empty"));
    s.one(store(
        op::SET,
        b"\x00\xff\x01bin",
        b"\x00\x01\x02\xff",
        7,
        0,
    ));
    s.one(get(op::GETK, b"\x00\xff\x01bin"));
    s.one(store(op::SET, "ключ-鍵", "значение", 0, 0));
    s.one(get(op::GETK, "ключ-鍵"));
    s.one(set(vec![b'K'; 250], "long key"));
    s.one(get(op::GETK, vec![b'K'; 250]));

    // ADD / REPLACE / APPEND / PREPEND success and failure.
    s.one(store(op::ADD, "a", "again", 0, 0)); // exists -> 0x0002
    s.one(store(op::ADD, "c", "gamma", 3, 0));
    s.one(store(op::REPLACE, "nope", "x", 0, 0)); // missing -> 0x0001
    s.one(store(op::REPLACE, "c", "GAMMA", 4, 0));
    s.one(concat(op::APPEND, "nope", "x")); // missing -> 0x0005
    s.one(concat(op::PREPEND, "nope", "x")); // missing -> 0x0005
    s.batch(vec![
        concat(op::APPENDQ, "nope", "x"),
        concat(op::PREPENDQ, "nope", "x"),
        noop(),
    ]);
    s.one(concat(op::APPEND, "c", "-tail"));
    s.one(concat(op::PREPEND, "c", "head-"));
    s.one(get(op::GET, "c")); // flags 4 kept by append/prepend

    // CAS: via REPLACE (libmemcached's cas()), SET, APPEND, DELETE; right, wrong, missing.
    s.one(set("cas", "v1"));
    s.one(get(op::GET, "cas"));
    s.one_cas(store(op::REPLACE, "cas", "v2", 0, 0), CasSpec::LastForKey);
    s.one_cas(
        store(op::REPLACE, "cas", "v3", 0, 0),
        CasSpec::Literal(0xdead_beef),
    );
    s.one_cas(
        store(op::REPLACE, "cas-missing", "v", 0, 0),
        CasSpec::Literal(5),
    );
    s.one(get(op::GET, "cas")); // CAS equals the REPLACE answer's
    s.one_cas(store(op::SET, "cas", "v4", 0, 0), CasSpec::LastForKey);
    s.one_cas(store(op::SET, "cas", "v5", 0, 0), CasSpec::Literal(1));
    s.one_cas(
        store(op::SET, "cas-missing", "v", 0, 0),
        CasSpec::Literal(5),
    );
    s.one_cas(store(op::ADD, "cas-new", "v", 0, 0), CasSpec::Literal(5));
    s.one_cas(concat(op::APPEND, "cas", "+"), CasSpec::LastForKey);
    s.one_cas(concat(op::APPEND, "cas", "+"), CasSpec::Literal(1));
    s.one_cas(get(op::DELETE, "cas"), CasSpec::Literal(1));
    s.one_cas(get(op::DELETE, "cas"), CasSpec::LastForKey);
    s.one(get(op::GET, "cas"));
    s.one_cas(get(op::GET, "a"), CasSpec::Literal(77)); // CAS on a GET is ignored

    // INCREMENT / DECREMENT.
    s.one(counter(op::INCREMENT, "ctr", 5, 10, 0xffff_ffff)); // missing, don't create
    s.one(counter(op::INCREMENT, "ctr", 5, 10, 0)); // created with the initial value
    s.one(counter(op::INCREMENT, "ctr", 5, 10, 0)); // 15
    s.one(get(op::GET, "ctr"));
    s.one(counter(op::DECREMENT, "ctr", 100, 0, 0)); // stops at 0
    s.one(set("max", "18446744073709551615"));
    s.one(counter(op::INCREMENT, "max", 2, 0, 0)); // wraps to 1
    s.one(set("big", "18446744073709551616"));
    s.one(counter(op::INCREMENT, "big", 1, 0, 0)); // overflow: non-numeric
    s.one(set("text", "abc"));
    s.one(counter(op::INCREMENT, "text", 1, 0, 0)); // 0x0006
    s.one(set("sp", " +12"));
    s.one(counter(op::INCREMENT, "sp", 1, 0, 0));
    s.one(set("one-two", "1 2"));
    s.one(counter(op::INCREMENT, "one-two", 1, 0, 0));
    s.one(set("ten", "10"));
    s.one(counter(op::DECREMENT, "ten", 1, 0, 0));
    s.one(get(op::GET, "ten")); // "9", or memcached's "9 "
    s.batch(vec![
        counter(op::INCREMENTQ, "ten", 1, 0, 0),
        counter(op::DECREMENTQ, "nope", 1, 0, 0xffff_ffff), // error: always sent
        counter(op::INCREMENTQ, "text", 1, 0, 0),           // error: always sent
        noop(),
    ]);
    s.one(counter(op::INCREMENT, "ctr-init", 1, u64::MAX / 3, 0));
    s.one(counter(op::INCREMENT, "ctr-init", 1, 0, 0));

    // Quiet storage: nothing on success, errors always sent, identified by opaque.
    s.batch(vec![
        store(op::SETQ, "q1", "1", 0, 0),
        store(op::ADDQ, "q1", "dup", 0, 0),
        store(op::REPLACEQ, "q-missing", "x", 0, 0),
        store(op::SETQ, "q2", "2", 0, 0),
        get(op::DELETEQ, "q-missing"),
        get(op::DELETEQ, "q2"),
        noop(),
    ]);

    // Expiration: absolute times in the past expire at once; 0xffffffff is 2106.
    s.one(store(op::SET, "old", "x", 0, past));
    s.one(get(op::GET, "old"));
    s.one(store(op::SET, "old30", "x", 0, 2_592_001));
    s.one(get(op::GET, "old30"));
    s.one(store(op::SET, "2106", "x", 0, 0xffff_ffff));
    s.one(get(op::GET, "2106"));
    s.one(counter(op::INCREMENT, "ctr-old", 1, 7, past)); // created already expired
    s.one(get(op::GET, "ctr-old"));

    // TOUCH / GAT family.
    s.one(touch(op::TOUCH, "b", 1000));
    s.one(touch(op::TOUCH, "nope", 1000));
    s.one(touch(op::GAT, "b", 0));
    s.one(touch(op::GATK, "b", 0));
    s.batch(vec![
        touch(op::GATQ, "b", 0),
        touch(op::GATKQ, "b", 0),
        noop(),
    ]);
    s.batch(vec![
        touch(op::GATQ, "nope", 0),
        touch(op::GATKQ, "nope", 0),
        noop(),
    ]);
    s.one(touch(op::GAT, "nope", 0));
    s.one(touch(op::GATK, "nope", 0));
    s.one(touch(op::TOUCH, "b", past)); // touched into the past: gone
    s.one(get(op::GET, "b"));

    // Too large: 0x0003, connection still usable; for SET the old item is gone.
    let big = vec![b'x'; ITEM_SIZE_MAX_BYTES + 1000];
    s.one(set("a", big.clone()));
    s.one(get(op::GET, "a"));
    s.one(store(op::ADD, "c", big.clone(), 0, 0));
    s.one(store(op::REPLACE, "c", big.clone(), 0, 0));
    s.one(get(op::GET, "c"));
    s.batch(vec![store(op::SETQ, "c", big, 0, 0), noop()]);
    s.one(get(op::GET, "c"));

    // Misc.
    s.one(Request::new(op::VERSION));
    s.one(Request::new(op::VERBOSITY));
    s.one(Request::new(op::STAT).key("reset"));
    s.one(Request::new(op::STAT).key("bogus"));
    s.one(Request::new(op::SASL_LIST_MECHS));
    s.one(Request::new(0x40).value("body of an unknown command"));
    s.one(noop());
    s.batch(vec![Request::new(op::FLUSHQ), get(op::GETKQ, "c"), noop()]);
    s.one(Request::new(op::FLUSH));
    s.one(get(op::GET, "ctr"));
    s.finale(Request::new(op::QUIT));
    s.batches
}

#[test]
fn handcrafted_stream_matches_memcached() {
    let Some(reference) = Server::memcached(&[]) else {
        return;
    };
    let subject = Server::pincache(&[]);
    let stream = handcrafted_stream();
    let a = run_stream(&reference, &stream);
    let b = run_stream(&subject, &stream);
    // The stream must have run to its end on memcached, or the script itself is wrong.
    assert_eq!(
        a.batches.len(),
        stream.len(),
        "memcached stopped early in the handcrafted stream: {:?}",
        a.batches.last().map(|(_, e)| e)
    );
    if let Some(report) = compare(None, ("memcached", "pincache"), &a, &b) {
        panic!("{report}");
    }
    eprintln!(
        "handcrafted stream: {} requests, 0 mismatches",
        request_count(&stream)
    );
}
