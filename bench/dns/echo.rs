//! The floor of a UDP resolver for the DNS bench: a trivial server that sends every datagram
//! back as it came, with only the "response" bit set. One thread, blocking `recv_from` and
//! `send_to`, exactly the system calls of berth's UDP thread, and nothing else: what it costs
//! per query is what the kernel's UDP receive and send (through the same bridge and veth to
//! the client container) cost, which no resolver built this way can go below.
//!
//! Usage: echo ADDR:PORT   (runs until killed)

use std::net::UdpSocket;

fn main() {
    let addr = std::env::args().nth(1).expect("usage: echo ADDR:PORT");
    let sock = UdpSocket::bind(&addr).expect("bind");
    let mut buf = [0u8; 4096];
    loop {
        let Ok((n, peer)) = sock.recv_from(&mut buf) else {
            continue;
        };
        if n >= 12 {
            buf[2] |= 0x80;
            let _ = sock.send_to(&buf[..n], peer);
        }
    }
}
