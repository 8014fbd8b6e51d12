//! pincache: a memcached-compatible cache server for the binary, text and meta
//! protocols. One
//! process is one thread: a single mio loop owns every connection and the cache.
//!
//! * [`protocol`]: the three protocols as bytes <-> commands (no sockets, no cache).
//! * [`store`]: the cache (no sockets, no protocol bytes).
//! * [`server`]: the event loop, the only place the two meet.
//! * [`decimal`]: decimal formatting both of them use.

pub mod config;
pub mod decimal;
pub mod protocol;
pub mod server;
pub mod store;
