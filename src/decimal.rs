//! Unsigned integers as decimal ASCII, with no allocation: shared by the store
//! (counters are stored as decimal text, as memcached stores them) and the text
//! protocol's encoder (numbers in answers), which know nothing of each other.

/// Writes `n` in decimal at the end of `buf`, returning the used tail.
#[inline]
pub fn digits(n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    let mut n = n;
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[at..]
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
}
