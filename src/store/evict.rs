//! Eviction: when memory is full the oldest sealed segment is the victim. Items
//! read since they were written (second chance), or all live items while the
//! cache is mostly dead space, are kept by compacting them to the segment's
//! front; the rest are evicted. The segment then takes new writes after the kept
//! items. Works on `Segments` and `Index`; owns the policy and its counters.

use super::clock::Clock;
use super::index::Index;
use super::item::{idle, Header, ACCESSED, DEAD, FETCHED};
use super::segments::{Kept, Segments};
use super::StoreError;

/// What eviction has done, for `stats`.
#[derive(Clone, Copy, Debug, Default)]
pub struct EvictCounts {
    pub evictions: u64,
    pub evicted_unfetched: u64,
    /// Seconds since the last access of the item evicted last.
    pub evicted_time: u32,
    pub segments_compacted: u64,
    pub items_kept: u64,
    /// Expired items found (and unlinked) while compacting.
    pub reclaimed: u64,
    pub expired_unfetched: u64,
}

pub struct Eviction {
    /// Bytes for items and index together (`-m`).
    memory_limit: usize,
    pub counts: EvictCounts,
}

impl Eviction {
    pub fn new(memory_limit: usize) -> Eviction {
        Eviction {
            memory_limit,
            counts: EvictCounts::default(),
        }
    }

    /// How many segments the limit allows next to the index.
    pub fn segments_allowed(&self, segments: &Segments, index: &Index) -> usize {
        (self.memory_limit.saturating_sub(index.bytes()) / segments.segment_len())
            .min(segments.count())
    }

    /// An open segment with at least `len` bytes free after its write position:
    /// a free one while the limit allows, else the oldest, compacted.
    pub fn take_segment(
        &mut self,
        segments: &mut Segments,
        index: &mut Index,
        clock: &Clock,
        len: usize,
    ) -> Result<u32, StoreError> {
        let allowed = self.segments_allowed(segments, index);
        if let Some(id) = segments.take_spare(allowed) {
            return Ok(id);
        }
        let mut attempts = 0;
        loop {
            let victim = segments.next_victim().ok_or(StoreError::OutOfMemory)?;
            // After a whole pass that kept too much, keep nothing.
            let force = attempts >= segments.committed();
            self.compact(segments, index, clock, victim, force);
            if segments.room(victim) >= len {
                segments.reopen(victim);
                return Ok(victim);
            }
            segments.seal(victim);
            attempts += 1;
        }
    }

    /// Makes sure one more index entry fits without the table growing past the
    /// memory limit; growth briefly holds the old and the new table.
    pub fn reserve_index(
        &mut self,
        segments: &mut Segments,
        index: &mut Index,
        clock: &Clock,
    ) -> Result<(), StoreError> {
        if !index.is_full() {
            return Ok(());
        }
        let needed = index.bytes() * 3;
        while segments.resident() * segments.segment_len() + needed > self.memory_limit {
            if segments.cool_one() {
                continue;
            }
            let victim = segments.next_victim().ok_or(StoreError::OutOfMemory)?;
            self.compact(segments, index, clock, victim, true);
            segments.free_segment(victim);
        }
        index.reserve_one(segments.bytes());
        Ok(())
    }

    /// Unlinks what a victim segment loses, moves what it keeps to its front.
    fn compact(
        &mut self,
        segments: &mut Segments,
        index: &mut Index,
        clock: &Clock,
        id: u32,
        force: bool,
    ) {
        let base = segments.base(id);
        let end = segments.get(id).write_at;
        // Keep every live item while most of the cache is dead space: evicting
        // live data then would only make room that overwrites already made.
        let capacity = self.segments_allowed(segments, index) * segments.segment_len();
        let keep_all = (segments.live_bytes() as usize) * 2 < capacity;
        let mut kept = Kept::default();
        let mut read = 0usize;
        while read < end {
            let header = segments.header(base + read);
            if header.bits & DEAD == 0 {
                if clock.is_expired(header.expiry) {
                    self.counts.reclaimed += 1;
                    if header.bits & FETCHED == 0 {
                        self.counts.expired_unfetched += 1;
                    }
                    let hash = index.hash(segments.key(base + read, &header));
                    unlink(segments, index, hash, base + read, &header);
                } else if !force && (keep_all || header.bits & ACCESSED != 0) {
                    keep(segments, index, base, read, &header, &mut kept);
                } else {
                    self.counts.evictions += 1;
                    self.counts.evicted_time = idle(header.access, clock.now());
                    if header.bits & FETCHED == 0 {
                        self.counts.evicted_unfetched += 1;
                    }
                    let hash = index.hash(segments.key(base + read, &header));
                    unlink(segments, index, hash, base + read, &header);
                }
            }
            read = segments.next_at(read, &header);
        }
        self.counts.segments_compacted += 1;
        self.counts.items_kept += u64::from(kept.items);
        segments.set_compacted(id, kept);
    }
}

/// Moves a kept item from segment offset `read` to `kept.write_at`, clearing its
/// second chance.
fn keep(
    segments: &mut Segments,
    index: &mut Index,
    base: usize,
    read: usize,
    header: &Header,
    kept: &mut Kept,
) {
    let len = header.total_len();
    let (from, to) = (base + read, base + kept.write_at);
    if from != to {
        segments.bytes_mut().copy_within(from..from + len, to);
        let hash = index.hash(segments.key(to, header));
        index.relocate(hash, from, to);
    }
    segments.bytes_mut()[to] &= !ACCESSED;
    kept.items += 1;
    kept.bytes += len;
    kept.immortal |= header.expiry == 0;
    kept.max_expiry = kept.max_expiry.max(header.expiry);
    kept.write_at = segments.aligned(kept.write_at + len);
}

/// Removes the item at `addr` (its key hashing to `hash`) from the index and
/// marks its space dead.
pub fn unlink(segments: &mut Segments, index: &mut Index, hash: u64, addr: usize, header: &Header) {
    index.remove(hash, addr);
    segments.mark_dead(addr, header);
}
