//! Helpers shared by the integration tests, one file per subject:
//!
//! - `server`: start pincache or memcached on a fresh port; inspect the process
//! - `peers`: find the other tools the tests use; fail (or, opted out, skip) without them
//! - `binary`: the binary protocol's requests and answers, with `pincache::protocol`'s
//!   opcodes, statuses and header layout
//! - `client`: a small blocking client over that codec
//! - `text`: the text and meta protocols: memcached speaking text, a text client
//! - `rng`: the differential tests' seeded PRNG
//!
//! Every test binary compiles these files on its own, and not every binary uses every
//! helper, hence the `dead_code` and `unused_imports` allowances.
#![allow(dead_code, unused_imports)]

pub mod binary;
pub mod client;
pub mod peers;
pub mod rng;
pub mod server;
pub mod text;

pub use binary::*;
pub use client::*;
pub use peers::*;
pub use server::*;
