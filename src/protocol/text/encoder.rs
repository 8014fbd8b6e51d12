//! Text answers written straight into a connection's output buffer: reply
//! words, `VALUE` headers, numbers and `STAT` lines, without allocating.

use crate::protocol::command::{Command, Found, Outcome, StoreMode};

/// Appends `n` in decimal.
#[inline]
pub fn number(out: &mut Vec<u8>, n: u64) {
    let mut buf = [0u8; 20];
    out.extend_from_slice(digits(n, &mut buf));
}

pub use crate::decimal::{digits, digits_before};

/// Appends `text` and the line end.
#[inline]
pub fn line(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `VALUE <key> <flags> <bytes>[ <cas>]\r\n`; the caller appends the value and
/// its `\r\n`. The numbers are assembled backwards in a stack buffer, so the
/// whole header is three copies.
#[inline]
pub fn value_header(out: &mut Vec<u8>, key: &[u8], item: &Found<'_>, with_cas: bool) {
    // " flags bytes cas\r\n": at most 11 + 21 + 21 + 2 bytes.
    let mut tail = [0u8; 56];
    let mut at = tail.len() - 2;
    tail[at..].copy_from_slice(b"\r\n");
    let field = |n: u64, tail: &mut [u8; 56], at: &mut usize| {
        *at = digits_before(n, tail, *at) - 1;
        tail[*at] = b' ';
    };
    if with_cas {
        field(item.cas, &mut tail, &mut at);
    }
    field(item.value.len() as u64, &mut tail, &mut at);
    field(u64::from(item.flags), &mut tail, &mut at);
    out.reserve(6 + key.len() + tail.len() - at);
    out.extend_from_slice(b"VALUE ");
    out.extend_from_slice(key);
    out.extend_from_slice(&tail[at..]);
}

/// `STAT <name> <value>\r\n`.
pub fn stat(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(b"STAT ");
    out.extend_from_slice(name.as_bytes());
    out.push(b' ');
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The answer memcached gives to a classic command's outcome (retrievals are
/// answered by `value_header`).
pub fn outcome(out: &mut Vec<u8>, command: &Command<'_>, outcome: &Outcome<'_>) {
    // Each word with its line end: one copy per answer.
    let text: &str = match (command, outcome) {
        (Command::Touch { .. }, Outcome::Hit(_)) => "TOUCHED\r\n",
        // Text has one word for "add found an item" and "replace found none";
        // only `cas` says EXISTS / NOT_FOUND.
        (
            Command::Store {
                mode: StoreMode::Add | StoreMode::Replace,
                cas: 0,
                ..
            },
            Outcome::Exists | Outcome::NotFound,
        ) => "NOT_STORED\r\n",
        (Command::Delete { .. }, Outcome::Done { .. }) => "DELETED\r\n",
        (Command::Store { .. }, Outcome::Done { .. }) => "STORED\r\n",
        (Command::Noop, _) => "MN\r\n",
        (_, Outcome::Done { .. }) => "OK\r\n",
        (_, Outcome::Number { value, .. }) => {
            number(out, *value);
            "\r\n"
        }
        (_, Outcome::Hit(_)) => "OK\r\n",
        (_, Outcome::NotFound) => "NOT_FOUND\r\n",
        (_, Outcome::Exists) => "EXISTS\r\n",
        (_, Outcome::NotStored) => "NOT_STORED\r\n",
        (_, Outcome::TooLarge) => "SERVER_ERROR object too large for cache\r\n",
        (_, Outcome::NonNumeric) => {
            "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"
        }
        (Command::Store { .. }, Outcome::OutOfMemory) => {
            "SERVER_ERROR out of memory storing object\r\n"
        }
        (_, Outcome::OutOfMemory) => "SERVER_ERROR out of memory\r\n",
    };
    out.extend_from_slice(text.as_bytes());
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn value_header_with_and_without_cas() {
        let item = Found {
            flags: 7,
            cas: 42,
            value: b"abc",
        };
        let mut out = Vec::new();
        value_header(&mut out, b"k", &item, false);
        value_header(&mut out, b"k", &item, true);
        assert_eq!(out, b"VALUE k 7 3\r\nVALUE k 7 3 42\r\n");
    }

    #[test]
    fn numbers_in_decimal() {
        let mut out = Vec::new();
        number(&mut out, 0);
        out.push(b' ');
        number(&mut out, u64::MAX);
        assert_eq!(out, b"0 18446744073709551615");
    }
}
