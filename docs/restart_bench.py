#!/usr/bin/env python3
# Warm-restart measurement for docs/restart.md (run from anywhere; needs pincache
# on PATH or PINCACHE=path, and memcached 1.6.18 for the comparison):
#   SIG=TERM|USR1 python3 docs/restart_bench.py pincache PORT N SIZE MB
#   WAIT=1|0      python3 docs/restart_bench.py memcached PORT N SIZE MB
# SIZE is bytes per value, or "mixed": 16 B to 20,000 B by key (MIXED below).
# VERIFY=1 starts pincache with --verify-restore; DIR=path puts the memory file
# there instead of /dev/shm (e.g. a tmpfs mounted huge=within_size). Logs: /tmp/rs/.
"""Warm-restart measurement: fill N items of SIZE bytes, clean stop, start again on
the same memory file; time from exec to the first hit; then count hits over all keys."""
import os, socket, struct, subprocess, sys, time, signal

def setq(key, value):
    extras = struct.pack(">II", 0x7e57, 0)
    body = len(extras) + len(key) + len(value)
    return struct.pack(">BBHBBHIIQ", 0x80, 0x11, len(key), 8, 0, 0, body, 0, 0) + extras + key + value

def req(op, key=b"", extras=b""):
    body = len(extras) + len(key)
    return struct.pack(">BBHBBHIIQ", 0x80, op, len(key), len(extras), 0, 0, body, 0, 0) + extras + key

def read_resp(sock, buf):
    while len(buf) < 24:
        d = sock.recv(1 << 20)
        if not d: raise EOFError
        buf += d
    blen = struct.unpack(">I", buf[8:12])[0]
    while len(buf) < 24 + blen:
        d = sock.recv(1 << 20)
        if not d: raise EOFError
        buf += d
    h = buf[:24]; body = buf[24:24 + blen]
    return (h, body), buf[24 + blen:]

def key(i): return b"key:%010d" % i
# "mixed": sizes by key, from a 16-byte counter to a 20 KB page (mean about 1.3 KB).
MIXED = [16, 64, 100, 200, 500, 1000, 2000, 5000]
def size_of(i, size):
    if size != "mixed": return size
    return 20000 if i % 100 == 99 else MIXED[i % len(MIXED)]
def value(i, size):
    size = size_of(i, size)
    return (b"%010d" % i) * (size // 10) + b"x" * (size % 10)

def fill(port, n, size):
    s = socket.create_connection(("127.0.0.1", port))
    chunk = []
    for i in range(n):
        chunk.append(setq(key(i), value(i, size)))
        if len(chunk) == 5000 or i == n - 1:
            chunk.append(req(0x0a))
            s.sendall(b"".join(chunk)); chunk = []
            buf = b""
            while True:
                (h, body), buf = read_resp(s, buf)
                if h[1] == 0x0a: break
                raise SystemExit("SETQ failed status %d" % struct.unpack(">H", h[6:8])[0])
    s.close()

def count_hits(port, n, size):
    s = socket.create_connection(("127.0.0.1", port))
    hits = bad = 0
    for start in range(0, n, 5000):
        end = min(n, start + 5000)
        s.sendall(b"".join(req(0x0d, key(i)) for i in range(start, end)) + req(0x0a))
        buf = b""
        while True:
            (h, body), buf = read_resp(s, buf)
            if h[1] == 0x0a: break
            klen = struct.unpack(">H", h[2:4])[0]; elen = h[4]
            k = body[elen:elen + klen]; v = body[elen + klen:]
            i = int(k[4:])
            if v == value(i, size) and struct.unpack(">I", body[:4])[0] == 0x7e57: hits += 1
            else: bad += 1
    s.close()
    return hits, bad

def first_hit(cmd, port, log):
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
    probe = req(0x00, key(0))
    while True:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
        except OSError:
            time.sleep(0.0005); continue
        s.sendall(probe)
        (h, body), _ = read_resp(s, b"")
        s.close()
        if struct.unpack(">H", h[6:8])[0] == 0:
            return p, time.monotonic() - t0
        return p, None  # a miss: nothing restored

def stop(p, sig):
    t = time.monotonic()
    p.send_signal(sig); p.wait(60)
    return time.monotonic() - t

def main():
    which, port, n, size, mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
    size = size if size == "mixed" else int(size)
    path = "%s/rs-%s-%d" % (os.environ.get("DIR", "/dev/shm"), which, port)
    for f in (path, path + ".meta"):
        if os.path.exists(f): os.remove(f)
    if which == "pincache":
        cmd = [os.environ.get("PINCACHE", "pincache"), "-p", str(port), "-l", "127.0.0.1", "-m", mb, "-e", path]
        if os.environ.get("VERIFY") == "1": cmd.append("--verify-restore")
        sig = getattr(signal, "SIG" + os.environ.get("SIG", "TERM"))
    else:
        cmd = ["memcached", "-p", str(port), "-l", "127.0.0.1", "-U", "0", "-t", "1", "-m", mb, "-e", path]
        if os.geteuid() == 0: cmd += ["-u", "root"]
        sig = signal.SIGUSR1
    os.makedirs("/tmp/rs", exist_ok=True)
    log = open("/tmp/rs/%s-%d.log" % (which, port), "w")
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
    time.sleep(0.3)
    t = time.monotonic(); fill(port, n, size); fill_s = time.monotonic() - t
    before, _ = count_hits(port, n, size)
    stop_s = stop(p, sig)
    if which == "memcached": time.sleep(float(os.environ.get("WAIT", "1")))
    p, hit_s = first_hit(cmd, port, log)
    hits, bad = count_hits(port, n, size)
    stop(p, signal.SIGTERM if which == "pincache" else signal.SIGKILL)
    print("%s%s n=%d size=%s -m %s: fill %.1f s, items before stop %d, stop %.3f s, exec->first hit %s, items back %d (%.2f%%), wrong %d" % (
        which, " SIG%s" % os.environ.get("SIG", "TERM") if which == "pincache" else " WAIT=%s" % os.environ.get("WAIT", "1"), n, size, mb, fill_s, before, stop_s, ("%.3f s" % hit_s) if hit_s else "MISS", hits, 100.0 * hits / max(before, 1), bad))
    log.close()
    for line in open(log.name):
        if "warm restart from" in line or "restore verified" in line:
            print("  " + line.split("] ", 1)[-1].strip())
    for f in (path, path + ".meta"):
        if os.path.exists(f): os.remove(f)

main()
