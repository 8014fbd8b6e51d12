//! The cache: items written back to back into fixed-size segments, found through
//! a `hashbrown::HashTable` of 4-byte item locations, evicted a segment at a time.
//! No sockets and no protocol bytes: the server maps requests onto this API.
//!
//! ```text
//!  index (HashTable<u32>)          arena: segment 0 | segment 1 | ... (one mapping)
//!  +--------+                      +-------------------------------------------+
//!  | loc  --+--------------------->| item | item | dead | item |      free ...   |
//!  +--------+   loc = address >>   +-------------------------------------------+
//!                 align_shift        ^ written in order; sealed when full
//! ```
//! * Segments are grouped by time-to-live (log2 buckets), so a segment whose
//!   latest expiry has passed is reclaimed whole, a slice per loop turn.
//! * When memory is full the oldest sealed segment is the victim: items read since
//!   they were written (second chance), or all live items while the cache is mostly
//!   dead space, are kept by compacting them to the segment's front; the rest are
//!   evicted. The segment then takes new writes after the kept items.
//! * The index's own memory counts against the limit.

mod arena;
pub mod clock;
pub mod item;
pub mod number;

use std::collections::VecDeque;
use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};

use arena::Arena;
pub use clock::Clock;
use item::{Header, ACCESSED, DEAD, FETCHED};

/// Smallest segment: large enough that per-segment metadata and tail waste are
/// negligible, small enough that eviction frees memory in fine steps.
pub const SEGMENT_BYTES_MIN: usize = 1 << 20;
/// TTL classes: 0 = never expires, n = time-to-live in [2^(n-1), 2^n) seconds.
const TTL_BUCKETS: usize = 33;
/// memcached's per-item overhead in its size check (48-byte header, 8-byte CAS,
/// a NUL after the key, "\r\n" after the value): an item is too large when
/// key + value + this exceeds `-I`. We use the same rule so that the same values
/// are accepted; our own header is smaller, so an accepted item always fits.
pub const MEMCACHED_ITEM_OVERHEAD: usize = 59;
/// Index entries start with room for this many items.
const INDEX_INITIAL_CAPACITY: usize = 4096;
/// A bump in hashbrown's table for every 4-byte slot: one control byte.
const INDEX_BYTES_PER_BUCKET: usize = 5;

/// What the store needs to know from the configuration.
#[derive(Clone, Copy, Debug)]
pub struct StoreConfig {
    /// Bytes for items and index together (`-m`).
    pub memory_limit: usize,
    /// Largest item, header and key included (`-I`).
    pub item_size_max: usize,
}

/// Why a store operation did not happen, in memcached's terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreError {
    NotFound,
    Exists,
    NotStored,
    TooLarge,
    NonNumeric,
    OutOfMemory,
}

/// How SET-like commands treat an existing item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Set,
    Add,
    Replace,
}

/// A stored item as read: borrowed from segment memory until the next mutation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Item<'a> {
    pub flags: u32,
    pub cas: u64,
    pub value: &'a [u8],
}

/// Counters and gauges the `stat` command reports.
#[derive(Clone, Copy, Debug, Default)]
pub struct StoreStats {
    pub curr_items: u64,
    pub total_items: u64,
    /// Bytes of live items, headers included.
    pub bytes: u64,
    pub evictions: u64,
    pub reclaimed: u64,
    pub expired_unfetched: u64,
    pub evicted_unfetched: u64,
    pub get_expired: u64,
    pub get_flushed: u64,
    pub segment_bytes: u64,
    pub segments_total: u64,
    pub segments_used: u64,
    pub segments_free: u64,
    /// Bytes in used segments that hold no live item (overwritten, deleted, expired).
    pub dead_bytes: u64,
    pub index_bytes: u64,
    pub limit_maxbytes: u64,
    pub item_size_max: u64,
    pub segments_compacted: u64,
    /// Free segments whose pages were handed back to the OS (to make room for the
    /// index); other free segments stay resident and are reused first.
    pub segments_released: u64,
    pub items_kept: u64,
    pub segments_expired: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Holds no memory; on the free list.
    Free,
    /// A bucket's tail, taking writes.
    Open,
    /// Full, waiting in FIFO order to be a victim.
    Sealed,
    /// Wholly expired and being unlinked a slice at a time.
    Sweeping,
}

#[derive(Clone, Copy, Debug)]
struct Segment {
    state: State,
    /// Bumped on every reuse, so stale FIFO entries and sweep cursors are ignored.
    epoch: u32,
    write_at: usize,
    live_items: u32,
    live_bytes: usize,
    /// Latest expiry of any item written here (only meaningful if !immortal).
    max_expiry: u32,
    /// Holds (or held) an item that never expires.
    immortal: bool,
    bucket: u8,
}

impl Segment {
    const FREE: Segment = Segment {
        state: State::Free,
        epoch: 0,
        write_at: 0,
        live_items: 0,
        live_bytes: 0,
        max_expiry: 0,
        immortal: false,
        bucket: 0,
    };
}

pub struct Store {
    arena: Arena,
    segment_len: usize,
    /// Item addresses are multiples of 1 << align_shift so that a u32 can name
    /// any of them (0 while the arena is at most 4 GiB).
    align_shift: u32,
    segments: Vec<Segment>,
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
    index: HashTable<u32>,
    hasher: DefaultHashBuilder,
    memory_limit: usize,
    item_size_max: usize,
    next_cas: u64,
    pub clock: Clock,
    /// A delayed flush: everything stored before this time goes at this time.
    flush_at: Option<u32>,
    /// Reused for values built from an old one (append, prepend, touch rewrites).
    scratch: Vec<u8>,
    /// The wholly expired segment being unlinked, and how far.
    sweep: Option<(u32, u32, usize)>,
    last_expiry_scan: u32,
    stats: StoreStats,
}

/// The key of the item at location `loc`.
#[inline]
fn key_at(arena: &Arena, shift: u32, loc: u32) -> &[u8] {
    let bytes = &arena.bytes()[(loc as usize) << shift..];
    let header = item::decode(bytes);
    &bytes[header.key_at..header.key_at + header.key_len]
}

fn ttl_bucket(expiry: u32, now: u32) -> usize {
    if expiry == 0 {
        0
    } else {
        let ttl = expiry.saturating_sub(now).max(1);
        (32 - ttl.leading_zeros()) as usize
    }
}

impl Store {
    /// Reserves address space for `-m` and starts with no memory committed.
    pub fn new(config: StoreConfig, clock: Clock) -> std::io::Result<Store> {
        let page = 4096;
        let segment_len = SEGMENT_BYTES_MIN.max(config.item_size_max.div_ceil(page) * page);
        let count = (config.memory_limit / segment_len).max(1);
        let arena_len = count * segment_len;
        let mut align_shift = 0;
        while (arena_len >> align_shift) > u32::MAX as usize {
            align_shift += 1;
        }
        let arena = Arena::new(arena_len)?;
        let hasher = DefaultHashBuilder::default();
        let index = HashTable::with_capacity(INDEX_INITIAL_CAPACITY);
        Ok(Store {
            arena,
            segment_len,
            align_shift,
            segments: vec![Segment::FREE; count],
            free: (0..count as u32).rev().collect(),
            warm: Vec::with_capacity(count),
            fifo: VecDeque::with_capacity(count),
            tails: [None; TTL_BUCKETS],
            committed: 0,
            index,
            hasher,
            memory_limit: config.memory_limit,
            item_size_max: config.item_size_max,
            next_cas: 1,
            clock,
            flush_at: None,
            scratch: Vec::new(),
            sweep: None,
            last_expiry_scan: 0,
            stats: StoreStats::default(),
        })
    }

    // ---- reads ----

    /// The live item under `key`, marked as read.
    pub fn get(&mut self, key: &[u8]) -> Option<Item<'_>> {
        let hash = self.hasher.hash_one(key);
        let (addr, header) = self.lookup(hash, key)?;
        self.arena.bytes_mut()[addr] |= ACCESSED | FETCHED;
        Some(self.item_at(addr, &header))
    }

    /// Sets a live item's expiration (protocol `exptime`) and returns it.
    /// The CAS does not change, as in memcached.
    pub fn touch(&mut self, key: &[u8], exptime: u32) -> Option<Item<'_>> {
        let hash = self.hasher.hash_one(key);
        let (addr, header) = self.lookup(hash, key)?;
        let expiry = self.clock.expiry(exptime);
        let addr = match header.expiry_at {
            Some(at) => {
                self.arena.bytes_mut()[addr + at..addr + at + 4]
                    .copy_from_slice(&expiry.to_le_bytes());
                let segment = &mut self.segments[addr / self.segment_len];
                if expiry == 0 {
                    segment.immortal = true;
                }
                segment.max_expiry = segment.max_expiry.max(expiry);
                addr
            }
            None if expiry == 0 => addr,
            // No room for an expiry field: write the item again with one.
            None => {
                self.copy_value_to_scratch(addr, &header);
                let scratch = std::mem::take(&mut self.scratch);
                let written =
                    self.write_item(hash, key, &scratch, header.flags, expiry, header.cas);
                self.scratch = scratch;
                written.ok()?
            }
        };
        self.arena.bytes_mut()[addr] |= ACCESSED | FETCHED;
        let header = item::decode(&self.arena.bytes()[addr..]);
        Some(self.item_at(addr, &header))
    }

    // ---- writes ----

    /// SET / ADD / REPLACE, with memcached's CAS rule: a non-zero `cas` makes any
    /// of them a compare-and-swap. Returns the new item's CAS.
    pub fn store(
        &mut self,
        mode: Mode,
        key: &[u8],
        value: &[u8],
        flags: u32,
        exptime: u32,
        cas: u64,
    ) -> Result<u64, StoreError> {
        let hash = self.hasher.hash_one(key);
        let expiry = self.clock.expiry(exptime);
        if !self.fits(key.len(), value.len()) {
            if mode == Mode::Set {
                // A failed SET must not leave the old value readable (memcached).
                self.remove(key);
            }
            return Err(StoreError::TooLarge);
        }
        let existing = self.lookup(hash, key);
        match (existing, cas, mode) {
            (None, 0, Mode::Replace) | (None, 1.., _) => return Err(StoreError::NotFound),
            (Some(_), 0, Mode::Add) => return Err(StoreError::Exists),
            (Some((_, header)), 1.., _) if header.cas != cas => return Err(StoreError::Exists),
            _ => {}
        }
        let new_cas = self.take_cas();
        self.write_item(hash, key, value, flags, expiry, new_cas)?;
        self.stats.total_items += 1;
        Ok(new_cas)
    }

    /// APPEND (or PREPEND): the item keeps its flags and expiry.
    pub fn concat(
        &mut self,
        key: &[u8],
        value: &[u8],
        prepend: bool,
        cas: u64,
    ) -> Result<u64, StoreError> {
        let hash = self.hasher.hash_one(key);
        let (addr, header) = self.lookup(hash, key).ok_or(StoreError::NotStored)?;
        if cas != 0 && cas != header.cas {
            return Err(StoreError::Exists);
        }
        let new_len = header.value_len + value.len();
        if !self.fits(key.len(), new_len) {
            return Err(StoreError::NotStored);
        }
        let old = &self.arena.bytes()[addr + header.value_at()..][..header.value_len];
        self.scratch.clear();
        if prepend {
            self.scratch.extend_from_slice(value);
            self.scratch.extend_from_slice(old);
        } else {
            self.scratch.extend_from_slice(old);
            self.scratch.extend_from_slice(value);
        }
        let scratch = std::mem::take(&mut self.scratch);
        let new_cas = self.take_cas();
        let written = self.write_item(hash, key, &scratch, header.flags, header.expiry, new_cas);
        self.scratch = scratch;
        written?;
        self.stats.total_items += 1;
        Ok(new_cas)
    }

    /// INCREMENT / DECREMENT. A missing key is created holding `initial` unless
    /// `exptime` is 0xffffffff. Returns the new number and CAS.
    #[allow(clippy::too_many_arguments)]
    pub fn delta(
        &mut self,
        key: &[u8],
        incr: bool,
        delta: u64,
        initial: u64,
        exptime: u32,
        cas: u64,
    ) -> Result<(u64, u64), StoreError> {
        let hash = self.hasher.hash_one(key);
        let mut text = [0u8; 20];
        let Some((addr, header)) = self.lookup(hash, key) else {
            if exptime == u32::MAX {
                return Err(StoreError::NotFound);
            }
            let expiry = self.clock.expiry(exptime);
            let digits = number::format_counter(initial, &mut text);
            let new_cas = self.take_cas();
            self.write_item(hash, key, digits, 0, expiry, new_cas)?;
            self.stats.total_items += 1;
            return Ok((initial, new_cas));
        };
        if header.value_len == 0 {
            return Err(StoreError::NonNumeric);
        }
        if cas != 0 && cas != header.cas {
            return Err(StoreError::Exists);
        }
        let value_at = addr + header.value_at();
        let current = number::parse_counter(&self.arena.bytes()[value_at..][..header.value_len])
            .ok_or(StoreError::NonNumeric)?;
        let next = if incr {
            current.wrapping_add(delta)
        } else {
            current.saturating_sub(delta)
        };
        let digits = number::format_counter(next, &mut text);
        let new_cas = self.take_cas();
        if digits.len() <= header.value_len {
            // In place, padded with spaces to the old length, as memcached does.
            let bytes = self.arena.bytes_mut();
            let value = &mut bytes[value_at..value_at + header.value_len];
            value[..digits.len()].copy_from_slice(digits);
            value[digits.len()..].fill(b' ');
            item::write_cas(bytes, addr + header.cas_at, new_cas);
            bytes[addr] |= ACCESSED;
        } else {
            self.write_item(hash, key, digits, header.flags, header.expiry, new_cas)?;
            self.stats.total_items += 1;
        }
        Ok((next, new_cas))
    }

    /// DELETE; a non-zero `cas` must match.
    pub fn delete(&mut self, key: &[u8], cas: u64) -> Result<(), StoreError> {
        let hash = self.hasher.hash_one(key);
        let (addr, header) = self.lookup(hash, key).ok_or(StoreError::NotFound)?;
        if cas != 0 && cas != header.cas {
            return Err(StoreError::Exists);
        }
        self.unlink(hash, addr, &header);
        Ok(())
    }

    /// Removes `key` if present, whatever its CAS.
    pub fn remove(&mut self, key: &[u8]) {
        let hash = self.hasher.hash_one(key);
        if let Some((addr, header)) = self.lookup(hash, key) {
            self.unlink(hash, addr, &header);
        }
    }

    /// FLUSH: everything now (delay 0), or everything stored before `delay`
    /// seconds from now, at that time.
    pub fn flush(&mut self, delay: u32) {
        if delay == 0 {
            self.flush_now();
        } else {
            self.flush_at = Some(self.clock.expiry(delay).max(1));
        }
    }

    // ---- upkeep ----

    /// Whether `run_due_work` has anything to do at the clock's current time: a
    /// delayed flush that is due, a sweep under way, or a new second to look for
    /// wholly expired segments in.
    pub fn has_due_work(&self) -> bool {
        let now = self.clock.now();
        self.flush_at.is_some_and(|at| at <= now)
            || self.sweep.is_some()
            || self.last_expiry_scan != now
    }

    /// Does up to `max_items` items of due work (delayed flush, expiry) at the
    /// clock's current time. Returns the number of items it looked at.
    pub fn run_due_work(&mut self, max_items: usize) -> usize {
        let now = self.clock.now();
        if let Some(at) = self.flush_at {
            if at <= now {
                self.flush_at = None;
                self.flush_now();
            }
        }
        if self.sweep.is_none() && self.last_expiry_scan != now {
            self.last_expiry_scan = now;
            self.start_sweep();
        }
        let Some((seg, epoch, mut at)) = self.sweep else {
            return 0;
        };
        if self.segments[seg as usize].epoch != epoch {
            self.sweep = None;
            return 0;
        }
        let base = seg as usize * self.segment_len;
        let end = self.segments[seg as usize].write_at;
        let mut done = 0;
        while at < end && done < max_items {
            let header = item::decode(&self.arena.bytes()[base + at..]);
            if header.bits & DEAD == 0 {
                self.unlink_expired(base + at, &header);
            }
            at = self.aligned(at + header.total_len());
            done += 1;
        }
        if at >= end {
            self.sweep = None;
            self.free_segment(seg);
            self.stats.segments_expired += 1;
            // Another wholly expired segment may be waiting.
            self.start_sweep();
        } else {
            self.sweep = Some((seg, epoch, at));
        }
        done
    }

    /// Whether any expiry work is pending (the server then polls with a short timeout).
    pub fn has_pending_work(&self) -> bool {
        self.sweep.is_some()
    }

    pub fn stats(&self) -> StoreStats {
        let mut stats = self.stats;
        stats.curr_items = self.index.len() as u64;
        stats.segment_bytes = self.segment_len as u64;
        stats.segments_total = self.segments.len() as u64;
        stats.segments_used = self.committed as u64;
        stats.segments_free = self.segments.len() as u64 - self.committed as u64;
        let used: usize = self
            .segments
            .iter()
            .filter(|s| s.state != State::Free)
            .map(|s| s.write_at - s.live_bytes)
            .sum();
        stats.dead_bytes = used as u64;
        stats.index_bytes = self.index_bytes() as u64;
        stats.limit_maxbytes = self.memory_limit as u64;
        stats.item_size_max = self.item_size_max as u64;
        stats
    }

    /// Zeroes the counters that `stats reset` clears.
    pub fn reset_stats(&mut self) {
        let kept = self.stats.bytes;
        self.stats = StoreStats {
            bytes: kept,
            ..StoreStats::default()
        };
    }

    /// Checks the internal accounting against the segments' contents; for tests
    /// and fuzzing. Returns a description of the first inconsistency.
    pub fn check_consistency(&self) -> Result<(), String> {
        let mut live_items = 0usize;
        let mut live_bytes = 0usize;
        for (id, seg) in self.segments.iter().enumerate() {
            if seg.state == State::Free {
                continue;
            }
            let base = id * self.segment_len;
            let (mut at, mut items, mut bytes) = (0, 0u32, 0usize);
            while at < seg.write_at {
                let header = item::decode(&self.arena.bytes()[base + at..]);
                if header.bits & DEAD == 0 {
                    items += 1;
                    bytes += header.total_len();
                    let loc = ((base + at) >> self.align_shift) as u32;
                    let key = key_at(&self.arena, self.align_shift, loc);
                    let hash = self.hasher.hash_one(key);
                    if self.index.find(hash, |&l| l == loc).is_none() {
                        return Err(format!("live item at {} missing from index", base + at));
                    }
                }
                at = self.aligned(at + header.total_len());
            }
            if items != seg.live_items || bytes != seg.live_bytes {
                return Err(format!(
                    "segment {id}: counted {items} items/{bytes} bytes, meta {}/{}",
                    seg.live_items, seg.live_bytes
                ));
            }
            live_items += items as usize;
            live_bytes += bytes;
        }
        if live_items != self.index.len() {
            return Err(format!(
                "{live_items} live items but {} index entries",
                self.index.len()
            ));
        }
        if live_bytes as u64 != self.stats.bytes {
            return Err(format!(
                "{live_bytes} live bytes but stat bytes {}",
                self.stats.bytes
            ));
        }
        let held = self.resident() * self.segment_len + self.index_bytes();
        if self.committed > 1 && held > self.memory_limit + self.index_bytes() {
            return Err(format!(
                "holding {held} bytes over limit {}",
                self.memory_limit
            ));
        }
        Ok(())
    }

    // ---- internals ----

    /// Whether an item with this key and value is within the item size limit
    /// (memcached's rule, see `MEMCACHED_ITEM_OVERHEAD`).
    pub fn fits(&self, key_len: usize, value_len: usize) -> bool {
        key_len + value_len + MEMCACHED_ITEM_OVERHEAD <= self.item_size_max
    }

    fn take_cas(&mut self) -> u64 {
        let cas = self.next_cas;
        self.next_cas += 1;
        if self.next_cas >= item::CAS_LIMIT {
            // 0 means "no CAS" on the wire, so the counter wraps to 1.
            self.next_cas = 1;
        }
        cas
    }

    #[inline]
    fn aligned(&self, offset: usize) -> usize {
        let mask = (1usize << self.align_shift) - 1;
        (offset + mask) & !mask
    }

    fn item_at(&self, addr: usize, header: &Header) -> Item<'_> {
        let at = addr + header.value_at();
        Item {
            flags: header.flags,
            cas: header.cas,
            value: &self.arena.bytes()[at..at + header.value_len],
        }
    }

    fn copy_value_to_scratch(&mut self, addr: usize, header: &Header) {
        let at = addr + header.value_at();
        self.scratch.clear();
        self.scratch
            .extend_from_slice(&self.arena.bytes()[at..at + header.value_len]);
    }

    /// Finds the live item under `key`; an expired one is unlinked on the way.
    fn lookup(&mut self, hash: u64, key: &[u8]) -> Option<(usize, Header)> {
        let shift = self.align_shift;
        let bytes = self.arena.bytes();
        // The header decoded to compare the key is the one we return.
        let mut found = None;
        self.index.find(hash, |&loc| {
            let addr = (loc as usize) << shift;
            let header = item::decode(&bytes[addr..]);
            let hit = &bytes[addr + header.key_at..addr + header.key_at + header.key_len] == key;
            if hit {
                found = Some((addr, header));
            }
            hit
        })?;
        let (addr, header) = found?;
        if self.clock.is_expired(header.expiry) {
            self.stats.get_expired += 1;
            self.unlink_expired(addr, &header);
            return None;
        }
        Some((addr, header))
    }

    /// Writes a new item and points the index at it, replacing any older item
    /// under the same key.
    fn write_item(
        &mut self,
        hash: u64,
        key: &[u8],
        value: &[u8],
        flags: u32,
        expiry: u32,
        cas: u64,
    ) -> Result<usize, StoreError> {
        let len = item::item_len(key.len(), value.len(), flags, expiry);
        self.reserve_index()?;
        let bucket = ttl_bucket(expiry, self.clock.now());
        let addr = self.alloc(len, bucket)?;
        let bytes = &mut self.arena.bytes_mut()[addr..addr + len];
        let value_at = item::encode(bytes, key, value.len(), flags, expiry, cas);
        bytes[value_at..].copy_from_slice(value);
        let segment = &mut self.segments[addr / self.segment_len];
        segment.live_items += 1;
        segment.live_bytes += len;
        if expiry == 0 {
            segment.immortal = true;
        }
        segment.max_expiry = segment.max_expiry.max(expiry);
        self.stats.bytes += len as u64;

        let shift = self.align_shift;
        let loc = (addr >> shift) as u32;
        let arena = &self.arena;
        let old = self
            .index
            .find_mut(hash, |&l| l != loc && key_at(arena, shift, l) == key)
            .map(|slot| std::mem::replace(slot, loc));
        match old {
            Some(old) => self.mark_dead((old as usize) << shift),
            None => {
                let hasher = &self.hasher;
                self.index
                    .insert_unique(hash, loc, |&l| hasher.hash_one(key_at(arena, shift, l)));
            }
        }
        Ok(addr)
    }

    /// Makes sure one more index entry fits without the table growing past the
    /// memory limit; growth briefly holds the old and the new table.
    fn reserve_index(&mut self) -> Result<(), StoreError> {
        if self.index.capacity() > self.index.len() {
            return Ok(());
        }
        let current = self.index_bytes();
        let needed = current * 3;
        while self.resident() * self.segment_len + needed > self.memory_limit {
            if self.cool_one() {
                continue;
            }
            let victim = self.next_victim().ok_or(StoreError::OutOfMemory)?;
            self.compact(victim, true);
            self.free_segment(victim);
        }
        let shift = self.align_shift;
        let arena = &self.arena;
        let hasher = &self.hasher;
        self.index
            .reserve(1, |&l| hasher.hash_one(key_at(arena, shift, l)));
        Ok(())
    }

    fn index_bytes(&self) -> usize {
        self.index.allocation_size().max(
            // Before the first allocation: what the initial table will take.
            INDEX_INITIAL_CAPACITY * 8 / 7 * INDEX_BYTES_PER_BUCKET,
        )
    }

    /// How many segments the limit allows next to the index.
    fn segments_allowed(&self) -> usize {
        (self.memory_limit.saturating_sub(self.index_bytes()) / self.segment_len)
            .min(self.segments.len())
    }

    /// Space for `len` bytes at the tail of TTL class `bucket`.
    fn alloc(&mut self, len: usize, bucket: usize) -> Result<usize, StoreError> {
        loop {
            if let Some(tail) = self.tails[bucket] {
                let at = self.aligned(self.segments[tail as usize].write_at);
                if at + len <= self.segment_len {
                    self.segments[tail as usize].write_at = at + len;
                    return Ok(tail as usize * self.segment_len + at);
                }
                self.tails[bucket] = None;
                self.seal(tail);
            }
            let segment = self.take_segment(len)?;
            self.segments[segment as usize].bucket = bucket as u8;
            self.tails[bucket] = Some(segment);
        }
    }

    fn seal(&mut self, id: u32) {
        let segment = &mut self.segments[id as usize];
        if segment.live_items == 0 {
            self.free_segment(id);
            return;
        }
        segment.state = State::Sealed;
        self.fifo.push_back((id, segment.epoch));
    }

    /// An open segment with at least `len` bytes free after its write position:
    /// a free one while the limit allows, else the oldest, compacted.
    fn take_segment(&mut self, len: usize) -> Result<u32, StoreError> {
        let spare = match self.warm.pop() {
            Some(id) => Some(id),
            None if self.resident() < self.segments_allowed() => self.free.pop(),
            None => None,
        };
        if let Some(id) = spare {
            self.committed += 1;
            let segment = &mut self.segments[id as usize];
            *segment = Segment {
                state: State::Open,
                epoch: segment.epoch.wrapping_add(1),
                ..Segment::FREE
            };
            return Ok(id);
        }
        let mut attempts = 0;
        loop {
            let victim = self.next_victim().ok_or(StoreError::OutOfMemory)?;
            // After a whole pass that kept too much, keep nothing.
            let force = attempts >= self.committed;
            self.compact(victim, force);
            let segment = &mut self.segments[victim as usize];
            if self.segment_len - segment.write_at >= len {
                segment.state = State::Open;
                return Ok(victim);
            }
            segment.state = State::Sealed;
            self.fifo.push_back((victim, segment.epoch));
            attempts += 1;
        }
    }

    /// The oldest sealed segment, or failing that any open tail.
    fn next_victim(&mut self) -> Option<u32> {
        while let Some((id, epoch)) = self.fifo.pop_front() {
            let segment = &mut self.segments[id as usize];
            if segment.epoch == epoch && segment.state == State::Sealed {
                segment.state = State::Open;
                return Some(id);
            }
        }
        let bucket = self.tails.iter().position(Option::is_some)?;
        self.tails[bucket].take()
    }

    /// Unlinks what a victim segment loses, moves what it keeps to its front.
    fn compact(&mut self, id: u32, force: bool) {
        let base = id as usize * self.segment_len;
        let end = self.segments[id as usize].write_at;
        // Keep every live item while most of the cache is dead space: evicting
        // live data then would only make room that overwrites already made.
        let capacity = self.segments_allowed() * self.segment_len;
        let keep_all = (self.stats.bytes as usize) * 2 < capacity;
        let (mut read, mut write) = (0usize, 0usize);
        let (mut kept_items, mut kept_bytes, mut max_expiry, mut immortal) =
            (0u32, 0usize, 0, false);
        let shift = self.align_shift;
        while read < end {
            let header = item::decode(&self.arena.bytes()[base + read..]);
            let len = header.total_len();
            if header.bits & DEAD == 0 {
                if self.clock.is_expired(header.expiry) {
                    self.unlink_expired(base + read, &header);
                } else if !force && (keep_all || header.bits & ACCESSED != 0) {
                    if write != read {
                        self.arena
                            .bytes_mut()
                            .copy_within(base + read..base + read + len, base + write);
                        let (old, new) = (
                            ((base + read) >> shift) as u32,
                            ((base + write) >> shift) as u32,
                        );
                        let key = key_at(&self.arena, shift, new);
                        let hash = self.hasher.hash_one(key);
                        if let Some(slot) = self.index.find_mut(hash, |&l| l == old) {
                            *slot = new;
                        }
                    }
                    self.arena.bytes_mut()[base + write] &= !ACCESSED;
                    kept_items += 1;
                    kept_bytes += len;
                    immortal |= header.expiry == 0;
                    max_expiry = max_expiry.max(header.expiry);
                    write = self.aligned(write + len);
                } else {
                    self.stats.evictions += 1;
                    if header.bits & FETCHED == 0 {
                        self.stats.evicted_unfetched += 1;
                    }
                    let key = &self.arena.bytes()[base + read + header.key_at..][..header.key_len];
                    let hash = self.hasher.hash_one(key);
                    self.unlink(hash, base + read, &header);
                }
            }
            read = self.aligned(read + len);
        }
        self.stats.segments_compacted += 1;
        self.stats.items_kept += u64::from(kept_items);
        let segment = &mut self.segments[id as usize];
        segment.epoch = segment.epoch.wrapping_add(1);
        segment.write_at = write;
        segment.live_items = kept_items;
        segment.live_bytes = kept_bytes;
        segment.max_expiry = max_expiry;
        segment.immortal = immortal;
        // Hand the emptied tail of the segment back to the kernel.
        let page = 4096;
        let from = write.div_ceil(page) * page;
        if from < end {
            self.arena.release(base + from, end - from);
        }
    }

    /// Removes an item from the index and accounts its space as dead.
    fn unlink(&mut self, hash: u64, addr: usize, header: &Header) {
        let loc = (addr >> self.align_shift) as u32;
        if let Ok(entry) = self.index.find_entry(hash, |&l| l == loc) {
            entry.remove();
        }
        self.mark_dead_with(addr, header);
    }

    fn unlink_expired(&mut self, addr: usize, header: &Header) {
        self.stats.reclaimed += 1;
        if header.bits & FETCHED == 0 {
            self.stats.expired_unfetched += 1;
        }
        let key = &self.arena.bytes()[addr + header.key_at..][..header.key_len];
        let hash = self.hasher.hash_one(key);
        self.unlink(hash, addr, header);
    }

    fn mark_dead(&mut self, addr: usize) {
        let header = item::decode(&self.arena.bytes()[addr..]);
        self.mark_dead_with(addr, &header);
    }

    fn mark_dead_with(&mut self, addr: usize, header: &Header) {
        let len = header.total_len();
        self.arena.bytes_mut()[addr] |= DEAD;
        self.stats.bytes -= len as u64;
        let id = addr / self.segment_len;
        let segment = &mut self.segments[id];
        segment.live_items -= 1;
        segment.live_bytes -= len;
        // A sealed segment with nothing live is free space at once.
        if segment.live_items == 0 && segment.state == State::Sealed {
            self.free_segment(id as u32);
        }
    }

    fn free_segment(&mut self, id: u32) {
        let segment = &mut self.segments[id as usize];
        if segment.state == State::Free {
            return;
        }
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

    /// Hands a warm free segment's pages back to the OS; false if there is none.
    fn cool_one(&mut self) -> bool {
        let Some(id) = self.warm.pop() else {
            return false;
        };
        self.arena
            .release(id as usize * self.segment_len, self.segment_len);
        self.free.push(id);
        self.stats.segments_released += 1;
        true
    }

    /// Segments whose pages may be resident: in use, or free but warm.
    fn resident(&self) -> usize {
        self.committed + self.warm.len()
    }

    /// Picks a wholly expired segment to unlink, if there is one.
    fn start_sweep(&mut self) {
        let now = self.clock.now();
        let found = self.segments.iter().position(|s| {
            matches!(s.state, State::Open | State::Sealed)
                && !s.immortal
                && s.max_expiry != 0
                && s.max_expiry <= now
        });
        let Some(id) = found else { return };
        let segment = &mut self.segments[id];
        let bucket = usize::from(segment.bucket);
        segment.state = State::Sweeping;
        segment.epoch = segment.epoch.wrapping_add(1);
        let epoch = segment.epoch;
        if self.tails[bucket] == Some(id as u32) {
            self.tails[bucket] = None;
        }
        self.sweep = Some((id as u32, epoch, 0));
    }

    fn flush_now(&mut self) {
        self.index.clear();
        for id in 0..self.segments.len() as u32 {
            self.free_segment(id);
        }
        self.fifo.clear();
        self.tails = [None; TTL_BUCKETS];
        self.sweep = None;
        self.stats.bytes = 0;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;
