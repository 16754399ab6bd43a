#!/usr/bin/python3
"""A user-space delay stage for a kernel without netem: packets an iptables NFQUEUE rule sends to
queue N are held DELAY ms and then accepted, in arrival order. It talks nfnetlink_queue over a
raw netlink socket (NETLINK_NETFILTER), because libnetfilter-queue and its Python bindings are
not installed here; the message layouts are those of <linux/netfilter/nfnetlink_queue.h>.

Usage (inside the host whose traffic it delays, as root):
    iptables -A INPUT -i IFACE -j NFQUEUE --queue-num N --queue-bypass
    testbed/nfq_delay.py --queue N --delay-ms D
Prints "ready" on stdout once bound; ends on SIGTERM (held packets are accepted first) and then
prints counters as one JSON line. With --queue-bypass, packets pass undelayed when it is not
running, so a stopped stage never blackholes a host.
"""

import argparse
import collections
import json
import select
import signal
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG = 0, 1, 2
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQA_CFG_CMD, NFQA_CFG_PARAMS, NFQA_CFG_QUEUE_MAXLEN = 1, 2, 3
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NLMSG_ERROR = 2
NF_ACCEPT = 1


def _attr(t, data):
    n = 4 + len(data)
    return struct.pack("=HH", n, t) + data + b"\0" * ((4 - n % 4) % 4)


class Queue:
    def __init__(self, qnum, maxlen):
        self.q, self.seq = qnum, 0
        self.s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.s.bind((0, 0))
        self._config(_attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, 0)))
        self._config(_attr(NFQA_CFG_PARAMS, struct.pack("!IB", 0, NFQNL_COPY_META)) +
                     _attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", maxlen)))

    def _msg(self, kind, attrs, flags):
        self.seq += 1
        body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(self.q)) + attrs
        return struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | kind,
                           flags, self.seq, 0) + body

    def _config(self, attrs):
        self.s.send(self._msg(NFQNL_MSG_CONFIG, attrs, NLM_F_REQUEST | NLM_F_ACK))
        reply = self.s.recv(65536)
        _, t, _, _, _ = struct.unpack_from("=IHHII", reply)
        if t == NLMSG_ERROR:
            (err,) = struct.unpack_from("=i", reply, 16)
            if err:
                raise OSError(-err, "nfnetlink_queue config refused (queue %d)" % self.q)

    def verdicts(self, ids):
        out = b"".join(self._msg(NFQNL_MSG_VERDICT, _attr(NFQA_VERDICT_HDR,
                                                          struct.pack("!II", NF_ACCEPT, i)),
                                 NLM_F_REQUEST) for i in ids)
        if out:
            self.s.send(out)

    def packet_ids(self, buf):
        """The packet ids in one recv buffer (several netlink messages)."""
        ids, off = [], 0
        while off + 16 <= len(buf):
            n, t, _, _, _ = struct.unpack_from("=IHHII", buf, off)
            if n < 16:
                break
            if t == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                a = off + 20  # nlmsghdr (16) + nfgenmsg (4)
                while a + 4 <= off + n:
                    alen, atype = struct.unpack_from("=HH", buf, a)
                    if alen < 4:
                        break
                    if atype & 0x7fff == NFQA_PACKET_HDR:
                        ids.append(struct.unpack_from("!I", buf, a + 4)[0])
                        break
                    a += (alen + 3) & ~3
            off += (n + 3) & ~3
        return ids


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--queue", type=int, required=True)
    p.add_argument("--delay-ms", type=float, required=True)
    p.add_argument("--maxlen", type=int, default=20000, help="kernel queue length, packets")
    a = p.parse_args()
    if a.delay_ms < 0 or not 0 <= a.queue <= 65535:
        p.error("--delay-ms >= 0 and --queue 0..65535 are required")
    try:
        q = Queue(a.queue, a.maxlen)
    except OSError as e:
        print("nfq_delay: %s" % e, file=sys.stderr)
        return 2
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    held = collections.deque()
    d = a.delay_ms / 1000.0
    n_pkts = max_held = 0
    print("ready", flush=True)
    while not stop:
        now = time.monotonic()
        due = []
        while held and held[0][0] <= now:
            due.append(held.popleft()[1])
        q.verdicts(due)
        timeout = max(0.0, held[0][0] - now) if held else 0.5
        try:
            r, _, _ = select.select([q.s], [], [], timeout)
        except InterruptedError:
            continue
        if r:
            try:
                buf = q.s.recv(1 << 20)
            except OSError:  # ENOBUFS: the kernel dropped messages; the packets stay queued
                continue
            t = time.monotonic() + d
            for i in q.packet_ids(buf):
                held.append((t, i))
                n_pkts += 1
            max_held = max(max_held, len(held))
    q.verdicts([i for _, i in held])
    print(json.dumps({"packets": n_pkts, "max_held": max_held, "delay_ms": a.delay_ms}),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
