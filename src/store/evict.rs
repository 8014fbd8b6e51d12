//! Eviction: when memory is full the oldest sealed segment is the victim. Items
//! read since they were written (second chance), or all live items while the
//! cache is mostly dead space, are kept by compacting them to the segment's
//! front; the rest are evicted. The segment then takes new writes after the kept
//! items. A victim that would keep so much that compacting it frees less than a
//! quarter of it is kept whole instead, moving nothing (its second chances used
//! up); after a few of those the next victim is emptied, so the cost of one
//! allocation stays bounded. Works on `Segments` and `Index`; owns the policy
//! and its counters.

use super::clock::Clock;
use super::index::Index;
use super::item::{idle, read_access, Header, ACCESSED, DEAD, FETCHED};
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
    /// Bytes of kept items moved to a victim's front.
    pub bytes_moved: u64,
    /// Victims kept whole because compacting them would have freed too little.
    pub segments_passed_over: u64,
}

/// A victim is compacted only if that frees at least 1/4 of a segment (or the
/// item asked for, if larger): compaction then moves at most 3 bytes for every
/// byte it frees.
const MIN_FREED_DIVISOR: usize = 4;
/// Victims kept whole by one `take_segment` for their second chances before the
/// next is emptied outright (this bounds the walk when nearly everything is read
/// between two turns).
const MAX_PASSED_OVER: usize = 8;

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
    /// a free one while the limit allows, else the oldest, compacted. At most one
    /// victim is compacted per call, and only when that frees at least a quarter
    /// of it: one call moves at most 3/4 of a segment, at most 3 bytes per byte
    /// it makes room for. Victims that would free less are kept whole (walked,
    /// not moved): while the cache is full of live items at most
    /// `MAX_PASSED_OVER` of them before the next is emptied; while it is mostly
    /// dead space, until one with room comes (more than half the segments have
    /// more than half their bytes dead, and each passed over goes to the back).
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
        let min_freed = len.max(segments.segment_len() / MIN_FREED_DIVISOR);
        let mut passed_over = 0;
        loop {
            let victim = segments.next_victim().ok_or(StoreError::OutOfMemory)?;
            let rule = match self.keep_rule(segments, index) {
                // A whole pass kept too much: keep nothing.
                _ if passed_over >= segments.committed() => Keep::Nothing,
                Keep::Accessed if passed_over >= MAX_PASSED_OVER => Keep::Nothing,
                rule => rule,
            };
            if rule != Keep::Nothing && planned_room(segments, clock, victim, rule) < min_freed {
                // Compacting would move much to free little: keep the segment
                // whole for another round instead, its second chances used up.
                self.pass_over(segments, index, clock, victim);
                segments.seal(victim);
                passed_over += 1;
                continue;
            }
            self.compact(segments, index, clock, victim, rule);
            if segments.room(victim) >= len {
                segments.reopen(victim);
                return Ok(victim);
            }
            // Only if the plan and the compaction disagreed: empty the next one.
            segments.seal(victim);
            passed_over = segments.committed();
        }
    }

    /// What a victim keeps now: every live item while most of the cache is dead
    /// space (evicting live data then would only make room that overwrites
    /// already made), else the items read since they were written.
    fn keep_rule(&self, segments: &Segments, index: &Index) -> Keep {
        let capacity = self.segments_allowed(segments, index) * segments.segment_len();
        if (segments.live_bytes() as usize) * 2 < capacity {
            Keep::Live
        } else {
            Keep::Accessed
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
            self.compact(segments, index, clock, victim, Keep::Nothing);
            segments.free_segment(victim);
        }
        index.reserve_one(segments.bytes());
        Ok(())
    }

    /// Unlinks what a victim segment loses under `rule`, moves what it keeps
    /// to its front.
    fn compact(
        &mut self,
        segments: &mut Segments,
        index: &mut Index,
        clock: &Clock,
        id: u32,
        rule: Keep,
    ) {
        let base = segments.base(id);
        let mut kept = Kept::default();
        self.walk_unexpired(
            segments,
            index,
            clock,
            id,
            |this, segments, index, read, header| {
                if rule.keeps(header) {
                    let moved = keep(segments, index, base, read, header, &mut kept);
                    this.counts.bytes_moved += moved as u64;
                } else {
                    this.counts.evictions += 1;
                    let access = read_access(segments.bytes(), base + read + header.access_at());
                    this.counts.evicted_time = idle(access, clock.now());
                    if header.bits & FETCHED == 0 {
                        this.counts.evicted_unfetched += 1;
                    }
                    let hash = index.hash(segments.key(base + read, header));
                    unlink(segments, index, hash, base + read, header);
                }
            },
        );
        self.counts.segments_compacted += 1;
        self.counts.items_kept += u64::from(kept.items);
        segments.set_compacted(id, kept);
    }

    /// Keeps victim `id` as it is, moving nothing: its expired items are
    /// unlinked and the others lose their second chance (read again before the
    /// segment's next turn, they earn it back).
    fn pass_over(&mut self, segments: &mut Segments, index: &mut Index, clock: &Clock, id: u32) {
        let base = segments.base(id);
        self.walk_unexpired(segments, index, clock, id, |_, segments, _, read, _| {
            segments.bytes_mut()[base + read] &= !ACCESSED;
        });
        self.counts.segments_passed_over += 1;
    }

    /// Walks victim `id`'s items in order: dead ones are skipped, expired ones
    /// unlinked, and `live` is given each other one (its offset in the segment
    /// and header). The header of the next item is read after `live` returns,
    /// from the offset the current one had, so `live` may move or unlink it.
    fn walk_unexpired(
        &mut self,
        segments: &mut Segments,
        index: &mut Index,
        clock: &Clock,
        id: u32,
        mut live: impl FnMut(&mut Self, &mut Segments, &mut Index, usize, &Header),
    ) {
        let base = segments.base(id);
        let end = segments.get(id).write_at;
        let mut read = 0usize;
        while read < end {
            let header = segments.header(base + read);
            if header.bits & DEAD == 0 {
                if clock.is_expired(header.expiry) {
                    self.reclaim(segments, index, base + read, &header);
                } else {
                    live(self, segments, index, read, &header);
                }
            }
            read = segments.next_at(read, &header);
        }
    }

    /// Unlinks an expired item found while walking a victim.
    fn reclaim(
        &mut self,
        segments: &mut Segments,
        index: &mut Index,
        addr: usize,
        header: &Header,
    ) {
        self.counts.reclaimed += 1;
        if header.bits & FETCHED == 0 {
            self.counts.expired_unfetched += 1;
        }
        let hash = index.hash(segments.key(addr, header));
        unlink(segments, index, hash, addr, header);
    }
}

/// Which live, unexpired items of a victim stay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Keep {
    Nothing,
    Accessed,
    Live,
}

impl Keep {
    fn keeps(self, header: &Header) -> bool {
        match self {
            Keep::Nothing => false,
            Keep::Accessed => header.bits & ACCESSED != 0,
            Keep::Live => true,
        }
    }
}

/// Bytes free after victim `id`'s write position once it is compacted under
/// `rule`; reads only.
fn planned_room(segments: &Segments, clock: &Clock, id: u32, rule: Keep) -> usize {
    let base = segments.base(id);
    let end = segments.get(id).write_at;
    let (mut read, mut write_at) = (0usize, 0usize);
    while read < end {
        let header = segments.header(base + read);
        if header.bits & DEAD == 0 && !clock.is_expired(header.expiry) && rule.keeps(&header) {
            write_at = segments.aligned(write_at + header.total_len());
        }
        read = segments.next_at(read, &header);
    }
    segments.segment_len() - write_at
}

/// Moves a kept item from segment offset `read` to `kept.write_at`, clearing its
/// second chance; returns the bytes moved.
fn keep(
    segments: &mut Segments,
    index: &mut Index,
    base: usize,
    read: usize,
    header: &Header,
    kept: &mut Kept,
) -> usize {
    let len = header.total_len();
    let (from, to) = (base + read, base + kept.write_at);
    let moved = if from != to {
        segments.bytes_mut().copy_within(from..from + len, to);
        let hash = index.hash(segments.key(to, header));
        index.relocate(hash, from, to);
        len
    } else {
        0
    };
    segments.bytes_mut()[to] &= !ACCESSED;
    kept.items += 1;
    kept.bytes += len;
    kept.immortal |= header.expiry == 0;
    kept.max_expiry = kept.max_expiry.max(header.expiry);
    kept.write_at = segments.aligned(kept.write_at + len);
    moved
}

/// Removes the item at `addr` (its key hashing to `hash`) from the index and
/// marks its space dead.
pub fn unlink(segments: &mut Segments, index: &mut Index, hash: u64, addr: usize, header: &Header) {
    index.remove(hash, addr);
    segments.mark_dead(addr, header);
}
