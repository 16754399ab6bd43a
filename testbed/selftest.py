#!/usr/bin/python3
"""Smoke test of the testbed (docs/testbed.md): a 2-server pool topology; the client cannot
reach the control network; a rate change applied in place shows in `tc class show`; the delay
action adds 20 ms to a ping and goes away when removed; a
partition cuts the control path and heal restores it; a bad timeline is refused; a short
source transfer through a member is verified; then one small experiment runs through
`testbed/run` (migration, one point) and must write its report with at least one timed
migration; after each network, no link it made and no member it started is left.

Usage: testbed/selftest.py [BINDIR]   (default build/bin; needs mtcpd and mtcp-perf)
Exit: 0 all checks passed, 1 a check failed, 77 skipped (not root, or Mininet missing).
The network is torn down in every case (net.stop() in finally).
"""

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from testbed import caps as C  # noqa: E402
from testbed import harness as H  # noqa: E402
from testbed import timeline as TL  # noqa: E402

passed = failed = 0


def check(ok, what):
    global passed, failed
    print("%s  %s" % ("PASS" if ok else "FAIL", what))
    if ok:
        passed += 1
    else:
        failed += 1


def link_names():
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line}


def alive(pid):
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is gone for our purposes
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def running_from(binary):
    """PIDs of processes running this executable (read from /proc; nothing is signalled)."""
    real = os.path.realpath(binary)
    found = set()
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.path.realpath("/proc/%s/exe" % d) == real:
                    found.add(int(d))
            except OSError:
                pass
    return found


def check_clean(links_before, pids, what):
    left = sorted(link_names() - links_before)
    running = [p for p in pids if alive(p)]
    check(not left and not running, "%s cleaned up: links left %s, members running %s"
          % (what, left or "none", running or "none"))


def experiment(bindir, work):
    """One point of the migration experiment through the command users run: it must exit 0,
    write report.md and runs.ndjson, time at least one migration and leave nothing behind."""
    links_before = link_names()
    mtcpd = H.find_binary(bindir, "mtcpd")
    procs_before = running_from(mtcpd)
    out = os.path.join(work, "results")
    cmd = [sys.executable, os.path.join(REPO, "testbed", "run"), "migration", "--modes", "lazy",
           "--sizes", "0", "--rtts", "0", "--repeats", "1", "--duration-s", "2", "--bin", bindir,
           "--out", out]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
        rc, err = r.returncode, r.stderr
    except subprocess.TimeoutExpired:
        rc, err = None, "timed out after 90 s"
    dirs = sorted(glob.glob(os.path.join(out, "*")))
    report = os.path.join(dirs[-1], "report.md") if dirs else ""
    timed = 0
    members = sorted(running_from(mtcpd) - procs_before)
    if dirs and os.path.exists(os.path.join(dirs[-1], "runs.ndjson")):
        with open(os.path.join(dirs[-1], "runs.ndjson")) as f:
            for line in f:
                run = json.loads(line)
                timed += len(run.get("downtimes_us", []))
    check(rc == 0 and os.path.isfile(report) and timed >= 1,
          "testbed/run migration (one point): exit %s, report %s, %d migrations timed%s"
          % (rc, "written" if os.path.isfile(report) else "MISSING", timed,
             "" if rc == 0 else ": " + err.strip()[-300:]))
    check_clean(links_before, members, "the experiment's network")


def main():
    bindir = sys.argv[1] if len(sys.argv) > 1 else H.DEFAULT_BIN
    if os.geteuid() != 0:
        print("SKIP testbed selftest: needs root (Mininet)")
        return 77
    ok, why = C.mininet_available()
    if not ok:
        print("SKIP testbed selftest: " + why)
        return 77
    from mininet.log import setLogLevel
    setLogLevel("critical")  # HTB's "quantum is big" notices are not news here
    from testbed import topo as T
    mtcpd, perf = H.find_binary(bindir, "mtcpd"), H.find_binary(bindir, "mtcp-perf")

    try:
        TL.validate([{"at_s": 1, "action": "rate", "target": "s7", "mbit": 1}],
                    ["s1", "s2"], ["s1", "s2", "c1"], False)
        check(False, "a timeline with a bad target is refused")
    except TL.TimelineError as e:
        check("bad target 's7'" in str(e), "a timeline with a bad target is refused (%s)" % e)

    netem, detail = C.netem_available()
    print("info  %s" % detail)
    links_before = link_names()
    net, _ = T.build_net(T.PoolTopo(servers=2, clients=1, server_mbit=50))
    members = None
    work = tempfile.mkdtemp(prefix="tb-selftest-")
    try:
        net.build()
        net.start()
        c1, s1, s2 = net.get("c1"), net.get("s1"), net.get("s2")
        pool = H.write_pool(work, 2, H.new_rng(7))
        print("info  pool key from seed 7; stream seed 1")
        members = H.Members(net, 2, lambda i: [mtcpd, "--pool", pool, "--id", str(i),
                                               "--service", "source"], work, "self")
        members.wait_ready()
        check(H.tcp_reachable(s2, T.server_control_ip(1), T.CONTROL_PORT_BASE + 1, 1),
              "s2 reaches s1's control address")
        check(not H.tcp_reachable(c1, T.server_control_ip(1), T.CONTROL_PORT_BASE + 1, 1),
              "c1 cannot reach s1's control address")
        check(H.tcp_reachable(c1, T.server_data_ip(1), T.DATA_PORT_BASE + 1, 1),
              "c1 reaches s1's data address")

        intf = s1.intf("s1-eth0")
        before = TL.qdisc_rate(intf)
        handle_before = intf.cmd("tc qdisc show dev s1-eth0").split()[:5]
        TL.apply_rate(net, "s1", 7)
        after = TL.qdisc_rate(intf)
        handle_after = intf.cmd("tc qdisc show dev s1-eth0").split()[:5]
        check(before == "50Mbit" and after == "7Mbit" and handle_before == handle_after,
              "rate changed in place on s1-eth0: %s -> %s, qdisc %s kept"
              % (before, after, " ".join(handle_after[1:4])))

        state = {}
        TL.apply_partition(net, "s1", "s2", True, state, {"s1": 1, "s2": 2})
        cut = not H.tcp_reachable(s2, T.server_control_ip(1), T.CONTROL_PORT_BASE + 1, 1)
        TL.apply_partition(net, "s1", "s2", False, state, {"s1": 1, "s2": 2})
        healed = H.tcp_reachable(s2, T.server_control_ip(1), T.CONTROL_PORT_BASE + 1, 1)
        check(cut and healed, "partition cuts s1<->s2 control traffic (%s), heal restores it (%s)"
              % (cut, healed))

        # the timeline's delay action (netem if the kernel has it, else the NFQUEUE stage);
        # pinged from s1: ping on c1 would not see a stage on c1's input
        from testbed.experiments.common import ping_rtt_ms
        dstate = {}
        how = TL.apply_delay(net, "c1", 20, dstate, netem)
        delayed = ping_rtt_ms(s1, T.client_ip(1), 3)
        TL.clear_delays(dstate)
        plain = ping_rtt_ms(s1, T.client_ip(1), 3)
        check(delayed is not None and plain is not None and delayed >= 15 and plain < 5,
              "delay 20 ms on c1 (%s): ping s1->c1 %s ms, %s ms once removed"
              % (how.split(" (")[0], delayed, plain))

        rc, doc, err = H.run_client(c1, [perf, "-c", "--pool", pool, "--app", "source",
                                         "-n", "2000000", "--migrate-every", "100", "-t", "20",
                                         "-J"], os.path.join(work, "client.json"), 30)
        verdict = doc["end"]["verdict"] if doc else "no result: " + err[-200:]
        migr = doc["end"]["migrations_done"] if doc else 0
        check(rc == 0 and verdict == "ok" and migr >= 1,
              "2 MB source transfer at 7 Mbit/s with migrations is verified (%s, %d migrations)"
              % (verdict, migr))
    except H.HarnessError as e:
        check(False, "harness: %s" % e)
    finally:
        if members is not None:
            members.stop()
        net.stop()
    pids = [members.pid(T.server_name(i)) for i in (1, 2)] if members is not None else []
    check_clean(links_before, pids, "the selftest's network")
    experiment(bindir, work)
    shutil.rmtree(work, ignore_errors=True)
    print("testbed selftest: %d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
