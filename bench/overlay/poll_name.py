#!/usr/bin/env python3
"""poll_name.py SERVER NAME DEADLINE_S [GO_FILE]

Run inside a container's netns (nsenter --net=…), as root. Adapted from the Docker overlay lab in
../shared/reference/docker-overlay-lab/docker/poll_name.py, with the resolver as an argument so
the same probe measures Docker (127.0.0.11) and berth (the network's gateway).

Prints "READY T" when polling starts. Then every ~5 ms asks SERVER:53 (A record, 20 ms timeout)
for NAME. Once NAME resolves AND GO_FILE exists (the caller creates it when `run` has returned),
sends an ICMP echo request to that address every 5 ms (raw socket) until the first reply: the
data path is probed only after `run` returned, so an early failed probe cannot leave a FAILED
neighbour entry behind. Prints "T_RESOLVED T_PINGABLE DNS_LOOPS PINGS_SENT IP" (unix seconds),
or "FAIL …" after DEADLINE_S seconds (bounded)."""
import os, select, socket, struct, sys, time

from probe_lib import a_query, csum, parse_a

server, name, deadline = sys.argv[1], sys.argv[2], time.time() + float(sys.argv[3])
go_file = sys.argv[4] if len(sys.argv) > 4 else None


def query(sock):
    sock.sendto(a_query(name), (server, 53))
    end = time.time() + 0.02
    while True:
        sock.settimeout(max(end - time.time(), 0.001))
        try:
            data = sock.recv(2048)
        except socket.timeout:
            return None
        return parse_a(data)


def ping_until(ip):
    icmp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    ident, seq = os.getpid() & 0xFFFF, 0
    while time.time() < deadline:
        seq = (seq + 1) & 0xFFFF
        hdr = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
        body = b"poll_name"
        icmp.sendto(struct.pack("!BBHHH", 8, 0, csum(hdr + body), ident, seq) + body, (ip, 0))
        end = time.time() + 0.005
        while True:
            left = end - time.time()
            if left <= 0:
                break
            r, _, _ = select.select([icmp], [], [], left)
            if not r:
                break
            pkt, addr = icmp.recvfrom(2048)
            ihl = (pkt[0] & 0x0F) * 4
            typ, _code, _ck, rid, _rseq = struct.unpack("!BBHHH", pkt[ihl:ihl + 8])
            if typ == 0 and rid == ident and addr[0] == ip:
                return time.time(), seq
    return None, seq


sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
print(f"READY {time.time():.6f}", flush=True)
loops, t_res = 0, None
while time.time() < deadline:
    loops += 1
    ip = query(sock)
    if ip and t_res is None:
        t_res = time.time()
    if ip and (go_file is None or os.path.exists(go_file)):
        t_ping, sent = ping_until(ip)
        if t_ping:
            print(f"{t_res:.6f} {t_ping:.6f} {loops} {sent} {ip}")
            sys.exit(0)
        print(f"FAIL resolved={t_res:.6f} ip={ip} pings_sent={sent}")
        sys.exit(1)
    time.sleep(0.005)
print(f"FAIL not resolved, dns_loops={loops}")
sys.exit(1)
