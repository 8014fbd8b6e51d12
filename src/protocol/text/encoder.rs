//! Text answers written straight into a connection's output buffer: reply
//! words, `VALUE` headers, numbers and `STAT` lines, without allocating.

use crate::protocol::command::{Command, Found, Outcome, StoreMode};

/// Appends `n` in decimal.
#[inline]
pub fn number(out: &mut Vec<u8>, n: u64) {
    let mut buf = [0u8; 20];
    out.extend_from_slice(digits(n, &mut buf));
}

pub use crate::decimal::digits;

/// Appends `text` and the line end.
#[inline]
pub fn line(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `VALUE <key> <flags> <bytes>[ <cas>]\r\n`; the caller appends the value and
/// its `\r\n`.
#[inline]
pub fn value_header(out: &mut Vec<u8>, key: &[u8], item: &Found<'_>, with_cas: bool) {
    out.extend_from_slice(b"VALUE ");
    out.extend_from_slice(key);
    out.push(b' ');
    number(out, u64::from(item.flags));
    out.push(b' ');
    number(out, item.value.len() as u64);
    if with_cas {
        out.push(b' ');
        number(out, item.cas);
    }
    out.extend_from_slice(b"\r\n");
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
    let text = match (command, outcome) {
        (Command::Touch { .. }, Outcome::Hit(_)) => "TOUCHED",
        // Text has one word for "add found an item" and "replace found none";
        // only `cas` says EXISTS / NOT_FOUND.
        (
            Command::Store {
                mode: StoreMode::Add | StoreMode::Replace,
                cas: 0,
                ..
            },
            Outcome::Exists | Outcome::NotFound,
        ) => "NOT_STORED",
        (Command::Delete { .. }, Outcome::Done { .. }) => "DELETED",
        (Command::Store { .. }, Outcome::Done { .. }) => "STORED",
        (Command::Noop, _) => "MN",
        (_, Outcome::Done { .. }) => "OK",
        (_, Outcome::Number { value, .. }) => {
            number(out, *value);
            ""
        }
        (_, Outcome::Hit(_)) => "OK",
        (_, Outcome::NotFound) => "NOT_FOUND",
        (_, Outcome::Exists) => "EXISTS",
        (_, Outcome::NotStored) => "NOT_STORED",
        (_, Outcome::TooLarge) => "SERVER_ERROR object too large for cache",
        (_, Outcome::NonNumeric) => "CLIENT_ERROR cannot increment or decrement non-numeric value",
        (Command::Store { .. }, Outcome::OutOfMemory) => {
            "SERVER_ERROR out of memory storing object"
        }
        (_, Outcome::OutOfMemory) => "SERVER_ERROR out of memory",
    };
    line(out, text);
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
