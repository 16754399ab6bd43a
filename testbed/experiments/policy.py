"""Policy evaluation: which migration policy keeps a source stream's throughput when the
serving server's link degrades?

Three servers run `mtcpd --service source`; one client runs `mtcp-perf -c --app source -d D`
with a policy (none, throughput, stall) or pinned to a healthy server (oracle), while a
timeline degrades the serving server (default: s1's link from 50 to 2 Mbit/s at 3 s).
Effective throughput = bytes received in the first D seconds / D (from the client's interval
records), min/median/max over the repeats. Each (policy, repeat) gets a fresh network.

Usage: testbed/run policy [--repeats N] [--duration-s D] [--policies LIST] [--timeline FILE]
       [--seed N] [--server-mbit R] ... (--help lists all). Results go to
testbed/results/policy/<UTC timestamp>/ (runs.ndjson, intervals.csv, summary.csv, plot.png,
report.md).
"""

import argparse
import csv
import datetime
import json
import os
import shlex
import statistics
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, REPO)

from testbed import caps as C  # noqa: E402
from testbed import harness as H  # noqa: E402
from testbed import timeline as TL  # noqa: E402
from testbed.experiments import common as X  # noqa: E402

POLICIES = {
    # name: (mtcp-perf options, server to connect to first)
    "none": (["--policy", "none"], 1),
    "throughput": (["--policy", "throughput"], 1),
    "stall": (["--policy", "stall"], 1),
    "oracle": (["--policy", "none"], 2),  # pinned to a server the timeline leaves alone
}
DEFAULT_TIMELINE = [{"at_s": 3.0, "action": "rate", "target": "s1", "mbit": 2}]


def parse_args(argv):
    p = argparse.ArgumentParser(prog="testbed/run policy", description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--duration-s", type=float, default=10.0)
    p.add_argument("--policies", default="none,throughput,stall,oracle",
                   help="comma list of: " + ", ".join(POLICIES))
    p.add_argument("--timeline", help="JSON file with the degradation events "
                   "(default: %s)" % json.dumps(DEFAULT_TIMELINE))
    p.add_argument("--servers", type=int, default=3)
    p.add_argument("--server-mbit", type=float, default=50.0)
    p.add_argument("--client-mbit", type=float, default=None, help="default: unlimited")
    p.add_argument("--queue-pkts", type=int, default=100,
                   help="packets queued behind each server link's rate limit")
    p.add_argument("--frame-bytes", type=int, default=16384,
                   help="pool limit frame_payload_bytes_max (project default 262144)")
    p.add_argument("--send-log-bytes", type=int, default=1 << 20,
                   help="pool limit send_log_bytes_max (project default 8 MiB)")
    p.add_argument("--transfer", choices=["lazy", "eager"], default="lazy")
    p.add_argument("--seed", type=int, default=1, help="seeds the pool key and the stream")
    p.add_argument("--bin", default=H.DEFAULT_BIN, help="folder with mtcpd and mtcp-perf")
    p.add_argument("--out", default=os.path.join(REPO, "testbed", "results", "policy"))
    p.add_argument("--perf-args", default="", help="extra mtcp-perf -c options (quoted)")
    a = p.parse_args(argv)
    bad = [x for x in a.policies.split(",") if x not in POLICIES]
    if bad:
        p.error("unknown policy %s (known: %s)" % (", ".join(bad), ", ".join(POLICIES)))
    if a.repeats < 1 or a.duration_s <= 0 or a.servers < 2:
        p.error("--repeats >= 1, --duration-s > 0 and --servers >= 2 are required")
    return a


def window_bytes(doc, duration_s):
    """Bytes received in intervals that end by duration_s (+ a little slack)."""
    return sum(i["bytes_received"] for i in doc.get("intervals", [])
               if i["end_s"] <= duration_s + 0.05)


def one_run(a, policy, repeat, events, workdir, cpu_limited, log):
    from testbed import topo as T
    rng = H.new_rng(a.seed * 1000 + repeat)
    stream_seed = rng.randrange(1, 2 ** 31)
    log("  run %s #%d: rng seed %d -> stream seed %d, pool key from the same rng"
        % (policy, repeat, a.seed * 1000 + repeat, stream_seed))
    topo = T.PoolTopo(servers=a.servers, clients=1, server_mbit=a.server_mbit,
                      client_mbit=a.client_mbit)
    net, _ = T.build_net(topo, cpu_limited=cpu_limited)
    members = sched = None
    rec = {"policy": policy, "repeat": repeat, "rng_seed": a.seed * 1000 + repeat,
           "stream_seed": stream_seed}
    try:
        net.build()
        net.start()
        errs = T.set_queue_limit(net, [T.server_name(i) for i in range(1, a.servers + 1)],
                                 a.queue_pkts)
        if errs:
            raise H.HarnessError("queue limit: " + "; ".join(errs))
        pool = H.write_pool(workdir, a.servers, rng, transfer=a.transfer)
        with open(pool) as f:
            cfg = json.load(f)
        cfg["limits"].update({"frame_payload_bytes_max": a.frame_bytes,
                              "send_log_bytes_max": a.send_log_bytes})
        with open(pool, "w") as f:
            json.dump(cfg, f, indent=1)
        mtcpd = H.find_binary(a.bin, "mtcpd")
        perf = H.find_binary(a.bin, "mtcp-perf")
        tag = "%s-%d" % (policy, repeat)
        members = H.Members(net, a.servers, lambda i: [mtcpd, "--pool", pool, "--id", str(i),
                                                       "--service", "source", "--seed",
                                                       str(stream_seed)], workdir, tag)
        members.wait_ready()
        opts, first = POLICIES[policy]
        cmd = ([perf, "-c", "--pool", pool, "--app", "source", "--server-id", str(first),
                "-d", "%g" % a.duration_s, "-i", "0.25", "-t", "%g" % (a.duration_s + 30),
                "--seed", str(stream_seed), "-J"] + opts + shlex.split(a.perf_args))
        rec["client_cmd"] = " ".join(cmd)
        sched = TL.Scheduler(events, X.sched_ctx(net, members.pid, a.servers, a.netem), log=log)
        sched.start()
        rc, doc, stderr = H.run_client(net.get("c1"), cmd,
                                       os.path.join(workdir, tag + "-client.json"),
                                       a.duration_s + 40)
        sched.stop()
        rec.update({"client_rc": rc, "events": sched.applied})
        if doc is None:
            rec.update({"verdict": "no result", "error": stderr.strip()[-300:]})
            return rec, []
        end = doc["end"]
        wb = window_bytes(doc, a.duration_s)
        rec.update({"verdict": end["verdict"], "error": end["error"],
                    "effective_mbit_s": wb * 8 / a.duration_s / 1e6,
                    "whole_run_mbit_s": end["received_mbit_s"], "seconds": end["seconds"],
                    "bytes_received": end["bytes_received"],
                    "migrations_done": end["migrations_done"],
                    "migrations_failed": end["migrations_failed"],
                    "migrations": doc.get("migrations", [])})
        rows = [{"policy": policy, "repeat": repeat, "end_s": round(i["end_s"], 3),
                 "received_mbit_s": round(i["received_mbit_s"], 3)}
                for i in doc.get("intervals", [])]
        return rec, rows
    finally:
        if sched is not None:
            sched.stop()
        if members is not None:
            rec["member_exit"] = members.stop()
        net.stop()


def summarize(runs, policies):
    out = []
    for p in policies:
        vals = [r["effective_mbit_s"] for r in runs if r["policy"] == p and
                "effective_mbit_s" in r]
        ok = sum(1 for r in runs if r["policy"] == p and r.get("verdict") == "ok")
        n = sum(1 for r in runs if r["policy"] == p)
        migr = [r.get("migrations_done", 0) for r in runs if r["policy"] == p]
        out.append({"policy": p, "runs": n, "verified": ok,
                    "min": min(vals) if vals else None,
                    "median": statistics.median(vals) if vals else None,
                    "max": max(vals) if vals else None,
                    "migrations_median": statistics.median(migr) if migr else None})
    return out


def plot(path, rows, summary, runs, events, a):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [3, 1]})
    for s in summary:
        p = s["policy"]
        reps = [r for r in runs if r["policy"] == p and "effective_mbit_s" in r]
        if not reps:
            continue
        med = sorted(reps, key=lambda r: r["effective_mbit_s"])[len(reps) // 2]
        xs = [r["end_s"] for r in rows if r["policy"] == p and r["repeat"] == med["repeat"]]
        ys = [r["received_mbit_s"] for r in rows if r["policy"] == p and
              r["repeat"] == med["repeat"]]
        line, = ax1.plot(xs, ys, label="%s (run %d)" % (p, med["repeat"]), drawstyle="steps-pre")
        for m in med.get("migrations", []):
            ax1.axvline(m["t_s"], color=line.get_color(), linestyle=":", alpha=0.8)
    for ev in events:
        ax1.axvline(ev["at_s"], color="red", alpha=0.3, linewidth=4)
        ax1.text(ev["at_s"], ax1.get_ylim()[1] * 0.95, " %s %s" % (ev["action"], ev["target"]),
                 color="red", fontsize=8)
    ax1.axvline(a.duration_s, color="grey", linestyle="--")
    ax1.set_xlabel("time since connect (s); dotted: migrations; dashed: end of window")
    ax1.set_ylabel("received Mbit/s (0.25 s intervals)")
    ax1.set_title("median run per policy")
    ax1.legend(fontsize=8)
    names = [s["policy"] for s in summary if s["median"] is not None]
    med = [s["median"] for s in summary if s["median"] is not None]
    lo = [s["median"] - s["min"] for s in summary if s["median"] is not None]
    hi = [s["max"] - s["median"] for s in summary if s["median"] is not None]
    ax2.bar(names, med, yerr=[lo, hi], capsize=4, color="tab:blue")
    ax2.set_ylabel("effective Mbit/s in [0, %g s]" % a.duration_s)
    ax2.set_title("median, min-max over %d runs" % a.repeats)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fmt(v):
    return "-" if v is None else "%.2f" % v


def report(path, a, argv, caps, events, summary, runs, outdir):
    lines = ["# Policy evaluation, %s" % os.path.basename(outdir), "",
             "Command: `testbed/run policy %s`" % " ".join(shlex.quote(x) for x in argv), "",
             "## Configuration", "",
             "- %d servers (`mtcpd --service source`), %s transfer, server links %g Mbit/s "
             "(HTB, %d-packet queue), client link %s, control network servers only"
             % (a.servers, a.transfer, a.server_mbit, a.queue_pkts,
                "unlimited" if a.client_mbit is None else "%g Mbit/s" % a.client_mbit),
             "- pool limits: frame_payload_bytes_max %d, send_log_bytes_max %d"
             % (a.frame_bytes, a.send_log_bytes),
             "- client: `mtcp-perf -c --app source -d %g -i 0.25` per policy; %d repeats; seed %d "
             "(run r uses rng seed %d*1000+r for the pool key and the stream seed)"
             % (a.duration_s, a.repeats, a.seed, a.seed),
             "- timeline: `%s`" % json.dumps(events), "",
             "Effective throughput = bytes received in the first %g s / %g s." % (
                 a.duration_s, a.duration_s), "",
             "## Kernel", ""]
    lines += ["- %s: %s" % (k, v["detail"]) for k, v in caps.items()]
    lines += ["", "## Results", "",
              "| policy | runs | verified | min | median | max (Mbit/s) | migrations (median) |",
              "|---|---|---|---|---|---|---|"]
    for s in summary:
        lines.append("| %s | %d | %d | %s | %s | %s | %s |" % (
            s["policy"], s["runs"], s["verified"], fmt(s["min"]), fmt(s["median"]),
            fmt(s["max"]), s["migrations_median"]))
    lines += ["", "![throughput](plot.png)", "", "## Runs", ""]
    for r in runs:
        mig = ", ".join("%.2f s %d->%d%s" % (m["t_s"], m["from"], m["to"],
                                             " FAILED" if m.get("error") else "")
                        for m in r.get("migrations", []))
        evs = ", ".join("%s %s planned %.2f s applied %.3f s%s" % (
            e["action"], e["target"], e["at_s"], e["applied_s"], "" if e["ok"] else " ERROR")
            for e in r.get("events", []))
        lines.append("- %s #%d: %s, %s Mbit/s; migrations: %s; events: %s" % (
            r["policy"], r["repeat"], r.get("verdict"), fmt(r.get("effective_mbit_s")),
            mig or "none", evs or "none"))
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def main(argv):
    a = parse_args(argv)
    policies = a.policies.split(",")
    ok, why = C.mininet_available()
    if not ok:
        print("policy: " + why, file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("policy: needs root (Mininet creates namespaces, links and qdiscs)",
              file=sys.stderr)
        return 2
    from testbed import topo as T
    servers = [T.server_name(i) for i in range(1, a.servers + 1)]
    caps = C.probe_all()
    try:
        events = TL.validate(TL.load(a.timeline or DEFAULT_TIMELINE), servers,
                             servers + ["c1"], caps["cgroup_v1_cpu"]["ok"])
        for b in ("mtcpd", "mtcp-perf"):
            H.find_binary(a.bin, b)
    except (TL.TimelineError, H.HarnessError) as e:
        print("policy: %s" % e, file=sys.stderr)
        return 2
    cpu_limited = any(e["action"] == "cpu" for e in events)
    a.netem = caps["netem"]["ok"]  # the timeline's delay action: netem, else the NFQUEUE stage
    for k, v in caps.items():
        print("kernel: %-18s %s" % (k, v["detail"]))
    if not caps["netem"]["ok"]:
        print("kernel: netem is unavailable here: link delays are not applied, and loss uses "
              "iptables -m statistic (kernel randomness, not seeded)")
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    outdir = os.path.join(a.out, stamp)
    os.makedirs(outdir, exist_ok=True)
    print("policy: results in %s; seed %d" % (outdir, a.seed))
    runs, rows = [], []
    workdir = tempfile.mkdtemp(prefix="tb-policy-")
    for repeat in range(1, a.repeats + 1):
        for p in policies:
            try:
                rec, r = one_run(a, p, repeat, events, workdir, cpu_limited, print)
            except H.HarnessError as e:
                rec, r = {"policy": p, "repeat": repeat, "verdict": "harness error",
                          "error": str(e)}, []
            runs.append(rec)
            rows += r
            print("  %s #%d: %s, %s Mbit/s effective, %s migrations%s" % (
                p, repeat, rec.get("verdict"), fmt(rec.get("effective_mbit_s")),
                rec.get("migrations_done", "?"),
                "" if rec.get("verdict") == "ok" else " (%s)" % rec.get("error")))
    summary = summarize(runs, policies)
    with open(os.path.join(outdir, "runs.ndjson"), "w") as f:
        for r in runs:
            f.write(json.dumps(r, sort_keys=True) + "\n")
    with open(os.path.join(outdir, "intervals.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, ["policy", "repeat", "end_s", "received_mbit_s"])
        w.writeheader()
        w.writerows(rows)
    with open(os.path.join(outdir, "summary.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, list(summary[0]))
        w.writeheader()
        w.writerows(summary)
    with open(os.path.join(outdir, "config.json"), "w") as f:
        json.dump({"args": vars(a), "argv": argv, "timeline": events, "kernel": caps}, f,
                  indent=1)
    plot(os.path.join(outdir, "plot.png"), rows, summary, runs, events, a)
    report(os.path.join(outdir, "report.md"), a, argv, caps, events, summary, runs, outdir)
    print("policy: effective throughput over %d repeats (Mbit/s, min / median / max):"
          % a.repeats)
    for s in summary:
        print("  %-10s %s / %s / %s  (%d/%d verified, median %s migrations)" % (
            s["policy"], fmt(s["min"]), fmt(s["median"]), fmt(s["max"]), s["verified"],
            s["runs"], s["migrations_median"]))
    print("policy: report %s" % os.path.join(outdir, "report.md"))
    bad = [r for r in runs if r.get("verdict") != "ok"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
