"""Streaming under server-link degradation: a viewer on a pool of three stream servers, with the
migration policy, without migration, and with an oracle that knows the timeline.

Three servers run `mtcp-stream-server --media FILE --lead-ms L` (the `stream` service,
docs/streaming.md); the timeline changes their data links' rates in place (`tc class change`,
the timeline's `rate` action): by default s1 serves at full rate until 10 s, then 0.25 Mbit/s;
s2 starts at 0.25, is at full rate from 8 s to 22 s; s3 starts at 0.25 and is at full rate from
20 s (the paper-style staggered profile of apps/streaming/experiment/run.py, made by the network
instead of the member's own cap). The stream needs about 0.9 Mbit/s. One viewer on c1 runs
`mtcp-stream-client` three ways, one after the other (they would share the links if run
together): `none` (stays on s1), `policy` (`--policy throughput,stall`) and `oracle`
(`--policy none --migrate-at PLAN`, the plan computed from the timeline: move to the best
server one second before the serving one drops). Rebuffering, startup, throughput, stalls and
migrations, mean and 95 % confidence half-width over --repeats.

Usage: testbed/run streaming [--repeats 3] [--timeline FILE] [--server-mbit 20] (--help).
"""

import argparse
import json
import os
import subprocess
import sys

from testbed.experiments import common as X
from testbed import harness as H
from testbed import timeline as TL

NAME = "streaming"
RUNS = {"none": ["--policy", "none"], "policy": ["--policy", "throughput,stall"],
        "oracle": ["--policy", "none"]}
MEDIA_SCRIPT = os.path.join(X.REPO, "apps", "streaming", "make-test-media.sh")


def default_timeline(full, low):
    return [{"at_s": 0.0, "action": "rate", "target": "s2", "mbit": low},
            {"at_s": 0.0, "action": "rate", "target": "s3", "mbit": low},
            {"at_s": 8.0, "action": "rate", "target": "s2", "mbit": full},
            {"at_s": 10.0, "action": "rate", "target": "s1", "mbit": low},
            {"at_s": 20.0, "action": "rate", "target": "s3", "mbit": full},
            {"at_s": 22.0, "action": "rate", "target": "s2", "mbit": low}]


def parse_args(argv):
    p = argparse.ArgumentParser(prog="testbed/run streaming", description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--runs", default=",".join(RUNS), help="comma list of: " + ", ".join(RUNS))
    p.add_argument("--timeline", help="JSON file of events (default: the staggered rate profile "
                   "above, with --server-mbit and --low-mbit)")
    p.add_argument("--server-mbit", type=float, default=20.0,
                   help="every server link's rate at the start of each run")
    p.add_argument("--low-mbit", type=float, default=0.25, help="the degraded rate")
    p.add_argument("--queue-pkts", type=int, default=20,
                   help="packets queued behind each server link's rate (about 1 s at 0.25 Mbit/s)")
    p.add_argument("--lead-ms", type=int, default=3000,
                   help="server lead over the stream clock: the viewer's buffer")
    p.add_argument("--time-limit-s", type=float, default=50.0,
                   help="seconds each viewer watches at most (the stream is 36 s)")
    p.add_argument("--oracle-before-s", type=float, default=1.0,
                   help="the oracle moves this long before the serving server drops")
    p.add_argument("--frame-bytes", type=int, default=4096,
                   help="pool limit frame_payload_bytes_max (project default 262144; at 0.25 "
                   "Mbit/s a 16 KiB frame takes 0.5 s, leaving 250 ms windows empty)")
    p.add_argument("--send-log-bytes", type=int, default=1 << 20,
                   help="pool limit send_log_bytes_max (project default 8 MiB)")
    p.add_argument("--transfer", choices=["lazy", "eager"], default="eager")
    p.add_argument("--media", default=os.path.join(X.REPO, "build", "streaming-media", "test.ts"),
                   help="MPEG-TS file (made by apps/streaming/make-test-media.sh if missing)")
    X.add_run_args(p, NAME)
    a = p.parse_args(argv)
    a.run_list = X.comma_choice(p, a.runs, list(RUNS), "run")
    if a.repeats < 1 or a.server_mbit <= 0 or a.low_mbit <= 0 or a.time_limit_s <= 0:
        p.error("--repeats >= 1 and positive --server-mbit, --low-mbit, --time-limit-s required")
    return a


def oracle_plan(events, servers, full, before_s):
    """The oracle's `--migrate-at` plan from the rate events: whenever the serving server's rate
    falls below the best one, move to a best server `before_s` earlier (but not before that
    server became best). Returns [(t, member index)]."""
    rates = {s: full for s in servers}
    since = {s: 0.0 for s in servers}
    times = sorted({e["at_s"] for e in events if e["action"] == "rate"})
    cur, plan = servers[0], []
    for t in times:
        for e in events:
            if e["action"] == "rate" and e["at_s"] == t and e["target"] in rates:
                if e["mbit"] != rates[e["target"]]:
                    since[e["target"]] = t
                rates[e["target"]] = e["mbit"]
        best = max(rates.values())
        if rates[cur] >= best:
            continue
        cands = [s for s in servers if rates[s] == best]
        target = min(cands, key=lambda s: since[s])  # best for longest
        plan.append((round(max(t - before_s, since[target], 0.0), 3), int(target[1:])))
        cur = target
    return plan


def ensure_media(path):
    if os.path.isfile(path) and os.path.isfile(path + ".info"):
        return None
    r = subprocess.run(["bash", MEDIA_SCRIPT, path, "36", "640x360", "800", "25"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return None if r.returncode == 0 else "cannot make the test media: " + r.stdout.strip()


def reset_rates(net, servers, mbit):
    return [TL.apply_rate(net.net, s, mbit) for s in servers]


def one_run(a, net, run, rep, events, plan, work, log):
    from testbed import topo as T
    seed = a.seed * 1000 + rep
    rng = H.new_rng(seed)
    log("  %s #%d: rng seed %d (pool key)" % (run, rep, seed))
    servers = [T.server_name(i) for i in (1, 2, 3)]
    reset_rates(net, servers, a.server_mbit)
    pool = X.write_pool(work, 3, rng, a.transfer, {"frame_payload_bytes_max": a.frame_bytes,
                                                    "send_log_bytes_max": a.send_log_bytes})
    server = H.find_binary(a.bin, "mtcp-stream-server")
    client = H.find_binary(a.bin, "mtcp-stream-client")
    tag = "%s-%d" % (run, rep)
    members = H.Members(net.net, 3, lambda i: [server, "--pool", pool, "--id", str(i), "--media",
                                               a.media, "--lead-ms", str(a.lead_ms), "-q"],
                        work, tag)
    rec = {"run": run, "repeat": rep, "rng_seed": seed}
    stem = os.path.join(a.outdir, "raw", tag)
    try:
        members.wait_ready()
        cmd = [client, "--pool", pool, "--server-id", "1", "-J", "-t", "%g" % a.time_limit_s,
               "--csv", stem + ".csv", "--verify", a.media] + RUNS[run]
        if run == "oracle":
            cmd += ["--migrate-at", " ".join("%g:%d" % p for p in plan)]
        rec["client_cmd"] = " ".join(cmd)
        doc = X.client_with_timeline(events, X.sched_ctx(net.net, members.pid, 3),
                                     net.host("c1"), cmd, stem + ".json", a.time_limit_s + 20,
                                     rec)
        if doc is not None:
            e = doc["end"]
            secs = max(e["seconds"], 1e-3)
            rec.update({"verdict": e["verdict"], "complete": e["verdict"] == "ok",
                        "kbit_s": e["bytes_received"] * 8 / secs / 1000,
                        "bytes": e["bytes_received"], "seconds": secs,
                        "startup_ms": e["startup_ms"], "stalls": e["stalls"],
                        "stall_ms": e["stall_ms"],
                        "rebuffering_pct": 100.0 * e["rebuffering_ratio"],
                        "migrations": e["migrations_done"],
                        "migrations_failed": e.get("migrations_failed"),
                        "max_gap_ms": e["max_gap_ms"], "frames": e["frames"],
                        "frames_missing": e["frames_missing"],
                        "frames_repeated": e["frames_repeated"],
                        "decode_errors": e["decode_errors"],
                        "migration_list": doc.get("migrations", [])})
    finally:
        rec["member_exit"] = members.stop()
    log("  %s #%d: %s, %s kbit/s, %s s, startup %s ms, stalls %s (%s ms, %s %%), migrations %s, "
        "frames %s" % (run, rep, rec.get("verdict"), X.fmt(rec.get("kbit_s"), "%.0f"),
                       X.fmt(rec.get("seconds"), "%.1f"), rec.get("startup_ms"),
                       rec.get("stalls"), rec.get("stall_ms"),
                       X.fmt(rec.get("rebuffering_pct")), rec.get("migrations"),
                       rec.get("frames")))
    return rec


METRICS = [("kbit_s", "throughput kbit/s", "%.0f"), ("seconds", "time s", "%.1f"),
           ("startup_ms", "startup ms", "%.0f"), ("stalls", "stalls", "%.1f"),
           ("stall_ms", "stalled ms", "%.0f"), ("rebuffering_pct", "rebuffering %", "%.2f"),
           ("migrations", "migrations", "%.1f"), ("max_gap_ms", "longest data gap ms", "%.0f")]


def summarize(recs, runs):
    out = []
    for r in runs:
        rs = [x for x in recs if x["run"] == r and "kbit_s" in x]
        row = {"run": r, "runs": sum(1 for x in recs if x["run"] == r),
               "complete": sum(1 for x in rs if x.get("complete"))}
        for k, _, _ in METRICS:
            m, h = X.mean_ci([x[k] for x in rs])
            row[k + "_mean"], row[k + "_ci95"] = m, h
        out.append(row)
    return out


def read_csv(path):
    import csv
    try:
        with open(path) as f:
            return list(csv.DictReader(f))
    except OSError:
        return []


def plot(path, recs, summary, events, a):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axs = plt.subplots(2, 2, figsize=(13, 7), gridspec_kw={"width_ratios": [3, 1]})
    for r in a.run_list:
        rows = read_csv(os.path.join(a.outdir, "raw", "%s-1.csv" % r))
        if not rows:
            continue
        t = [float(x["t_s"]) for x in rows]
        rate = [float(x["rate_kbit_s"]) for x in rows]
        w = 10  # 1 s moving average of the 100 ms rows
        sm = [sum(rate[max(0, i - w + 1):i + 1]) / len(rate[max(0, i - w + 1):i + 1])
              for i in range(len(rate))]
        axs[0][0].plot(t, sm, label=r)
        axs[1][0].plot(t, [float(x["buffer_ms"]) for x in rows], label=r)
    for ev in events:
        for ax in (axs[0][0], axs[1][0]):
            ax.axvline(ev["at_s"], color="red", alpha=0.15, linewidth=3)
        axs[0][0].text(ev["at_s"], 2700, " %s %g" % (ev["target"], ev["mbit"]), color="red",
                       fontsize=7, rotation=90, va="top")
    axs[0][0].set_ylabel("received kbit/s (1 s average)")
    axs[0][0].set_ylim(0, 3000)
    axs[0][0].set_title("repeat 1; red: link rate changes (Mbit/s)")
    axs[0][0].legend(fontsize=8)
    axs[1][0].set_ylabel("playout buffer, ms")
    axs[1][0].set_xlabel("time since the timeline's start (s)")
    names = [s["run"] for s in summary]
    for ax, k, label in ((axs[0][1], "kbit_s", "throughput kbit/s"),
                         (axs[1][1], "rebuffering_pct", "rebuffering %")):
        ms = [s[k + "_mean"] or 0 for s in summary]
        hs = [s[k + "_ci95"] or 0 for s in summary]
        ax.bar(names, ms, yerr=hs, capsize=4)
        ax.set_ylabel(label)
        ax.set_title("mean, 95 %% CI, %d repeats" % a.repeats, fontsize=9)
    X.save_fig(fig, path)


def report(path, a, argv, caps, summary, recs, events, plan, outdir):
    L = X.report_head("Streaming under server-link degradation", NAME, argv, outdir) + [
         "- 3 servers `mtcp-stream-server --media %s --lead-ms %d` (%s transfer; pool limits "
         "frame_payload_bytes_max %d, send_log_bytes_max %d); server links %g Mbit/s at the "
         "start of every run (HTB, %d-packet queue), control network servers only"
         % (os.path.basename(a.media), a.lead_ms, a.transfer, a.frame_bytes, a.send_log_bytes,
            a.server_mbit, a.queue_pkts),
         "- viewer on c1: `mtcp-stream-client --server-id 1 -t %g` with `none` (--policy none), "
         "`policy` (--policy throughput,stall), `oracle` (--policy none --migrate-at '%s'); "
         "runs one after the other, fresh members each, one network; %d repeats; seed %d"
         % (a.time_limit_s, " ".join("%g:%d" % p for p in plan), a.repeats, a.seed),
         "- timeline (applied by the testbed, `tc class change` in place): `%s`"
         % json.dumps(events), "",
         "Throughput = bytes received / the viewer's time (the stream is paced: the oracle is "
         "the ceiling). Rebuffering = stalled / (played + stalled) time. Mean ± 95 % confidence "
         "half-width (Student t) over the repeats.", "", "## Kernel", ""] + X.kernel_lines(caps)
    L += ["", "## Results", "",
          "| run | complete | " + " | ".join(m[1] for m in METRICS) + " |",
          "|---|---|" + "---|" * len(METRICS)]
    for s in summary:
        cells = []
        for k, _, f in METRICS:
            rs = [x[k] for x in recs if x["run"] == s["run"] and k in x]
            cells.append(X.fmt_ci(rs, f))
        L.append("| %s | %d/%d | %s |" % (s["run"], s["complete"], s["runs"], " | ".join(cells)))
    byrun = {s["run"]: s["kbit_s_mean"] for s in summary}
    if byrun.get("policy") and byrun.get("oracle") and byrun.get("none"):
        L += ["", "Policy / oracle throughput: %.2f; policy / none: %.2f."
              % (byrun["policy"] / byrun["oracle"], byrun["policy"] / byrun["none"])]
    L += ["", "![streaming](plot.png)", "", "## Runs", ""]
    for r in recs:
        mig = ", ".join("%.2f s %s->%s (downtime %.1f ms, gap %s ms)%s" % (
            m.get("t_s", 0), m.get("from"), m.get("to"), m.get("downtime_us", 0) / 1000,
            m.get("gap_ms"), " FAILED" if m.get("error") else "")
            for m in r.get("migration_list", []))
        L.append("- %s #%d: %s, %s kbit/s over %s s, frames %s (missing %s, repeated %s, decode "
                 "errors %s), stalls %s; migrations: %s" % (
                     r["run"], r["repeat"], r.get("verdict"), X.fmt(r.get("kbit_s"), "%.0f"),
                     X.fmt(r.get("seconds"), "%.1f"), r.get("frames"), r.get("frames_missing"),
                     r.get("frames_repeated"), r.get("decode_errors"), r.get("stalls"),
                     mig or "none"))
    X.write_lines(path, L)


def main(argv):
    a = parse_args(argv)
    from testbed import topo as T
    servers = [T.server_name(i) for i in (1, 2, 3)]
    events = X.load_timeline(NAME, a.timeline, default_timeline(a.server_mbit, a.low_mbit),
                             servers, servers + ["c1"])
    if events is None:
        return 2
    bad = [e for e in events if e["action"] != "rate"]
    if bad:
        print("%s: this experiment's timeline takes rate events only (got %s)"
              % (NAME, bad[0]["action"]), file=sys.stderr)
        return 2
    started = X.begin(NAME, a, ["mtcp-stream-server", "mtcp-stream-client"])
    if started is None:
        return 2
    caps, outdir, work = started
    a.outdir = outdir
    os.makedirs(os.path.join(outdir, "raw"), exist_ok=True)
    why = ensure_media(a.media)
    if why:
        print("%s: %s" % (NAME, why), file=sys.stderr)
        return 2
    plan = oracle_plan(events, servers, a.server_mbit, a.oracle_before_s)
    print("%s: timeline %s; oracle plan %s" % (NAME, json.dumps(events), plan))
    recs = []
    net = X.Net(3, a.server_mbit, queue_pkts=a.queue_pkts)
    try:
        recs = X.each_run(a.repeats, a.run_list,
                          lambda r, rep: one_run(a, net, r, rep, events, plan, work, print))
    finally:
        net.stop()
    summary = summarize(recs, a.run_list)
    X.write_ndjson(os.path.join(outdir, "runs.ndjson"), recs)
    X.write_csv(os.path.join(outdir, "summary.csv"), summary, list(summary[0]))
    X.write_config(outdir, a, argv, caps, {"timeline": events, "oracle_plan": plan})
    plot(os.path.join(outdir, "plot.png"), recs, summary, events, a)
    report(os.path.join(outdir, "report.md"), a, argv, caps, summary, recs, events, plan, outdir)
    for s in summary:
        print("%s: %-7s complete %d/%d, %s kbit/s, rebuffering %s %%" % (
            NAME, s["run"], s["complete"], s["runs"], X.fmt(s["kbit_s_mean"], "%.0f"),
            X.fmt(s["rebuffering_pct_mean"])))
    print("%s: report %s" % (NAME, os.path.join(outdir, "report.md")))
    # An incomplete stream without migration is a measured outcome; exit 1 only if a run could
    # not be carried out or a migrating viewer did not get its stream intact.
    failed = [r for r in recs if r.get("verdict") in ("no result", "harness error") or
              (r["run"] != "none" and not r.get("complete"))]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
