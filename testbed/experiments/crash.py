"""Crash tolerance: kill -9 of the serving member at a random (seeded, printed) time during a
transfer; does the connection survive on another member with every byte verified?

3 servers, one client `mtcp-perf -c --app APP -d D --policy stall --stall-ms S` connected to s1;
at a time drawn from the run's generator (uniform in [--kill-from-s, D - --kill-margin-s]) s1's
member gets SIGKILL (the timeline's `kill` action, by PID). Modes: `lazy` (the new member claims
the state from the owner, which is dead), `eager` (state replicated to the others as it
changes), `eager-ack` (eager with ack_after_replication: input is acknowledged only once
replicated). Survived = the client's verdict is ok: it ran to the end and verified every byte
(mtcp-perf checks the stream against the seed). Each run gets fresh members in one network.

Usage: testbed/run crash [--modes lazy,eager,eager-ack] [--repeats 5] [--duration-s 6] (--help).
"""

import argparse
import os
import sys

from testbed.experiments import common as X
from testbed import harness as H

NAME = "crash"
MODES = {"lazy": ("lazy", False), "eager": ("eager", False), "eager-ack": ("eager", True)}


def parse_args(argv):
    p = argparse.ArgumentParser(prog="testbed/run crash", description=__doc__.split("\n")[0])
    p.add_argument("--modes", default="lazy,eager,eager-ack",
                   help="comma list of: " + ", ".join(MODES))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--duration-s", type=float, default=6.0)
    p.add_argument("--app", choices=["echo", "source"], default="echo")
    p.add_argument("--bitrate", type=float, default=5.0,
                   help="echo: client input rate, Mbit/s (-b)")
    p.add_argument("--kill-from-s", type=float, default=1.0)
    p.add_argument("--kill-margin-s", type=float, default=2.0)
    p.add_argument("--stall-ms", type=int, default=500)
    p.add_argument("--server-mbit", type=float, default=50.0)
    X.add_run_args(p, NAME)
    a = p.parse_args(argv)
    a.mode_list = X.comma_choice(p, a.modes, list(MODES), "mode")
    if a.repeats < 1 or a.duration_s - a.kill_margin_s <= a.kill_from_s:
        p.error("--repeats >= 1 and --duration-s - --kill-margin-s > --kill-from-s are required")
    return a


def one_run(a, net, mode, rep, work, log):
    seed = a.seed * 1000 + rep
    rng = H.new_rng(seed)
    stream_seed = rng.randrange(1, 2 ** 31)
    kill_at = round(rng.uniform(a.kill_from_s, a.duration_s - a.kill_margin_s), 3)
    log("  %s #%d: rng seed %d -> stream seed %d, kill s1 at %.3f s"
        % (mode, rep, seed, stream_seed, kill_at))
    transfer, ack = MODES[mode]
    pool = X.write_pool(work, 3, rng, transfer, {})
    if ack:
        import json
        with open(pool) as f:
            cfg = json.load(f)
        cfg["ack_after_replication"] = True
        with open(pool, "w") as f:
            json.dump(cfg, f, indent=1)
    mtcpd, perf = H.find_binary(a.bin, "mtcpd"), H.find_binary(a.bin, "mtcp-perf")
    tag = "%s-%d" % (mode, rep)
    svc_seed = ["--seed", str(stream_seed)] if a.app == "source" else []  # echo has none
    members = H.Members(net.net, 3, lambda i: [mtcpd, "--pool", pool, "--id", str(i),
                                               "--service", a.app] + svc_seed, work, tag)
    rec = {"mode": mode, "repeat": rep, "rng_seed": seed, "stream_seed": stream_seed,
           "kill_at_s": kill_at, "transfer": transfer, "ack_after_replication": ack}
    try:
        members.wait_ready()
        cmd = [perf, "-c", "--pool", pool, "--app", a.app, "--server-id", "1",
               "-d", "%g" % a.duration_s, "-i", "0.25", "-t", "%g" % (a.duration_s + 15),
               "--seed", str(stream_seed), "--policy", "stall", "--stall-ms", str(a.stall_ms),
               "-J"]
        if a.app == "echo":
            cmd += ["-b", "%g" % a.bitrate]
        rec["client_cmd"] = " ".join(cmd)
        doc = X.client_with_timeline([{"at_s": kill_at, "action": "kill", "target": "s1"}],
                                     X.sched_ctx(net.net, members.pid, 3), net.host("c1"), cmd,
                                     os.path.join(work, tag + ".json"), a.duration_s + 20, rec)
        if doc is not None:
            e = doc["end"]
            rec.update({"verdict": e["verdict"], "error": e.get("error"),
                        "bytes_received": e["bytes_received"], "seconds": e["seconds"],
                        "migrations_done": e["migrations_done"],
                        "migrations_failed": e["migrations_failed"],
                        "migrations": doc.get("migrations", [])})
            # recovery: the first successful migration after the kill (the client's own
            # downtime_us for it, and its t_s less the kill time)
            rec_m = [m for m in doc.get("migrations", []) if m["t_s"] >= kill_at
                     and not m.get("error")]
            if rec_m:
                rec["recovery_downtime_ms"] = rec_m[0]["downtime_us"] / 1000
                rec["kill_to_recovered_s"] = round(rec_m[0]["t_s"] - kill_at, 3)
    finally:
        rec["member_exit"] = members.stop()
    rec["survived"] = rec.get("verdict") == "ok"
    log("  %s #%d: %s%s" % (mode, rep, "SURVIVED, bytes verified" if rec["survived"] else
                            "LOST (%s: %s)" % (rec.get("verdict"), rec.get("error")),
                            ", %s B, recovered %s s after the kill" % (
                                rec.get("bytes_received"), rec.get("kill_to_recovered_s"))))
    return rec


def summarize(recs, modes):
    out = []
    for m in modes:
        rs = [r for r in recs if r["mode"] == m]
        rs_ok = [r for r in rs if r.get("survived") and "kill_to_recovered_s" in r]
        k2r = sorted(r["kill_to_recovered_s"] for r in rs_ok)
        dt = sorted(r["recovery_downtime_ms"] for r in rs_ok)
        out.append({"mode": m, "runs": len(rs), "survived": sum(r["survived"] for r in rs),
                    "kill_to_recovered_median_s": k2r[len(k2r) // 2] if k2r else None,
                    "recovery_downtime_median_ms": dt[len(dt) // 2] if dt else None})
    return out


def plot(path, recs, summary, a):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    names = [s["mode"] for s in summary]
    ax1.bar(names, [100.0 * s["survived"] / s["runs"] if s["runs"] else 0 for s in summary],
            color="tab:green")
    ax1.set_ylim(0, 105)
    ax1.set_ylabel("connections survived, bytes verified (%)")
    ax1.set_title("kill -9 of the serving member, %d runs per mode" % a.repeats)
    for k, m in enumerate(names):
        rs = [r for r in recs if r["mode"] == m]
        ax2.scatter([r["kill_at_s"] for r in rs if r["survived"]],
                    [k] * sum(1 for r in rs if r["survived"]), marker="o", color="tab:green")
        ax2.scatter([r["kill_at_s"] for r in rs if not r["survived"]],
                    [k] * sum(1 for r in rs if not r["survived"]), marker="x", color="red")
    ax2.set_yticks(range(len(names)))
    ax2.set_yticklabels(names)
    ax2.set_xlim(0, a.duration_s)
    ax2.set_xlabel("kill time (s since connect); o survived, x lost")
    ax2.set_title("seeded kill times (seed %d)" % a.seed)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(path, a, argv, caps, summary, recs, outdir):
    L = ["# Crash tolerance, %s" % os.path.basename(outdir), "",
         "Command: `%s`" % X.command_line(NAME, argv), "",
         "## Configuration", "",
         "- 3 servers (`mtcpd --service %s`), server links %g Mbit/s, control network servers "
         "only" % (a.app, a.server_mbit),
         "- client: `mtcp-perf -c --app %s -d %g --policy stall --stall-ms %d%s` to s1; SIGKILL "
         "of s1's member (by PID) at a time uniform in [%g, %g] s from the run's generator "
         "(rng seed %d*1000+repeat, printed per run)"
         % (a.app, a.duration_s, a.stall_ms, " -b %g" % a.bitrate if a.app == "echo" else "",
            a.kill_from_s, a.duration_s - a.kill_margin_s, a.seed),
         "- survived = the client's verdict ok: the run reached its end and every byte was "
         "verified by mtcp-perf", "", "## Kernel", ""] + X.kernel_lines(caps)
    L += ["", "## Results", "",
          "| mode | runs | survived (bytes verified) | kill to recovered, median s | "
          "recovery migration downtime, median ms |", "|---|---|---|---|---|"]
    for s in summary:
        L.append("| %s | %d | %d | %s | %s |" % (
            s["mode"], s["runs"], s["survived"], X.fmt(s["kill_to_recovered_median_s"], "%.3f"),
            X.fmt(s["recovery_downtime_median_ms"], "%.0f")))
    L += ["", "Kill to recovered: the first successful migration's `t_s` (client clock) less the "
          "kill time; downtime: that migration's `downtime_us` as the client reports it.", "",
          "![crash](plot.png)", "", "## Runs", ""]
    for r in recs:
        L.append("- %s #%d: kill at %.3f s: %s%s" % (
            r["mode"], r["repeat"], r["kill_at_s"],
            "survived, %s B verified, recovered %s s after the kill, migrations %s" % (
                r.get("bytes_received"), r.get("kill_to_recovered_s"), r.get("migrations_done"))
            if r["survived"] else "lost", "" if r["survived"] else
            " (%s: %s)" % (r.get("verdict"), r.get("error"))))
    with open(path, "w") as f:
        f.write("\n".join(L) + "\n")


def main(argv):
    a = parse_args(argv)
    started = X.begin(NAME, a, ["mtcpd", "mtcp-perf"])
    if started is None:
        return 2
    caps, outdir, work = started
    recs = []
    net = X.Net(3, a.server_mbit)
    try:
        for rep in range(1, a.repeats + 1):
            for m in a.mode_list:
                try:
                    recs.append(one_run(a, net, m, rep, work, print))
                except H.HarnessError as e:
                    recs.append({"mode": m, "repeat": rep, "kill_at_s": float("nan"), "survived": False,
                                 "verdict": "harness error", "error": str(e)})
    finally:
        net.stop()
    summary = summarize(recs, a.mode_list)
    X.write_ndjson(os.path.join(outdir, "runs.ndjson"), recs)
    X.write_csv(os.path.join(outdir, "summary.csv"), summary, list(summary[0]))
    X.write_config(outdir, a, argv, caps)
    plot(os.path.join(outdir, "plot.png"), recs, summary, a)
    report(os.path.join(outdir, "report.md"), a, argv, caps, summary, recs, outdir)
    for s in summary:
        print("%s: %-9s survived %d/%d" % (NAME, s["mode"], s["survived"], s["runs"]))
    print("%s: report %s" % (NAME, os.path.join(outdir, "report.md")))
    # Lost connections are a measured outcome (lazy cannot survive a dead owner), not a
    # failure of the experiment; exit 1 only if a run could not be carried out.
    return 1 if any(r.get("verdict") in ("no result", "harness error") for r in recs) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
