//! The text protocol's side of dispatch: lines (and their data blocks) ->
//! commands -> the shared executor -> text answers. `noreply` silences every
//! answer of its command, errors included, as in memcached 1.6.18.

use super::arrival::{Answer, Arrival, Pending};
use super::dispatch::{
    execute, put_value, refuse_too_large, Batch, Context, Direct, Progress, Session,
};
use super::sasl::text_login;
use super::stats::{self, StatFormat, VERSION};
use crate::protocol::binary::HEADER_LEN;
use crate::protocol::text::encoder::{self, line};
use crate::protocol::text::parser::{
    keys, Detail, BAD_FORMAT, DETAIL_USAGE, ERROR, LINE_MAX_BYTES,
};
use crate::protocol::text::{parse_line, split_line, Incomplete, Line};
use crate::protocol::{Command, Outcome, Status, StoreMode, MAX_KEY_LEN};

/// A read of an incomplete line asks for room for at least this much more.
const LINE_GROWTH_BYTES: u64 = 4096;

/// What one line (and its data) did to the input.
pub enum Step {
    /// Answered; this many bytes consumed.
    Consumed(usize),
    /// Answered; consume the line and discard `skip` more bytes as they come.
    Skip {
        line: usize,
        skip: u64,
    },
    /// The data block is not all in: the whole request takes this many bytes.
    Need(u64),
    /// The data block is being read into its item: the line is consumed.
    Arrive {
        line: usize,
        arrival: Arrival,
    },
    Close,
}

/// Answers every complete request at the front of the batch's input.
pub fn process(
    batch: Batch<'_, '_, '_, '_>,
    ctx: &mut Context<'_>,
    session: &mut Session,
) -> Progress {
    let Batch {
        input,
        out,
        mut direct,
        high_water,
        ..
    } = batch;
    let mut progress = Progress::default();
    let mut pos = 0;
    while pos < input.len() {
        if out.len() >= high_water {
            progress.throttled = true;
            break;
        }
        let rest = &input[pos..];
        let login = ctx.sasl.filter(|_| !session.authenticated);
        let step = match (login, split_line(rest)) {
            (Some(sasl), _) => match text_login(sasl, rest, ctx.stats, session, out) {
                Ok(n) => Step::Consumed(n),
                Err(Some(need)) if need <= line_limit(ctx) => Step::Need(need as u64),
                Err(None) if rest.len() <= LINE_MAX_BYTES => Step::Need(LINE_MAX_BYTES as u64),
                Err(_) => Step::Close,
            },
            (None, split) => match split {
                Ok((text, len)) => {
                    let parsed = parse_line(text);
                    one(parsed, rest, len, ctx, out, direct.as_deref_mut())
                }
                // A multi-key get may be long, but not longer than we would buffer.
                Err(Incomplete::Line) if rest.len() < line_limit(ctx) => {
                    Step::Need(rest.len() as u64 + LINE_GROWTH_BYTES)
                }
                Err(_) => Step::Close,
            },
        };
        match step {
            Step::Consumed(n) => pos += n,
            Step::Skip { line, skip } => {
                let available = (rest.len() - line) as u64;
                if skip <= available {
                    pos += line + skip as usize;
                } else {
                    pos = input.len();
                    progress.skip = skip - available;
                    break;
                }
            }
            Step::Need(need) => {
                progress.need = Some(need);
                break;
            }
            Step::Arrive { line, arrival } => {
                pos += line;
                progress.arrival = Some(arrival);
                break;
            }
            Step::Close => {
                progress.close = true;
                break;
            }
        }
    }
    progress.consumed = pos;
    progress
}

/// The longest request we buffer: what a binary frame may take.
fn line_limit(ctx: &Context<'_>) -> usize {
    HEADER_LEN + 20 + MAX_KEY_LEN + ctx.limits.max_value_len
}

/// Answers one parsed line; `rest` starts with it, `len` is its length.
fn one(
    parsed: Line<'_>,
    rest: &[u8],
    len: usize,
    ctx: &mut Context<'_>,
    out: &mut Vec<u8>,
    direct: Option<&mut Direct<'_>>,
) -> Step {
    let answer = |out: &mut Vec<u8>, text: &str, noreply: bool| {
        if !noreply {
            line(out, text);
        }
    };
    match parsed {
        Line::Run { command, noreply } => {
            if run(&command, noreply, ctx, out) == Flow::Close {
                return Step::Close;
            }
        }
        Line::Retrieve { keys, cas, touch } => retrieve(keys, cas, touch, ctx, out, direct),
        Line::Store { .. } => return store(parsed, rest, len, ctx, out),
        Line::StatsDetail(detail) => stats_detail(detail, ctx, out),
        Line::Verbosity { noreply } => answer(out, "OK", noreply),
        Line::MemLimit { megabytes, noreply } => {
            answer(out, memlimit(megabytes, ctx), noreply);
        }
        Line::Reply { text, noreply } => answer(out, text, noreply),
        Line::Meta(m) => return super::meta::answer(&m, rest, len, ctx, out, direct),
        Line::MetaError(e) => return super::meta::refused(e, len, out),
        Line::Close => return Step::Close,
    }
    Step::Consumed(len)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Close,
}

/// Runs a single command and answers it.
fn run(command: &Command<'_>, noreply: bool, ctx: &mut Context<'_>, out: &mut Vec<u8>) -> Flow {
    let mark = out.len();
    match command {
        Command::Quit => return Flow::Close,
        Command::Version => {
            out.extend_from_slice(b"VERSION ");
            line(out, VERSION);
        }
        Command::Stats { group } => {
            if stats::write_group(group, StatFormat::Text, ctx, out) != Status::NoError {
                line(out, ERROR);
            }
        }
        _ => {
            let outcome = execute(command, ctx.store, ctx.stats);
            encoder::outcome(out, command, &outcome);
        }
    }
    if noreply {
        out.truncate(mark);
    }
    Flow::Continue
}

/// `get`/`gets`/`gat`/`gats`: every hit in order, then `END`.
fn retrieve(
    rest: &[u8],
    cas: bool,
    touch: Option<u32>,
    ctx: &mut Context<'_>,
    out: &mut Vec<u8>,
    mut direct: Option<&mut Direct<'_>>,
) {
    // memcached drops the values already found for a get with a key too long;
    // checking first means none is looked up (or sent directly) at all.
    // (A line no longer than one key cannot hold a key too long.)
    if rest.len() > MAX_KEY_LEN && keys(rest).any(|key| key.len() > MAX_KEY_LEN) {
        line(out, BAD_FORMAT);
        return;
    }
    for key in keys(rest) {
        if let Outcome::Hit(item) = execute(&Command::Get { key, touch }, ctx.store, ctx.stats) {
            encoder::value_header(out, key, &item, cas);
            put_value(out, item.value, direct.as_deref_mut(), ctx.stats);
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"END\r\n");
}

/// A storage line: swallow an over-size data block, wait for the rest of the
/// data, check its end, store.
fn store(
    parsed: Line<'_>,
    rest: &[u8],
    len: usize,
    ctx: &mut Context<'_>,
    out: &mut Vec<u8>,
) -> Step {
    let Line::Store {
        mode,
        key,
        flags,
        exptime,
        cas,
        data_len,
        noreply,
    } = parsed
    else {
        return Step::Consumed(len);
    };
    let skip = data_len as u64 + 2;
    if !ctx.store.fits(key.len(), data_len) {
        // Only a plain `set` unlinks the old item; a `cas` keeps it (memcached).
        let mode = if cas != 0 { StoreMode::Replace } else { mode };
        refuse_too_large(mode, key, ctx.store, ctx.stats);
        if !noreply {
            line(out, "SERVER_ERROR object too large for cache");
        }
        return Step::Skip { line: len, skip };
    }
    let total = len + data_len + 2;
    if total > line_limit(ctx) {
        // Only a padded command line gets here; it cannot be buffered whole.
        return Step::Close;
    }
    if rest.len() < total {
        if data_len >= ctx.in_place_min {
            let pending = Pending {
                mode,
                flags,
                exptime,
                cas,
                answer: Answer::Text { noreply },
            };
            if let Some(arrival) = Arrival::begin(ctx.store, key, data_len, pending) {
                return Step::Arrive { line: len, arrival };
            }
        }
        return Step::Need(total as u64);
    }
    if &rest[len + data_len..total] != b"\r\n" {
        if !noreply {
            line(out, "CLIENT_ERROR bad data chunk");
        }
        return Step::Consumed(total);
    }
    let command = Command::Store {
        mode,
        key,
        value: &rest[len..len + data_len],
        flags,
        exptime,
        cas,
    };
    run(&command, noreply, ctx, out);
    Step::Consumed(total)
}

fn stats_detail(detail: Option<Detail>, ctx: &mut Context<'_>, out: &mut Vec<u8>) {
    match detail {
        Some(Detail::On) => {
            ctx.stats.detail.enabled = true;
            line(out, "OK");
        }
        Some(Detail::Off) => {
            ctx.stats.detail.enabled = false;
            line(out, "OK");
        }
        Some(Detail::Dump) => ctx.stats.detail.dump(out),
        None => line(out, DETAIL_USAGE),
    }
}

/// `cache_memlimit`: our memory is one mapping sized at start, so only the
/// current limit is "adjusted" to; memcached's words for every other case.
fn memlimit(megabytes: u64, ctx: &Context<'_>) -> &'static str {
    let current = ctx.settings.config.memory_limit_bytes() as u64 >> 20;
    if megabytes < 8 {
        "MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m"
    } else if megabytes > 1_000_000_000 {
        "MEMLIMIT_ADJUST_FAILED input value is megabytes not bytes"
    } else if megabytes == current {
        "OK"
    } else {
        "MEMLIMIT_ADJUST_FAILED out of bounds or unable to adjust"
    }
}
