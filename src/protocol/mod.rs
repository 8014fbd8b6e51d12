//! The memcached protocols as bytes <-> values: no sockets, no cache.
//!
//! * [`command`]: the protocol-neutral model every front end parses into.
//! * [`binary`]: the 24-byte-header binary protocol.
//! * [`text`]: the line protocol, classic commands and meta commands.

pub mod binary;
pub mod command;
pub mod text;

// The binary modules under their old paths, for the tests, fuzz targets and bench.
pub use binary::header::{be16, be32, REQUEST_MAGIC, RESPONSE_MAGIC};
pub use binary::{encoder as response, header, parser as request};
pub use binary::{
    parse, Extras, Limits, Opcode, ParseError, Request, Status, HEADER_LEN, MAX_KEY_LEN,
};
pub use command::{ArithOp, Command, Create, Found, Outcome, StoreMode};

/// The first byte of a binary request; a connection whose first byte is anything
/// else speaks text (memcached decides the same way).
pub const BINARY_MAGIC: u8 = header::REQUEST_MAGIC;
