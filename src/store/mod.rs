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
//!   evicted. The segment then takes new writes after the kept items. A victim
//!   that would free less than a quarter of itself is kept whole (nothing moved).
//! * The index's own memory counts against the limit.

mod arena;
pub mod clock;
mod evict;
mod expire;
mod index;
pub mod item;
mod meta;
pub mod number;
pub mod restart;
mod segments;
mod warm;

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use arena::Arena;
pub use clock::Clock;
use evict::{unlink, Eviction};
use expire::{ttl_bucket, Expiry};
use index::Index;
use item::{Header, ACCESSED, DEAD, FETCHED, STALE, TOKEN_SENT};
pub use meta::{MetaItem, MetaRead};
use restart::Meta;
pub use segments::SEGMENT_BYTES_MIN;
use segments::{Segments, State};
pub use warm::Start;

/// memcached's per-item overhead in its size check (48-byte header, 8-byte CAS,
/// a NUL after the key, "\r\n" after the value): an item is too large when
/// key + value + this exceeds `-I`. We use the same rule so that the same values
/// are accepted; our own header is smaller, so an accepted item always fits.
pub const MEMCACHED_ITEM_OVERHEAD: usize = 59;

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

/// How `Store::admit` lets a store through.
#[derive(Clone, Copy, Debug)]
enum Admitted {
    /// A fresh item, as the request gives it.
    Fresh,
    /// Meta `ms I` with a CAS older than the item's: stored anyway but marked
    /// stale, keeping the item's expiration and a win already handed out
    /// (memcached's rule for a late writer during revalidation).
    Stale { expiry: u32, marks: u8 },
}

/// An item written ahead of its value (`Store::reserve`). Not `Clone`: it is
/// spent exactly once, by `Store::complete` or `Store::abandon`.
#[derive(Debug)]
pub struct Reservation {
    addr: usize,
    len: usize,
    /// Arena address of the value.
    value_at: usize,
    value_len: usize,
    expiry: u32,
}

impl Reservation {
    pub fn value_len(&self) -> usize {
        self.value_len
    }
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
    /// Seconds the last evicted item had gone unaccessed (memcached's `evicted_time`).
    pub evicted_time: u32,
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
    /// Bytes compaction moved (kept items copied to a victim's front).
    pub bytes_moved: u64,
    /// Victims kept whole because compacting them would have freed too little.
    pub segments_passed_over: u64,
    pub segments_expired: u64,
}

/// The counters the front keeps itself (the rest are eviction's and expiry's).
#[derive(Clone, Copy, Debug, Default)]
struct FrontCounts {
    total_items: u64,
    get_expired: u64,
    get_flushed: u64,
}

pub struct Store {
    segments: Segments,
    index: Index,
    eviction: Eviction,
    expiry: Expiry,
    clock: Clock,
    memory_limit: usize,
    item_size_max: usize,
    next_cas: u64,
    /// Reused for values built from an old one (append, prepend, touch rewrites).
    scratch: Vec<u8>,
    counts: FrontCounts,
    memory_file: Option<MemoryFile>,
}

/// The file the arena maps with `-e`.
#[derive(Debug)]
struct MemoryFile {
    path: PathBuf,
    on_tmpfs: bool,
    /// Kept open for its lock (see `warm::open_file`).
    file: std::fs::File,
}

impl Store {
    /// Reserves address space for `-m` and starts with no memory committed.
    pub fn new(config: StoreConfig, clock: Clock) -> io::Result<Store> {
        let (segment_len, count) = Segments::geometry(config.memory_limit, config.item_size_max);
        let segments = Segments::new(Arena::new(count * segment_len)?, segment_len, count);
        let index = Index::new(segments.align_shift());
        Ok(Store::from_parts(config, segments, index, clock))
    }

    fn from_parts(config: StoreConfig, segments: Segments, index: Index, clock: Clock) -> Store {
        Store {
            segments,
            index,
            eviction: Eviction::new(config.memory_limit),
            expiry: Expiry::default(),
            clock,
            memory_limit: config.memory_limit,
            item_size_max: config.item_size_max,
            next_cas: 1,
            scratch: Vec::new(),
            counts: FrontCounts::default(),
            memory_file: None,
        }
    }

    /// A store whose arena is a shared mapping of the file at `path` (`-e`):
    /// the items of the last clean stop come back if its record beside the file
    /// matches this configuration; otherwise the file is re-initialised and the
    /// store starts empty. Errs only when the file cannot be opened or mapped.
    pub fn with_memory_file(config: StoreConfig, path: &Path) -> io::Result<(Store, Start)> {
        let started = Instant::now();
        let (segment_len, count) = Segments::geometry(config.memory_limit, config.item_size_max);
        let expected = (
            config.memory_limit as u64,
            config.item_size_max as u64,
            segment_len as u64,
        );
        let (file, restored) = warm::open(path, expected, segment_len, count)?;
        let on_tmpfs = warm::on_tmpfs(&file).unwrap_or(false);
        let (mut store, start) = match restored {
            Ok(r) => {
                let mut store = Store::from_parts(config, r.segments, r.index, r.clock);
                store.next_cas = r.meta.next_cas.max(r.rebuilt.max_cas + 1);
                if store.next_cas >= item::CAS_LIMIT {
                    store.next_cas = 1;
                }
                if r.meta.flush_at != 0 {
                    store.expiry.schedule_flush(r.meta.flush_at);
                }
                let start = Start::Restored {
                    items: r.rebuilt.items,
                    bytes: store.segments.live_bytes(),
                    expired: r.rebuilt.expired,
                    micros: started.elapsed().as_micros() as u64,
                    verified_micros: None,
                };
                (store, start)
            }
            Err(reason) => (Store::cold_on_file(config, &file)?, Start::Cold { reason }),
        };
        store.memory_file = Some(MemoryFile {
            path: path.to_path_buf(),
            on_tmpfs,
            file,
        });
        // A delayed flush that fell due while the server was down happens now,
        // before anything is served.
        store.run_due_work(0);
        Ok((store, start))
    }

    /// An empty store on the memory file `file`, emptied and resized first.
    fn cold_on_file(config: StoreConfig, file: &std::fs::File) -> io::Result<Store> {
        let (segment_len, count) = Segments::geometry(config.memory_limit, config.item_size_max);
        warm::reinitialise(file, segment_len * count)?;
        let arena = Arena::map_file(file, segment_len * count)?;
        let segments = Segments::new(arena, segment_len, count);
        let index = Index::new(segments.align_shift());
        Ok(Store::from_parts(config, segments, index, Clock::start()))
    }

    /// `--verify-restore`: runs the full consistency check (`check_consistency`)
    /// on a store `with_memory_file` just restored, before anything is served.
    /// Passing, `start` comes back with the check's time in `verified_micros`;
    /// failing, the memory file is re-initialised and the store starts cold
    /// with the finding as its reason, like any other doubt about the file. A
    /// cold `start` is returned as it is.
    pub fn verify_restore(self, start: Start) -> io::Result<(Store, Start)> {
        let Start::Restored {
            items,
            bytes,
            expired,
            micros,
            ..
        } = start
        else {
            return Ok((self, start));
        };
        let started = Instant::now();
        match self.check_consistency() {
            Ok(()) => {
                let verified_micros = Some(started.elapsed().as_micros() as u64);
                let start = Start::Restored {
                    items,
                    bytes,
                    expired,
                    micros,
                    verified_micros,
                };
                Ok((self, start))
            }
            Err(finding) => self.into_cold(format!(
                "the {items} restored items failed the consistency check: {finding}"
            )),
        }
    }

    /// Drops everything this store holds and starts it again empty on the same
    /// memory file (kept open, so its lock is never let go).
    fn into_cold(mut self, reason: String) -> io::Result<(Store, Start)> {
        let config = StoreConfig {
            memory_limit: self.memory_limit,
            item_size_max: self.item_size_max,
        };
        let file = self.memory_file.take();
        // Unmap the old arena before its file is emptied under it.
        drop(self);
        let mut store = match &file {
            Some(f) => Store::cold_on_file(config, &f.file)?,
            None => Store::new(config, Clock::start())?,
        };
        store.memory_file = file;
        Ok((store, Start::Cold { reason }))
    }

    /// The memory file (`-e`), if there is one, and whether it is on tmpfs.
    /// `-L` on the anonymous arena: transparent huge pages asked for over all of
    /// it (a memory file's pages come from its tmpfs mount instead).
    pub fn advise_huge_pages(&self) -> io::Result<()> {
        self.segments.arena().advise_huge_pages()
    }

    pub fn memory_file(&self) -> Option<(&Path, bool)> {
        self.memory_file
            .as_ref()
            .map(|f| (f.path.as_path(), f.on_tmpfs))
    }

    /// On a clean stop with `-e`: writes the restart record beside the memory
    /// file (after writing the arena back when the file is not on tmpfs). Returns
    /// how long it took, or None without a memory file.
    pub fn save_for_restart(&self) -> io::Result<Option<Duration>> {
        let Some(file) = &self.memory_file else {
            return Ok(None);
        };
        let started = Instant::now();
        if !file.on_tmpfs {
            self.segments.arena().sync()?;
        }
        let (segments, fifo) = self.segments.snapshot();
        let meta = Meta {
            memory_limit: self.memory_limit as u64,
            item_size_max: self.item_size_max as u64,
            segment_len: self.segments.segment_len() as u64,
            items: u32::try_from(self.index.len()).unwrap_or(u32::MAX),
            next_cas: self.next_cas,
            flush_at: self.expiry.pending_flush().unwrap_or(0),
            clock_epoch_unix: self.clock.epoch_unix(),
            stopped_unix_nanos: warm::unix_nanos(),
            segments,
            fifo,
        };
        restart::write_atomically(&file.path, &meta.encode())?;
        Ok(Some(started.elapsed()))
    }

    // ---- time ----

    /// Sets the store's time from an instant the caller already read (the event
    /// loop reads the clock once per turn).
    pub fn tick(&mut self, instant: Instant) {
        self.clock.refresh_at(instant);
    }

    /// Moves the store's time forward by `secs` (tests and fuzzing drive time by hand).
    pub fn advance_clock(&mut self, secs: u32) {
        self.clock.advance(secs);
    }

    /// The store's clock (read only).
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    // ---- reads ----

    /// Starts loading what a `get(key)` will read (the index probe, the item)
    /// into the cache, without reading it: a hint for a batch of gets.
    #[inline]
    pub fn prefetch(&self, key: &[u8]) {
        let hash = self.index.hash(key);
        self.index.prefetch(hash, self.segments.bytes());
    }

    /// The live item under `key`, marked as read.
    #[inline(always)]
    pub fn get(&mut self, key: &[u8]) -> Option<Item<'_>> {
        let hash = self.index.hash(key);
        let (addr, header) = self.lookup(hash, key)?;
        self.bump(addr, &header);
        Some(self.item_at(addr, &header))
    }

    /// Marks the item at `addr` read: fetched, a second chance for eviction,
    /// and, from its second fetch on, accessed now. memcached's segmented LRU
    /// (`do_item_bump`) leaves the access time of a first fetch alone too: an
    /// item set and read once reports the time it was set.
    #[inline(always)]
    fn bump(&mut self, addr: usize, header: &Header) {
        let now = self.clock.now();
        let bytes = self.segments.bytes_mut();
        if header.bits & FETCHED != 0 {
            item::write_access(bytes, addr + header.access_at(), now);
        }
        bytes[addr] |= ACCESSED | FETCHED;
    }

    /// Sets a live item's expiration (protocol `exptime`) and returns it.
    /// The CAS does not change, as in memcached.
    pub fn touch(&mut self, key: &[u8], exptime: u32) -> Option<Item<'_>> {
        let hash = self.index.hash(key);
        let (addr, header) = self.lookup(hash, key)?;
        let addr = self.set_expiry(hash, key, addr, &header, exptime)?;
        let header = self.segments.header(addr);
        self.bump(addr, &header);
        Some(self.item_at(addr, &header))
    }

    /// Gives the item at `addr` a new expiration (protocol `exptime`), in place
    /// when it has an expiry field; returns where the item is now.
    fn set_expiry(
        &mut self,
        hash: u64,
        key: &[u8],
        addr: usize,
        header: &Header,
        exptime: u32,
    ) -> Option<usize> {
        let expiry = self.clock.expiry(exptime);
        let addr = match header.expiry_at {
            Some(at) => {
                self.segments.bytes_mut()[addr + at..addr + at + 4]
                    .copy_from_slice(&expiry.to_le_bytes());
                self.segments.note_expiry(addr, expiry);
                addr
            }
            None if expiry == 0 => addr,
            // No room for an expiry field: write the item again with one.
            None => {
                let access = item::read_access(self.segments.bytes(), addr + header.access_at());
                self.copy_value_to_scratch(addr, header);
                let scratch = std::mem::take(&mut self.scratch);
                let written =
                    self.write_item(hash, key, &scratch, header.flags, expiry, header.cas);
                self.scratch = scratch;
                let addr = written.ok()?;
                // The rewritten item keeps the meta marks and access time of the old one.
                let bytes = self.segments.bytes_mut();
                bytes[addr] |= header.bits & (STALE | TOKEN_SENT | FETCHED);
                item::write_access(bytes, addr + header.access_at(), access);
                addr
            }
        };
        Some(addr)
    }

    // ---- writes ----

    /// SET / ADD / REPLACE, with memcached's CAS rule: a non-zero `cas` makes any
    /// of them a compare-and-swap. Returns the new item's CAS.
    #[inline]
    pub fn store(
        &mut self,
        mode: Mode,
        key: &[u8],
        value: &[u8],
        flags: u32,
        exptime: u32,
        cas: u64,
    ) -> Result<u64, StoreError> {
        self.store_with(mode, key, value, (flags, exptime), cas, false)
    }

    /// `store`; with `invalidating` (meta `ms I`, set or replace with a CAS), a
    /// CAS older than the item's still stores the value, marked stale
    /// (`Admitted::Stale`).
    #[inline(always)]
    pub fn store_with(
        &mut self,
        mode: Mode,
        key: &[u8],
        value: &[u8],
        (flags, exptime): (u32, u32),
        cas: u64,
        invalidating: bool,
    ) -> Result<u64, StoreError> {
        let hash = self.index.hash(key);
        if !self.fits(key.len(), value.len()) {
            if mode == Mode::Set {
                // A failed SET must not leave the old value readable (memcached).
                self.remove(key);
            }
            return Err(StoreError::TooLarge);
        }
        let (expiry, marks) = match self.admit(hash, key, mode, cas, invalidating)? {
            Admitted::Fresh => (self.clock.expiry(exptime), 0),
            Admitted::Stale { expiry, marks } => (expiry, marks),
        };
        let new_cas = self.take_cas();
        let addr = self.write_item(hash, key, value, flags, expiry, new_cas)?;
        if marks != 0 {
            self.segments.bytes_mut()[addr] |= marks;
        }
        self.counts.total_items += 1;
        Ok(new_cas)
    }

    /// Whether `mode` (with a compare-and-swap when `cas` is non-zero) may write
    /// `key` now, and how (`invalidating`: see `store_with`).
    #[inline(always)]
    fn admit(
        &mut self,
        hash: u64,
        key: &[u8],
        mode: Mode,
        cas: u64,
        invalidating: bool,
    ) -> Result<Admitted, StoreError> {
        match (self.lookup(hash, key), cas, mode) {
            (Some((_, header)), 1.., _) if invalidating && cas < header.cas => {
                Ok(Admitted::Stale {
                    expiry: header.expiry,
                    marks: STALE | (header.bits & TOKEN_SENT),
                })
            }
            (None, 0, Mode::Replace) | (None, 1.., _) => Err(StoreError::NotFound),
            (Some(_), 0, Mode::Add) => Err(StoreError::Exists),
            (Some((_, header)), 1.., _) if header.cas != cas => Err(StoreError::Exists),
            _ => Ok(Admitted::Fresh),
        }
    }

    // ---- values read in place ----

    /// Room for an item whose value has not arrived yet, so that the value can
    /// be read straight into it (`value_mut`), then `complete`d as a SET, ADD,
    /// REPLACE or CAS would store it, or `abandon`ed. Until then the item is
    /// written as dead (no walk, eviction or warm restart takes it for live) and
    /// its segment is pinned. `None` when it is over the size limit, memory is
    /// short, or a quarter of the segments are pinned already: the caller then
    /// buffers the value as before, so slow senders cannot pin the whole cache.
    pub fn reserve(
        &mut self,
        key: &[u8],
        value_len: usize,
        flags: u32,
        exptime: u32,
    ) -> Option<Reservation> {
        let allowed = self.eviction.segments_allowed(&self.segments, &self.index);
        if !self.fits(key.len(), value_len) || self.segments.pinned() >= (allowed / 4).max(1) {
            return None;
        }
        let expiry = self.clock.expiry(exptime);
        let len = item::item_len(key.len(), value_len, flags, expiry);
        let addr = self.alloc(len, ttl_bucket(expiry, self.clock.now())).ok()?;
        let bytes = &mut self.segments.bytes_mut()[addr..addr + len];
        let fields = item::Fields {
            flags,
            expiry,
            cas: 0,
            access: 0,
        };
        let value_at = item::encode(bytes, key, value_len, fields);
        bytes[0] |= DEAD;
        self.segments.pin(addr);
        Some(Reservation {
            addr,
            len,
            value_at: addr + value_at,
            value_len,
            expiry,
        })
    }

    /// The reserved item's value bytes, to be filled (their contents until then
    /// are whatever the segment held).
    pub fn value_mut(&mut self, reservation: &Reservation) -> &mut [u8] {
        let at = reservation.value_at;
        &mut self.segments.bytes_mut()[at..at + reservation.value_len]
    }

    /// Links a reserved item whose value is now in place, under memcached's
    /// rules for `mode` and `cas` at this moment (as `store_with`). On an error
    /// the reservation stays dead space. Returns the new item's CAS.
    pub fn complete(
        &mut self,
        reservation: Reservation,
        mode: Mode,
        cas: u64,
        invalidating: bool,
    ) -> Result<u64, StoreError> {
        let addr = reservation.addr;
        let header = self.segments.header(addr);
        let mut key_buf = [0u8; 256];
        let key = &mut key_buf[..header.key_len];
        key.copy_from_slice(self.segments.key(addr, &header));
        let key = &*key;
        let hash = self.index.hash(key);
        let linked = self
            .admit(hash, key, mode, cas, invalidating)
            .and_then(|admitted| {
                self.eviction
                    .reserve_index(&mut self.segments, &mut self.index, &self.clock)?;
                Ok(admitted)
            });
        let (expiry, marks) = match linked {
            Err(e) => {
                self.segments.unpin(addr);
                return Err(e);
            }
            Ok(Admitted::Fresh) => (reservation.expiry, 0),
            // A kept expiration needs the header's expiry field exactly when it
            // is not "never": else the value moves to a new item (rare).
            Ok(Admitted::Stale { expiry, marks })
                if (expiry != 0) != header.expiry_at.is_some() =>
            {
                return self.complete_moved(reservation, (hash, key), expiry, marks);
            }
            Ok(Admitted::Stale { expiry, marks }) => (expiry, marks),
        };
        let (new_cas, now) = (self.take_cas(), self.clock.now());
        let bytes = self.segments.bytes_mut();
        // CAS and access time are the moment it is linked, as in memcached.
        item::write_cas(bytes, addr + header.cas_at, new_cas);
        item::write_access(bytes, addr + header.access_at(), now);
        if let Some(at) = header.expiry_at {
            bytes[addr + at..addr + at + 4].copy_from_slice(&expiry.to_le_bytes());
        }
        bytes[addr] = (bytes[addr] & !DEAD) | marks;
        self.segments.note_written(addr, reservation.len, expiry);
        if let Some(old) = self.index.insert(hash, key, addr, self.segments.bytes()) {
            let header = self.segments.header(old);
            self.segments.mark_dead(old, &header);
        }
        self.segments.unpin(addr);
        self.counts.total_items += 1;
        Ok(new_cas)
    }

    /// A stale `complete` whose kept expiration does not fit the reserved
    /// header: the value is copied into a new item and the reservation left dead.
    #[cold]
    fn complete_moved(
        &mut self,
        reservation: Reservation,
        (hash, key): (u64, &[u8]),
        expiry: u32,
        marks: u8,
    ) -> Result<u64, StoreError> {
        let flags = self.segments.header(reservation.addr).flags;
        let at = reservation.value_at;
        let mut value = std::mem::take(&mut self.scratch);
        value.clear();
        value.extend_from_slice(&self.segments.bytes()[at..at + reservation.value_len]);
        self.segments.unpin(reservation.addr);
        let new_cas = self.take_cas();
        let written = self.write_item(hash, key, &value, flags, expiry, new_cas);
        self.scratch = value;
        let addr = written?;
        self.segments.bytes_mut()[addr] |= marks;
        self.counts.total_items += 1;
        Ok(new_cas)
    }

    /// The key a reservation was made for.
    pub fn reserved_key(&self, reservation: &Reservation) -> &[u8] {
        let header = self.segments.header(reservation.addr);
        self.segments.key(reservation.addr, &header)
    }

    /// Gives up a reservation (the client went away, or sent a bad data block):
    /// its bytes stay dead space and the key keeps what it held.
    pub fn abandon(&mut self, reservation: Reservation) {
        self.segments.unpin(reservation.addr);
    }

    /// APPEND (or PREPEND): the item keeps its flags and expiry.
    pub fn concat(
        &mut self,
        key: &[u8],
        value: &[u8],
        prepend: bool,
        cas: u64,
    ) -> Result<u64, StoreError> {
        let hash = self.index.hash(key);
        let (addr, header) = self.lookup(hash, key).ok_or(StoreError::NotStored)?;
        if cas != 0 && cas != header.cas {
            return Err(StoreError::Exists);
        }
        let new_len = header.value_len + value.len();
        if !self.fits(key.len(), new_len) {
            return Err(StoreError::NotStored);
        }
        let new_cas = self.take_cas();
        // The joined item is written once, from the old one and the new piece:
        // the old item's segment is pinned so that finding room cannot move or
        // evict it (as for a value arriving).
        self.segments.pin(addr);
        let placed = self.place(key, new_len, header.flags, header.expiry, new_cas);
        self.segments.unpin(addr);
        let Ok((at, len, value_at)) = placed else {
            // Only when every other segment is pinned too: join in the scratch
            // buffer, where the old value may go while room is found.
            return self.concat_copied(hash, key, value, prepend, new_cas);
        };
        let old = addr + header.value_at();
        let (old_to, new_to) = if prepend {
            (value_at + value.len(), value_at)
        } else {
            (value_at, value_at + header.value_len)
        };
        let bytes = self.segments.bytes_mut();
        bytes.copy_within(old..old + header.value_len, old_to);
        bytes[new_to..new_to + value.len()].copy_from_slice(value);
        self.link(hash, key, at, len, header.expiry);
        self.counts.total_items += 1;
        Ok(new_cas)
    }

    /// `concat` through the scratch buffer: the old value is copied out before
    /// room for the joined item is found.
    #[cold]
    fn concat_copied(
        &mut self,
        hash: u64,
        key: &[u8],
        value: &[u8],
        prepend: bool,
        new_cas: u64,
    ) -> Result<u64, StoreError> {
        let (addr, header) = self.lookup(hash, key).ok_or(StoreError::NotStored)?;
        let old = self.segments.value(addr, &header);
        self.scratch.clear();
        if prepend {
            self.scratch.extend_from_slice(value);
            self.scratch.extend_from_slice(old);
        } else {
            self.scratch.extend_from_slice(old);
            self.scratch.extend_from_slice(value);
        }
        let scratch = std::mem::take(&mut self.scratch);
        let written = self.write_item(hash, key, &scratch, header.flags, header.expiry, new_cas);
        self.scratch = scratch;
        written?;
        self.counts.total_items += 1;
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
        let hash = self.index.hash(key);
        let mut text = [0u8; 20];
        let Some((addr, header)) = self.lookup(hash, key) else {
            if exptime == u32::MAX {
                return Err(StoreError::NotFound);
            }
            let expiry = self.clock.expiry(exptime);
            let digits = number::format_counter(initial, &mut text);
            let new_cas = self.take_cas();
            self.write_item(hash, key, digits, 0, expiry, new_cas)?;
            self.counts.total_items += 1;
            return Ok((initial, new_cas));
        };
        if header.value_len == 0 {
            return Err(StoreError::NonNumeric);
        }
        if cas != 0 && cas != header.cas {
            return Err(StoreError::Exists);
        }
        let current = number::parse_counter(self.segments.value(addr, &header))
            .ok_or(StoreError::NonNumeric)?;
        let next = if incr {
            current.wrapping_add(delta)
        } else {
            current.saturating_sub(delta)
        };
        let digits = number::format_counter(next, &mut text);
        let new_cas = self.take_cas();
        if digits.len() <= header.value_len {
            let now = self.clock.now();
            // In place, padded with spaces to the old length, as memcached does.
            let value_at = addr + header.value_at();
            let bytes = self.segments.bytes_mut();
            let value = &mut bytes[value_at..value_at + header.value_len];
            value[..digits.len()].copy_from_slice(digits);
            value[digits.len()..].fill(b' ');
            item::write_cas(bytes, addr + header.cas_at, new_cas);
            // memcached's in-place incr updates the access time but is no fetch.
            item::write_access(bytes, addr + header.access_at(), now);
            bytes[addr] |= ACCESSED;
        } else {
            self.write_item(hash, key, digits, header.flags, header.expiry, new_cas)?;
            self.counts.total_items += 1;
        }
        Ok((next, new_cas))
    }

    /// DELETE; a non-zero `cas` must match.
    pub fn delete(&mut self, key: &[u8], cas: u64) -> Result<(), StoreError> {
        let hash = self.index.hash(key);
        let (addr, header) = self.lookup(hash, key).ok_or(StoreError::NotFound)?;
        if cas != 0 && cas != header.cas {
            return Err(StoreError::Exists);
        }
        unlink(&mut self.segments, &mut self.index, hash, addr, &header);
        Ok(())
    }

    /// Removes `key` if present, whatever its CAS.
    pub fn remove(&mut self, key: &[u8]) {
        let hash = self.index.hash(key);
        if let Some((addr, header)) = self.lookup(hash, key) {
            unlink(&mut self.segments, &mut self.index, hash, addr, &header);
        }
    }

    /// FLUSH: everything now (delay 0), or everything stored before `delay`
    /// seconds from now, at that time.
    pub fn flush(&mut self, delay: u32) {
        if delay == 0 {
            self.expiry.flush_now(&mut self.segments, &mut self.index);
        } else {
            self.expiry.schedule_flush(self.clock.expiry(delay).max(1));
        }
    }

    // ---- upkeep ----

    /// Whether `run_due_work` has anything to do at the clock's current time: a
    /// delayed flush that is due, a sweep under way, or a new second to look for
    /// wholly expired segments in.
    pub fn has_due_work(&self) -> bool {
        self.expiry.has_due_work(self.clock.now())
    }

    /// Does up to `max_items` items of due work (delayed flush, expiry) at the
    /// clock's current time. Returns the number of items it looked at.
    pub fn run_due_work(&mut self, max_items: usize) -> usize {
        let now = self.clock.now();
        self.expiry
            .run(&mut self.segments, &mut self.index, now, max_items)
    }

    /// Whether any expiry work is pending (the server then polls with a short timeout).
    pub fn has_pending_work(&self) -> bool {
        self.expiry.is_sweeping()
    }

    pub fn stats(&self) -> StoreStats {
        let (evict, expire) = (self.eviction.counts, self.expiry.counts);
        let segments = &self.segments;
        let used = segments.committed() as u64;
        StoreStats {
            curr_items: self.index.len() as u64,
            total_items: self.counts.total_items,
            bytes: segments.live_bytes(),
            evictions: evict.evictions,
            reclaimed: expire.reclaimed + evict.reclaimed,
            expired_unfetched: expire.expired_unfetched + evict.expired_unfetched,
            evicted_unfetched: evict.evicted_unfetched,
            evicted_time: evict.evicted_time,
            get_expired: self.counts.get_expired,
            get_flushed: self.counts.get_flushed,
            segment_bytes: segments.segment_len() as u64,
            segments_total: segments.count() as u64,
            segments_used: used,
            segments_free: segments.count() as u64 - used,
            dead_bytes: segments.dead_bytes(),
            index_bytes: self.index.bytes() as u64,
            limit_maxbytes: self.memory_limit as u64,
            item_size_max: self.item_size_max as u64,
            segments_compacted: evict.segments_compacted,
            segments_released: segments.released(),
            items_kept: evict.items_kept,
            bytes_moved: evict.bytes_moved,
            segments_passed_over: evict.segments_passed_over,
            segments_expired: expire.segments_expired,
        }
    }

    /// Seconds since the last access of the least recently accessed item where
    /// eviction looks first (the oldest sealed segment, or the open ones while
    /// none is sealed): our `stats items` `age`, as memcached reports its LRU
    /// tail's. Walks at most a few segments, not the whole store.
    pub fn oldest_item_age(&self) -> u32 {
        let now = self.clock.now();
        let mut oldest = 0;
        for id in self.segments.eviction_front() {
            let base = self.segments.base(id);
            let mut at = 0;
            while at < self.segments.get(id).write_at {
                let header = self.segments.header(base + at);
                if header.bits & DEAD == 0 && !self.clock.is_expired(header.expiry) {
                    let bytes = self.segments.bytes();
                    let access = item::read_access(bytes, base + at + header.access_at());
                    oldest = oldest.max(item::idle(access, now));
                }
                at = self.segments.next_at(at, &header);
            }
        }
        oldest
    }

    /// Zeroes the counters that `stats reset` clears.
    pub fn reset_stats(&mut self) {
        self.counts = FrontCounts::default();
        self.eviction.counts = Default::default();
        self.expiry.counts = Default::default();
        self.segments.reset_released();
    }

    /// Checks the internal accounting against the segments' contents; for tests
    /// and fuzzing. Returns a description of the first inconsistency.
    pub fn check_consistency(&self) -> Result<(), String> {
        let (mut live_items, mut live_bytes) = (0usize, 0usize);
        for id in 0..self.segments.count() as u32 {
            let (items, bytes) = self.check_segment(id)?;
            live_items += items;
            live_bytes += bytes;
        }
        if live_items != self.index.len() {
            return Err(format!(
                "{live_items} live items but {} index entries",
                self.index.len()
            ));
        }
        if live_bytes as u64 != self.segments.live_bytes() {
            return Err(format!(
                "{live_bytes} live bytes but stat bytes {}",
                self.segments.live_bytes()
            ));
        }
        let index_bytes = self.index.bytes();
        let held = self.segments.resident() * self.segments.segment_len() + index_bytes;
        if self.segments.committed() > 1 && held > self.memory_limit + index_bytes {
            return Err(format!(
                "holding {held} bytes over limit {}",
                self.memory_limit
            ));
        }
        Ok(())
    }

    /// Counts one segment's live items and bytes, checking them against its
    /// metadata and the index.
    fn check_segment(&self, id: u32) -> Result<(usize, usize), String> {
        let seg = self.segments.get(id);
        if seg.state == State::Free {
            return Ok((0, 0));
        }
        let base = self.segments.base(id);
        let (mut at, mut items, mut bytes) = (0, 0u32, 0usize);
        while at < seg.write_at {
            let header = self.segments.header(base + at);
            if header.bits & DEAD == 0 {
                items += 1;
                bytes += header.total_len();
                let hash = self.index.hash(self.segments.key(base + at, &header));
                if !self.index.holds(hash, base + at) {
                    return Err(format!("live item at {} missing from index", base + at));
                }
            }
            at = self.segments.next_at(at, &header);
        }
        if items != seg.live_items || bytes != seg.live_bytes {
            return Err(format!(
                "segment {id}: counted {items} items/{bytes} bytes, meta {}/{}",
                seg.live_items, seg.live_bytes
            ));
        }
        Ok((items as usize, bytes))
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

    fn item_at(&self, addr: usize, header: &Header) -> Item<'_> {
        Item {
            flags: header.flags,
            cas: header.cas,
            value: self.segments.value(addr, header),
        }
    }

    fn copy_value_to_scratch(&mut self, addr: usize, header: &Header) {
        self.scratch.clear();
        self.scratch
            .extend_from_slice(self.segments.value(addr, header));
    }

    /// Finds the live item under `key`; an expired one is unlinked on the way.
    #[inline]
    fn lookup(&mut self, hash: u64, key: &[u8]) -> Option<(usize, Header)> {
        let (addr, header) = self.index.find(hash, key, self.segments.bytes())?;
        if self.clock.is_expired(header.expiry) {
            self.counts.get_expired += 1;
            self.expiry
                .unlink_expired(&mut self.segments, &mut self.index, hash, addr, &header);
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
        let (addr, len, value_at) = self.place(key, value.len(), flags, expiry, cas)?;
        self.segments.bytes_mut()[value_at..value_at + value.len()].copy_from_slice(value);
        self.link(hash, key, addr, len, expiry);
        Ok(addr)
    }

    /// Room for a new item, its header and key written: its address, length and
    /// the arena address of its value, which the caller fills before `link`.
    #[inline(always)]
    fn place(
        &mut self,
        key: &[u8],
        value_len: usize,
        flags: u32,
        expiry: u32,
        cas: u64,
    ) -> Result<(usize, usize, usize), StoreError> {
        let len = item::item_len(key.len(), value_len, flags, expiry);
        self.eviction
            .reserve_index(&mut self.segments, &mut self.index, &self.clock)?;
        let addr = self.alloc(len, ttl_bucket(expiry, self.clock.now()))?;
        let bytes = &mut self.segments.bytes_mut()[addr..addr + len];
        let fields = item::Fields {
            flags,
            expiry,
            cas,
            access: self.clock.now(),
        };
        let value_at = item::encode(bytes, key, value_len, fields);
        Ok((addr, len, addr + value_at))
    }

    /// Counts a placed and filled item and points the index at it, replacing
    /// any older item under the same key.
    #[inline(always)]
    fn link(&mut self, hash: u64, key: &[u8], addr: usize, len: usize, expiry: u32) {
        self.segments.note_written(addr, len, expiry);
        if let Some(old) = self.index.insert(hash, key, addr, self.segments.bytes()) {
            let header = self.segments.header(old);
            self.segments.mark_dead(old, &header);
        }
    }

    /// Space for `len` bytes at the tail of TTL class `bucket`.
    fn alloc(&mut self, len: usize, bucket: usize) -> Result<usize, StoreError> {
        loop {
            if let Some(addr) = self.segments.alloc_in_tail(len, bucket) {
                return Ok(addr);
            }
            let id = self.eviction.take_segment(
                &mut self.segments,
                &mut self.index,
                &self.clock,
                len,
            )?;
            self.segments.set_tail(id, bucket);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod reserve_tests;
