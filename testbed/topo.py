"""Mininet topologies for the M-TCP testbed (docs/testbed.md).

A pool of N servers s1..sN, clients c1..cM and optionally a database host db1 share a DATA
network (switch sd1, 192.168.50.0/24). The servers alone share a CONTROL network (switch sc1,
192.168.51.0/24): the clients and the database have no interface on it, and the servers do
not forward, so a client cannot reach a control address.

From the command line (Mininet's own CLI):

    mn --custom testbed/topo.py --topo pool,3,clients=1,server_mbit=50 \
       --switch lxbr --controller none --link tc --ipbase 192.168.50.0/24

From Python: PoolTopo(servers=3, ...) and build_net(topo) below.

Link rates are in Mbit/s (None: unlimited). Delays need netem, which this kernel may lack:
build_net() drops them with a warning then (testbed.caps.netem_available() says why).
"""

try:
    from mininet.topo import Topo
except ImportError:  # the address helpers stay usable; callers check caps.mininet_available()
    Topo = object

import os as _os


def _nets():
    """The data and control /24 prefixes and the switch names. MTCP_TESTBED_NET=A.B.C moves the
    data network to A.B.C.0/24 and the control network to A.B.(C+1).0/24, with switches sdC and
    scC, so a run beside another testbed run on the same machine (say the CI's self test) shares
    neither addresses nor switch (bridge) names. Unset: 192.168.50/51, sd1 and sc1."""
    net = _os.environ.get("MTCP_TESTBED_NET", "")
    if not net:
        return "192.168.50", "192.168.51", "sd1", "sc1"
    parts = net.split(".")
    if (len(parts) != 3 or not all(p.isdigit() and int(p) < 255 for p in parts)
            or int(parts[2]) > 253):
        raise ValueError("MTCP_TESTBED_NET must be A.B.C with C below 254 (got %r)" % net)
    c = int(parts[2])
    return (net, "%s.%s.%d" % (parts[0], parts[1], c + 1), "sd%d" % c, "sc%d" % c)


DATA_NET, CONTROL_NET, DATA_SWITCH, CONTROL_SWITCH = _nets()

# Ports the members listen on: data 7001.., control 7101.. (member i: 7000+i, 7100+i).
DATA_PORT_BASE = 7000
CONTROL_PORT_BASE = 7100


def server_name(i):
    return "s%d" % i


def client_name(j):
    return "c%d" % j


def server_data_ip(i):
    return "%s.%d" % (DATA_NET, 10 + i)


def server_control_ip(i):
    return "%s.%d" % (CONTROL_NET, 10 + i)


def client_ip(j):
    return "%s.%d" % (DATA_NET, 100 + j)


DB_NAME = "db1"
DB_IP = "%s.200" % DATA_NET


def _link_opts(mbit, delay_ms):
    opts = {}
    if mbit is not None:
        opts["bw"] = float(mbit)
    if delay_ms:
        opts["delay"] = "%gms" % float(delay_ms)
    return opts


class PoolTopo(Topo):
    """servers: pool size N (1..50); clients: M (1..50); db: add host db1 on the data network.
    server_mbit / client_mbit / db_mbit: data link rates (None: unlimited);
    control_mbit: rate of each server's control link; *_delay_ms: one-way delays (netem)."""

    def build(self, servers=3, clients=1, db=False, server_mbit=50, client_mbit=None,
              db_mbit=None, control_mbit=None, server_delay_ms=None, client_delay_ms=None,
              control_delay_ms=None):
        servers, clients = int(servers), int(clients)
        if not 1 <= servers <= 50 or not 1 <= clients <= 50:
            raise ValueError("pool topology: servers and clients must be 1..50 (got %d, %d)"
                             % (servers, clients))
        data = self.addSwitch(DATA_SWITCH)
        control = self.addSwitch(CONTROL_SWITCH)
        for i in range(1, servers + 1):
            s = self.addHost(server_name(i), ip=server_data_ip(i) + "/24")
            # Interface 0 (sN-eth0) is the data link, interface 1 (sN-eth1) the control link.
            self.addLink(s, data, intfName1="%s-eth0" % s,
                         params1={"ip": server_data_ip(i) + "/24"},
                         **_link_opts(server_mbit, server_delay_ms))
            self.addLink(s, control, intfName1="%s-eth1" % s,
                         params1={"ip": server_control_ip(i) + "/24"},
                         **_link_opts(control_mbit, control_delay_ms))
        for j in range(1, clients + 1):
            c = self.addHost(client_name(j), ip=client_ip(j) + "/24")
            self.addLink(c, data, intfName1="%s-eth0" % c,
                         **_link_opts(client_mbit, client_delay_ms))
        if db:
            h = self.addHost(DB_NAME, ip=DB_IP + "/24")
            self.addLink(h, data, intfName1="%s-eth0" % h, **_link_opts(db_mbit, None))


def strip_delays(topo):
    """Remove 'delay' from every link of topo (for a kernel without netem); returns the list of
    (node1, node2, delay) that were dropped, so the caller can report them."""
    dropped = []
    for n1, n2, key in topo.links(sort=True, withKeys=True):
        info = topo.linkInfo(n1, n2, key)
        if info.get("delay"):
            dropped.append((n1, n2, info.pop("delay")))
    return dropped


def build_net(topo, cpu_limited=False, netem=False):
    """Mininet for topo with this machine's settings: Linux bridges, no controller, TCLink,
    192.168.50.0/24. cpu_limited: servers are CPULimitedHost (cgroup v1, cfs) so their CPU
    share can be changed during a run. netem: False drops link delays (reported by the
    caller). Returns (net, dropped_delays); the caller must call net.stop() in a finally."""
    from mininet.net import Mininet
    from mininet.node import CPULimitedHost, Host
    from mininet.nodelib import LinuxBridge
    from mininet.link import TCLink

    dropped = [] if netem else strip_delays(topo)
    if cpu_limited:
        for name in topo.hosts():
            if name.startswith("s"):
                topo.setNodeInfo(name, dict(topo.nodeInfo(name), cls=CPULimitedHost,
                                            sched="cfs"))
    net = Mininet(topo=topo, switch=LinuxBridge, controller=None, link=TCLink, host=Host,
                  ipBase=DATA_NET + ".0/24", autoSetMacs=True, build=False)
    return net, dropped


topos = {"pool": PoolTopo}


def set_queue_limit(net, host_names, pkts):
    """Bound the queue behind the HTB class TCLink made on each end of these hosts' data links
    with a pfifo of `pkts` packets (the default leaf holds txqueuelen = 1000 packets, seconds at
    a few Mbit/s). Adds a child qdisc; the HTB qdisc itself is left in place. Returns errors."""
    errors = []
    for name in host_names:
        intf = net.get(name).intf("%s-eth0" % name)
        link = intf.link
        for i in (link.intf1, link.intf2):
            if " htb " not in i.cmd("tc qdisc show dev %s" % i.name):
                errors.append("%s: no HTB qdisc (queue limit needs a rate-limited link)" % i.name)
                continue
            out = i.cmd("tc qdisc replace dev %s parent 5:1 handle 20: pfifo limit %d ; echo rc=$?"
                        % (i.name, int(pkts))).strip()
            if not out.endswith("rc=0"):
                errors.append("%s: %s" % (i.name, out))
    return errors
