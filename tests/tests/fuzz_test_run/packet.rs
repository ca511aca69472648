//! An independent RFC 1071 checksum (deliberately not netpath-common's), an
//! independent parser of what the datapath treats as IPv4, and crafted frames.

use super::*;

pub(super) fn sum_be(data: &[u8], mut acc: u64) -> u64 {
    for (i, b) in data.iter().enumerate() {
        acc += if i % 2 == 0 {
            u64::from(*b) << 8
        } else {
            u64::from(*b)
        };
    }
    acc
}

/// Complemented 16-bit fold; 0 when `acc` is the sum of data holding a valid checksum.
pub(super) fn fold_not(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

pub(super) fn be16(f: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([f[at], f[at + 1]])
}

pub(super) fn addr(f: &[u8], at: usize) -> [u8; 4] {
    [f[at], f[at + 1], f[at + 2], f[at + 3]]
}

// ---------------------------------------------------------------------------------------
// An independent parser: what the datapath is specified to treat as IPv4.

#[derive(Clone, Copy, Debug)]
pub(super) struct Ip {
    pub(super) ihl: usize,
    pub(super) total: usize,
    pub(super) proto: u8,
    pub(super) fragment: bool,
    pub(super) src: [u8; 4],
    pub(super) dst: [u8; 4],
}

impl Ip {
    pub(super) fn l4(&self) -> usize {
        14 + self.ihl
    }
    pub(super) fn l4_len(&self) -> usize {
        self.total - self.ihl
    }
    /// The minimum L4 header the datapath needs before it touches TCP/UDP/ICMP.
    pub(super) fn l4_fits(&self) -> bool {
        match self.proto {
            TCP => self.l4_len() >= 20,
            UDP | ICMP => self.l4_len() >= 8,
            _ => true,
        }
    }
}

/// A well-formed IPv4 frame (fragments and any protocol included): IPv4 ethertype,
/// version 4, IHL ≥ 5, total length ≥ header, the whole datagram inside the frame.
pub(super) fn parse_ip(f: &[u8]) -> Option<Ip> {
    if f.len() < 34 || be16(f, 12) != 0x0800 || f[14] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(f[14] & 0x0f) * 4;
    let total = usize::from(be16(f, 16));
    if ihl < 20 || total < ihl || 14 + ihl > f.len() || 14 + total > f.len() {
        return None;
    }
    Some(Ip {
        ihl,
        total,
        proto: f[23],
        fragment: be16(f, 20) & 0x3fff != 0,
        src: addr(f, 26),
        dst: addr(f, 30),
    })
}

/// A TCP/UDP/ICMP packet the NAT may rewrite: not a fragment, header complete.
pub(super) fn nat_ip(f: &[u8]) -> Option<Ip> {
    parse_ip(f).filter(|ip| !ip.fragment && matches!(ip.proto, TCP | UDP | ICMP) && ip.l4_fits())
}

pub(super) fn ip_header_valid(f: &[u8], ip: &Ip) -> bool {
    fold_not(sum_be(&f[14..14 + ip.ihl], 0)) == 0
}

/// Offset of the L4 checksum field.
pub(super) fn l4_csum_at(ip: &Ip) -> usize {
    ip.l4()
        + match ip.proto {
            TCP => 16,
            UDP => 6,
            _ => 2,
        }
}

/// The one's-complement sum over the L4 data (with the pseudo-header for TCP/UDP),
/// the checksum field included: `fold_not` of it is 0 for a valid checksum.
pub(super) fn l4_sum(f: &[u8], ip: &Ip) -> u64 {
    let data = &f[ip.l4()..14 + ip.total];
    if ip.proto == ICMP {
        return sum_be(data, 0);
    }
    let mut pseudo = [0u8; 12];
    pseudo[..4].copy_from_slice(&ip.src);
    pseudo[4..8].copy_from_slice(&ip.dst);
    pseudo[9] = ip.proto;
    pseudo[10..].copy_from_slice(&(data.len() as u16).to_be_bytes());
    sum_be(data, sum_be(&pseudo, 0))
}

/// TCP/UDP/ICMP checksum valid (a zero UDP checksum — "none" — counts as valid).
pub(super) fn l4_valid(f: &[u8], ip: &Ip) -> bool {
    if ip.proto == UDP && be16(f, l4_csum_at(ip)) == 0 {
        return true;
    }
    fold_not(l4_sum(f, ip)) == 0
}

/// Recomputes the IPv4 header checksum and, for a non-fragment TCP/UDP/ICMP datagram,
/// the L4 checksum. A zero UDP checksum stays zero unless `udp_compute` (then a
/// computed 0 is sent as 0xffff).
pub(super) fn fix_checksums(f: &mut [u8], udp_compute: bool) {
    if let Some(ip) = parse_ip(f)
        && !ip.fragment
    {
        let min = match ip.proto {
            TCP => 20,
            UDP => 8,
            ICMP => 4,
            _ => usize::MAX,
        };
        if ip.l4_len() >= min {
            let at = l4_csum_at(&ip);
            let keep_zero = ip.proto == UDP && !udp_compute && be16(f, at) == 0;
            if !keep_zero {
                f[at..at + 2].copy_from_slice(&[0, 0]);
                let mut c = fold_not(l4_sum(f, &ip));
                if ip.proto == UDP && c == 0 {
                    c = 0xffff;
                }
                f[at..at + 2].copy_from_slice(&c.to_be_bytes());
            }
        }
    }
    if f.len() >= 34 && be16(f, 12) == 0x0800 {
        let ihl = usize::from(f[14] & 0x0f) * 4;
        if ihl >= 20 && 14 + ihl <= f.len() {
            f[24..26].copy_from_slice(&[0, 0]);
            let c = fold_not(sum_be(&f[14..14 + ihl], 0));
            f[24..26].copy_from_slice(&c.to_be_bytes());
        }
    }
}

// ---------------------------------------------------------------------------------------
// Crafted frames.

pub(super) const ETH_DST: [u8; 6] = [0x02, 0xee, 0, 0, 0, 1];

pub(super) fn ethernet(dst: [u8; 6], src: [u8; 6], ethertype: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(256);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

pub(super) struct Ipv4Spec<'a> {
    pub(super) src: [u8; 4],
    pub(super) dst: [u8; 4],
    pub(super) proto: u8,
    pub(super) frag: u16,
    pub(super) options: &'a [u8],
}

pub(super) fn ipv4_header(s: &Ipv4Spec, l4_len: usize) -> Vec<u8> {
    let ihl = 20 + s.options.len();
    let mut ip = vec![0x40 | (ihl / 4) as u8, 0];
    ip.extend_from_slice(&((ihl + l4_len) as u16).to_be_bytes());
    ip.extend_from_slice(&[0x5a, 0xa5]);
    ip.extend_from_slice(&s.frag.to_be_bytes());
    ip.extend_from_slice(&[64, s.proto, 0, 0]);
    ip.extend_from_slice(&s.src);
    ip.extend_from_slice(&s.dst);
    ip.extend_from_slice(s.options);
    ip
}

pub(super) fn tcp_header(sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(20 + payload.len());
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&0x1122_3344u32.to_be_bytes());
    t.extend_from_slice(&(if flags & 0x10 != 0 { 0x5566_7788u32 } else { 0 }).to_be_bytes());
    t.extend_from_slice(&[0x50, flags, 0xfa, 0xf0, 0, 0, 0, 0]);
    t.extend_from_slice(payload);
    t
}

pub(super) fn udp_header(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::with_capacity(8 + payload.len());
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

pub(super) fn icmp_header(kind: u8, code: u8, rest: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut i = vec![kind, code, 0, 0];
    i.extend_from_slice(&rest);
    i.extend_from_slice(payload);
    i
}

/// Ethernet + IPv4 + `l4`, checksums computed (a UDP checksum only if `udp_csum`).
pub(super) fn ipv4_frame(eth_src: [u8; 6], s: &Ipv4Spec, l4: &[u8], udp_csum: bool) -> Vec<u8> {
    let mut f = ethernet(ETH_DST, eth_src, 0x0800);
    f.extend_from_slice(&ipv4_header(s, l4.len()));
    f.extend_from_slice(l4);
    fix_checksums(&mut f, udp_csum);
    f
}
