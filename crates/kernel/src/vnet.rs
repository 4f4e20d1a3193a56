//! The virtio-net header that a tun device opened with `IFF_VNET_HDR` puts before every packet
//! it hands out, and the work it leaves to the reader: completing a checksum, and cutting a
//! GSO packet into the segments the wire carries. Pure code (no system call), tested without
//! root.
//!
//! Why: berthd's userspace WireGuard datapath reads the VXLAN packets of encrypted overlay
//! networks from a tun device. Without offloads the kernel cuts every 64 KiB TCP aggregate into
//! ~1.4 KiB segments *before* the tun and each segment crosses the IPv6 output path, the tun's
//! queue and a `read(2)` on its own. With `TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 |
//! TUN_F_UDP_TUNNEL_GSO | TUN_F_UDP_TUNNEL_GSO_CSUM` (Linux ≥ 6.17) the aggregate arrives
//! whole, with this header describing it, and [`split`] cuts it here: one read per aggregate.
//!
//! The header is `struct virtio_net_hdr_v1_hash_tunnel` (24 bytes, native byte order as the
//! tun device uses it without `TUNSETVNETLE`/`BE`): `flags`, `gso_type`, `hdr_len`,
//! `gso_size`, `csum_start`, `csum_offset`, `num_buffers`, `hash_value`, `hash_report`,
//! `padding`, `outer_th_offset`, `inner_nh_offset`.

use thiserror::Error;

/// Bytes of the header berth asks for (`TUNSETVNETHDRSZ`): the tunnel variant's size.
pub const HDR_LEN: usize = 24;
/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum at `csum_start + csum_offset` holds only the
/// pseudo-header's sum; the reader completes it over `csum_start..`.
pub const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_UDP_TUNNEL_CSUM`: the outer UDP header of a tunnel GSO packet carries a
/// checksum (each segment needs its own).
pub const F_UDP_TUNNEL_CSUM: u8 = 8;
/// `VIRTIO_NET_HDR_GSO_TCPV4`.
pub const GSO_TCPV4: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_TCPV6`.
pub const GSO_TCPV6: u8 = 4;
/// `VIRTIO_NET_HDR_GSO_UDP_TUNNEL_IPV4`: the TCP segments travel in a UDP tunnel over IPv4.
pub const GSO_UDP_TUNNEL_IPV4: u8 = 0x20;
/// `VIRTIO_NET_HDR_GSO_UDP_TUNNEL_IPV6`: … over IPv6.
pub const GSO_UDP_TUNNEL_IPV6: u8 = 0x40;
/// `VIRTIO_NET_HDR_GSO_ECN`: the TCP flow uses ECN (CWR only on the first segment).
pub const GSO_ECN: u8 = 0x80;

/// The fields of the header that matter to a reader.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Header {
    /// `F_*` bits.
    pub flags: u8,
    /// `GSO_*` bits (0: one packet).
    pub gso_type: u8,
    /// TCP payload bytes per segment.
    pub gso_size: u16,
    /// Where the checksummed part starts (for GSO: the inner transport header).
    pub csum_start: u16,
    /// Where, from `csum_start`, the checksum field is.
    pub csum_offset: u16,
    /// Tunnel GSO: where the outer UDP header starts.
    pub outer_th_offset: u16,
    /// Tunnel GSO: where the inner IP header starts.
    pub inner_nh_offset: u16,
}

impl Header {
    /// Reads the header from the first [`HDR_LEN`] bytes of `b`.
    pub fn parse(b: &[u8]) -> Option<Header> {
        let h = b.get(..HDR_LEN)?;
        let u16at = |i: usize| u16::from_ne_bytes([h[i], h[i + 1]]);
        Some(Header {
            flags: h[0],
            gso_type: h[1],
            gso_size: u16at(4),
            csum_start: u16at(6),
            csum_offset: u16at(8),
            outer_th_offset: u16at(20),
            inner_nh_offset: u16at(22),
        })
    }
}

/// Why a packet read from the tun could not be handed on (it is dropped; TCP resends).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SplitError {
    /// An offset or length points outside the packet.
    #[error("packet shorter than its headers say")]
    Truncated,
    /// A kind of packet berth did not ask the kernel for.
    #[error("unsupported packet: {0}")]
    Unsupported(&'static str),
}

/// Hands every packet that `pkt` (a read from the tun, without the header) stands for to
/// `each`, in order: `pkt` itself, its checksum completed if `hdr` says so; or, for a TCP GSO
/// packet (plain or in a UDP tunnel), each segment of `gso_size` payload bytes with its own
/// lengths, IPv4 ids, TCP sequence number and flags and checksums (TCP, inner and outer IPv4
/// header, outer UDP when it has one), built in `scratch`. Returns how many packets it handed
/// on. Never panics on any input.
pub fn split<F: FnMut(&[u8])>(
    hdr: &Header,
    pkt: &mut [u8],
    scratch: &mut Vec<u8>,
    mut each: F,
) -> Result<usize, SplitError> {
    let kind = hdr.gso_type & !(GSO_ECN | GSO_UDP_TUNNEL_IPV4 | GSO_UDP_TUNNEL_IPV6);
    if kind == 0 {
        if hdr.flags & F_NEEDS_CSUM != 0 {
            complete_checksum(
                pkt,
                usize::from(hdr.csum_start),
                usize::from(hdr.csum_offset),
            )?;
        }
        each(pkt);
        return Ok(1);
    }
    if kind != GSO_TCPV4 && kind != GSO_TCPV6 {
        return Err(SplitError::Unsupported("GSO other than TCP"));
    }
    let tunnel = hdr.gso_type & (GSO_UDP_TUNNEL_IPV4 | GSO_UDP_TUNNEL_IPV6) != 0;
    let layout = Layout::of(hdr, pkt, kind == GSO_TCPV4, tunnel)?;
    let mss = usize::from(hdr.gso_size);
    if mss == 0 {
        return Err(SplitError::Unsupported("GSO with a segment size of 0"));
    }
    let payload = &pkt[layout.end..];
    let n = payload.len().div_ceil(mss).max(1);
    let seq0 = be32(pkt, layout.th + 4);
    let flags0 = pkt[layout.th + 13];
    let inner_id0 = layout.inner_v4.then(|| be16(pkt, layout.inner + 4));
    let outer_id0 = layout.outer_v4.then(|| be16(pkt, 4));
    let chunks: Box<dyn Iterator<Item = &[u8]>> = if payload.is_empty() {
        Box::new(std::iter::once(payload))
    } else {
        Box::new(payload.chunks(mss))
    };
    for (k, chunk) in chunks.enumerate() {
        scratch.clear();
        scratch.extend_from_slice(&pkt[..layout.end]);
        scratch.extend_from_slice(chunk);
        let seg = &mut scratch[..];
        let total = seg.len();
        let last = k + 1 == n;
        // The inner IP header: its length, and for IPv4 an id per segment (the kernel's own
        // segmentation increments it) and the header checksum.
        let inner = layout.inner;
        if let Some(id0) = inner_id0 {
            put16(seg, inner + 2, (total - inner) as u16);
            put16(seg, inner + 4, id0.wrapping_add(k as u16));
            put16(seg, inner + 10, 0);
            let c = !fold(sum(&seg[inner..layout.inner_end]));
            put16(seg, inner + 10, c);
        } else {
            put16(seg, inner + 4, (total - inner - 40) as u16);
        }
        // TCP: sequence number, FIN and PSH only on the last segment, CWR only on the first.
        let th = layout.th;
        put32(seg, th + 4, seq0.wrapping_add((k * mss) as u32));
        let mut f = flags0;
        if !last {
            f &= !(0x01 | 0x08);
        }
        if k != 0 {
            f &= !0x80;
        }
        seg[th + 13] = f;
        put16(seg, th + 16, 0);
        let payload_sum = sum(chunk);
        let tcp_len = total - th;
        let pseudo = if layout.inner_v4 {
            pseudo4(seg, inner, 6, tcp_len)
        } else {
            pseudo6(seg, inner, 6, tcp_len)
        };
        let c = !fold(pseudo + sum(&seg[th..layout.end]) + shifted(payload_sum, layout.end - th));
        put16(seg, th + 16, if c == 0 { 0xffff } else { c });
        if tunnel {
            let uh = layout.outer_th;
            let udp_len = total - uh;
            if layout.outer_v4 {
                put16(seg, 2, total as u16);
                if let Some(id0) = outer_id0 {
                    put16(seg, 4, id0.wrapping_add(k as u16));
                }
                put16(seg, 10, 0);
                let c = !fold(sum(&seg[..layout.outer_ip_end]));
                put16(seg, 10, c);
            } else {
                put16(seg, 4, (total - 40) as u16);
            }
            put16(seg, uh + 4, udp_len as u16);
            if layout.outer_csum {
                put16(seg, uh + 6, 0);
                let pseudo = if layout.outer_v4 {
                    pseudo4(seg, 0, 17, udp_len)
                } else {
                    pseudo6(seg, 0, 17, udp_len)
                };
                let c = !fold(
                    pseudo + sum(&seg[uh..layout.end]) + shifted(payload_sum, layout.end - uh),
                );
                // A UDP checksum of 0 means "none": send its other form (RFC 768).
                put16(seg, uh + 6, if c == 0 { 0xffff } else { c });
            }
        }
        each(seg);
    }
    Ok(n)
}

/// Where the headers of a GSO packet are.
struct Layout {
    /// The packet's first IP header is IPv4 (else IPv6).
    outer_v4: bool,
    /// End of that header.
    outer_ip_end: usize,
    /// Tunnel: the outer UDP header.
    outer_th: usize,
    /// Tunnel: the outer UDP header carries a checksum.
    outer_csum: bool,
    /// The IP header in front of TCP (the first one unless tunneled).
    inner: usize,
    inner_v4: bool,
    inner_end: usize,
    /// The TCP header, and where its payload starts.
    th: usize,
    end: usize,
}

impl Layout {
    fn of(hdr: &Header, pkt: &[u8], v4: bool, tunnel: bool) -> Result<Layout, SplitError> {
        let ip_end = |at: usize, want_v4: bool| -> Result<usize, SplitError> {
            let b = *pkt.get(at).ok_or(SplitError::Truncated)?;
            match (b >> 4, want_v4) {
                (4, true) => {
                    let end = at + usize::from(b & 0x0f) * 4;
                    if end < at + 20 {
                        return Err(SplitError::Unsupported("IPv4 header shorter than 20 bytes"));
                    }
                    (end <= pkt.len())
                        .then_some(end)
                        .ok_or(SplitError::Truncated)
                }
                (6, false) => {
                    let end = at + 40;
                    (end <= pkt.len())
                        .then_some(end)
                        .ok_or(SplitError::Truncated)
                }
                _ => Err(SplitError::Unsupported(
                    "IP version not the one the header names",
                )),
            }
        };
        let outer_v4 = pkt.first().map(|b| b >> 4) == Some(4);
        let outer_ip_end = ip_end(0, outer_v4)?;
        let (outer_th, inner) = if tunnel {
            let uh = usize::from(hdr.outer_th_offset);
            let inner = usize::from(hdr.inner_nh_offset);
            if uh < outer_ip_end || uh + 8 > inner {
                return Err(SplitError::Unsupported("tunnel offsets out of order"));
            }
            (uh, inner)
        } else {
            (0, 0)
        };
        let inner_end = ip_end(inner, v4)?;
        let th = usize::from(hdr.csum_start);
        if th < inner_end || th + 20 > pkt.len() {
            return Err(SplitError::Truncated);
        }
        // Only a header without extensions: the next header/protocol field names TCP.
        let proto = if v4 { pkt[inner + 9] } else { pkt[inner + 6] };
        if proto != 6 || th != inner_end {
            return Err(SplitError::Unsupported(
                "IP options or extension headers before TCP",
            ));
        }
        let end = th + usize::from(pkt[th + 12] >> 4) * 4;
        if end < th + 20 || end > pkt.len() {
            return Err(SplitError::Truncated);
        }
        let outer_csum = tunnel && hdr.flags & F_UDP_TUNNEL_CSUM != 0;
        Ok(Layout {
            outer_v4,
            outer_ip_end,
            outer_th,
            outer_csum,
            inner,
            inner_v4: v4,
            inner_end,
            th,
            end,
        })
    }
}

/// Completes a partial checksum the way a NIC would: the field holds the pseudo-header's sum;
/// the checksum is then that of everything from `start` to the end.
fn complete_checksum(pkt: &mut [u8], start: usize, offset: usize) -> Result<(), SplitError> {
    let at = start.checked_add(offset).ok_or(SplitError::Truncated)?;
    if at + 2 > pkt.len() || start > pkt.len() {
        return Err(SplitError::Truncated);
    }
    let c = !fold(sum(&pkt[start..]));
    put16(pkt, at, if c == 0 { 0xffff } else { c });
    Ok(())
}

/// The ones'-complement sum of `b` read as big-endian 16-bit words (a last odd byte padded
/// with zero), not yet folded. Eight bytes at a time: 2–3 GB/s on one core, so a 64 KiB
/// aggregate's checksums cost well under the encryption of it.
fn sum(b: &[u8]) -> u64 {
    let mut acc: u64 = 0;
    let mut words = b.chunks_exact(8);
    for w in &mut words {
        // Two 32-bit big-endian halves added into 64 bits cannot overflow for any packet.
        acc += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
        acc += u64::from(u32::from_be_bytes([w[4], w[5], w[6], w[7]]));
    }
    let rest = words.remainder();
    let mut pairs = rest.chunks_exact(2);
    for p in &mut pairs {
        acc += u64::from(u16::from_be_bytes([p[0], p[1]]));
    }
    if let [last] = pairs.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

/// Folds a sum to 16 bits (end-around carry).
fn fold(mut s: u64) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// A sum taken from an even position, as it counts when its bytes start at an odd distance
/// from the start of the checksummed part (the bytes of each word swap).
fn shifted(s: u64, distance: usize) -> u64 {
    if distance.is_multiple_of(2) {
        s
    } else {
        u64::from(fold(s).swap_bytes())
    }
}

fn pseudo4(p: &[u8], ip: usize, proto: u8, len: usize) -> u64 {
    sum(&p[ip + 12..ip + 20]) + u64::from(proto) + len as u64
}

fn pseudo6(p: &[u8], ip: usize, proto: u8, len: usize) -> u64 {
    sum(&p[ip + 8..ip + 40]) + u64::from(proto) + (len as u64 >> 16) + (len as u64 & 0xffff)
}

fn be16(p: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([p[at], p[at + 1]])
}

fn be32(p: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]])
}

fn put16(p: &mut [u8], at: usize, v: u16) {
    p[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

fn put32(p: &mut [u8], at: usize, v: u32) {
    p[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook checksum, word by word, to check the fast one against.
    fn naive(parts: &[&[u8]]) -> u16 {
        let all: Vec<u8> = parts.concat();
        let mut s: u32 = 0;
        for w in all.chunks(2) {
            let v = if w.len() == 2 {
                u16::from_be_bytes([w[0], w[1]])
            } else {
                u16::from_be_bytes([w[0], 0])
            };
            s += u32::from(v);
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    fn ipv4(len: usize, proto: u8, src: [u8; 4], dst: [u8; 4], id: u16) -> Vec<u8> {
        let mut h = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0];
        h[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        h[4..6].copy_from_slice(&id.to_be_bytes());
        h.extend_from_slice(&src);
        h.extend_from_slice(&dst);
        h
    }

    fn ipv6(payload: usize, next: u8, src: u8, dst: u8) -> Vec<u8> {
        let mut h = vec![0x60, 0, 0, 0];
        h.extend_from_slice(&(payload as u16).to_be_bytes());
        h.extend_from_slice(&[next, 64]);
        let mut a = [0u8; 16];
        a[0] = 0xfd;
        a[15] = src;
        h.extend_from_slice(&a);
        a[15] = dst;
        h.extend_from_slice(&a);
        h
    }

    fn tcp(seq: u32, flags: u8, partial: u16) -> Vec<u8> {
        let mut t = vec![0x30, 0x39, 0x00, 0x50];
        t.extend_from_slice(&seq.to_be_bytes());
        t.extend_from_slice(&[0, 0, 0, 1, 0x80, flags, 0xff, 0xff]);
        t.extend_from_slice(&partial.to_be_bytes());
        t.extend_from_slice(&[0, 0]);
        // 12 bytes of options (NOP NOP timestamps), as Linux sends them: doff 8.
        t.extend_from_slice(&[1, 1, 8, 10, 0, 0, 0, 7, 0, 0, 0, 9]);
        t
    }

    fn payload(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    /// A VXLAN-over-IPv6 aggregate as the tun hands it out: outer IPv6, UDP (4789), VXLAN,
    /// Ethernet, inner IPv4 or IPv6, TCP with options, `n` payload bytes.
    fn tunneled(inner_v4: bool, n: usize, flags: u8) -> (Header, Vec<u8>) {
        let data = payload(n);
        let t = tcp(1_000_000, flags, 0x1234);
        let inner_ip = if inner_v4 {
            ipv4(20 + t.len() + n, 6, [10, 50, 0, 2], [10, 50, 0, 3], 77)
        } else {
            ipv6(t.len() + n, 6, 2, 3)
        };
        let mut eth = vec![2, 0, 0, 0, 0, 3, 2, 0, 0, 0, 0, 2];
        eth.extend_from_slice(if inner_v4 {
            &[0x08, 0x00]
        } else {
            &[0x86, 0xdd]
        });
        let vx = [8u8, 0, 0, 0, 0, 0, 42, 0];
        let udp_len = 8 + vx.len() + eth.len() + inner_ip.len() + t.len() + n;
        let mut udp = vec![0xc0, 0x00, 0x12, 0xb5];
        udp.extend_from_slice(&(udp_len as u16).to_be_bytes());
        udp.extend_from_slice(&[0xab, 0xcd]);
        let outer = ipv6(udp_len, 17, 1, 2);
        let pkt = [
            outer.clone(),
            udp,
            vx.to_vec(),
            eth,
            inner_ip.clone(),
            t,
            data,
        ]
        .concat();
        let inner_nh = 40 + 8 + 8 + 14;
        let kind = if inner_v4 { GSO_TCPV4 } else { GSO_TCPV6 };
        let h = Header {
            flags: F_NEEDS_CSUM | F_UDP_TUNNEL_CSUM,
            gso_type: kind | GSO_UDP_TUNNEL_IPV6,
            gso_size: 1318,
            csum_start: (inner_nh + inner_ip.len()) as u16,
            csum_offset: 16,
            outer_th_offset: 40,
            inner_nh_offset: inner_nh as u16,
        };
        (h, pkt)
    }

    fn segments(h: &Header, pkt: &[u8]) -> Result<Vec<Vec<u8>>, SplitError> {
        let mut out = Vec::new();
        let mut p = pkt.to_vec();
        let n = split(h, &mut p, &mut Vec::new(), |s| out.push(s.to_vec()))?;
        assert_eq!(n, out.len());
        Ok(out)
    }

    fn check_segments(inner_v4: bool, n: usize, flags: u8) {
        let (h, pkt) = tunneled(inner_v4, n, flags);
        let segs = segments(&h, &pkt).expect("a well-formed aggregate splits");
        let mss = usize::from(h.gso_size);
        assert_eq!(segs.len(), n.div_ceil(mss).max(1));
        let th = usize::from(h.csum_start);
        let hend = th + 32;
        let inner = usize::from(h.inner_nh_offset);
        let mut rebuilt = Vec::new();
        for (k, s) in segs.iter().enumerate() {
            let last = k + 1 == segs.len();
            let data = &s[hend..];
            assert_eq!(data.len(), if last { n - k * mss } else { mss });
            rebuilt.extend_from_slice(data);
            // Outer IPv6 and UDP lengths.
            assert_eq!(be16(s, 4) as usize, s.len() - 40);
            assert_eq!(be16(s, 44) as usize, s.len() - 40);
            // Outer UDP checksum: pseudo-header + UDP part sums to 0xffff.
            let ulen = ((s.len() - 40) as u32).to_be_bytes();
            assert_eq!(
                naive(&[&s[8..40], &ulen, &[0, 17], &s[40..]]),
                0xffff,
                "outer UDP, segment {k}"
            );
            assert_ne!(be16(s, 46), 0);
            // Inner IP and TCP.
            let tlen = s.len() - th;
            if inner_v4 {
                assert_eq!(be16(s, inner + 2) as usize, s.len() - inner);
                assert_eq!(be16(s, inner + 4), 77u16.wrapping_add(k as u16));
                assert_eq!(naive(&[&s[inner..th]]), 0xffff, "IPv4 header, segment {k}");
                let l = (tlen as u16).to_be_bytes();
                assert_eq!(
                    naive(&[&s[inner + 12..inner + 20], &[0, 6], &l, &s[th..]]),
                    0xffff,
                    "TCP, segment {k}"
                );
            } else {
                assert_eq!(be16(s, inner + 4) as usize, s.len() - inner - 40);
                let l = (tlen as u32).to_be_bytes();
                assert_eq!(
                    naive(&[&s[inner + 8..inner + 40], &l, &[0, 6], &s[th..]]),
                    0xffff,
                    "TCP, segment {k}"
                );
            }
            assert_eq!(be32(s, th + 4), 1_000_000 + (k * mss) as u32);
            let f = s[th + 13];
            assert_eq!(
                f & 0x01 != 0,
                last && flags & 0x01 != 0,
                "FIN only on the last"
            );
            assert_eq!(
                f & 0x08 != 0,
                last && flags & 0x08 != 0,
                "PSH only on the last"
            );
            assert_eq!(
                f & 0x80 != 0,
                k == 0 && flags & 0x80 != 0,
                "CWR only on the first"
            );
            assert_eq!(f & 0x10, flags & 0x10, "ACK on every segment");
        }
        assert_eq!(rebuilt, payload(n), "the payload, in order, whole");
    }

    #[test]
    fn a_tunneled_aggregate_becomes_wire_segments_with_valid_checksums() {
        for n in [1, 1317, 1318, 1319, 5000, 64_000] {
            check_segments(true, n, 0x10 | 0x08);
            check_segments(false, n, 0x10 | 0x08 | 0x01 | 0x80);
        }
    }

    #[test]
    fn the_fast_sum_is_the_textbook_one() {
        let d = payload(3001);
        for len in [0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 1500, 3001] {
            for start in [0, 1, 2, 3] {
                let b = &d[start..len.max(start)];
                assert_eq!(fold(sum(b)), naive(&[b]), "len {len} from {start}");
            }
        }
        // An odd distance: the same bytes counted from one byte further on.
        let b = &d[..100];
        let whole = naive(&[&[0u8][..], b]);
        assert_eq!(fold(shifted(sum(b), 1)), whole);
    }

    #[test]
    fn one_packet_has_its_partial_checksum_completed() {
        // An IPv6/UDP datagram whose checksum field holds the pseudo-header's sum only.
        let data = payload(333);
        let ulen = 8 + data.len();
        let mut p = ipv6(ulen, 17, 1, 2);
        p.extend_from_slice(&[0x12, 0xb5, 0x12, 0xb5]);
        p.extend_from_slice(&(ulen as u16).to_be_bytes());
        let l = (ulen as u32).to_be_bytes();
        let partial = fold(sum(&p[8..40]) + sum(&l) + 17);
        p.extend_from_slice(&partial.to_be_bytes());
        p.extend_from_slice(&data);
        let h = Header {
            flags: F_NEEDS_CSUM,
            csum_start: 40,
            csum_offset: 6,
            ..Header::default()
        };
        let out = segments(&h, &p).expect("completes");
        assert_eq!(out.len(), 1);
        let s = &out[0];
        assert_eq!(naive(&[&s[8..40], &l, &[0, 17], &s[40..]]), 0xffff);
        // Without the flag the packet goes on untouched.
        let h = Header::default();
        assert_eq!(segments(&h, &p).expect("passes"), vec![p.clone()]);
    }

    #[test]
    fn the_header_is_read_where_the_kernel_writes_it() {
        let mut b = [0u8; HDR_LEN];
        b[0] = F_NEEDS_CSUM | F_UDP_TUNNEL_CSUM;
        b[1] = GSO_TCPV4 | GSO_UDP_TUNNEL_IPV6;
        b[2..4].copy_from_slice(&122u16.to_ne_bytes());
        b[4..6].copy_from_slice(&1318u16.to_ne_bytes());
        b[6..8].copy_from_slice(&90u16.to_ne_bytes());
        b[8..10].copy_from_slice(&16u16.to_ne_bytes());
        b[20..22].copy_from_slice(&40u16.to_ne_bytes());
        b[22..24].copy_from_slice(&70u16.to_ne_bytes());
        let h = Header::parse(&b).expect("24 bytes");
        assert_eq!(
            h,
            Header {
                flags: 9,
                gso_type: 0x41,
                gso_size: 1318,
                csum_start: 90,
                csum_offset: 16,
                outer_th_offset: 40,
                inner_nh_offset: 70,
            }
        );
        assert!(Header::parse(&b[..23]).is_none());
    }

    #[test]
    fn hostile_packets_are_refused_without_panicking() {
        let (h, pkt) = tunneled(true, 4000, 0x18);
        // Every truncation, with the header unchanged.
        for cut in 0..pkt.len().min(200) {
            let _ = segments(&h, &pkt[..cut]);
        }
        // Offsets pointing anywhere.
        for v in [0u16, 1, 39, 41, 69, 71, 89, 91, 4000, u16::MAX] {
            for f in 0..4 {
                let mut bad = h;
                match f {
                    0 => bad.csum_start = v,
                    1 => bad.outer_th_offset = v,
                    2 => bad.inner_nh_offset = v,
                    _ => bad.csum_offset = v,
                }
                let _ = segments(&bad, &pkt);
                bad.gso_type = 0;
                bad.flags = F_NEEDS_CSUM;
                let _ = segments(&bad, &pkt);
            }
        }
        let mut zero = h;
        zero.gso_size = 0;
        assert!(segments(&zero, &pkt).is_err());
        let mut udp = h;
        udp.gso_type = 5 | GSO_UDP_TUNNEL_IPV6;
        assert!(matches!(
            segments(&udp, &pkt),
            Err(SplitError::Unsupported(_))
        ));
        // The header saying IPv6 inside when IPv4 is there.
        let mut v6 = h;
        v6.gso_type = GSO_TCPV6 | GSO_UDP_TUNNEL_IPV6;
        assert!(segments(&v6, &pkt).is_err());
        // A TCP data offset beyond the packet.
        let mut p = pkt.clone();
        let th = usize::from(h.csum_start);
        p.truncate(th + 20);
        p[th + 12] = 0xf0;
        assert_eq!(segments(&h, &p), Err(SplitError::Truncated));
    }
}
