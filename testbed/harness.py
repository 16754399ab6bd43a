"""Pool members and clients inside a Mininet network: the pool file, the key, starting and
stopping the members (by PID), and one client run read back from `mtcp-perf -c -J`.

The member and client programs come from the build tree (build/bin by default). The pool
file is the one docs/API.md "Pool file" describes, with data addresses on 192.168.50.0/24
and control addresses on the servers-only 192.168.51.0/24 (testbed/topo.py).
"""

import json
import os
import random
import signal
import subprocess
import time

from testbed import topo as T

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_BIN = os.path.join(REPO, "build", "bin")


class HarnessError(RuntimeError):
    pass


def find_binary(bindir, name):
    path = os.path.join(bindir, name)
    if not os.access(path, os.X_OK):
        raise HarnessError("%s not found or not executable: build it first "
                           "(ninja -C build mtcpd mtcp-perf mtcpctl)" % path)
    return path


def write_pool(workdir, n_servers, rng, transfer="lazy", claim_timeout_ms=300):
    """pool.json and pool.key in workdir; the key comes from rng (the run's seed)."""
    key = bytes(rng.getrandbits(8) for _ in range(32))
    # 0600: a member refuses a key file others can read
    fd = os.open(os.path.join(workdir, "pool.key"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    pool = {"pool_key_file": "pool.key", "transfer": transfer,
            "limits": {"claim_timeout_ms": claim_timeout_ms},
            "members": [{"id": i,
                         "data": "%s:%d" % (T.server_data_ip(i), T.DATA_PORT_BASE + i),
                         "control": "%s:%d" % (T.server_control_ip(i),
                                               T.CONTROL_PORT_BASE + i)}
                        for i in range(1, n_servers + 1)]}
    path = os.path.join(workdir, "pool.json")
    with open(path, "w") as f:
        json.dump(pool, f, indent=1)
    return path


class Members:
    """The member processes, one per server host, started with host.popen (their own PIDs)."""

    def __init__(self, net, n_servers, cmd_for, workdir, tag):
        self.net, self.n, self.procs, self.logs = net, n_servers, {}, {}
        for i in range(1, n_servers + 1):
            name = T.server_name(i)
            log = open(os.path.join(workdir, "%s-%s.log" % (tag, name)), "w")
            self.logs[name] = log
            self.procs[name] = net.get(name).popen(cmd_for(i), stdout=log,
                                                   stderr=subprocess.STDOUT)

    def pid(self, name):
        p = self.procs.get(name)
        return p.pid if p is not None else None

    def wait_ready(self, timeout_s=10):
        """Each member accepts on its control address (probed from s1's namespace)."""
        probe = self.net.get(T.server_name(1))
        addrs = [(T.server_control_ip(i), T.CONTROL_PORT_BASE + i)
                 for i in range(1, self.n + 1)]
        deadline = time.monotonic() + timeout_s
        for ip, port in addrs:
            while True:
                dead = [n for n, p in self.procs.items() if p.poll() is not None]
                if dead:
                    raise HarnessError("member(s) %s exited at start (see their logs)"
                                       % ", ".join(dead))
                if tcp_reachable(probe, ip, port, 0.5):
                    break
                if time.monotonic() > deadline:
                    raise HarnessError("member at %s:%d did not start within %g s"
                                       % (ip, port, timeout_s))
                time.sleep(0.05)

    def stop(self):
        for p in self.procs.values():
            if p.poll() is None:
                try:
                    os.kill(p.pid, signal.SIGCONT)  # a paused member cannot handle SIGTERM
                    p.terminate()
                except ProcessLookupError:
                    pass
        for p in self.procs.values():
            try:
                p.wait(timeout=3)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for log in self.logs.values():
            log.close()
        return {n: p.returncode for n, p in self.procs.items()}


def tcp_reachable(host, ip, port, timeout_s):
    """True if host can open a TCP connection to ip:port (a tiny probe run in its namespace)."""
    code = ("import socket,sys\ntry:\n socket.create_connection((%r,%d),timeout=%g).close()\n"
            "except OSError:\n sys.exit(1)" % (ip, port, timeout_s))
    p = host.popen(["/usr/bin/python3", "-c", code], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return p.wait() == 0


def run_client(host, cmd, out_path, timeout_s):
    """Run the client (mtcp-perf -c ... -J) on host; returns (rc, parsed JSON or None, stderr)."""
    with open(out_path, "w") as out, open(out_path + ".err", "w") as err:
        p = host.popen(cmd, stdout=out, stderr=err)
        try:
            rc = p.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            rc = "killed after %g s" % timeout_s
    with open(out_path + ".err") as f:
        stderr = f.read()
    try:
        with open(out_path) as f:
            doc = json.load(f)
    except ValueError:
        doc = None
    return rc, doc, stderr


def new_rng(seed):
    """The run's random generator; every random choice is derived from it and the seed printed."""
    return random.Random(seed)

