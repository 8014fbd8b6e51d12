//! The text protocol: one line parser for the classic commands (`get`, `set`,
//! ...) and the meta commands (`mg`, `ms`, ...), and the answer encoder.

pub mod encoder;
pub mod meta;
pub mod parser;

pub use parser::{parse_line, split_line, Incomplete, Line};
