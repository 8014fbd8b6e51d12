//! The 24-byte packet header of the memcached binary protocol: magic, opcodes and
//! status codes as wire enums, and big-endian field access.
//!
//! ```text
//!  byte    0          1          2          3
//!       +----------+----------+----------+----------+
//!   0   | magic    | opcode   |     key length      |
//!       +----------+----------+----------+----------+
//!   4   | extras   | data     | vbucket (request) / |
//!       | length   | type     | status (response)   |
//!       +----------+----------+----------+----------+
//!   8   |          total body length                |
//!       +----------+----------+----------+----------+
//!  12   |          opaque (echoed untouched)        |
//!       +----------+----------+----------+----------+
//!  16   |          CAS (8 bytes)                    |
//!       +                                           +
//!  20   |                                           |
//!       +----------+----------+----------+----------+
//!  body = extras, key, value, in that order
//! ```

/// Every packet starts with this many header bytes.
pub const HEADER_LEN: usize = 24;
/// Magic byte of a request (client to server).
pub const REQUEST_MAGIC: u8 = 0x80;
/// Magic byte of a response (server to client).
pub const RESPONSE_MAGIC: u8 = 0x81;
/// The protocol's key length limit (memcached's KEY_MAX_LENGTH).
pub const MAX_KEY_LEN: usize = 250;

/// Request opcodes memcached 1.6 knows, with their wire values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Opcode {
    Get = 0x00,
    Set = 0x01,
    Add = 0x02,
    Replace = 0x03,
    Delete = 0x04,
    Increment = 0x05,
    Decrement = 0x06,
    Quit = 0x07,
    Flush = 0x08,
    GetQ = 0x09,
    Noop = 0x0a,
    Version = 0x0b,
    GetK = 0x0c,
    GetKQ = 0x0d,
    Append = 0x0e,
    Prepend = 0x0f,
    Stat = 0x10,
    SetQ = 0x11,
    AddQ = 0x12,
    ReplaceQ = 0x13,
    DeleteQ = 0x14,
    IncrementQ = 0x15,
    DecrementQ = 0x16,
    QuitQ = 0x17,
    FlushQ = 0x18,
    AppendQ = 0x19,
    PrependQ = 0x1a,
    Verbosity = 0x1b,
    Touch = 0x1c,
    Gat = 0x1d,
    GatQ = 0x1e,
    SaslListMechs = 0x20,
    SaslAuth = 0x21,
    SaslStep = 0x22,
    GatK = 0x23,
    GatKQ = 0x24,
}

impl Opcode {
    /// The opcode for a wire byte; `None` for a byte memcached does not serve.
    pub const fn from_u8(byte: u8) -> Option<Opcode> {
        use Opcode::*;
        Some(match byte {
            0x00 => Get,
            0x01 => Set,
            0x02 => Add,
            0x03 => Replace,
            0x04 => Delete,
            0x05 => Increment,
            0x06 => Decrement,
            0x07 => Quit,
            0x08 => Flush,
            0x09 => GetQ,
            0x0a => Noop,
            0x0b => Version,
            0x0c => GetK,
            0x0d => GetKQ,
            0x0e => Append,
            0x0f => Prepend,
            0x10 => Stat,
            0x11 => SetQ,
            0x12 => AddQ,
            0x13 => ReplaceQ,
            0x14 => DeleteQ,
            0x15 => IncrementQ,
            0x16 => DecrementQ,
            0x17 => QuitQ,
            0x18 => FlushQ,
            0x19 => AppendQ,
            0x1a => PrependQ,
            0x1b => Verbosity,
            0x1c => Touch,
            0x1d => Gat,
            0x1e => GatQ,
            0x20 => SaslListMechs,
            0x21 => SaslAuth,
            0x22 => SaslStep,
            0x23 => GatK,
            0x24 => GatKQ,
            _ => return None,
        })
    }

    /// The non-quiet opcode this one is a variant of, and whether it is quiet.
    /// Quiet suppression is applied after execution, so dispatch only sees bases.
    pub const fn base(self) -> (Opcode, bool) {
        use Opcode::*;
        match self {
            GetQ => (Get, true),
            GetKQ => (GetK, true),
            SetQ => (Set, true),
            AddQ => (Add, true),
            ReplaceQ => (Replace, true),
            DeleteQ => (Delete, true),
            IncrementQ => (Increment, true),
            DecrementQ => (Decrement, true),
            QuitQ => (Quit, true),
            FlushQ => (Flush, true),
            AppendQ => (Append, true),
            PrependQ => (Prepend, true),
            GatQ => (Gat, true),
            GatKQ => (GatK, true),
            other => (other, false),
        }
    }
}

/// Response status codes, with memcached's wire values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Status {
    NoError = 0x0000,
    KeyNotFound = 0x0001,
    KeyExists = 0x0002,
    ValueTooLarge = 0x0003,
    InvalidArguments = 0x0004,
    ItemNotStored = 0x0005,
    NonNumeric = 0x0006,
    AuthError = 0x0020,
    AuthContinue = 0x0021,
    UnknownCommand = 0x0081,
    OutOfMemory = 0x0082,
}

impl Status {
    /// The text memcached puts in the body of an error answer.
    pub fn text(self) -> &'static [u8] {
        match self {
            Status::NoError => b"",
            Status::KeyNotFound => b"Not found",
            Status::KeyExists => b"Data exists for key.",
            Status::ValueTooLarge => b"Too large.",
            Status::InvalidArguments => b"Invalid arguments",
            Status::ItemNotStored => b"Not stored.",
            Status::NonNumeric => b"Non-numeric server-side value for incr or decr",
            Status::AuthError => b"Auth failure.",
            Status::AuthContinue => b"",
            Status::UnknownCommand => b"Unknown command",
            Status::OutOfMemory => b"Out of memory",
        }
    }
}

/// Reads a big-endian u16 at `at`; the caller guarantees the bounds.
#[inline]
pub fn be16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

/// Reads a big-endian u32 at `at`; the caller guarantees the bounds.
#[inline]
pub fn be32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Reads a big-endian u64 at `at`; the caller guarantees the bounds.
#[inline]
pub fn be64(bytes: &[u8], at: usize) -> u64 {
    (u64::from(be32(bytes, at)) << 32) | u64::from(be32(bytes, at + 4))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn every_opcode_byte_round_trips() {
        for byte in 0..=255u8 {
            if let Some(op) = Opcode::from_u8(byte) {
                assert_eq!(op as u8, byte);
            }
        }
        assert_eq!(Opcode::from_u8(0x1f), None);
        assert_eq!(Opcode::from_u8(0x25), None);
    }

    #[test]
    fn gatk_and_gatkq_follow_the_sasl_opcodes() {
        assert_eq!(Opcode::from_u8(0x23), Some(Opcode::GatK));
        assert_eq!(Opcode::from_u8(0x24), Some(Opcode::GatKQ));
        assert_eq!(Opcode::GatKQ.base(), (Opcode::GatK, true));
    }

    #[test]
    fn big_endian_fields() {
        let bytes = [1, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(be16(&bytes, 0), 0x0102);
        assert_eq!(be32(&bytes, 0), 0x01020304);
        assert_eq!(be64(&bytes, 0), 0x0102030405060708);
    }
}
