//! DNS helpers shared by the tests that query berth's resolver from inside containers.

/// DNS client: `dnsq.py SERVER NAME [TYPE] [--tcp] [--edns N]` prints one JSON object. SERVER
/// `-` means the first nameserver of /etc/resolv.conf (what the container's libc would use).
pub const DNSQ_PY: &str = r#"
import json, random, socket, struct, sys
args = [a for a in sys.argv[1:] if not a.startswith("--")]
tcp = "--tcp" in sys.argv
edns = None
if "--edns" in sys.argv:
    edns = int(sys.argv[sys.argv.index("--edns") + 1]); args.remove(str(edns))
server, name = args[0], args[1]
qtype = {"A": 1, "PTR": 12, "AAAA": 28, "ANY": 255, "TXT": 16}[args[2] if len(args) > 2 else "A"]
if server == "-":
    server = [l.split()[1] for l in open("/etc/resolv.conf") if l.startswith("nameserver")][0]
qid = random.randint(0, 65535)
q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 1 if edns else 0)
for label in name.rstrip(".").split("."):
    q += bytes([len(label)]) + label.encode()
q += b"\0" + struct.pack(">HH", qtype, 1)
if edns:
    q += b"\0" + struct.pack(">HHIH", 41, edns, 0, 0)
fam = socket.AF_INET6 if ":" in server else socket.AF_INET
def name_at(m, i):
    out = []
    for _ in range(128):
        l = m[i]
        if l == 0:
            return ".".join(out) + "."
        if l & 0xC0 == 0xC0:
            i = ((l & 0x3F) << 8) | m[i + 1]; continue
        out.append(m[i + 1:i + 1 + l].decode()); i += 1 + l
try:
    if tcp:
        s = socket.socket(fam, socket.SOCK_STREAM); s.settimeout(3); s.connect((server, 53))
        s.sendall(struct.pack(">H", len(q)) + q)
        buf = b""
        while len(buf) < 2 or len(buf) < 2 + struct.unpack(">H", buf[:2])[0]:
            b = s.recv(65535)
            if not b: break
            buf += b
        m = buf[2:]
    else:
        s = socket.socket(fam, socket.SOCK_DGRAM); s.settimeout(3); s.sendto(q, (server, 53))
        m, _ = s.recvfrom(65535)
except Exception as e:
    print(json.dumps({"error": repr(e)})); sys.exit(0)
rid, flags, qd, an, ns, ar = struct.unpack(">HHHHHH", m[:12])
i = 12
for _ in range(qd):
    while m[i] != 0:
        if m[i] & 0xC0 == 0xC0: i += 1; break
        i += 1 + m[i]
    i += 5
answers, ptrs, ttls = [], [], []
for _ in range(an):
    while m[i] != 0:
        if m[i] & 0xC0 == 0xC0: i += 1; break
        i += 1 + m[i]
    i += 1
    t, c, ttl, l = struct.unpack(">HHIH", m[i:i + 10]); i += 10
    rd = m[i:i + l]
    if t == 1: answers.append(socket.inet_ntop(socket.AF_INET, rd))
    elif t == 28: answers.append(socket.inet_ntop(socket.AF_INET6, rd))
    elif t == 12: ptrs.append(name_at(m, i))
    ttls.append(ttl); i += l
rcode = ["NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED"][flags & 0xF] if flags & 0xF < 6 else str(flags & 0xF)
print(json.dumps({"id_ok": rid == qid, "rcode": rcode, "aa": bool(flags & 0x400), "tc": bool(flags & 0x200),
                  "answers": answers, "ptrs": ptrs, "ttls": ttls, "server": server, "size": len(m)}))
"#;

/// Fake upstream: `fakedns.py ADDR NAME=IP…` answers A queries for its names over UDP and TCP
/// on ADDR:53 (TTL 0), NXDOMAIN for anything else.
pub const FAKEDNS_PY: &str = r#"
import socket, struct, sys, threading
addr = sys.argv[1]
table = dict(a.split("=") for a in sys.argv[2:])
def answer(q):
    qid, flags, qd = struct.unpack(">HHH", q[:6])
    i, labels = 12, []
    while q[i] != 0:
        labels.append(q[i + 1:i + 1 + q[i]].decode().lower()); i += 1 + q[i]
    qtype, = struct.unpack(">H", q[i + 1:i + 3])
    question = q[12:i + 5]
    ip = table.get(".".join(labels))
    rr = b""
    if ip and qtype == 1:
        rr = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 0, 4) + socket.inet_aton(ip)
    rcode = 0 if ip else 3
    return struct.pack(">HHHHHH", qid, 0x8180 | rcode, 1, 1 if rr else 0, 0, 0) + question + rr
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, 53))
    while True:
        q, peer = s.recvfrom(4096)
        try: s.sendto(answer(q), peer)
        except Exception: pass
def tcp_conn(c):
    try:
        while True:
            h = c.recv(2)
            if len(h) < 2: return
            n, = struct.unpack(">H", h); q = b""
            while len(q) < n: q += c.recv(n - len(q))
            a = answer(q); c.sendall(struct.pack(">H", len(a)) + a)
    except Exception: pass
    finally: c.close()
def tcp():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, 53)); s.listen(16)
    while True:
        c, _ = s.accept(); threading.Thread(target=tcp_conn, args=(c,), daemon=True).start()
threading.Thread(target=tcp, daemon=True).start()
udp()
"#;
