//! The bench's own binary-protocol client codec: just what it sends and checks. The
//! opcodes, statuses and header layout are pincache's (`pincache::protocol`), so they
//! are written down once; the encoding and checking here are an independent client.

use pincache::protocol::{be16, be32, Opcode, Status, HEADER_LEN, REQUEST_MAGIC};

pub use pincache::protocol::RESPONSE_MAGIC;

pub const OP_GET: u8 = Opcode::Get as u8;
pub const OP_SET: u8 = Opcode::Set as u8;
pub const OP_NOOP: u8 = Opcode::Noop as u8;
pub const OP_GETKQ: u8 = Opcode::GetKQ as u8;
pub const OP_STAT: u8 = Opcode::Stat as u8;
pub const STATUS_OK: u16 = Status::NoError as u16;
pub const STATUS_KEY_ENOENT: u16 = Status::KeyNotFound as u16;
pub const HEADER: usize = HEADER_LEN;
/// Flags stored with every value, checked on every hit: catches a server that loses them.
pub const ITEM_FLAGS: u32 = 0x7e57_f1a6;

/// Appends a request header.
pub fn put_header(out: &mut Vec<u8>, op: u8, key_len: usize, extras: u8, body: usize, opaque: u32) {
    out.extend_from_slice(&[
        REQUEST_MAGIC,
        op,
        (key_len >> 8) as u8,
        key_len as u8,
        extras,
        0,
        0,
        0,
    ]);
    out.extend_from_slice(&(body as u32).to_be_bytes());
    out.extend_from_slice(&opaque.to_be_bytes());
    out.extend_from_slice(&[0; 8]);
}

/// The 10 zero-padded digits of a key id.
pub fn key_digits(id: u32) -> [u8; 10] {
    let mut digits = [b'0'; 10];
    let mut v = id;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
    digits
}

/// Appends `prefix` and the id as 10 zero-padded digits (`key:%010d` by default).
pub fn put_key(out: &mut Vec<u8>, prefix: &[u8], id: u32) {
    out.extend_from_slice(prefix);
    out.extend_from_slice(&key_digits(id));
}

/// True when `key` is `prefix` followed by the id's digits (no allocation).
pub fn key_is(key: &[u8], prefix: &[u8], id: u32) -> bool {
    key.len() == prefix.len() + 10
        && key.starts_with(prefix)
        && key[prefix.len()..] == key_digits(id)
}

/// The key of an id, allocated: for messages and the ring, not the hot path.
pub fn key_string(prefix: &str, id: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + 10);
    put_key(&mut k, prefix.as_bytes(), id);
    k
}

/// A response header's fields.
pub struct Header {
    pub magic: u8,
    pub op: u8,
    pub key_len: usize,
    pub extras: usize,
    pub status: u16,
    pub body: usize,
    pub opaque: u32,
}

/// Reads a header from at least `HEADER` bytes.
pub fn parse_header(b: &[u8]) -> Header {
    Header {
        magic: b[0],
        op: b[1],
        key_len: be16(b, 2) as usize,
        extras: b[4] as usize,
        status: be16(b, 6),
        body: be32(b, 8) as usize,
        opaque: be32(b, 12),
    }
}

/// Appends a SET of key `id` up to its value (flags `ITEM_FLAGS`, no expiry); the
/// caller appends the `vlen` value bytes.
pub fn put_set(out: &mut Vec<u8>, prefix: &[u8], id: u32, vlen: usize, opaque: u32) {
    let klen = prefix.len() + 10;
    put_header(out, OP_SET, klen, 8, 8 + klen + vlen, opaque);
    out.extend_from_slice(&ITEM_FLAGS.to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
    put_key(out, prefix, id);
}

/// Appends a key-only request (GET, GETKQ).
pub fn put_get(out: &mut Vec<u8>, op: u8, prefix: &[u8], id: u32, opaque: u32) {
    let klen = prefix.len() + 10;
    put_header(out, op, klen, 0, klen, opaque);
    put_key(out, prefix, id);
}
