"""Wire helpers shared by poll_name.py and probe_many.py: a DNS A query, the first A record
of an answer, and the ICMP checksum."""
import random
import socket
import struct


def a_query(name):
    """A DNS query (recursion desired) for NAME's A record."""
    q = struct.pack(">HHHHHH", random.randrange(65536), 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return q + struct.pack(">HH", 1, 1)


def parse_a(data):
    """The first A record of a DNS answer as dotted text, or None (error, no answer)."""
    if len(data) < 12:
        return None
    _rid, flags, qd, an = struct.unpack(">HHHH", data[:8])
    if flags & 0xF or an == 0:
        return None
    off = 12
    for _ in range(qd):
        while data[off]:
            off += data[off] + 1
        off += 5
    for _ in range(an):
        if data[off] & 0xC0 == 0xC0:
            off += 2
        else:
            while data[off]:
                off += data[off] + 1
            off += 1
        typ, _cls, _ttl, rdl = struct.unpack(">HHIH", data[off:off + 10])
        off += 10
        if typ == 1 and rdl == 4:
            return socket.inet_ntoa(data[off:off + 4])
        off += rdl
    return None


def csum(b):
    """The Internet checksum of B."""
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF
