//! Fuzz target: the text protocol's line parser (`protocol::text::parser`) on arbitrary
//! bytes. It checks what the connection code relies on: no panic; `split_line` takes
//! exactly one line (up to and including the first `\n`, a `\r` before it dropped),
//! refuses only an unended non-`get` line past `LINE_MAX_BYTES`, and answers every
//! prefix consistently; `tokenize` gives non-empty, space-free, ordered tokens inside the
//! line; `parse_line` is deterministic and every key it returns lies inside the line,
//! is 1..=250 bytes (retrieval keys: non-empty, space-free) and holds no space; numbers
//! read as `strtoull` agrees with a plain decimal reading; a walk over the whole input
//! (skipping each storage command's data block) terminates.
//!
//! ```text
//!  input:  | line \r\n | data block \r\n (storage) | line \n | ... | unended tail |
//!            ^ split_line, parse_line; pos += used (+ data_len + 2 for storage)
//! ```

#![no_main]

use libfuzzer_sys::fuzz_target;
use pincache::protocol::text::parser::{
    keys, parse_line, split_line, strtoull, tokenize, Incomplete, Line, LINE_MAX_BYTES,
};
use pincache::protocol::{Command, MAX_KEY_LEN};

/// Inputs up to this long have every prefix checked; longer ones a sample.
const ALL_PREFIXES_UP_TO: usize = 512;

fuzz_target!(|data: &[u8]| {
    check_split(data);
    check_prefixes(data);
    walk(data);
});

/// Whether `part` lies inside `whole` (pointer ranges, not contents).
fn within(whole: &[u8], part: &[u8]) -> bool {
    let (w, p) = (whole.as_ptr() as usize, part.as_ptr() as usize);
    part.is_empty() || (p >= w && p + part.len() <= w + whole.len())
}

/// One `split_line` against its definition.
fn check_split(data: &[u8]) {
    let newline = data.iter().position(|&b| b == b'\n');
    match (split_line(data), newline) {
        (Ok((line, used)), Some(at)) => {
            assert_eq!(used, at + 1, "a line ends at the first newline");
            let raw = &data[..at];
            assert_eq!(line, raw.strip_suffix(b"\r").unwrap_or(raw));
            assert!(within(data, line));
        }
        (Err(Incomplete::TooLong), None) => assert!(data.len() > LINE_MAX_BYTES),
        (Err(Incomplete::Line), None) => {}
        (got, _) => panic!("split_line gave {got:?} with the first newline at {newline:?}"),
    }
    assert_eq!(
        split_line(data),
        split_line(data),
        "split_line is deterministic"
    );
}

/// A prefix answers like the whole input once it holds the first line, and asks for more
/// (or refuses an overlong unended line) before that.
fn check_prefixes(data: &[u8]) {
    let whole = split_line(data);
    let step = if data.len() <= ALL_PREFIXES_UP_TO {
        1
    } else {
        data.len() / 97 + 1
    };
    for len in (0..=data.len()).step_by(step) {
        let prefix = &data[..len];
        match (split_line(prefix), whole) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "prefix of {len} bytes"),
            (Ok(got), Err(e)) => panic!("prefix gives {got:?}, whole input {e:?}"),
            (Err(_), Ok((_, used))) => assert!(len < used, "prefix of {len} holds the line"),
            (Err(Incomplete::TooLong), Err(Incomplete::Line)) => {
                panic!("a prefix of {len} bytes is too long but the whole input is not")
            }
            (Err(_), Err(_)) => {}
        }
    }
}

/// Every line of the input, as the connection reads them.
fn walk(data: &[u8]) {
    let mut pos = 0;
    while pos < data.len() {
        let Ok((line, used)) = split_line(&data[pos..]) else {
            return;
        };
        assert!(used > 0, "a line takes at least its newline");
        check_tokens(line);
        let skip = check_line(line);
        pos += used;
        pos = pos.saturating_add(skip);
    }
}

fn check_tokens(line: &[u8]) {
    let tokens = tokenize(line);
    let n = tokens.count;
    let mut end = line.as_ptr() as usize;
    let last = (n > 0).then_some(&tokens.last);
    for (i, t) in tokens.first().iter().chain(last).enumerate() {
        assert!(!t.is_empty() && within(line, t), "token {i} of {n}");
        assert!(!t.contains(&b' '), "tokens hold no space");
        if i < tokens.first().len() {
            assert!(t.as_ptr() as usize >= end, "tokens in order");
            end = t.as_ptr() as usize + t.len();
        }
        assert_strtoull(t);
    }
    assert!(n <= 24, "counted up to memcached's limit");
}

/// `strtoull` on a token of plain digits is the decimal value (None past u64::MAX).
fn assert_strtoull(t: &[u8]) {
    if !t.iter().all(u8::is_ascii_digit) {
        return;
    }
    let plain = std::str::from_utf8(t)
        .ok()
        .and_then(|s| s.parse::<u64>().ok());
    assert_eq!(
        strtoull(t),
        plain,
        "strtoull({:?})",
        String::from_utf8_lossy(t)
    );
}

#[track_caller]
fn assert_key(line: &[u8], key: &[u8]) {
    assert!(within(line, key), "a key borrows from its line");
    assert!(
        !key.is_empty() && key.len() <= MAX_KEY_LEN,
        "key of {}",
        key.len()
    );
    assert!(!key.contains(&b' '), "a key holds no space");
}

/// Checks one parsed line; returns the bytes of the data block that follow it.
fn check_line(line: &[u8]) -> usize {
    let parsed = parse_line(line);
    assert_eq!(parsed, parse_line(line), "parse_line is deterministic");
    match parsed {
        Line::Store { key, data_len, .. } => {
            assert_key(line, key);
            return data_len.saturating_add(2);
        }
        Line::Retrieve { keys: rest, .. } => {
            assert!(within(line, rest));
            for k in keys(rest) {
                assert!(!k.is_empty() && !k.contains(&b' ') && within(line, k));
            }
        }
        Line::Run { command, .. } => check_command(line, &command),
        _ => {}
    }
    0
}

fn check_command(line: &[u8], command: &Command<'_>) {
    match *command {
        Command::Get { key, .. }
        | Command::Touch { key, .. }
        | Command::Delete { key, .. }
        | Command::Arith { key, .. } => assert_key(line, key),
        Command::Store { key, value, .. } => {
            assert_key(line, key);
            assert!(value.is_empty(), "a text line carries no value");
        }
        Command::Stats { group } => assert!(within(line, group)),
        _ => {}
    }
}
