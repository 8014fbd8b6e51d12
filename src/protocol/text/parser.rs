//! Parse one command line of the text protocol from the front of a byte slice,
//! as memcached 1.6.18's `proto_text.c` does: tokens split on spaces, the
//! command picked by name and token count, numbers read as its `safe_strto*`
//! read them. Storage commands stop at the line: the caller decides whether the
//! data block that follows is swallowed (too large) or awaited.
//!
//! ```text
//!  set <key> <flags> <exptime> <bytes> [noreply]\r\n<data: bytes>\r\n
//!  get <key> <key> ...\r\n
//! ```

use super::meta::{self, Meta, MetaCmd, MetaError};
use crate::protocol::binary::MAX_KEY_LEN;
use crate::protocol::command::{ArithOp, Command, StoreMode};

/// memcached's `MAX_TOKENS`: a line is cut into at most this many tokens (the
/// last one holds the rest), which bounds every command's token count.
const MAX_TOKENS: usize = 24;
/// A line with no end after this many bytes is refused unless it is a `get`
/// or `gets` (memcached: "large multiget" or nuke the connection).
pub const LINE_MAX_BYTES: usize = 2048;
/// memcached's `REALTIME_MAXDELTA + 1`: what a negative exptime becomes, an
/// absolute time long past, so the item is expired at once.
const EXPIRED_AT_ONCE: u32 = 60 * 60 * 24 * 30 + 1;
/// A text `cas` with CAS 0 compares against 0, which no item has; our store
/// reads CAS 0 as "no compare", so it gets this value, which no item has either
/// (item CAS values are 48 bits).
pub const CAS_NEVER: u64 = u64::MAX;

/// One parsed line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// A command that runs as is.
    Run { command: Command<'a>, noreply: bool },
    /// `get`/`gets`/`gat`/`gats`: `keys` is the rest of the line, keys separated
    /// by spaces (see [`keys`]).
    Retrieve {
        keys: &'a [u8],
        cas: bool,
        touch: Option<u32>,
    },
    /// A storage command; `data_len` bytes and `\r\n` follow the line.
    Store {
        mode: StoreMode,
        key: &'a [u8],
        flags: u32,
        exptime: u32,
        cas: u64,
        data_len: usize,
        noreply: bool,
    },
    /// `stats detail on|off|dump` (`None`: anything else, a usage error).
    StatsDetail(Option<Detail>),
    /// `verbosity <n>`: accepted, no effect (the level is set at start).
    Verbosity { noreply: bool },
    /// `cache_memlimit <megabytes>`.
    MemLimit { megabytes: u64, noreply: bool },
    /// A line answered with a fixed reply (an error, mostly) and nothing else.
    Reply { text: &'static str, noreply: bool },
    /// A meta command (`mg`, `ms`, `md`, `ma`, `me`).
    Meta(Meta<'a>),
    /// A meta line refused with an error (an `ms` data block may follow).
    MetaError(MetaError),
    /// Close the connection without an answer.
    Close,
}

/// The three `stats detail` subcommands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detail {
    On,
    Off,
    Dump,
}

/// Why no line could be taken from the front of the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Incomplete {
    /// No `\n` yet; read more.
    Line,
    /// No `\n` in the first [`LINE_MAX_BYTES`] and not a `get`: close.
    TooLong,
}

pub const ERROR: &str = "ERROR";
pub const BAD_FORMAT: &str = "CLIENT_ERROR bad command line format";
const BAD_EXPTIME: &str = "CLIENT_ERROR invalid exptime argument";
const BAD_DELTA: &str = "CLIENT_ERROR invalid numeric delta argument";
const DELETE_USAGE: &str = "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]";
pub const DETAIL_USAGE: &str = "CLIENT_ERROR usage: stats detail on|off|dump";

/// The line at the front of `input` and the bytes it takes (`\n` included).
#[inline]
pub fn split_line(input: &[u8]) -> Result<(&[u8], usize), Incomplete> {
    match find_newline(input) {
        Some(end) => {
            let line = &input[..end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            Ok((line, end + 1))
        }
        None if input.len() > LINE_MAX_BYTES && !is_get_line(input) => Err(Incomplete::TooLong),
        None => Err(Incomplete::Line),
    }
}

/// The index of the first `\n` in `bytes`.
#[inline]
fn find_newline(bytes: &[u8]) -> Option<usize> {
    find_byte(bytes, b'\n')
}

/// The index of the first `needle` in `bytes`, eight bytes at a time (request
/// lines and keys are scanned once or twice per request; byte by byte that was
/// most of the parser's cost).
#[inline]
fn find_byte(bytes: &[u8], needle: u8) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let needles = ONES * u64::from(needle);
    let mut chunks = bytes.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let Ok(word) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        // A zero byte of `x` is a needle; the lowest flagged byte is always a
        // true zero (a borrow can only flag bytes above one).
        let x = u64::from_le_bytes(word) ^ needles;
        let zeros = x.wrapping_sub(ONES) & !x & HIGHS;
        if zeros != 0 {
            return Some(at + (zeros.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    let tail = chunks.remainder();
    tail.iter().position(|&b| b == needle).map(|n| at + n)
}

/// memcached lets a line without an end grow only for a multi-key `get`/`gets`
/// (after at most 100 leading spaces).
fn is_get_line(input: &[u8]) -> bool {
    let spaces = input.iter().take_while(|&&b| b == b' ').count();
    let rest = &input[spaces..];
    spaces <= 100 && (rest.starts_with(b"get ") || rest.starts_with(b"gets "))
}

/// Tokens kept by [`tokenize`]: every classic command has at most 7 (`cas`
/// with `noreply`); one more shows there were too many.
const KEPT_TOKENS: usize = 8;

/// The first tokens of a line, how many there are (counted up to memcached's
/// limit, which is all any check needs) and the last one.
#[derive(Clone, Copy, Debug)]
pub struct Tokens<'a> {
    pub kept: [&'a [u8]; KEPT_TOKENS],
    pub count: usize,
    pub last: &'a [u8],
}

impl<'a> Tokens<'a> {
    /// The kept tokens.
    pub fn first(&self) -> &[&'a [u8]] {
        &self.kept[..self.count.min(KEPT_TOKENS)]
    }
}

/// Splits `line` on spaces (repeated spaces are one separator), keeping the
/// first tokens and counting the rest up to [`MAX_TOKENS`].
#[inline]
pub fn tokenize(line: &[u8]) -> Tokens<'_> {
    let mut tokens = Tokens {
        kept: [&[]; KEPT_TOKENS],
        count: 0,
        last: &[],
    };
    // One pass over the bytes: tokens are short, so a word-at-a-time search
    // for each one's end costs more than it saves.
    let (mut at, len) = (0, line.len());
    while tokens.count < MAX_TOKENS {
        while at < len && line[at] == b' ' {
            at += 1;
        }
        if at == len {
            break;
        }
        let start = at;
        while at < len && line[at] != b' ' {
            at += 1;
        }
        let token = &line[start..at];
        if tokens.count < KEPT_TOKENS {
            tokens.kept[tokens.count] = token;
        }
        tokens.last = token;
        tokens.count += 1;
    }
    tokens
}

/// The first token of `text` (empty if there is none) and what follows it.
#[inline]
fn first_token(text: &[u8]) -> (&[u8], &[u8]) {
    let mut start = 0;
    while start < text.len() && text[start] == b' ' {
        start += 1;
    }
    let rest = &text[start..];
    let end = find_byte(rest, b' ').unwrap_or(rest.len());
    rest.split_at(end)
}

/// The keys of a retrieval line, in order.
pub fn keys(rest: &[u8]) -> Keys<'_> {
    Keys { rest }
}

/// The tokens of the rest of a retrieval line.
#[derive(Clone, Debug)]
pub struct Keys<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Keys<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        let (key, rest) = first_token(self.rest);
        self.rest = rest;
        (!key.is_empty()).then_some(key)
    }
}

/// Parses one command line (without its line end).
pub fn parse_line(line: &[u8]) -> Line<'_> {
    // Retrievals need only their command word: the keys are the rest of the
    // line, so the line is not tokenized for them (the most common request).
    let (command, after) = first_token(line);
    if let b"get" | b"gets" | b"gat" | b"gats" = command {
        if after.iter().any(|&b| b != b' ') {
            return retrieve(command, after);
        }
    }
    let tokens = tokenize(line);
    let (t, n) = (tokens.first(), tokens.count);
    let reply = |text| Line::Reply {
        text,
        noreply: false,
    };
    // No command is shorter than two bytes.
    if n == 0 || t[0].len() < 2 {
        return reply(ERROR);
    }
    let noreply = tokens.last == b"noreply";
    match t[0] {
        b"set" | b"add" | b"replace" | b"append" | b"prepend" if n == 5 || n == 6 => {
            storage(t, noreply)
        }
        b"cas" if n == 6 || n == 7 => storage(t, noreply),
        b"incr" | b"decr" if n == 3 || n == 4 => arith(t, noreply),
        b"delete" if (2..=4).contains(&n) => delete(t, noreply),
        b"touch" if n == 3 || n == 4 => touch(t, noreply),
        b"flush_all" if n <= 3 => flush(t, noreply),
        b"version" => run(Command::Version, false),
        b"quit" => run(Command::Quit, false),
        b"mn" => run(Command::Noop, false),
        b"mg" | b"ms" | b"md" | b"ma" | b"me" if n >= 2 => {
            let cmd = match t[0][1] {
                b'g' => MetaCmd::Get,
                b's' => MetaCmd::Set,
                b'd' => MetaCmd::Delete,
                b'a' => MetaCmd::Arith,
                _ => MetaCmd::Debug,
            };
            match meta::parse(cmd, t, n, line) {
                Ok(m) => Line::Meta(m),
                Err(e) => Line::MetaError(e),
            }
        }
        b"verbosity" if n == 2 || n == 3 => match strtoul(t[1]) {
            Some(_) => Line::Verbosity { noreply },
            None => Line::Reply {
                text: BAD_FORMAT,
                noreply,
            },
        },
        b"cache_memlimit" if n == 2 || n == 3 => match strtoull(t[1]) {
            Some(megabytes) => Line::MemLimit { megabytes, noreply },
            None => Line::Reply {
                text: ERROR,
                noreply,
            },
        },
        b"stats" => stats(t),
        b"shutdown" => reply("ERROR: shutdown not enabled"),
        b"lru_crawler" | b"watch" | b"slabs" | b"extstore" | b"lru" | b"memlimit"
        | b"misbehave" | b"refresh_certs" | b"debugtime" => {
            reply("ERROR: not supported by pincache")
        }
        // An HTTP request sent to the cache port: memcached hangs up.
        _ if tokens.last.starts_with(b"HTTP/") => Line::Close,
        _ => reply(ERROR),
    }
}

fn run(command: Command<'_>, noreply: bool) -> Line<'_> {
    Line::Run { command, noreply }
}

fn bad_format(noreply: bool) -> Line<'static> {
    Line::Reply {
        text: BAD_FORMAT,
        noreply,
    }
}

/// `command` is `get`/`gets`/`gat`/`gats`; `after` is the rest of the line,
/// with at least one token.
fn retrieve<'a>(command: &[u8], after: &'a [u8]) -> Line<'a> {
    let cas = command.ends_with(b"s");
    if !command.starts_with(b"gat") {
        return Line::Retrieve {
            keys: after,
            cas,
            touch: None,
        };
    }
    // The keys follow the exptime.
    let (exptime, keys) = first_token(after);
    match strtol(exptime) {
        Some(exptime) => Line::Retrieve {
            keys,
            cas,
            touch: Some(exptime_of(exptime)),
        },
        None => Line::Reply {
            text: BAD_EXPTIME,
            noreply: false,
        },
    }
}

fn storage<'a>(t: &[&'a [u8]], noreply: bool) -> Line<'a> {
    let mode = match t[0] {
        b"add" => StoreMode::Add,
        b"replace" => StoreMode::Replace,
        b"append" => StoreMode::Append,
        b"prepend" => StoreMode::Prepend,
        _ => StoreMode::Set,
    };
    let key = t[1];
    if key.len() > MAX_KEY_LEN {
        return bad_format(noreply);
    }
    let (Some(flags), Some(exptime), Some(len)) = (strtoul(t[2]), strtol(t[3]), strtol(t[4]))
    else {
        return bad_format(noreply);
    };
    let cas = if t[0] == b"cas" {
        match strtoull(t[5]) {
            Some(0) => CAS_NEVER,
            Some(cas) => cas,
            None => return bad_format(noreply),
        }
    } else {
        0
    };
    if !(0..=i32::MAX - 2).contains(&len) {
        return bad_format(noreply);
    }
    Line::Store {
        mode,
        key,
        flags,
        exptime: exptime_of(exptime),
        cas,
        data_len: len as usize,
        noreply,
    }
}

fn arith<'a>(t: &[&'a [u8]], noreply: bool) -> Line<'a> {
    let key = t[1];
    if key.len() > MAX_KEY_LEN {
        return bad_format(noreply);
    }
    let Some(delta) = strtoull(t[2]) else {
        return Line::Reply {
            text: BAD_DELTA,
            noreply,
        };
    };
    let op = if t[0] == b"incr" {
        ArithOp::Incr
    } else {
        ArithOp::Decr
    };
    run(
        Command::Arith {
            key,
            op,
            delta,
            create: None,
            cas: 0,
        },
        noreply,
    )
}

fn delete<'a>(t: &[&'a [u8]], noreply: bool) -> Line<'a> {
    let n = t.len();
    if n > 2 {
        // Only a hold time of 0 (a relic) and `noreply` may follow the key.
        let hold_is_zero = t[2] == b"0";
        let valid = (n == 3 && (hold_is_zero || noreply)) || (n == 4 && hold_is_zero && noreply);
        if !valid {
            return Line::Reply {
                text: DELETE_USAGE,
                noreply,
            };
        }
    }
    if t[1].len() > MAX_KEY_LEN {
        return bad_format(noreply);
    }
    run(Command::Delete { key: t[1], cas: 0 }, noreply)
}

fn touch<'a>(t: &[&'a [u8]], noreply: bool) -> Line<'a> {
    if t[1].len() > MAX_KEY_LEN {
        return bad_format(noreply);
    }
    match strtol(t[2]) {
        Some(exptime) => run(
            Command::Touch {
                key: t[1],
                exptime: exptime_of(exptime),
            },
            noreply,
        ),
        None => Line::Reply {
            text: BAD_EXPTIME,
            noreply,
        },
    }
}

fn flush(t: &[&[u8]], noreply: bool) -> Line<'static> {
    let plain = if noreply { 2 } else { 1 };
    let delay = if t.len() == plain {
        0
    } else {
        match strtol(t[1]) {
            // A delay of 0 or less is "now".
            Some(delay) => delay.max(0) as u32,
            None => {
                return Line::Reply {
                    text: BAD_EXPTIME,
                    noreply,
                }
            }
        }
    };
    run(Command::Flush { delay }, noreply)
}

fn stats<'a>(t: &[&'a [u8]]) -> Line<'a> {
    match t.get(1).copied() {
        None => run(Command::Stats { group: &[] }, false),
        Some(b"detail") => Line::StatsDetail(match t.get(2).copied() {
            Some(b"on") => Some(Detail::On),
            Some(b"off") => Some(Detail::Off),
            Some(b"dump") => Some(Detail::Dump),
            _ => None,
        }),
        // `stats reset` ignores what follows; other groups are one token.
        Some(group) => run(Command::Stats { group }, false),
    }
}

/// A text exptime as the store takes it: negative means already expired.
fn exptime_of(exptime: i32) -> u32 {
    if exptime < 0 {
        EXPIRED_AT_ONCE
    } else {
        exptime as u32
    }
}

/// Digits as `strtoull` reads them: leading white space, a sign, at least one
/// digit, nothing after. `None` on overflow. Returns the value and whether a
/// '-' was read.
fn strto(token: &[u8]) -> Option<(u64, bool)> {
    // Almost every number is plain digits, and 19 of them cannot overflow.
    if !token.is_empty() && token.len() <= 19 {
        let mut n: u64 = 0;
        let mut plain = true;
        for &b in token {
            let digit = b.wrapping_sub(b'0');
            plain &= digit <= 9;
            n = n.wrapping_mul(10).wrapping_add(u64::from(digit));
        }
        if plain {
            return Some((n, false));
        }
    }
    let start = token
        .iter()
        .take_while(|b| b.is_ascii_whitespace() || **b == 0x0b)
        .count();
    let mut rest = &token[start..];
    let mut negative = false;
    if let Some((&sign, tail)) = rest.split_first() {
        if sign == b'+' || sign == b'-' {
            negative = sign == b'-';
            rest = tail;
        }
    }
    if rest.is_empty() || !rest.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut n: u64 = 0;
    for &d in rest {
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some((n, negative))
}

/// memcached's `safe_strtoull`: a negative number is refused when it reads as
/// one (a large value), otherwise wrapped as `strtoull` wraps it.
pub fn strtoull(token: &[u8]) -> Option<u64> {
    let (n, negative) = strto(token)?;
    let value = if negative { n.wrapping_neg() } else { n };
    if negative && (value as i64) < 0 {
        return None;
    }
    Some(value)
}

/// memcached's `safe_strtoul` into 32 bits: read as 64 bits, then truncated.
fn strtoul(token: &[u8]) -> Option<u32> {
    strtoull(token).map(|n| n as u32)
}

/// An exptime token as the store takes it (negative: already expired).
pub fn exptime_token(token: &[u8]) -> Option<u32> {
    strtol(token).map(exptime_of)
}

/// memcached's `safe_strtol` into 32 bits: read as a signed 64-bit number
/// (overflow refused), then truncated.
pub fn strtol(token: &[u8]) -> Option<i32> {
    let (n, negative) = strto(token)?;
    let value: i64 = if negative {
        if n > 1 << 63 {
            return None;
        }
        (n as i64).wrapping_neg()
    } else {
        i64::try_from(n).ok()?
    };
    Some(value as i32)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn lines_end_at_newline_with_or_without_cr() {
        assert_eq!(split_line(b"get a\r\nrest"), Ok((&b"get a"[..], 7)));
        assert_eq!(split_line(b"get a\nrest"), Ok((&b"get a"[..], 6)));
        assert_eq!(split_line(b"get a"), Err(Incomplete::Line));
    }

    #[test]
    fn newline_found_at_every_offset_among_lookalike_bytes() {
        // 0x8a and 0x0b differ from `\n` in one bit; 0x09 borrows into it.
        for fill in [b'x', 0x8a, 0x0b, 0x09, 0x00, 0xff] {
            for len in 0..40 {
                let mut buf = vec![fill; len];
                assert_eq!(find_newline(&buf), None, "{fill} {len}");
                for at in 0..len {
                    buf[at] = b'\n';
                    assert_eq!(find_newline(&buf), Some(at), "{fill} {len} {at}");
                    buf[len - 1] = b'\n';
                    assert_eq!(find_newline(&buf), Some(at), "{fill} {len} {at}");
                    buf[at] = fill;
                    buf[len - 1] = fill;
                }
            }
        }
    }

    #[test]
    fn retrievals_without_keys_are_errors_and_gat_reads_its_exptime() {
        for line in [&b"get"[..], b"gets   ", b" gat", b"gats"] {
            assert!(
                matches!(parse_line(line), Line::Reply { text: ERROR, .. }),
                "{line:?}"
            );
        }
        assert_eq!(
            parse_line(b"  get  a b "),
            Line::Retrieve {
                keys: b"  a b ",
                cas: false,
                touch: None
            }
        );
        assert!(matches!(
            parse_line(b"gat x a"),
            Line::Reply {
                text: BAD_EXPTIME,
                ..
            }
        ));
        assert!(matches!(
            parse_line(b"getx a"),
            Line::Reply { text: ERROR, .. }
        ));
    }

    #[test]
    fn long_lines_without_end_are_refused_unless_get() {
        let long = vec![b'x'; LINE_MAX_BYTES + 1];
        assert_eq!(split_line(&long), Err(Incomplete::TooLong));
        let mut get = b"get ".to_vec();
        get.extend_from_slice(&long);
        assert_eq!(split_line(&get), Err(Incomplete::Line));
    }

    #[test]
    fn tokens_skip_repeated_spaces() {
        let t = tokenize(b"  set  k 0 0   1 ");
        assert_eq!(t.first(), &[&b"set"[..], b"k", b"0", b"0", b"1"]);
        assert_eq!((t.count, t.last), (5, &b"1"[..]));
        let many = tokenize(b"get a b c d e f g h i j");
        assert_eq!(
            (many.count, many.first().len(), many.last),
            (11, 8, &b"j"[..])
        );
    }

    #[test]
    fn set_line_parses_with_noreply() {
        assert_eq!(
            parse_line(b"set k 5 -1 3 noreply"),
            Line::Store {
                mode: StoreMode::Set,
                key: b"k",
                flags: 5,
                exptime: EXPIRED_AT_ONCE,
                cas: 0,
                data_len: 3,
                noreply: true
            }
        );
    }

    #[test]
    fn numbers_read_as_memcached_reads_them() {
        assert_eq!(strtoul(b"4294967296"), Some(0));
        assert_eq!(strtoull(b"-1"), None);
        assert_eq!(strtoull(b"-0"), Some(0));
        assert_eq!(strtoull(b"+5"), Some(5));
        assert_eq!(strtoull(b"18446744073709551616"), None);
        assert_eq!(strtol(b"2147483648"), Some(i32::MIN));
        assert_eq!(strtol(b"1x"), None);
        assert_eq!(strtol(b""), None);
        // The plain-digits shortcut (up to 19 digits) and the general path agree.
        assert_eq!(
            strtoull(b"9999999999999999999"),
            Some(9_999_999_999_999_999_999)
        );
        assert_eq!(strtoull(b"0000000000000000042"), Some(42));
        assert_eq!(strtoull(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(strtoull(b"1:"), None);
        assert_eq!(strtoull(b"/1"), None);
        assert_eq!(strtoull(b" 7"), Some(7));
        assert_eq!(strtol(b"4294967295"), Some(-1));
    }

    #[test]
    fn wrong_token_counts_are_errors() {
        assert!(matches!(
            parse_line(b"set k 0 0"),
            Line::Reply { text: ERROR, .. }
        ));
        assert!(matches!(
            parse_line(b"get"),
            Line::Reply { text: ERROR, .. }
        ));
        assert!(matches!(parse_line(b"x"), Line::Reply { text: ERROR, .. }));
        assert!(matches!(
            parse_line(b"delete k 1"),
            Line::Reply {
                text: DELETE_USAGE,
                ..
            }
        ));
    }

    #[test]
    fn retrieval_keeps_the_rest_of_the_line_as_keys() {
        match parse_line(b"gats 10 a  b") {
            Line::Retrieve {
                keys: rest,
                cas,
                touch,
            } => {
                assert!(cas);
                assert_eq!(touch, Some(10));
                assert_eq!(keys(rest).collect::<Vec<_>>(), vec![&b"a"[..], b"b"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn cas_zero_never_matches() {
        assert!(matches!(
            parse_line(b"cas k 0 0 1 0"),
            Line::Store { cas: CAS_NEVER, .. }
        ));
    }
}
