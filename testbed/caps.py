"""What this kernel and machine can do for the testbed, probed rather than assumed.

Each probe returns (ok, detail). The probes run in a throwaway network namespace, so they
touch nothing else on the machine. probe_all() is what an experiment records and prints.
"""

import os
import shutil
import subprocess


def _run(cmd):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return p.returncode, p.stdout.strip()


def _in_probe_ns(cmds):
    """Run cmds (argument lists) in a new namespace; returns (rc, output) of the last one."""
    ns = "tbprobe%d" % os.getpid()
    rc, out = _run(["ip", "netns", "add", ns])
    if rc != 0:
        return rc, "cannot create a network namespace: " + out
    try:
        _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        rc, out = 0, ""
        for c in cmds:
            rc, out = _run(["ip", "netns", "exec", ns] + c)
            if rc != 0:
                break
        return rc, out
    finally:
        _run(["ip", "netns", "del", ns])


def netem_available():
    rc, out = _in_probe_ns([["tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay",
                             "1ms"]])
    return rc == 0, ("netem works" if rc == 0 else "netem missing: tc says '%s'" % out)


def qdisc_available(kind):
    args = {"htb": ["htb", "default", "1"],
            "tbf": ["tbf", "rate", "5mbit", "burst", "16kb", "latency", "50ms"]}[kind]
    rc, out = _in_probe_ns([["tc", "qdisc", "add", "dev", "lo", "root", "handle", "5:"] + args])
    return rc == 0, ("%s works" % kind if rc == 0 else "%s missing: %s" % (kind, out))


def iptables_statistic_available():
    if not shutil.which("iptables"):
        return False, "iptables is not installed"
    rc, out = _in_probe_ns([["iptables", "-A", "INPUT", "-i", "lo", "-m", "statistic",
                             "--mode", "random", "--probability", "0.01", "-j", "DROP"]])
    return rc == 0, ("iptables -m statistic works" if rc == 0
                     else "iptables -m statistic fails: %s" % out)


def cgroup_v1_cpu_available():
    base = "/sys/fs/cgroup/cpu"
    if not os.path.isdir(base):
        return False, "no cgroup v1 cpu controller at %s" % base
    if not os.path.exists(os.path.join(base, "cpu.cfs_quota_us")):
        return False, "cgroup v1 cpu without cfs bandwidth (no cpu.cfs_quota_us)"
    if not shutil.which("cgcreate"):
        return False, "cgroup-tools (cgcreate) missing: Mininet's CPULimitedHost needs it"
    return True, "cgroup v1 cpu with cfs quota at %s (CPULimitedHost, sched=cfs)" % base


def mininet_available():
    try:
        import mininet.net  # noqa: F401
    except ImportError as e:
        return False, ("cannot import mininet (%s): install Debian's mininet and run "
                       "with /usr/bin/python3" % e)
    return True, "mininet %s" % mininet.net.VERSION


def probe_all():
    caps = {}
    for name, fn in (("netem", netem_available), ("htb", lambda: qdisc_available("htb")),
                     ("tbf", lambda: qdisc_available("tbf")),
                     ("iptables_statistic", iptables_statistic_available),
                     ("cgroup_v1_cpu", cgroup_v1_cpu_available)):
        ok, detail = fn()
        caps[name] = {"ok": ok, "detail": detail}
    return caps
