//! Request -> store call -> response. Every complete request in a connection's
//! input is answered here, in order, straight into its output buffer; quiet-mode
//! suppression is one step after execution.

use std::io::{self, IoSlice, Write};

use log::{debug, log_enabled, Level};

use super::log_limit::LogLimit;
use super::sasl::Sasl;
use super::stats::{self, Settings, Stats, VERSION};
use crate::protocol::request::{parse, Extras, Limits, ParseError, Request};
use crate::protocol::response::{write_error, write_header, write_response};
use crate::protocol::{Opcode, Status};
use crate::store::{Mode, Store, StoreError};

/// Everything a request may touch besides its own connection.
pub struct Context<'a> {
    pub store: &'a mut Store,
    pub stats: &'a mut Stats,
    pub settings: &'a Settings,
    pub sasl: Option<&'a Sasl>,
    pub limits: Limits,
    /// Budget for the debug lines a client's mistakes cause.
    pub log: &'a mut LogLimit,
}

/// Per-connection protocol state.
#[derive(Clone, Copy, Debug, Default)]
pub struct Session {
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
    fn send(&mut self, out: &mut Vec<u8>, value: &[u8], stats: &mut Stats) {
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

/// What the connection should do after a batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Input bytes consumed (whole frames, plus the start of a skipped one).
    pub consumed: usize,
    /// Bytes of a refused frame still to discard as they arrive.
    pub skip: u64,
    /// Close once the output is sent.
    pub close: bool,
    /// The length of the incomplete frame at the front, if its header is in.
    pub need: Option<u64>,
    /// Stopped because the output reached the high-water mark.
    pub throttled: bool,
}

/// Answers every complete request at the front of `input` until the output holds
/// `high_water` bytes or more. With `direct`, large GET values go to the socket
/// as they are answered (so `out` may shrink); without, everything is queued in
/// `out`. `peer` names the client in the log.
pub fn process(
    input: &[u8],
    out: &mut Vec<u8>,
    mut direct: Option<&mut Direct<'_>>,
    high_water: usize,
    ctx: &mut Context<'_>,
    session: &mut Session,
    peer: &str,
) -> Progress {
    let mut progress = Progress::default();
    let mut pos = 0;
    while pos < input.len() {
        if out.len() >= high_water {
            progress.throttled = true;
            break;
        }
        match parse(&input[pos..], &ctx.limits) {
            Ok((request, len)) => {
                pos += len;
                if execute(&request, ctx, session, out, direct.as_deref_mut()) == Flow::Close {
                    progress.close = true;
                    break;
                }
            }
            Err(ParseError::Incomplete) => {
                progress.need = crate::protocol::request::frame_len(&input[pos..]);
                break;
            }
            Err(ParseError::BadMagic) => {
                ctx.stats.protocol_errors += 1;
                if client_log(ctx) {
                    debug!("{peer}: bad magic 0x{:02x}, closing", input[pos]);
                }
                progress.close = true;
                break;
            }
            Err(ParseError::Invalid {
                opcode,
                opaque,
                mut status,
            }) => {
                ctx.stats.protocol_errors += 1;
                if client_log(ctx) {
                    debug!("{peer}: invalid lengths for opcode 0x{opcode:02x}, closing");
                }
                // memcached checks the login before the opcode's lengths.
                if status == Status::InvalidArguments && must_authenticate(opcode, ctx, session) {
                    ctx.stats.auth_errors += 1;
                    status = Status::AuthError;
                }
                write_error(out, opcode, opaque, status);
                progress.close = true;
                break;
            }
            Err(ParseError::Skip { request, skip, .. })
                if must_authenticate(request.opcode, ctx, session) =>
            {
                // Before login nothing is answered but "auth error", and a refused
                // SET must not delete anything.
                ctx.stats.auth_errors += 1;
                write_error(out, request.opcode, request.opaque, Status::AuthError);
                pos += skip.min((input.len() - pos) as u64) as usize;
                progress.close = true;
                break;
            }
            Err(ParseError::Skip {
                request,
                status,
                skip,
            }) => {
                refuse(&request, status, ctx, out, peer);
                let available = (input.len() - pos) as u64;
                if skip <= available {
                    pos += skip as usize;
                } else {
                    pos = input.len();
                    progress.skip = skip - available;
                    break;
                }
            }
        }
    }
    progress.consumed = pos;
    progress
}

/// Whether a line about a client's mistake may be logged now (debug level only,
/// and within the per-second budget).
fn client_log(ctx: &mut Context<'_>) -> bool {
    log_enabled!(Level::Debug) && ctx.log.allow(std::time::Instant::now())
}

/// Answers a frame refused without buffering (unknown opcode, value too large).
fn refuse(
    request: &Request<'_>,
    status: Status,
    ctx: &mut Context<'_>,
    out: &mut Vec<u8>,
    peer: &str,
) {
    if status == Status::ValueTooLarge {
        ctx.stats.store_too_large += 1;
        if request.command == Opcode::Set {
            ctx.stats.cmd_set += 1;
            // A failed SET must not leave the old value readable (memcached).
            ctx.store.remove(request.key);
        }
    } else {
        ctx.stats.protocol_errors += 1;
        if client_log(ctx) {
            debug!("{peer}: unknown opcode 0x{:02x}", request.opcode);
        }
    }
    write_error(out, request.opcode, request.opaque, status);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Close,
}

/// Runs one request and applies quiet-mode suppression to its answer.
fn execute(
    request: &Request<'_>,
    ctx: &mut Context<'_>,
    session: &mut Session,
    out: &mut Vec<u8>,
    direct: Option<&mut Direct<'_>>,
) -> Flow {
    let mark = out.len();
    if must_authenticate(request.opcode, ctx, session) {
        ctx.stats.auth_errors += 1;
        write_error(out, request.opcode, request.opaque, Status::AuthError);
        return Flow::Close;
    }
    let (status, flow) = run(request, ctx, session, out, direct);
    if request.quiet && suppressed(request.command, status) {
        out.truncate(mark);
    }
    flow
}

/// Whether SASL is on and this connection must log in before sending `opcode`
/// (everything but the SASL commands and VERSION, as in memcached).
fn must_authenticate(opcode: u8, ctx: &Context<'_>, session: &Session) -> bool {
    ctx.sasl.is_some()
        && !session.authenticated
        && !matches!(
            Opcode::from_u8(opcode),
            Some(Opcode::SaslListMechs | Opcode::SaslAuth | Opcode::SaslStep | Opcode::Version)
        )
}

/// Quiet gets drop their misses; every other quiet command drops its success.
/// Errors are always sent: a client that misses one desynchronises.
fn suppressed(command: Opcode, status: Status) -> bool {
    match command {
        Opcode::Get | Opcode::GetK | Opcode::Gat | Opcode::GatK => status == Status::KeyNotFound,
        _ => status == Status::NoError,
    }
}

fn status_of(error: StoreError) -> Status {
    match error {
        StoreError::NotFound => Status::KeyNotFound,
        StoreError::Exists => Status::KeyExists,
        StoreError::NotStored => Status::ItemNotStored,
        StoreError::TooLarge => Status::ValueTooLarge,
        StoreError::NonNumeric => Status::NonNumeric,
        StoreError::OutOfMemory => Status::OutOfMemory,
    }
}

fn error(request: &Request<'_>, status: Status, out: &mut Vec<u8>) -> Status {
    write_error(out, request.opcode, request.opaque, status);
    status
}

fn ok(request: &Request<'_>, cas: u64, value: &[u8], out: &mut Vec<u8>) -> Status {
    write_response(
        out,
        request.opcode,
        request.opaque,
        Status::NoError,
        cas,
        &[],
        &[],
        value,
    );
    Status::NoError
}

fn run(
    request: &Request<'_>,
    ctx: &mut Context<'_>,
    session: &mut Session,
    out: &mut Vec<u8>,
    direct: Option<&mut Direct<'_>>,
) -> (Status, Flow) {
    let status = match request.command {
        Opcode::Get | Opcode::GetK | Opcode::Gat | Opcode::GatK | Opcode::Touch => {
            retrieve(request, ctx, out, direct)
        }
        Opcode::Set | Opcode::Add | Opcode::Replace => store(request, ctx, out),
        Opcode::Append | Opcode::Prepend => concat(request, ctx, out),
        Opcode::Increment | Opcode::Decrement => arithmetic(request, ctx, out),
        Opcode::Delete => match ctx.store.delete(request.key, request.cas) {
            Ok(()) => {
                ctx.stats.delete_hits += 1;
                ok(request, 0, &[], out)
            }
            Err(e) => {
                if e == StoreError::NotFound {
                    ctx.stats.delete_misses += 1;
                }
                error(request, status_of(e), out)
            }
        },
        Opcode::Flush => {
            ctx.stats.cmd_flush += 1;
            let delay = match request.extras {
                Extras::Flush { delay } => delay,
                _ => 0,
            };
            ctx.store.flush(delay);
            ok(request, 0, &[], out)
        }
        Opcode::Noop => ok(request, 0, &[], out),
        Opcode::Version => ok(request, 0, VERSION.as_bytes(), out),
        Opcode::Quit => {
            let status = ok(request, 0, &[], out);
            return (status, Flow::Close);
        }
        Opcode::Stat => {
            let status = stats::write_group(
                request.key,
                ctx.stats,
                ctx.store,
                ctx.settings,
                out,
                request.opaque,
            );
            if status != Status::NoError {
                error(request, status, out);
            }
            status
        }
        Opcode::SaslListMechs | Opcode::SaslAuth | Opcode::SaslStep => match ctx.sasl {
            Some(sasl) => sasl.answer(request, ctx.stats, session, out),
            // memcached answers every SASL command with "unknown command" while off.
            None => error(request, Status::UnknownCommand, out),
        },
        // Quiet opcodes were mapped to their base; VERBOSITY never parses.
        _ => error(request, Status::UnknownCommand, out),
    };
    (status, Flow::Continue)
}

/// GET / GETK / GAT / GATK / TOUCH (and their quiet forms).
fn retrieve(
    request: &Request<'_>,
    ctx: &mut Context<'_>,
    out: &mut Vec<u8>,
    direct: Option<&mut Direct<'_>>,
) -> Status {
    let touch = match request.extras {
        Extras::Touch { exptime } => Some(exptime),
        _ => None,
    };
    let with_key = matches!(request.command, Opcode::GetK | Opcode::GatK);
    let found = match touch {
        Some(exptime) => {
            ctx.stats.cmd_touch += 1;
            ctx.store.touch(request.key, exptime)
        }
        None => {
            ctx.stats.cmd_get += 1;
            ctx.store.get(request.key)
        }
    };
    let Some(item) = found else {
        if touch.is_some() {
            ctx.stats.touch_misses += 1;
        } else {
            ctx.stats.get_misses += 1;
        }
        if with_key {
            // A GETK miss echoes the key instead of the text.
            write_response(
                out,
                request.opcode,
                request.opaque,
                Status::KeyNotFound,
                0,
                &[],
                request.key,
                &[],
            );
            return Status::KeyNotFound;
        }
        return error(request, Status::KeyNotFound, out);
    };
    if touch.is_some() {
        ctx.stats.touch_hits += 1;
    } else {
        ctx.stats.get_hits += 1;
    }
    let key: &[u8] = if with_key { request.key } else { &[] };
    // TOUCH answers with the flags only.
    let value = if request.command == Opcode::Touch {
        &[][..]
    } else {
        item.value
    };
    let flags = item.flags.to_be_bytes();
    // Lengths as in write_response: extras 4, key <= 250, value < 4 GiB.
    let body = flags.len() + key.len() + value.len();
    write_header(
        out,
        request.opcode,
        Status::NoError,
        flags.len() as u8,
        key.len() as u16,
        body as u32,
        request.opaque,
        item.cas,
    );
    out.extend_from_slice(&flags);
    out.extend_from_slice(key);
    match direct {
        // A hit is never suppressed, so nothing will truncate what is sent here.
        Some(direct) if value.len() >= direct.min_value => direct.send(out, value, ctx.stats),
        _ => out.extend_from_slice(value),
    }
    Status::NoError
}

/// SET / ADD / REPLACE.
fn store(request: &Request<'_>, ctx: &mut Context<'_>, out: &mut Vec<u8>) -> Status {
    let Extras::Store { flags, exptime } = request.extras else {
        return error(request, Status::InvalidArguments, out);
    };
    let mode = match request.command {
        Opcode::Add => Mode::Add,
        Opcode::Replace => Mode::Replace,
        _ => Mode::Set,
    };
    ctx.stats.cmd_set += 1;
    let result = ctx.store.store(
        mode,
        request.key,
        request.value,
        flags,
        exptime,
        request.cas,
    );
    finish_store(request, result, ctx.stats, out)
}

/// APPEND / PREPEND.
fn concat(request: &Request<'_>, ctx: &mut Context<'_>, out: &mut Vec<u8>) -> Status {
    ctx.stats.cmd_set += 1;
    // The appended piece alone over the limit is "too large"; a result over the
    // limit is "not stored" (the store's answer), as in memcached.
    if !ctx.store.fits(request.key.len(), request.value.len()) {
        ctx.stats.store_too_large += 1;
        return error(request, Status::ValueTooLarge, out);
    }
    let prepend = request.command == Opcode::Prepend;
    let result = ctx
        .store
        .concat(request.key, request.value, prepend, request.cas);
    finish_store(request, result, ctx.stats, out)
}

fn finish_store(
    request: &Request<'_>,
    result: Result<u64, StoreError>,
    stats: &mut Stats,
    out: &mut Vec<u8>,
) -> Status {
    let guarded = request.cas != 0;
    match result {
        Ok(cas) => {
            if guarded {
                stats.cas_hits += 1;
            }
            ok(request, cas, &[], out)
        }
        Err(e) => {
            match e {
                StoreError::Exists if guarded => stats.cas_badval += 1,
                StoreError::NotFound if guarded => stats.cas_misses += 1,
                StoreError::TooLarge => stats.store_too_large += 1,
                StoreError::OutOfMemory => stats.store_no_memory += 1,
                _ => {}
            }
            error(request, status_of(e), out)
        }
    }
}

/// INCREMENT / DECREMENT.
fn arithmetic(request: &Request<'_>, ctx: &mut Context<'_>, out: &mut Vec<u8>) -> Status {
    let Extras::Counter {
        delta,
        initial,
        exptime,
    } = request.extras
    else {
        return error(request, Status::InvalidArguments, out);
    };
    let incr = request.command == Opcode::Increment;
    let result = ctx
        .store
        .delta(request.key, incr, delta, initial, exptime, request.cas);
    let (hits, misses) = if incr {
        (&mut ctx.stats.incr_hits, &mut ctx.stats.incr_misses)
    } else {
        (&mut ctx.stats.decr_hits, &mut ctx.stats.decr_misses)
    };
    match result {
        Ok((value, cas)) => {
            *hits += 1;
            ok(request, cas, &value.to_be_bytes(), out)
        }
        Err(e) => {
            if e == StoreError::NotFound {
                *misses += 1;
            }
            error(request, status_of(e), out)
        }
    }
}
