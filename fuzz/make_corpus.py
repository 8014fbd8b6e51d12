#!/usr/bin/env python3
"""Writes seed inputs for the fuzz targets: realistic memcached binary request
streams (every opcode, quiet batches closed by NOOP, counters, append, flush,
stats, oversized values, malformed headers).

    fuzz/seeds/parse_request/<name>   the raw stream
    fuzz/seeds/parse_text/<name>      text and meta lines (text_streams)
    fuzz/seeds/connection_text/<name> a config byte, then 3-byte ops (text_connection_streams)
    fuzz/seeds/connection/<name>      4 config bytes (see fuzz_targets/connection.rs),
                                      then the same stream

Usage: python3 fuzz/make_corpus.py [OUT_DIR]   (default: fuzz/seeds next to this file)
The output is deterministic, so re-running it does not churn the committed seeds.
"""

import os
import struct
import sys

GET, SET, ADD, REPLACE, DELETE, INCR, DECR, QUIT, FLUSH, GETQ, NOOP, VERSION = range(12)
GETK, GETKQ, APPEND, PREPEND, STAT = 0x0C, 0x0D, 0x0E, 0x0F, 0x10
SETQ, ADDQ, REPLACEQ, DELETEQ, INCRQ, DECRQ, QUITQ, FLUSHQ, APPENDQ, PREPENDQ = range(0x11, 0x1B)
VERBOSITY, TOUCH, GAT, GATQ = 0x1B, 0x1C, 0x1D, 0x1E
SASL_LIST, SASL_AUTH, SASL_STEP, GATK, GATKQ = 0x20, 0x21, 0x22, 0x23, 0x24


def frame(op, key=b"", extras=b"", value=b"", opaque=0, cas=0, magic=0x80, body=None, key_len=None):
    """One request packet; `body`/`key_len` override the header to lie about lengths."""
    total = len(extras) + len(key) + len(value) if body is None else body
    klen = len(key) if key_len is None else key_len
    header = struct.pack(">BBHBBHIIQ", magic, op, klen, len(extras), 0, 0, total, opaque, cas)
    return header + extras + key + value


def store_extras(flags=0, exptime=0):
    return struct.pack(">II", flags, exptime)


def counter_extras(delta=1, initial=0, exptime=0):
    return struct.pack(">QQI", delta, initial, exptime)


def set_(key, value, flags=0, exptime=0, op=SET, cas=0):
    return frame(op, key, store_extras(flags, exptime), value, cas=cas)


def get(key, op=GET):
    return frame(op, key)


def streams():
    s = {}
    s["noop"] = frame(NOOP)
    s["version_noop"] = frame(VERSION) + frame(NOOP)
    s["set_get"] = set_(b"foo", b"bar", flags=0xDEADBEEF) + get(b"foo") + get(b"foo", GETK)
    s["get_miss"] = get(b"nothere") + get(b"nothere", GETK)
    s["add_replace"] = (
        frame(ADD, b"k", store_extras(), b"1")
        + frame(ADD, b"k", store_extras(), b"2")
        + frame(REPLACE, b"k", store_extras(5), b"3")
        + frame(REPLACE, b"missing", store_extras(), b"x")
        + get(b"k")
    )
    s["cas"] = (
        set_(b"c", b"v1")
        + set_(b"c", b"v2", cas=1)
        + set_(b"c", b"v3", cas=12345)
        + frame(DELETE, b"c", cas=999)
        + frame(DELETE, b"c")
        + frame(DELETE, b"c")
    )
    s["quiet_batch"] = (
        set_(b"a", b"1", op=SETQ)
        + set_(b"b", b"2", op=SETQ)
        + get(b"a", GETQ)
        + get(b"zz", GETQ)
        + get(b"b", GETKQ)
        + get(b"zz", GETKQ)
        + frame(DELETEQ, b"a")
        + frame(DELETEQ, b"a")
        + frame(NOOP)
    )
    s["quiet_errors"] = (
        frame(ADDQ, b"x", store_extras(), b"1")
        + frame(ADDQ, b"x", store_extras(), b"2")
        + frame(REPLACEQ, b"nope", store_extras(), b"3")
        + frame(APPENDQ, b"nope", value=b"4")
        + frame(INCRQ, b"x", counter_extras(1))
        + frame(NOOP)
    )
    s["incr_decr"] = (
        frame(INCR, b"n", counter_extras(5, 10))
        + frame(INCR, b"n", counter_extras(5, 10))
        + frame(DECR, b"n", counter_extras(100))
        + frame(INCR, b"n", counter_extras(2**64 - 1))
        + frame(INCR, b"m", counter_extras(1, 0, 0xFFFFFFFF))
        + set_(b"t", b"text")
        + frame(INCR, b"t", counter_extras(1))
        + set_(b"w", b"99")
        + frame(INCR, b"w", counter_extras(1))
        + frame(DECRQ, b"w", counter_extras(3))
        + get(b"w")
        + frame(NOOP)
    )
    s["append_prepend"] = (
        set_(b"ap", b"mid", flags=7)
        + frame(APPEND, b"ap", value=b"-end")
        + frame(PREPEND, b"ap", value=b"start-")
        + frame(APPENDQ, b"ap", value=b"!")
        + frame(PREPENDQ, b"none", value=b"?")
        + get(b"ap")
        + frame(NOOP)
    )
    s["touch_gat"] = (
        set_(b"tt", b"val", exptime=100)
        + frame(TOUCH, b"tt", struct.pack(">I", 10))
        + frame(GAT, b"tt", struct.pack(">I", 0))
        + frame(GATK, b"tt", struct.pack(">I", 5))
        + frame(GATQ, b"miss", struct.pack(">I", 5))
        + frame(GATKQ, b"tt", struct.pack(">I", 5))
        + frame(TOUCH, b"miss", struct.pack(">I", 1))
        + frame(NOOP)
    )
    s["expiry"] = (
        set_(b"e1", b"soon", exptime=1)
        + set_(b"e2", b"later", exptime=3600)
        + set_(b"e3", b"past", exptime=1000000000)
        + set_(b"e4", b"abs-future", exptime=4000000000)
        + get(b"e1")
        + get(b"e3")
    )
    s["flush"] = (
        set_(b"f", b"1")
        + frame(FLUSH)
        + get(b"f")
        + set_(b"g", b"2")
        + frame(FLUSH, extras=struct.pack(">I", 2))
        + frame(FLUSHQ)
        + get(b"g")
        + frame(NOOP)
    )
    s["stats"] = (
        frame(STAT)
        + frame(STAT, b"settings")
        + frame(STAT, b"items")
        + frame(STAT, b"slabs")
        + frame(STAT, b"nonsense")
        + frame(STAT, b"reset")
    )
    s["quit"] = set_(b"q", b"1") + frame(QUIT) + get(b"q")
    s["quitq"] = frame(QUITQ) + frame(NOOP)
    s["sasl"] = (
        frame(SASL_LIST)
        + frame(SASL_AUTH, b"PLAIN", value=b"\x00user\x00wrong")
        + frame(SASL_STEP, b"PLAIN", value=b"x")
        + frame(SASL_AUTH, b"PLAIN", value=b"\x00user\x00pass")
        + set_(b"after", b"auth")
        + get(b"after")
    )
    s["sasl_unauth"] = frame(VERSION) + get(b"k")
    # Unauthenticated frames the parser refuses without buffering.
    s["sasl_unauth_refused"] = frame(0x40) + frame(SET, b"k", store_extras(), b"", body=11 + (2 << 20))
    big = bytes(range(256)) * 300  # 76800 bytes: over a 64 KiB item limit
    s["oversized_set"] = (
        set_(b"big", b"small") + set_(b"big", big) + get(b"big") + frame(NOOP)
    )
    s["oversized_header_only"] = (
        set_(b"big", b"small")
        + frame(SET, b"big", store_extras(), b"", body=8 + 3 + (2 << 20))
    )
    s["large_values"] = b"".join(
        set_(b"L%d" % i, bytes([i]) * 60000) for i in range(2)
    ) + b"".join(get(b"L%d" % i, GETQ) for i in range(2)) + frame(NOOP)
    s["many_small"] = b"".join(
        set_(b"key:%03d" % i, b"v" * (i * 7 % 300), flags=i, op=SETQ if i % 2 else SET)
        for i in range(120)
    ) + b"".join(get(b"key:%03d" % i, GETKQ) for i in range(0, 120, 3)) + frame(NOOP)
    s["max_key"] = set_(b"k" * 250, b"v") + get(b"k" * 250) + get(b"k" * 251)
    s["unknown_opcode"] = frame(0x40, b"key", value=b"0123456789") + frame(NOOP)
    s["verbosity"] = frame(VERBOSITY, extras=struct.pack(">I", 1)) + frame(NOOP)
    s["bad_magic"] = frame(NOOP) + frame(NOOP, magic=0x81)
    s["key_longer_than_body"] = frame(GET, b"abc", key_len=100)
    s["get_with_extras"] = frame(GET, b"k", extras=b"\0\0\0\0")
    s["noop_with_body"] = frame(NOOP, value=b"junk") + frame(NOOP)
    s["body_u32_max"] = frame(0x55, body=0xFFFFFFFF)
    s["set_missing_extras"] = frame(SET, b"k", value=b"v") + frame(NOOP)
    s["truncated"] = (set_(b"a", b"b") + get(b"a"))[:-2]
    s["empty_key_get"] = frame(GET) + frame(NOOP)
    s["mixed_session"] = (
        s["set_get"] + s["quiet_batch"] + s["incr_decr"] + s["append_prepend"] + s["stats"]
    )
    return s


# Config bytes of the connection target for each seed (default: -m 4, -I 64k,
# the connection's own high-water mark, no repeats).
CONFIG = {
    "sasl": bytes([0x10, 0, 0, 1]),
    "sasl_unauth": bytes([0x10, 0, 0, 2]),
    "sasl_unauth_refused": bytes([0x10, 0, 0, 7]),
    "large_values": bytes([0x24, 0, 20, 3]),  # -m 1, repeated with varied keys
    "many_small": bytes([0x20, 2, 8, 4]),  # tiny high-water mark, repeats
    "oversized_set": bytes([0, 3, 0, 5]),
    "expiry": bytes([0, 0, 0, 9]),
    "mixed_session": bytes([0x05, 1, 3, 6]),  # -I 128k -m 2, high-water 1
}


def text_streams():
    """Seeds for parse_text: classic and meta lines as clients send them."""
    big_get = b"get " + b" ".join(b"k%d" % i for i in range(600)) + b"\r\n"
    return {
        "text_get_many": b"get a b c\r\ngets a\r\ngat 10 a b\r\ngats -1 a\r\n",
        "text_storage": b"set k 1 0 5\r\nhello\r\nadd k 0 0 1 noreply\r\nx\r\n"
        b"append k 0 0 2\r\n\r\n\r\ncas k 0 0 1 77\r\ny\r\n",
        "text_arith_delete_touch": b"incr n 1\r\ndecr n 18446744073709551615 noreply\r\n"
        b"delete k 0 noreply\r\ntouch k -1\r\n",
        "text_misc": b"version\r\nverbosity 1\r\nflush_all 10 noreply\r\nstats\r\n"
        b"stats detail dump\r\ncache_memlimit 64\r\nquit\r\n",
        "text_meta": b"mg k v c f s t k O1 q\r\nms k 2 T0 F5 MA\r\nhi\r\nmd k q I\r\n"
        b"ma n N0 J13 D2 MD\r\nmn\r\nme k\r\nmg YQ== b v\r\n",
        "text_errors": b"bogus\r\nget\r\nset k 0 0 -1\r\nset k x 0 1\r\n"
        b"incr k -1\r\nget " + b"k" * 251 + b"\r\n\nGET / HTTP/1.1\r\n",
        "text_bare_newlines": b"set k 0 0 1\nv\r\nget k\n   get   k   \n",
        "text_long_get": big_get,
        "text_unended": b"set k 0 0 1 " + b"x" * 2100,
    }


def text_connection_streams():
    """Seeds for connection_text: a config byte, then ops of three bytes (command, key,
    argument; see fuzz_targets/connection_text.rs). Deterministic pseudo-random streams
    (a fixed LCG), plus one op of every command."""
    seeds = {"ct_every_command": bytes([0] + [b for cmd in range(16) for b in (cmd, 1, 0x21)])}
    state = 12345
    for n in range(6):
        out = [n]
        for _ in range(40 + 20 * n):
            state = (state * 1103515245 + 12345) % (1 << 31)
            out.append((state >> 16) & 0xFF)
        out = out[: 1 + 3 * ((len(out) - 1) // 3)]
        seeds["ct_random_%d" % n] = bytes(out)
    return seeds


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "seeds")
    for target in ("parse_request", "connection"):
        os.makedirs(os.path.join(out, target), exist_ok=True)
    count = 0
    for name, data in sorted(streams().items()):
        with open(os.path.join(out, "parse_request", name), "wb") as f:
            f.write(data)
        with open(os.path.join(out, "connection", name), "wb") as f:
            f.write(CONFIG.get(name, bytes(4)) + data)
        count += 1
    os.makedirs(os.path.join(out, "connection_text"), exist_ok=True)
    for name, data in sorted(text_connection_streams().items()):
        with open(os.path.join(out, "connection_text", name), "wb") as f:
            f.write(data)
    os.makedirs(os.path.join(out, "parse_text"), exist_ok=True)
    for name, data in sorted(text_streams().items()):
        with open(os.path.join(out, "parse_text", name), "wb") as f:
            f.write(data)
    print(f"wrote {count} seeds per binary target and {len(text_streams())} for parse_text under {out}")


if __name__ == "__main__":
    main()
