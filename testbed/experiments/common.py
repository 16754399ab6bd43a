"""What the overhead, crash and migration experiments share: the preflight checks (Mininet,
root, binaries, kernel probes), the results folder, one network kept up while pools of
members are started and stopped in it, the ping RTT between two hosts, and writing the
NDJSON / CSV / config files. The policy experiment (policy.py) predates this module.
"""

import csv
import datetime
import json
import os
import re
import shlex
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, REPO)

from testbed import caps as C  # noqa: E402
from testbed import harness as H  # noqa: E402


class Preflight(Exception):
    """An environment that cannot run the experiment: the message names what is missing."""


def preflight(name, bindir, binaries):
    """Mininet importable, root, binaries present; returns the kernel probes (printed)."""
    ok, why = C.mininet_available()
    if not ok:
        raise Preflight(why)
    if os.geteuid() != 0:
        raise Preflight("needs root (Mininet creates namespaces, links and qdiscs)")
    for b in binaries:
        try:
            H.find_binary(bindir, b)
        except H.HarnessError as e:
            raise Preflight(str(e))
    caps = C.probe_all()
    for k, v in caps.items():
        print("%s: kernel: %-18s %s" % (name, k, v["detail"]))
    if not caps["netem"]["ok"]:
        print("%s: kernel: netem is unavailable: an added RTT is made by the user-space "
              "NFQUEUE stage testbed/nfq_delay.py where the experiment offers --rtts; "
              "otherwise runs have the topology's own RTT (about 0.1 ms)" % name)
    return caps


def outdir_for(base):
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    d = os.path.join(base, stamp)
    os.makedirs(d, exist_ok=True)
    return d


class Net:
    """A PoolTopo network kept up for several pools; stop() in a finally. With Net.cluster set
    (a list of machines, from --cluster), Mininet's cluster edition builds it
    (testbed/cluster.py)."""

    cluster = None

    def __init__(self, servers, server_mbit, client_mbit=None, control_mbit=None,
                 queue_pkts=None, db=False):
        from testbed import topo as T
        self.T = T
        self.servers = servers
        topo = T.PoolTopo(servers=servers, clients=1, server_mbit=server_mbit,
                          client_mbit=client_mbit, control_mbit=control_mbit, db=db)
        if Net.cluster:
            from testbed import cluster as CL
            T.strip_delays(topo)  # as build_net() does without netem
            self.net = CL.build_cluster_net(topo, Net.cluster, T.DATA_NET + ".0/24")
        else:
            self.net, _ = T.build_net(topo)
        try:
            self.net.build()
            self.net.start()
            if queue_pkts and server_mbit is not None:
                errs = T.set_queue_limit(self.net, [T.server_name(i)
                                                    for i in range(1, servers + 1)], queue_pkts)
                if errs:
                    raise H.HarnessError("queue limit: " + "; ".join(errs))
        except BaseException:
            self.stop()  # a half-built network is torn down too
            raise

    def host(self, name):
        return self.net.get(name)

    def stop(self):
        self.net.stop()


def write_pool(workdir, servers, rng, transfer, limits):
    path = H.write_pool(workdir, servers, rng, transfer=transfer)
    with open(path) as f:
        cfg = json.load(f)
    cfg["limits"].update(limits)
    with open(path, "w") as f:
        json.dump(cfg, f, indent=1)
    return path


def ping_rtt_ms(host, ip, count=5):
    """Median-free summary from ping: the average RTT in ms (ping's own avg), or None."""
    out = host.cmd("ping -c %d -i 0.2 -q %s" % (count, ip))
    m = re.search(r"= [\d.]+/([\d.]+)/", out)
    return float(m.group(1)) if m else None


def write_ndjson(path, recs):
    with open(path, "w") as f:
        for r in recs:
            f.write(json.dumps(r, sort_keys=True) + "\n")


def write_csv(path, rows, fields):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def write_config(outdir, args, argv, caps, extra=None):
    d = {"args": vars(args), "argv": argv, "kernel": caps}
    d.update(extra or {})
    with open(os.path.join(outdir, "config.json"), "w") as f:
        json.dump(d, f, indent=1, default=str)


def command_line(name, argv):
    return "testbed/run %s %s" % (name, " ".join(shlex.quote(x) for x in argv))


def kernel_lines(caps):
    return ["- %s: %s" % (k, v["detail"]) for k, v in caps.items()]


def workdir(prefix):
    return tempfile.mkdtemp(prefix="tb-%s-" % prefix)


def fmt(v, f="%.2f"):
    return "-" if v is None else f % v


NFQ_DELAY = os.path.join(REPO, "testbed", "nfq_delay.py")


class DelayStage:
    """testbed/nfq_delay.py in `host`, holding every packet that arrives on `intf` for delay_ms
    (iptables NFQUEUE with --queue-bypass, so packets pass undelayed if the stage dies). The
    stand-in for netem on this kernel: one stage on the client's input adds delay_ms to every
    round trip of the client. Measure the RTT it makes from the other end (ping from a server to
    the client): ping on the client takes the kernel's receive timestamp, which is stamped
    before the INPUT hook, so it does not see the hold. stop() removes the rule and ends the stage by its PID; returns
    the stage's counters."""

    def __init__(self, host, intf, delay_ms, qnum=7):
        import subprocess
        self.host, self.rule = host, "INPUT -i %s -j NFQUEUE --queue-num %d --queue-bypass" % (
            intf, qnum)
        out = host.cmd("iptables -A %s ; echo rc=$?" % self.rule).strip()
        if not out.endswith("rc=0"):
            raise H.HarnessError("delay stage: iptables NFQUEUE rule refused: %s" % out)
        self.p = host.popen(["/usr/bin/python3", NFQ_DELAY, "--queue", str(qnum),
                             "--delay-ms", "%g" % delay_ms], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
        line = self.p.stdout.readline().strip()
        if line != "ready":
            self.stop()
            raise H.HarnessError("delay stage did not start: %s" % line)

    def stop(self):
        import subprocess
        self.host.cmd("iptables -D %s" % self.rule)
        counters = None
        if self.p.poll() is None:
            self.p.terminate()
        try:
            out, _ = self.p.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            self.p.kill()
            out, _ = self.p.communicate()
        for line in (out or "").splitlines():
            if line.startswith("{"):
                import json as _j
                counters = _j.loads(line)
        return counters


def begin(name, a, binaries):
    """The start every experiment shares: the preflight checks, then the results folder (printed
    with the seed) and a work folder. (caps, outdir, work), or None after printing why the
    experiment cannot run."""
    try:
        caps = preflight(name, a.bin, binaries)
    except Preflight as e:
        print("%s: %s" % (name, e), file=sys.stderr)
        return None
    if a.cluster:
        from testbed import cluster as CL
        try:
            Net.cluster = CL.parse_servers(a.cluster)
            CL.classes()
        except (ValueError, ImportError) as e:
            print("%s: cluster mode: %s" % (name, e), file=sys.stderr)
            return None
        print("%s: cluster mode over %s (Mininet's MininetCluster, RemoteHost, RemoteLink)"
              % (name, ", ".join(Net.cluster)))
    outdir = outdir_for(a.out)
    print("%s: results in %s; seed %d" % (name, outdir, a.seed))
    return caps, outdir, workdir(name)


def add_run_args(p, name):
    """The options every experiment takes: --seed, --bin and --out."""
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--bin", default=H.DEFAULT_BIN)
    p.add_argument("--out", default=os.path.join(REPO, "testbed", "results", name))
    p.add_argument("--cluster", help="comma list of machines for Mininet's cluster mode "
                   "(localhost: this one; docs/testbed.md \"Cluster mode\")")


# Student t, two-sided 95 %, by degrees of freedom (1..10); 1.96 beyond.
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


def mean_ci(xs):
    """(mean, 95 % confidence half-width) over repeats; the half-width is None below 2 values."""
    import math
    import statistics
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None
    if len(xs) < 2:
        return xs[0], None
    df = len(xs) - 1
    t = _T95[df - 1] if df <= len(_T95) else 1.96
    return statistics.mean(xs), t * statistics.stdev(xs) / math.sqrt(len(xs))


def fmt_ci(xs, f="%.2f"):
    m, h = mean_ci(xs)
    if m is None:
        return "-"
    return (f % m) + ("" if h is None else " ± " + (f % h))


def sched_ctx(net, member_pid, servers, netem=False):
    """What timeline.Scheduler needs from an experiment: the Mininet, the member PID by host
    name, the server index by name, and whether the kernel has netem (the delay action)."""
    from testbed import topo as T
    ctx = type("Ctx", (), {})()
    ctx.net, ctx.member_pid, ctx.netem = net, member_pid, netem
    ctx.servers_index = {T.server_name(i): i for i in range(1, servers + 1)}
    return ctx


def comma_choice(p, text, known, what):
    """A comma list of names from `known`; p.error() naming the unknown ones otherwise."""
    names = text.split(",")
    bad = [n for n in names if n not in known]
    if bad:
        p.error("unknown %s %s (known: %s)" % (what, ", ".join(bad), ", ".join(known)))
    return names


def save_fig(fig, path, dpi=100):
    import matplotlib.pyplot as plt
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def report_head(title, name, argv, outdir):
    """The first lines of every report: title with the run's folder, the exact command, and the
    Configuration heading."""
    return ["# %s, %s" % (title, os.path.basename(outdir)), "",
            "Command: `%s`" % command_line(name, argv), "", "## Configuration", ""]


def load_timeline(name, path, default, servers, hosts):
    """The run's timeline (a JSON file, else `default`) validated against the topology; None
    after printing why it is refused."""
    from testbed import timeline as TL
    try:
        return TL.validate(TL.load(path) if path else default, servers, hosts, False)
    except TL.TimelineError as e:
        print("%s: %s" % (name, e), file=sys.stderr)
        return None


def client_with_timeline(events, ctx, host, cmd, out_path, timeout_s, rec):
    """Runs the client (harness.run_client) while a Scheduler applies events; records the exit
    status and the applied events in rec, and 'no result' with the client's stderr when it
    printed no JSON. Returns the client's JSON or None."""
    from testbed import timeline as TL
    sched = TL.Scheduler(events, ctx, log=lambda *_: None)
    sched.start()
    try:
        rc, doc, err = H.run_client(host, cmd, out_path, timeout_s)
    finally:
        sched.stop()
    rec.update({"client_rc": rc, "events": sched.applied})
    if sched.stages:
        rec["delay_stages"] = sched.stages
    if doc is None:
        rec.update({"verdict": "no result", "error": err.strip()[-300:]})
    return doc


def write_lines(path, lines):
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def each_run(repeats, names, one, key="run"):
    """one(name, repeat) for every repeat and name, in that order; a HarnessError becomes a
    record with verdict 'harness error' (printed), so one failed run does not end the rest."""
    recs = []
    for rep in range(1, repeats + 1):
        for n in names:
            try:
                recs.append(one(n, rep))
            except H.HarnessError as e:
                recs.append({key: n, "repeat": rep, "verdict": "harness error", "error": str(e)})
                print("  %s #%d: harness error: %s" % (n, rep, e))
    return recs
