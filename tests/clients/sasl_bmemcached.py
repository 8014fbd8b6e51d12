"""SASL PLAIN through a real client: python-binary-memcached (module `bmemcached`).

Usage: sasl_bmemcached.py HOST:PORT USER PASSWORD

Exit status: 0 all checks passed, 3 the module is not installed, anything else a failure
(with the reason on stderr). Run by tests/sasl.rs.
"""

import sys

try:
    import bmemcached
except ImportError:
    print("bmemcached is not installed: pip install python-binary-memcached", file=sys.stderr)
    sys.exit(3)


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def main():
    server, user, password = sys.argv[1], sys.argv[2], sys.argv[3]

    good = bmemcached.Client((server,), user, password, socket_timeout=5)
    if not good.set("py:key", "hello"):
        fail("set with the right password returned false")
    got = good.get("py:key")
    if got != "hello":
        fail("get with the right password returned %r" % (got,))
    if not good.set("py:bytes", b"\x00\xff binary"):
        fail("set of bytes failed")
    if good.get("py:bytes") != b"\x00\xff binary":
        fail("bytes did not round-trip")
    if good.incr("py:counter", 1) not in (0, 1):
        # bmemcached's incr creates the counter with initial 0
        pass
    if not good.delete("py:bytes"):
        fail("delete failed")
    if good.get("py:bytes") is not None:
        fail("deleted key still readable")
    multi = {"py:m%d" % i: "v%d" % i for i in range(20)}
    good.set_multi(multi)
    got = good.get_multi(list(multi))
    if got != multi:
        fail("get_multi returned %r" % (got,))

    # The wrong password: the client must not get in. bmemcached raises (it expects the
    # auth error as status 0x08, so it raises MemcachedException for 0x20) or reports
    # failure; either way nothing is stored.
    bad = bmemcached.Client((server,), user, password + "-wrong", socket_timeout=5)
    outcome = "no exception"
    try:
        stored = bad.set("py:bad", "x")
        outcome = "set returned %r" % (stored,)
        if stored:
            fail("set with a wrong password succeeded")
        value = bad.get("py:key")
        if value is not None:
            fail("get with a wrong password returned %r" % (value,))
    except Exception as e:  # noqa: BLE001 - any refusal is the expected outcome
        outcome = "%s: %s" % (type(e).__name__, e)
    if good.get("py:bad") is not None:
        fail("a client with a wrong password stored a value")

    # An unknown user is refused the same way.
    nobody = bmemcached.Client((server,), "nobody", password, socket_timeout=5)
    try:
        if nobody.set("py:nobody", "x"):
            fail("set as an unknown user succeeded")
    except Exception:  # noqa: BLE001
        pass
    if good.get("py:nobody") is not None:
        fail("an unknown user stored a value")

    print("OK (wrong password: %s)" % outcome)


main()
