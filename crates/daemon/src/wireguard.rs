//! berthd's userspace WireGuard datapath for encrypted overlay networks (`--opt encrypted`).
//!
//! The kernels berth is tested on have neither WireGuard nor IPsec ESP, so berthd carries the
//! encrypted networks' VXLAN traffic itself: the VXLAN devices of those networks tunnel between
//! the hosts' tunnel addresses (`berth_plan::wireguard`), which are routed into one tun device,
//! [`DEVICE`]. Three threads move packets: tun → encrypt (boringtun's `Tunn`, one per peer) →
//! UDP; UDP → decrypt → tun (only packets from a known peer, whose inner source is that peer's
//! tunnel address); and a timer thread that drives handshakes, rekeying and expiry. Peers come
//! from the node records in etcd (public key, WireGuard port, advertised address): a host whose
//! lease expires stops being a peer; a host that rotated its key gets a fresh session.
//!
//! The tun device is not persistent: it exists while berthd holds it open, so a crash leaves
//! nothing behind, and it goes when the last encrypted network does.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context;
use berth_kernel::link::Kernel;
use berth_kernel::vnet;
use berth_plan::wireguard::{self as pw, Peer, DEVICE};
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};

/// How long a blocked read waits before looking at the stop flag.
const POLL: Duration = Duration::from_millis(200);
/// boringtun's timers want a tick about this often.
const TICK: Duration = Duration::from_millis(250);
/// The UDP socket's buffers. `SO_RCVBUF`/`SO_SNDBUF` are capped by `net.core.rmem_max`/
/// `wmem_max` even for root (only `SO_RCVBUFFORCE` is not); the bench counts the host's
/// `UdpRcvbufErrors` and saw none at 4 MiB, so the cap is not what limits the datapath.
const SOCKET_BUFFER: usize = 4 << 20;
/// How long GRO may hold packets written to the tun, in ns (the device's `gro_flush_timeout`).
const GRO_FLUSH_TIMEOUT_NS: u32 = 50_000;
/// Room for one packet and WireGuard's additions, behind the tun's header.
const BUF: usize = vnet::HDR_LEN + 65_535 + 148;
/// Room for one read from the tun: the header and a whole aggregate (up to 64 KiB of TCP
/// plus its outer and inner headers).
const READ_BUF: usize = vnet::HDR_LEN + (128 << 10);

/// One peer's WireGuard session.
struct Session {
    peer: Peer,
    tunn: Mutex<Tunn>,
}

#[derive(Default)]
struct Peers {
    by_name: BTreeMap<String, Arc<Session>>,
    by_tunnel: HashMap<Ipv6Addr, Arc<Session>>,
    by_addr: HashMap<IpAddr, Arc<Session>>,
}

impl Peers {
    fn index(by_name: BTreeMap<String, Arc<Session>>) -> Peers {
        let by_tunnel = by_name
            .values()
            .map(|s| (s.peer.tunnel, s.clone()))
            .collect();
        let by_addr = by_name
            .values()
            .map(|s| (s.peer.endpoint.ip(), s.clone()))
            .collect();
        Peers {
            by_name,
            by_tunnel,
            by_addr,
        }
    }
}

/// The running datapath: dropping the last handle on the tun file removes the device.
struct Running {
    stop: Arc<AtomicBool>,
    peers: Arc<RwLock<Peers>>,
    sock: Arc<UdpSocket>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// This host's WireGuard identity and (while an encrypted network exists) its datapath.
pub struct WireGuard {
    private: [u8; 32],
    /// The public key, published in this host's node record.
    pub public: [u8; 32],
    /// The UDP port (`--wireguard-port`).
    pub port: u16,
    running: Mutex<Option<Running>>,
    next_index: AtomicU32,
}

impl WireGuard {
    /// Loads this host's private key from `key_file`, or makes one (0600, never sent
    /// anywhere). Deleting the file and restarting berthd rotates the key.
    pub fn load_or_create(key_file: &Path, port: u16) -> anyhow::Result<WireGuard> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let private = match std::fs::read_to_string(key_file) {
            Ok(s) => pw::decode_key(&s).map_err(|e| {
                anyhow::anyhow!(
                    "{}: {e}; delete it and restart berthd to make a new key",
                    key_file.display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // 32 bytes from the OS's generator; X25519 clamps them when the key is used.
                let key: [u8; 32] = rand::random();
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(key_file)
                    .with_context(|| format!("creating {}", key_file.display()))?;
                f.write_all(format!("{}\n", pw::encode_key(&key)).as_bytes())
                    .with_context(|| format!("writing {}", key_file.display()))?;
                tracing::info!(file = %key_file.display(), "wireguard: made this host's key");
                key
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", key_file.display())),
        };
        // Whatever made the file, only root reads it.
        std::fs::set_permissions(key_file, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("chmod 0600 {}", key_file.display()))?;
        let public = PublicKey::from(&StaticSecret::from(private)).to_bytes();
        if Path::new("/sys/module/wireguard").exists() {
            tracing::info!(
                "wireguard: this kernel has WireGuard, but berth only has its userspace \
                 datapath so far: encrypted overlays use it"
            );
        }
        Ok(WireGuard {
            private,
            public,
            port,
            running: Mutex::new(None),
            next_index: AtomicU32::new(1),
        })
    }

    /// Whether the datapath runs (an encrypted network exists on this host).
    pub fn running(&self) -> bool {
        self.running.lock().map(|r| r.is_some()).unwrap_or(false)
    }

    /// Makes the datapath run exactly when `wanted`: started (tun device with this host's
    /// tunnel address `local`, UDP socket on the advertised address) or stopped (the device,
    /// its address and route go with it). A start that fails leaves nothing behind.
    pub async fn ensure(
        &self,
        kernel: &Kernel,
        wanted: bool,
        advertised: IpAddr,
        underlay_mtu: u32,
    ) -> anyhow::Result<()> {
        if wanted == self.running() {
            return Ok(());
        }
        if !wanted {
            let r = self.running.lock().ok().and_then(|mut r| r.take());
            if let Some(r) = r {
                stop(r);
                tracing::info!("wireguard: no encrypted network left; {DEVICE} removed");
            }
            return Ok(());
        }
        let local = pw::tunnel_addr(advertised).ok_or_else(|| {
            anyhow::anyhow!(
                "encrypted overlay networks need an IPv4 --advertise-addr (this host advertises {advertised})"
            )
        })?;
        let berth_kernel::sys::Tun { file: tun, offload } = berth_kernel::sys::open_tun(DEVICE)
            .with_context(|| format!("creating tun device {DEVICE} (/dev/net/tun)"))?;
        if !offload {
            tracing::info!(
                "wireguard: this kernel hands {DEVICE} one segment at a time (no UDP tunnel GSO \
                 on tun devices before Linux 6.17): encrypted throughput is lower"
            );
        }
        let addr = ipnet::IpNet::new(IpAddr::V6(local), pw::TUNNEL_PREFIX_LEN)
            .context("tunnel address")?;
        kernel
            .configure_tunnel(DEVICE, addr, pw::tunnel_mtu(underlay_mtu), pw::DEVICE_ALIAS)
            .await
            .with_context(|| format!("configuring tun device {DEVICE}"))?;
        // The tun is opened with IFF_NAPI, so packets written to it go through GRO; holding
        // GRO for up to 50 µs after a poll lets consecutive writes (one packet each) merge,
        // so the stack behind the tun runs once per aggregate instead of once per segment.
        // Only this device's knob; without it the datapath still works, unaggregated.
        if let Err(e) = berth_kernel::sys::set_gro_flush_timeout(DEVICE, GRO_FLUSH_TIMEOUT_NS) {
            tracing::warn!(
                "wireguard: setting {DEVICE}'s gro_flush_timeout: {e}; received packets are not aggregated"
            );
        }
        // Room for bursts: a TCP window's worth of datagrams arriving while the inbound thread
        // is decrypting must not be dropped by the kernel (the default is ~200 KiB).
        let sock =
            berth_kernel::sys::bind_udp(SocketAddr::new(advertised, self.port), SOCKET_BUFFER)
                .with_context(|| {
                    format!(
                "binding WireGuard's UDP port {advertised}:{} (change it with --wireguard-port)",
                self.port
            )
                })?;
        sock.set_read_timeout(Some(POLL))?;
        let sock = Arc::new(sock);
        let tun = Arc::new(tun);
        let stop_flag = Arc::new(AtomicBool::new(false));
        let peers = Arc::new(RwLock::new(Peers::default()));
        let mut threads = Vec::new();
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .with_context(|| format!("starting thread {name}"))
        };
        let started = (|| -> anyhow::Result<()> {
            let (t, s, p, st) = (tun.clone(), sock.clone(), peers.clone(), stop_flag.clone());
            threads.push(spawn(
                "berth-wg-out",
                Box::new(move || outbound(&t, &s, &p, &st)),
            )?);
            let (t, s, p, st) = (tun.clone(), sock.clone(), peers.clone(), stop_flag.clone());
            threads.push(spawn(
                "berth-wg-in",
                Box::new(move || inbound(&t, &s, &p, &st)),
            )?);
            let (s, p, st) = (sock.clone(), peers.clone(), stop_flag.clone());
            threads.push(spawn(
                "berth-wg-timers",
                Box::new(move || timers(&s, &p, &st)),
            )?);
            Ok(())
        })();
        let running = Running {
            stop: stop_flag,
            peers,
            sock,
            threads,
        };
        if let Err(e) = started {
            stop(running);
            return Err(e);
        }
        tracing::info!(dev = DEVICE, %local, port = self.port, offload, "wireguard: datapath started");
        if let Ok(mut r) = self.running.lock() {
            *r = Some(running);
        }
        Ok(())
    }

    /// Makes the sessions those of `want` (from the live node records): sessions of hosts
    /// gone are dropped, new hosts and hosts whose key or endpoint changed get a fresh session,
    /// and a handshake is started at once (a restarted peer learns the new session without
    /// waiting for its old one to time out). No-op while the datapath is stopped.
    pub fn set_peers(&self, want: &BTreeMap<String, Peer>) {
        let Ok(guard) = self.running.lock() else {
            return;
        };
        let Some(r) = guard.as_ref() else { return };
        let have: BTreeMap<String, Peer> = r
            .peers
            .read()
            .map(|p| {
                p.by_name
                    .iter()
                    .map(|(n, s)| (n.clone(), s.peer.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let changes = pw::diff_peers(&have, want);
        if changes.remove.is_empty() && changes.set.is_empty() {
            return;
        }
        let mut fresh = Vec::new();
        let mut by_name = r
            .peers
            .read()
            .map(|p| p.by_name.clone())
            .unwrap_or_default();
        for name in &changes.remove {
            by_name.remove(name);
            tracing::info!(peer = %name, "wireguard: peer removed");
        }
        for (name, peer) in changes.set {
            // boringtun uses the upper 24 bits as this session's index; unique per peer.
            let index = self.next_index.fetch_add(1, Ordering::Relaxed) << 8;
            let tunn = Tunn::new(
                StaticSecret::from(self.private),
                PublicKey::from(peer.key),
                None,
                None,
                index,
                None,
            );
            tracing::info!(peer = %name, endpoint = %peer.endpoint, "wireguard: peer set");
            let s = Arc::new(Session {
                peer,
                tunn: Mutex::new(tunn),
            });
            fresh.push(s.clone());
            by_name.insert(name, s);
        }
        if let Ok(mut p) = r.peers.write() {
            *p = Peers::index(by_name);
        }
        let mut buf = vec![0u8; 256];
        for s in fresh {
            let Ok(mut t) = s.tunn.lock() else { continue };
            if let TunnResult::WriteToNetwork(p) = t.format_handshake_initiation(&mut buf, false) {
                let _ = r.sock.send_to(p, s.peer.endpoint);
            }
        }
    }
}

fn stop(r: Running) {
    r.stop.store(true, Ordering::SeqCst);
    for t in r.threads {
        let _ = t.join();
    }
    // The threads' handles are gone: the tun file closes here and the device with it.
}

/// tun → encrypt → UDP: an IPv6 packet for a peer's tunnel address goes to that peer; others
/// (no such peer: a host gone or without a key) are dropped. With the tun's offloads a read
/// is a whole TCP aggregate (VXLAN's, up to 64 KiB): it is cut into the segments the wire
/// carries here ([`vnet::split`]), each encrypted, and the datagrams go out as UDP GSO
/// messages (equal-sized datagrams end to end, one pass through the stack per message),
/// several messages in one `sendmmsg(2)`.
fn outbound(tun: &File, sock: &UdpSocket, peers: &RwLock<Peers>, stop: &AtomicBool) {
    let mut pkt = vec![0u8; READ_BUF];
    let mut seg = Vec::with_capacity(BUF);
    let mut out = Datagrams::default();
    let mut scratch = berth_kernel::sys::SendScratch::default();
    let mut reader = tun;
    while !stop.load(Ordering::Relaxed) {
        // The tun file is non-blocking: read while packets are queued, poll (bounded, to
        // see the stop flag) only when it is empty — one system call per aggregate under load.
        let n = match reader.read(&mut pkt) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                readable(tun, POLL);
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!("wireguard: reading {DEVICE}: {e}");
                std::thread::sleep(POLL);
                continue;
            }
        };
        let Some(hdr) = vnet::Header::parse(&pkt[..n]) else {
            continue;
        };
        let packet = &mut pkt[vnet::HDR_LEN..n];
        if packet.len() < 40 || packet[0] >> 4 != 6 {
            continue;
        }
        let mut dst = [0u8; 16];
        dst.copy_from_slice(&packet[24..40]);
        let Some(s) = peers
            .read()
            .ok()
            .and_then(|p| p.by_tunnel.get(&Ipv6Addr::from(dst)).cloned())
        else {
            continue;
        };
        let Ok(mut t) = s.tunn.lock() else { continue };
        let endpoint = s.peer.endpoint;
        let split = vnet::split(&hdr, packet, &mut seg, |plain| {
            if out.room() < plain.len() + 148 {
                out.send(sock, endpoint, &mut scratch);
            }
            if let TunnResult::WriteToNetwork(p) = t.encapsulate(plain, out.tail()) {
                let len = p.len();
                out.push(len);
            }
        });
        drop(t);
        if let Err(e) = split {
            tracing::debug!("wireguard: a packet from {DEVICE} dropped: {e}");
        }
        out.send(sock, endpoint, &mut scratch);
    }
}

/// Encrypted datagrams written end to end, grouped for UDP GSO: a group is datagrams of one
/// size, the last of it possibly shorter (what `UDP_SEGMENT` allows), at most
/// [`GSO_MAX_SEGMENTS`] and [`GSO_MAX_BYTES`].
#[derive(Default)]
struct Datagrams {
    buf: Vec<u8>,
    /// Bytes in use.
    len: usize,
    /// (start, end, size of its datagrams, how many) of each closed group.
    groups: Vec<(usize, usize, usize, usize)>,
    /// The open group: start, datagram size, count, whether its last datagram was short.
    open: Option<(usize, usize, usize, bool)>,
}

/// The most datagrams one UDP GSO message carries (the kernel's `UDP_MAX_SEGMENTS` is 64 on
/// older kernels, 128 since 6.x).
const GSO_MAX_SEGMENTS: usize = 64;
/// The most bytes one UDP GSO message carries (an IPv4 datagram's limit, with room for
/// headers).
const GSO_MAX_BYTES: usize = 65_000;
/// Room for the datagrams of one aggregate and more.
const DATAGRAM_ARENA: usize = 256 << 10;

impl Datagrams {
    fn room(&self) -> usize {
        DATAGRAM_ARENA - self.len
    }

    /// Where the next datagram is written.
    fn tail(&mut self) -> &mut [u8] {
        if self.buf.len() < DATAGRAM_ARENA {
            self.buf.resize(DATAGRAM_ARENA, 0);
        }
        &mut self.buf[self.len..]
    }

    /// Takes the `len` bytes just written at [`Self::tail`] as one datagram.
    fn push(&mut self, len: usize) {
        let at = self.len;
        self.len += len;
        if let Some((start, size, count, short)) = self.open {
            let fits = !short && count < GSO_MAX_SEGMENTS && self.len - start <= GSO_MAX_BYTES;
            if fits && len == size {
                self.open = Some((start, size, count + 1, false));
                return;
            }
            if fits && len < size {
                self.open = Some((start, size, count + 1, true));
                return;
            }
            self.groups.push((start, at, size, count));
        }
        self.open = Some((at, len, 1, false));
    }

    /// Sends every datagram held to `dest` and empties the arena. A GSO message the route
    /// cannot carry (`EINVAL`, `EIO`) goes datagram by datagram instead.
    fn send(
        &mut self,
        sock: &UdpSocket,
        dest: SocketAddr,
        scratch: &mut berth_kernel::sys::SendScratch,
    ) {
        if let Some((start, size, count, _)) = self.open.take() {
            self.groups.push((start, self.len, size, count));
        }
        let msgs: Vec<berth_kernel::sys::Outgoing<'_>> = self
            .groups
            .iter()
            .map(|&(start, end, size, count)| berth_kernel::sys::Outgoing {
                data: &self.buf[start..end],
                dest,
                segment: (count > 1).then_some(size as u16),
            })
            .collect();
        let mut i = 0;
        while i < msgs.len() {
            match berth_kernel::sys::send_batch(sock.as_fd(), &msgs[i..], scratch) {
                Ok(0) => break,
                Ok(k) => i += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => {
                    let m = &msgs[i];
                    for d in m.data.chunks(usize::from(m.segment.unwrap_or(u16::MAX))) {
                        let _ = sock.send_to(d, dest);
                    }
                    i += 1;
                }
            }
        }
        self.groups.clear();
        self.len = 0;
    }
}

/// UDP → decrypt → tun: datagrams from addresses that are no peer's are ignored; a decrypted
/// packet is written only if its inner source is the sending peer's own tunnel address
/// (WireGuard's cryptokey routing: a peer cannot speak for another host).
fn inbound(tun: &File, sock: &UdpSocket, peers: &RwLock<Peers>, stop: &AtomicBool) {
    let mut pkt = vec![0u8; BUF];
    let mut out = vec![0u8; BUF];
    let mut writer = tun;
    while !stop.load(Ordering::Relaxed) {
        let (n, from) = match sock.recv_from(&mut pkt) {
            Ok(x) => x,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => {
                tracing::warn!("wireguard: receiving: {e}");
                std::thread::sleep(POLL);
                continue;
            }
        };
        let Some(s) = peers
            .read()
            .ok()
            .and_then(|p| p.by_addr.get(&from.ip()).cloned())
        else {
            continue;
        };
        let Ok(mut t) = s.tunn.lock() else { continue };
        let mut datagram: &[u8] = &pkt[..n];
        loop {
            // The packet is decrypted behind room for the tun's virtio-net header, which stays
            // all zero: one packet, checksums to be verified by the kernel.
            let (hdr, body) = out.split_at_mut(vnet::HDR_LEN);
            match t.decapsulate(Some(from.ip()), datagram, body) {
                TunnResult::WriteToNetwork(p) => {
                    let _ = sock.send_to(p, s.peer.endpoint);
                    // Packets queued during the handshake follow: ask again with nothing.
                    datagram = &[];
                }
                TunnResult::WriteToTunnelV6(p, src) => {
                    if src == s.peer.tunnel {
                        // boringtun decrypts to the start of the buffer it is given, right
                        // behind the header; if it ever did not, the packet is copied there.
                        let len = p.len();
                        if p.as_ptr() != hdr.as_ptr().wrapping_add(vnet::HDR_LEN) {
                            let copy = p.to_vec();
                            hdr.fill(0);
                            let _ = writer.write(&[&hdr[..], &copy[..]].concat());
                        } else {
                            hdr.fill(0);
                            let _ = writer.write(&out[..vnet::HDR_LEN + len]);
                        }
                    }
                    break;
                }
                TunnResult::WriteToTunnelV4(..) | TunnResult::Done | TunnResult::Err(_) => break,
            }
        }
    }
}

/// Handshake retries, rekeying, keepalives and session expiry, for every peer.
fn timers(sock: &UdpSocket, peers: &RwLock<Peers>, stop: &AtomicBool) {
    let mut out = vec![0u8; BUF];
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(TICK);
        let all: Vec<Arc<Session>> = peers
            .read()
            .map(|p| p.by_name.values().cloned().collect())
            .unwrap_or_default();
        for s in all {
            let Ok(mut t) = s.tunn.lock() else { continue };
            if let TunnResult::WriteToNetwork(p) = t.update_timers(&mut out) {
                let _ = sock.send_to(p, s.peer.endpoint);
            }
        }
    }
}

/// Whether `f` has a packet to read within `timeout`.
fn readable(f: &File, timeout: Duration) -> bool {
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    berth_kernel::sys::readable(f.as_fd(), ms)
}
