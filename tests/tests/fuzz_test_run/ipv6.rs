//! IPv6 in the fuzz: an independent statement of what the datapath reads of an IPv6
//! packet (the extension-header walk, the guard's ICMPv6 and DHCPv6 view) and crafted
//! IPv6 frames from endpoints — their own addresses and forged ones, router and
//! neighbour messages, extension-header chains within and beyond the bound, fragments.

use super::*;

const HOP_BY_HOP: u8 = 0;
const ROUTING: u8 = 43;
const FRAGMENT: u8 = 44;
const AH: u8 = 51;
const DEST_OPTS: u8 = 60;
pub(super) const ICMP6: u8 = 58;

/// The link-local address Linux forms for `mac` (modified EUI-64), written out here
/// independently of netpath-common.
pub(super) fn link_local(mac: [u8; 6]) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[0] = 0xfe;
    a[1] = 0x80;
    a[8] = mac[0] ^ 2;
    a[9] = mac[1];
    a[10] = mac[2];
    a[11] = 0xff;
    a[12] = 0xfe;
    a[13..].copy_from_slice(&mac[3..]);
    a
}

pub(super) fn addr6(f: &[u8], at: usize) -> [u8; 16] {
    f[at..at + 16].try_into().unwrap()
}

/// What the datapath makes of an IPv6 frame from an endpoint.
pub(super) enum V6 {
    /// It cannot be checked: refused from an endpoint.
    Unparsed,
    Packet {
        src: [u8; 16],
        dst: [u8; 16],
        /// The L4 protocol and offset (`None`: a later fragment).
        l4: Option<(u8, usize)>,
        /// A first fragment (offset 0, more to come): its L4 header is there, but it is
        /// no whole packet the NAT may translate.
        fragment: bool,
    },
}

/// The specification of the walk: version 6, the payload inside the frame, at most
/// four extension headers of at most 64 bytes together, the L4 header whole.
pub(super) fn parse_ip6(f: &[u8]) -> V6 {
    if f.len() < 54 || f[14] >> 4 != 6 {
        return V6::Unparsed;
    }
    let end = 54 + usize::from(be16(f, 18));
    if end > f.len() {
        return V6::Unparsed;
    }
    let (src, dst) = (addr6(f, 22), addr6(f, 38));
    let (mut next, mut at, mut walked, mut fragment) = (f[20], 54usize, 0, false);
    while matches!(next, HOP_BY_HOP | ROUTING | FRAGMENT | AH | DEST_OPTS) {
        if walked == 4 || at + 4 > f.len() {
            return V6::Unparsed;
        }
        let len = match next {
            FRAGMENT if be16(f, at + 2) & 0xfff8 != 0 => {
                return V6::Packet {
                    src,
                    dst,
                    l4: None,
                    fragment: true,
                };
            }
            FRAGMENT => {
                // An atomic fragment (offset 0, no more to come) is whole.
                fragment = be16(f, at + 2) & 1 != 0;
                8
            }
            AH => (usize::from(f[at + 1]) + 2) * 4,
            _ => (usize::from(f[at + 1]) + 1) * 8,
        };
        next = f[at];
        at += len;
        walked += 1;
        if at > 54 + 64 {
            return V6::Unparsed;
        }
    }
    let need = match next {
        TCP => 20,
        UDP | ICMP6 => 8,
        _ => 0,
    };
    if at > end || (need > 0 && (at + need > end || at + need > f.len())) {
        return V6::Unparsed;
    }
    V6::Packet {
        src,
        dst,
        l4: Some((next, at)),
        fragment,
    }
}

/// The link-layer address of the first ND option of type `want` among three within 32
/// bytes of `first` (zero: none).
fn nd_lladdr(f: &[u8], first: usize, want: u8) -> [u8; 6] {
    let mut at = first;
    for _ in 0..3 {
        if at + 8 > first + 32 || at + 8 > f.len() || f[at + 1] == 0 {
            break;
        }
        if f[at] == want && f[at + 1] == 1 {
            return f[at + 2..at + 8].try_into().unwrap();
        }
        at += usize::from(f[at + 1]) * 8;
    }
    [0; 6]
}

/// Whether the guard refuses an IPv6 packet from `from` (dual-stack): a source not its
/// own (but `::` for DAD and MLD), router messages, DHCPv6 servers, neighbour discovery
/// for another's address or MAC, and what it cannot read. `owns`: the global addresses
/// the model registered for `from`.
pub(super) fn refused(
    from: &EndpointValue,
    f: &[u8],
    src: [u8; 16],
    l4: Option<(u8, usize)>,
    owns: impl Fn([u8; 16]) -> bool,
) -> bool {
    let own = |a: [u8; 16]| a == link_local(from.mac) || owns(a);
    let mac_ok = |m: [u8; 6]| m == [0; 6] || m == from.mac;
    let Some((proto, at)) = l4 else {
        return !own(src);
    };
    let (unspecified_ok, forbidden) = match proto {
        ICMP6 => match f[at] {
            134 | 137 => (false, true),
            135 => (true, !mac_ok(nd_lladdr(f, at + 24, 1))),
            136 if at + 24 > f.len() => return true,
            136 => (
                false,
                !own(addr6(f, at + 8)) || !mac_ok(nd_lladdr(f, at + 24, 2)),
            ),
            131 | 143 => (true, false),
            _ => (false, false),
        },
        UDP => (false, be16(f, at) == 547),
        _ => (false, false),
    };
    let source_ok = own(src) || (unspecified_ok && src == [0; 16]);
    !source_ok || forbidden
}

/// An extension header of 8 bytes (PadN options) leading to `next`.
fn ext8(next: u8) -> [u8; 8] {
    [next, 0, 1, 4, 0, 0, 0, 0]
}

impl Gen {
    /// A valid IPv6 frame of a random kind from `eth_src`/`src` to `dst`, aimed at the
    /// guard and the fast path: TCP, UDP (some from the DHCPv6 server port), echo, router
    /// and neighbour messages (for `src`'s own address or another), extension-header
    /// chains within and beyond the bound, fragments.
    pub(super) fn base6(
        &mut self,
        eth_src: [u8; 6],
        src: [u8; 16],
        dst: [u8; 16],
        other: [u8; 16],
    ) -> Vec<u8> {
        let payload = self.payload();
        let (sport, dport) = (self.port(), self.port());
        let (mut next, l4) = match self.rng.random_range(0..100) {
            0..25 => (TCP, tcp_header(sport, dport, 0x18, &payload)),
            25..45 => {
                let sport = if self.chance(0.2) { 547 } else { sport };
                (UDP, udp_header(sport, dport, &payload))
            }
            45..55 => (ICMP6, icmp_header(128, 0, [0, 1, 0, 1], &payload)),
            55..62 => (
                ICMP6,
                icmp_header(self.pick(&[134, 137, 133]), 0, [0; 4], &[0; 12]),
            ),
            62..80 => {
                // Neighbour solicitation or advertisement: a target, maybe options.
                let ty = self.pick(&[135u8, 136]);
                let mut body = self.pick(&[src, dst, other]).to_vec();
                if self.chance(0.6) {
                    if self.chance(0.3) {
                        body.extend_from_slice(&[14, 1, 1, 2, 3, 4, 5, 6]); // a nonce
                    }
                    let mac = if self.chance(0.7) {
                        eth_src
                    } else {
                        [2, 0, 0, 0, 0, 0x77]
                    };
                    body.extend_from_slice(&[ty - 134, 1]);
                    body.extend_from_slice(&mac);
                }
                (ICMP6, icmp_header(ty, 0, [0x60, 0, 0, 0], &body))
            }
            80..85 => (ICMP6, icmp_header(143, 0, [0; 4], &[0; 20])),
            _ => (self.pick(&[132u8, 59]), payload.clone()),
        };
        // Extension headers: none mostly; a chain of up to five; a fragment header.
        let mut ext = Vec::new();
        if self.chance(0.25) {
            let n = self.rng.random_range(1..=5);
            let mut chain: Vec<u8> = (0..n)
                .map(|_| self.pick(&[HOP_BY_HOP, DEST_OPTS, ROUTING, FRAGMENT]))
                .collect();
            chain.push(next);
            for w in chain.windows(2).rev() {
                let mut h = ext8(w[1]).to_vec();
                if w[0] == FRAGMENT {
                    let offset: u16 = if self.chance(0.5) {
                        0
                    } else {
                        self.rng.random_range(1..0x1fff)
                    };
                    let more = u16::from(self.chance(0.7));
                    h[2..4].copy_from_slice(&((offset << 3) | more).to_be_bytes());
                }
                h.extend_from_slice(&ext);
                ext = h;
            }
            next = chain[0];
        }
        let mut f = ethernet(ETH_DST, eth_src, 0x86dd);
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&((ext.len() + l4.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[next, 64]);
        f.extend_from_slice(&src);
        f.extend_from_slice(&dst);
        f.extend_from_slice(&ext);
        f.extend_from_slice(&l4);
        f
    }
}
