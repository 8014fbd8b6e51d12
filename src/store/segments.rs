//! The segment arena: one mapping cut into fixed-size segments, items written
//! back to back at a TTL class's open segment (its tail), sealed when full and
//! queued oldest first for eviction, freed whole. Knows item layout (to mark an
//! item dead and to walk a segment) but nothing of the index.
//!
//! ```text
//!  arena: | seg 0 (sealed) | seg 1 (open, class 3) | seg 2 (free) | ...
//!          item|item|dead|  item|item|   free ...
//!                              ^ write_at
//! ```

use std::collections::VecDeque;

use super::arena::Arena;
use super::item::{self, Header, DEAD};
use super::restart::{SavedSegment, SavedState};

/// Smallest segment: large enough that per-segment metadata and tail waste are
/// negligible, small enough that eviction frees memory in fine steps.
pub const SEGMENT_BYTES_MIN: usize = 1 << 20;
/// TTL classes: 0 = never expires, n = time-to-live in [2^(n-1), 2^n) seconds.
pub const TTL_BUCKETS: usize = 33;
/// Pages handed back to the kernel are this size.
const PAGE_BYTES: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Holds no memory; on the free list.
    Free,
    /// A bucket's tail taking writes, or a victim being compacted.
    Open,
    /// Full, waiting in FIFO order to be a victim.
    Sealed,
    /// Wholly expired and being unlinked a slice at a time.
    Sweeping,
}

/// What the store knows about one segment beyond its bytes.
#[derive(Clone, Copy, Debug)]
pub struct Segment {
    pub state: State,
    /// Bumped on every reuse, so stale FIFO entries and sweep cursors are ignored.
    pub epoch: u32,
    pub write_at: usize,
    pub live_items: u32,
    pub live_bytes: usize,
    /// Latest expiry of any item written here (only meaningful if !immortal).
    pub max_expiry: u32,
    /// Holds (or held) an item that never expires.
    pub immortal: bool,
    pub bucket: u8,
    /// Values still arriving into reserved items here (`pin`): while non-zero the
    /// segment is never a victim, never swept and never freed, so the bytes a
    /// socket read is filling cannot be handed to other items.
    pub arriving: u32,
}

impl Segment {
    pub const FREE: Segment = Segment {
        state: State::Free,
        epoch: 0,
        write_at: 0,
        live_items: 0,
        live_bytes: 0,
        max_expiry: 0,
        immortal: false,
        bucket: 0,
        arriving: 0,
    };
}

/// What compaction left in a segment, to record as its new state.
#[derive(Clone, Copy, Debug, Default)]
pub struct Kept {
    pub write_at: usize,
    pub items: u32,
    pub bytes: usize,
    pub max_expiry: u32,
    pub immortal: bool,
}

pub struct Segments {
    arena: Arena,
    segment_len: usize,
    /// Item addresses are multiples of 1 << align_shift so that a u32 can name
    /// any of them (0 while the arena is at most 4 GiB).
    align_shift: u32,
    meta: Vec<Segment>,
    /// Free segments whose pages were handed back to the OS.
    free: Vec<u32>,
    /// Free segments whose pages are still resident: reused first, so that a cache
    /// turning over its memory does not fault every page in again (a 100 KB SET
    /// would take 25 page faults). Handed back only when the index needs the room.
    warm: Vec<u32>,
    /// Sealed segments, oldest first, with the epoch they were sealed in.
    fifo: VecDeque<(u32, u32)>,
    tails: [Option<u32>; TTL_BUCKETS],
    /// Segments holding memory (open, sealed or sweeping).
    committed: usize,
    /// Bytes of live items, headers included.
    live_bytes: u64,
    /// Free segments whose pages went back to the OS (a stat).
    released: u64,
    /// Segments with a value arriving (`arriving > 0`).
    pinned: usize,
}

impl Segments {
    /// Geometry for `-m` and `-I`: segment length and count.
    pub fn geometry(memory_limit: usize, item_size_max: usize) -> (usize, usize) {
        let segment_len = SEGMENT_BYTES_MIN.max(item_size_max.div_ceil(PAGE_BYTES) * PAGE_BYTES);
        (segment_len, (memory_limit / segment_len).max(1))
    }

    /// Segments over `arena`, all free.
    pub fn new(arena: Arena, segment_len: usize, count: usize) -> Segments {
        let arena_len = count * segment_len;
        let mut align_shift = 0;
        while (arena_len >> align_shift) > u32::MAX as usize {
            align_shift += 1;
        }
        Segments {
            arena,
            segment_len,
            align_shift,
            meta: vec![Segment::FREE; count],
            free: (0..count as u32).rev().collect(),
            warm: Vec::with_capacity(count),
            fifo: VecDeque::with_capacity(count),
            tails: [None; TTL_BUCKETS],
            committed: 0,
            live_bytes: 0,
            released: 0,
            pinned: 0,
        }
    }

    // ---- bytes and items ----

    #[inline]
    pub fn bytes(&self) -> &[u8] {
        self.arena.bytes()
    }

    #[inline]
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        self.arena.bytes_mut()
    }

    #[inline]
    pub fn header(&self, addr: usize) -> Header {
        item::decode(&self.arena.bytes()[addr..])
    }

    #[inline]
    pub fn key(&self, addr: usize, header: &Header) -> &[u8] {
        &self.arena.bytes()[addr + header.key_at..][..header.key_len]
    }

    #[inline]
    pub fn value(&self, addr: usize, header: &Header) -> &[u8] {
        &self.arena.bytes()[addr + header.value_at()..][..header.value_len]
    }

    /// Where the item after the one at segment offset `at` starts.
    #[inline]
    pub fn next_at(&self, at: usize, header: &Header) -> usize {
        self.aligned(at + header.total_len())
    }

    #[inline]
    pub fn aligned(&self, offset: usize) -> usize {
        let mask = (1usize << self.align_shift) - 1;
        (offset + mask) & !mask
    }

    pub fn align_shift(&self) -> u32 {
        self.align_shift
    }

    pub fn segment_len(&self) -> usize {
        self.segment_len
    }

    pub fn count(&self) -> usize {
        self.meta.len()
    }

    pub fn base(&self, id: u32) -> usize {
        id as usize * self.segment_len
    }

    pub fn get(&self, id: u32) -> &Segment {
        &self.meta[id as usize]
    }

    // ---- accounting ----

    /// Counts a newly written item of `len` bytes at `addr`.
    pub fn note_written(&mut self, addr: usize, len: usize, expiry: u32) {
        let segment = &mut self.meta[addr / self.segment_len];
        segment.live_items += 1;
        segment.live_bytes += len;
        self.live_bytes += len as u64;
        Self::note_expiry_in(segment, expiry);
    }

    /// Records that an item in the segment holding `addr` now expires at `expiry`.
    pub fn note_expiry(&mut self, addr: usize, expiry: u32) {
        Self::note_expiry_in(&mut self.meta[addr / self.segment_len], expiry);
    }

    fn note_expiry_in(segment: &mut Segment, expiry: u32) {
        if expiry == 0 {
            segment.immortal = true;
        }
        segment.max_expiry = segment.max_expiry.max(expiry);
    }

    /// Marks the item at `addr` dead (overwritten, deleted, expired or evicted);
    /// a sealed segment left with nothing live is free space at once.
    pub fn mark_dead(&mut self, addr: usize, header: &Header) {
        let len = header.total_len();
        self.arena.bytes_mut()[addr] |= DEAD;
        self.live_bytes -= len as u64;
        let id = addr / self.segment_len;
        let segment = &mut self.meta[id];
        segment.live_items -= 1;
        segment.live_bytes -= len;
        if segment.live_items == 0 && segment.state == State::Sealed && segment.arriving == 0 {
            self.free_segment(id as u32);
        }
    }

    // ---- values arriving ----

    /// Counts a value arriving into the segment holding `addr`: it stays put
    /// (no eviction, sweep or reuse) until as many `unpin`s.
    pub fn pin(&mut self, addr: usize) {
        let segment = &mut self.meta[addr / self.segment_len];
        if segment.arriving == 0 {
            self.pinned += 1;
        }
        segment.arriving += 1;
    }

    /// A value that was arriving at `addr` is complete or abandoned; a sealed
    /// segment left with nothing live and nothing arriving is free space at once.
    pub fn unpin(&mut self, addr: usize) {
        let id = addr / self.segment_len;
        let segment = &mut self.meta[id];
        debug_assert!(segment.arriving > 0, "unpin without pin");
        segment.arriving = segment.arriving.saturating_sub(1);
        if segment.arriving > 0 {
            return;
        }
        self.pinned -= 1;
        if segment.live_items == 0 && segment.state == State::Sealed {
            self.free_segment(id as u32);
        }
    }

    /// Segments with a value arriving.
    pub fn pinned(&self) -> usize {
        self.pinned
    }

    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    // ---- allocation ----

    /// Space for `len` bytes at the tail of TTL class `bucket`, if it has room;
    /// a tail without room is sealed.
    pub fn alloc_in_tail(&mut self, len: usize, bucket: usize) -> Option<usize> {
        let tail = self.tails[bucket]?;
        let at = self.aligned(self.meta[tail as usize].write_at);
        if at + len <= self.segment_len {
            self.meta[tail as usize].write_at = at + len;
            return Some(self.base(tail) + at);
        }
        self.tails[bucket] = None;
        self.seal(tail);
        None
    }

    /// Makes open segment `id` the tail of TTL class `bucket`.
    pub fn set_tail(&mut self, id: u32, bucket: usize) {
        self.meta[id as usize].bucket = bucket as u8;
        self.tails[bucket] = Some(id);
    }

    /// A free segment, opened, while fewer than `allowed` segments are resident.
    pub fn take_spare(&mut self, allowed: usize) -> Option<u32> {
        let id = match self.warm.pop() {
            Some(id) => id,
            None if self.resident() < allowed => self.free.pop()?,
            None => return None,
        };
        self.committed += 1;
        let segment = &mut self.meta[id as usize];
        *segment = Segment {
            state: State::Open,
            epoch: segment.epoch.wrapping_add(1),
            ..Segment::FREE
        };
        Some(id)
    }

    /// Seals `id` (full): queued for eviction, or freed if nothing in it lives.
    pub fn seal(&mut self, id: u32) {
        let segment = &mut self.meta[id as usize];
        if segment.live_items == 0 && segment.arriving == 0 {
            self.free_segment(id);
            return;
        }
        segment.state = State::Sealed;
        self.fifo.push_back((id, segment.epoch));
    }

    /// Reopens a compacted victim for writes.
    pub fn reopen(&mut self, id: u32) {
        self.meta[id as usize].state = State::Open;
    }

    /// The oldest sealed segment, or failing that any open tail, taken out of
    /// the queue (state Open) to be compacted. A segment with a value arriving
    /// is passed over: it goes to the back of the queue (it was a tail moments
    /// ago, so it is young anyway).
    pub fn next_victim(&mut self) -> Option<u32> {
        let mut passed = 0;
        while let Some((id, epoch)) = self.fifo.pop_front() {
            let segment = &mut self.meta[id as usize];
            if segment.epoch != epoch || segment.state != State::Sealed {
                continue;
            }
            if segment.arriving == 0 {
                segment.state = State::Open;
                return Some(id);
            }
            self.fifo.push_back((id, epoch));
            passed += 1;
            if passed >= self.fifo.len() {
                break;
            }
        }
        let meta = &self.meta;
        let bucket = self
            .tails
            .iter()
            .position(|t| t.is_some_and(|id| meta[id as usize].arriving == 0))?;
        self.tails[bucket].take()
    }

    /// The segments eviction would take from first, without taking them: the
    /// oldest sealed one, or when none is sealed, every open tail.
    pub fn eviction_front(&self) -> impl Iterator<Item = u32> + '_ {
        let sealed = self.fifo.iter().find(|&&(id, epoch)| {
            let segment = &self.meta[id as usize];
            segment.epoch == epoch && segment.state == State::Sealed
        });
        let tails = self.tails.iter().flatten().copied();
        sealed
            .map(|&(id, _)| id)
            .into_iter()
            .chain(tails.filter(move |_| sealed.is_none()))
    }

    /// Records what compaction kept in `id`. The emptied rest stays resident (it
    /// is counted against the limit either way): the segment takes new writes
    /// next, and pages handed back here would be faulted in again by them (a
    /// 100 KB SET into released pages took 25 page faults, ~40% of its CPU).
    pub fn set_compacted(&mut self, id: u32, kept: Kept) {
        let segment = &mut self.meta[id as usize];
        debug_assert_eq!(segment.arriving, 0, "compacted under an arriving value");
        segment.epoch = segment.epoch.wrapping_add(1);
        segment.write_at = kept.write_at;
        segment.live_items = kept.items;
        segment.live_bytes = kept.bytes;
        segment.max_expiry = kept.max_expiry;
        segment.immortal = kept.immortal;
    }

    /// Bytes free after the write position of `id`.
    pub fn room(&self, id: u32) -> usize {
        self.segment_len - self.meta[id as usize].write_at
    }

    pub fn free_segment(&mut self, id: u32) {
        let segment = &mut self.meta[id as usize];
        if segment.state == State::Free {
            return;
        }
        debug_assert_eq!(segment.arriving, 0, "freed under an arriving value");
        let bucket = usize::from(segment.bucket);
        *segment = Segment {
            epoch: segment.epoch.wrapping_add(1),
            ..Segment::FREE
        };
        if self.tails[bucket] == Some(id) {
            self.tails[bucket] = None;
        }
        self.committed -= 1;
        // Still counted against the limit as resident memory, as it was while used.
        self.warm.push(id);
    }

    /// Frees every segment (flush). A segment with a value arriving keeps its
    /// memory: its items are marked dead and it is sealed, to be freed once the
    /// value is complete or abandoned and nothing in it lives.
    pub fn free_all(&mut self) {
        self.fifo.clear();
        for id in 0..self.meta.len() as u32 {
            if self.meta[id as usize].arriving == 0 {
                self.free_segment(id);
            } else {
                self.kill_all(id);
            }
        }
        self.tails = [None; TTL_BUCKETS];
        self.live_bytes = 0;
    }

    /// Marks every item of `id` dead and seals it (flush of a pinned segment).
    fn kill_all(&mut self, id: u32) {
        let (base, end) = (self.base(id), self.meta[id as usize].write_at);
        let mut at = 0;
        while at < end {
            let header = self.header(base + at);
            self.arena.bytes_mut()[base + at] |= DEAD;
            at = self.next_at(at, &header);
        }
        let segment = &mut self.meta[id as usize];
        segment.live_items = 0;
        segment.live_bytes = 0;
        segment.state = State::Sealed;
        self.fifo.push_back((id, segment.epoch));
    }

    /// Hands a warm free segment's pages back to the OS; false if there is none.
    pub fn cool_one(&mut self) -> bool {
        let Some(id) = self.warm.pop() else {
            return false;
        };
        self.arena.release(self.base(id), self.segment_len);
        self.free.push(id);
        self.released += 1;
        true
    }

    /// Segments whose pages may be resident: in use, or free but warm.
    pub fn resident(&self) -> usize {
        self.committed + self.warm.len()
    }

    pub fn committed(&self) -> usize {
        self.committed
    }

    pub fn released(&self) -> u64 {
        self.released
    }

    pub fn reset_released(&mut self) {
        self.released = 0;
    }

    // ---- expiry ----

    /// A segment whose every item has expired by `now`, if there is one.
    pub fn wholly_expired(&self, now: u32) -> Option<u32> {
        let found = self.meta.iter().position(|s| {
            matches!(s.state, State::Open | State::Sealed)
                && s.arriving == 0
                && !s.immortal
                && s.max_expiry != 0
                && s.max_expiry <= now
        })?;
        Some(found as u32)
    }

    /// Takes `id` out of allocation to be swept; returns its new epoch.
    pub fn start_sweeping(&mut self, id: u32) -> u32 {
        let segment = &mut self.meta[id as usize];
        let bucket = usize::from(segment.bucket);
        segment.state = State::Sweeping;
        segment.epoch = segment.epoch.wrapping_add(1);
        let epoch = segment.epoch;
        if self.tails[bucket] == Some(id) {
            self.tails[bucket] = None;
        }
        epoch
    }

    /// Bytes in used segments that hold no live item.
    pub fn dead_bytes(&self) -> u64 {
        self.meta
            .iter()
            .filter(|s| s.state != State::Free)
            .map(|s| (s.write_at - s.live_bytes) as u64)
            .sum()
    }

    // ---- warm restart ----

    pub fn arena(&self) -> &Arena {
        &self.arena
    }

    /// Every segment's state for the restart record, and the eviction queue's
    /// live entries, oldest first. A segment being swept holds only expired
    /// items: it is recorded as free.
    pub fn snapshot(&self) -> (Vec<SavedSegment>, Vec<u32>) {
        let mut saved: Vec<SavedSegment> = self
            .meta
            .iter()
            .map(|s| SavedSegment {
                state: match s.state {
                    State::Free | State::Sweeping => SavedState::Free,
                    State::Open => SavedState::Open,
                    State::Sealed => SavedState::Sealed,
                },
                bucket: s.bucket,
                write_at: s.write_at as u32,
            })
            .collect();
        for &id in &self.warm {
            saved[id as usize] = SavedSegment {
                state: SavedState::Warm,
                bucket: 0,
                write_at: 0,
            };
        }
        let fifo = self
            .fifo
            .iter()
            .filter(|&&(id, epoch)| {
                let s = &self.meta[id as usize];
                s.epoch == epoch && s.state == State::Sealed
            })
            .map(|&(id, _)| id)
            .collect();
        (saved, fifo)
    }

    /// Takes segment states from a restart record, with no live items counted
    /// yet (the walk that rebuilds the index counts them). Refuses a record that
    /// does not describe these segments.
    pub fn restore(&mut self, saved: &[SavedSegment], fifo: &[u32]) -> Result<(), &'static str> {
        if saved.len() != self.meta.len() {
            return Err("segment count differs");
        }
        self.free.clear();
        for (id, s) in saved.iter().enumerate() {
            let id = id as u32;
            if s.write_at as usize > self.segment_len || usize::from(s.bucket) >= TTL_BUCKETS {
                return Err("segment write position or TTL class out of range");
            }
            let state = match s.state {
                SavedState::Free => {
                    self.free.push(id);
                    continue;
                }
                SavedState::Warm => {
                    self.warm.push(id);
                    continue;
                }
                SavedState::Open if self.tails[usize::from(s.bucket)].is_some() => {
                    return Err("two open segments in one TTL class");
                }
                SavedState::Open => {
                    self.tails[usize::from(s.bucket)] = Some(id);
                    State::Open
                }
                SavedState::Sealed => State::Sealed,
            };
            self.committed += 1;
            self.meta[id as usize] = Segment {
                state,
                epoch: 1,
                write_at: s.write_at as usize,
                bucket: s.bucket,
                ..Segment::FREE
            };
        }
        self.restore_fifo(fifo)
    }

    fn restore_fifo(&mut self, fifo: &[u32]) -> Result<(), &'static str> {
        let sealed = self
            .meta
            .iter()
            .filter(|s| s.state == State::Sealed)
            .count();
        if fifo.len() != sealed {
            return Err("eviction queue does not list every sealed segment");
        }
        for &id in fifo {
            match self.meta.get_mut(id as usize) {
                // Epoch 2 marks "queued" while checking for duplicates.
                Some(s) if s.state == State::Sealed && s.epoch == 1 => s.epoch = 2,
                _ => return Err("eviction queue names a segment that is not sealed"),
            }
            self.fifo.push_back((id, 2));
        }
        Ok(())
    }

    /// Frees sealed segments that a restore left with nothing live.
    pub fn free_empty_sealed(&mut self) {
        for id in 0..self.meta.len() as u32 {
            let s = &self.meta[id as usize];
            if s.state == State::Sealed && s.live_items == 0 {
                self.free_segment(id);
            }
        }
    }
}
