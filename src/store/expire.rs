//! Expiry: TTL classes (segments group items by log2 of their time-to-live, so
//! a segment whose latest expiry has passed is reclaimed whole), the sweep that
//! unlinks such a segment a slice per loop turn, and the delayed flush. Works on
//! `Segments` and `Index`; owns the sweep cursor, the pending flush and counters.

use super::evict::unlink;
use super::index::Index;
use super::item::{Header, DEAD, FETCHED};
use super::segments::Segments;

/// The TTL class of an item expiring at `expiry` (0 = never) at time `now`.
pub fn ttl_bucket(expiry: u32, now: u32) -> usize {
    if expiry == 0 {
        0
    } else {
        let ttl = expiry.saturating_sub(now).max(1);
        (32 - ttl.leading_zeros()) as usize
    }
}

/// A segment being swept: its id, the epoch it was taken in, the next offset.
#[derive(Clone, Copy, Debug)]
struct Sweep {
    id: u32,
    epoch: u32,
    at: usize,
}

/// What expiry has done, for `stats`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ExpireCounts {
    pub reclaimed: u64,
    pub expired_unfetched: u64,
    pub segments_expired: u64,
}

#[derive(Default)]
pub struct Expiry {
    /// A delayed flush: everything stored before this time goes at this time.
    flush_at: Option<u32>,
    sweep: Option<Sweep>,
    last_scan: u32,
    pub counts: ExpireCounts,
}

impl Expiry {
    /// Schedules a flush of everything stored before relative time `at`, at `at`.
    pub fn schedule_flush(&mut self, at: u32) {
        self.flush_at = Some(at);
    }

    /// The pending delayed flush, if any.
    pub fn pending_flush(&self) -> Option<u32> {
        self.flush_at
    }

    /// Everything goes now.
    pub fn flush_now(&mut self, segments: &mut Segments, index: &mut Index) {
        index.clear();
        segments.free_all();
        self.sweep = None;
    }

    /// Unlinks an item found expired, counting it.
    pub fn unlink_expired(
        &mut self,
        segments: &mut Segments,
        index: &mut Index,
        hash: u64,
        addr: usize,
        header: &Header,
    ) {
        self.counts.reclaimed += 1;
        if header.bits & FETCHED == 0 {
            self.counts.expired_unfetched += 1;
        }
        unlink(segments, index, hash, addr, header);
    }

    /// Whether `run` has anything to do at `now`: a delayed flush that is due, a
    /// sweep under way, or a new second to look for wholly expired segments in.
    pub fn has_due_work(&self, now: u32) -> bool {
        self.flush_at.is_some_and(|at| at <= now) || self.sweep.is_some() || self.last_scan != now
    }

    /// Whether a sweep is under way.
    pub fn is_sweeping(&self) -> bool {
        self.sweep.is_some()
    }

    /// Does up to `max_items` items of due work at `now`; returns how many items
    /// it looked at.
    pub fn run(
        &mut self,
        segments: &mut Segments,
        index: &mut Index,
        now: u32,
        max_items: usize,
    ) -> usize {
        if self.flush_at.is_some_and(|at| at <= now) {
            self.flush_at = None;
            self.flush_now(segments, index);
        }
        if self.sweep.is_none() && self.last_scan != now {
            self.last_scan = now;
            self.start_sweep(segments, now);
        }
        let Some(mut sweep) = self.sweep else {
            return 0;
        };
        if segments.get(sweep.id).epoch != sweep.epoch {
            self.sweep = None;
            return 0;
        }
        let base = segments.base(sweep.id);
        let end = segments.get(sweep.id).write_at;
        let mut done = 0;
        while sweep.at < end && done < max_items {
            let header = segments.header(base + sweep.at);
            if header.bits & DEAD == 0 {
                let hash = index.hash(segments.key(base + sweep.at, &header));
                self.unlink_expired(segments, index, hash, base + sweep.at, &header);
            }
            sweep.at = segments.next_at(sweep.at, &header);
            done += 1;
        }
        if sweep.at >= end {
            self.sweep = None;
            segments.free_segment(sweep.id);
            self.counts.segments_expired += 1;
            // Another wholly expired segment may be waiting.
            self.start_sweep(segments, now);
        } else {
            self.sweep = Some(sweep);
        }
        done
    }

    /// Picks a wholly expired segment to unlink, if there is one.
    fn start_sweep(&mut self, segments: &mut Segments, now: u32) {
        if let Some(id) = segments.wholly_expired(now) {
            let epoch = segments.start_sweeping(id);
            self.sweep = Some(Sweep { id, epoch, at: 0 });
        }
    }
}
