//! The decimal numbers INCREMENT and DECREMENT work on, parsed the way memcached's
//! `safe_strtoull` parses a stored value (which always ends in "\r\n" there).

/// Parses a stored value as memcached does: leading white space, an optional sign,
/// digits; the byte after them must be white space or the end. `None` for a
/// non-numeric value, a negative number or one that overflows 64 bits.
pub fn parse_counter(value: &[u8]) -> Option<u64> {
    // memcached refuses a zero-length value before parsing it.
    if value.is_empty() {
        return None;
    }
    let is_space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r');
    let mut at = 0;
    while at < value.len() && is_space(value[at]) {
        at += 1;
    }
    let mut negative = false;
    if at < value.len() && (value[at] == b'+' || value[at] == b'-') {
        negative = value[at] == b'-';
        at += 1;
    }
    let digits_start = at;
    let mut number: u64 = 0;
    let mut overflow = false;
    while at < value.len() && value[at].is_ascii_digit() {
        let digit = u64::from(value[at] - b'0');
        match number.checked_mul(10).and_then(|n| n.checked_add(digit)) {
            Some(n) => number = n,
            None => overflow = true,
        }
        at += 1;
    }
    // No digits at all (white space only, a lone sign): memcached's
    // safe_strtoull refuses when strtoull's end pointer did not move.
    if at == digits_start || overflow {
        return None;
    }
    let end = at;
    // The stored value is followed by "\r\n" in memcached, so the end reads '\r'.
    let next = value.get(end).copied().unwrap_or(b'\r');
    let terminated = is_space(next) || next == 0;
    if !terminated {
        return None;
    }
    if negative {
        let wrapped = number.wrapping_neg();
        // strtoull negates; memcached refuses results that look negative.
        if (wrapped as i64) < 0 {
            return None;
        }
        return Some(wrapped);
    }
    Some(number)
}

pub use crate::decimal::digits as format_counter;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_padded_numbers() {
        assert_eq!(parse_counter(b"12"), Some(12));
        assert_eq!(parse_counter(b"  12"), Some(12));
        assert_eq!(parse_counter(b"+5"), Some(5));
        assert_eq!(parse_counter(b"99 "), Some(99));
        assert_eq!(parse_counter(b"1 2"), Some(1));
        assert_eq!(parse_counter(b"18446744073709551615"), Some(u64::MAX));
    }

    #[test]
    fn non_numbers_are_refused() {
        assert_eq!(parse_counter(b""), None);
        assert_eq!(parse_counter(b"abc"), None);
        assert_eq!(parse_counter(b"12abc"), None);
        assert_eq!(parse_counter(b"+"), None);
        assert_eq!(parse_counter(b"-5"), None);
        assert_eq!(parse_counter(b"18446744073709551616"), None);
    }

    #[test]
    fn strtoull_quirks_are_kept() {
        // No digits after white space: safe_strtoull sees strtoull's end at the
        // start and refuses (memcached answers non-numeric, 0x0006).
        assert_eq!(parse_counter(b" "), None);
        assert_eq!(parse_counter(b"  \t"), None);
        assert_eq!(parse_counter(b"-0"), Some(0));
        assert_eq!(parse_counter(b"5\0"), Some(5));
    }

    #[test]
    fn formats_decimal() {
        let mut buf = [0u8; 20];
        assert_eq!(format_counter(0, &mut buf), b"0");
        assert_eq!(format_counter(u64::MAX, &mut buf), b"18446744073709551615");
    }
}
