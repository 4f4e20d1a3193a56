#!/usr/bin/env python3
"""probe_many.py NAME DEADLINE_S GO_FILE PID:RESOLVER [PID:RESOLVER …]

One process probing a new container from several other hosts at once, for hosts20.sh. Run as
root in any namespace: for each PID (an observer container on another host) it opens a UDP and
a raw ICMP socket inside that container's network namespace (setns(2), then back), so one
process with one select loop serves every observer without a fork per probe.

Prints "READY T" once the sockets are open. Then every PERIOD (1 ms) asks each observer's
RESOLVER:53 for NAME (A record) until it answers; once NAME has resolved for an observer AND
GO_FILE exists (the caller creates it when `run` has returned), sends an ICMP echo to that
address from that observer every PERIOD until the first reply. As in poll_name.py, the data
path is probed only after `run` returned, so an early probe cannot leave a FAILED neighbour
entry behind. Prints one line per observer: "PID T_RESOLVED T_PINGABLE T_GO" (unix seconds,
or "-" for what did not happen before DEADLINE_S; T_GO: when the probe saw GO_FILE, so
T_PINGABLE - T_GO is the data path without the caller's and the poll's own delay), and exits 0
if every observer got both."""
import ctypes
import os
import random
import select
import socket
import struct
import sys
import time

from probe_lib import csum, parse_a, a_query

PERIOD = 0.001
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def setns(fd):
    """setns(2) for a network namespace (os.setns needs Python 3.12)."""
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))

name, deadline, go_file = sys.argv[1], time.time() + float(sys.argv[2]), sys.argv[3]


class Observer:
    def __init__(self, pid, resolver):
        self.pid, self.resolver = pid, resolver
        me = os.open("/proc/self/ns/net", os.O_RDONLY)
        target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
        try:
            setns(target)
            self.dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.icmp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        finally:
            setns(me)
            os.close(me)
            os.close(target)
        self.dns.setblocking(False)
        self.icmp.setblocking(False)
        self.ip = None
        self.t_res = None
        self.t_ping = None
        self.ident = random.randrange(65536)
        self.seq = 0

    def ask(self):
        self.dns.sendto(a_query(name), (self.resolver, 53))

    def ping(self):
        self.seq = (self.seq + 1) & 0xFFFF
        body = b"probe_many"
        hdr = struct.pack("!BBHHH", 8, 0, 0, self.ident, self.seq)
        pkt = struct.pack("!BBHHH", 8, 0, csum(hdr + body), self.ident, self.seq) + body
        self.icmp.sendto(pkt, (self.ip, 0))

    def done(self):
        return self.t_ping is not None


obs = []
for arg in sys.argv[4:]:
    pid, resolver = arg.split(":", 1)
    obs.append(Observer(int(pid), resolver))
by_sock = {}
for o in obs:
    by_sock[o.dns.fileno()] = (o, "dns")
    by_sock[o.icmp.fileno()] = (o, "icmp")
print(f"READY {time.time():.6f}", flush=True)

t_go = None
next_tick = time.time()
while time.time() < deadline and not all(o.done() for o in obs):
    now = time.time()
    if now >= next_tick:
        next_tick = now + PERIOD
        if t_go is None and os.path.exists(go_file):
            t_go = now
        for o in obs:
            if o.ip is None:
                o.ask()
            elif t_go is not None and not o.done():
                o.ping()
    r, _, _ = select.select(list(by_sock), [], [], max(next_tick - time.time(), 0))
    t = time.time()
    for fd in r:
        o, kind = by_sock[fd]
        try:
            if kind == "dns":
                data = o.dns.recv(2048)
                ip = parse_a(data)
                if ip and o.ip is None:
                    o.ip, o.t_res = ip, t
            else:
                pkt, addr = o.icmp.recvfrom(2048)
                ihl = (pkt[0] & 0x0F) * 4
                typ, _c, _k, rid, _s = struct.unpack("!BBHHH", pkt[ihl:ihl + 8])
                if typ == 0 and rid == o.ident and addr[0] == o.ip and o.t_ping is None:
                    o.t_ping = t
        except (BlockingIOError, OSError):
            pass

ok = True
for o in obs:
    f = lambda v: "%.6f" % v if v is not None else "-"
    print(f"{o.pid} {f(o.t_res)} {f(o.t_ping)} {f(t_go)}")
    ok = ok and o.done()
sys.exit(0 if ok else 1)
