//! How one item is laid out in a segment. Items are written back to back; the
//! header is 12 bytes for an item with no flags, no expiry and a value under 128
//! bytes, and grows only by what the item uses:
//!
//! ```text
//! +------+------+-------------+-----+--------+------------+------------+-----+-------+
//! | bits | key  | value len   | CAS | access | flags      | expiry     | key | value |
//! |  1   | len 1| varint 1..5 | 6   | 3      | 4 if non-0 | 4 if non-0 |     |       |
//! +------+------+-------------+-----+--------+------------+------------+-----+-------+
//! ```
//! Integers inside the header are little-endian; `expiry` is relative seconds on
//! the store's clock. CAS values are 48 bits: the store's counter wraps after 2^48
//! mutations (nine years at a million a second).
//!
//! `access` is memcached's `it->time`, what meta `l`, `me`'s `la=` and
//! `stats items`' `age` report: the store clock's second of the item's last
//! access, kept modulo 2^24. memcached reports it in whole seconds (its own field
//! is a 32-bit second count), so a coarser unit would change small answers like
//! `l2`; what can be given up is the range. 24 bits count 194 days, so the age
//! of an item idle longer than that reads modulo 194 days (`idle`): a cache item
//! untouched for half a year is the only one answered wrong, and every item saves
//! a fourth byte (12-byte header instead of 13; 2 bytes would wrap after 18
//! hours, an ordinary idle time for a cache item).

/// Bytes of the CAS field.
pub const CAS_LEN: usize = 6;
/// CAS values stay below this.
pub const CAS_LIMIT: u64 = 1 << (8 * CAS_LEN);

/// Bytes of the access-time field.
pub const ACCESS_LEN: usize = 3;
/// Access times and ages are counted modulo this.
const ACCESS_MODULUS: u32 = 1 << (8 * ACCESS_LEN);

/// The item has a 4-byte flags field.
pub const HAS_FLAGS: u8 = 0x01;
/// The item has a 4-byte expiry field.
pub const HAS_EXPIRY: u8 = 0x02;
/// Read since it was written or last kept by eviction (second chance).
pub const ACCESSED: u8 = 0x04;
/// Read at least once (for `evicted_unfetched` / `expired_unfetched`).
pub const FETCHED: u8 = 0x08;
/// Overwritten or deleted: space to reclaim, no longer in the index.
pub const DEAD: u8 = 0x10;
/// Marked stale by a meta invalidation (`md I`, `ms I`): still served, flagged `X`.
pub const STALE: u8 = 0x20;
/// A meta reader has been given the right to recache this item (`W`); later
/// readers are told `Z`.
pub const TOKEN_SENT: u8 = 0x40;

/// The decoded header of an item at some address.
#[derive(Clone, Copy, Debug)]
pub struct Header {
    pub bits: u8,
    pub key_len: usize,
    pub value_len: usize,
    pub cas: u64,
    pub flags: u32,
    pub expiry: u32,
    /// Offset of the CAS field from the item's start.
    pub cas_at: usize,
    /// Offset of the expiry field, if the item has one.
    pub expiry_at: Option<usize>,
    /// Offset of the key; the value follows it.
    pub key_at: usize,
}

impl Header {
    /// Bytes the whole item takes, header included.
    #[inline]
    pub fn total_len(&self) -> usize {
        self.key_at + self.key_len + self.value_len
    }

    #[inline]
    pub fn value_at(&self) -> usize {
        self.key_at + self.key_len
    }

    /// Offset of the access-time field.
    #[inline]
    pub fn access_at(&self) -> usize {
        self.cas_at + CAS_LEN
    }
}

/// Seconds from an access time (modulo 2^24) to `now`.
#[inline]
pub fn idle(access: u32, now: u32) -> u32 {
    now.wrapping_sub(access) % ACCESS_MODULUS
}

/// The access time (store clock seconds, modulo 2^24) of the item whose access
/// field is at `at`.
#[inline]
pub fn read_access(bytes: &[u8], at: usize) -> u32 {
    let mut out = [0u8; 4];
    out[..ACCESS_LEN].copy_from_slice(&bytes[at..at + ACCESS_LEN]);
    u32::from_le_bytes(out)
}

/// Writes `now` (store clock seconds) as the access time of the item whose
/// access field is at `at`.
#[inline]
pub fn write_access(bytes: &mut [u8], at: usize, now: u32) {
    bytes[at..at + ACCESS_LEN].copy_from_slice(&now.to_le_bytes()[..ACCESS_LEN]);
}

fn varint_len(mut n: usize) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

/// Bytes an item with these fields takes.
pub fn item_len(key_len: usize, value_len: usize, flags: u32, expiry: u32) -> usize {
    2 + varint_len(value_len)
        + CAS_LEN
        + ACCESS_LEN
        + if flags != 0 { 4 } else { 0 }
        + if expiry != 0 { 4 } else { 0 }
        + key_len
        + value_len
}

/// Decodes the header at the start of `bytes`. Inlined: it is on every
/// lookup, and a call returns the whole header through memory.
#[inline(always)]
pub fn decode(bytes: &[u8]) -> Header {
    let bits = bytes[0];
    let key_len = usize::from(bytes[1]);
    let mut at = 2;
    let mut value_len = 0usize;
    let mut shift = 0;
    loop {
        let byte = bytes[at];
        at += 1;
        value_len |= usize::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    let cas_at = at;
    let cas = read_cas(bytes, at);
    at += CAS_LEN;
    // The access time is read only where it is reported (`read_access`): not on
    // every lookup.
    at += ACCESS_LEN;
    let mut flags = 0;
    if bits & HAS_FLAGS != 0 {
        flags = u32::from_le_bytes(field(bytes, at));
        at += 4;
    }
    let mut expiry = 0;
    let mut expiry_at = None;
    if bits & HAS_EXPIRY != 0 {
        expiry = u32::from_le_bytes(field(bytes, at));
        expiry_at = Some(at);
        at += 4;
    }
    Header {
        bits,
        key_len,
        value_len,
        cas,
        flags,
        expiry,
        cas_at,
        expiry_at,
        key_at: at,
    }
}

/// Bits an item header may carry; any other bit means the bytes are not an item.
/// A new bit here changes the memory file's format (docs/restart.md).
const KNOWN_BITS: u8 = HAS_FLAGS | HAS_EXPIRY | ACCESSED | FETCHED | DEAD | STALE | TOKEN_SENT;

/// Decodes the header at the start of `bytes` if the bytes can be an item that
/// lies wholly inside `bytes`: for memory that is not trusted yet (the walk
/// after a warm restart). Keys are never empty, so zeroed memory is refused.
pub fn decode_checked(bytes: &[u8]) -> Option<Header> {
    let bits = *bytes.first()?;
    if bits & !KNOWN_BITS != 0 || *bytes.get(1)? == 0 {
        return None;
    }
    // The value length is a varint of at most 5 bytes.
    for at in 3..8 {
        if *bytes.get(at - 1)? & 0x80 == 0 {
            let fields =
                4 * usize::from(bits & HAS_FLAGS != 0) + 4 * usize::from(bits & HAS_EXPIRY != 0);
            let header = decode(bytes.get(..at + CAS_LEN + ACCESS_LEN + fields)?);
            return (header.total_len() <= bytes.len()).then_some(header);
        }
    }
    None
}

#[inline]
fn read_cas(bytes: &[u8], at: usize) -> u64 {
    let mut out = [0u8; 8];
    out[..CAS_LEN].copy_from_slice(&bytes[at..at + CAS_LEN]);
    u64::from_le_bytes(out)
}

/// Writes a CAS (below `CAS_LIMIT`) at `at`.
#[inline]
pub fn write_cas(bytes: &mut [u8], at: usize, cas: u64) {
    bytes[at..at + CAS_LEN].copy_from_slice(&cas.to_le_bytes()[..CAS_LEN]);
}

#[inline]
fn field<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}

/// An item's fields besides its key and value.
#[derive(Clone, Copy, Debug)]
pub struct Fields {
    pub flags: u32,
    pub expiry: u32,
    pub cas: u64,
    /// Access time (store clock seconds).
    pub access: u32,
}

/// Writes an item's header and key at the start of `out`; returns the offset at
/// which its value goes. `out` must hold `item_len(..)` bytes.
pub fn encode(out: &mut [u8], key: &[u8], value_len: usize, fields: Fields) -> usize {
    let Fields {
        flags,
        expiry,
        cas,
        access,
    } = fields;
    let mut bits = 0;
    if flags != 0 {
        bits |= HAS_FLAGS;
    }
    if expiry != 0 {
        bits |= HAS_EXPIRY;
    }
    out[0] = bits;
    // Keys are at most 250 bytes (checked by the protocol and the store).
    out[1] = key.len() as u8;
    let mut at = 2;
    let mut n = value_len;
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out[at] = byte;
            at += 1;
            break;
        }
        out[at] = byte | 0x80;
        at += 1;
    }
    write_cas(out, at, cas);
    at += CAS_LEN;
    write_access(out, at, access);
    at += ACCESS_LEN;
    if flags != 0 {
        out[at..at + 4].copy_from_slice(&flags.to_le_bytes());
        at += 4;
    }
    if expiry != 0 {
        out[at..at + 4].copy_from_slice(&expiry.to_le_bytes());
        at += 4;
    }
    out[at..at + key.len()].copy_from_slice(key);
    at + key.len()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn checked_decode_refuses_what_is_not_a_whole_item() {
        let key = b"k";
        let len = item_len(1, 300, 7, 9);
        let mut buf = vec![0u8; len];
        encode(&mut buf, key, 300, fields(7, 9, 5));
        assert_eq!(decode_checked(&buf).unwrap().total_len(), len);
        let mut small = [0u8; 13];
        encode(&mut small, key, 0, fields(0, 0, 5));
        assert_eq!(decode_checked(&small).unwrap().total_len(), 13);
        for cut in 0..len {
            assert!(decode_checked(&buf[..cut]).is_none(), "cut at {cut}");
        }
        assert!(decode_checked(&[0u8; 64]).is_none(), "zeroed memory");
        let mut bad = buf.clone();
        bad[0] |= 0x80;
        assert!(decode_checked(&bad).is_none(), "unknown bit");
    }

    fn fields(flags: u32, expiry: u32, cas: u64) -> Fields {
        Fields {
            flags,
            expiry,
            cas,
            access: 0x0123_4567,
        }
    }

    #[test]
    fn small_item_header_is_twelve_bytes() {
        assert_eq!(item_len(14, 100, 0, 0) - 14 - 100, 12);
    }

    #[test]
    fn idle_counts_across_the_wrap_of_the_access_field() {
        let mut buf = vec![0u8; item_len(1, 0, 0, 0)];
        let now = ACCESS_MODULUS + 5;
        encode(
            &mut buf,
            b"k",
            0,
            Fields {
                access: now - 10,
                ..fields(0, 0, 1)
            },
        );
        let at = decode(&buf).access_at();
        assert_eq!(idle(read_access(&buf, at), now), 10);
        assert_eq!(idle(read_access(&buf, at), now + 3600), 3610);
        write_access(&mut buf, at, now);
        assert_eq!(idle(read_access(&buf, at), now), 0);
    }

    #[test]
    fn encode_decode_round_trip() {
        for &(value_len, flags, expiry) in &[
            (0usize, 0u32, 0u32),
            (127, 1, 0),
            (128, 0, 5),
            (1 << 20, u32::MAX, u32::MAX),
            (128 << 20, 7, 9),
        ] {
            let key = b"some-key";
            let len = item_len(key.len(), value_len, flags, expiry);
            let mut buf = vec![0u8; len];
            let value_at = encode(
                &mut buf,
                key,
                value_len,
                fields(flags, expiry, 0x112233445566),
            );
            let header = decode(&buf);
            assert_eq!(header.total_len(), len);
            assert_eq!(header.value_at(), value_at);
            assert_eq!(header.value_len, value_len);
            assert_eq!(header.flags, flags);
            assert_eq!(header.expiry, expiry);
            assert_eq!(header.cas, 0x112233445566);
            assert_eq!(read_access(&buf, header.access_at()), 0x23_4567);
            assert_eq!(&buf[header.key_at..header.key_at + key.len()], key);
        }
    }
}
