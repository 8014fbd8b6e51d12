#!/usr/bin/env python3
"""A real ketama client against several pincache instances, driven by tests/ketama.rs.

    ketama_pylibmc.py HOST:PORT,HOST:PORT,... COUNT

pylibmc over the binary protocol with libmemcached's ketama ring, configured the way the
README's "Deploying one per core" section recommends. Talks to its driver line by line:

    stdout  CONFIG <behaviors>             the behaviors libmemcached really has
    stdout  WROTE <n> / READ <n>           phase 1: set COUNT keys, read them all back
    stdout  READY                          waiting for the driver
    stdin   STOPPED <host:port>            the driver stopped one instance
    stdout  GET <key> <hit|miss|error:..>  phase 2: one line per key, same client
    stdout  REWRITE <ok> <failed>          phase 3: set every key again (the dead
                                           instance's keys move to the survivors)
    stdout  REREAD <hits> <misses>
    stdout  DONE

Keys are key:00000 .. ; values are derived from the key so every hit is checked. Any
unexpected exception ends the script with a traceback and a non-zero exit code.
"""

import sys

try:
    import pylibmc
except ImportError:
    print("NO_PYLIBMC", flush=True)
    sys.exit(3)

# The ring: libmemcached's MEMCACHED_BEHAVIOR_KETAMA (100 points per server named
# "host:port-N", or "host-N" on port 11211, hashed with the default one-at-a-time hash;
# keys hashed the same way) = `pincache-bench ring --ring-mode ketama`.
# Failover: with auto_eject + failure_limit 1 a server whose connection fails is taken
# out of the ring at once (its keys then go to the next point, i.e. to the survivors;
# the survivors' own keys do not move) and retried after dead_timeout seconds. Without
# them, libmemcached 1.1.x keeps the dead server in the ring and every request for its
# keys raises pylibmc.ServerDown. remove_failed is the same switch in libmemcached 1.0.x.
BEHAVIORS = {
    "ketama": True,
    "remove_failed": 1,
    "auto_eject": True,
    "failure_limit": 1,
    "retry_timeout": 1,
    "dead_timeout": 60,
    "connect_timeout": 1000,  # ms
    "send_timeout": 2000000,  # us
    "receive_timeout": 2000000,  # us
}


def key(i):
    return "key:%05d" % i


def value(i):
    return ("value-%05d-" % i).encode() * 3


def say(*words):
    print(*words, flush=True)


def main():
    servers = sys.argv[1].split(",")
    count = int(sys.argv[2])
    mc = pylibmc.Client(servers, binary=True, behaviors=BEHAVIORS)
    b = mc.behaviors
    say("CONFIG", "libmemcached=%s" % pylibmc.libmemcached_version,
        *("%s=%s" % (k, b[k]) for k in ("distribution", "hash", "ketama", "ketama_weighted",
                                        "remove_failed", "dead_timeout", "retry_timeout")))

    # Phase 1: every key written and read back through the ring.
    for i in range(count):
        if not mc.set(key(i), value(i)):
            raise SystemExit("set %s failed" % key(i))
    say("WROTE", count)
    got = {}
    keys = [key(i) for i in range(count)]
    for start in range(0, count, 500):
        got.update(mc.get_multi(keys[start:start + 500]))
    bad = [k for i, k in enumerate(keys) if got.get(k) != value(i)]
    if bad:
        raise SystemExit("%d keys did not read back, e.g. %s" % (len(bad), bad[:5]))
    say("READ", count)
    say("READY")

    line = sys.stdin.readline().split()
    if not line or line[0] != "STOPPED":
        raise SystemExit("expected STOPPED, got %r" % line)

    # Phase 2: the same client, one instance gone. Keys of the survivors must still hit.
    for i in range(count):
        try:
            v = mc.get(key(i))
            outcome = "miss" if v is None else ("hit" if v == value(i) else "wrong")
        except pylibmc.Error as e:
            outcome = "error:" + type(e).__name__
        say("GET", key(i), outcome)

    # Phase 3: the client keeps working for writes too: every key can be set again.
    ok = failed = 0
    for i in range(count):
        try:
            if mc.set(key(i), value(i)):
                ok += 1
            else:
                failed += 1
        except pylibmc.Error:
            failed += 1
    say("REWRITE", ok, failed)
    hits = misses = 0
    for i in range(count):
        if mc.get(key(i)) == value(i):
            hits += 1
        else:
            misses += 1
    say("REREAD", hits, misses)
    say("DONE")


if __name__ == "__main__":
    main()
