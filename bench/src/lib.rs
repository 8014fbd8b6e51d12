//! pincache-bench as a library: the ketama ring, so the tests can ask it where a key
//! belongs without spawning the binary. The load generator itself is `src/main.rs`.

pub mod ring;
