#!/usr/bin/python3
"""The one-machine streaming experiment (docs/streaming.md "Experiment").

Three pool members with staggered degradation profiles serve the same MPEG-TS file; one viewer
(mtcp-stream-client) watches it three ways, in parallel, each on its own pool:
  none    no migration: stays on member 1 whatever happens (plain TCP behaves the same way);
  policy  the paper's policy: migrate when the inbound rate falls below a fraction of the best
          window rate (throughput policy, warm-up and hysteresis; mtcp-stream-client defaults);
  oracle  knows the profiles and moves to the best member one second before each change.
Repeated --repeats times. Writes to --out: raw client JSON and CSV timelines, summary.csv,
summary.md (mean and 95% confidence interval over the repeats) and timeline.png (received
rate and buffer level of the first repeat).

  /usr/bin/python3 apps/streaming/experiment/run.py --bin build/bin --repeats 5
"""
import argparse, json, math, os, shutil, signal, socket, statistics, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
# kbit/s caps over time (s since the members' start); the stream needs about 900 kbit/s.
PROFILES = {1: "0:max 10:250", 2: "0:250 8:max 22:250", 3: "0:250 20:max"}
ORACLE = "9:2 21:3"
LEAD_MS = 3000  # the server runs 3 s ahead of the stream clock: the viewer's buffer
RUNS = {
    "none": ["--policy", "none"],
    "policy": ["--policy", "throughput,stall"],
    "oracle": ["--policy", "none", "--migrate-at", ORACLE],
}
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def free_base(n):
    """A range of n ports below 32768 on which nothing listens (from `ss -ltnH`)."""
    out = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True, check=True).stdout
    busy = {int(line.split()[3].rsplit(":", 1)[1]) for line in out.splitlines() if line.strip()}
    for base in range(23000 + (os.getpid() % 50) * 100, 32000, 100):
        if not busy.intersection(range(base, base + n)):
            return base
    sys.exit("run.py: no free port range")


def wait_port(port, deadline=10.0):
    end = time.time() + deadline
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("member on port %d did not start" % port)


def ci(xs):
    if len(xs) < 2:
        return (xs[0] if xs else float("nan")), float("nan")
    m = statistics.mean(xs)
    return m, T95.get(len(xs) - 1, 1.96) * statistics.stdev(xs) / math.sqrt(len(xs))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="build/bin", help="folder with mtcp-stream-server and mtcp-stream-client")
    ap.add_argument("--media", default="build/streaming-media/test.ts", help="MPEG-TS file (made if missing)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--time-limit", type=float, default=50.0, help="seconds each viewer watches at most")
    ap.add_argument("--out", default=os.path.join(HERE, "..", "results"))
    a = ap.parse_args()
    if a.repeats < 1 or a.repeats > 50:
        sys.exit("run.py: --repeats must be 1..50")
    server, client = os.path.join(a.bin, "mtcp-stream-server"), os.path.join(a.bin, "mtcp-stream-client")
    for b in (server, client):
        if not os.access(b, os.X_OK):
            sys.exit("run.py: %s is missing (build first: scripts/build.sh release)" % b)
    if subprocess.call(["bash", os.path.join(HERE, "..", "make-test-media.sh"), a.media, "36", "640x360", "800", "25"]) != 0:
        sys.exit("run.py: cannot make the test media")
    os.makedirs(os.path.join(a.out, "raw"), exist_ok=True)
    work = tempfile.mkdtemp(prefix="stream-exp-")
    procs = []
    rows = []
    try:
        fd = os.open(os.path.join(work, "pool.key"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:  # mode 0600: a key others can read is refused
            f.write(os.urandom(32))
        base = free_base(100)
        for rep in range(a.repeats):
            clients = {}
            members = []
            for k, name in enumerate(RUNS):
                b = base + 10 * k
                pool = os.path.join(work, "pool-%s.json" % name)
                with open(pool, "w") as f:
                    json.dump({"pool_key_file": "pool.key", "transfer": "eager",
                               "limits": {"claim_timeout_ms": 300},
                               "members": [{"id": i, "data": "127.0.0.1:%d" % (b + i), "control": "127.0.0.1:%d" % (b + 3 + i)}
                                           for i in (1, 2, 3)]}, f)
                for i in (1, 2, 3):
                    p = subprocess.Popen([server, "--pool", pool, "--id", str(i), "--media", a.media, "-q",
                                          "--profile", PROFILES[i], "--lead-ms", str(LEAD_MS)], stderr=open(os.path.join(work, "m-%s-%d.log" % (name, i)), "w"))
                    procs.append(p)
                    members.append(p)
            for k in range(len(RUNS)):
                for i in (1, 2, 3):
                    wait_port(base + 10 * k + 3 + i)
            for k, (name, args) in enumerate(RUNS.items()):
                stem = os.path.join(a.out, "raw", "%s-%d" % (name, rep + 1))
                p = subprocess.Popen([client, "--pool", os.path.join(work, "pool-%s.json" % name), "-J", "-t", str(a.time_limit),
                                      "--csv", stem + ".csv"] + args, stdout=open(stem + ".json", "w"), stderr=subprocess.DEVNULL)
                procs.append(p)
                clients[name] = (p, stem)
            for name, (p, stem) in clients.items():
                p.wait()
                e = json.load(open(stem + ".json"))["end"]
                secs = max(e["seconds"], 1e-3)
                rows.append({"run": name, "repeat": rep + 1, "kbit_s": e["bytes_received"] * 8 / secs / 1000,
                             "bytes": e["bytes_received"], "seconds": secs, "complete": e["verdict"] == "ok",
                             "startup_ms": e["startup_ms"], "stalls": e["stalls"], "stall_ms": e["stall_ms"],
                             "rebuffering_pct": 100 * e["rebuffering_ratio"], "migrations": e["migrations_done"],
                             "max_gap_ms": e["max_gap_ms"],
                             "frames": e["frames"], "decode_errors": e["decode_errors"],
                             "frames_missing": e["frames_missing"], "frames_repeated": e["frames_repeated"]})
                print("repeat %d %-6s %7.0f kbit/s  %5.1f s  stalls %3d (%6.0f ms, %5.2f%%)  migrations %d  frames %d  %s" % (
                    rep + 1, name, rows[-1]["kbit_s"], secs, e["stalls"], e["stall_ms"], rows[-1]["rebuffering_pct"],
                    e["migrations_done"], e["frames"], "complete" if rows[-1]["complete"] else "INCOMPLETE"), flush=True)
            for p in members:
                p.send_signal(signal.SIGTERM)
            for p in members:
                p.wait()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(work, ignore_errors=True)
    keys = list(rows[0].keys())
    with open(os.path.join(a.out, "summary.csv"), "w") as f:
        f.write(",".join(keys) + "\n")
        for r in rows:
            f.write(",".join(str(r[k]) for k in keys) + "\n")
    lines = ["| run | throughput kbit/s | time s | complete | startup ms | stalls | stalled ms | rebuffering % | migrations | longest data gap ms |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name in RUNS:
        rs = [r for r in rows if r["run"] == name]
        cell = lambda k, fmt="%.0f": ("%s ± %s" % (fmt % ci([r[k] for r in rs])[0], fmt % ci([r[k] for r in rs])[1]))
        lines.append("| %s | %s | %s | %d/%d | %s | %s | %s | %s | %s | %s |" % (
            name, cell("kbit_s"), cell("seconds", "%.1f"), sum(r["complete"] for r in rs), len(rs), cell("startup_ms"),
            cell("stalls", "%.1f"), cell("stall_ms"), cell("rebuffering_pct", "%.2f"), cell("migrations", "%.1f"), cell("max_gap_ms")))
    lines.append("")
    lines.append("Mean ± 95%% confidence half-width (Student t) over %d repeats. Profiles (kbit/s from the members' start): %s. Oracle plan: %s. Server lead %d ms (the playout buffer)." % (
        a.repeats, "; ".join("member %d `%s`" % (i, p) for i, p in PROFILES.items()), ORACLE, LEAD_MS))
    with open(os.path.join(a.out, "summary.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot(a.out)


def plot(out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for name in RUNS:
        t, rate, buf = [], [], []
        with open(os.path.join(out, "raw", "%s-1.csv" % name)) as f:
            next(f)
            for line in f:
                c = line.strip().split(",")
                t.append(float(c[0])); rate.append(float(c[2])); buf.append(float(c[3]))
        w = 10  # 1 s moving average of the 100 ms rows
        sm = [sum(rate[max(0, i - w + 1):i + 1]) / len(rate[max(0, i - w + 1):i + 1]) for i in range(len(rate))]
        ax1.plot(t, sm, label=name)
        ax2.plot(t, buf, label=name)
    ax1.set_ylabel("received kbit/s (1 s avg)")
    ax1.set_ylim(0, 3000)
    ax2.set_ylabel("playout buffer (ms)")
    ax2.set_xlabel("time since connect (s)")
    ax1.legend()
    ax1.set_title("stream over M-TCP: three members with staggered degradation (repeat 1)")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "timeline.png"), dpi=90)


if __name__ == "__main__":
    main()
