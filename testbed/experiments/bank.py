"""Banking under front-end kills and degradation: the bank workload and its checker through
M-TCP front-ends on three server hosts, against the same transactions straight on libpq.

The database host db1 runs a throwaway PostgreSQL 15 (`apps/dbfrontend/pg-cluster.sh start DIR
--listen DB_IP --allow DATA_NET/24`, stopped and removed at the end, also on failure). The three
servers run `mtcp-bank-frontend` (eager pool with ack_after_replication), started, SIGKILLed and
restarted by `mtcp-bank-client run` on c1 through testbed/frontend_in_host.sh, which puts each
front-end in its own server host's namespaces. Runs (each after a fresh `setup` of the accounts):

  baseline  `mtcp-bank-client baseline`: the transactions on libpq, c1 to db1;
  calm      `run` with no migrations and no kills;
  churn     `run --migrate-every M --kill-every K` (migrations and front-end SIGKILLs);
  degraded  churn, with the timeline applied (default: s1's link cut to 0.2 Mbit/s at 1 s).

Throughput (transactions/s), latency p50/p99 per transaction and the checker's verdict, mean
and 95 % confidence half-width over --repeats.

Usage: testbed/run bank [--repeats 2] [--sessions 8] [--requests 600] [--timeline FILE] (--help).
"""

import argparse
import datetime
import json
import os
import subprocess
import sys

from testbed.experiments import common as X
from testbed import harness as H
from testbed import timeline as TL

NAME = "bank"
RUNS = ["baseline", "calm", "churn", "degraded"]
PG_CLUSTER = os.path.join(X.REPO, "apps", "dbfrontend", "pg-cluster.sh")
WRAPPER = os.path.join(X.REPO, "testbed", "frontend_in_host.sh")
# The front-ends are the client's children: the timeline cannot signal them (kills come from
# `run --kill-every`), and cpu needs CPULimitedHost servers, which this experiment does not make.
TIMELINE_ACTIONS = ("rate", "loss", "link_down", "link_up", "partition", "heal", "delay")


def parse_args(argv):
    p = argparse.ArgumentParser(prog="testbed/run bank", description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--runs", default=",".join(RUNS), help="comma list of: " + ", ".join(RUNS))
    p.add_argument("--sessions", type=int, default=8)
    p.add_argument("--requests", type=int, default=600, help="requests per session")
    p.add_argument("--accounts", type=int, default=50)
    p.add_argument("--balance", type=int, default=1000)
    p.add_argument("--migrate-every", type=int, default=25,
                   help="churn/degraded: requests of a session between its migrations")
    p.add_argument("--kill-every", type=int, default=1000,
                   help="churn/degraded: acknowledged requests between front-end SIGKILLs")
    p.add_argument("--timeline", help="JSON file of events for the degraded run (actions: %s; "
                   "default: s1's link to 0.2 Mbit/s at 1 s)" % ", ".join(TIMELINE_ACTIONS))
    p.add_argument("--server-mbit", type=float, default=100.0,
                   help="server (front-end) link rate at the start of every run")
    p.add_argument("--time-limit-s", type=int, default=300)
    X.add_run_args(p, NAME)
    a = p.parse_args(argv)
    a.run_list = X.comma_choice(p, a.runs, list(RUNS), "run")
    if a.repeats < 1 or a.sessions < 1 or a.requests < 1 or a.server_mbit <= 0:
        p.error("--repeats, --sessions, --requests >= 1 and --server-mbit > 0 are required")
    return a


class Database:
    """The throwaway cluster in db1's namespace; stop() stops and removes it (idempotent)."""

    def __init__(self, host, data_net, db_ip):
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
        # Not under a mkdtemp folder: the postgres user must be able to search every parent.
        self.dir = "/tmp/tb-bank-pg-%d-%s" % (os.getpid(), stamp)
        self.host = host
        out = host.cmd("BANK_PORT_MIN=25000 BANK_PORT_MAX=25999 bash %s start %s --listen %s "
                       "--allow %s.0/24 2>&1; echo rc=$?" % (PG_CLUSTER, self.dir, db_ip,
                                                             data_net)).strip()
        if not out.endswith("rc=0"):
            self.dir = None  # pg-cluster.sh removed it after a failed start
            raise H.HarnessError("database: pg-cluster.sh start failed: %s" % out[-500:])
        with open(os.path.join(self.dir, "conninfo")) as f:
            self.conninfo = f.read().strip()

    def stop(self):
        if self.dir is None:
            return None
        r = subprocess.run(["bash", PG_CLUSTER, "stop", self.dir], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
        gone = not os.path.exists(self.dir)
        self.dir = None if gone else self.dir
        return "stopped and removed" if gone else "stop failed: %s" % r.stdout.strip()


def one_run(a, net, db, run, rep, events, work, log):
    from testbed import topo as T
    seed = a.seed * 1000 + rep
    rng = H.new_rng(seed)
    wl_seed = rng.randrange(1, 2 ** 31)
    log("  %s #%d: rng seed %d -> workload seed %d, pool key from the same rng"
        % (run, rep, seed, wl_seed))
    servers = [T.server_name(i) for i in (1, 2, 3)]
    for s in servers:
        TL.apply_rate(net.net, s, a.server_mbit)
    bank = H.find_binary(a.bin, "mtcp-bank-client")
    c1 = net.host("c1")
    tag = "%s-%d" % (run, rep)
    rec = {"run": run, "repeat": rep, "rng_seed": seed, "workload_seed": wl_seed}
    rc, _, err = H.run_client(c1, [bank, "setup", "--conninfo", db.conninfo, "--accounts",
                             str(a.accounts), "--balance", str(a.balance)],
                        os.path.join(work, tag + "-setup.out"), 60)
    if rc != 0:
        raise H.HarnessError("setup failed (exit %s): %s" % (rc, err.strip()[-300:]))
    wl = ["--conninfo", db.conninfo, "--sessions", str(a.sessions), "--requests",
          str(a.requests), "--accounts", str(a.accounts), "--balance", str(a.balance),
          "--seed", str(wl_seed), "-J"]
    env = None
    if run == "baseline":
        cmd = [bank, "baseline"] + wl
    else:
        pool = X.write_pool(work, 3, rng, "eager", {})
        with open(pool) as f:
            cfg = json.load(f)
        cfg["ack_after_replication"] = True
        with open(pool, "w") as f:
            json.dump(cfg, f, indent=1)
        churn = run in ("churn", "degraded")
        cmd = [bank, "run"] + wl + ["--pool", pool, "--frontend", WRAPPER, "--migrate-every",
                                    str(a.migrate_every if churn else 0), "--kill-every",
                                    str(a.kill_every if churn else 0),
                                    "-t", str(a.time_limit_s)]
        env = {"MTCP_TB_FRONTEND": H.find_binary(a.bin, "mtcp-bank-frontend"),
               "MTCP_TB_HOST_PIDS": ",".join("%d:%d" % (i, net.host(s).pid)
                                             for i, s in enumerate(servers, 1))}
    rec["client_cmd"] = " ".join(cmd)
    if env:
        cmd = ["env"] + ["%s=%s" % kv for kv in env.items()] + cmd
    # member_pid gives None: the front-ends are the client's children (validated in main)
    doc = X.client_with_timeline(events if run == "degraded" else [],
                                 X.sched_ctx(net.net, lambda _n: None, 3), c1, cmd,
                                 os.path.join(work, tag + ".json"), a.time_limit_s + 30, rec)
    if doc is not None:
        rec.update({"verdict": doc["verdict"], "violations": doc["violations"],
                    "tx_s": doc["throughput_transactions_per_s"],
                    "p50_ms": doc["latency_us_p50"] / 1000.0,
                    "p99_ms": doc["latency_us_p99"] / 1000.0,
                    "transactions": doc["transactions"], "seconds": doc["seconds"],
                    "transfers_acked": doc["transfers_acked"],
                    "migrations": doc.get("migrations"),
                    "migrations_failed": doc.get("migrations_failed"),
                    "migration_failures": doc.get("migration_failures"),
                    "migration_p50_ms": doc.get("migration_downtime_us_p50", 0) / 1000.0,
                    "recoveries": doc.get("recoveries"), "kills": doc.get("kills"),
                    "sessions_failed": doc.get("sessions_failed"),
                    "aborted_by_migration": doc.get("transactions_aborted_by_migration")})
    log("  %s #%d: verdict %s, %s tx/s, p50 %s ms, p99 %s ms, migrations %s (failed %s), "
        "kills %s%s" % (run, rep, rec.get("verdict"), X.fmt(rec.get("tx_s"), "%.0f"),
                        X.fmt(rec.get("p50_ms")), X.fmt(rec.get("p99_ms")),
                        rec.get("migrations"), rec.get("migrations_failed"), rec.get("kills"),
                        "" if rec.get("verdict") == "ok" else
                        " (%s)" % (rec.get("violations") or rec.get("error"))))
    return rec


METRICS = [("tx_s", "tx/s", "%.0f"), ("p50_ms", "p50 ms", "%.2f"), ("p99_ms", "p99 ms", "%.1f"),
           ("migrations", "migrations", "%.0f"), ("migrations_failed", "failed", "%.0f"),
           ("kills", "kills", "%.0f"), ("recoveries", "recoveries", "%.0f")]


def summarize(recs, runs):
    out = []
    for r in runs:
        rs = [x for x in recs if x["run"] == r]
        row = {"run": r, "runs": len(rs), "verdict_ok": sum(x.get("verdict") == "ok" for x in rs),
               "violations": sum(len(x.get("violations") or []) for x in rs)}
        for k, _, _ in METRICS:
            m, h = X.mean_ci([x.get(k) for x in rs])
            row[k + "_mean"], row[k + "_ci95"] = m, h
        out.append(row)
    return out


def plot(path, summary, a):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axs = plt.subplots(1, 3, figsize=(13, 4))
    names = [s["run"] for s in summary]
    for ax, k, label in ((axs[0], "tx_s", "transactions/s"), (axs[1], "p50_ms", "latency p50, ms"),
                         (axs[2], "p99_ms", "latency p99, ms")):
        ax.bar(names, [s[k + "_mean"] or 0 for s in summary],
               yerr=[s[k + "_ci95"] or 0 for s in summary], capsize=4,
               color=["tab:grey" if n == "baseline" else "tab:blue" for n in names])
        ax.set_ylabel(label)
    axs[0].set_title("%d sessions x %d requests, mean and 95 %% CI over %d repeats"
                     % (a.sessions, a.requests, a.repeats), fontsize=9)
    axs[1].set_title("checker verdicts ok: %s" % ", ".join(
        "%s %d/%d" % (s["run"], s["verdict_ok"], s["runs"]) for s in summary), fontsize=9)
    X.save_fig(fig, path)


def report(path, a, argv, caps, summary, recs, events, db_note, outdir):
    L = X.report_head("Banking under front-end kills and degradation", NAME, argv, outdir) + [
         "- db1: throwaway PostgreSQL 15 (`pg-cluster.sh start DIR --listen DB_IP --allow "
         "NET/24`; fsync off), %s" % db_note,
         "- s1..s3: `mtcp-bank-frontend` (eager pool, ack_after_replication, claim_timeout_ms "
         "300), started and SIGKILLed by `mtcp-bank-client run` on c1 through "
         "`testbed/frontend_in_host.sh` (mnexec -a into each server host); server links %g "
         "Mbit/s at the start of every run; control network servers only" % a.server_mbit,
         "- workload: %d sessions x %d requests, %d accounts of %d; per run a fresh `setup`; "
         "churn and degraded: `--migrate-every %d --kill-every %d`; %d repeats; seed %d (run r: "
         "rng seed %d*1000+r for the pool key and the workload seed)"
         % (a.sessions, a.requests, a.accounts, a.balance, a.migrate_every, a.kill_every,
            a.repeats, a.seed, a.seed),
         "- degraded run's timeline: `%s`" % json.dumps(events), "",
         "Mean ± 95 % confidence half-width (Student t) over the repeats. Latency is per "
         "transaction (one request, or BEGIN..COMMIT), as `mtcp-bank-client` reports it.", "",
         "## Kernel", ""] + X.kernel_lines(caps)
    L += ["", "## Results", "",
          "| run | checker ok | violations | " + " | ".join(m[1] for m in METRICS) + " |",
          "|---|---|---|" + "---|" * len(METRICS)]
    for s in summary:
        cells = [X.fmt_ci([x.get(k) for x in recs if x["run"] == s["run"]], f)
                 for k, _, f in METRICS]
        L.append("| %s | %d/%d | %d | %s |" % (s["run"], s["verdict_ok"], s["runs"],
                                               s["violations"], " | ".join(cells)))
    base = {s["run"]: s["tx_s_mean"] for s in summary}
    if base.get("baseline"):
        L += ["", "Throughput against the libpq baseline: " + ", ".join(
            "%s %.0f %%" % (r, 100.0 * v / base["baseline"]) for r, v in base.items()
            if r != "baseline" and v is not None) + "."]
    L += ["", "![bank](plot.png)", "", "## Runs", ""]
    for r in recs:
        evs = ", ".join("%s %s at %.3f s%s" % (e["action"], e["target"], e["applied_s"],
                                               "" if e["ok"] else " ERROR " + e["error"])
                        for e in r.get("events", []))
        L.append("- %s #%d: verdict %s, %s transactions in %s s, %s tx/s, p50 %s ms, p99 %s ms, "
                 "migrations %s (failed %s: %s), kills %s, recoveries %s%s%s" % (
                     r["run"], r["repeat"], r.get("verdict"), r.get("transactions"),
                     X.fmt(r.get("seconds")), X.fmt(r.get("tx_s"), "%.0f"),
                     X.fmt(r.get("p50_ms")), X.fmt(r.get("p99_ms")), r.get("migrations"),
                     r.get("migrations_failed"), json.dumps(r.get("migration_failures")),
                     r.get("kills"), r.get("recoveries"),
                     "; events: " + evs if evs else "",
                     "" if r.get("verdict") == "ok" else "; %s" % (r.get("violations") or
                                                                   r.get("error"))))
    X.write_lines(path, L)


def main(argv):
    a = parse_args(argv)
    from testbed import topo as T
    servers = [T.server_name(i) for i in (1, 2, 3)]
    events = X.load_timeline(NAME, a.timeline,
                             [{"at_s": 1.0, "action": "rate", "target": "s1", "mbit": 0.2}],
                             servers, servers + ["c1", T.DB_NAME])
    if events is None:
        return 2
    bad = [e["action"] for e in events if e["action"] not in TIMELINE_ACTIONS]
    if bad:
        print("%s: timeline action %s is not offered here (only %s: the front-ends are "
              "mtcp-bank-client's children, and kills are its --kill-every)"
              % (NAME, bad[0], ", ".join(TIMELINE_ACTIONS)), file=sys.stderr)
        return 2
    rc = subprocess.run(["bash", PG_CLUSTER, "check"], stderr=subprocess.PIPE, text=True)
    if rc.returncode != 0:
        print("%s: %s" % (NAME, rc.stderr.strip()), file=sys.stderr)
        return 2
    started = X.begin(NAME, a, ["mtcp-bank-client", "mtcp-bank-frontend"])
    if started is None:
        return 2
    caps, outdir, work = started
    recs, db, db_note = [], None, "not started"
    net = X.Net(3, a.server_mbit, db=True)
    try:
        db = Database(net.host(T.DB_NAME), T.DATA_NET, T.DB_IP)
        print("%s: database %s" % (NAME, db.conninfo))
        recs = X.each_run(a.repeats, a.run_list,
                          lambda r, rep: one_run(a, net, db, r, rep, events, work, print))
    except H.HarnessError as e:
        print("%s: %s" % (NAME, e), file=sys.stderr)
        db_note = str(e)
    finally:
        if db is not None:
            db_note = "listening on %s, %s at the end" % (T.DB_IP, db.stop())
            print("%s: database %s" % (NAME, db_note))
        net.stop()
    if not recs:
        return 1
    summary = summarize(recs, a.run_list)
    X.write_ndjson(os.path.join(outdir, "runs.ndjson"), recs)
    X.write_csv(os.path.join(outdir, "summary.csv"), summary, list(summary[0]))
    X.write_config(outdir, a, argv, caps, {"timeline": events, "database": db_note})
    plot(os.path.join(outdir, "plot.png"), summary, a)
    report(os.path.join(outdir, "report.md"), a, argv, caps, summary, recs, events, db_note,
           outdir)
    for s in summary:
        print("%s: %-8s checker ok %d/%d, %s tx/s, p50 %s ms, p99 %s ms" % (
            NAME, s["run"], s["verdict_ok"], s["runs"], X.fmt(s["tx_s_mean"], "%.0f"),
            X.fmt(s["p50_ms_mean"]), X.fmt(s["p99_ms_mean"])))
    print("%s: report %s" % (NAME, os.path.join(outdir, "report.md")))
    return 0 if all(r.get("verdict") == "ok" for r in recs) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
