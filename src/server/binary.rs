//! The binary protocol's side of dispatch: frames -> commands -> the shared
//! executor -> binary answers, with quiet-mode suppression applied once after
//! execution, and the frames refused unbuffered (unknown opcode, too large).

use log::debug;

use super::arrival::{Answer, Arrival, Pending};
use super::dispatch::{
    client_log, execute, put_value, refuse_too_large, Context, Direct, Progress, Session,
};
use super::stats::{self, StatFormat, Stats, VERSION};
use crate::protocol::binary::encoder::{status_of, Reply};
use crate::protocol::binary::parser::{frame_len, get_key, partial_store, Extras};
use crate::protocol::{
    parse, Command, Opcode, Outcome, ParseError, Request, Status, StoreMode, HEADER_LEN,
};
use crate::store::Store;

/// Answers every complete frame at the front of the batch's input.
///
/// Not inlined into the connection's read path: on its own the request loop
/// gets the registers to itself (callgrind, binary p16 get hits: 617 user
/// instructions per request inlined, 555 not, most of the difference spills).
#[inline(never)]
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
    let mut prefetched = 0;
    while pos < input.len() {
        if out.len() >= high_water {
            progress.throttled = true;
            break;
        }
        // Two headers' worth at least: a lone small request (one in flight)
        // has nothing to overlap with and skips the call.
        if pos >= prefetched && input.len() - pos >= 2 * HEADER_LEN {
            prefetched = pos + prefetch_gets(&input[pos..], ctx.store);
        }
        match parse(&input[pos..], &ctx.limits) {
            Ok((request, len)) => {
                pos += len;
                if answer(&request, ctx, session, out, direct.as_deref_mut()) == Flow::Close {
                    progress.close = true;
                    break;
                }
            }
            Err(ParseError::Incomplete) => {
                match arrive(&input[pos..], ctx, session) {
                    Some((head, arrival)) => {
                        pos += head;
                        progress.arrival = Some(arrival);
                    }
                    None => progress.need = frame_len(&input[pos..]),
                }
                break;
            }
            Err(error) => {
                let available = (input.len() - pos) as u64;
                match refused(error, ctx, session, out, peer) {
                    Refused::Close => {
                        progress.close = true;
                        break;
                    }
                    Refused::SkipAndClose(skip) => {
                        pos += skip.min(available) as usize;
                        progress.close = true;
                        break;
                    }
                    Refused::Skip(skip) if skip <= available => pos += skip as usize,
                    Refused::Skip(skip) => {
                        pos = input.len();
                        progress.skip = skip - available;
                        break;
                    }
                }
            }
        }
    }
    progress.consumed = pos;
    progress
}

/// GETs whose items are prefetched together, ahead of answering them.
const PREFETCH_FRAMES: usize = 16;

/// Starts the memory loads of the next few GETs' index probes and items, so
/// that their cache misses overlap instead of coming one per answer; returns
/// how many bytes of `input` it looked at. Only a hint: the answers are made
/// one by one afterwards, as always. A lone frame is left alone (nothing to
/// overlap with). Not inlined: the request loop keeps its registers.
#[inline(never)]
fn prefetch_gets(input: &[u8], store: &Store) -> usize {
    let mut at = 0;
    let mut frames = 0;
    while frames < PREFETCH_FRAMES && input.len() - at >= HEADER_LEN {
        let frame = &input[at..];
        let len = frame_len(frame).unwrap_or(u64::MAX);
        if len > (input.len() - at) as u64 {
            break;
        }
        let len = len as usize;
        if at == 0 && len == input.len() {
            return len;
        }
        if let Some(key) = get_key(frame) {
            store.prefetch(key);
        }
        at += len;
        frames += 1;
    }
    at.max(1)
}

/// Starts reading the value of the SET/ADD/REPLACE at the front of `input` into
/// its item, if it is large and not all in; returns where its value starts.
#[cold]
#[inline(never)]
fn arrive(input: &[u8], ctx: &mut Context<'_>, session: &Session) -> Option<(usize, Arrival)> {
    let (request, head, value_len) = partial_store(input, &ctx.limits)?;
    if value_len < ctx.in_place_min || must_authenticate(request.opcode, ctx, session) {
        return None;
    }
    let Extras::Store { flags, exptime } = request.extras else {
        return None;
    };
    let mode = match request.command {
        Opcode::Add => StoreMode::Add,
        Opcode::Replace => StoreMode::Replace,
        _ => StoreMode::Set,
    };
    let pending = Pending {
        mode,
        flags,
        exptime,
        cas: request.cas,
        answer: Answer::Binary {
            reply: request.reply(),
            quiet: request.quiet,
        },
    };
    let arrival = Arrival::begin(ctx.store, request.key, value_len, pending)?;
    Some((head, arrival))
}

enum Refused {
    /// Answered; the connection closes.
    Close,
    /// Answered; skip this many bytes from the frame's start.
    Skip(u64),
    /// Answered; the frame (as much of it as is here) is consumed, then the
    /// connection closes.
    SkipAndClose(u64),
}

/// Answers a frame the parser refused.
fn refused(
    error: ParseError<'_>,
    ctx: &mut Context<'_>,
    session: &Session,
    out: &mut Vec<u8>,
    peer: &str,
) -> Refused {
    match error {
        ParseError::Incomplete => Refused::Skip(0),
        ParseError::BadMagic => {
            ctx.stats.protocol_errors += 1;
            if client_log(ctx) {
                debug!("{peer}: bad magic, closing");
            }
            Refused::Close
        }
        ParseError::Invalid {
            opcode,
            opaque,
            mut status,
        } => {
            ctx.stats.protocol_errors += 1;
            if client_log(ctx) {
                debug!("{peer}: invalid lengths for opcode 0x{opcode:02x}, closing");
            }
            // memcached checks the login before the opcode's lengths.
            if status == Status::InvalidArguments && must_authenticate(opcode, ctx, session) {
                ctx.stats.auth_errors += 1;
                status = Status::AuthError;
            }
            Reply { opcode, opaque }.error(out, status);
            Refused::Close
        }
        ParseError::Skip { request, skip, .. }
            if must_authenticate(request.opcode, ctx, session) =>
        {
            // Before login nothing is answered but "auth error", and a refused
            // SET must not delete anything.
            ctx.stats.auth_errors += 1;
            request.reply().error(out, Status::AuthError);
            Refused::SkipAndClose(skip)
        }
        ParseError::Skip {
            request,
            status,
            skip,
        } => {
            if status == Status::ValueTooLarge {
                let mode = if request.command == Opcode::Set {
                    StoreMode::Set
                } else {
                    StoreMode::Add
                };
                refuse_too_large(mode, request.key, ctx.store, ctx.stats);
            } else {
                ctx.stats.protocol_errors += 1;
                if client_log(ctx) {
                    debug!("{peer}: unknown opcode 0x{:02x}", request.opcode);
                }
            }
            request.reply().error(out, status);
            Refused::Skip(skip)
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Close,
}

/// Runs one request and applies quiet-mode suppression to its answer.
fn answer(
    request: &Request<'_>,
    ctx: &mut Context<'_>,
    session: &mut Session,
    out: &mut Vec<u8>,
    direct: Option<&mut Direct<'_>>,
) -> Flow {
    let mark = out.len();
    if must_authenticate(request.opcode, ctx, session) {
        ctx.stats.auth_errors += 1;
        request.reply().error(out, Status::AuthError);
        return Flow::Close;
    }
    let Some(command) = request.to_command() else {
        let status = match ctx.sasl {
            Some(sasl) => sasl.answer(request, ctx.stats, session, out),
            // memcached answers every SASL command with "unknown command" while off.
            None => {
                request.reply().error(out, Status::UnknownCommand);
                Status::UnknownCommand
            }
        };
        suppress(request, status, out, mark);
        return Flow::Continue;
    };
    let status = match command {
        Command::Stats { group } => {
            let status = stats::write_group(group, StatFormat::Binary(request.reply()), ctx, out);
            if status != Status::NoError {
                request.reply().error(out, status);
            }
            status
        }
        Command::Version => {
            request.reply().ok(out, 0, VERSION.as_bytes());
            Status::NoError
        }
        _ => {
            let outcome = execute(&command, ctx.store, ctx.stats);
            encode(request, &outcome, out, direct, ctx.stats)
        }
    };
    suppress(request, status, out, mark);
    if matches!(command, Command::Quit) {
        Flow::Close
    } else {
        Flow::Continue
    }
}

/// Quiet gets drop their misses; every other quiet command drops its success.
/// Errors are always sent: a client that misses one desynchronises.
fn suppress(request: &Request<'_>, status: Status, out: &mut Vec<u8>, mark: usize) {
    if !request.quiet {
        return;
    }
    let drop = match request.command {
        Opcode::Get | Opcode::GetK | Opcode::Gat | Opcode::GatK => status == Status::KeyNotFound,
        _ => status == Status::NoError,
    };
    if drop {
        out.truncate(mark);
    }
}

/// Writes the binary answer to an executed command.
#[inline]
fn encode(
    request: &Request<'_>,
    outcome: &Outcome<'_>,
    out: &mut Vec<u8>,
    direct: Option<&mut Direct<'_>>,
    stats: &mut Stats,
) -> Status {
    let reply = request.reply();
    let with_key = matches!(request.command, Opcode::GetK | Opcode::GatK);
    match *outcome {
        Outcome::Hit(item) => {
            let key: &[u8] = if with_key { request.key } else { &[] };
            // TOUCH answers with the flags only.
            let value = if request.command == Opcode::Touch {
                &[][..]
            } else {
                item.value
            };
            let flags = item.flags.to_be_bytes();
            reply.head(out, Status::NoError, item.cas, &flags, key, value.len());
            put_value(out, value, direct, stats);
        }
        Outcome::Done { cas } => reply.ok(out, cas, &[]),
        Outcome::Number { value, cas } => reply.ok(out, cas, &value.to_be_bytes()),
        // A GETK miss echoes the key instead of the text.
        Outcome::NotFound if with_key => {
            reply.packet(out, Status::KeyNotFound, 0, &[], request.key, &[]);
        }
        _ => reply.error(out, status_of(outcome)),
    }
    status_of(outcome)
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::store::{Clock, StoreConfig};

    fn frame(opcode: u8, key: &[u8]) -> Vec<u8> {
        let mut out = vec![0x80, opcode];
        out.extend_from_slice(&(key.len() as u16).to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0]);
        out.extend_from_slice(&(key.len() as u32).to_be_bytes());
        out.extend_from_slice(&[0; 12]);
        out.extend_from_slice(key);
        out
    }

    #[test]
    fn prefetch_looks_at_whole_frames_sixteen_at_most() {
        let config = StoreConfig {
            memory_limit: 8 << 20,
            item_size_max: 1 << 20,
        };
        let mut store = Store::new(config, Clock::start()).unwrap();
        store
            .store(crate::store::Mode::Set, b"k1", b"v", 0, 0, 0)
            .unwrap();
        let one = frame(0x00, b"k1");
        // A lone frame: nothing to overlap with.
        assert_eq!(prefetch_gets(&one, &store), one.len());
        // Less than a header: at least one byte, so the caller moves on.
        assert_eq!(prefetch_gets(&one[..10], &store), 1);
        // Three frames (a miss, a hit, a NOOP) and half of a fourth.
        let mut batch = [frame(0x0d, b"nope"), frame(0x09, b"k1"), frame(0x0a, b"")].concat();
        let whole = batch.len();
        batch.extend_from_slice(&one[..25]);
        assert_eq!(prefetch_gets(&batch, &store), whole);
        // Twenty GETs: the first sixteen.
        let many = one.repeat(20);
        assert_eq!(prefetch_gets(&many, &store), 16 * one.len());
        // A header claiming more than is here stops the walk.
        let mut huge = one.clone();
        huge[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            prefetch_gets(&[one.clone(), huge].concat(), &store),
            one.len()
        );
    }
}
