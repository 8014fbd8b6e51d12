//! The memcached binary protocol as bytes <-> values: no sockets, no cache.

pub mod header;
pub mod request;
pub mod response;

pub use header::{Opcode, Status, HEADER_LEN, MAX_KEY_LEN};
pub use request::{parse, Extras, Limits, ParseError, Request};
