//! The index: a `hashbrown::HashTable` of 4-byte item locations, keyed by the
//! hash of the item's key. The keys themselves stay in segment memory, so every
//! probe reads the item the location names; callers hand in the arena's bytes.
//!
//! ```text
//!  HashTable<Loc>            arena bytes
//!  +-------+                 +------------------------------+
//!  | Loc --+---- << shift -->| header | key | value | ...    |
//!  +-------+                 +------------------------------+
//! ```

use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};

use super::item::{self, Header};

/// Index entries start with room for this many items.
const INITIAL_CAPACITY: usize = 4096;
/// Memory of hashbrown's table for every 4-byte slot: one control byte.
const BYTES_PER_BUCKET: usize = 5;

/// An item's location: its arena address shifted right by the alignment shift.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Loc(u32);

pub struct Index {
    table: HashTable<Loc>,
    hasher: DefaultHashBuilder,
    /// Addresses are multiples of 1 << shift.
    shift: u32,
}

/// The key of the item at `addr` in `arena`.
#[inline]
fn key_of(arena: &[u8], addr: usize) -> &[u8] {
    let header = item::decode(&arena[addr..]);
    &arena[addr + header.key_at..][..header.key_len]
}

/// `stored == key`, eight bytes at a time: keys are short, and a call to
/// `memcmp` for each probe costs more than the compare itself.
#[inline(always)]
fn same_key(stored: &[u8], key: &[u8]) -> bool {
    let n = key.len();
    if stored.len() != n {
        return false;
    }
    if n < 8 {
        return stored == key;
    }
    let word = |s: &[u8], at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&s[at..at + 8]);
        u64::from_ne_bytes(w)
    };
    let mut at = 0;
    while at + 8 < n {
        if word(stored, at) != word(key, at) {
            return false;
        }
        at += 8;
    }
    // The last eight bytes, overlapping what was compared when n is not a
    // multiple of eight.
    word(stored, n - 8) == word(key, n - 8)
}

/// A hint to load the cache line at `at`; never faults, whatever `at` is.
#[inline(always)]
fn prefetch_read(at: *const u8) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: a prefetch reads nothing architecturally and cannot fault,
        // even for an address outside any mapping; SSE is in the x86_64 baseline.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(at.cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

impl Index {
    pub fn new(shift: u32) -> Index {
        Self::with_capacity(shift, INITIAL_CAPACITY)
    }

    /// An index with room for `items` entries before it grows.
    pub fn with_capacity(shift: u32, items: usize) -> Index {
        Index {
            table: HashTable::with_capacity(items.max(INITIAL_CAPACITY)),
            hasher: DefaultHashBuilder::default(),
            shift,
        }
    }

    #[inline]
    pub fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    #[inline]
    fn loc(&self, addr: usize) -> Loc {
        Loc((addr >> self.shift) as u32)
    }

    #[inline]
    fn addr(&self, loc: Loc) -> usize {
        (loc.0 as usize) << self.shift
    }

    /// The address and header of the item under `key`, expired or not.
    #[inline(always)]
    pub fn find(&self, hash: u64, key: &[u8], arena: &[u8]) -> Option<(usize, Header)> {
        // The header decoded to compare the key is the one we return.
        let mut found = None;
        self.table.find(hash, |&loc| {
            let addr = self.addr(loc);
            let header = item::decode(&arena[addr..]);
            let hit = same_key(&arena[addr + header.key_at..][..header.key_len], key);
            if hit {
                found = Some((addr, header));
            }
            hit
        })?;
        found
    }

    /// Probes for `hash` and starts loading every candidate item's first
    /// cache line, comparing nothing: the probe's own loads (control bytes,
    /// slots) are the other half of what a lookup waits for.
    #[inline]
    pub fn prefetch(&self, hash: u64, arena: &[u8]) {
        self.table.find(hash, |&loc| {
            prefetch_read(arena.as_ptr().wrapping_add(self.addr(loc)));
            false
        });
    }

    /// Whether the index points at the item at `addr`.
    pub fn holds(&self, hash: u64, addr: usize) -> bool {
        let loc = self.loc(addr);
        self.table.find(hash, |&l| l == loc).is_some()
    }

    /// Points `key` at the item at `addr`; returns the address it pointed at before.
    pub fn insert(&mut self, hash: u64, key: &[u8], addr: usize, arena: &[u8]) -> Option<usize> {
        let loc = self.loc(addr);
        let shift = self.shift;
        let old = self
            .table
            .find_mut(hash, |&l| {
                l != loc && same_key(key_of(arena, (l.0 as usize) << shift), key)
            })
            .map(|slot| std::mem::replace(slot, loc));
        match old {
            Some(old) => Some(self.addr(old)),
            None => {
                let hasher = &self.hasher;
                self.table.insert_unique(hash, loc, |&l| {
                    hasher.hash_one(key_of(arena, (l.0 as usize) << shift))
                });
                None
            }
        }
    }

    /// Drops the entry for the item at `addr`, if there is one.
    pub fn remove(&mut self, hash: u64, addr: usize) {
        let loc = self.loc(addr);
        if let Ok(entry) = self.table.find_entry(hash, |&l| l == loc) {
            entry.remove();
        }
    }

    /// The item at `from` moved to `to`.
    pub fn relocate(&mut self, hash: u64, from: usize, to: usize) {
        let (from, to) = (self.loc(from), self.loc(to));
        if let Some(slot) = self.table.find_mut(hash, |&l| l == from) {
            *slot = to;
        }
    }

    /// Whether one more entry needs the table to grow.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.table.capacity() <= self.table.len()
    }

    /// Grows the table for at least one more entry.
    pub fn reserve_one(&mut self, arena: &[u8]) {
        let (hasher, shift) = (&self.hasher, self.shift);
        self.table.reserve(1, |&l| {
            hasher.hash_one(key_of(arena, (l.0 as usize) << shift))
        });
    }

    /// Memory the table holds (or, before its first allocation, will hold).
    pub fn bytes(&self) -> usize {
        self.table
            .allocation_size()
            .max(INITIAL_CAPACITY * 8 / 7 * BYTES_PER_BUCKET)
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn clear(&mut self) {
        self.table.clear();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::same_key;

    #[test]
    fn same_key_agrees_with_slice_equality() {
        let base: Vec<u8> = (0..40u8).map(|b| b.wrapping_mul(37)).collect();
        for n in 0..=base.len() {
            let a = &base[..n];
            assert!(same_key(a, a));
            assert!(!same_key(a, &base[..n.saturating_sub(1)]) || n == 0);
            // One byte off at every position, also inside the overlap.
            for i in 0..n {
                let mut b = a.to_vec();
                b[i] ^= 0x40;
                assert!(!same_key(a, &b), "n {n} differs at {i}");
            }
        }
    }
}
