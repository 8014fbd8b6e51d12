//! Store tests for values read in place: an item reserved ahead of its value,
//! then completed or abandoned, while the rest of the store carries on.

use super::tests::{store, value};
use super::*;

/// Reserves `key` and writes `fill` into all of its value.
fn reserve_filled(s: &mut Store, key: &[u8], len: usize, fill: u8) -> Reservation {
    let r = s.reserve(key, len, 7, 0).unwrap();
    s.value_mut(&r).fill(fill);
    r
}

#[test]
fn a_completed_reservation_reads_back_like_a_set() {
    let mut s = store(8);
    let old = s.store(Mode::Set, b"k", b"old", 1, 0, 0).unwrap();
    let r = reserve_filled(&mut s, b"k", 100_000, b'v');
    // Until complete, the key keeps its old value and the reservation is not live.
    assert_eq!(value(&mut s, b"k").unwrap(), b"old");
    assert_eq!(s.stats().curr_items, 1);
    s.check_consistency().unwrap();
    let cas = s.complete(r, Mode::Set, 0, false).unwrap();
    assert!(cas > old);
    let item = s.get(b"k").unwrap();
    assert_eq!((item.flags, item.cas, item.value.len()), (7, cas, 100_000));
    assert!(item.value.iter().all(|&b| b == b'v'));
    assert_eq!(s.stats().curr_items, 1);
    s.check_consistency().unwrap();
}

#[test]
fn an_abandoned_reservation_leaves_the_old_value_and_no_live_bytes() {
    let mut s = store(8);
    s.store(Mode::Set, b"k", b"old", 0, 0, 0).unwrap();
    let before = s.stats();
    let r = reserve_filled(&mut s, b"k", 50_000, b'x');
    s.abandon(r);
    assert_eq!(value(&mut s, b"k").unwrap(), b"old");
    let after = s.stats();
    assert_eq!(
        (after.curr_items, after.bytes, after.total_items),
        (before.curr_items, before.bytes, before.total_items)
    );
    assert_eq!(s.segments.pinned(), 0);
    s.check_consistency().unwrap();
}

#[test]
fn completion_applies_add_replace_and_cas_at_that_moment() {
    let mut s = store(8);
    let r = reserve_filled(&mut s, b"k", 20_000, b'a');
    assert_eq!(
        s.complete(r, Mode::Replace, 0, false),
        Err(StoreError::NotFound)
    );
    let r = reserve_filled(&mut s, b"k", 20_000, b'a');
    let cas = s.complete(r, Mode::Add, 0, false).unwrap();
    let r = reserve_filled(&mut s, b"k", 20_000, b'b');
    assert_eq!(s.complete(r, Mode::Add, 0, false), Err(StoreError::Exists));
    let r = reserve_filled(&mut s, b"k", 20_000, b'c');
    // Another client's SET lands while the value arrives: the CAS no longer matches.
    let newer = s.store(Mode::Set, b"k", b"d", 0, 0, 0).unwrap();
    assert_eq!(
        s.complete(r, Mode::Set, cas, false),
        Err(StoreError::Exists)
    );
    let r = reserve_filled(&mut s, b"k", 20_000, b'e');
    s.complete(r, Mode::Set, newer, false).unwrap();
    assert_eq!(value(&mut s, b"k").unwrap(), vec![b'e'; 20_000]);
    assert_eq!(s.segments.pinned(), 0);
    s.check_consistency().unwrap();
}

#[test]
fn a_segment_with_a_value_arriving_is_never_evicted_or_reused() {
    let mut s = store(8);
    let r = s.reserve(b"big", 300_000, 0, 0).unwrap();
    s.value_mut(&r)[..100_000].fill(b'z');
    // Churn through the whole cache several times over.
    for i in 0..40_000u32 {
        s.store(
            Mode::Set,
            format!("key:{i}").as_bytes(),
            &[1u8; 900],
            0,
            0,
            0,
        )
        .unwrap();
    }
    assert!(s.stats().evictions > 0);
    s.check_consistency().unwrap();
    s.value_mut(&r)[100_000..].fill(b'z');
    s.complete(r, Mode::Set, 0, false).unwrap();
    let v = value(&mut s, b"big").unwrap();
    assert!(v.len() == 300_000 && v.iter().all(|&b| b == b'z'));
    s.check_consistency().unwrap();
}

#[test]
fn a_flush_while_a_value_arrives_empties_the_cache_but_not_its_room() {
    let mut s = store(8);
    for i in 0..100u32 {
        s.store(Mode::Set, format!("key:{i}").as_bytes(), b"v", 0, 0, 0)
            .unwrap();
    }
    let r = reserve_filled(&mut s, b"big", 30_000, b'q');
    s.flush(0);
    assert_eq!(s.stats().curr_items, 0);
    assert_eq!(value(&mut s, b"key:1"), None);
    s.check_consistency().unwrap();
    // Writes after the flush go around the pinned segment.
    s.store(Mode::Set, b"after", b"a", 0, 0, 0).unwrap();
    s.complete(r, Mode::Set, 0, false).unwrap();
    assert_eq!(value(&mut s, b"big").unwrap(), vec![b'q'; 30_000]);
    assert_eq!(s.stats().curr_items, 2);
    s.check_consistency().unwrap();
    // A flush with a value arriving, then abandoned: the segment is freed.
    let r = reserve_filled(&mut s, b"big2", 30_000, b'q');
    s.flush(0);
    s.abandon(r);
    assert_eq!(s.stats().segments_used, 0);
    s.check_consistency().unwrap();
}

#[test]
fn a_wholly_expired_segment_is_not_swept_under_an_arriving_value() {
    let mut s = store(8);
    s.store(Mode::Set, b"short", b"v", 0, 2, 0).unwrap();
    let r = s.reserve(b"big", 30_000, 0, 2).unwrap();
    s.value_mut(&r).fill(b's');
    s.advance_clock(10);
    s.run_due_work(1000);
    assert_eq!(s.stats().segments_expired, 0);
    assert_eq!(s.stats().segments_used, 1);
    s.check_consistency().unwrap();
    s.complete(r, Mode::Set, 0, false).unwrap();
    // Stored already expired: never returned, swept once the value is in.
    assert_eq!(value(&mut s, b"big"), None);
    s.advance_clock(1);
    s.run_due_work(1000);
    assert_eq!(s.stats().segments_used, 0);
    s.check_consistency().unwrap();
}

#[test]
fn at_most_a_quarter_of_the_segments_are_pinned() {
    let mut s = store(16);
    let allowed = s.eviction.segments_allowed(&s.segments, &s.index);
    // Each reservation takes nearly a whole segment, so each pins its own.
    let big = (1 << 20) - 200;
    let mut held = Vec::new();
    while let Some(r) = s.reserve(format!("k{}", held.len()).as_bytes(), big, 0, 0) {
        held.push(r);
        assert!(held.len() <= allowed);
    }
    assert_eq!(held.len(), allowed / 4);
    assert_eq!(s.segments.pinned(), allowed / 4);
    assert!(s.reserve(b"small", 100, 0, 0).is_none());
    let first = held.remove(0);
    s.abandon(first);
    assert!(
        s.reserve(b"over", 1 << 20, 0, 0).is_none(),
        "over the size limit"
    );
    held.push(s.reserve(b"small", 100, 0, 0).unwrap());
    for r in held {
        s.abandon(r);
    }
    assert_eq!(s.segments.pinned(), 0);
    s.check_consistency().unwrap();
}

#[test]
fn a_stop_with_a_value_arriving_restarts_without_it() {
    use super::tests::{cleanup, memory_path, open};
    let path = memory_path("arriving");
    let (mut s, _) = open(8, &path);
    s.store(Mode::Set, b"k", b"old", 0, 0, 0).unwrap();
    let r = reserve_filled(&mut s, b"k", 40_000, b'n');
    s.abandon(r);
    let _half_written = reserve_filled(&mut s, b"other", 40_000, b'h');
    // A clean stop with `_half_written` still arriving.
    s.save_for_restart().unwrap();
    drop(s);
    let (mut s, start) = open(8, &path);
    assert!(
        matches!(start, Start::Restored { items: 1, .. }),
        "{start:?}"
    );
    assert_eq!(value(&mut s, b"k").unwrap(), b"old");
    assert_eq!(value(&mut s, b"other"), None);
    s.check_consistency().unwrap();
    cleanup(&path);
}

#[test]
fn an_invalidating_completion_with_an_older_cas_stores_stale_keeping_the_ttl() {
    let mut s = store(8);
    // (the item's exptime, the late request's exptime): the kept expiration may
    // or may not fit the header reserved for the request's.
    for (n, (kept, asked)) in [(1000, 0), (0, 50), (2000, 50), (0, 0)]
        .into_iter()
        .enumerate()
    {
        let key = format!("k{n}");
        let key = key.as_bytes();
        let old = s.store(Mode::Set, key, b"v1", 0, kept, 0).unwrap();
        s.store(Mode::Set, key, b"v2", 0, kept, 0).unwrap();
        let r = s.reserve(key, 30_000, 5, asked).unwrap();
        s.value_mut(&r).fill(b'z');
        let cas = s.complete(r, Mode::Set, old, true).unwrap();
        let item = s.meta_get(key, MetaRead::default()).unwrap();
        assert_eq!((item.cas, item.flags, item.value.len()), (cas, 5, 30_000));
        assert!(item.value.iter().all(|&b| b == b'z'));
        assert!(item.stale && item.won, "{n}: {item:?}");
        match (kept, item.ttl) {
            (0, None) => {}
            (kept, Some(left)) => assert!(left <= kept && left + 5 >= kept, "{n}: t{left}"),
            (_, None) => panic!("{n}: the kept TTL was lost"),
        }
        assert_eq!(s.segments.pinned(), 0);
        s.check_consistency().unwrap();
    }
    // Not invalidating, the same older CAS is refused.
    let r = s.reserve(b"k0", 100, 0, 0).unwrap();
    assert_eq!(s.complete(r, Mode::Set, 1, false), Err(StoreError::Exists));
}
