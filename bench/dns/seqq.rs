//! Strictly sequential DNS client for the DNS bench: one UDP query at a time (the next is sent
//! when the answer to the previous one arrives), for a fixed time, cycling through the names
//! given. Prints queries/s and latency percentiles; std only, built with `rustc -O`.
//!
//! Usage: seqq SERVER SECONDS NAME…   (A queries to SERVER:53)

use std::net::UdpSocket;
use std::time::{Duration, Instant};

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

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: seqq SERVER SECONDS NAME…");
        std::process::exit(2);
    }
    let server = format!("{}:53", args[1]);
    let seconds: f64 = args[2].parse().expect("SECONDS");
    let names = &args[3..];
    let queries: Vec<Vec<u8>> = names.iter().map(|n| query(0, n)).collect();
    let sock = UdpSocket::bind("0.0.0.0:0").expect("bind");
    sock.connect(&server).expect("connect");
    sock.set_read_timeout(Some(Duration::from_secs(1))).expect("timeout");
    let mut buf = [0u8; 4096];
    let mut lat: Vec<u32> = Vec::with_capacity(1 << 20);
    let (mut lost, mut errors) = (0u64, 0u64);
    let start = Instant::now();
    let end = Duration::from_secs_f64(seconds);
    let mut id: u16 = 0;
    while start.elapsed() < end {
        id = id.wrapping_add(1);
        let mut q = queries[usize::from(id) % queries.len()].clone();
        q[..2].copy_from_slice(&id.to_be_bytes());
        let t0 = Instant::now();
        sock.send(&q).expect("send");
        loop {
            match sock.recv(&mut buf) {
                Ok(n) if n >= 12 && buf[..2] == id.to_be_bytes() => {
                    lat.push(t0.elapsed().as_nanos() as u32);
                    if buf[3] & 0xF != 0 {
                        errors += 1;
                    }
                    break;
                }
                Ok(_) => continue,
                Err(_) => {
                    lost += 1;
                    break;
                }
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
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
    println!(
        "answered={} lost={lost} errors={errors} qps={:.0} avg_us={avg:.1} p50_us={:.1} p99_us={:.1} p999_us={:.1}",
        lat.len(),
        lat.len() as f64 / secs,
        pct(0.50),
        pct(0.99),
        pct(0.999)
    );
}
