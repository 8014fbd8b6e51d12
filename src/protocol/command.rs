//! The protocol-neutral command model: every front end (binary, classic text,
//! meta) parses its requests into a [`Command`], which the server executes once
//! against the store, and gets back an [`Outcome`] its own encoder answers.
//! Keys and values borrow from the connection's read buffer (zero-copy).

/// How a storage command treats the item already under its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreMode {
    Set,
    Add,
    Replace,
    Append,
    Prepend,
}

/// Which way an arithmetic command moves the number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArithOp {
    Incr,
    Decr,
}

/// One request, whatever protocol it came in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// Read an item; with `touch`, also set its expiration (GAT).
    Get {
        key: &'a [u8],
        touch: Option<u32>,
    },
    /// Set an item's expiration; answers without the value.
    Touch {
        key: &'a [u8],
        exptime: u32,
    },
    /// SET / ADD / REPLACE / APPEND / PREPEND; a non-zero `cas` makes it a
    /// compare-and-swap (text `cas`, binary's CAS field).
    Store {
        mode: StoreMode,
        key: &'a [u8],
        value: &'a [u8],
        flags: u32,
        exptime: u32,
        cas: u64,
    },
    /// Delete; a non-zero `cas` must match.
    Delete {
        key: &'a [u8],
        cas: u64,
    },
    /// INCR / DECR. `create`: on a miss, store `initial` with `exptime` instead
    /// of answering "not found" (binary always may; text never does).
    Arith {
        key: &'a [u8],
        op: ArithOp,
        delta: u64,
        create: Option<Create>,
        cas: u64,
    },
    /// Invalidate everything now, or everything stored before `delay` seconds.
    Flush {
        delay: u32,
    },
    /// A stats group (empty = the general stats).
    Stats {
        group: &'a [u8],
    },
    Version,
    Verbosity,
    Noop,
    Quit,
}

/// The item an arithmetic miss creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Create {
    pub initial: u64,
    pub exptime: u32,
}

/// An item as an answer shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Found<'s> {
    pub flags: u32,
    pub cas: u64,
    pub value: &'s [u8],
}

/// What executing a command did, borrowing the store until it is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome<'s> {
    /// A read or touch found the item.
    Hit(Found<'s>),
    /// Stored, deleted or otherwise done; the item's new CAS (0 when none).
    Done { cas: u64 },
    /// The new number after INCR / DECR.
    Number { value: u64, cas: u64 },
    /// The key is not there (a miss, or a CAS on a missing key).
    NotFound,
    /// ADD on an existing key, or a CAS mismatch.
    Exists,
    /// APPEND / PREPEND on a missing key, or a result over the size limit.
    NotStored,
    /// The value alone is over the item size limit.
    TooLarge,
    /// INCR / DECR on a value that is not a decimal number.
    NonNumeric,
    /// No room even after eviction.
    OutOfMemory,
}
