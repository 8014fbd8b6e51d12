//! A large SET's value read straight into its item. Once a storage command's
//! header (binary header, extras and key; a text command line) is in but its
//! value is not, the item is reserved in the store and the rest of the value
//! goes into it as it arrives: no copy into a frame buffer first. When the value
//! (and, for text, its "\r\n") is in, the item is linked as the command would
//! have stored it, and answered as it would have been.
//!
//! ```text
//!  socket: | set line / binary head | value ..................... | \r\n | next ...
//!          parsed as today          reserved item's value bytes    trailer  parsed as today
//! ```
//! No socket here: the connection reads into `room`; a fuzz target drives the
//! same calls with a stand-in.

use super::dispatch::{stored, whole_value_mode, Context};
use super::meta::{invalidating, MetaSet};
use crate::protocol::binary::encoder::{status_of, Reply};
use crate::protocol::text::encoder;
use crate::protocol::{Command, Outcome, StoreMode, MAX_KEY_LEN};
use crate::store::{Mode, Reservation, Store};

/// Values of at least this many bytes are read in place when they are not all
/// in after the read that brought their header. Chosen by measurement
/// (docs/performance.md): a value that spans reads is otherwise copied twice
/// (read buffer, connection buffer, item), and reading it in place cost fewer
/// instructions at every size tried (500 B to 16,000 B pipelined); below 1 KiB
/// the gain was within the run-to-run spread, and each such value would pin a
/// segment while it trickles in.
pub const IN_PLACE_VALUE_BYTES: usize = 1024;

/// How the answer to a value read in place is written.
#[derive(Clone, Copy, Debug)]
pub enum Answer {
    /// A binary SET/ADD/REPLACE; `quiet` drops a success.
    Binary { reply: Reply, quiet: bool },
    /// A text `set`/`add`/`replace`/`cas`, with its data block's "\r\n" to check.
    Text { noreply: bool },
    /// A meta `ms` (set, add or replace mode), its data block's "\r\n" too.
    Meta(MetaSet),
}

/// The command whose value is arriving: what to store, and how to answer.
#[derive(Clone, Copy, Debug)]
pub struct Pending {
    pub mode: StoreMode,
    pub flags: u32,
    pub exptime: u32,
    pub cas: u64,
    pub answer: Answer,
}

/// A value being read into its reserved item.
#[derive(Debug)]
pub struct Arrival {
    reservation: Reservation,
    pending: Pending,
    /// Value bytes in so far.
    filled: usize,
    /// Bytes of the text trailer still expected, and whether those seen were "\r\n".
    trailer_left: usize,
    trailer_ok: bool,
}

impl Arrival {
    /// Reserves the item for `pending` under `key`, if the store agrees; the
    /// caller otherwise buffers the request as before. Only SET, ADD, REPLACE
    /// and CAS (and `ms` in those modes) are read in place (APPEND/PREPEND
    /// need the old value).
    pub fn begin(
        store: &mut Store,
        key: &[u8],
        value_len: usize,
        pending: Pending,
    ) -> Option<Arrival> {
        if !matches!(
            pending.mode,
            StoreMode::Set | StoreMode::Add | StoreMode::Replace
        ) {
            return None;
        }
        let reservation = store.reserve(key, value_len, pending.flags, pending.exptime)?;
        let trailer_left = match pending.answer {
            Answer::Binary { .. } => 0,
            Answer::Text { .. } | Answer::Meta(_) => 2,
        };
        Some(Arrival {
            reservation,
            pending,
            filled: 0,
            trailer_left,
            trailer_ok: true,
        })
    }

    /// The value's length.
    pub fn value_len(&self) -> usize {
        self.reservation.value_len()
    }

    /// Value bytes still to come.
    pub fn value_left(&self) -> usize {
        self.reservation.value_len() - self.filled
    }

    /// Where the rest of the value goes: read into it, then `advance`.
    pub fn room<'s>(&self, store: &'s mut Store) -> &'s mut [u8] {
        &mut store.value_mut(&self.reservation)[self.filled..]
    }

    /// Counts `n` bytes written into `room`.
    pub fn advance(&mut self, n: usize) {
        self.filled = (self.filled + n).min(self.reservation.value_len());
    }

    /// Takes what belongs to this request from the front of `data` (value
    /// bytes, copied into the item, then the trailer); returns how many.
    pub fn feed(&mut self, data: &[u8], store: &mut Store) -> usize {
        let n = self.value_left().min(data.len());
        self.room(store)[..n].copy_from_slice(&data[..n]);
        self.advance(n);
        let t = self.trailer_left.min(data.len() - n);
        for (i, &byte) in data[n..n + t].iter().enumerate() {
            let want = b"\r\n"[2 - self.trailer_left + i];
            self.trailer_ok &= byte == want;
        }
        self.trailer_left -= t;
        n + t
    }

    /// Whether the whole request is in.
    pub fn is_complete(&self) -> bool {
        self.value_left() == 0 && self.trailer_left == 0
    }

    /// The client went away: the reserved bytes become dead space.
    pub fn abandon(self, store: &mut Store) {
        store.abandon(self.reservation);
    }

    /// Stores the completed value and writes the answer, as the command would
    /// have been answered had it been buffered whole.
    pub fn finish(self, ctx: &mut Context<'_>, out: &mut Vec<u8>) {
        let Pending {
            mode,
            flags,
            exptime,
            cas,
            answer,
        } = self.pending;
        if !self.trailer_ok {
            ctx.store.abandon(self.reservation);
            // `q` does not hide an error; `noreply` does.
            if !matches!(answer, Answer::Text { noreply: true }) {
                encoder::line(out, "CLIENT_ERROR bad data chunk");
            }
            return;
        }
        // The key, for the stats and an `ms` answer's `k`.
        let mut key_buf = [0u8; MAX_KEY_LEN];
        let key = ctx.store.reserved_key(&self.reservation);
        let key_len = key.len().min(MAX_KEY_LEN);
        key_buf[..key_len].copy_from_slice(&key[..key_len]);
        let key = &key_buf[..key_len];
        ctx.stats.count_set(key, true);
        // `begin` took only set, add and replace.
        let store_mode = whole_value_mode(mode).unwrap_or(Mode::Set);
        let invalidating =
            invalidating(matches!(answer, Answer::Meta(m) if m.invalidate), mode, cas);
        let result = ctx
            .store
            .complete(self.reservation, store_mode, cas, invalidating);
        let outcome = stored(result, cas != 0, ctx.stats);
        match answer {
            Answer::Binary { reply, quiet } => match outcome {
                Outcome::Done { cas } if !quiet => reply.ok(out, cas, &[]),
                Outcome::Done { .. } => {}
                _ => reply.error(out, status_of(&outcome)),
            },
            Answer::Text { noreply: true } => {}
            Answer::Text { noreply: false } => {
                let command = Command::Store {
                    mode,
                    key: &[],
                    value: &[],
                    flags,
                    exptime,
                    cas,
                };
                encoder::outcome(out, &command, &outcome);
            }
            Answer::Meta(set) => set.answer(outcome, mode, cas, key, out),
        }
    }
}
