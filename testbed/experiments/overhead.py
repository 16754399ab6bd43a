"""Overhead: M-TCP against plain TCP over the same Mininet link, across link rates.

For each server link rate a fresh network (2 servers running `mtcpd --service source`, one
client); in it, repeats alternate `mtcp-perf -c --app source -d D` (M-TCP, no migration) and the
same with `--plain` (plain TCP to the member's data port, the baseline), so both see the same
link and the same machine load. Throughput = received bytes / seconds from the client's JSON;
the ratio M-TCP / plain is taken per repeat pair, medians over repeats.

RTT: netem is missing on this kernel and the user-space NFQUEUE delay stage is not built, so
only the topology's own RTT (measured by ping and recorded) is run.

Usage: testbed/run overhead [--rates 10,50,200] [--repeats 3] [--duration-s 4] (--help).
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
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--duration-s", type=float, default=4.0)
    p.add_argument("--queue-pkts", type=int, default=100)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--bin", default=H.DEFAULT_BIN)
    p.add_argument("--out", default=os.path.join(X.REPO, "testbed", "results", NAME))
    a = p.parse_args(argv)
    try:
        a.rate_list = [float(x) for x in a.rates.split(",")]
    except ValueError:
        p.error("--rates must be a comma list of numbers, got %r" % a.rates)
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
    recs = []
    members = None
    try:
        rtt = X.ping_rtt_ms(net.host("c1"), T.server_data_ip(1))
        pool = X.write_pool(work, 2, rng, "lazy", {})
        mtcpd, perf = H.find_binary(a.bin, "mtcpd"), H.find_binary(a.bin, "mtcp-perf")
        members = H.Members(net.net, 2, lambda i: [mtcpd, "--pool", pool, "--id", str(i),
                                                   "--service", "source", "-q", "--seed",
                                                   str(stream_seed)], work, "r%g" % mbit)
        members.wait_ready()
        for rep in range(1, a.repeats + 1):
            for mode in ("mtcp", "plain"):
                cmd = [perf, "-c", "--pool", pool, "--app", "source", "--server-id", "1",
                       "-d", "%g" % a.duration_s, "-i", "0", "-t", "%g" % (a.duration_s + 20),
                       "--seed", str(stream_seed), "--policy", "none", "-J"]
                if mode == "plain":
                    cmd.append("--plain")
                rc, doc, err = H.run_client(net.host("c1"), cmd,
                                            os.path.join(work, "r%g-%s-%d.json" % (mbit, mode, rep)),
                                            a.duration_s + 25)
                rec = {"mbit": mbit, "mode": mode, "repeat": rep, "rtt_ms": rtt,
                       "client_rc": rc, "client_cmd": " ".join(cmd), "stream_seed": stream_seed}
                if doc is None:
                    rec.update({"verdict": "no result", "error": err.strip()[-300:]})
                else:
                    e = doc["end"]
                    rec.update({"verdict": e["verdict"], "error": e.get("error"),
                                "mbit_s": e["received_mbit_s"], "bytes": e["bytes_received"],
                                "seconds": e["seconds"]})
                log("  %g Mbit/s %-5s #%d: %s, %s Mbit/s" % (mbit, mode, rep, rec["verdict"],
                                                             X.fmt(rec.get("mbit_s"))))
                recs.append(rec)
    finally:
        if members is not None:
            members.stop()
        net.stop()
    return recs, rtt


def summarize(recs, rates):
    out = []
    for r in rates:
        row = {"link_mbit": r}
        for mode in ("mtcp", "plain"):
            v = [x["mbit_s"] for x in recs if x["mbit"] == r and x["mode"] == mode
                 and x.get("verdict") == "ok"]
            row[mode + "_median"] = statistics.median(v) if v else None
            row[mode + "_min"] = min(v) if v else None
            row[mode + "_max"] = max(v) if v else None
        ratios = []
        reps = sorted({x["repeat"] for x in recs if x["mbit"] == r})
        for rep in reps:
            pair = {x["mode"]: x for x in recs if x["mbit"] == r and x["repeat"] == rep}
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
    ax1.set_xticklabels(["%g Mbit/s" % s["link_mbit"] for s in summary])
    ax1.set_ylabel("received Mbit/s (median, min-max)")
    ax1.set_title("source stream, %g s, RTT: topology only (no netem)" % a.duration_s)
    ax1.legend(fontsize=8)
    med = [s["ratio_median"] or 0 for s in summary]
    lo = [(s["ratio_median"] or 0) - (s["ratio_min"] or 0) for s in summary]
    hi = [(s["ratio_max"] or 0) - (s["ratio_median"] or 0) for s in summary]
    ax2.bar(list(xs), med, yerr=[lo, hi], capsize=3, color="tab:blue")
    ax2.axhline(1.0, color="grey", linestyle="--")
    ax2.set_xticks(list(xs))
    ax2.set_xticklabels(["%g" % s["link_mbit"] for s in summary])
    ax2.set_xlabel("link Mbit/s")
    ax2.set_ylabel("M-TCP / plain (per repeat pair)")
    ax2.set_title("ratio, median over %d pairs" % a.repeats)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(path, a, argv, caps, summary, recs, rtts, outdir):
    L = ["# Overhead against plain TCP, %s" % os.path.basename(outdir), "",
         "Command: `%s`" % X.command_line(NAME, argv), "",
         "## Configuration", "",
         "- 2 servers (`mtcpd --service source`), 1 client; server data link rate per row (HTB, "
         "%d-packet queue), client link unlimited" % a.queue_pkts,
         "- per repeat, in the same network: `mtcp-perf -c --app source -d %g --policy none` "
         "(M-TCP) then the same with `--plain` (plain TCP to the member's data port); %d repeats"
         % (a.duration_s, a.repeats),
         "- RTT client-server measured by ping (ms): %s" % ", ".join(
             "%g Mbit/s: %s" % (k, X.fmt(v, "%.3f")) for k, v in rtts.items()),
         "- **Delay not applied**: netem is missing here and no user-space NFQUEUE delay "
         "stage is built, so only the topology's own RTT was run. iperf3 is not installed "
         "(the machine has no internet to install it), so the baseline is `mtcp-perf --plain` only.",
         "", "## Kernel", ""] + X.kernel_lines(caps)
    L += ["", "## Results (Mbit/s received; ratio = M-TCP / plain per repeat pair)", "",
          "| link | M-TCP median (min-max) | plain median (min-max) | ratio median (min-max) | pairs |",
          "|---|---|---|---|---|"]
    for s in summary:
        L.append("| %g | %s (%s-%s) | %s (%s-%s) | %s (%s-%s) | %d |" % (
            s["link_mbit"], X.fmt(s["mtcp_median"]), X.fmt(s["mtcp_min"]), X.fmt(s["mtcp_max"]),
            X.fmt(s["plain_median"]), X.fmt(s["plain_min"]), X.fmt(s["plain_max"]),
            X.fmt(s["ratio_median"], "%.3f"), X.fmt(s["ratio_min"], "%.3f"),
            X.fmt(s["ratio_max"], "%.3f"), s["pairs"]))
    L += ["", "![overhead](plot.png)", "", "## Runs", ""]
    for r in recs:
        L.append("- %g Mbit/s %s #%d: %s, %s Mbit/s%s" % (
            r["mbit"], r["mode"], r["repeat"], r.get("verdict"), X.fmt(r.get("mbit_s")),
            "" if r.get("verdict") == "ok" else " (%s)" % r.get("error")))
    with open(path, "w") as f:
        f.write("\n".join(L) + "\n")


def main(argv):
    a = parse_args(argv)
    try:
        caps = X.preflight(NAME, a.bin, ["mtcpd", "mtcp-perf"])
    except X.Preflight as e:
        print("%s: %s" % (NAME, e), file=sys.stderr)
        return 2
    outdir = X.outdir_for(a.out)
    print("%s: results in %s; seed %d" % (NAME, outdir, a.seed))
    work = X.workdir(NAME)
    recs, rtts = [], {}
    for mbit in a.rate_list:
        try:
            r, rtt = run_rate(a, mbit, work, print)
        except H.HarnessError as e:
            r, rtt = [{"mbit": mbit, "mode": "both", "repeat": 0, "verdict": "harness error",
                       "error": str(e)}], None
        recs += r
        rtts[mbit] = rtt
    summary = summarize(recs, a.rate_list)
    X.write_ndjson(os.path.join(outdir, "runs.ndjson"), recs)
    X.write_csv(os.path.join(outdir, "summary.csv"), summary, list(summary[0]))
    X.write_config(outdir, a, argv, caps, {"rtt_ms": rtts, "delay_applied": False})
    plot(os.path.join(outdir, "plot.png"), summary, a)
    report(os.path.join(outdir, "report.md"), a, argv, caps, summary, recs, rtts, outdir)
    for s in summary:
        print("%s: %g Mbit/s link: M-TCP %s, plain %s Mbit/s, ratio %s (median of %d)" % (
            NAME, s["link_mbit"], X.fmt(s["mtcp_median"]), X.fmt(s["plain_median"]),
            X.fmt(s["ratio_median"], "%.3f"), s["pairs"]))
    print("%s: report %s" % (NAME, os.path.join(outdir, "report.md")))
    return 0 if all(r.get("verdict") == "ok" for r in recs) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
