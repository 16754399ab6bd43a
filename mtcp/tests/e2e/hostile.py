#!/usr/bin/env python3
"""Hostile input against real mtcpd members on loopback (docs/security.md).

Usage: hostile.py BIN_DIR [RSS_SLACK]   (RSS_SLACK: multiply the RSS bounds, e.g. 4 under ASan)

Cases, each asserting on the members' counters (admin socket), CPU time and RSS:
  1. descriptor exhaustion: a member limited to 128 descriptors gets 300 idle plain
     connections; it backs off instead of spinning (CPU time over 3 s well under a core),
     counts accept_fd_exhausted, closes the idle ones after plain_idle_timeout_ms, and a
     legitimate M-TCP client is served afterwards, byte for byte.
  2. control-port flood: 40 unauthenticated connections (silent, one byte a second, a forged
     header announcing 60 MiB, a garbage header): at most 8 kept per address, every one
     closed within control_hello_timeout_ms, RSS not grown by the announced sizes, and a
     migration between the members still completes.
  3. data-port flood: plain clients that send and never read, one after another, against a
     member capped at 16 MiB of buffered bytes: the later ones are refused, RSS stays near the
     cap, and an M-TCP client is served and migrates meanwhile.
  4. strict configuration: misspelt keys, a wrapping integer and a key file others can read
     make mtcpd exit 2 with the field named.
  5. proofs: against a live connection, MIGRATEs with a garbage proof, a valid proof with one
     bit flipped, a proof for another member, a tampered certificate, a proof replayed on a new
     challenge, an expired and a not-yet-valid certificate, and truncated bodies: each refused
     with its reason, counted, 0 state fetched from the owner, the connection undisturbed and
     every byte verified. Then one certificate to two members at once (an insider with the pool
     key): exactly one wins, one owner afterwards, the winning request replayed is refused.
  6. a rogue member (same addresses, another pool key) in an eager pool: its control
     connections are refused and logged, it takes over nothing, and a client migrating
     between the members keeps an intact stream.
  7. an insider with the pool key on a control connection (control version 3, chunked
     messages): a chunk with a forged tag, and a chunked header with a forged HMAC announcing
     60 MiB, each close the connection at once (control_bad_message), allocate nothing of what
     they announce, reach no connection, and migrations still work afterwards.
Ends only the processes it started and removes its folder.
"""
import hashlib
import hmac
import json
import os
import random
import socket
import struct
import subprocess
import sys
import tempfile
import time

BIN = sys.argv[1] if len(sys.argv) > 1 else "build/bin"
RSS_SLACK = int(sys.argv[2]) if len(sys.argv) > 2 else 1
failures = []
procs = []


def check(ok, what):
    print(("ok    " if ok else "FAIL  ") + what, flush=True)
    if not ok:
        failures.append(what)


def free_base():
    """A block of 10 free TCP ports below the ephemeral range."""
    rng = random.Random(os.getpid())
    for _ in range(200):
        base = rng.randrange(14000, 32000 - 10)
        socks = []
        try:
            for p in range(base, base + 10):
                s = socket.socket()
                s.bind(("127.0.0.1", p))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise SystemExit("no free ports")


def write_key(path):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(os.urandom(32))


def start_member(work, pool, mid, extra_env=None, prefix=()):
    log = open(os.path.join(work, "m%d.log" % mid), "w")
    admin = os.path.join(work, "m%d.sock" % mid)
    cmd = list(prefix) + [os.path.join(BIN, "mtcpd"), "--pool", pool, "--id", str(mid), "--service", "echo",
                          "--admin", admin]
    p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    procs.append(p)
    deadline = time.time() + 10
    while time.time() < deadline:
        if os.path.exists(admin):
            try:
                status_once(admin)
                return p, admin
            except OSError:
                pass
        if p.poll() is not None:
            break
        time.sleep(0.05)
    raise SystemExit("member %d did not start; log:\n%s" % (mid, open(log.name).read()))


def status(admin, tries=60):
    """The member's status; retried (out of descriptors, its admin socket can refuse for a while)."""
    for i in range(tries):
        try:
            return status_once(admin)
        except OSError:
            if i == tries - 1:
                raise
            time.sleep(0.25)


def status_once(admin):
    return admin_ask(admin, {"cmd": "status"})


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def perf(pool, server_id, seconds, extra=()):
    cmd = [os.path.join(BIN, "mtcp-perf"), "-c", "--pool", pool, "--app", "echo", "--server-id", str(server_id),
           "-d", str(seconds), "-b", "200", "-i", "0", "-t", "60", "-J"] + list(extra)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    try:
        return r.returncode, json.loads(r.stdout)
    except ValueError:
        return r.returncode, {"stderr": r.stderr[-500:]}


def pool_file(work, base, members, limits, name="pool.json"):
    path = os.path.join(work, name)
    with open(path, "w") as f:
        json.dump({"pool_key_file": "pool.key", "transfer": "lazy", "limits": limits,
                   "members": [{"id": i, "data": "127.0.0.1:%d" % (base + i),
                                "control": "127.0.0.1:%d" % (base + 5 + i)} for i in range(1, members + 1)]}, f)
    return path


def case_fd_exhaustion(work):
    print("== descriptor exhaustion", flush=True)
    base = free_base()
    pool = pool_file(work, base, 2, {"plain_idle_timeout_ms": 4000, "hello_timeout_ms": 300,
                                     "claim_timeout_ms": 1000})
    m1, a1 = start_member(work, pool, 1, prefix=("prlimit", "--nofile=128:128"))
    m2, a2 = start_member(work, pool, 2)
    idle = []
    for _ in range(300):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", base + 1))
        except BlockingIOError:
            pass
        idle.append(s)
    time.sleep(1.0)  # connections in the backlog, the member out of descriptors
    c0 = cpu_seconds(m1.pid)
    time.sleep(3.0)
    cpu = cpu_seconds(m1.pid) - c0
    check(cpu < 0.9, "no busy loop while out of descriptors: %.2f s of CPU in 3 s" % cpu)
    # The idle plain connections time out (the member logs each). Its admin socket competes with
    # the backlog for every freed descriptor meanwhile, so the counters are read afterwards.
    log_path = os.path.join(work, "m1.log")
    deadline = time.time() + 20
    idled = 0
    while time.time() < deadline and idled < 100:
        time.sleep(0.5)
        idled = open(log_path).read().count(": idle for ")
    for s in idle:
        s.close()
    st = status(a1)["counters"]
    check(st["accept_fd_exhausted"] > 0, "member ran out of descriptors (accept_fd_exhausted %d, accept_shed %d)"
          % (st["accept_fd_exhausted"], st["accept_shed"]))
    check(st["plain_idle_closed"] >= 100, "idle plain connections closed after plain_idle_timeout_ms (%d)"
          % st["plain_idle_closed"])
    rc, res = perf(pool, 1, 1.5, ["--migrate-every", "300"])
    end = res.get("end", {})
    check(rc == 0 and end.get("verdict") == "ok" and end.get("migrations_done", 0) >= 1,
          "legitimate client served after the exhaustion, verified across %s migrations (exit %d, verdict %s)"
          % (end.get("migrations_done"), rc, end.get("verdict")))
    for p in (m1, m2):
        p.terminate()
        p.wait(10)


def migrations_still_work(pool, members, when):
    """A client migrating every 200 ms between the members keeps an intact stream; then the
    members are stopped."""
    rc, res = perf(pool, 1, 1.5, ["--migrate-every", "200"])
    end = res.get("end", {})
    check(rc == 0 and end.get("verdict") == "ok" and end.get("migrations_done", 0) >= 1,
          "migrations between the members still work %s (exit %d, verdict %s, %s migrations)"
          % (when, rc, end.get("verdict"), end.get("migrations_done")))
    for p in members:
        p.terminate()
        p.wait(10)


def closed_by_peer(s, seconds):
    """True once the member closed the connection (EOF or reset) within `seconds`."""
    s.settimeout(seconds)
    try:
        while s.recv(4096):
            pass
        return True
    except socket.timeout:
        return False
    except OSError:
        return True


def case_control_flood(work):
    print("== control-port flood", flush=True)
    base = free_base()
    pool = pool_file(work, base, 2, {"control_hello_timeout_ms": 1500, "claim_timeout_ms": 1000}, "flood.json")
    m1, a1 = start_member(work, pool, 1)
    m2, a2 = start_member(work, pool, 2)
    ctl = ("127.0.0.1", base + 6)
    rss0 = rss_kib(m1.pid)
    conns = []
    for i in range(40):
        s = socket.socket()
        s.settimeout(2)
        try:
            s.connect(ctl)
        except OSError:
            continue
        kind = i % 4
        try:
            if kind == 1:
                s.sendall(b"M")  # one byte now, more later (a slow-loris)
            elif kind == 2:
                # A well-formed header (magic "MTCC", version 3, type GRANT, chunked) announcing 60 MiB.
                s.sendall(b"MTCC" + bytes([3, 0x02, 0, 1]) + (2).to_bytes(4, "big") + (1).to_bytes(4, "big")
                          + (60 << 20).to_bytes(4, "big") + os.urandom(4000))
            elif kind == 3:
                s.sendall(os.urandom(64))
        except OSError:
            pass
        conns.append((kind, s))
    time.sleep(0.5)
    for kind, s in conns:
        if kind == 1:
            try:
                s.sendall(b"T")
            except OSError:
                pass
    st = status(a1)["counters"]
    check(st["control_refused"] > 0, "unverified control connections over the per-address cap refused (%d)"
          % st["control_refused"])
    time.sleep(2.5)  # past control_hello_timeout_ms
    st = status(a1)["counters"]
    closed = 0
    for kind, s in conns:
        closed += closed_by_peer(s, 0.5)
        s.close()
    check(closed == len(conns), "every unauthenticated control connection closed by the member (%d of %d)"
          % (closed, len(conns)))
    check(st["control_handshake_failed"] >= 10, "handshake failures counted (%d)" % st["control_handshake_failed"])
    grown = rss_kib(m1.pid) - rss0
    check(grown < 20 * 1024 * RSS_SLACK, "RSS grew %d KiB, not by the 60 MiB announced" % grown)
    check(st["migrations_started"] == 0 and st["claims_granted"] == 0, "nothing from the flood reached the engine")
    log = open(os.path.join(work, "m1.log")).read()
    check("security:" in log and "control_handshake_failed" in log, "the flood is in the member's log (rate limited)")
    migrations_still_work(pool, [m1, m2], "after the flood")

# ---- the migration handshake, spoken by hand (docs/PROTOCOL.md §4, §6) ----------------------
PREFACE = bytes([0x89]) + b"MTCP\r\n\x1a"
WIRE_VERSION = 3
F_HELLO, F_CHALLENGE, F_MIGRATE, F_ACCEPT, F_REFUSE = 0x01, 0x03, 0x04, 0x05, 0x06
ERR = {208: "rate_limited", 300: "bad_proof", 301: "cert_expired", 302: "cert_not_yet_valid", 303: "stale_counter",
       304: "unknown_connection", 402: "claim_lost", 406: "not_owner"}


def frame(ftype, body):
    return struct.pack(">BBHI", ftype, 0, 0, len(body)) + body


def read_frame(s):
    def exactly(n):
        buf = b""
        while len(buf) < n:
            chunk = s.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf
    head = exactly(8)
    if head is None:
        return None, None
    ftype, _, _, n = struct.unpack(">BBHI", head)
    body = exactly(n)
    return (ftype, body) if body is not None else (None, None)


def cert_bytes(conn, issuer, issued_ms, expires_ms):
    return struct.pack(">QIQQ", conn, issuer, issued_ms, expires_ms)


def make_proof(pool_key, cert, challenge, target, conn, counter):
    """What only a holder of the connection's secret can compute (cert/cert.cc): the test plays
    an insider that knows the pool key, to build proofs that are exactly one defect away from
    valid."""
    secret = hmac.new(pool_key, b"mtcp-cert-v1" + cert, hashlib.sha256).digest()
    return hmac.new(secret, b"mtcp-proof-v1" + challenge + struct.pack(">IQI", target, conn, counter),
                    hashlib.sha256).digest()


class Attempt:
    """One migration attempt on a fresh subflow to member `target`: HELLO, then the CHALLENGE."""

    def __init__(self, base, target, conn):
        self.target = target
        self.conn = conn
        self.s = socket.create_connection(("127.0.0.1", base + target), timeout=5)
        self.s.sendall(PREFACE + frame(F_HELLO, struct.pack(">BBHQ", WIRE_VERSION, 1, 0, conn) + bytes(32)))
        ftype, body = read_frame(self.s)
        if ftype != F_CHALLENGE:
            raise RuntimeError("member %d answered HELLO with frame type %r" % (target, ftype))
        self.challenge = body[4:36]

    def send_raw(self, body):
        self.s.sendall(frame(F_MIGRATE, body))

    def migrate_body(self, cert, counter, proof, prev_owner=1):
        return cert + struct.pack(">IIQQ", counter, prev_owner, 0, 0) + proof

    def answer(self):
        """'accept', the refusal's reason name, or 'closed'."""
        try:
            ftype, body = read_frame(self.s)
        except OSError:
            ftype, body = None, None
        self.s.close()
        if ftype == F_ACCEPT:
            return "accept"
        if ftype == F_REFUSE:
            code = struct.unpack(">H", body[:2])[0]
            return ERR.get(code, "error %d" % code)
        return "closed"


def admin_ask(admin, req):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(admin)
    s.sendall((json.dumps(req) + "\n").encode())
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    s.close()
    return json.loads(buf)


def owned(admin):
    return {c["conn"]: c for c in admin_ask(admin, {"cmd": "list"})["connections"]}


def start_victim(pool, seconds):
    """A legitimate mtcp-perf echo client on member 1 that never migrates by itself."""
    cmd = [os.path.join(BIN, "mtcp-perf"), "-c", "--pool", pool, "--app", "echo", "--server-id", "1",
           "-d", str(seconds), "-b", "200", "-i", "0", "-t", "60", "-J"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs.append(p)
    return p


def victim_result(p):
    out, err = p.communicate(timeout=90)
    try:
        return p.returncode, json.loads(out)
    except ValueError:
        return p.returncode, {"stderr": err[-500:]}


def wait_owned(admin, before, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        now = owned(admin)
        fresh = [c for c in now if c not in before]
        if fresh:
            return now[fresh[0]]
        time.sleep(0.05)
    return None


def case_proofs(work):
    print("== forged, tampered, truncated, expired and replayed proofs", flush=True)
    base = free_base()
    pool = pool_file(work, base, 3, {"claim_timeout_ms": 1000}, "proofs.json")
    key = open(os.path.join(work, "pool.key"), "rb").read()
    members = [start_member(work, pool, i) for i in (1, 2, 3)]
    admins = [a for _, a in members]
    victim = start_victim(pool, 6)
    info = wait_owned(admins[0], {})
    check(info is not None, "the victim's connection is owned by member 1")
    if info is None:
        return
    conn, counter = info["conn"], info["counter"] + 1
    good = cert_bytes(conn, 1, 0, 1 << 62)
    before = [status(a)["counters"] for a in admins]
    cases = []

    a = Attempt(base, 2, conn)  # a garbage proof: an outsider's guess
    a.send_raw(a.migrate_body(good, counter, os.urandom(32)))
    cases.append(("garbage proof", a.answer(), "bad_proof"))

    a = Attempt(base, 2, conn)  # a valid proof with one bit flipped
    proof = bytearray(make_proof(key, good, a.challenge, 2, conn, counter))
    proof[random.randrange(32)] ^= 1 << random.randrange(8)
    a.send_raw(a.migrate_body(good, counter, bytes(proof)))
    cases.append(("tampered proof (one bit)", a.answer(), "bad_proof"))

    a = Attempt(base, 3, conn)  # a proof made for another target member
    a.send_raw(a.migrate_body(good, counter, make_proof(key, good, a.challenge, 2, conn, counter)))
    cases.append(("proof for another member", a.answer(), "bad_proof"))

    a = Attempt(base, 2, conn)  # the certificate tampered after the proof was made over it
    other = cert_bytes(conn, 1, 0, (1 << 62) + 1)
    a.send_raw(a.migrate_body(other, counter, make_proof(key, good, a.challenge, 2, conn, counter)))
    cases.append(("tampered certificate", a.answer(), "bad_proof"))

    first = Attempt(base, 2, conn)  # replay: a proof for one challenge, sent on another attempt
    replayed = make_proof(key, good, first.challenge, 2, conn, counter)
    first.s.close()
    a = Attempt(base, 2, conn)
    a.send_raw(a.migrate_body(good, counter, replayed))
    cases.append(("proof replayed on a new challenge", a.answer(), "bad_proof"))

    a = Attempt(base, 2, conn)  # expired, with a proof that is otherwise right
    old = cert_bytes(conn, 1, 0, 1)
    a.send_raw(a.migrate_body(old, counter, make_proof(key, old, a.challenge, 2, conn, counter)))
    cases.append(("expired certificate", a.answer(), "cert_expired"))

    a = Attempt(base, 3, conn)  # not yet valid
    future = cert_bytes(conn, 1, 1 << 62, (1 << 62) + 10)
    a.send_raw(a.migrate_body(future, counter, make_proof(key, future, a.challenge, 3, conn, counter)))
    cases.append(("certificate not yet valid", a.answer(), "cert_not_yet_valid"))

    for cut in (1, 27, 60, 83):  # truncated MIGRATE bodies: a malformed frame, the subflow reset
        a = Attempt(base, 2, conn)
        body = a.migrate_body(good, counter, make_proof(key, good, a.challenge, 2, conn, counter))
        a.send_raw(body[:cut])
        cases.append(("MIGRATE truncated to %d bytes" % cut, a.answer(), "closed"))

    for what, got, want in cases:
        check(got == want, "%s: %s (want %s)" % (what, got, want))
    rc, res = victim_result(victim)
    end = res.get("end", {})
    check(rc == 0 and end.get("verdict") == "ok",
          "the victim's connection was undisturbed and every byte verified (exit %d, verdict %s)"
          % (rc, end.get("verdict")))
    after = [status(a)["counters"] for a in admins]
    d = [{k: after[i][k] - before[i][k] for k in after[i] if isinstance(after[i][k], int)} for i in range(3)]
    check(d[1]["proofs_bad"] + d[2]["proofs_bad"] == 5, "5 bad proofs counted (%d + %d)"
          % (d[1]["proofs_bad"], d[2]["proofs_bad"]))
    check(d[1]["certs_expired"] + d[2]["certs_expired"] == 2, "2 certificates out of their window counted")
    check(d[1]["frames_malformed"] >= 4, "4 truncated frames counted as malformed (%d)" % d[1]["frames_malformed"])
    check(all(x["migrations_started"] == 0 and x["migrations_done"] == 0 for x in d[1:]),
          "0 migrations accepted by members 2 and 3")
    check(d[0]["claims_granted"] == 0 and d[0]["claims_denied"] == 0,
          "0 state fetched: the owner saw no claim for a refused request")
    log2 = open(os.path.join(work, "m2.log")).read()
    check("security:" in log2 and "proofs_bad" in log2, "refused proofs are in member 2's log (rate limited)")

    print("== one certificate to two members at once (an insider with the pool key)", flush=True)
    victim = start_victim(pool, 4)
    info = wait_owned(admins[0], {conn: 1})
    check(info is not None, "a second victim connection is owned by member 1")
    if info is None:
        return
    conn, counter = info["conn"], info["counter"] + 1
    good = cert_bytes(conn, 1, 0, 1 << 62)
    before = [status(a)["counters"] for a in admins]
    a2, a3 = Attempt(base, 2, conn), Attempt(base, 3, conn)
    b2 = a2.migrate_body(good, counter, make_proof(key, good, a2.challenge, 2, conn, counter))
    b3 = a3.migrate_body(good, counter, make_proof(key, good, a3.challenge, 3, conn, counter))
    a2.send_raw(b2)
    a3.send_raw(b3)
    answers = {2: a2.answer(), 3: a3.answer()}
    winners = [m for m, r in answers.items() if r == "accept"]
    check(len(winners) == 1, "exactly one of the two accepted (%s)" % answers)
    owners = [m for m in (1, 2, 3) if conn in owned(admins[m - 1])]
    check(len(owners) <= 1 and owners == winners, "one owner afterwards (members owning it: %s)" % owners)
    if winners:
        # Replays of the winning request: its bytes on a new attempt, and (insider) a fresh proof
        # with the counter already used.
        loser = 5 - winners[0]
        a = Attempt(base, loser, conn)
        a.send_raw(b2 if winners[0] == 2 else b3)
        r1 = a.answer()
        a = Attempt(base, loser, conn)
        a.send_raw(a.migrate_body(good, counter, make_proof(key, good, a.challenge, loser, conn, counter)))
        r2 = a.answer()
        check(r1 == "bad_proof", "the winning MIGRATE replayed to member %d: %s" % (loser, r1))
        check(r2 != "accept", "a fresh proof with the used counter to member %d: %s" % (loser, r2))
    rc, res = victim_result(victim)
    end = res.get("end", {})
    # With the pool key an insider can take any connection (docs/security.md): what must hold is
    # that the victim never gets a wrong byte, whatever happens to it.
    check(end.get("verdict") in ("ok", "failed"),
          "the victim saw no corrupted byte (exit %d, verdict %s, %s migrations, error %s)"
          % (rc, end.get("verdict"), end.get("migrations_done"), end.get("error")))
    for p, _ in members:
        p.terminate()
        p.wait(10)


def case_rogue_peer(work):
    print("== a rogue member on the control channel (another pool key)", flush=True)
    base = free_base()
    pool = pool_file(work, base, 3, {"claim_timeout_ms": 800}, "rogue.json")
    with open(pool) as f:
        cfg = json.load(f)
    cfg["transfer"] = "eager"  # so every member talks to every other one
    with open(pool, "w") as f:
        json.dump(cfg, f)
    rogue_dir = os.path.join(work, "rogue")
    os.mkdir(rogue_dir)
    write_key(os.path.join(rogue_dir, "pool.key"))
    rogue_pool = os.path.join(rogue_dir, "rogue.json")
    with open(rogue_pool, "w") as f:
        json.dump(cfg, f)  # same members, same addresses, a different key
    m1, a1 = start_member(work, pool, 1)
    m2, a2 = start_member(work, pool, 2)
    m3, a3 = start_member(rogue_dir, rogue_pool, 3)
    t0 = time.time()
    # A client of the rogue's own makes it replicate to 1 and 2 (it tries to open control
    # connections with PEER_HELLOs under its key); a client of member 1 migrates between the
    # members meanwhile: every migration to 3 fails (it cannot verify a proof made under the real
    # key), the others succeed, and the stream stays intact.
    rogue_client = subprocess.Popen([os.path.join(BIN, "mtcp-perf"), "-c", "--pool", pool, "--app", "echo",
                                     "--server-id", "3", "-d", "2", "-b", "200", "-i", "0", "-t", "20", "-J"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(rogue_client)
    rc, res = perf(pool, 1, 2.5, ["--migrate-every", "150"])
    end = res.get("end", {})
    check(rc == 0 and end.get("verdict") == "ok" and end.get("migrations_done", 0) >= 1,
          "the client's stream is intact with a rogue member in the pool "
          "(exit %d, verdict %s, %s migrations done, %s failed)"
          % (rc, end.get("verdict"), end.get("migrations_done"), end.get("migrations_failed")))
    try:
        rogue_client.wait(30)
    except subprocess.TimeoutExpired:
        rogue_client.kill()
        rogue_client.wait()
    time.sleep(1.2)  # a housekeeping pass: the counters are logged
    c1, c2, c3 = status(a1)["counters"], status(a2)["counters"], status(a3)["counters"]
    elapsed = time.time() - t0
    check(c1["control_handshake_failed"] >= 1 and c2["control_handshake_failed"] >= 1,
          "members 1 and 2 refused the rogue's control connections (handshake_failed %d, %d in %.1f s)"
          % (c1["control_handshake_failed"], c2["control_handshake_failed"], elapsed))
    # The rogue backs off between refused connections (at most one per 250 ms once failing).
    rate = c1["control_handshake_failed"] / elapsed
    check(rate < 15, "the rogue backs off: %.1f refused connections a second at member 1" % rate)
    check(c3["migrations_done"] == 0, "the rogue member took over no connection (%d)" % c3["migrations_done"])
    log1 = open(os.path.join(work, "m1.log")).read()
    check("security:" in log1 and "control_handshake_failed" in log1, "member 1 logs the refused peer (rate limited)")
    for p in (m1, m2, m3):
        p.terminate()
        p.wait(10)


def control_message(pool_key, mtype, frm, to, body, flags=0, body_len=None):
    """A control message (docs/PROTOCOL.md §5): header, body, HMAC-SHA256 over both."""
    head = b"MTCC" + bytes([3, mtype]) + struct.pack(">HIII", flags, frm, to, len(body) if body_len is None else body_len)
    return head + body + hmac.new(pool_key, b"mtcp-ctl-v1" + head + body, hashlib.sha256).digest()


def insider_connection(ctl, pool_key, frm, to):
    """A control connection that passed the handshake: the receiver's challenge answered with a
    PEER_HELLO under the pool key, as member `frm` would."""
    s = socket.create_connection(ctl, timeout=3)
    challenge = b""
    while len(challenge) < 24:
        more = s.recv(24 - len(challenge))
        if not more:
            raise OSError("no challenge")
        challenge += more
    check(challenge[:5] == b"MTCK\x03", "the control challenge is version 3")
    s.sendall(control_message(pool_key, 0x20, frm, to, challenge[8:24]))
    return s


def case_chunked_insider(work):
    print("== chunked control messages from an insider (the pool key) that fail their checks", flush=True)
    base = free_base()
    pool = pool_file(work, base, 2, {"claim_timeout_ms": 1000}, "chunked.json")
    with open(os.path.join(work, "pool.key"), "rb") as f:
        key = f.read()
    m1, a1 = start_member(work, pool, 1)
    m2, a2 = start_member(work, pool, 2)
    ctl = ("127.0.0.1", base + 6)
    rss0 = rss_kib(m1.pid)
    # 1. A chunked REPL_STATE of 8 MiB whose first chunk's tag is wrong: the member drops the
    #    connection when that chunk ends, long before the 8 MiB it announced.
    s = insider_connection(ctl, key, 2, 1)
    body_len = 8 << 20
    head = b"MTCC" + bytes([3, 0x10]) + struct.pack(">HIII", 1, 2, 1, body_len) + os.urandom(16)
    s.sendall(head + hmac.new(key, b"mtcp-ctl-v1" + head, hashlib.sha256).digest())
    fields = struct.pack(">QQI", 7, 1, body_len - 20)
    s.sendall(fields + os.urandom(65536 - len(fields)) + os.urandom(16))  # chunk 0, a forged tag
    check(closed_by_peer(s, 3), "a chunk with a forged tag closes the control connection")
    s.close()
    # 2. A chunked header announcing 60 MiB with a wrong HMAC: closed, and nothing allocated.
    s = insider_connection(ctl, key, 2, 1)
    head = b"MTCC" + bytes([3, 0x10]) + struct.pack(">HIII", 1, 2, 1, 60 << 20) + os.urandom(16)
    s.sendall(head + os.urandom(32) + os.urandom(200000))
    check(closed_by_peer(s, 3), "a chunked header with a forged HMAC closes the control connection")
    s.close()
    st = status(a1)["counters"]
    check(st["control_bad_message"] >= 2, "bad messages counted (control_bad_message %d)" % st["control_bad_message"])
    check(st["claims_granted"] == 0 and st["migrations_started"] == 0, "nothing of them reached a connection")
    grown = rss_kib(m1.pid) - rss0
    check(grown < 20 * 1024 * RSS_SLACK, "RSS grew %d KiB, not by the 8 or 60 MiB announced" % grown)
    # Member 2's own control connections were replaced by the insider's hellos: it reconnects,
    # and migrations between the two still work.
    migrations_still_work(pool, [m1, m2], "afterwards")


def case_data_flood(work):
    print("== data-port flood (plain clients that send and never read)", flush=True)
    base = free_base()
    cap = 16 << 20
    pool = pool_file(work, base, 2, {"member_buffered_bytes_max": cap, "claim_timeout_ms": 1000}, "data.json")
    m1, a1 = start_member(work, pool, 1)
    m2, a2 = start_member(work, pool, 2)
    rss0 = rss_kib(m1.pid)
    flood = []
    blob = os.urandom(1 << 20)
    for _ in range(12):  # one after another: each fills its own caps (about 8 MiB) first
        s = socket.socket()
        s.settimeout(0.5)
        try:
            s.connect(("127.0.0.1", base + 1))
            for _ in range(12):
                s.sendall(blob)
        except OSError:
            pass
        flood.append(s)
    time.sleep(0.5)
    st = status(a1)["counters"]
    grown = (rss_kib(m1.pid) - rss0) // 1024
    check(st["plain_refused"] > 0, "plain connections refused at member_buffered_bytes_max (%d)" % st["plain_refused"])
    # 16 MiB cap + two connections' own caps + allocator and socket slack. The slack was 24 MiB;
    # on the 2026-12-07 machine (another kernel) the growth measured 50-60 MiB with either read
    # path of the runtime, so 24 failed about one run in three. 40 keeps the bound under what
    # buffering every flooder would cost (12 x about 8 MiB = 96 MiB).
    check(grown < (16 + 2 * 8 + 40) * RSS_SLACK,
          "member RSS grew %d MiB for 12 flooders of about 8 MiB each (cap 16 MiB)" % grown)
    rc, res = perf(pool, 1, 1.5, ["--migrate-every", "300"])
    end = res.get("end", {})
    check(rc == 0 and end.get("verdict") == "ok" and end.get("migrations_done", 0) >= 1,
          "an M-TCP client is served and migrates during the flood (exit %d, verdict %s, %s migrations)"
          % (rc, end.get("verdict"), end.get("migrations_done")))
    for s in flood:
        s.close()
    for p in (m1, m2):
        p.terminate()
        p.wait(10)


def case_config(work):
    print("== strict configuration", flush=True)
    base = free_base()
    cases = [
        ({"limits": {"clam_timeout_ms": 500}}, "did you mean \"claim_timeout_ms\""),
        ({"transfr": "eager"}, "did you mean \"transfer\""),
        ({"limits": {"migrate_requests_per_s_max": 4294967296}}, "limits.migrate_requests_per_s_max"),
        ({"limits": {"frame_payload_bytes_max": 0}}, "limits.frame_payload_bytes_max"),
    ]
    for extra, want in cases:
        cfg = {"pool_key_file": "pool.key",
               "members": [{"id": 1, "data": "127.0.0.1:%d" % (base + 1), "control": "127.0.0.1:%d" % (base + 2)}]}
        cfg.update(extra)
        path = os.path.join(work, "bad.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        r = subprocess.run([os.path.join(BIN, "mtcpd"), "--pool", path, "--id", "1"], capture_output=True, text=True,
                           timeout=10)
        check(r.returncode == 2 and want in r.stderr, "%s refused: exit %d, %r" % (json.dumps(extra), r.returncode,
                                                                                  r.stderr.strip()[:160]))
    os.chmod(os.path.join(work, "pool.key"), 0o644)
    path = pool_file(work, base, 1, {}, "open.json")
    r = subprocess.run([os.path.join(BIN, "mtcpd"), "--pool", path, "--id", "1"], capture_output=True, text=True,
                       timeout=10)
    check(r.returncode == 2 and "mode 0644" in r.stderr, "key file mode 0644 refused: %r" % r.stderr.strip()[:160])
    os.chmod(os.path.join(work, "pool.key"), 0o600)


def main():
    if not os.path.exists(os.path.join(BIN, "mtcpd")):
        print("skip: %s/mtcpd not built" % BIN)
        return 77
    work = tempfile.mkdtemp(prefix="mtcp-hostile-")
    try:
        write_key(os.path.join(work, "pool.key"))
        case_config(work)
        case_control_flood(work)
        if RSS_SLACK > 1:
            # Out of descriptors, UBSan's vptr check cannot probe memory (its probe needs a
            # descriptor) and reports a false "object has invalid vptr" on a valid object, which
            # aborts the member (-fno-sanitize-recover): a sanitizer limit, not a defect of ours
            # (docs/security.md). The release tree runs the case.
            print("skip  descriptor exhaustion under the sanitizers: UBSan's vptr check needs a free "
                  "descriptor (docs/security.md); the release tree runs it")
        else:
            case_fd_exhaustion(work)
        case_data_flood(work)
        case_proofs(work)
        case_rogue_peer(work)
        case_chunked_insider(work)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        if failures:
            print("member logs kept in", work)
        else:
            subprocess.run(["rm", "-rf", work])
    print("hostile: %d failure(s)" % len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
