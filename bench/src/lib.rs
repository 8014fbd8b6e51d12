//! pincache-bench as a library: the ketama ring, so the tests can ask it where a key
//! belongs without spawning the binary, and the /proc readings the storm test shares.
//! The load generator itself is `src/main.rs`.

pub mod procfs;
pub mod ring;
