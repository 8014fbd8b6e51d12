//! The memcached binary protocol: the 24-byte header and its wire enums, the
//! request parser (which yields [`Command`](super::Command)s) and the answer
//! encoder.

pub mod encoder;
pub mod header;
pub mod parser;

pub use header::{Opcode, Status, HEADER_LEN, MAX_KEY_LEN};
pub use parser::{parse, Extras, Limits, ParseError, Request};
