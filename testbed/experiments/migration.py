"""Migration time against state size, lazy vs eager, over Mininet links, with the physical
floor beside.

3 servers run `mtcpd --service echo --state-bytes S --snapshot-every 65536` (S extra bytes in
every snapshot, docs/benchmarks.md); one client `mtcp-perf -c --app echo -b 1 -d D
--migrate-every E` moves its connection round robin over the members. Migration time = the
client's `downtime_us` per migration (request to the new member's ACCEPT); only migrations after
the first second are timed (the first snapshot, with the state, comes after 64 KiB of input).
Each (mode, size, repeat) gets fresh members in one network; per-repeat medians, then the median
and range over repeats.

Physical floor = client RTT + inter-server RTT + S / control-link rate, with both RTTs measured
by ping in the same network (the issue's definition). Added client RTT (--rtts, ms): the
timeline's `delay` action on c1 (timeline.apply_delay): netem where the kernel has it; here it
is missing, so testbed/nfq_delay.py (iptables NFQUEUE, user space) holds every packet the client
receives that long. The server-server RTT is left as the topology makes it.

Usage: testbed/run migration [--sizes 0,16384,262144,1048576] [--rtts 0,20] [--repeats 2]
"""

import argparse
import os
import statistics
import sys

from testbed.experiments import common as X
from testbed import harness as H
from testbed import timeline as TL

NAME = "migration"


def parse_args(argv):
    p = argparse.ArgumentParser(prog="testbed/run migration", description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="0,16384,262144,1048576",
                   help="extra state bytes per snapshot (comma list)")
    p.add_argument("--modes", default="lazy,eager")
    p.add_argument("--rtts", default="0,20", help="added client RTTs, ms (comma list)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--duration-s", type=float, default=3.0)
    p.add_argument("--server-mbit", type=float, default=100.0, help="data links")
    p.add_argument("--control-mbit", type=float, default=100.0, help="control links")
    X.add_run_args(p, NAME)
    a = p.parse_args(argv)
    try:
        a.size_list = [int(x) for x in a.sizes.split(",")]
        a.rtt_list = [float(x) for x in a.rtts.split(",")]
    except ValueError:
        p.error("--sizes (integers) and --rtts (numbers) must be comma lists, got %r, %r"
                % (a.sizes, a.rtts))
    if any(r < 0 for r in a.rtt_list):
        p.error("--rtts must be >= 0")
    a.mode_list = a.modes.split(",")
    if any(m not in ("lazy", "eager") for m in a.mode_list):
        p.error("--modes: lazy and/or eager")
    if any(s < 0 or s > (16 << 20) - 24 for s in a.size_list):
        p.error("--sizes: 0 .. 16 MiB - 24 (the snapshot cap less the echo header)")
    if a.repeats < 1 or a.duration_s <= 1.5 or a.control_mbit <= 0:
        p.error("--repeats >= 1, --duration-s > 1.5 and --control-mbit > 0 are required")
    return a


def every_ms(size):
    return 100 if size <= 256 * 1024 else 250 if size <= 4 << 20 else 500


def one_run(a, net, mode, size, rep, work, log, added):
    seed = a.seed * 1000 + rep
    rng = H.new_rng(seed)
    stream_seed = rng.randrange(1, 2 ** 31)
    pool = X.write_pool(work, 3, rng, mode, {})
    mtcpd, perf = H.find_binary(a.bin, "mtcpd"), H.find_binary(a.bin, "mtcp-perf")
    tag = "%s-%d-%g-%d" % (mode, size, added, rep)
    members = H.Members(net.net, 3, lambda i: [mtcpd, "--pool", pool, "--id", str(i),
                                               "--service", "echo", "-q", "--state-bytes",
                                               str(size), "--snapshot-every", "65536"],
                        work, tag)
    rec = {"mode": mode, "state_bytes": size, "repeat": rep, "rng_seed": seed,
           "added_rtt_ms": added,
           "stream_seed": stream_seed, "migrate_every_ms": every_ms(size)}
    try:
        members.wait_ready()
        cmd = [perf, "-c", "--pool", pool, "--app", "echo", "--server-id", "1", "-b", "1",
               "-d", "%g" % a.duration_s, "--migrate-every", str(every_ms(size)), "-i", "0",
               "-t", "%g" % (a.duration_s + 30), "--seed", str(stream_seed), "-J"]
        rec["client_cmd"] = " ".join(cmd)
        rc, doc, err = H.run_client(net.host("c1"), cmd, os.path.join(work, tag + ".json"),
                                    a.duration_s + 35)
        rec["client_rc"] = rc
        if doc is None:
            rec.update({"verdict": "no result", "error": err.strip()[-300:]})
        else:
            e = doc["end"]
            timed = [m for m in doc.get("migrations", []) if m["t_s"] >= 1.0]
            downs = sorted(m["downtime_us"] for m in timed if not m.get("error"))
            rec.update({"verdict": e["verdict"], "error": e.get("error"),
                        "timed": len(downs), "failed": sum(1 for m in timed if m.get("error")),
                        "p50_ms": statistics.median(downs) / 1000 if downs else None,
                        "max_ms": downs[-1] / 1000 if downs else None,
                        "downtimes_us": downs})
    finally:
        rec["member_exit"] = members.stop()
    log("  %-5s +%g ms %8d B #%d: %s, %s timed, p50 %s ms" % (mode, added, size, rep,
                                                              rec.get("verdict"),
                                                       rec.get("timed"),
                                                       X.fmt(rec.get("p50_ms"), "%.2f")))
    return rec


def summarize(recs, a, floor_ms):
    out = []
    for d in a.rtt_list:
        for m in a.mode_list:
            for s in a.size_list:
                v = [r["p50_ms"] for r in recs if r["mode"] == m and r["state_bytes"] == s
                     and r.get("added_rtt_ms") == d and r.get("verdict") == "ok"
                     and r.get("p50_ms") is not None]
                med = statistics.median(v) if v else None
                f = floor_ms[(d, s)]
                out.append({"mode": m, "added_rtt_ms": d, "state_bytes": s,
                            "repeats_ok": len(v), "p50_ms_median": med,
                            "p50_ms_min": min(v) if v else None,
                            "p50_ms_max": max(v) if v else None, "floor_ms": f,
                            "ratio_to_floor": med / f if med is not None and f else None})
    return out


def plot(path, summary, a):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 4.5))
    xs = [max(s, 1) for s in a.size_list]
    styles = {"lazy": "tab:blue", "eager": "tab:orange"}
    for k, (m, d) in enumerate([(m, d) for d in a.rtt_list for m in ("lazy", "eager")]):
        col = styles[m]
        rows = [r for r in summary if r["mode"] == m and r["added_rtt_ms"] == d]
        if not rows:
            continue
        med = [r["p50_ms_median"] for r in rows]
        lo = [(r["p50_ms_median"] or 0) - (r["p50_ms_min"] or 0) for r in rows]
        hi = [(r["p50_ms_max"] or 0) - (r["p50_ms_median"] or 0) for r in rows]
        ax.errorbar(xs, [v if v is not None else float("nan") for v in med], yerr=[lo, hi],
                    marker="os^v"[a.rtt_list.index(d) % 4], capsize=3, color=col,
                    linestyle="-" if a.rtt_list.index(d) == 0 else "--",
                    label="%s, +%g ms RTT (median of per-run p50)" % (m, d))
    for d in a.rtt_list:
        fl = [r["floor_ms"] for r in summary if r["mode"] == summary[0]["mode"]
              and r["added_rtt_ms"] == d]
        ax.plot(xs, fl, "k--", alpha=0.8, linewidth=1)
        ax.plot(xs, [3 * f for f in fl], "k:", alpha=0.4, linewidth=1)
        ax.text(xs[0], fl[0], " floor +%g ms" % d, fontsize=7, va="bottom")
    ax.plot([], [], "k--", label="physical floor: RTTs + S / %g Mbit/s" % a.control_mbit)
    ax.plot([], [], "k:", label="3 x floor (the issue's target)")
    ax.set_xscale("symlog", linthresh=1024)
    ax.set_yscale("log")
    ax.set_xlabel("extra state bytes per snapshot (0 drawn at 1)")
    ax.set_ylabel("migration time, ms (request to ACCEPT)")
    ax.set_title("migration time vs state size; client RTT added by the NFQUEUE stage")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(path, a, argv, caps, summary, recs, rtts, outdir):
    L = ["# Migration time against state size, %s" % os.path.basename(outdir), "",
         "Command: `%s`" % X.command_line(NAME, argv), "",
         "## Configuration", "",
         "- 3 servers `mtcpd --service echo -q --state-bytes S --snapshot-every 65536`; data "
         "links %g Mbit/s, control links %g Mbit/s (servers only)" % (a.server_mbit,
                                                                       a.control_mbit),
         "- client: `mtcp-perf -c --app echo -b 1 -d %g --migrate-every E` (E = 100 ms up to "
         "256 KiB, 250 ms up to 4 MiB, else 500 ms); migrations after the first second timed; "
         "%d repeats, fresh members each" % (a.duration_s, a.repeats),
         "- RTTs by ping: client-server %s ms (per added RTT), server-server (control) %s ms"
         % (", ".join("+%g: %s" % (d, X.fmt(v, "%.3f")) for d, v in rtts["client"].items()),
            X.fmt(rtts["control"], "%.3f")),
         "- floor = client RTT (measured) + control RTT + S x 8 / %g Mbit/s" % a.control_mbit,
         "- added client RTT: netem is missing, so `testbed/nfq_delay.py` (iptables NFQUEUE on "
         "c1-eth0 input) holds every packet the client receives; the control network's RTT is "
         "not changed.",
         "", "## Kernel", ""] + X.kernel_lines(caps)
    L += ["", "## Results", "",
          "| mode | added RTT ms | state bytes | repeats ok | p50 ms median (min-max) | floor ms "
          "| ratio |", "|---|---|---|---|---|---|---|"]
    for s in summary:
        L.append("| %s | %g | %d | %d | %s (%s-%s) | %s | %s |" % (
            s["mode"], s["added_rtt_ms"], s["state_bytes"], s["repeats_ok"], X.fmt(s["p50_ms_median"]),
            X.fmt(s["p50_ms_min"]), X.fmt(s["p50_ms_max"]), X.fmt(s["floor_ms"], "%.3f"),
            X.fmt(s["ratio_to_floor"], "%.1f")))
    L += ["", "![migration](plot.png)", "", "## Runs", ""]
    for r in recs:
        L.append("- %s +%s ms %d B #%d: %s, %s timed, %s failed, p50 %s ms, max %s ms%s" % (
            r["mode"], r.get("added_rtt_ms"), r["state_bytes"], r["repeat"], r.get("verdict"),
            r.get("timed"),
            r.get("failed"), X.fmt(r.get("p50_ms")), X.fmt(r.get("max_ms")),
            "" if r.get("verdict") == "ok" else " (%s)" % r.get("error")))
    with open(path, "w") as f:
        f.write("\n".join(L) + "\n")


def main(argv):
    a = parse_args(argv)
    started = X.begin(NAME, a, ["mtcpd", "mtcp-perf"])
    if started is None:
        return 2
    caps, outdir, work = started
    from testbed import topo as T
    recs, stages = [], {}
    net = X.Net(3, a.server_mbit, control_mbit=a.control_mbit)
    try:
        rtts = {"client": {},
                "control": X.ping_rtt_ms(net.host("s1"), T.server_control_ip(2))}
        for d in a.rtt_list:
            delay = {}  # the timeline's delay action on c1: netem, else the NFQUEUE stage
            if d > 0:
                print("%s: delay c1 %g ms: %s" % (NAME, d, TL.apply_delay(
                    net.net, "c1", d, delay, caps["netem"]["ok"])))
            try:
                # pinged from s2: ping's RTT uses the kernel's receive timestamp, taken before
                # the client's INPUT hook, so a ping from c1 would not see the stage
                rtts["client"][d] = X.ping_rtt_ms(net.host("s2"), T.client_ip(1))
                print("%s: added RTT %g ms: ping RTT client-server %s ms, control %s ms"
                      % (NAME, d, rtts["client"][d], rtts["control"]))
                for rep in range(1, a.repeats + 1):
                    for m in a.mode_list:
                        for s in a.size_list:
                            try:
                                recs.append(one_run(a, net, m, s, rep, work, print, d))
                            except H.HarnessError as e:
                                recs.append({"mode": m, "state_bytes": s, "repeat": rep,
                                             "added_rtt_ms": d, "verdict": "harness error",
                                             "error": str(e)})
            finally:
                if delay:
                    stages[d] = TL.clear_delays(delay)["c1"]
    finally:
        net.stop()
    floor_ms = {(d, s): (rtts["client"].get(d) or 0) + (rtts["control"] or 0) +
                s * 8 / (a.control_mbit * 1e6) * 1000 for d in a.rtt_list for s in a.size_list}
    summary = summarize(recs, a, floor_ms)
    X.write_ndjson(os.path.join(outdir, "runs.ndjson"), recs)
    X.write_csv(os.path.join(outdir, "summary.csv"), summary, list(summary[0]))
    X.write_config(outdir, a, argv, caps, {"ping_rtt_ms": rtts, "delay_stage": stages})
    plot(os.path.join(outdir, "plot.png"), summary, a)
    report(os.path.join(outdir, "report.md"), a, argv, caps, summary, recs, rtts, outdir)
    for s in summary:
        print("%s: %-5s +%g ms %8d B: p50 %s ms, floor %s ms, ratio %s" % (
            NAME, s["mode"], s["added_rtt_ms"], s["state_bytes"], X.fmt(s["p50_ms_median"]),
            X.fmt(s["floor_ms"], "%.3f"), X.fmt(s["ratio_to_floor"], "%.1f")))
    print("%s: report %s" % (NAME, os.path.join(outdir, "report.md")))
    return 0 if all(r.get("verdict") == "ok" for r in recs) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
