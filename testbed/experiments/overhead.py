"""Overhead: M-TCP against plain TCP over the same Mininet link, across link rates.

For each server link rate a fresh network (2 servers running `mtcpd --service source`, one
client); in it, repeats alternate `mtcp-perf -c --app source -d D` (M-TCP, no migration) and the
same with `--plain` (plain TCP to the member's data port, the baseline), so both see the same
link and the same machine load. Throughput = received bytes / seconds from the client's JSON;
the ratio M-TCP / plain is taken per repeat pair, medians over repeats.

RTT: netem is missing on this kernel, so an added RTT (--rtts, ms) is made by the user-space
delay stage testbed/nfq_delay.py (iptables NFQUEUE) on the client's input: every packet the
client receives is held that long. RTT 0 runs without the stage. The RTT is measured by ping
with the stage in place and recorded.

Usage: testbed/run overhead [--rates 10,50,200] [--rtts 0,20] [--repeats 3] [--duration-s 4]
"""

import argparse
import os
import statistics
import sys

from testbed.experiments import common as X
from testbed import harness as H

NAME = "overhead"


def parse_args(argv):
    p = argparse.ArgumentParser(prog="testbed/run overhead", description=__doc__.split("\n")[0])
    p.add_argument("--rates", default="10,50,200", help="server link rates, Mbit/s (comma list)")
    p.add_argument("--rtts", default="0,20", help="added RTTs, ms (comma list; 0: no stage)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--duration-s", type=float, default=4.0)
    p.add_argument("--queue-pkts", type=int, default=100)
    X.add_run_args(p, NAME)
    a = p.parse_args(argv)
    try:
        a.rate_list = [float(x) for x in a.rates.split(",")]
        a.rtt_list = [float(x) for x in a.rtts.split(",")]
    except ValueError:
        p.error("--rates and --rtts must be comma lists of numbers, got %r, %r"
                % (a.rates, a.rtts))
    if any(r < 0 for r in a.rtt_list):
        p.error("--rtts must be >= 0")
    if any(r <= 0 for r in a.rate_list) or a.repeats < 1 or a.duration_s <= 0:
        p.error("rates > 0, --repeats >= 1 and --duration-s > 0 are required")
    return a


def run_rate(a, mbit, work, log):
    from testbed import topo as T
    rng = H.new_rng(a.seed * 1000 + int(mbit))
    stream_seed = rng.randrange(1, 2 ** 31)
    log("overhead: %g Mbit/s: rng seed %d -> stream seed %d" % (mbit, a.seed * 1000 + int(mbit),
                                                               stream_seed))
    net = X.Net(2, mbit, queue_pkts=a.queue_pkts)
    recs, rtts, stages = [], {}, {}
    members = None
    try:
        pool = X.write_pool(work, 2, rng, "lazy", {})
        mtcpd, perf = H.find_binary(a.bin, "mtcpd"), H.find_binary(a.bin, "mtcp-perf")
        members = H.Members(net.net, 2, lambda i: [mtcpd, "--pool", pool, "--id", str(i),
                                                   "--service", "source", "-q", "--seed",
                                                   str(stream_seed)], work, "r%g" % mbit)
        members.wait_ready()
        for added in a.rtt_list:
            stage = None
            if added > 0:
                stage = X.DelayStage(net.host("c1"), "c1-eth0", added)
            try:
                # from the server: ping's RTT uses the kernel's receive timestamp, taken
                # before the client's INPUT hook, so a ping from c1 would not see the stage
                rtt = X.ping_rtt_ms(net.host("s1"), T.client_ip(1))
                rtts[(mbit, added)] = rtt
                log("overhead: %g Mbit/s, added RTT %g ms: ping RTT %s ms" % (mbit, added, rtt))
                for rep in range(1, a.repeats + 1):
                    for mode in ("mtcp", "plain"):
                        cmd = [perf, "-c", "--pool", pool, "--app", "source", "--server-id", "1",
                               "-d", "%g" % a.duration_s, "-i", "0", "-t", "%g" % (a.duration_s + 20),
                               "--seed", str(stream_seed), "--policy", "none", "-J"]
                        if mode == "plain":
                            cmd.append("--plain")
                        rc, doc, err = H.run_client(net.host("c1"), cmd,
                                                    os.path.join(work, "r%g-%g-%s-%d.json" % (mbit, added, mode, rep)),
                                                    a.duration_s + 25)
                        rec = {"mbit": mbit, "added_rtt_ms": added, "mode": mode, "repeat": rep, "rtt_ms": rtt,
                               "client_rc": rc, "client_cmd": " ".join(cmd), "stream_seed": stream_seed}
                        if doc is None:
                            rec.update({"verdict": "no result", "error": err.strip()[-300:]})
                        else:
                            e = doc["end"]
                            rec.update({"verdict": e["verdict"], "error": e.get("error"),
                                        "mbit_s": e["received_mbit_s"], "bytes": e["bytes_received"],
                                        "seconds": e["seconds"]})
                        log("  %g Mbit/s +%g ms %-5s #%d: %s, %s Mbit/s" % (mbit, added, mode, rep, rec["verdict"],
                                                                     X.fmt(rec.get("mbit_s"))))
                        recs.append(rec)

            finally:
                if stage is not None:
                    stages[(mbit, added)] = stage.stop()
    finally:
        if members is not None:
            members.stop()
        net.stop()
    return recs, rtts, stages


def summarize(recs, rates, added_rtts, rtts):
    out = []
    for r, d in [(r, d) for r in rates for d in added_rtts]:
        row = {"link_mbit": r, "added_rtt_ms": d, "ping_rtt_ms": rtts.get((r, d))}
        mine = [x for x in recs if x.get("added_rtt_ms") == d]
        for mode in ("mtcp", "plain"):
            v = [x["mbit_s"] for x in mine if x["mbit"] == r and x["mode"] == mode
                 and x.get("verdict") == "ok"]
            row[mode + "_median"] = statistics.median(v) if v else None
            row[mode + "_min"] = min(v) if v else None
            row[mode + "_max"] = max(v) if v else None
        ratios = []
        reps = sorted({x["repeat"] for x in mine if x["mbit"] == r})
        for rep in reps:
            pair = {x["mode"]: x for x in mine if x["mbit"] == r and x["repeat"] == rep}
            if all(pair.get(m, {}).get("verdict") == "ok" for m in ("mtcp", "plain")) and \
                    pair["plain"]["mbit_s"] > 0:
                ratios.append(pair["mtcp"]["mbit_s"] / pair["plain"]["mbit_s"])
        row["ratio_median"] = statistics.median(ratios) if ratios else None
        row["ratio_min"] = min(ratios) if ratios else None
        row["ratio_max"] = max(ratios) if ratios else None
        row["pairs"] = len(ratios)
        out.append(row)
    return out


def plot(path, summary, a):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    xs = range(len(summary))
    w = 0.38
    for k, (mode, col) in enumerate((("mtcp", "tab:blue"), ("plain", "tab:grey"))):
        med = [s[mode + "_median"] or 0 for s in summary]
        lo = [(s[mode + "_median"] or 0) - (s[mode + "_min"] or 0) for s in summary]
        hi = [(s[mode + "_max"] or 0) - (s[mode + "_median"] or 0) for s in summary]
        ax1.bar([x + (k - 0.5) * w for x in xs], med, w, yerr=[lo, hi], capsize=3, color=col,
                label="M-TCP" if mode == "mtcp" else "plain TCP")
    ax1.plot([x for x in xs], [s["link_mbit"] for s in summary], "r_", markersize=30,
             label="link rate")
    ax1.set_xticks(list(xs))
    ax1.set_xticklabels(["%g Mbit/s\n+%g ms" % (s["link_mbit"], s["added_rtt_ms"])
                         for s in summary], fontsize=8)
    ax1.set_ylabel("received Mbit/s (median, min-max)")
    ax1.set_title("source stream, %g s; RTT added by the NFQUEUE stage" % a.duration_s)
    ax1.legend(fontsize=8)
    med = [s["ratio_median"] or 0 for s in summary]
    lo = [(s["ratio_median"] or 0) - (s["ratio_min"] or 0) for s in summary]
    hi = [(s["ratio_max"] or 0) - (s["ratio_median"] or 0) for s in summary]
    ax2.bar(list(xs), med, yerr=[lo, hi], capsize=3, color="tab:blue")
    ax2.axhline(1.0, color="grey", linestyle="--")
    ax2.set_xticks(list(xs))
    ax2.set_xticklabels(["%g\n+%g" % (s["link_mbit"], s["added_rtt_ms"]) for s in summary],
                        fontsize=8)
    ax2.set_xlabel("link Mbit/s, added RTT ms")
    ax2.set_ylabel("M-TCP / plain (per repeat pair)")
    ax2.set_title("ratio, median over %d pairs" % a.repeats)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(path, a, argv, caps, summary, recs, stages, outdir):
    L = ["# Overhead against plain TCP, %s" % os.path.basename(outdir), "",
         "Command: `%s`" % X.command_line(NAME, argv), "",
         "## Configuration", "",
         "- 2 servers (`mtcpd --service source`), 1 client; server data link rate per row (HTB, "
         "%d-packet queue), client link unlimited" % a.queue_pkts,
         "- per repeat, in the same network: `mtcp-perf -c --app source -d %g --policy none` "
         "(M-TCP) then the same with `--plain` (plain TCP to the member's data port); %d repeats"
         % (a.duration_s, a.repeats),
         "- added RTT (ms) per row: netem is missing, so `testbed/nfq_delay.py` (iptables NFQUEUE "
         "on c1-eth0 input, user space) holds every packet the client receives that long; RTT "
         "0 runs without it. The ping RTT (s1 to c1, with the stage in place) is in the table. iperf3 is "
         "not installed (the machine has no internet to install it), so the baseline is "
         "`mtcp-perf --plain` only.",
         "- delay stage counters (packets held, most held at once): %s" % "; ".join(
             "%g Mbit/s +%g ms: %s" % (k[0], k[1], v) for k, v in stages.items()),
         "", "## Kernel", ""] + X.kernel_lines(caps)
    L += ["", "## Results (Mbit/s received; ratio = M-TCP / plain per repeat pair)", "",
          "| link | added RTT ms | ping RTT ms | M-TCP median (min-max) | plain median (min-max) "
          "| ratio median (min-max) | pairs |",
          "|---|---|---|---|---|---|---|"]
    for s in summary:
        L.append("| %g | %g | %s | %s (%s-%s) | %s (%s-%s) | %s (%s-%s) | %d |" % (
            s["link_mbit"], s["added_rtt_ms"], X.fmt(s["ping_rtt_ms"], "%.3f"),
            X.fmt(s["mtcp_median"]), X.fmt(s["mtcp_min"]), X.fmt(s["mtcp_max"]),
            X.fmt(s["plain_median"]), X.fmt(s["plain_min"]), X.fmt(s["plain_max"]),
            X.fmt(s["ratio_median"], "%.3f"), X.fmt(s["ratio_min"], "%.3f"),
            X.fmt(s["ratio_max"], "%.3f"), s["pairs"]))
    L += ["", "![overhead](plot.png)", "", "## Runs", ""]
    for r in recs:
        L.append("- %g Mbit/s +%s ms %s #%d: %s, %s Mbit/s%s" % (
            r["mbit"], r.get("added_rtt_ms", "?"), r["mode"], r["repeat"], r.get("verdict"), X.fmt(r.get("mbit_s")),
            "" if r.get("verdict") == "ok" else " (%s)" % r.get("error")))
    with open(path, "w") as f:
        f.write("\n".join(L) + "\n")


def main(argv):
    a = parse_args(argv)
    started = X.begin(NAME, a, ["mtcpd", "mtcp-perf"])
    if started is None:
        return 2
    caps, outdir, work = started
    recs, rtts, stages = [], {}, {}
    for mbit in a.rate_list:
        try:
            r, rt, st = run_rate(a, mbit, work, print)
        except H.HarnessError as e:
            r, rt, st = [{"mbit": mbit, "mode": "both", "repeat": 0, "verdict": "harness error",
                          "error": str(e)}], {}, {}
        recs += r
        rtts.update(rt)
        stages.update(st)
    summary = summarize(recs, a.rate_list, a.rtt_list, rtts)
    X.write_ndjson(os.path.join(outdir, "runs.ndjson"), recs)
    X.write_csv(os.path.join(outdir, "summary.csv"), summary, list(summary[0]))
    X.write_config(outdir, a, argv, caps, {
        "ping_rtt_ms": {"%g Mbit/s +%g ms" % k: v for k, v in rtts.items()},
        "delay_stage": {"%g Mbit/s +%g ms" % k: v for k, v in stages.items()}})
    plot(os.path.join(outdir, "plot.png"), summary, a)
    report(os.path.join(outdir, "report.md"), a, argv, caps, summary, recs, stages, outdir)
    for s in summary:
        print("%s: %g Mbit/s link +%g ms: M-TCP %s, plain %s Mbit/s, ratio %s (median of %d)" % (
            NAME, s["link_mbit"], s["added_rtt_ms"], X.fmt(s["mtcp_median"]), X.fmt(s["plain_median"]),
            X.fmt(s["ratio_median"], "%.3f"), s["pairs"]))
    print("%s: report %s" % (NAME, os.path.join(outdir, "report.md")))
    return 0 if all(r.get("verdict") == "ok" for r in recs) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
