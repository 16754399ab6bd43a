#!/usr/bin/env python3
"""Runs every benchmark of docs/performance.md and writes bench/results/<date>/ (JSON).

Micro-benchmarks (Google Benchmark), then end-to-end measurements with real processes on
loopback, each against plain TCP in the same run: one-way bulk in each direction against
iperf3 (the kernel-TCP anchor; skipped with a message when iperf3 is not installed), M-TCP's
plain-TCP path and mtcp-proxy, bulk echo throughput (one and several connections),
request/response latency, migration time against state size (lazy, eager, and
the physical floor: a fresh plain TCP connection moving the same bytes), bulk echo in each
transfer mode (eager against lazy, with and without migrations), lazy transfer off a member
starved of CPU (cgroup v1 quota; skipped without root), migrations per second, and concurrent
idle connections with the member's memory per connection.

M-TCP and plain-TCP runs alternate and repeat; the report gives medians and ratios.
Only processes this script started are ended (by PID). Usage: see --help.
"""
import argparse
import datetime
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import shutil
import tempfile
import time

KIB = 1024
MIB = 1024 * 1024


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


def median(xs):
    return statistics.median(xs) if xs else 0.0


def wait_port(proc, port, what, deadline):
    """Waits until something listens on 127.0.0.1:port; fails if proc exits or time runs out."""
    while True:
        if proc.poll() is not None:
            raise BenchError(f"{what} exited at start (exit {proc.returncode})")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.time() > deadline:
                raise BenchError(f"{what} did not listen on port {port}")
            time.sleep(0.02)


class Pool:
    """Three mtcpd members of one service (echo unless told) on loopback, started and stopped by
    PID."""

    def __init__(self, bin_dir, work, base_port):
        self.bin = bin_dir
        self.work = work
        self.base = base_port
        self.procs = []
        # 0600: a member refuses a key file others can read
        fd = os.open(os.path.join(work, "pool.key"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(32))

    def data_port(self, member):
        return self.base + member

    def control_port(self, member):
        return self.base + 3 + member

    def admin(self, member):
        return os.path.join(self.work, f"admin{member}")

    def start(self, mode, state_bytes=0, snapshot_every=256 * KIB, limits=None, service="echo",
              extra=None, name=None):
        self.stop()
        path = os.path.join(self.work, f"pool-{name or mode}.json")
        cfg = {
            **(extra or {}),
            "pool_key_file": "pool.key",
            "transfer": mode,
            "members": [
                {"id": i, "data": f"127.0.0.1:{self.data_port(i)}",
                 "control": f"127.0.0.1:{self.control_port(i)}"}
                for i in (1, 2, 3)
            ],
        }
        if limits:
            cfg["limits"] = limits
        with open(path, "w") as f:
            json.dump(cfg, f)
        errlog = open(os.path.join(self.work, "members.log"), "a")
        for i in (1, 2, 3):
            self.procs.append(subprocess.Popen(
                [os.path.join(self.bin, "mtcpd"), "--pool", path, "--id", str(i), "--service", service,
                 "-q", "--state-bytes", str(state_bytes), "--snapshot-every", str(snapshot_every),
                 "--admin", self.admin(i)],
                stdout=subprocess.DEVNULL, stderr=errlog))
        errlog.close()
        deadline = time.time() + 10
        for i in (1, 2, 3):
            for port in (self.data_port(i), self.control_port(i)):
                wait_port(self.procs[i - 1], port, f"member {i} (see {self.work}/members.log)", deadline)
            # mtcpd opens its admin socket after its ports: mtcpctl right after wait_port found
            # no socket once (bench_short, 2026-12-07).
            while not os.path.exists(self.admin(i)):
                if self.procs[i - 1].poll() is not None:
                    raise BenchError(f"member {i} exited at start (exit {self.procs[i - 1].returncode})")
                if time.time() > deadline:
                    raise BenchError(f"member {i} did not open its admin socket {self.admin(i)}")
                time.sleep(0.01)
        self.path = path
        return path

    def pid(self, member):
        return self.procs[member - 1].pid

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = []


def parse_result(text, what):
    """A tool's JSON result: the whole output (mtcp-perf) or its last line (mtcp-loadgen)."""
    for candidate in (text, text.strip().splitlines()[-1] if text.strip() else ""):
        try:
            return json.loads(candidate)
        except json.JSONDecodeError:
            pass
    raise BenchError(f"{what}: no JSON result in its output: {text[-400:]!r}")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise BenchError(f"no VmRSS for pid {pid}")


class Bench:
    def __init__(self, args):
        self.a = args
        self.bin = os.path.join(args.build, "bin")
        self.work = tempfile.mkdtemp(prefix="mtcp-bench-")
        self.pool = Pool(self.bin, self.work, 22000 + (os.getpid() % 900) * 10)
        self.started = time.time()

    # ---- helpers -------------------------------------------------------------------------

    def run_json(self, cmd, what, timeout=300, ok_codes=(0,)):
        """Runs a tool that prints one JSON object; fails loudly on a bad exit or bad output."""
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if p.returncode not in ok_codes:
            raise BenchError(f"{what}: exit {p.returncode}: {p.stderr.strip()[-800:]} {p.stdout.strip()[-400:]}")
        return parse_result(p.stdout, what)

    def perf(self, *extra):
        return [os.path.join(self.bin, "mtcp-perf"), "-c", "--pool", self.pool.path, "-i", "0", "-J", *extra]

    def loadgen(self, *extra):
        return [os.path.join(self.bin, "mtcp-loadgen"), "--pool", self.pool.path, "-J", *extra]

    def save(self, name, obj):
        with open(os.path.join(self.a.out, name), "w") as f:
            json.dump(obj, f, indent=1)
        log(f"wrote {os.path.join(self.a.out, name)}")

    # ---- measurements --------------------------------------------------------------------

    def machine(self, mode):
        cpu = "unknown"
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            mem_kib = int(f.readline().split()[1])
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip() or "unknown"
        return {
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "git_commit": commit, "command": self.a.command, "mode": mode,
            "kernel": platform.release(), "cpu": cpu, "cores": os.cpu_count(),
            "mem_gib": round(mem_kib / MIB, 1), "repeat": self.a.repeat, "build": self.a.build_type,
        }

    def micro(self):
        log("micro-benchmarks")
        out = os.path.join(self.a.out, "micro.json")
        cmd = [os.path.join(self.bin, "mtcp-bench-micro"), "--benchmark_format=console",
               f"--benchmark_out={out}", "--benchmark_out_format=json"]
        if self.a.short:
            cmd.append("--benchmark_min_time=0.01")
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if p.returncode != 0:
            raise BenchError(f"mtcp-bench-micro: exit {p.returncode}: {p.stderr[-800:]}")
        with open(out) as f:
            benches = json.load(f)["benchmarks"]
        # Google Benchmark exits 0 when a benchmark stops with SkipWithError; a result that is
        # an error is a broken benchmark, not a measurement.
        failed = [f"{b.get('name')}: {b.get('error_message', 'failed')}" for b in benches if b.get("error_occurred")]
        if failed:
            raise BenchError(f"mtcp-bench-micro: {len(failed)} benchmark(s) failed: " + "; ".join(failed[:4]))
        log(f"micro-benchmarks: {len(benches)} results")

    def oneway(self):
        """One-way bulk in each direction, alternated in one run: iperf3 (kernel TCP, the anchor),
        M-TCP (mtcp-perf against the discard or source service), mtcp-perf --plain against the
        same member (its plain-TCP path), and mtcp-perf --plain through mtcp-proxy; all count
        bytes only (--verify none), as iperf3 does. The server-sends direction also runs M-TCP
        with --verify compare, to state what checking every byte costs."""
        iperf3 = shutil.which("iperf3")
        if not iperf3:
            log("one-way: iperf3 is not installed (Debian package iperf3, scripts/setup.sh): "
                "measuring without the kernel-TCP anchor")
        nbytes = 200 * MIB if self.a.short else 2000 * MIB
        iperf_port = self.pool.base + 7
        proxy_port = self.pool.base + 8
        directions = []
        for direction, service, app in (("client-sends", "discard", "discard"), ("server-sends", "source", "source")):
            self.pool.start("lazy", service=service)
            helpers = []
            try:
                errlog = open(os.path.join(self.work, "oneway.log"), "a")
                proxy = subprocess.Popen([os.path.join(self.bin, "mtcp-proxy"), "--pool", self.pool.path,
                                          "--listen", f"127.0.0.1:{proxy_port}", "--policy", "none"],
                                         stdout=subprocess.DEVNULL, stderr=errlog)
                helpers.append(proxy)
                wait_port(proxy, proxy_port, "mtcp-proxy", time.time() + 10)
                if iperf3:
                    srv = subprocess.Popen([iperf3, "-s", "-B", "127.0.0.1", "-p", str(iperf_port)],
                                           stdout=subprocess.DEVNULL, stderr=errlog)
                    helpers.append(srv)
                    wait_port(srv, iperf_port, "iperf3 -s", time.time() + 10)
                errlog.close()
                transports = (["iperf3"] if iperf3 else []) + ["mtcp", "plain", "proxy"]
                if direction == "server-sends":
                    transports.append("mtcp_compare")
                r = {"direction": direction, "service": service, "mbit_s": {t: [] for t in transports}}
                for rep in range(self.a.repeat):
                    for t in transports:
                        r["mbit_s"][t].append(self.oneway_run(t, app, nbytes, iperf3, iperf_port, proxy_port))
                    log(f"one-way {direction} repeat {rep + 1}: " +
                        ", ".join(f"{t} {r['mbit_s'][t][-1]:.0f}" for t in transports) + " Mbit/s")
                directions.append(r)
            finally:
                for h in helpers:
                    if h.poll() is None:
                        h.terminate()
                    try:
                        h.wait(timeout=5)
                    except subprocess.TimeoutExpired:
                        h.kill()
                        h.wait()
        self.pool.stop()
        version = subprocess.run([iperf3, "--version"], capture_output=True, text=True).stdout.splitlines()[0] \
            if iperf3 else None
        self.save("oneway.json", {"bytes": nbytes, "iperf3": version, "directions": directions})

    def oneway_run(self, transport, app, nbytes, iperf3, iperf_port, proxy_port):
        """One transfer; its end.sum_received.bits_per_second (the same field in both tools), in Mbit/s."""
        what = f"one-way {app} {transport}"
        if transport == "iperf3":
            cmd = [iperf3, "-c", "127.0.0.1", "-p", str(iperf_port), "-n", str(nbytes), "-J"]
            if app == "source":
                cmd.append("-R")
        else:
            verify = "compare" if transport == "mtcp_compare" else "none"
            extra = {"plain": ["--plain"], "proxy": ["--plain", "--connect", f"127.0.0.1:{proxy_port}"]}.get(transport, [])
            cmd = self.perf("--app", app, "-n", str(nbytes), "--verify", verify, *extra)
        for attempt in range(3):
            j = self.run_json(cmd, what, ok_codes=(0, 1) if transport == "iperf3" else (0,))
            if transport != "iperf3" or "error" not in j:
                break
            # iperf3 now and then fails a test at its start ("the server is busy", "unable to
            # receive control message: Connection reset by peer"); such a test moved nothing
            log(f"{what}: iperf3 said: {j['error']}; again in 0.5 s")
            time.sleep(0.5)
        else:
            raise BenchError(f"{what}: iperf3 said: {j['error']}")
        if transport != "iperf3" and j["end"]["verdict"] != "ok":
            raise BenchError(f"{what}: {j['end']['error']}")
        return j["end"]["sum_received"]["bits_per_second"] / 1e6

    def bulk(self):
        self.pool.start("lazy")
        runs = []
        total = 20 * MIB if self.a.short else 300 * 1000 * 1000
        for conns in self.a.bulk_conns:
            per_conn = total // conns
            r = {"conns": conns, "bytes_per_conn": per_conn, "mtcp_mbit_s": [], "plain_mbit_s": []}
            for rep in range(self.a.repeat):
                for transport in ("plain", "mtcp"):
                    extra = ["--plain"] if transport == "plain" else []
                    procs = []
                    for c in range(conns):
                        first = str(1 + c % 3)
                        procs.append(subprocess.Popen(
                            self.perf("--app", "echo", "-n", str(per_conn), "--server-id", first, *extra),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
                    rates = []
                    for p in procs:
                        out, err = p.communicate(timeout=300)
                        if p.returncode != 0:
                            raise BenchError(f"bulk {transport} x{conns}: exit {p.returncode}: {err[-400:]}")
                        end = parse_result(out, f"bulk {transport} x{conns}")["end"]
                        rates.append(end["received_mbit_s"])
                    r[f"{transport}_mbit_s"].append(sum(rates))
                log(f"bulk x{conns} repeat {rep + 1}: plain {r['plain_mbit_s'][-1]:.0f}, "
                    f"M-TCP {r['mtcp_mbit_s'][-1]:.0f} Mbit/s")
            runs.append(r)
        self.pool.stop()
        self.save("bulk.json", {"runs": runs})

    def latency(self):
        self.pool.start("lazy")
        size = 64
        count = 2000 if self.a.short else 20000
        runs = []
        for conns in self.a.latency_conns:
            r = {"conns": conns, "mtcp": [], "plain": []}
            for rep in range(self.a.repeat):
                for transport in ("plain", "mtcp"):
                    extra = ["--plain"] if transport == "plain" else []
                    j = self.run_json(self.loadgen("--mode", "rr", "--size", str(size), "-n", str(count),
                                                   "--conns", str(conns), "--spread", *extra),
                                      f"latency {transport} x{conns}")
                    r[transport].append({k: j[k] for k in ("p50_us", "p99_us", "mean_us", "count")})
                log(f"latency x{conns} repeat {rep + 1}: p50 plain {r['plain'][-1]['p50_us']:.1f} us, "
                    f"M-TCP {r['mtcp'][-1]['p50_us']:.1f} us")
            runs.append(r)
        self.pool.stop()
        self.save("latency.json", {"size": size, "runs": runs})

    def floor_us(self, nbytes, samples):
        """The physical floor: connect and move nbytes over a fresh plain TCP connection."""
        j = self.run_json([os.path.join(self.bin, "mtcp-floor"), "--size", str(nbytes), "-n", str(samples), "-J"],
                          f"floor {nbytes} B")
        return j["p50_us"]

    def migration(self):
        points = []
        sizes = [0, 16 * KIB, 1 * MIB] if self.a.short else \
            [0, 1 * KIB, 16 * KIB, 256 * KIB, 1 * MIB, 4 * MIB, 16 * MIB - 24]  # cap less the echo header
        settle = 1.0  # the first snapshot (with the state) is taken after 64 KiB of input
        secs = 2.5 if self.a.short else 4.0
        for mode in ("lazy", "eager"):
            for size in sizes:
                # A snapshot every 64 KiB of input (about twice a second at 1 Mbit/s): the
                # state moved is the snapshot with its `size` bytes plus at most 64 KiB of log.
                self.pool.start(mode, state_bytes=size, snapshot_every=64 * KIB)
                every = 20 if size <= 256 * KIB else 100 if size <= 4 * MIB else 250
                j = self.run_json(self.perf("--app", "echo", "-b", "1", "-d", str(secs), "--migrate-every",
                                            str(every)), f"migration {mode} {size} B")
                if j["end"]["verdict"] != "ok":
                    raise BenchError(f"migration {mode} {size} B: {j['end']['error']}")
                timed = [m for m in j["migrations"] if m["t_s"] >= settle]
                downs = sorted(m["downtime_us"] for m in timed if "error" not in m)
                failed = sum(1 for m in timed if "error" in m)
                pt = {"mode": mode, "state_bytes": size, "count": len(downs), "failed": failed,
                      "p50_us": float(median(downs)),
                      "p99_us": float(downs[min(len(downs) - 1, int(0.99 * len(downs)))] if downs else 0)}
                points.append(pt)
                log(f"migration {mode} state {size} B: {pt['count']} migrations, p50 {pt['p50_us']:.0f} us, "
                    f"p99 {pt['p99_us']:.0f} us")
        self.pool.stop()
        floors = {size: self.floor_us(size, 20 if self.a.short else 100) for size in sizes}
        for pt in points:
            pt["floor_us"] = floors[pt["state_bytes"]]
        self.save("migration.json", {"points": points})

    EAGER_BULK_MODES = {"lazy": ("lazy", {}), "eager": ("eager", {}),
                        "eager_ack": ("eager", {"ack_after_replication": True})}

    def counter_sum(self, key):
        """An engine counter summed over the three members (mtcpctl --json status)."""
        total = 0
        for i in (1, 2, 3):
            j = self.run_json([os.path.join(self.bin, "mtcpctl"), "-s", self.pool.admin(i), "--json", "status"],
                              f"mtcpctl status of member {i}")
            stack = [j]
            while stack:
                d = stack.pop()
                if isinstance(d, dict):
                    for k, v in d.items():
                        if k == key and isinstance(v, (int, float)):
                            total += v
                        else:
                            stack.append(v)
                elif isinstance(d, list):
                    stack.extend(d)
        return total

    def eager_bulk(self):
        """Bulk echo, unpaced, one connection, in each transfer mode (lazy, eager, eager with
        ack_after_replication), alternated: first a fixed byte count without migrations (the
        throughput, and the replication bytes the members sent per byte of input), then a fixed
        time with a migration every 100 ms (the migration time under bulk traffic)."""
        nbytes = 32 * MIB if self.a.short else 128 * MIB
        secs = 1.5 if self.a.short else 3.0
        every_ms = 100
        runs = {m: {"mbit_s": [], "repl_per_byte": [], "migrating_mbit_s": [], "downtimes_us": [], "failed": 0}
                for m in self.EAGER_BULK_MODES}
        for rep in range(self.a.repeat):
            for name, (mode, extra) in self.EAGER_BULK_MODES.items():
                r = runs[name]
                self.pool.start(mode, extra=extra, name=name)
                before = self.counter_sum("replication_bytes_sent")
                j = self.run_json(self.perf("--app", "echo", "-n", str(nbytes), "--verify", "compare"),
                                  f"eager bulk {name}")
                if j["end"]["verdict"] != "ok":
                    raise BenchError(f"eager bulk {name}: {j['end']['error']}")
                r["mbit_s"].append(j["end"]["received_mbit_s"])
                r["repl_per_byte"].append((self.counter_sum("replication_bytes_sent") - before) / nbytes)
                j = self.run_json(self.perf("--app", "echo", "-d", str(secs), "--verify", "compare",
                                            "--migrate-every", str(every_ms)), f"eager bulk {name} migrating")
                if j["end"]["verdict"] != "ok":
                    raise BenchError(f"eager bulk {name} migrating: {j['end']['error']}")
                r["migrating_mbit_s"].append(j["end"]["received_mbit_s"])
                r["downtimes_us"] += [m["downtime_us"] for m in j["migrations"] if "error" not in m]
                r["failed"] += sum(1 for m in j["migrations"] if "error" in m)
                log(f"eager bulk {name} repeat {rep + 1}: {r['mbit_s'][-1]:.0f} Mbit/s, "
                    f"{r['repl_per_byte'][-1]:.2f} B replicated per input B; migrating every {every_ms} ms: "
                    f"{r['migrating_mbit_s'][-1]:.0f} Mbit/s")
        self.pool.stop()
        self.save("eager_bulk.json", {"bytes": nbytes, "migrating_seconds": secs, "migrate_every_ms": every_ms,
                                      "modes": [{"mode": m, **r} for m, r in runs.items()]})

    STARVED_PCT = 5             # the serving member's CPU quota, % of one core
    STARVED_RATE_MBIT = 2500    # offered echo each way: more than a member at 5% of a core serves
    STARVED_AT_S = 3.0          # when the quota is set
    CG_ROOT = "/sys/fs/cgroup/cpu"

    @classmethod
    def cgroup_unavailable(cls):
        """Why a cgroup v1 CPU quota cannot be set here, or None."""
        if os.geteuid() != 0:
            return "not running as root (a cgroup v1 CPU quota needs root)"
        if not os.path.isfile(os.path.join(cls.CG_ROOT, "cpu.cfs_quota_us")) or not os.access(cls.CG_ROOT, os.W_OK):
            return f"no writable cgroup v1 cpu controller at {cls.CG_ROOT}"
        return None

    def owner_of_the_connection(self):
        """The member that lists the connection (mtcpctl list), or 0 (none right now)."""
        for i in (1, 2, 3):
            p = subprocess.run([os.path.join(self.bin, "mtcpctl"), "-s", self.pool.admin(i), "--json", "list"],
                               capture_output=True, text=True, timeout=10)
            if p.returncode == 0 and json.loads(p.stdout.strip().splitlines()[-1]).get("connections"):
                return i
        return 0

    def starved(self):
        """Lazy transfer with the serving member starved of CPU (issue 14's target): bulk echo at
        STARVED_RATE_MBIT each way, every byte compared, the client moved only by its throughput
        policy; STARVED_AT_S in, the member serving the connection gets a cgroup v1 CPU quota of
        STARVED_PCT % of a core. Per run: did the connection survive (every byte came back), and
        did a throughput migration take it off the starved member. Without root or cgroup v1 the
        file says why it was skipped."""
        why = self.cgroup_unavailable()
        secs = 8 if self.a.short else 12
        doc = {"pct": self.STARVED_PCT, "rate_mbit_s": self.STARVED_RATE_MBIT, "seconds": secs,
               "starved_at_s": self.STARVED_AT_S, "runs": []}
        if why:
            log(f"starved owner: skipped: {why}")
            self.save("starved.json", {**doc, "skipped": why})
            return
        for k in range(1 if self.a.short else 10):
            self.pool.start("lazy", name="starved")
            cmd = self.perf("--app", "echo", "-b", str(self.STARVED_RATE_MBIT), "-d", str(secs), "--verify", "compare",
                            "--policy", "throughput", "--fraction", "0.5", "--warmup-ms", "1500", "--window-ms", "250",
                            "--hysteresis", "3", "--cooldown-ms", "3000", "-t", str(secs + 60))
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            cg = os.path.join(self.CG_ROOT, f"mtcp-bench-{os.getpid()}-{k}")
            starved = 0
            try:
                time.sleep(self.STARVED_AT_S)
                for _ in range(20):  # a migration may be under way: ask again
                    starved = self.owner_of_the_connection()
                    if starved:
                        break
                    time.sleep(0.05)
                if not starved:
                    raise BenchError(f"starved owner run {k + 1}: no member lists the connection")
                os.mkdir(cg)
                for name, value in (("cpu.cfs_period_us", 100000), ("cpu.cfs_quota_us", self.STARVED_PCT * 1000),
                                    ("cgroup.procs", self.pool.pid(starved))):
                    with open(os.path.join(cg, name), "w") as f:
                        f.write(f"{value}\n")
                out, err = p.communicate(timeout=secs + 90)
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait()
                if os.path.isdir(cg):
                    if starved and self.pool.procs[starved - 1].poll() is None:
                        with open(os.path.join(self.CG_ROOT, "cgroup.procs"), "w") as f:
                            f.write(f"{self.pool.pid(starved)}\n")  # back to full speed, then the group can go
                    os.rmdir(cg)
            self.pool.stop()
            j = parse_result(out, f"starved owner run {k + 1}")
            migs = j.get("migrations", [])
            moves = [m for m in migs if "error" not in m and m.get("from") == starved
                     and str(m.get("reason", "")).startswith("throughput") and m["t_s"] >= self.STARVED_AT_S]
            r = {"starved_member": starved, "survived": j["end"]["verdict"] == "ok", "error": j["end"].get("error", ""),
                 "moved": bool(moves), "moved_after_s": round(moves[0]["t_s"] - self.STARVED_AT_S, 3) if moves else None,
                 "migrations_done": sum(1 for m in migs if "error" not in m),
                 "migrations_failed": sum(1 for m in migs if "error" in m),
                 "failures": sorted({m["error"] for m in migs if "error" in m}),
                 "received_mbit_s": j["end"]["received_mbit_s"]}
            doc["runs"].append(r)
            log(f"starved owner run {k + 1}: member {starved} at {self.STARVED_PCT}% of a core: "
                f"{'survived' if r['survived'] else 'LOST: ' + r['error']}, "
                f"{'moved after %.2f s' % r['moved_after_s'] if r['moved'] else 'not moved'}, "
                f"{r['migrations_failed']} attempts failed")
        self.save("starved.json", doc)

    def rate(self):
        points = []
        secs = 1.0 if self.a.short else 3.0
        for mode in ("lazy", "eager"):
            self.pool.start(mode)
            for conns in self.a.rate_conns:
                j = self.run_json(self.loadgen("--mode", "migrate", "--conns", str(conns), "-d", str(secs), "--spread"),
                                  f"migrations/s {mode} x{conns}")
                pt = {"mode": mode, "conns": conns, "per_s": j["migrations_per_s"], "p50_us": j["migration_p50_us"],
                      "p99_us": j["migration_p99_us"], "failed": j["migrations_failed"], "seconds": j["seconds"]}
                points.append(pt)
                log(f"migrations/s {mode} x{conns}: {pt['per_s']:.0f}/s, p50 {pt['p50_us']:.0f} us")
        self.pool.stop()
        self.save("rate.json", {"points": points})

    def conns(self):
        n = 500 if self.a.short else self.a.idle_conns
        runs = []
        for transport in ("tcp", "mtcp"):
            self.pool.start("lazy")
            member = self.pool.pid(1)
            time.sleep(0.3)
            before = rss_kib(member)
            hold_file = os.path.join(self.work, f"hold-{transport}")
            cmd = self.loadgen("--mode", "idle", "--conns", str(n), "--server-id", "1", "--hold", "600",
                               "--hold-file", hold_file, *(["--plain"] if transport == "tcp" else []))
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                hold = self.hold_rss(p, hold_file, member, f"idle {transport} x{n}")
                p.send_signal(signal.SIGUSR1)
                out, err = p.communicate(timeout=300)
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            if p.returncode != 0:
                raise BenchError(f"idle {transport} x{n}: exit {p.returncode}: {err[-400:]}")
            j = parse_result(out, f"idle {transport} x{n}")
            r = {"transport": transport, "conns": n, "opened": j["opened"], "alive_at_end": j["alive_end"],
                 "open_seconds": j["open_seconds"], "member_rss_before_kib": before, "member_rss_hold_kib": hold,
                 "per_conn_bytes": (hold - before) * KIB / n}
            runs.append(r)
            log(f"idle {transport} x{n}: member RSS {before} -> {hold} KiB, "
                f"{r['per_conn_bytes'] / KIB:.1f} KiB per connection, {r['alive_at_end']} alive at the end")
            self.pool.stop()
        self.save("conns.json", {"runs": runs})

    @staticmethod
    def hold_rss(p, hold_file, member, what):
        """Waits until the load generator holds its connections; returns the member's RSS then."""
        deadline = time.time() + 300
        while not os.path.exists(hold_file):
            if p.poll() is not None:
                raise BenchError(f"{what}: exit {p.returncode}: {p.stderr.read()[-400:]}")
            if time.time() > deadline:
                raise BenchError(f"{what}: not ready after 300 s")
            time.sleep(0.1)
        time.sleep(1.0)  # let the member settle (buffers freed after the handshakes)
        return rss_kib(member)

    def run(self):
        mode = "short" if self.a.short else "full"
        os.makedirs(self.a.out, exist_ok=True)
        machine = self.machine(mode)
        steps = [("micro", self.micro), ("oneway", self.oneway), ("bulk", self.bulk), ("latency", self.latency),
                 ("migration", self.migration), ("eager_bulk", self.eager_bulk), ("starved", self.starved),
                 ("rate", self.rate),
                 ("conns", self.conns)]
        try:
            for name, fn in steps:
                if self.a.only and name not in self.a.only:
                    continue
                t = time.time()
                fn()
                log(f"{name}: {time.time() - t:.1f} s")
        finally:
            self.pool.stop()
            shutil.rmtree(self.work, ignore_errors=True)
        machine["seconds"] = round(time.time() - self.started, 1)
        self.save("machine.json", machine)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build", help="build tree with bin/ (default: build)")
    ap.add_argument("--build-type", default="RelWithDebInfo", help="recorded in machine.json")
    ap.add_argument("--out", help="results directory (default: bench/results/<UTC date-time>)")
    ap.add_argument("--short", action="store_true", help="the short form (under a minute): small sizes, one repeat")
    ap.add_argument("--repeat", type=int, help="alternated repeats of each M-TCP / plain pair (default 5, short 1)")
    ap.add_argument("--only", nargs="*", choices=["micro", "oneway", "bulk", "latency", "migration", "eager_bulk", "starved",
                                                "rate", "conns"],
                    help="run only these measurements")
    ap.add_argument("--idle-conns", type=int, default=10000, help="idle connections held on one member")
    ap.add_argument("--command", default="bash bench/run.sh", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.repeat is None:
        a.repeat = 1 if a.short else 5
    if a.repeat < 1 or a.idle_conns < 1:
        ap.error("--repeat and --idle-conns must be at least 1")
    a.bulk_conns = [1, 4]
    a.latency_conns = [1] if a.short else [1, 4]
    a.rate_conns = [1, 4] if a.short else [1, 4, 16]
    if not a.out:
        here = os.path.dirname(os.path.abspath(__file__))
        a.out = os.path.join(here, "results", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%M%SZ"))
    for tool in ("mtcpd", "mtcp-perf", "mtcp-proxy", "mtcp-loadgen", "mtcp-floor", "mtcp-bench-micro", "mtcpctl"):
        if not os.access(os.path.join(a.build, "bin", tool), os.X_OK):
            print(f"bench: error: {a.build}/bin/{tool} is missing; build first (bash scripts/build.sh release)",
                  file=sys.stderr)
            return 2
    b = Bench(a)
    try:
        b.run()
    except (BenchError, subprocess.TimeoutExpired, OSError, KeyError, json.JSONDecodeError) as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 1
    print(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
