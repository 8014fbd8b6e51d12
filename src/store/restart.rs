//! The warm-restart record: what a clean stop writes beside the memory file
//! (`PATH.meta`) so that the next start can trust the segments in it. Items are
//! self-describing, so the record holds only geometry, segment state and
//! counters, and its size does not grow with the data.
//!
//! ```text
//! +----------+---------+-----------------------------------------+----------+-------+
//! | PINCMETA | version | length | memory_limit item_size_max segment_len | counters | clock |
//! |    8     |   4     |   4    | 8            8             8           | 4+8+4    | 8+8   |
//! +----------+---------+-----------------------------------------+----------+-------+
//! | segments: count x (state 1, bucket 1, write_at 4) | fifo: n 4, n x id 4 | crc32 4 |
//! +---------------------------------------------------+---------------------+---------+
//! ```
//! Integers are little-endian; `length` is the whole record's, so that a record
//! cut short is told apart from a damaged one; the CRC-32 (IEEE) covers every
//! byte before it.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Format version: bump it whenever this record or the item layout in
/// segment memory (item.rs) changes meaning (see docs/restart.md).
pub const FORMAT_VERSION: u32 = 2;
const MAGIC: &[u8; 8] = b"PINCMETA";
/// Bytes before the segment table.
const FIXED_LEN: usize = 8 + 4 + 4 + 8 * 3 + 4 + 8 + 4 + 8 + 8;
const SEGMENT_RECORD_LEN: usize = 6;

/// A segment's state as the record keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SavedState {
    /// Free, pages handed back (read as zeroes).
    Free = 0,
    /// Free, pages still resident.
    Warm = 1,
    /// A TTL class's tail.
    Open = 2,
    /// Full, in the eviction queue.
    Sealed = 3,
}

impl SavedState {
    fn from_byte(byte: u8) -> Option<SavedState> {
        Some(match byte {
            0 => SavedState::Free,
            1 => SavedState::Warm,
            2 => SavedState::Open,
            3 => SavedState::Sealed,
            _ => return None,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SavedSegment {
    pub state: SavedState,
    pub bucket: u8,
    pub write_at: u32,
}

/// Everything a clean stop records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    pub memory_limit: u64,
    pub item_size_max: u64,
    pub segment_len: u64,
    /// Items in the index at the stop (sizes the index before the walk).
    pub items: u32,
    pub next_cas: u64,
    /// A pending delayed flush, relative time (0 = none).
    pub flush_at: u32,
    /// Unix time of relative time 0 on the stopped process's clock.
    pub clock_epoch_unix: u64,
    /// Wall-clock unix time of the stop, in nanoseconds (the "clock went
    /// backwards" check works within one second too).
    pub stopped_unix_nanos: u64,
    pub segments: Vec<SavedSegment>,
    /// Sealed segments, oldest first.
    pub fifo: Vec<u32>,
}

/// Why a record cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetaError {
    Short { len: usize },
    Magic,
    Version(u32),
    Checksum,
    Malformed(&'static str),
}

impl std::fmt::Display for MetaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetaError::Short { len } => write!(f, "metadata cut short ({len} bytes)"),
            MetaError::Magic => write!(f, "metadata is not a pincache record"),
            MetaError::Version(v) => write!(
                f,
                "metadata format version {v}, this binary reads {FORMAT_VERSION}"
            ),
            MetaError::Checksum => write!(f, "metadata checksum does not match"),
            MetaError::Malformed(what) => write!(f, "metadata malformed: {what}"),
        }
    }
}

/// CRC-32 (IEEE 802.3, reflected, as zlib's `crc32`), table built at compile time.
pub fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for &b in bytes {
        crc = TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

impl Meta {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            FIXED_LEN + self.segments.len() * SEGMENT_RECORD_LEN + 8 + self.fifo.len() * 4,
        );
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        // The length, filled in below.
        out.extend_from_slice(&0u32.to_le_bytes());
        for n in [self.memory_limit, self.item_size_max, self.segment_len] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        out.extend_from_slice(&self.items.to_le_bytes());
        out.extend_from_slice(&self.next_cas.to_le_bytes());
        out.extend_from_slice(&self.flush_at.to_le_bytes());
        out.extend_from_slice(&self.clock_epoch_unix.to_le_bytes());
        out.extend_from_slice(&self.stopped_unix_nanos.to_le_bytes());
        out.extend_from_slice(&(self.segments.len() as u32).to_le_bytes());
        for s in &self.segments {
            out.extend_from_slice(&[s.state as u8, s.bucket]);
            out.extend_from_slice(&s.write_at.to_le_bytes());
        }
        out.extend_from_slice(&(self.fifo.len() as u32).to_le_bytes());
        for id in &self.fifo {
            out.extend_from_slice(&id.to_le_bytes());
        }
        let len = (out.len() + 4) as u32;
        out[12..16].copy_from_slice(&len.to_le_bytes());
        let crc = crc32(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes a record, checking magic, version, checksum and that every byte is
    /// accounted for.
    pub fn decode(bytes: &[u8]) -> Result<Meta, MetaError> {
        let short = MetaError::Short { len: bytes.len() };
        if bytes.len() < 16 {
            return Err(short);
        }
        if &bytes[..8] != MAGIC {
            return Err(MetaError::Magic);
        }
        let mut r = Reader { bytes, at: 8 };
        let version = r.u32()?;
        if version != FORMAT_VERSION {
            return Err(MetaError::Version(version));
        }
        let declared = r.u32()? as usize;
        if bytes.len() < declared.max(FIXED_LEN + 4 + 4 + 4) {
            return Err(short);
        }
        if bytes.len() > declared {
            return Err(MetaError::Malformed("bytes after the record"));
        }
        let (body, tail) = bytes.split_at(bytes.len() - 4);
        let mut r = Reader {
            bytes: body,
            at: 16,
        };
        if crc32(body).to_le_bytes() != tail {
            return Err(MetaError::Checksum);
        }
        let mut meta = Meta {
            memory_limit: r.u64()?,
            item_size_max: r.u64()?,
            segment_len: r.u64()?,
            items: r.u32()?,
            next_cas: r.u64()?,
            flush_at: r.u32()?,
            clock_epoch_unix: r.u64()?,
            stopped_unix_nanos: r.u64()?,
            segments: Vec::new(),
            fifo: Vec::new(),
        };
        meta.segments = r.segments()?;
        let fifo_len = r.u32()? as usize;
        if r.remaining() != fifo_len * 4 {
            return Err(MetaError::Malformed("eviction queue length"));
        }
        meta.fifo = (0..fifo_len).map(|_| r.u32()).collect::<Result<_, _>>()?;
        Ok(meta)
    }
}

/// Reads little-endian integers off a record, failing (not panicking) past its end.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], MetaError> {
        let slice = self
            .bytes
            .get(self.at..self.at + N)
            .ok_or(MetaError::Malformed("record ends early"))?;
        self.at += N;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, MetaError> {
        self.take().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, MetaError> {
        self.take().map(u64::from_le_bytes)
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn segments(&mut self) -> Result<Vec<SavedSegment>, MetaError> {
        let count = self.u32()? as usize;
        if self.remaining() < count * SEGMENT_RECORD_LEN {
            return Err(MetaError::Malformed("segment table length"));
        }
        (0..count)
            .map(|_| {
                let [state, bucket] = self.take()?;
                let state =
                    SavedState::from_byte(state).ok_or(MetaError::Malformed("segment state"))?;
                Ok(SavedSegment {
                    state,
                    bucket,
                    write_at: self.u32()?,
                })
            })
            .collect()
    }
}

/// Where the record for memory file `path` lives.
pub fn meta_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".meta");
    PathBuf::from(name)
}

/// Writes `bytes` as the record for `path` atomically: a temporary file, fsync,
/// rename, fsync of the directory. A kill at any instant leaves the old record
/// (or none) or the new one.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let target = meta_path(path);
    let mut temp = target.as_os_str().to_owned();
    temp.push(".tmp");
    let temp = PathBuf::from(temp);
    let mut file = fs::File::create(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&temp, &target)?;
    if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn sample() -> Meta {
        Meta {
            memory_limit: 64 << 20,
            item_size_max: 1 << 20,
            segment_len: 1 << 20,
            items: 12345,
            next_cas: 987_654_321,
            flush_at: 77,
            clock_epoch_unix: 1_700_000_000,
            stopped_unix_nanos: 1_700_000_500_123_456_789,
            segments: vec![
                SavedSegment {
                    state: SavedState::Sealed,
                    bucket: 0,
                    write_at: 1 << 20,
                },
                SavedSegment {
                    state: SavedState::Open,
                    bucket: 5,
                    write_at: 4242,
                },
                SavedSegment {
                    state: SavedState::Warm,
                    bucket: 0,
                    write_at: 0,
                },
            ],
            fifo: vec![0],
        }
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn a_record_round_trips() {
        let meta = sample();
        assert_eq!(Meta::decode(&meta.encode()), Ok(meta));
    }

    #[test]
    fn a_record_cut_short_at_any_byte_is_refused() {
        let bytes = sample().encode();
        for len in 0..bytes.len() {
            assert!(Meta::decode(&bytes[..len]).is_err(), "accepted {len} bytes");
        }
    }

    #[test]
    fn any_flipped_byte_is_refused() {
        let bytes = sample().encode();
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x40;
            assert!(Meta::decode(&bad).is_err(), "accepted a flip at {at}");
        }
    }

    #[test]
    fn another_version_is_named() {
        let mut bytes = sample().encode();
        bytes[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        assert_eq!(
            Meta::decode(&bytes),
            Err(MetaError::Version(FORMAT_VERSION + 1))
        );
    }

    #[test]
    fn a_cut_record_says_so() {
        let bytes = sample().encode();
        for len in [0, 15, 16, 40, bytes.len() - 1] {
            assert_eq!(Meta::decode(&bytes[..len]), Err(MetaError::Short { len }));
        }
    }

    #[test]
    fn an_appended_byte_is_refused() {
        let mut bytes = sample().encode();
        bytes.push(0);
        assert!(Meta::decode(&bytes).is_err());
    }
}
