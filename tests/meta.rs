//! The meta protocol of memcached 1.6.18 (`mg ms md ma mn me`), as a spec: every case runs
//! against pincache and against memcached, and each answer must match the same pattern
//! byte for byte (CAS values are `%d`). Covers every flag 1.6.18 knows, quiet mode closed
//! by `mn`, the stale-while-revalidate flags (`I`, `N`, `R` and the `W`/`X`/`Z` answers)
//! and the error texts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::text::TextClient;
use common::{get, op, status};
use pincache_text_spec as text_spec;

/// Default item size limit (`-I 1m`) of both servers.
const ITEM_SIZE_MAX_BYTES: usize = 1024 * 1024;

/// `ms` with no flags, checked `HD`.
#[track_caller]
fn ms(c: &mut TextClient, key: &str, value: &str) {
    c.call(format!("ms {key} {}\r\n{value}\r\n", value.len()), "HD\r\n");
}

/// The CAS of a key that must exist.
#[track_caller]
fn cas_of(c: &mut TextClient, key: &str) -> u64 {
    c.call(format!("mg {key} c\r\n"), "HD c%d\r\n")[0]
}

// ---------------------------------------------------------------------------------------
// mg
// ---------------------------------------------------------------------------------------

text_spec!(mg_hit_without_flags_is_hd_and_miss_is_en, |server| {
    let mut c = server.text();
    ms(&mut c, "k", "hello");
    c.call("mg k\r\n", "HD\r\n");
    c.call("mg k v\r\n", "VA 5\r\nhello\r\n");
    c.call("mg zz\r\n", "EN\r\n");
    c.call("mg zz v\r\n", "EN\r\n");
});

text_spec!(mg_returns_flags_in_the_order_asked, |server| {
    let mut c = server.text();
    c.call("ms k 5 F7 T0\r\nhello\r\n", "HD\r\n");
    let caps = c.call(
        "mg k s f t v k O123 c\r\n",
        "VA 5 s5 f7 t-1 kk O123 c%d\r\nhello\r\n",
    );
    assert_eq!(caps[0], cas_of(&mut c, "k"));
    c.call("mg k O9 k f\r\n", "HD O9 kk f7\r\n");
});

text_spec!(mg_quiet_hides_en_only, |server| {
    let mut c = server.text();
    ms(&mut c, "k", "hello");
    c.send("mg zz q v\r\nmg k q\r\nmg k q v k\r\nmg zz q k O1\r\n");
    c.call("mn\r\n", "HD\r\nVA 5 kk\r\nhello\r\nMN\r\n");
});

text_spec!(mg_miss_echoes_k_and_o, |server| {
    let mut c = server.text();
    c.call("mg zz k O5 v\r\n", "EN kzz O5\r\n");
    c.call("mg zz O5 s k\r\n", "EN O5 kzz\r\n");
});

text_spec!(mg_base64_keys, |server| {
    let mut c = server.text();
    // AGv/ is the three bytes 00 6b ff: a key text cannot carry.
    c.call("ms AGv/ 2 b F3\r\nhi\r\n", "HD\r\n");
    c.call("mg AGv/ b k v f\r\n", "VA 2 kAGv/ b f3\r\nhi\r\n");
    // The same bytes are a different key from the base64 text itself.
    c.call("mg AGv/ v\r\n", "EN\r\n");
    c.send("md AGv/ b q\r\nmg AGv/ b v\r\n");
    c.call("mn\r\n", "EN\r\nMN\r\n");
});

text_spec!(mg_flag_errors, |server| {
    let mut c = server.text();
    ms(&mut c, "k", "x");
    // E (explicit CAS) came after 1.6.18.
    c.call("mg k E5 v\r\n", "CLIENT_ERROR invalid flag\r\n");
    c.call("mg k v v\r\n", "CLIENT_ERROR duplicate flag\r\n");
    c.call(
        "mg k O12345678901234567890123456789012345 v\r\n",
        "CLIENT_ERROR opaque token too long\r\n",
    );
    c.call("mg k Oab v\r\n", "VA 1 Oab\r\nx\r\n");
    c.call("mg\r\n", "ERROR\r\n");
    c.call("mx k\r\n", "ERROR\r\n");
    c.call(
        format!("mg {} v\r\n", "k".repeat(251)),
        "CLIENT_ERROR bad command line format\r\n",
    );
});

// ---------------------------------------------------------------------------------------
// ms
// ---------------------------------------------------------------------------------------

text_spec!(ms_modes, |server| {
    let mut c = server.text();
    c.call("ms k 2 c\r\nhi\r\n", "HD c%d\r\n");
    c.call("ms k 2 ME\r\nhi\r\n", "NS\r\n");
    c.call("ms k 2 MR\r\nHI\r\n", "HD\r\n");
    c.call("ms zz 2 MR\r\nhi\r\n", "NS\r\n");
    c.call("ms k 1 MA\r\n+\r\n", "HD\r\n");
    c.call("ms k 1 MP\r\n-\r\n", "HD\r\n");
    c.call("ms zz 1 MA\r\nx\r\n", "NS\r\n");
    c.call("ms zz 1 MP\r\nx\r\n", "NS\r\n");
    c.call("mg k v\r\n", "VA 4\r\n-HI+\r\n");
    c.call("ms k 1 MS\r\n=\r\n", "HD\r\n");
    c.call("ms n 1 ME\r\nn\r\n", "HD\r\n");
    c.call("mg k v\r\nmg n v\r\n", "VA 1\r\n=\r\nVA 1\r\nn\r\n");
    // An unknown mode is an error, and the data block is swallowed.
    c.call(
        "ms k 1 MX\r\nx\r\nmn\r\n",
        "CLIENT_ERROR invalid mode for ms M token\r\nMN\r\n",
    );
});

text_spec!(ms_flags_ttl_and_returned_flags, |server| {
    let mut c = server.text();
    c.call("ms k 3 F42 T100 k O7\r\nabc\r\n", "HD kk O7\r\n");
    c.call("mg k f t v\r\n", "VA 3 f42 t100\r\nabc\r\n");
    c.call("ms k 2 T-1\r\nhi\r\n", "HD\r\n");
    c.call("mg k v\r\n", "EN\r\n");
});

text_spec!(ms_cas_compare, |server| {
    let mut c = server.text();
    c.call("ms zz 1 C1\r\nx\r\n", "NF\r\n");
    ms(&mut c, "k", "x");
    let cas = cas_of(&mut c, "k");
    c.call(format!("ms k 1 C{}\r\ny\r\n", cas + 1000), "EX\r\n");
    let new = c.call(format!("ms k 1 C{cas} c\r\nz\r\n"), "HD c%d\r\n")[0];
    assert_ne!(new, cas);
    assert_eq!(new, cas_of(&mut c, "k"));
    c.call("mg k v\r\n", "VA 1\r\nz\r\n");
});

text_spec!(ms_quiet_hides_hd_but_not_ns, |server| {
    let mut c = server.text();
    c.send("ms k 2 q\r\nhi\r\nms k 2 q k\r\nhi\r\nms k 2 q ME\r\nho\r\n");
    c.call("mn\r\n", "NS\r\nMN\r\n");
});

text_spec!(ms_errors, |server| {
    let mut c = server.text();
    c.call(
        "ms k 2\r\nhiX\r\nmg k v\r\n",
        "CLIENT_ERROR bad data chunk\r\nERROR\r\nEN\r\n",
    );
    c.call("ms k\r\n", "CLIENT_ERROR bad command line format\r\n");
    c.call("ms k x\r\n", "CLIENT_ERROR bad command line format\r\n");
    c.call(
        "ms k 1 Z\r\nx\r\nmn\r\n",
        "CLIENT_ERROR invalid flag\r\nMN\r\n",
    );
});

text_spec!(ms_too_large_removes_the_old_item_in_every_mode, |server| {
    let mut c = server.text();
    let size = ITEM_SIZE_MAX_BYTES + 1;
    for mode in ["MS", "ME", "MA", "MP", "MR"] {
        ms(&mut c, "b", "x");
        let mut req = format!("ms b {size} {mode}\r\n").into_bytes();
        req.resize(req.len() + size, b'v');
        req.extend_from_slice(b"\r\nmg b v\r\n");
        c.call(&req, "SERVER_ERROR object too large for cache\r\nEN\r\n");
    }
    // q does not hide the error.
    let mut req = format!("ms b {size} q\r\n").into_bytes();
    req.resize(req.len() + size, b'v');
    req.extend_from_slice(b"\r\nmn\r\n");
    c.call(&req, "SERVER_ERROR object too large for cache\r\nMN\r\n");
});

text_spec!(ms_value_containing_crlf, |server| {
    let mut c = server.text();
    c.call("ms k 6\r\nHD\r\nEN\r\n", "HD\r\n");
    c.call("mg k v s\r\n", "VA 6 s6\r\nHD\r\nEN\r\n");
});

// ---------------------------------------------------------------------------------------
// md, ma, mn, me
// ---------------------------------------------------------------------------------------

text_spec!(md_hit_miss_quiet_and_cas, |server| {
    let mut c = server.text();
    c.call("md zz\r\n", "NF\r\n");
    ms(&mut c, "k", "x");
    c.call("md k C999999\r\n", "EX\r\n");
    let cas = cas_of(&mut c, "k");
    c.call(format!("md k C{cas} O9 k\r\n"), "HD O9 kk\r\n");
    c.call("mg k\r\n", "EN\r\n");
    ms(&mut c, "k", "x");
    c.send("md k q\r\nmd k q\r\n");
    c.call("mn\r\n", "NF\r\nMN\r\n");
});

text_spec!(ma_incr_decr_modes_and_autovivify, |server| {
    let mut c = server.text();
    c.call("ma zz\r\n", "NF\r\n");
    c.call("ma zz N0 J10\r\n", "HD\r\n");
    c.call("ma zz v\r\n", "VA 2\r\n11\r\n");
    c.call("ma zz MD D5 v\r\n", "VA 1\r\n6\r\n");
    c.call("ma zz M- D100 v t c\r\n", "VA 1 t-1 c%d\r\n0\r\n");
    c.call("ma zz M+ D3 v\r\n", "VA 1\r\n3\r\n");
    c.call("ma zz MI D18446744073709551615 v\r\n", "VA 1\r\n2\r\n");
    c.call("ma zz N0 J5 T100 t v\r\n", "VA 1 t100\r\n3\r\n");
    c.call("ma zz C1\r\n", "EX\r\n");
    let cas = cas_of(&mut c, "zz");
    c.call(format!("ma zz C{cas} O4 k\r\n"), "HD O4 kzz\r\n");
    ms(&mut c, "s", "x");
    c.call(
        "ma s\r\n",
        "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
    );
    c.call(
        "ma zz MX\r\n",
        "CLIENT_ERROR invalid mode for ma M token\r\n",
    );
});

text_spec!(mn_alone_and_me, |server| {
    let mut c = server.text();
    c.call("mn\r\n", "MN\r\n");
    c.call("me zz\r\n", "EN\r\n");
    ms(&mut c, "k", "x");
    // A debug line: size= is each server's own item size (docs/protocols.md).
    c.call(
        "me k\r\n",
        "ME k exp=-1 la=0 cas=%d fetch=no cls=1 size=%d\r\n",
    );
});

// ---------------------------------------------------------------------------------------
// Stale-while-revalidate
// ---------------------------------------------------------------------------------------

text_spec!(md_invalidate_marks_stale_one_winner, |server| {
    let mut c = server.text();
    c.call("ms w 3 T100\r\nabc\r\n", "HD\r\n");
    c.call("md w I T30\r\n", "HD\r\n");
    let first = c.call("mg w v c t\r\n", "VA 3 c%d t30 X W\r\nabc\r\n")[0];
    let again = c.call("mg w v c\r\n", "VA 3 c%d Z X\r\nabc\r\n")[0];
    assert_eq!(first, again);
    c.call("mg w v\r\n", "VA 3 Z X\r\nabc\r\n");
    // The winner's plain set ends the stale state.
    c.call("ms w 3\r\nnew\r\n", "HD\r\n");
    c.call("mg w v\r\n", "VA 3\r\nnew\r\n");
});

text_spec!(mg_n_vivifies_a_miss_for_one_winner, |server| {
    let mut c = server.text();
    let cas = c.call("mg nv N30 v c t\r\n", "VA 0 c%d t30 W\r\n\r\n")[0];
    c.call("mg nv N30 v c t\r\n", &format!("VA 0 c{cas} t30 Z\r\n\r\n"));
    c.call("mg nv v\r\n", "VA 0 Z\r\n\r\n");
    ms(&mut c, "nv", "x");
    c.call("mg nv v\r\n", "VA 1\r\nx\r\n");
});

text_spec!(mg_r_gives_one_recache_win_below_the_ttl, |server| {
    let mut c = server.text();
    c.call("ms r 1 T100\r\nx\r\n", "HD\r\n");
    c.call("mg r R30 v\r\n", "VA 1\r\nx\r\n");
    c.call("mg r R200 v t\r\n", "VA 1 t100 W\r\nx\r\n");
    c.call("mg r R200 v\r\n", "VA 1 Z\r\nx\r\n");
    c.call("mg r v\r\n", "VA 1 Z\r\nx\r\n");
});

// ---------------------------------------------------------------------------------------
// Framing
// ---------------------------------------------------------------------------------------

text_spec!(meta_request_split_at_every_byte, |server| {
    let req = b"ms k 4 F1 T0\r\nh\r\ni\r\nmg k v f\r\nmn\r\n";
    let want = "HD\r\nVA 4 f1\r\nh\r\ni\r\nMN\r\n";
    for at in 1..req.len() {
        let mut c = server.text();
        c.send(&req[..at]);
        std::thread::sleep(std::time::Duration::from_millis(2));
        c.send(&req[at..]);
        c.expect(want);
    }
});

text_spec!(a_hundred_pipelined_quiet_gets_closed_by_mn, |server| {
    let mut c = server.text();
    for i in (0..100).step_by(3) {
        ms(&mut c, &format!("k{i}"), &format!("v{i}"));
    }
    let mut req = String::new();
    let mut want = String::new();
    for i in 0..100 {
        req += &format!("mg k{i} q k v\r\n");
        if i % 3 == 0 {
            want += &format!("VA {} kk{i}\r\nv{i}\r\n", format!("v{i}").len());
        }
    }
    req += "mn\r\n";
    want += "MN\r\n";
    c.call(req, &want);
});

text_spec!(mg_h_reports_the_previous_fetch, |server| {
    let mut c = server.text();
    ms(&mut c, "k", "x");
    c.call("mg k h\r\n", "HD h0\r\n");
    c.call("mg k h v\r\n", "VA 1 h1\r\nx\r\n");
    // u: no bump, but h still reports the earlier fetch.
    c.call("mg k u h\r\n", "HD h1\r\n");
});

text_spec!(mg_l_reports_seconds_since_the_last_access, |server| {
    let mut c = server.text();
    ms(&mut c, "k", "x");
    c.call("mg k h l\r\n", "HD h0 l0\r\n");
    c.call("mg k l v h\r\n", "VA 1 l0 h1\r\nx\r\n");
    c.call("mg zz l\r\n", "EN\r\n");
    c.call("mg new N30 l h t\r\n", "HD l0 h0 t30 W\r\n");
    // Every meta command takes `l`; only mg answers it.
    c.call("ms k 1 l\r\ny\r\nmd zz l\r\n", "HD\r\nNF\r\n");
    c.call("ms n 1\r\n5\r\nma n l v\r\n", "HD\r\nVA 1\r\n6\r\n");
    c.call(
        "me k\r\n",
        "ME k exp=-1 la=0 cas=%d fetch=no cls=1 size=%d\r\n",
    );
});

// Seconds since the last access, as memcached's segmented LRU counts them: a set
// starts the count; a first fetch leaves it, a second restarts it (memcached may do
// that a moment later, so it is checked after the next sleep); an incr restarts it
// without being a fetch; `u`, `T`, `me` and `md I` leave it. `l` reports the count
// before this fetch. Two sleeps of 2.2 s; ages after one are checked within 2..=22.
text_spec!(l_la_and_age_count_from_the_last_access, |server| {
    let mut c = server.text();
    for key in ["once", "peek", "touched", "stale", "inc"] {
        ms(&mut c, key, "1");
    }
    let aged = |n: u64| assert!((2..=22).contains(&n), "{n} seconds");
    std::thread::sleep(std::time::Duration::from_millis(2200));
    let items = c.stats("items");
    let age = items.iter().find(|(k, _)| k == "items:1:age").unwrap();
    aged(age.1.parse().unwrap());
    let first = c.call("mg once l\r\n", "HD l%d\r\n")[0];
    aged(first);
    assert_eq!(c.call("mg once l h\r\n", "HD l%d h1\r\n")[0], first);
    aged(c.call("mg peek u l\r\nmg peek u\r\n", "HD l%d\r\nHD\r\n")[0]);
    let pattern = "ME peek exp=-1 la=%d cas=%d fetch=no cls=1 size=%d\r\n";
    aged(c.call("me peek\r\n", pattern)[0]);
    aged(c.call("mg peek l\r\n", "HD l%d\r\n")[0]);
    aged(c.call("mg touched T100 l\r\n", "HD l%d\r\n")[0]);
    aged(c.call("md stale I\r\nmg stale l\r\n", "HD\r\nHD l%d X W\r\n")[0]);
    c.call("ma inc\r\nmg inc l h\r\n", "HD\r\nHD l0 h0\r\n");
    std::thread::sleep(std::time::Duration::from_millis(2200));
    // `once` was accessed (its second fetch) 2.2 s after `peek` was last.
    let once = c.call("mg once l\r\n", "HD l%d\r\n")[0];
    let peek = c.call("mg peek l\r\n", "HD l%d\r\n")[0];
    aged(once);
    assert!(once + 2 <= peek, "once l{once}, peek l{peek}");
    aged(c.call("mg touched l\r\n", "HD l%d\r\n")[0]);
});

text_spec!(
    meta_set_reads_back_over_binary_with_the_same_cas,
    |server| {
        let mut c = server.text();
        let cas = c.call("ms shared 5 F9 c\r\nvalue\r\n", "HD c%d\r\n")[0];
        let mut b = server.connect();
        let r = b.call(&get(op::GET, "shared"));
        r.expect(op::GET, status::OK);
        assert_eq!(
            (r.value.as_slice(), r.flags(), r.cas),
            (&b"value"[..], 9, cas)
        );
    }
);

text_spec!(ma_quiet, |server| {
    let mut c = server.text();
    // q hides HD of a hit (and with v its value); a miss and an autovivify still answer.
    c.send("ma zz q\r\nma zz q N0 J5\r\nma zz q\r\nma zz q v\r\n");
    c.call("mn\r\n", "NF\r\nHD\r\nMN\r\n");
    c.call("mg zz v\r\n", "VA 1\r\n7\r\n");
});

text_spec!(meta_c0_compares_with_zero, |server| {
    let mut c = server.text();
    // C0 is a CAS like any other: no item has it.
    c.call("ms zz 1 C0\r\nx\r\n", "NF\r\n");
    ms(&mut c, "k", "x");
    c.call("ms k 1 C0\r\ny\r\nmd k C0\r\n", "EX\r\nEX\r\n");
    c.call("mg k v\r\n", "VA 1\r\nx\r\n");
});

text_spec!(mg_t_reports_ttl_and_capital_t_updates_it, |server| {
    let mut c = server.text();
    c.call("ms k 1 T100\r\nx\r\n", "HD\r\n");
    c.call("mg k t\r\n", "HD t100\r\n");
    c.call("mg k T0 t\r\n", "HD t-1\r\n");
    c.call("mg k t T5\r\n", "HD t-1\r\n");
    c.call("mg k t\r\n", "HD t5\r\n");
});

text_spec!(ms_invalidate_with_an_old_cas_stays_stale, |server| {
    let mut c = server.text();
    c.call("ms w 3 T100\r\nabc\r\n", "HD\r\n");
    c.call("md w I T30\r\n", "HD\r\n");
    c.call("mg w c\r\n", "HD c%d X W\r\n");
    c.call("ms w 3 C1 I\r\nnew\r\n", "HD\r\n");
    c.call("mg w v\r\n", "VA 3 Z X\r\nnew\r\n");
});

text_spec!(ms_append_and_prepend_take_c0_as_no_cas, |server| {
    let mut c = server.text();
    ms(&mut c, "k", "x");
    c.call("ms k 1 MA C0\r\ny\r\n", "HD\r\n");
    c.call("ms k 1 MP C0\r\nz\r\n", "HD\r\n");
    c.call("mg k v\r\n", "VA 3\r\nzxy\r\n");
    c.call("ms k 1 MA C999\r\ny\r\n", "EX\r\n");
    // The other modes compare with 0 (no item has it); add ignores a CAS.
    c.call("ms k 1 MS C0\r\ny\r\nms k 1 MR C0\r\ny\r\n", "EX\r\nEX\r\n");
    c.call(
        "ms k 1 ME C0\r\ny\r\nms zz 1 MA C0\r\ny\r\n",
        "NS\r\nNS\r\n",
    );
    c.call("mg k v\r\n", "VA 3\r\nzxy\r\n");
});

text_spec!(mg_applies_t_n_and_r_where_they_stand, |server| {
    let mut c = server.text();
    // A created item has no TTL until its N is passed; T and N both set it, the last wins.
    c.call("mg m1 t N30\r\n", "HD t-1 W\r\n");
    c.call("mg m2 N30 t\r\n", "HD t30 W\r\n");
    c.call("mg m3 T5 N30 t\r\nmg m3 t\r\n", "HD t30 W\r\nHD t30 Z\r\n");
    c.call("mg m4 N30 t T5\r\nmg m4 t\r\n", "HD t30 W\r\nHD t5 Z\r\n");
    // On a hit, t reports the TTL as of its place; R judges the TTL as of its place.
    c.call("ms n0 2\r\n99\r\n", "HD\r\n");
    c.call("mg n0 t v T100\r\n", "VA 2 t-1\r\n99\r\n");
    c.call("mg n0 t\r\n", "HD t100\r\n");
    ms(&mut c, "r", "va3");
    c.call("mg r R200 h T100\r\n", "HD h0\r\n");
    c.call("mg r R200 t\r\n", "HD t100 W\r\n");
    c.call("ms r3 1 T100\r\nx\r\n", "HD\r\n");
    c.call("mg r3 T300 R200 t\r\n", "HD t300\r\n");
    c.call("mg r3 R400 T300 t\r\n", "HD t300 W\r\n");
});

text_spec!(ma_applies_t_and_n_where_they_stand, |server| {
    let mut c = server.text();
    // Created: N0 after T100 leaves no TTL; T after N stays.
    c.call("ma n1 q T100 N0 t c\r\nmn\r\n", "HD t-1 c%d\r\nMN\r\n");
    c.call("mg n1 t\r\n", "HD t-1\r\n");
    c.call("ma n2 N50 t T100\r\n", "HD t50\r\n");
    c.call("mg n2 t\r\n", "HD t100\r\n");
    // A hit changed in place keeps its T; one that grew (a new item) does not,
    // though the answer reports it. Each request waits for the answer before it.
    c.call("set n3 0 0 1\r\n5\r\n", "STORED\r\n");
    c.call("ma n3 T100 t\r\n", "HD t100\r\n");
    c.call("mg n3 t h\r\n", "HD t100 h0\r\n");
    c.call("set n4 0 0 1\r\n9\r\n", "STORED\r\n");
    c.call("ma n4 T100 t v\r\n", "VA 2 t100\r\n10\r\n");
    c.call("mg n4 t v\r\n", "VA 2 t-1\r\n10\r\n");
});

text_spec!(md_and_ma_word_flag_errors_alike, |server| {
    let mut c = server.text();
    let generic = "CLIENT_ERROR invalid or duplicate flag\r\n";
    for line in [
        "md k q q", "md k Z", "md k Tx", "md k Cx", "ma k t t", "ma k Z",
    ] {
        c.call(format!("{line}\r\n"), generic);
    }
    for line in ["ma k Nx", "ma k Jx", "ma k Dx", "ma k MXY"] {
        c.call(format!("{line}\r\n"), generic);
    }
    let long = format!("O{}", "1".repeat(34));
    c.call(
        format!("md k {long}\r\nma k {long}\r\n"),
        "CLIENT_ERROR opaque token too long\r\nCLIENT_ERROR opaque token too long\r\n",
    );
    c.call(format!("md k Tx {long}\r\n"), generic);
    // mg and ms keep their own words; a bad token outranks a long opaque.
    c.call(
        format!("mg k Tx {long}\r\nmg k {long} Z\r\n"),
        "CLIENT_ERROR bad token in command line format\r\nCLIENT_ERROR invalid flag\r\n",
    );
    c.call(
        "ma k MX\r\n",
        "CLIENT_ERROR invalid mode for ma M token\r\n",
    );
});
