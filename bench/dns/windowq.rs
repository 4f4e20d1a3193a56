//! DNS load client for the DNS bench that keeps exactly WINDOW queries outstanding: a new
//! query goes out the moment an answer comes in (or a query is given up as lost after 1 s).
//! One connected UDP socket (one source port, as `dnsperf -c 1`), cycling through the names.
//!
//! Why next to dnsperf: on a 2-vCPU machine `dnsperf -c 1 -q 100` cannot keep 100 queries in
//! flight against a quick resolver. Little's law gives what it really keeps: its queries/s
//! times its average latency (54,800 q/s × 0.83 ms = 45 in flight against berth, where the
//! same run keeps 83 in flight against aardvark-dns), so the resolver waits for the client and
//! the ratio measures dnsperf. This client does two system calls per query and almost nothing
//! else, and prints both that product and its own CPU time per query, so a reader can check
//! which side was the limit.
//!
//! Usage: windowq SERVER[:PORT] SECONDS WINDOW[@RATE|g] NAME…   (A queries, port 53 by default)
//!
//! With `g` (`100g`) the client sends in bursts: it takes every answer waiting on its socket,
//! then sends their replacements in ONE `send` cut into datagrams by the kernel (UDP GSO,
//! `UDP_SEGMENT`; the queries must be of one size: names of one length), so one trip through
//! the client's stack carries up to 64 queries. On 2 vCPUs the one-query-per-send client costs
//! as much CPU per query as a quick resolver, and is then the limit of what it measures; the
//! bursts make it cheap enough that the resolver on a core of its own (`PIN=1` in run.sh) is.
//! The resolver still receives separate datagrams (its socket has no `UDP_GRO`).
//!
//! With `@RATE` (queries/s) the client offers at most RATE queries a second, still with at
//! most WINDOW outstanding: an answer's replacement waits until the rate allows it. Every
//! resolver then answers the same offered load, so their CPU time per query compares
//! without either side being saturated (at full speed on 2 vCPUs the client and the resolver
//! share the cores, and the ratio of throughputs is the ratio of *both* sides' costs).
//!
//! Prints: answered=… lost=… errors=… qps=… avg_us=… p50_us=… p99_us=… in_flight=…
//! client_cpu_s_per_M=…

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// `setsockopt(2)`, for `UDP_SEGMENT` (std has no general socket option call).
mod ffi {
    extern "C" {
        pub fn setsockopt(fd: i32, level: i32, name: i32, val: *const u32, len: u32) -> i32;
    }
}

/// Turns on UDP GSO with segments of `size` bytes: `setsockopt(fd, SOL_UDP, UDP_SEGMENT)`.
fn set_gso(sock: &UdpSocket, size: usize) -> bool {
    const SOL_UDP: i32 = 17;
    const UDP_SEGMENT: i32 = 103;
    let v = size as u32;
    // SAFETY: a valid fd of a socket we own, a pointer to a live u32 and its length.
    unsafe { ffi::setsockopt(sock.as_raw_fd(), SOL_UDP, UDP_SEGMENT, &v, 4) == 0 }
}

/// Most queries in one GSO send (the kernel's `UDP_MAX_SEGMENTS` is 64 on older kernels).
const MAX_BURST: usize = 64;

/// A query is given up (and counted lost) after this long without an answer.
const LOST_AFTER: Duration = Duration::from_secs(1);

fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// utime + stime of this process, in seconds (from /proc/self/stat, fields 14 and 15).
/// The queries in flight: when each id went out (None: not outstanding). 65,536 ids for at
/// most 30,000 in flight, handed out in order, so an id comes round again only long after.
struct Window {
    sent: Vec<Option<Instant>>,
    next_id: u16,
    outstanding: usize,
    lost: u64,
}

impl Window {
    /// The next query (its id set), marked outstanding.
    fn next(&mut self, queries: &[Vec<u8>]) -> Vec<u8> {
        let id = self.next_id;
        self.next_id = id.wrapping_add(1);
        let mut q = queries[usize::from(id) % queries.len()].clone();
        q[..2].copy_from_slice(&id.to_be_bytes());
        if self.sent[usize::from(id)].is_some() {
            // Still outstanding from 65,536 queries ago: that one is lost.
            self.lost += 1;
            self.outstanding -= 1;
        }
        self.sent[usize::from(id)] = Some(Instant::now());
        self.outstanding += 1;
        q
    }

    fn send(&mut self, sock: &UdpSocket, queries: &[Vec<u8>]) {
        let q = self.next(queries);
        // A failed send is counted lost when its query times out, like a dropped datagram.
        let _ = sock.send(&q);
    }

    /// `n` queries as GSO bursts of at most [`MAX_BURST`] (the socket has `UDP_SEGMENT` set
    /// to the queries' one size).
    fn send_burst(&mut self, sock: &UdpSocket, queries: &[Vec<u8>], mut n: usize) {
        while n > 0 {
            let k = n.min(MAX_BURST);
            let mut buf = Vec::with_capacity(k * queries[0].len());
            for _ in 0..k {
                buf.extend_from_slice(&self.next(queries));
            }
            let _ = sock.send(&buf);
            n -= k;
        }
    }
}

fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(") ").map(|x| x.1).unwrap_or("");
    let f: Vec<f64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // After "(comm) " the state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let ticks = f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0);
    // CLK_TCK is 100 on every Linux this bench runs on (getconf CLK_TCK).
    ticks / 100.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!("usage: windowq SERVER SECONDS WINDOW NAME…");
        std::process::exit(2);
    }
    let server = if args[1].contains(':') {
        args[1].clone()
    } else {
        format!("{}:53", args[1])
    };
    let seconds: f64 = args[2].parse().expect("SECONDS");
    let burst = args[3].ends_with('g');
    let spec = args[3].trim_end_matches('g');
    let (window, rate) = match spec.split_once('@') {
        Some((w, r)) => (w.parse().expect("WINDOW"), r.parse::<f64>().expect("RATE")),
        None => (spec.parse().expect("WINDOW"), 0.0),
    };
    assert!(!(burst && rate > 0.0), "bursts (g) and a rate (@) do not go together");
    assert!((1..=30000).contains(&window), "WINDOW must be 1..=30000");
    let names = &args[4..];
    let queries: Vec<Vec<u8>> = names.iter().map(|n| query(0, n)).collect();
    let sock = UdpSocket::bind("0.0.0.0:0").expect("bind");
    sock.connect(&server).expect("connect");
    if burst {
        let size = queries[0].len();
        assert!(
            queries.iter().all(|q| q.len() == size),
            "bursts need names of one length (one query size)"
        );
        assert!(set_gso(&sock, size), "UDP_SEGMENT refused by the kernel");
    }
    // Paced: wake often enough to send what the rate allows when nothing comes back.
    let tick = if rate > 0.0 {
        Duration::from_micros(200)
    } else {
        Duration::from_millis(20)
    };
    sock.set_read_timeout(Some(tick)).expect("timeout");
    // Answers whose replacement query the rate has held back.
    let mut owed: usize = 0;
    let mut sent_total: f64 = 0.0;
    let mut buf = [0u8; 4096];
    let mut lat: Vec<u32> = Vec::with_capacity(1 << 22);
    let (mut errors, mut unexpected) = (0u64, 0u64);
    let mut w = Window {
        sent: vec![None; 1 << 16],
        next_id: 0,
        outstanding: 0,
        lost: 0,
    };
    let cpu0 = cpu_secs();
    let start = Instant::now();
    let end = Duration::from_secs_f64(seconds);
    if burst {
        w.send_burst(&sock, &queries, window);
    } else {
        for _ in 0..window {
            if rate > 0.0 {
                owed += 1;
            } else {
                w.send(&sock, &queries);
            }
        }
    }
    let mut last_sweep = Instant::now();
    // Bursts: answers taken since the last send, replaced together once the socket is empty.
    let mut due: usize = 0;
    let mut nonblocking = false;
    while start.elapsed() < end {
        if burst && nonblocking != (due > 0) {
            // Blocking only when nothing is due; otherwise drain what is there, then send.
            nonblocking = due > 0;
            sock.set_nonblocking(nonblocking).expect("nonblocking");
        }
        match sock.recv(&mut buf) {
            Ok(n) if n >= 12 => {
                let id = u16::from_be_bytes([buf[0], buf[1]]);
                match w.sent[usize::from(id)].take() {
                    Some(t0) => {
                        lat.push(t0.elapsed().as_nanos() as u32);
                        w.outstanding -= 1;
                        if buf[3] & 0xF != 0 {
                            errors += 1;
                        }
                        if burst {
                            due += 1;
                        } else if rate > 0.0 {
                            owed += 1;
                        } else {
                            w.send(&sock, &queries);
                        }
                    }
                    None => unexpected += 1,
                }
            }
            Ok(_) => unexpected += 1,
            Err(_) => {
                if due > 0 {
                    w.send_burst(&sock, &queries, due);
                    due = 0;
                }
            }
        }
        if due >= MAX_BURST {
            w.send_burst(&sock, &queries, due);
            due = 0;
        }
        if owed > 0 {
            let allowed = rate * start.elapsed().as_secs_f64();
            while owed > 0 && sent_total < allowed {
                w.send(&sock, &queries);
                owed -= 1;
                sent_total += 1.0;
            }
        }
        if last_sweep.elapsed() >= Duration::from_millis(100) {
            last_sweep = Instant::now();
            let now = Instant::now();
            let mut gone = 0;
            for s in w.sent.iter_mut() {
                if s.is_some_and(|t| now.duration_since(t) >= LOST_AFTER) {
                    *s = None;
                    gone += 1;
                }
            }
            w.lost += gone;
            w.outstanding -= gone as usize;
            if burst {
                due += gone as usize;
            } else {
                for _ in 0..gone {
                    w.send(&sock, &queries);
                }
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu0;
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        let i = ((p * lat.len() as f64).ceil() as usize).clamp(1, lat.len()) - 1;
        f64::from(lat[i]) / 1000.0
    };
    let avg = if lat.is_empty() {
        0.0
    } else {
        lat.iter().map(|&x| f64::from(x)).sum::<f64>() / lat.len() as f64 / 1000.0
    };
    let qps = lat.len() as f64 / secs;
    println!(
        "answered={} lost={} errors={errors} unexpected={unexpected} qps={qps:.0} avg_us={avg:.1} \
         p50_us={:.1} p99_us={:.1} in_flight={:.1} client_cpu_s_per_M={:.2}",
        lat.len(),
        w.lost,
        pct(0.5),
        pct(0.99),
        qps * avg / 1e6,
        cpu / (lat.len().max(1) as f64) * 1e6,
    );
}
