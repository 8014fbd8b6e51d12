//! Unsigned integers as decimal ASCII, with no allocation: shared by the store
//! (counters are stored as decimal text, as memcached stores them) and the text
//! protocol's encoder (numbers in answers), which know nothing of each other.

/// "00" to "99": two digits per division, which halves the divisions of a
/// number (a text `VALUE` line formats two or three per hit).
const PAIRS: &[u8; 200] = b"\
0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// Writes `n` in decimal at the end of `buf`, returning the used tail.
#[inline]
pub fn digits(n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let start = digits_before(n, buf, 20);
    &buf[start..]
}

/// Writes `n` in decimal into `buf` so that it ends at `end`, and returns where
/// it starts: answers are assembled backwards in one stack buffer and appended
/// with one copy. `buf[..end]` must have room for 20 digits (any u64), or less
/// when `n` is known to be smaller.
#[inline]
pub fn digits_before(n: u64, buf: &mut [u8], end: usize) -> usize {
    let mut at = end;
    let mut n = n;
    while n >= 100 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        at -= 2;
        buf[at..at + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    }
    if n >= 10 {
        let pair = n as usize * 2;
        at -= 2;
        buf[at..at + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    } else {
        at -= 1;
        buf[at] = b'0' + n as u8;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::digits;

    #[test]
    fn extremes() {
        let mut buf = [0u8; 20];
        assert_eq!(digits(0, &mut buf), b"0");
        assert_eq!(digits(u64::MAX, &mut buf), b"18446744073709551615");
    }

    #[test]
    fn every_length_and_pair_boundary() {
        let mut buf = [0u8; 20];
        let mut n: u64 = 1;
        for _ in 0..20 {
            for m in [n - 1, n, n + 1, n / 5 * 9, n.saturating_mul(10) - 1] {
                assert_eq!(digits(m, &mut buf), m.to_string().as_bytes(), "{m}");
            }
            n = n.saturating_mul(10);
        }
        for m in 0..100_000u64 {
            assert_eq!(digits(m, &mut buf), m.to_string().as_bytes());
        }
    }
}
