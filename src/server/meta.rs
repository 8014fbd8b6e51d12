//! The meta commands' side of dispatch: `mg`, `ms`, `md`, `ma`, `me` run against
//! the store (through the shared executor where the classic semantics apply)
//! and answered with meta codes and the returned flags in request order.
//! `q` hides the plain outcome (`EN` for `mg`, `HD` for the others); errors and
//! values are never hidden.

use super::arrival::{Answer, Arrival, Pending};
use super::dispatch::{
    execute, put_value, refuse_too_large, stored, whole_value_mode, Context, Direct,
};
use super::text::Step;
use crate::protocol::text::encoder::{digits, line, number};
use crate::protocol::text::meta::{
    base64_decode, base64_encode, tokens, Meta, MetaCmd, MetaError, MAX_OPAQUE_BYTES,
};
use crate::protocol::text::parser::CAS_NEVER;
use crate::protocol::{ArithOp, Command, Create, Outcome, StoreMode, MAX_KEY_LEN};
use crate::store::{MetaItem, MetaRead, Mode};

/// Answers a meta line that did not parse (and swallows an `ms` data block).
pub fn refused(error: MetaError, len: usize, out: &mut Vec<u8>) -> Step {
    line(out, error.text);
    match error.swallow {
        Some(skip) => Step::Skip {
            line: len,
            skip: skip as u64,
        },
        None => Step::Consumed(len),
    }
}

/// Answers one meta request; `rest` starts with its line of `len` bytes.
pub fn answer(
    m: &Meta<'_>,
    rest: &[u8],
    len: usize,
    ctx: &mut Context<'_>,
    out: &mut Vec<u8>,
    direct: Option<&mut Direct<'_>>,
) -> Step {
    ctx.stats.cmd_meta += 1;
    let mut decoded = [0u8; MAX_KEY_LEN];
    let key = if m.flags.base64 {
        match base64_decode(m.key, &mut decoded) {
            Some(key) => key,
            None => {
                let swallow = (m.cmd == MetaCmd::Set).then_some(m.data_len + 2);
                let text = "CLIENT_ERROR error decoding key";
                return refused(MetaError { text, swallow }, len, out);
            }
        }
    } else {
        m.key
    };
    match m.cmd {
        MetaCmd::Get => get(m, key, ctx, out, direct),
        MetaCmd::Set => return set(m, key, rest, len, ctx, out),
        MetaCmd::Delete => delete(m, key, ctx, out),
        MetaCmd::Arith => arith(m, key, ctx, out),
        MetaCmd::Debug => debug(m, key, ctx, out),
    }
    Step::Consumed(len)
}

/// ` k<key>` (with ` b` for a base64 key, which is echoed as sent).
fn key_flag(m: &Meta<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(b" k");
    out.extend_from_slice(m.key);
    if m.flags.base64 {
        out.extend_from_slice(b" b");
    }
}

/// The `O` and `k` flags every answer echoes.
fn echo_flags(m: &Meta<'_>, out: &mut Vec<u8>) {
    for token in tokens(m.tokens) {
        match token[0] {
            b'O' => {
                out.push(b' ');
                out.extend_from_slice(token);
            }
            b'k' => key_flag(m, out),
            _ => {}
        }
    }
}

fn get(
    m: &Meta<'_>,
    key: &[u8],
    ctx: &mut Context<'_>,
    out: &mut Vec<u8>,
    direct: Option<&mut Direct<'_>>,
) {
    let f = &m.flags;
    let read = MetaRead {
        touch: f.ttl,
        vivify: f.vivify,
        vivify_after_touch: comes_after(m, b'N', b'T'),
        recache: f.recache,
        recache_after_touch: comes_after(m, b'R', b'T'),
        bump: !f.no_bump,
        peek: false,
    };
    let steps = TtlSteps::of(m, ctx);
    let stats = &mut *ctx.stats;
    let item = ctx.store.meta_get(key, read);
    let hit = item.is_some();
    match (f.ttl.is_some(), hit) {
        (true, true) => stats.touch_hits += 1,
        (true, false) => stats.touch_misses += 1,
        (false, true) => stats.get_hits += 1,
        (false, false) => stats.get_misses += 1,
    }
    if f.ttl.is_some() {
        stats.cmd_touch += 1;
    } else {
        stats.cmd_get += 1;
    }
    stats.detail_get(key, hit);
    let Some(item) = item else {
        if !f.quiet {
            out.extend_from_slice(b"EN");
            echo_flags(m, out);
            out.extend_from_slice(b"\r\n");
        }
        return;
    };
    if f.value {
        out.extend_from_slice(b"VA ");
        number(out, item.value.len() as u64);
    } else {
        out.extend_from_slice(b"HD");
    }
    item_flags(m, &item, steps, out);
    if f.value {
        put_value(out, item.value, direct, stats);
        out.extend_from_slice(b"\r\n");
    }
}

/// Whether flag `a` comes after flag `b` in the request (both present).
fn comes_after(m: &Meta<'_>, a: u8, b: u8) -> bool {
    let at = |letter| tokens(m.tokens).position(|t| t[0] == letter);
    matches!((at(a), at(b)), (Some(a), Some(b)) if a > b)
}

/// The TTLs (seconds left, `None` = never) that `T` and `N` set. memcached
/// applies them where they stand among the flags, so a `t` reports the TTL as
/// of its own place: the item's before them, then each one's as it is passed
/// (`N` only on an item this request created).
#[derive(Clone, Copy, Debug)]
struct TtlSteps {
    touch: Option<u32>,
    vivify: Option<u32>,
}

impl TtlSteps {
    fn of(m: &Meta<'_>, ctx: &Context<'_>) -> TtlSteps {
        let ttl = |exptime: Option<u32>| exptime.and_then(|e| ctx.store.ttl_of(e));
        TtlSteps {
            touch: ttl(m.flags.ttl),
            vivify: ttl(m.flags.vivify),
        }
    }

    /// The TTL after flag `letter`, given the TTL before it.
    fn after(self, letter: u8, created: bool, ttl: Option<u32>) -> Option<u32> {
        match letter {
            b'T' => self.touch,
            b'N' if created => self.vivify,
            _ => ttl,
        }
    }
}

/// The returned flags of a hit, in request order, then `Z`, `X`, `W`.
fn item_flags(m: &Meta<'_>, item: &MetaItem<'_>, steps: TtlSteps, out: &mut Vec<u8>) {
    let mut ttl = item.ttl_before;
    for token in tokens(m.tokens) {
        let letter = token[0];
        ttl = steps.after(letter, item.created, ttl);
        match letter {
            b's' | b't' | b'c' | b'f' | b'h' | b'l' => {
                out.push(b' ');
                out.push(letter);
            }
            _ => {}
        }
        match letter {
            b's' => number(out, item.value.len() as u64),
            b't' => left(ttl, out),
            b'c' => number(out, item.cas),
            b'f' => number(out, u64::from(item.flags)),
            b'h' => out.push(if item.fetched { b'1' } else { b'0' }),
            b'l' => number(out, u64::from(item.idle)),
            b'O' => {
                out.push(b' ');
                out.extend_from_slice(token);
            }
            b'k' => key_flag(m, out),
            _ => {}
        }
    }
    if item.token_sent {
        out.extend_from_slice(b" Z");
    }
    if item.stale {
        out.extend_from_slice(b" X");
    }
    if item.won {
        out.extend_from_slice(b" W");
    }
    out.extend_from_slice(b"\r\n");
}

fn ttl(item: &MetaItem<'_>, out: &mut Vec<u8>) {
    left(item.ttl, out);
}

fn left(ttl: Option<u32>, out: &mut Vec<u8>) {
    match ttl {
        Some(secs) => number(out, u64::from(secs)),
        None => out.extend_from_slice(b"-1"),
    }
}

/// `ms`: the data block, then the store in the requested mode.
fn set(
    m: &Meta<'_>,
    key: &[u8],
    rest: &[u8],
    len: usize,
    ctx: &mut Context<'_>,
    out: &mut Vec<u8>,
) -> Step {
    let f = &m.flags;
    let skip = m.data_len as u64 + 2;
    let Some(mode) = set_mode(f.mode) else {
        line(out, "CLIENT_ERROR invalid mode for ms M token");
        return Step::Skip { line: len, skip };
    };
    if !ctx.store.fits(key.len(), m.data_len) {
        // An over-size value removes the old item whatever the mode (memcached).
        refuse_too_large(StoreMode::Set, key, ctx.store, ctx.stats);
        line(out, "SERVER_ERROR object too large for cache");
        return Step::Skip { line: len, skip };
    }
    // Add ignores a CAS in memcached; append and prepend take C0 as no CAS
    // (memcached 1.6.18); the other modes compare, C0 included.
    let cas = match (mode, f.cas) {
        (StoreMode::Add, _) | (_, None) => 0,
        (StoreMode::Append | StoreMode::Prepend, Some(CAS_NEVER)) => 0,
        (_, Some(cas)) => cas,
    };
    let total = len + m.data_len + 2;
    if rest.len() < total {
        if m.data_len >= ctx.in_place_min {
            let pending = Pending {
                mode,
                flags: f.client_flags.unwrap_or(0),
                exptime: f.ttl.unwrap_or(0),
                cas,
                answer: Answer::Meta(MetaSet::of(m)),
            };
            if let Some(arrival) = Arrival::begin(ctx.store, key, m.data_len, pending) {
                return Step::Arrive { line: len, arrival };
            }
        }
        return Step::Need(total as u64);
    }
    if &rest[len + m.data_len..total] != b"\r\n" {
        line(out, "CLIENT_ERROR bad data chunk");
        return Step::Consumed(total);
    }
    let value = &rest[len..len + m.data_len];
    let outcome = store_value(m, mode, key, value, cas, ctx);
    MetaSet::of(m).answer(outcome, mode, cas, key, out);
    Step::Consumed(total)
}

/// What an `ms` answer needs besides its outcome, kept while the value is
/// read in place (the request line is gone by then) without allocating: the
/// `O`, `k` and `c` flags in request order, the opaque's bytes, `b`, `q`, `I`.
#[derive(Clone, Copy, Debug)]
pub struct MetaSet {
    /// `O`, `k`, `c` in the order asked (each at most once); 0 past the last.
    order: [u8; 3],
    opaque: [u8; MAX_OPAQUE_BYTES],
    opaque_len: u8,
    base64: bool,
    quiet: bool,
    /// `I`: a CAS older than the item's stores the value stale (set, replace).
    pub invalidate: bool,
}

impl MetaSet {
    fn of(m: &Meta<'_>) -> MetaSet {
        let mut set = MetaSet {
            order: [0; 3],
            opaque: [0; MAX_OPAQUE_BYTES],
            opaque_len: 0,
            base64: m.flags.base64,
            quiet: m.flags.quiet,
            invalidate: m.flags.invalidate,
        };
        let mut n = 0;
        for token in tokens(m.tokens) {
            let letter = token[0];
            if !matches!(letter, b'O' | b'k' | b'c') || n == set.order.len() {
                continue;
            }
            set.order[n] = letter;
            n += 1;
            // The parser refused a longer opaque.
            if letter == b'O' && token.len() <= MAX_OPAQUE_BYTES {
                set.opaque[..token.len()].copy_from_slice(token);
                set.opaque_len = token.len() as u8;
            }
        }
        set
    }

    /// Writes the answer to an `ms` of `mode` and `cas` on `key` (decoded):
    /// the code, and for a two-letter code the `O`, `k` and `c` flags asked
    /// for, in the order asked; `q` hides `HD`.
    pub fn answer(
        &self,
        outcome: Outcome<'_>,
        mode: StoreMode,
        cas: u64,
        key: &[u8],
        out: &mut Vec<u8>,
    ) {
        let code = set_code(outcome, mode, cas);
        if code == "HD" && self.quiet {
            return;
        }
        out.extend_from_slice(code.as_bytes());
        if code.len() == 2 {
            for &letter in self.order.iter().take_while(|&&l| l != 0) {
                match letter {
                    b'O' => {
                        out.push(b' ');
                        out.extend_from_slice(&self.opaque[..usize::from(self.opaque_len)]);
                    }
                    // memcached echoes the stored key, encoded again for `b`.
                    b'k' if self.base64 => {
                        out.extend_from_slice(b" k");
                        base64_encode(key, out);
                        out.extend_from_slice(b" b");
                    }
                    b'k' => {
                        out.extend_from_slice(b" k");
                        out.extend_from_slice(key);
                    }
                    _ => {
                        out.extend_from_slice(b" c");
                        let new_cas = match outcome {
                            Outcome::Done { cas } => cas,
                            _ => 0,
                        };
                        number(out, new_cas);
                    }
                }
            }
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// Whether an `ms` stores through the invalidating store: `I` with a CAS, in
/// set or replace mode (a CAS older than the item's then stores it stale).
pub fn invalidating(invalidate: bool, mode: StoreMode, cas: u64) -> bool {
    invalidate && cas != 0 && matches!(mode, StoreMode::Set | StoreMode::Replace)
}

/// The store mode an `ms` `M` token names; `None` for a letter memcached refuses.
fn set_mode(token: Option<u8>) -> Option<StoreMode> {
    match token {
        None | Some(b'S' | b's') => Some(StoreMode::Set),
        Some(b'E' | b'e') => Some(StoreMode::Add),
        Some(b'A' | b'a') => Some(StoreMode::Append),
        Some(b'P' | b'p') => Some(StoreMode::Prepend),
        Some(b'R' | b'r') => Some(StoreMode::Replace),
        Some(_) => None,
    }
}

/// Executes an `ms`: through the shared command core, or, for `I` with a CAS in
/// set or replace mode, the store's invalidating store (no other protocol has it).
fn store_value<'c>(
    m: &Meta<'_>,
    mode: StoreMode,
    key: &[u8],
    value: &[u8],
    cas: u64,
    ctx: &'c mut Context<'_>,
) -> Outcome<'c> {
    let f = &m.flags;
    let (flags, exptime) = (f.client_flags.unwrap_or(0), f.ttl.unwrap_or(0));
    if !invalidating(f.invalidate, mode, cas) {
        let command = Command::Store {
            mode,
            key,
            value,
            flags,
            exptime,
            cas,
        };
        return execute(&command, ctx.store, ctx.stats);
    }
    ctx.stats.count_set(key, false);
    // `invalidating`: set or replace.
    let store_mode = whole_value_mode(mode).unwrap_or(Mode::Set);
    let result = ctx
        .store
        .store_with(store_mode, key, value, (flags, exptime), cas, true);
    stored(result, true, ctx.stats)
}

/// The answer word of an `ms` outcome, as memcached 1.6.18 words it.
fn set_code(outcome: Outcome<'_>, mode: StoreMode, cas: u64) -> &'static str {
    match (outcome, mode) {
        (Outcome::Done { .. }, _) => "HD",
        (Outcome::Exists, StoreMode::Add) | (Outcome::NotFound, StoreMode::Replace) if cas == 0 => {
            "NS"
        }
        (Outcome::Exists, _) => "EX",
        (Outcome::NotFound, _) => "NF",
        (Outcome::NotStored, _) => "NS",
        (Outcome::TooLarge, _) => "SERVER_ERROR object too large for cache",
        _ => "SERVER_ERROR out of memory storing object",
    }
}

/// `md`: delete, or with `I` mark stale.
fn delete(m: &Meta<'_>, key: &[u8], ctx: &mut Context<'_>, out: &mut Vec<u8>) {
    let f = &m.flags;
    let cas = f.cas.unwrap_or(0);
    let outcome = if f.invalidate {
        match ctx.store.invalidate(key, cas, f.ttl) {
            Ok(cas) => Outcome::Done { cas },
            Err(crate::store::StoreError::Exists) => Outcome::Exists,
            Err(_) => Outcome::NotFound,
        }
    } else {
        execute(&Command::Delete { key, cas }, ctx.store, ctx.stats)
    };
    let code = match outcome {
        Outcome::Done { .. } if f.quiet => return,
        Outcome::Done { .. } => "HD",
        Outcome::Exists => "EX",
        _ => "NF",
    };
    out.extend_from_slice(code.as_bytes());
    echo_flags(m, out);
    out.extend_from_slice(b"\r\n");
}

/// `ma`: incr or decr, optionally creating (`N`, `J`) and touching (`T`).
fn arith(m: &Meta<'_>, key: &[u8], ctx: &mut Context<'_>, out: &mut Vec<u8>) {
    let f = &m.flags;
    let op = match f.mode {
        None | Some(b'I' | b'i' | b'+') => ArithOp::Incr,
        Some(b'D' | b'd' | b'-') => ArithOp::Decr,
        Some(_) => return line(out, "CLIENT_ERROR invalid mode for ma M token"),
    };
    let command = Command::Arith {
        key,
        op,
        delta: f.delta.unwrap_or(1),
        create: f.vivify.map(|exptime| Create {
            initial: f.initial.unwrap_or(0),
            exptime,
        }),
        cas: f.cas.unwrap_or(0),
    };
    let peek = MetaRead {
        peek: true,
        ..MetaRead::default()
    };
    // The item before: its TTL, and its length (an incr that fits is in place).
    let before = ctx
        .store
        .meta_get(key, peek)
        .map(|i| (i.ttl, i.value.len()));
    // `q` hides the answer of a hit only; an item created by `N` still answers.
    let created = f.vivify.is_some() && before.is_none();
    let steps = TtlSteps::of(m, ctx);
    let (value, cas) = match execute(&command, ctx.store, ctx.stats) {
        Outcome::Number { value, cas } => (value, cas),
        Outcome::NotFound => return code_line("NF", m, out),
        Outcome::Exists => return code_line("EX", m, out),
        Outcome::NonNumeric => {
            return line(
                out,
                "CLIENT_ERROR cannot increment or decrement non-numeric value",
            )
        }
        _ => return line(out, "SERVER_ERROR out of memory"),
    };
    let mut buf = [0u8; 20];
    let text = digits(value, &mut buf);
    // memcached applies `T` (and `N`) to the item it answers about, where they
    // stand among the flags: `T` stays on an item created here (unless an `N`
    // after it) or changed in place; an incr that had to rewrite the item
    // answers about the old one, and its `T` is lost.
    let in_place = matches!(before, Some((_, len)) if text.len() <= len);
    if let Some(exptime) = f.ttl {
        if in_place || (created && !comes_after(m, b'N', b'T')) {
            ctx.store.set_exptime(key, exptime);
        }
    }
    if f.quiet && !created {
        return;
    }
    let ttl = before.and_then(|(ttl, _)| ttl);
    arith_answer(m, (text, cas), (ttl, created, steps), out);
}

/// Writes an `ma` answer: the code, the flags asked for in their order, the value.
fn arith_answer(
    m: &Meta<'_>,
    (text, cas): (&[u8], u64),
    (mut ttl, created, steps): (Option<u32>, bool, TtlSteps),
    out: &mut Vec<u8>,
) {
    if m.flags.value {
        out.extend_from_slice(b"VA ");
        number(out, text.len() as u64);
    } else {
        out.extend_from_slice(b"HD");
    }
    for token in tokens(m.tokens) {
        ttl = steps.after(token[0], created, ttl);
        match token[0] {
            b't' => {
                out.extend_from_slice(b" t");
                left(ttl, out);
            }
            b'c' => {
                out.extend_from_slice(b" c");
                number(out, cas);
            }
            b'O' => {
                out.push(b' ');
                out.extend_from_slice(token);
            }
            b'k' => key_flag(m, out),
            _ => {}
        }
    }
    out.extend_from_slice(b"\r\n");
    if m.flags.value {
        out.extend_from_slice(text);
        out.extend_from_slice(b"\r\n");
    }
}

fn code_line(code: &str, m: &Meta<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(code.as_bytes());
    echo_flags(m, out);
    out.extend_from_slice(b"\r\n");
}

/// `me`: memcached's debug line, with the fields our store knows (`exp` is the
/// seconds left, -1 for never).
fn debug(m: &Meta<'_>, key: &[u8], ctx: &mut Context<'_>, out: &mut Vec<u8>) {
    let peek = MetaRead {
        peek: true,
        ..MetaRead::default()
    };
    let Some(item) = ctx.store.meta_get(key, peek) else {
        return line(out, "EN");
    };
    out.extend_from_slice(b"ME ");
    out.extend_from_slice(m.key);
    out.extend_from_slice(b" exp=");
    ttl(&item, out);
    out.extend_from_slice(b" la=");
    number(out, u64::from(item.idle));
    out.extend_from_slice(b" cas=");
    number(out, item.cas);
    out.extend_from_slice(if item.fetched {
        b" fetch=yes"
    } else {
        b" fetch=no"
    });
    out.extend_from_slice(b" cls=1 size=");
    number(out, item.size as u64);
    out.extend_from_slice(b"\r\n");
}
