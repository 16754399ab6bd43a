#!/usr/bin/env python3
"""A legitimate migration under a flood of bogus MIGRATE requests (issue 13, docs/security.md).

Usage: migrate_flood.py BIN_DIR [--attackers N] [--seconds S] [--rate-max R] [--json]

Three mtcpd members (echo, lazy) on loopback. A legitimate mtcp-perf client migrates every
100 ms for S seconds, once quiet and once while N attacker processes flood member 2 and 3 with
MIGRATEs for random connections whose proofs are garbage but whose certificates are in their
validity window (so every one costs the member a proof verification). Reported: the client's
migration downtime (median, p99) quiet and flooded, the ratio, how many bogus MIGRATEs were
answered, and the members' counters (proofs_bad, migrate_rate_limited). The pool's
migrate_requests_per_s_max is --rate-max (default: the member's default).
"""
import argparse
import json
import multiprocessing
import os
import random
import socket
import struct
import subprocess
import sys
import tempfile
import time

PREFACE = bytes([0x89]) + b"MTCP\r\n\x1a"
VERSION = 3


def frame(ftype, body):
    return struct.pack(">BBHI", ftype, 0, 0, len(body)) + body


def read_frame(s):
    head = b""
    while len(head) < 8:
        chunk = s.recv(8 - len(head))
        if not chunk:
            return None, None
        head += chunk
    ftype, _, _, n = struct.unpack(">BBHI", head)
    body = b""
    while len(body) < n:
        chunk = s.recv(n - len(body))
        if not chunk:
            return None, None
        body += chunk
    return ftype, body


def attacker(port, stop_at, counter):
    rng = random.Random(os.getpid())
    sent = 0
    while time.time() < stop_at:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=2)
            conn = rng.getrandbits(63) | 1
            s.sendall(PREFACE + frame(0x01, struct.pack(">BBHQ", VERSION, 1, 0, conn) + bytes(32)))
            ftype, body = read_frame(s)
            if ftype == 0x03:  # CHALLENGE: answer with a certificate in its window and a garbage proof
                cert = struct.pack(">QIQQ", conn, 1, 0, (1 << 62))
                mig = cert + struct.pack(">IIQQ", 1, 1, 0, 0) + rng.randbytes(32)
                s.sendall(frame(0x04, mig))
                read_frame(s)  # REFUSE
                sent += 1
            s.close()
        except OSError:
            time.sleep(0.001)
    with counter.get_lock():
        counter.value += sent


def status(admin):
    s = socket.socket(socket.AF_UNIX)
    s.connect(admin)
    s.sendall(b'{"cmd":"status"}\n')
    buf = b""
    while not buf.endswith(b"\n"):
        buf += s.recv(65536)
    s.close()
    return json.loads(buf)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bin_dir")
    ap.add_argument("--attackers", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=6)
    ap.add_argument("--rate-max", type=int, default=0, help="migrate_requests_per_s_max (0: the default)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="mtcp-flood-")
    procs = []
    base = 15000 + (os.getpid() % 1500) * 10
    try:
        fd = os.open(os.path.join(work, "pool.key"), os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, os.urandom(32))
        os.close(fd)
        limits = {"claim_timeout_ms": 1000}
        if a.rate_max:
            limits["migrate_requests_per_s_max"] = a.rate_max
        pool = {"pool_key_file": "pool.key", "transfer": "lazy", "limits": limits,
                "members": [{"id": i, "data": "127.0.0.1:%d" % (base + i), "control": "127.0.0.1:%d" % (base + 5 + i)}
                            for i in (1, 2, 3)]}
        pool_path = os.path.join(work, "pool.json")
        json.dump(pool, open(pool_path, "w"))
        admins = {}
        for i in (1, 2, 3):
            admins[i] = os.path.join(work, "m%d.sock" % i)
            procs.append(subprocess.Popen([os.path.join(a.bin_dir, "mtcpd"), "--pool", pool_path, "--id", str(i),
                                           "--service", "echo", "--admin", admins[i], "-q"],
                                          stderr=open(os.path.join(work, "m%d.log" % i), "w")))
        deadline = time.time() + 10
        while not all(os.path.exists(p) for p in admins.values()):
            if time.time() > deadline:
                raise SystemExit("members did not start")
            time.sleep(0.05)

        def run_client():
            r = subprocess.run([os.path.join(a.bin_dir, "mtcp-perf"), "-c", "--pool", pool_path, "--app", "echo",
                                "-d", str(a.seconds), "-b", "100", "--migrate-every", "100", "-i", "0", "-J"],
                               capture_output=True, text=True, timeout=a.seconds + 60)
            end = json.loads(r.stdout)["end"] if r.stdout.strip() else {}
            return r.returncode, end

        rc_q, quiet = run_client()
        counter = multiprocessing.Value("l", 0)
        stop_at = time.time() + a.seconds + 2
        attackers = [multiprocessing.Process(target=attacker, args=(base + 2 + (k % 2), stop_at, counter))
                     for k in range(a.attackers)]
        for p in attackers:
            p.start()
        time.sleep(1.0)
        rc_f, flooded = run_client()
        for p in attackers:
            p.join()
        counters = {i: status(admins[i])["counters"] for i in (2, 3)}
        bogus = counter.value
        res = {
            "quiet": {"exit": rc_q, "verdict": quiet.get("verdict"), "migrations": quiet.get("migrations_done"),
                      "failed": quiet.get("migrations_failed"), "downtime_us_median": quiet.get("downtime_us_median"),
                      "downtime_us_p99": quiet.get("downtime_us_p99")},
            "flooded": {"exit": rc_f, "verdict": flooded.get("verdict"), "migrations": flooded.get("migrations_done"),
                        "failed": flooded.get("migrations_failed"),
                        "downtime_us_median": flooded.get("downtime_us_median"),
                        "downtime_us_p99": flooded.get("downtime_us_p99")},
            "bogus_migrates_answered": bogus,
            "bogus_per_s": bogus / (a.seconds + 1),
            "members": {str(i): {k: counters[i][k] for k in ("proofs_bad", "migrate_rate_limited")} for i in (2, 3)},
        }
        q, f = res["quiet"]["downtime_us_median"], res["flooded"]["downtime_us_median"]
        res["median_ratio"] = (f / q) if q and f else None
        if a.json:
            print(json.dumps(res, indent=1))
        else:
            print("quiet:   %s migrations (%s failed), downtime median %s us, p99 %s us" %
                  (res["quiet"]["migrations"], res["quiet"]["failed"], q, res["quiet"]["downtime_us_p99"]))
            print("flooded: %s migrations (%s failed), downtime median %s us, p99 %s us" %
                  (res["flooded"]["migrations"], res["flooded"]["failed"], f, res["flooded"]["downtime_us_p99"]))
            print("bogus MIGRATEs answered: %d (%.0f/s); members 2, 3: %s" % (bogus, res["bogus_per_s"], res["members"]))
            print("median downtime flooded / quiet: %s" % (("%.2f" % res["median_ratio"]) if res["median_ratio"] else "n/a"))
        ok = rc_q == 0 and rc_f == 0 and quiet.get("verdict") == "ok" and flooded.get("verdict") == "ok"
        return 0 if ok else 1
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    sys.exit(main())
