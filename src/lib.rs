//! pincache: a memcached-compatible cache server for the binary protocol. One
//! process is one thread: a single mio loop owns every connection and the cache.
//!
//! * [`protocol`]: the binary protocol as bytes <-> values (no sockets, no cache).
//! * [`store`]: the cache (no sockets, no protocol bytes).
//! * [`server`]: the event loop, the only place the two meet.

pub mod config;
pub mod protocol;
pub mod server;
pub mod store;
