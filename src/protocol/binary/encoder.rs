//! Encode binary answers straight into a connection's output buffer. Nothing here
//! allocates beyond the buffer's own growth, which is reused between batches.
//!
//! A [`Reply`] is what every answer to one request echoes (opcode and opaque);
//! its methods are the answers: `ok`, `error`, `packet`, and `head` for a hit
//! whose value the caller writes itself.

use super::header::{Status, HEADER_LEN, RESPONSE_MAGIC};
use crate::protocol::Outcome;

/// The fields of a response header, named.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseHeader {
    pub opcode: u8,
    pub status: Status,
    pub opaque: u32,
    pub cas: u64,
    pub extras_len: u8,
    pub key_len: u16,
    /// Extras, key and value together.
    pub body_len: u32,
}

impl ResponseHeader {
    /// Appends the 24 header bytes.
    #[inline]
    pub fn write(&self, out: &mut Vec<u8>) {
        let mut header = [0u8; HEADER_LEN];
        header[0] = RESPONSE_MAGIC;
        header[1] = self.opcode;
        header[2..4].copy_from_slice(&self.key_len.to_be_bytes());
        header[4] = self.extras_len;
        header[6..8].copy_from_slice(&(self.status as u16).to_be_bytes());
        header[8..12].copy_from_slice(&self.body_len.to_be_bytes());
        header[12..16].copy_from_slice(&self.opaque.to_be_bytes());
        header[16..24].copy_from_slice(&self.cas.to_be_bytes());
        out.extend_from_slice(&header);
    }
}

/// What the answers to one request echo: its opcode byte (quiet ones included)
/// and its opaque.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply {
    pub opcode: u8,
    pub opaque: u32,
}

impl Reply {
    /// Appends a header for a body of extras, key and a value of `value_len`
    /// bytes the caller appends after the extras and key.
    #[inline]
    pub fn head(
        self,
        out: &mut Vec<u8>,
        status: Status,
        cas: u64,
        extras: &[u8],
        key: &[u8],
        value_len: usize,
    ) {
        // Lengths come from our own store and protocol limits: extras <= 20
        // bytes, keys <= 250 bytes, values <= the item size limit (< 4 GiB).
        ResponseHeader {
            opcode: self.opcode,
            status,
            opaque: self.opaque,
            cas,
            extras_len: extras.len() as u8,
            key_len: key.len() as u16,
            body_len: (extras.len() + key.len() + value_len) as u32,
        }
        .write(out);
        out.extend_from_slice(extras);
        out.extend_from_slice(key);
    }

    /// Appends a whole packet: header, extras, key and value.
    #[inline]
    pub fn packet(
        self,
        out: &mut Vec<u8>,
        status: Status,
        cas: u64,
        extras: &[u8],
        key: &[u8],
        value: &[u8],
    ) {
        self.head(out, status, cas, extras, key, value.len());
        out.extend_from_slice(value);
    }

    /// A success with no extras or key.
    #[inline]
    pub fn ok(self, out: &mut Vec<u8>, cas: u64, value: &[u8]) {
        self.packet(out, Status::NoError, cas, &[], &[], value);
    }

    /// An error answer with memcached's text for `status` as its body.
    #[inline]
    pub fn error(self, out: &mut Vec<u8>, status: Status) {
        self.packet(out, status, 0, &[], &[], status.text());
    }
}

/// The status a command's outcome answers with.
pub fn status_of(outcome: &Outcome<'_>) -> Status {
    match outcome {
        Outcome::Hit(_) | Outcome::Done { .. } | Outcome::Number { .. } => Status::NoError,
        Outcome::NotFound => Status::KeyNotFound,
        Outcome::Exists => Status::KeyExists,
        Outcome::NotStored => Status::ItemNotStored,
        Outcome::TooLarge => Status::ValueTooLarge,
        Outcome::NonNumeric => Status::NonNumeric,
        Outcome::OutOfMemory => Status::OutOfMemory,
    }
}

/// Appends an error answer with memcached's text for `status` as its body.
#[inline]
pub fn write_error(out: &mut Vec<u8>, opcode: u8, opaque: u32, status: Status) {
    Reply { opcode, opaque }.error(out, status);
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn error_carries_memcached_text() {
        let mut out = Vec::new();
        write_error(&mut out, 0x00, 0x01020304, Status::KeyNotFound);
        assert_eq!(out.len(), 24 + 9);
        assert_eq!(out[0], 0x81);
        assert_eq!(&out[6..8], &[0, 1]);
        assert_eq!(&out[8..12], &9u32.to_be_bytes());
        assert_eq!(&out[12..16], &[1, 2, 3, 4]);
        assert_eq!(&out[24..], b"Not found");
    }

    #[test]
    fn packet_lays_out_extras_key_value() {
        let mut out = Vec::new();
        let reply = Reply {
            opcode: 0x0c,
            opaque: 9,
        };
        reply.packet(&mut out, Status::NoError, 42, &[0, 0, 0, 5], b"k", b"v");
        assert_eq!(out[1], 0x0c);
        assert_eq!(out[4], 4);
        assert_eq!(&out[2..4], &[0, 1]);
        assert_eq!(&out[8..12], &6u32.to_be_bytes());
        assert_eq!(&out[16..24], &42u64.to_be_bytes());
        assert_eq!(&out[24..], &[0, 0, 0, 5, b'k', b'v']);
    }

    #[test]
    fn head_counts_a_value_the_caller_writes() {
        let mut out = Vec::new();
        let reply = Reply {
            opcode: 0x00,
            opaque: 1,
        };
        reply.head(&mut out, Status::NoError, 1, &[0; 4], &[], 100);
        assert_eq!(out.len(), 28);
        assert_eq!(&out[8..12], &104u32.to_be_bytes());
    }
}
