"""Cluster mode: the testbed's PoolTopo on several machines with Mininet's own cluster edition
(`mininet.examples.cluster`: MininetCluster, RemoteHost, RemoteLink over SSH), not a home-made
engine. docs/testbed.md "Cluster mode" says how to run it and what was run here.

build_cluster_net(topo, servers) is build_net() for a list of machines: nodes are placed by
Mininet's SwitchBinPlacer (or by a `server` already in a node's info), hosts are RemoteHost
(their shell runs over `ssh` on their machine and enters the namespace with mnexec), links are
RemoteLink with TCLink's interfaces (so `rate` changes in place still work), and a link between
two machines is Mininet's SSH tunnel (`ssh -w`, tap interfaces). Switches are Linux bridges, as
on one machine (Open vSwitch has no kernel datapath here), made remote with RemoteMixin.

Only 'localhost' is exercised on this machine (no second machine, no sshd, no sudo):
see docs/testbed.md for what that covers and what it does not.
"""


def classes():
    """The cluster classes (imported only when cluster mode is asked for)."""
    from mininet.examples.cluster import (MininetCluster, RemoteHost, RemoteLink, RemoteMixin,
                                          SwitchBinPlacer)
    from mininet.link import TCIntf
    from mininet.nodelib import LinuxBridge

    class RemoteLinuxBridge(RemoteMixin, LinuxBridge):
        """A Linux bridge on a (possibly) remote machine; its brctl/ip commands go through the
        node's shell, which RemoteMixin runs over ssh."""

    class TestbedRemoteHost(RemoteHost):
        """RemoteHost whose popen() keeps the started program as the child it returns:
        RemoteMixin starts every process in a new process group (setpgrp), and `mnexec -d` in a
        group leader forks and lets its parent exit, so with Node.popen's default `mnexec -da
        PID` the Popen object ended at once while the program went on, detached (found here:
        the members looked dead at start and kept their ports). `mnexec -a PID` without -d
        execs in place. On a remote machine the child is the ssh client that runs it."""

        def popen(self, *args, **kwargs):
            kwargs.setdefault("mncmd", ["mnexec", "-a", str(self.pid)])
            return super().popen(*args, **kwargs)

    class RemoteTCLink(RemoteLink):
        """RemoteLink with TCIntf interfaces: rates (HTB) configured like TCLink's."""

        def __init__(self, node1, node2, **kwargs):
            kwargs.setdefault("cls1", TCIntf)
            kwargs.setdefault("cls2", TCIntf)
            RemoteLink.__init__(self, node1, node2, **kwargs)

    return MininetCluster, TestbedRemoteHost, RemoteLinuxBridge, RemoteTCLink, SwitchBinPlacer


def parse_servers(text):
    """'localhost,10.0.0.2,host3' -> a list; every name must be non-empty."""
    servers = [s.strip() for s in text.split(",")]
    if not servers or any(not s for s in servers):
        raise ValueError("--cluster needs a comma list of machines (localhost for this one), "
                         "got %r" % text)
    return servers


def build_cluster_net(topo, servers, ip_base):
    """A MininetCluster for topo over servers (the same settings as topo.build_net: Linux
    bridges, no controller, TCLink-style interfaces, ip_base). The caller calls net.stop() in
    a finally. Nothing here runs `mn -c`: MininetCluster registers a cleanup callback that would
    run `ssh SERVER sudo mn -c`, but only mininet.clean.cleanup() calls it, which the testbed
    never does."""
    MininetCluster, RemoteHost, RemoteLinuxBridge, RemoteTCLink, SwitchBinPlacer = classes()
    return MininetCluster(topo=topo, servers=servers, placement=SwitchBinPlacer,
                          host=RemoteHost, switch=RemoteLinuxBridge, link=RemoteTCLink,
                          controller=None, ipBase=ip_base, autoSetMacs=True, build=False)
