//! The operations only the meta protocol has: reads that report and hand out the
//! stale-while-revalidate marks (stale `X`, win `W`, already won `Z`), vivify on
//! miss, recache, invalidation. Two bits of an item's header carry the marks;
//! every other operation writes a fresh item, which clears them.

use super::item::{
    idle, read_access, write_access, write_cas, ACCESSED, FETCHED, STALE, TOKEN_SENT,
};
use super::{Store, StoreError};

/// What a meta read asks for besides the item. memcached applies `T`, `N` and
/// `R` in the order the request gives them, so the order matters where two meet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetaRead {
    /// `T`: set this expiration (protocol exptime).
    pub touch: Option<u32>,
    /// `N`: on a miss, create an empty item with this expiration and win.
    pub vivify: Option<u32>,
    /// `N` comes after `T`: on a created item its expiration is the one kept.
    pub vivify_after_touch: bool,
    /// `R`: win when the item expires sooner than this (protocol exptime).
    pub recache: Option<u32>,
    /// `R` comes after `T`: judged on the new expiration, else on the old one.
    pub recache_after_touch: bool,
    /// Mark the item fetched and accessed (every read but `u`).
    pub bump: bool,
    /// Change nothing at all (`me`).
    pub peek: bool,
}

/// An item as a meta read sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetaItem<'a> {
    pub flags: u32,
    pub cas: u64,
    pub value: &'a [u8],
    /// Seconds left to live; `None` = never expires.
    pub ttl: Option<u32>,
    /// Seconds left before this read's `T` and `N` (`None` for an item this
    /// read created: memcached creates it without an expiration, then applies
    /// `N` where it stands among the flags).
    pub ttl_before: Option<u32>,
    /// This read created the item (`N` on a miss).
    pub created: bool,
    /// Whether it had been fetched before this read.
    pub fetched: bool,
    /// Seconds since its last access, before this read (`l`, `la=`).
    pub idle: u32,
    pub stale: bool,
    /// Whether a win had been handed out before this read (`Z`).
    pub token_sent: bool,
    /// This reader wins the right to recache (`W`).
    pub won: bool,
    /// Bytes the item takes in its segment, header included.
    pub size: usize,
}

impl Store {
    /// Seconds left to an item given protocol expiration `exptime` now (`None`:
    /// never expires); what a meta `t` after a `T` or `N` reports.
    pub fn ttl_of(&self, exptime: u32) -> Option<u32> {
        let expiry = self.clock.expiry(exptime);
        (expiry != 0).then(|| expiry.saturating_sub(self.clock.now()))
    }

    /// Sets a live item's expiration without counting a read (meta `ma` with
    /// `T`); false if there is no such item.
    pub fn set_exptime(&mut self, key: &[u8], exptime: u32) -> bool {
        let hash = self.index.hash(key);
        let Some((addr, header)) = self.lookup(hash, key) else {
            return false;
        };
        self.set_expiry(hash, key, addr, &header, exptime).is_some()
    }

    /// The live item under `key`, or one `read.vivify` creates (empty, with the
    /// expiration of whichever of `N` and `T` comes last): its address, and
    /// whether it was created.
    fn find_or_vivify(&mut self, hash: u64, key: &[u8], read: &MetaRead) -> Option<(usize, bool)> {
        if let Some((addr, _)) = self.lookup(hash, key) {
            return Some((addr, false));
        }
        let exptime = match (read.vivify?, read.touch) {
            (_, Some(touch)) if !read.vivify_after_touch => touch,
            (vivify, _) => vivify,
        };
        let expiry = self.clock.expiry(exptime);
        let cas = self.take_cas();
        let addr = self.write_item(hash, key, &[], 0, expiry, cas).ok()?;
        self.counts.total_items += 1;
        Some((addr, true))
    }

    /// A meta read (`mg`, `me`).
    pub fn meta_get(&mut self, key: &[u8], read: MetaRead) -> Option<MetaItem<'_>> {
        let hash = self.index.hash(key);
        let (mut addr, created) = self.find_or_vivify(hash, key, &read)?;
        let now = self.clock.now();
        let left = |expiry: u32| (expiry != 0).then(|| expiry.saturating_sub(now));
        let before = self.segments.header(addr);
        let before_access = read_access(self.segments.bytes(), addr + before.access_at());
        match read.touch {
            Some(exptime) if !created => {
                addr = self.set_expiry(hash, key, addr, &before, exptime)?;
            }
            _ => {}
        }
        let header = self.segments.header(addr);
        let token_sent = header.bits & TOKEN_SENT != 0;
        let stale = header.bits & STALE != 0;
        // memcached hands a created item's win out with `N`; `R` ignores it.
        let mut won = created;
        if let Some(recache) = read.recache {
            let expiry = if read.recache_after_touch {
                header.expiry
            } else {
                before.expiry
            };
            won |= !token_sent && expiry != 0 && expiry < self.clock.expiry(recache);
        }
        won |= stale && !token_sent;
        let bump = read.bump && !read.peek;
        won &= !read.peek;
        let mut bits = header.bits;
        if won {
            bits |= TOKEN_SENT;
        }
        if bump {
            bits |= ACCESSED | FETCHED;
        }
        let bytes = self.segments.bytes_mut();
        bytes[addr] = bits;
        // As `Store::get`: a first fetch leaves the access time alone.
        if bump && header.bits & FETCHED != 0 {
            write_access(bytes, addr + header.access_at(), now);
        }
        let item = self.item_at(addr, &header);
        Some(MetaItem {
            flags: item.flags,
            cas: item.cas,
            value: item.value,
            ttl: left(header.expiry),
            ttl_before: if created { None } else { left(before.expiry) },
            created,
            fetched: header.bits & FETCHED != 0,
            idle: idle(before_access, now),
            stale,
            token_sent,
            won,
            size: header.total_len(),
        })
    }

    /// `md <key> I`: keep the item but mark it stale with a new CAS, so the next
    /// reader wins the right to recache it; `exptime` (`T`) sets its expiration.
    pub fn invalidate(
        &mut self,
        key: &[u8],
        cas: u64,
        exptime: Option<u32>,
    ) -> Result<u64, StoreError> {
        let hash = self.index.hash(key);
        let (mut addr, header) = self.lookup(hash, key).ok_or(StoreError::NotFound)?;
        if cas != 0 && cas != header.cas {
            return Err(StoreError::Exists);
        }
        if let Some(exptime) = exptime {
            addr = self
                .set_expiry(hash, key, addr, &header, exptime)
                .ok_or(StoreError::OutOfMemory)?;
        }
        let header = self.segments.header(addr);
        let new_cas = self.take_cas();
        let bytes = self.segments.bytes_mut();
        write_cas(bytes, addr + header.cas_at, new_cas);
        bytes[addr] = (header.bits | STALE) & !TOKEN_SENT;
        Ok(new_cas)
    }
}
