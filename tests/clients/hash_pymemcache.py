#!/usr/bin/env python3
"""A real text-protocol client against several servers, driven by tests/text_clients.rs.

    hash_pymemcache.py HOST:PORT,HOST:PORT,... COUNT

pymemcache's HashClient (rendezvous hashing over the servers, text protocol) sets COUNT
keys with values derived from the key, reads them all back one by one and with
get_many, checks a gets/cas round trip, incr, delete and a miss, and prints:

    SET <n>            keys the client stored (set returned True)
    GET <hits> <bad>   single gets: hits, and hits with a wrong value
    MANY <hits> <bad>  get_many over all keys in batches of 100
    CAS <ok>           gets + cas with the right token stored, with a wrong one refused
    OK                 the end

Any unexpected exception ends the script with a traceback and a non-zero exit code.
"""

import sys

try:
    from pymemcache.client.hash import HashClient
except ImportError:
    print("NO_PYMEMCACHE", flush=True)
    sys.exit(3)


def value_of(key):
    # Different lengths and bytes per key, so a value read from the wrong key shows.
    return (key * (1 + len(key) % 7)).encode()


def main():
    servers = []
    for s in sys.argv[1].split(","):
        host, port = s.rsplit(":", 1)
        servers.append((host, int(port)))
    count = int(sys.argv[2])
    client = HashClient(servers, connect_timeout=5, timeout=10, retry_attempts=1)
    keys = ["key:%05d" % i for i in range(count)]

    stored = sum(1 for k in keys if client.set(k, value_of(k), noreply=False))
    print("SET %d" % stored, flush=True)

    hits = bad = 0
    for k in keys:
        v = client.get(k)
        if v is not None:
            hits += 1
            bad += v != value_of(k)
    print("GET %d %d" % (hits, bad), flush=True)

    hits = bad = 0
    for i in range(0, count, 100):
        batch = keys[i : i + 100]
        got = client.get_many(batch)
        hits += len(got)
        bad += sum(1 for k, v in got.items() if v != value_of(k))
    print("MANY %d %d" % (hits, bad), flush=True)

    value, token = client.gets(keys[0])
    assert value == value_of(keys[0]), value
    wrong = client.cas(keys[0], b"x", str(int(token) + 1000), noreply=False)
    right = client.cas(keys[0], b"new", token, noreply=False)
    assert client.get(keys[0]) == b"new"
    print("CAS %d" % (1 if (right and not wrong) else 0), flush=True)

    client.set("counter", b"41", noreply=False)
    assert client.incr("counter", 1) == 42
    assert client.delete("counter", noreply=False)
    assert client.get("counter") is None
    print("OK", flush=True)


if __name__ == "__main__":
    main()
