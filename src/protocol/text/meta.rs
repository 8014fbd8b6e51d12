//! The meta commands of memcached 1.6.18 (`mg`, `ms`, `md`, `ma`, `me`; `mn` is
//! a plain line): a key, then flag tokens, each one letter and an optional
//! argument. Flags are checked once here; the ones that ask for returned values
//! are read again, in request order, when the answer is written.
//!
//! ```text
//!  mg <key> <flag>*            ms <key> <datalen> <flag>*\r\n<data>\r\n
//!  md <key> <flag>*            ma <key> <flag>*              me <key>
//! ```

use super::parser::{exptime_token, strtol, strtoull, CAS_NEVER};
use crate::protocol::binary::MAX_KEY_LEN;

/// memcached's `MFLAG_MAX_OPT_LENGTH`: at most this many tokens, terminator
/// included, on a meta line.
const MAX_TOKENS: usize = 20;
/// memcached's `MFLAG_MAX_OPAQUE_LENGTH`.
pub const MAX_OPAQUE_BYTES: usize = 32;

/// Which meta command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetaCmd {
    Get,
    Set,
    Delete,
    Arith,
    Debug,
}

/// The flags of one meta request, checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flags {
    /// `b`: the key is base64.
    pub base64: bool,
    /// `q`: hide the plain success (or miss, for `mg`).
    pub quiet: bool,
    /// `v`: return the value.
    pub value: bool,
    /// `u`: do not mark the item fetched.
    pub no_bump: bool,
    /// `I`: invalidate (mark stale) instead of removing / store stale if older.
    pub invalidate: bool,
    /// `N<ttl>`: create on a miss.
    pub vivify: Option<u32>,
    /// `T<ttl>`: set the expiration.
    pub ttl: Option<u32>,
    /// `R<ttl>`: win a recache when the item expires sooner.
    pub recache: Option<u32>,
    /// `C<cas>`: compare.
    pub cas: Option<u64>,
    /// `F<flags>`: client flags to store.
    pub client_flags: Option<u32>,
    /// `M<mode>`: the mode letter.
    pub mode: Option<u8>,
    /// `J<n>`: initial value for `ma` with `N`.
    pub initial: Option<u64>,
    /// `D<n>`: delta for `ma`.
    pub delta: Option<u64>,
}

/// One meta request line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta<'a> {
    pub cmd: MetaCmd,
    /// The key as sent (base64 when `flags.base64`).
    pub key: &'a [u8],
    /// `ms`: bytes of data after the line.
    pub data_len: usize,
    /// The flag tokens, space separated, for the returned values.
    pub tokens: &'a [u8],
    pub flags: Flags,
}

/// A refused meta line: the error to answer, and for `ms` with a readable
/// length, the data block to swallow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetaError {
    pub text: &'static str,
    pub swallow: Option<usize>,
}

const BAD_FORMAT: &str = "CLIENT_ERROR bad command line format";
const OPAQUE_TOO_LONG: &str = "CLIENT_ERROR opaque token too long";
const BAD_TOKEN: &str = "CLIENT_ERROR bad token in command line format";

/// The flag tokens of a meta line, in order.
pub fn tokens(rest: &[u8]) -> impl Iterator<Item = &[u8]> {
    rest.split(|&b| b == b' ').filter(|t| !t.is_empty())
}

/// Parses a meta line whose tokens are `t` (command first) and whose text
/// after the key (and, for `ms`, the length) starts at `rest`.
pub fn parse<'a>(
    cmd: MetaCmd,
    t: &[&'a [u8]],
    count: usize,
    line: &'a [u8],
) -> Result<Meta<'a>, MetaError> {
    let error = |text| MetaError {
        text,
        swallow: None,
    };
    let key = t[1];
    if key.len() > MAX_KEY_LEN {
        return Err(error(BAD_FORMAT));
    }
    // `count` tokens and memcached's terminator.
    if count + 1 > MAX_TOKENS {
        return Err(error("CLIENT_ERROR options flags are too long"));
    }
    let mut skip = 2;
    let mut data_len = 0;
    if cmd == MetaCmd::Set {
        let len = t.get(2).and_then(|n| strtol(n));
        match len {
            Some(len) if (0..=i32::MAX - 2).contains(&len) => data_len = len as usize,
            _ => return Err(error(BAD_FORMAT)),
        }
        skip = 3;
    }
    let rest = after_tokens(line, skip);
    let swallow = (cmd == MetaCmd::Set).then_some(data_len + 2);
    let flags = check_flags(rest).map_err(|text| {
        // md and ma word every flag error but the opaque's length alike.
        let text = match cmd {
            MetaCmd::Delete | MetaCmd::Arith if text != OPAQUE_TOO_LONG => {
                "CLIENT_ERROR invalid or duplicate flag"
            }
            _ => text,
        };
        MetaError { text, swallow }
    })?;
    Ok(Meta {
        cmd,
        key,
        data_len,
        tokens: rest,
        flags,
    })
}

/// The text of `line` after its first `n` tokens.
fn after_tokens(line: &[u8], n: usize) -> &[u8] {
    let mut rest = line;
    for _ in 0..n {
        let start = rest.iter().position(|&b| b != b' ').unwrap_or(rest.len());
        rest = &rest[start..];
        let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
        rest = &rest[end..];
    }
    rest
}

/// memcached's `_meta_flag_preparse`: every flag known, none twice, numbers
/// valid.
fn check_flags(rest: &[u8]) -> Result<Flags, &'static str> {
    // One bit per flag letter seen.
    let mut seen = 0u128;
    let mut f = Flags::default();
    let mut bad = None;
    // Reported only when no other flag is wrong (memcached checks it later).
    let mut opaque_too_long = false;
    for token in tokens(rest) {
        let letter = token[0];
        let bit = 1u128 << (letter & 127);
        if letter >= 127 || seen & bit != 0 {
            return Err("CLIENT_ERROR duplicate flag");
        }
        seen |= bit;
        let arg = &token[1..];
        match letter {
            b'b' => f.base64 = true,
            b'N' => f.vivify = ttl(arg, &mut bad),
            b'T' => f.ttl = ttl(arg, &mut bad),
            b'R' => f.recache = ttl(arg, &mut bad),
            b'O' if token.len() > MAX_OPAQUE_BYTES => opaque_too_long = true,
            b'O' | b'k' | b's' | b't' | b'c' | b'f' | b'h' | b'l' => {}
            b'v' => f.value = true,
            b'u' => f.no_bump = true,
            b'q' => f.quiet = true,
            b'I' => f.invalidate = true,
            // Read as 64 bits and truncated, as the classic commands' flags.
            b'F' => match strtoull(arg) {
                Some(n) => f.client_flags = Some(n as u32),
                None => bad = bad.or(Some(BAD_FORMAT)),
            },
            // C0 compares against 0, which no item has (see CAS_NEVER).
            b'C' => {
                f.cas = number(arg, &mut bad, BAD_TOKEN).map(|c| if c == 0 { CAS_NEVER } else { c })
            }
            b'M' if token.len() != 2 => bad = Some("CLIENT_ERROR incorrect length for M token"),
            b'M' => f.mode = Some(token[1]),
            b'J' => f.initial = number(arg, &mut bad, "CLIENT_ERROR invalid numeric initial value"),
            b'D' => f.delta = number(arg, &mut bad, "CLIENT_ERROR invalid numeric delta value"),
            _ => return Err("CLIENT_ERROR invalid flag"),
        }
    }
    match (bad, opaque_too_long) {
        (Some(text), _) => Err(text),
        (None, true) => Err(OPAQUE_TOO_LONG),
        (None, false) => Ok(f),
    }
}

fn ttl(arg: &[u8], bad: &mut Option<&'static str>) -> Option<u32> {
    let ttl = exptime_token(arg);
    if ttl.is_none() {
        *bad = Some(BAD_TOKEN);
    }
    ttl
}

fn number(arg: &[u8], bad: &mut Option<&'static str>, text: &'static str) -> Option<u64> {
    let n = strtoull(arg);
    if n.is_none() {
        *bad = Some(text);
    }
    n
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Decodes standard base64 (with padding) into `out`; `None` if it is not
/// valid or does not fit.
pub fn base64_decode<'o>(text: &[u8], out: &'o mut [u8]) -> Option<&'o [u8]> {
    if text.is_empty() || !text.len().is_multiple_of(4) {
        return None;
    }
    let value = |c: u8| BASE64.iter().position(|&b| b == c).map(|v| v as u32);
    let mut len = 0;
    for chunk in text.chunks(4) {
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            n = (n << 6) | value(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        let take = 3 - pad;
        out.get_mut(len..len + take)?
            .copy_from_slice(&bytes[..take]);
        len += take;
    }
    Some(&out[..len])
}

/// Appends `bytes` as standard base64 with padding.
pub fn base64_encode(bytes: &[u8], out: &mut Vec<u8>) {
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(BASE64[((n >> (18 - 6 * i)) & 63) as usize]);
            } else {
                out.push(b'=');
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::protocol::text::parser::tokenize;

    fn meta(cmd: MetaCmd, line: &[u8]) -> Result<Meta<'_>, MetaError> {
        let t = tokenize(line);
        parse(cmd, t.first(), t.count, line)
    }

    #[test]
    fn base64_round_trips() {
        for input in [&b"f"[..], b"fo", b"foo", b"foob", b"\x00\xff\x10"] {
            let mut text = Vec::new();
            base64_encode(input, &mut text);
            let mut out = [0u8; 16];
            assert_eq!(base64_decode(&text, &mut out), Some(input));
        }
        let mut out = [0u8; 16];
        assert_eq!(base64_decode(b"bTI", &mut out), None);
        assert_eq!(base64_decode(b"bTI=", &mut out), Some(&b"m2"[..]));
    }

    #[test]
    fn flags_are_checked() {
        let m = meta(MetaCmd::Get, b"mg k v c T30 N5 O123 q").unwrap();
        assert!(m.flags.value && m.flags.quiet);
        assert_eq!((m.flags.ttl, m.flags.vivify), (Some(30), Some(5)));
        assert_eq!(m.tokens, b" v c T30 N5 O123 q");
        let err = |line| meta(MetaCmd::Get, line).unwrap_err().text;
        assert_eq!(err(b"mg k k k"), "CLIENT_ERROR duplicate flag");
        assert_eq!(err(b"mg k E5"), "CLIENT_ERROR invalid flag");
        assert_eq!(err(b"mg k T"), BAD_TOKEN);
        assert!(meta(MetaCmd::Get, b"mg k l h").is_ok());
    }

    #[test]
    fn set_errors_swallow_the_data_when_its_length_is_known() {
        let e = meta(MetaCmd::Set, b"ms k 2 MX2").unwrap_err();
        assert_eq!(e.swallow, Some(4));
        let e = meta(MetaCmd::Set, b"ms k x").unwrap_err();
        assert_eq!((e.text, e.swallow), (BAD_FORMAT, None));
        let m = meta(MetaCmd::Set, b"ms k 5 F7 T0").unwrap();
        assert_eq!((m.data_len, m.flags.client_flags), (5, Some(7)));
    }
}
