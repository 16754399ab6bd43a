"""Degradation as a declarative timeline, applied during a run by a scheduler thread.

A timeline is a list of events (a Python list or a JSON file holding one), each
{"at_s": T, "action": A, "target": HOST, ...parameters}, T seconds after the run starts:

| action      | parameters          | what it does on this kernel                                      |
|-------------|---------------------|------------------------------------------------------------------|
| rate        | mbit > 0            | `tc class change` (HTB) or `tc qdisc change` (TBF) of the qdisc  |
|             |                     | TCLink made, on both ends of the host's data link, in place      |
| loss        | pct 0..100          | iptables `-m statistic` DROP on the host's data interface, both  |
|             |                     | directions (netem is missing here); pct 0 removes it             |
| cpu         | frac (0,1] or -1    | CPULimitedHost.setCPUFrac (cgroup v1 cfs quota; -1: unlimited)   |
| pause       |                     | SIGSTOP to the member process of a server                        |
| continue    |                     | SIGCONT to it                                                    |
| kill        |                     | SIGKILL to it                                                    |
| link_down   |                     | `ip link set dev HOST-eth0 down` (the data link)                 |
| link_up     |                     | `ip link set dev HOST-eth0 up`                                   |
| partition   | peer: server        | iptables DROP between the two servers' control addresses        |
| heal        | peer: server        | removes that DROP                                                |
| delay       | ms 0..10000         | adds ms to every round trip through the host's data link: netem  |
|             |                     | on its egress where the kernel has netem, else the user-space    |
|             |                     | NFQUEUE stage (testbed/nfq_delay.py) on its input; ms 0 removes  |

validate() checks everything before anything starts and raises TimelineError naming the event.
Scheduler applies the events at their times and records each one with its actual time.
"""

import json
import os
import signal
import threading
import time

from testbed import topo as T

ACTIONS = {
    # action: (allowed target kinds, {parameter: checker}), the checker returns an error or None
    "rate": ("host", {"mbit": lambda v: None if _num(v) and v > 0 else "must be a number > 0"}),
    "loss": ("host", {"pct": lambda v: None if _num(v) and 0 <= v <= 100
                      else "must be a number in 0..100"}),
    "cpu": ("server", {"frac": lambda v: None if _num(v) and (0 < v <= 1 or v == -1)
                       else "must be in (0, 1], or -1 for unlimited"}),
    "pause": ("server", {}),
    "continue": ("server", {}),
    "kill": ("server", {}),
    "link_down": ("host", {}),
    "link_up": ("host", {}),
    "partition": ("server", {"peer": None}),
    "heal": ("server", {"peer": None}),
    "delay": ("host", {"ms": lambda v: None if _num(v) and 0 <= v <= 10000
                       else "must be a number in 0..10000"}),
}

# NFQUEUE queue number of the timeline's delay stages (one per host, each host its own network
# namespace); the experiments' own DelayStage uses 7, so both can be in place at once.
DELAY_QUEUE = 11


class TimelineError(ValueError):
    pass


def _num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def load(path_or_list):
    """A timeline from a JSON file path or a list; raises TimelineError if it is not a list."""
    if isinstance(path_or_list, str):
        try:
            with open(path_or_list) as f:
                events = json.load(f)
        except (OSError, ValueError) as e:
            raise TimelineError("timeline %s: %s" % (path_or_list, e))
    else:
        events = path_or_list
    if not isinstance(events, list):
        raise TimelineError("timeline: must be a JSON list of events, got %s"
                            % type(events).__name__)
    return events


def validate(events, servers, hosts, cpu_limited):
    """Check every event against the topology (servers: names of servers; hosts: all host
    names). Returns the events sorted by time. Raises TimelineError naming the first bad event."""
    out = []
    for n, ev in enumerate(events):
        where = "timeline event %d (%s)" % (n, json.dumps(ev, sort_keys=True))
        if not isinstance(ev, dict):
            raise TimelineError("%s: must be an object" % where)
        action = ev.get("action")
        if action not in ACTIONS:
            raise TimelineError("%s: unknown action %r (known: %s)"
                                % (where, action, ", ".join(sorted(ACTIONS))))
        at = ev.get("at_s")
        if not _num(at) or at < 0:
            raise TimelineError("%s: at_s must be a number >= 0, got %r" % (where, at))
        kind, params = ACTIONS[action]
        target = ev.get("target")
        allowed = servers if kind == "server" else hosts
        if target not in allowed:
            raise TimelineError("%s: bad target %r for %s (one of: %s)"
                                % (where, target, action, ", ".join(allowed)))
        extra = set(ev) - {"at_s", "action", "target"} - set(params)
        if extra:
            raise TimelineError("%s: unknown parameter(s) %s for %s"
                                % (where, ", ".join(sorted(extra)), action))
        for p, check in params.items():
            if p not in ev:
                raise TimelineError("%s: %s needs %r" % (where, action, p))
            if p == "peer":
                if ev[p] not in servers or ev[p] == target:
                    raise TimelineError("%s: peer must be another server (one of: %s), got %r"
                                        % (where, ", ".join(servers), ev[p]))
            else:
                why = check(ev[p])
                if why:
                    raise TimelineError("%s: %s %s, got %r" % (where, p, why, ev[p]))
        if action == "cpu" and not cpu_limited:
            raise TimelineError("%s: cpu needs the servers to be CPULimitedHost "
                                "(cgroup v1 cpu unavailable or not requested)" % where)
        out.append(dict(ev))
    return sorted(out, key=lambda e: e["at_s"])


# ---- actions ----------------------------------------------------------------------------------

def _data_intfs(net, name):
    """(host-side interface, switch-side interface) of a host's data link."""
    h = net.get(name)
    intf = h.intf("%s-eth0" % name)
    link = intf.link
    other = link.intf2 if link.intf1 is intf else link.intf1
    return intf, other


def _tc_change_rate(intf, mbit):
    """Change the rate of the qdisc TCLink put on intf, in place; returns the command run."""
    show = intf.cmd("tc qdisc show dev %s" % intf.name)
    if " htb " in show:
        cmd = ("tc class change dev %s parent 5:0 classid 5:1 htb rate %gMbit burst 15k"
               % (intf.name, mbit))
    elif " tbf " in show:
        # TCLink's TBF: latency 15 KB at the rate (Mininet's default for use_tbf).
        cmd = ("tc qdisc change dev %s root handle 5: tbf rate %gMbit burst 15000 latency %gms"
               % (intf.name, mbit, 15.0 * 8 / mbit))
    else:
        raise RuntimeError("%s has no HTB or TBF qdisc to change (the link was made without a "
                           "rate): %s" % (intf.name, show.strip()))
    out = intf.cmd(cmd + " ; echo rc=$?").strip()
    if not out.endswith("rc=0"):
        raise RuntimeError("%s failed: %s" % (cmd, out))
    return cmd


def apply_rate(net, target, mbit):
    cmds = [_tc_change_rate(i, mbit) for i in _data_intfs(net, target)]
    return "; ".join(cmds)


def _iptables(host, args):
    out = host.cmd("iptables %s ; echo rc=$?" % args).strip()
    if not out.endswith("rc=0"):
        raise RuntimeError("iptables %s failed: %s" % (args, out))


def apply_loss(net, target, pct, state):
    h = net.get(target)
    intf = "%s-eth0" % target
    for rule in state.pop(("loss", target), []):
        _iptables(h, "-D " + rule)
    if pct <= 0:
        return "loss removed on %s" % intf
    p = pct / 100.0
    rules = ["INPUT -i %s -m statistic --mode random --probability %.6f -j DROP" % (intf, p),
             "OUTPUT -o %s -m statistic --mode random --probability %.6f -j DROP" % (intf, p)]
    for rule in rules:
        _iptables(h, "-A " + rule)
    state[("loss", target)] = rules
    return "iptables " + " | ".join(rules)


def apply_partition(net, a, b, on, state, servers_index):
    ia, ib = servers_index[a], servers_index[b]
    ca, cb = T.server_control_ip(ia), T.server_control_ip(ib)
    specs = [(a, "INPUT -s %s -j DROP" % cb), (a, "OUTPUT -d %s -j DROP" % cb),
             (b, "INPUT -s %s -j DROP" % ca), (b, "OUTPUT -d %s -j DROP" % ca)]
    key = ("partition",) + tuple(sorted((a, b)))
    if on:
        if key in state:
            return "already partitioned"
        for host, rule in specs:
            _iptables(net.get(host), "-A " + rule)
        state[key] = specs
        return "control traffic dropped between %s (%s) and %s (%s)" % (a, ca, b, cb)
    for host, rule in state.pop(key, []):
        _iptables(net.get(host), "-D " + rule)
    return "control traffic between %s and %s restored" % (a, b)


class _NetemDelay:
    """A netem delay on a host's data interface egress (a kernel with netem); stop() removes it
    (back to a plain pfifo leaf under TCLink's HTB class, or no root qdisc)."""

    def __init__(self, host, intf, ms):
        self.host, self.intf = host, intf
        self.htb = " htb " in host.cmd("tc qdisc show dev %s" % intf)
        self.where = "parent 5:1 handle 10:" if self.htb else "root handle 10:"
        self.cmd = "tc qdisc replace dev %s %s netem delay %gms" % (intf, self.where, ms)
        self._tc(self.cmd)

    def _tc(self, cmd):
        out = self.host.cmd(cmd + " ; echo rc=$?").strip()
        if not out.endswith("rc=0"):
            raise RuntimeError("%s failed: %s" % (cmd, out))

    def stop(self):
        self._tc("tc qdisc replace dev %s parent 5:1 handle 10: pfifo" % self.intf if self.htb
                 else "tc qdisc del dev %s root handle 10:" % self.intf)
        return {"netem": self.cmd, "removed": True}


def apply_delay(net, target, ms, state, netem):
    """The `delay` action: netem on the host's data interface egress when the kernel has it
    (replacing the leaf under TCLink's HTB class, or the root of a link without a rate; not
    run here, this kernel has no netem), else testbed/nfq_delay.py holding what the interface
    receives. A new value replaces the previous one; ms 0 removes it. What is in place is kept in
    state[("delay", target)] (stop() ends it; Scheduler.stop() and clear_delays() call it)."""
    h = net.get(target)
    intf = "%s-eth0" % target
    old = state.pop(("delay", target), None)
    note = "" if old is None else "; previous delay ended (%s)" % json.dumps(old.stop())
    if ms <= 0:
        return "delay on %s removed%s" % (intf, note)
    if netem:
        state[("delay", target)] = d = _NetemDelay(h, intf, ms)
        return d.cmd + note
    from testbed.experiments.common import DelayStage  # the stage; imported only when needed
    state[("delay", target)] = DelayStage(h, intf, ms, qnum=DELAY_QUEUE)
    return ("nfq_delay.py --delay-ms %g on %s input (iptables NFQUEUE %d, netem missing)%s"
            % (ms, intf, DELAY_QUEUE, note))


def clear_delays(state):
    """Ends every delay in state; {target: what its stop() returned (the stage's counters)}."""
    return {key[1]: state.pop(key).stop() for key in [k for k in state if k[0] == "delay"]}


class Scheduler(threading.Thread):
    """Applies validated events relative to t0 (time.monotonic() at start()). ctx provides:
    net, member_pid(name) -> pid or None, servers_index {name: i}, and optionally netem (True
    when the kernel has it; default False). Every event is recorded in self.applied with its
    planned and actual time and the outcome. stop() also ends the delay stages it started and
    records their counters in self.stages."""

    def __init__(self, events, ctx, log=print):
        super().__init__(daemon=True)
        self.events, self.ctx, self.log = events, ctx, log
        self.applied = []
        self.stages = {}
        self.state = {}
        self._halt = threading.Event()
        self.t0 = None

    def start(self):
        self.t0 = time.monotonic()
        super().start()

    def stop(self):
        self._halt.set()
        if self.is_alive():
            self.join(timeout=5)
        self.stages.update(clear_delays(self.state))

    def run(self):
        for ev in self.events:
            delay = self.t0 + ev["at_s"] - time.monotonic()
            if delay > 0 and self._halt.wait(delay):
                return
            rec = dict(ev)
            rec["applied_s"] = round(time.monotonic() - self.t0, 4)
            try:
                rec["result"] = self._apply(ev)
                rec["ok"] = True
            except Exception as e:  # recorded and printed, never silent
                rec["ok"], rec["error"] = False, str(e)
            self.applied.append(rec)
            self.log("  [%6.3f s] %s %s: %s" % (rec["applied_s"], ev["action"], ev["target"],
                                                 rec.get("result") or "ERROR " + rec["error"]))

    def _apply(self, ev):
        a, tgt, net = ev["action"], ev["target"], self.ctx.net
        if a == "rate":
            return apply_rate(net, tgt, ev["mbit"])
        if a == "loss":
            return apply_loss(net, tgt, ev["pct"], self.state)
        if a == "cpu":
            h = net.get(tgt)
            h.setCPUFrac(ev["frac"], sched="cfs")
            return "cfs quota %s / period %s us" % (h.cgroupGet("cfs_quota_us"),
                                                    h.cgroupGet("cfs_period_us"))
        if a in ("pause", "continue", "kill"):
            pid = self.ctx.member_pid(tgt)
            if pid is None:
                raise RuntimeError("no member process runs on %s" % tgt)
            sig = {"pause": signal.SIGSTOP, "continue": signal.SIGCONT,
                   "kill": signal.SIGKILL}[a]
            os.kill(pid, sig)
            return "%s to pid %d" % (signal.Signals(sig).name, pid)
        if a in ("link_down", "link_up"):
            state = "down" if a == "link_down" else "up"
            out = net.get(tgt).cmd("ip link set dev %s-eth0 %s ; echo rc=$?"
                                   % (tgt, state)).strip()
            if not out.endswith("rc=0"):
                raise RuntimeError(out)
            return "%s-eth0 %s" % (tgt, state)
        if a in ("partition", "heal"):
            return apply_partition(net, tgt, ev["peer"], a == "partition", self.state,
                                   self.ctx.servers_index)
        if a == "delay":
            return apply_delay(net, tgt, ev["ms"], self.state, getattr(self.ctx, "netem", False))
        raise RuntimeError("unknown action %s" % a)  # validate() makes this unreachable


def qdisc_rate(intf):
    """The rate tc reports for the qdisc/class TCLink made on intf, e.g. '2Mbit', or None."""
    out = intf.cmd("tc class show dev %s ; tc qdisc show dev %s" % (intf.name, intf.name))
    for line in out.splitlines():
        words = line.split()
        if "rate" in words and ("htb" in words or "tbf" in words):
            return words[words.index("rate") + 1]
    return None

