//! Command -> store call -> outcome. A connection's input goes to the parser of
//! its protocol (fixed by its first byte: 0x80 binary, anything else text);
//! every parsed [`Command`] is executed here, once, whatever the protocol, and
//! the [`Outcome`] goes back to that protocol's encoder.

use std::io::{self, IoSlice, Write};

use log::{log_enabled, Level};

use super::arrival::Arrival;
use super::conns::ConnTable;
use super::log_limit::LogLimit;
use super::sasl::Sasl;
use super::stats::{Settings, Stats};
use crate::protocol::{ArithOp, Command, Found, Limits, Outcome, StoreMode, BINARY_MAGIC};
use crate::store::{Item, Mode, Store, StoreError};

/// Everything a request may touch besides its own connection.
pub struct Context<'a> {
    pub store: &'a mut Store,
    pub stats: &'a mut Stats,
    pub settings: &'a Settings,
    pub sasl: Option<&'a Sasl>,
    pub limits: Limits,
    /// Budget for the debug lines a client's mistakes cause.
    pub log: &'a mut LogLimit,
    /// Every connection, for `stats conns`.
    pub conns: &'a ConnTable,
    /// A SET whose value of at least this many bytes is not all in yet is read
    /// into its item in place (`arrival`); `usize::MAX` turns that off.
    pub in_place_min: usize,
}

/// The protocol a connection speaks, fixed by its first byte.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    /// No byte yet.
    #[default]
    Unknown,
    Binary,
    Text,
}

/// Per-connection protocol state.
#[derive(Clone, Copy, Debug, Default)]
pub struct Session {
    pub protocol: Protocol,
    pub authenticated: bool,
}

/// The connection's socket, for values too large to be worth copying into the
/// output queue: the queued answers and the value go out in one writev, and only
/// what the socket does not take is copied.
pub struct Direct<'a> {
    pub socket: &'a mut dyn Write,
    /// `out[..*sent]` has been written already.
    pub sent: &'a mut usize,
    /// Values of at least this many bytes are written directly.
    pub min_value: usize,
}

impl Direct<'_> {
    /// Queues `value` after `out`, writing what the socket takes now. The value
    /// must be written before the store changes, hence not left borrowed.
    #[cold]
    #[inline(never)]
    pub fn send(&mut self, out: &mut Vec<u8>, value: &[u8], stats: &mut Stats) {
        let queued = &out[*self.sent..];
        let written = loop {
            match self
                .socket
                .write_vectored(&[IoSlice::new(queued), IoSlice::new(value)])
            {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // Full, or broken: the copy below waits for the next flush, which
                // also reports a broken socket.
                Err(_) => break 0,
            }
        };
        stats.bytes_written += written as u64;
        if written >= queued.len() {
            let taken = written - queued.len();
            out.clear();
            *self.sent = 0;
            out.extend_from_slice(&value[taken..]);
        } else {
            *self.sent += written;
            out.extend_from_slice(value);
        }
    }
}

/// Appends a hit's value to `out`, or sends it with the queue when it is large.
/// A hit is never suppressed, so nothing will truncate what is sent here.
#[inline]
pub fn put_value(
    out: &mut Vec<u8>,
    value: &[u8],
    direct: Option<&mut Direct<'_>>,
    stats: &mut Stats,
) {
    match direct {
        Some(direct) if value.len() >= direct.min_value => direct.send(out, value, stats),
        _ => out.extend_from_slice(value),
    }
}

/// What the connection should do after a batch.
#[derive(Debug, Default)]
pub struct Progress {
    /// Input bytes consumed (whole requests, plus the start of a skipped one).
    pub consumed: usize,
    /// Bytes of a refused request still to discard as they arrive.
    pub skip: u64,
    /// Close once the output is sent.
    pub close: bool,
    /// The length of the incomplete request at the front, if known.
    pub need: Option<u64>,
    /// Stopped because the output reached the high-water mark.
    pub throttled: bool,
    /// Stopped at a storage command whose value is being read in place: the
    /// bytes after `consumed` belong to it first.
    pub arrival: Option<Arrival>,
}

/// Answers every complete request at the front of `input` until the output holds
/// `high_water` bytes or more. With `direct`, large values go to the socket as
/// they are answered (so `out` may shrink); without, everything is queued in
/// `out`. `peer` names the client in the log.
#[inline]
pub fn process(
    input: &[u8],
    out: &mut Vec<u8>,
    direct: Option<&mut Direct<'_>>,
    high_water: usize,
    ctx: &mut Context<'_>,
    session: &mut Session,
    peer: &str,
) -> Progress {
    if matches!(session.protocol, Protocol::Unknown) {
        match input.first() {
            None => return Progress::default(),
            Some(&BINARY_MAGIC) => session.protocol = Protocol::Binary,
            Some(_) => session.protocol = Protocol::Text,
        }
    }
    if matches!(session.protocol, Protocol::Text) {
        let batch = Batch {
            input,
            out,
            direct,
            high_water,
            peer,
        };
        return super::text::process(batch, ctx, session);
    }
    super::binary::process(input, out, direct, high_water, ctx, session, peer)
}

/// One batch of input and where its answers go.
pub struct Batch<'i, 'o, 'd, 'x> {
    pub input: &'i [u8],
    pub out: &'o mut Vec<u8>,
    pub direct: Option<&'d mut Direct<'x>>,
    pub high_water: usize,
    pub peer: &'i str,
}

/// Whether a line about a client's mistake may be logged now (debug level only,
/// and within the per-second budget).
pub fn client_log(ctx: &mut Context<'_>) -> bool {
    log_enabled!(Level::Debug) && ctx.log.allow(std::time::Instant::now())
}

/// A storage command whose value is over the item size limit, refused before
/// its value is read: a SET also removes the old item, as memcached does.
pub fn refuse_too_large(mode: StoreMode, key: &[u8], store: &mut Store, stats: &mut Stats) {
    stats.store_too_large += 1;
    stats.detail_set(key);
    if mode == StoreMode::Set {
        stats.cmd_set += 1;
        store.remove(key);
    }
}

fn found(item: Item<'_>) -> Outcome<'_> {
    Outcome::Hit(Found {
        flags: item.flags,
        cas: item.cas,
        value: item.value,
    })
}

fn failed(error: StoreError) -> Outcome<'static> {
    match error {
        StoreError::NotFound => Outcome::NotFound,
        StoreError::Exists => Outcome::Exists,
        StoreError::NotStored => Outcome::NotStored,
        StoreError::TooLarge => Outcome::TooLarge,
        StoreError::NonNumeric => Outcome::NonNumeric,
        StoreError::OutOfMemory => Outcome::OutOfMemory,
    }
}

/// Runs one store command and counts it as memcached does. Commands that do not
/// touch the store (version, stats, ...) are each protocol's own business and
/// answer `Done`.
#[inline(always)]
pub fn execute<'s>(command: &Command<'_>, store: &'s mut Store, stats: &mut Stats) -> Outcome<'s> {
    match *command {
        Command::Get { key, touch } => get(key, touch, store, stats),
        Command::Touch { key, exptime } => get(key, Some(exptime), store, stats),
        Command::Store {
            mode,
            key,
            value,
            flags,
            exptime,
            cas,
        } => write(mode, key, value, (flags, exptime, cas), store, stats),
        Command::Delete { key, cas } => {
            stats.detail_delete(key);
            match store.delete(key, cas) {
                Ok(()) => {
                    stats.delete_hits += 1;
                    Outcome::Done { cas: 0 }
                }
                Err(e) => {
                    if e == StoreError::NotFound {
                        stats.delete_misses += 1;
                    }
                    failed(e)
                }
            }
        }
        Command::Arith { .. } => arith(command, store, stats),
        Command::Flush { delay } => {
            stats.cmd_flush += 1;
            store.flush(delay);
            Outcome::Done { cas: 0 }
        }
        Command::Stats { .. }
        | Command::Version
        | Command::Verbosity
        | Command::Noop
        | Command::Quit => Outcome::Done { cas: 0 },
    }
}

/// GET / GAT / TOUCH.
#[inline(always)]
fn get<'s>(key: &[u8], touch: Option<u32>, store: &'s mut Store, stats: &mut Stats) -> Outcome<'s> {
    let item = match touch {
        Some(exptime) => {
            stats.cmd_touch += 1;
            store.touch(key, exptime)
        }
        None => {
            stats.cmd_get += 1;
            store.get(key)
        }
    };
    let hit = item.is_some();
    match (touch, hit) {
        (Some(_), true) => stats.touch_hits += 1,
        (Some(_), false) => stats.touch_misses += 1,
        (None, true) => stats.get_hits += 1,
        (None, false) => stats.get_misses += 1,
    }
    stats.detail_get(key, hit);
    match item {
        Some(item) => found(item),
        None => Outcome::NotFound,
    }
}

/// SET / ADD / REPLACE / APPEND / PREPEND, with or without a CAS.
fn write<'s>(
    mode: StoreMode,
    key: &[u8],
    value: &[u8],
    (flags, exptime, cas): (u32, u32, u64),
    store: &'s mut Store,
    stats: &mut Stats,
) -> Outcome<'s> {
    stats.count_set(key, false);
    let result = match whole_value_mode(mode) {
        Some(mode) => store.store(mode, key, value, flags, exptime, cas),
        // The appended piece alone over the limit is "too large"; a result over
        // the limit is "not stored" (the store's answer), as in memcached.
        None if !store.fits(key.len(), value.len()) => Err(StoreError::TooLarge),
        None => store.concat(key, value, mode == StoreMode::Prepend, cas),
    };
    stored(result, cas != 0, stats)
}

/// The store's mode for a command that replaces the whole value (set, add,
/// replace); `None` for append and prepend, which join it with the old one.
pub fn whole_value_mode(mode: StoreMode) -> Option<Mode> {
    match mode {
        StoreMode::Set => Some(Mode::Set),
        StoreMode::Add => Some(Mode::Add),
        StoreMode::Replace => Some(Mode::Replace),
        StoreMode::Append | StoreMode::Prepend => None,
    }
}

/// The outcome of a SET-like command, counted as memcached counts it;
/// `guarded`: it carried a CAS.
pub fn stored(
    result: Result<u64, StoreError>,
    guarded: bool,
    stats: &mut Stats,
) -> Outcome<'static> {
    match result {
        Ok(cas) => {
            if guarded {
                stats.cas_hits += 1;
            }
            Outcome::Done { cas }
        }
        Err(e) => {
            match e {
                StoreError::Exists if guarded => stats.cas_badval += 1,
                StoreError::NotFound if guarded => stats.cas_misses += 1,
                StoreError::TooLarge => stats.store_too_large += 1,
                StoreError::OutOfMemory => stats.store_no_memory += 1,
                _ => {}
            }
            failed(e)
        }
    }
}

/// INCR / DECR.
fn arith<'s>(command: &Command<'_>, store: &'s mut Store, stats: &mut Stats) -> Outcome<'s> {
    let Command::Arith {
        key,
        op,
        delta,
        create,
        cas,
    } = *command
    else {
        return Outcome::NotFound;
    };
    let incr = op == ArithOp::Incr;
    let (initial, exptime) = match create {
        Some(c) => (c.initial, c.exptime),
        None => (0, u32::MAX),
    };
    let result = store.delta(key, incr, delta, initial, exptime, cas);
    let (hits, misses) = if incr {
        (&mut stats.incr_hits, &mut stats.incr_misses)
    } else {
        (&mut stats.decr_hits, &mut stats.decr_misses)
    };
    match result {
        Ok((value, cas)) => {
            *hits += 1;
            Outcome::Number { value, cas }
        }
        Err(e) => {
            if e == StoreError::NotFound {
                *misses += 1;
            }
            failed(e)
        }
    }
}
