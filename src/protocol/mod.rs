//! The memcached binary protocol as bytes <-> values: no sockets, no cache.

pub mod header;
pub mod request;
pub mod response;

pub use header::{
    be16, be32, Opcode, Status, HEADER_LEN, MAX_KEY_LEN, REQUEST_MAGIC, RESPONSE_MAGIC,
};
pub use request::{parse, Extras, Limits, ParseError, Request};
