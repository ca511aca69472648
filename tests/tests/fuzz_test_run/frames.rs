//! Frame generation: valid crafted frames aimed at the NAT tables, then mutated.

use super::*;

pub(super) struct Gen {
    pub(super) rng: StdRng,
}

impl Gen {
    pub(super) fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.rng.random_range(0..xs.len())]
    }
    pub(super) fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }
    pub(super) fn port(&mut self) -> u16 {
        match self.rng.random_range(0..10) {
            0..5 => self.pick(&PORTS),
            5..8 => 50000 + self.rng.random_range(0..64),
            _ => self.rng.random(),
        }
    }
    pub(super) fn payload(&mut self) -> Vec<u8> {
        let n = match self.rng.random_range(0..4) {
            0 => 0,
            1 => self.rng.random_range(1..8),
            2 => self.rng.random_range(8..64),
            _ => self.rng.random_range(64..400),
        };
        (0..n).map(|_| self.rng.random()).collect()
    }
    pub(super) fn options(&mut self) -> Vec<u8> {
        let words = self.rng.random_range(1..=10);
        let mut o: Vec<u8> = (0..words * 4).map(|_| self.rng.random()).collect();
        if self.chance(0.5) {
            o.fill(1); // NOPs
            let last = o.len() - 1;
            o[last] = 0; // end of options
        }
        o
    }
    pub(super) fn masq_src(&mut self, m: &Model) -> [u8; 4] {
        match self.rng.random_range(0..5) {
            0..3 => self.pick(&m.endpoints).0.ip,
            3 => [10, 200, self.rng.random_range(0..4), self.rng.random()],
            _ => [10, 201, 0, self.rng.random_range(1..8)],
        }
    }
    pub(super) fn any_addr(&mut self) -> [u8; 4] {
        match self.rng.random_range(0..6) {
            0 => UPLINK_ADDR,
            1 => FOREIGN,
            2 => [10, 200, 0, self.rng.random_range(1..6)],
            3 => [127, 0, 0, 1],
            _ => self.rng.random(),
        }
    }

    /// A valid base frame of a random kind, between the given endpoints.
    pub(super) fn base(
        &mut self,
        eth_src: [u8; 6],
        src: [u8; 4],
        sport: u16,
        dst: [u8; 4],
        dport: u16,
        icmp_type: u8,
    ) -> Vec<u8> {
        let payload = self.payload();
        let plain = |proto| Ipv4Spec {
            src,
            dst,
            proto,
            frag: if proto == TCP { 0x4000 } else { 0 },
            options: &[],
        };
        match self.rng.random_range(0..100) {
            0..14 => ipv4_frame(
                eth_src,
                &plain(TCP),
                &tcp_header(sport, dport, 0x02, &payload),
                false,
            ),
            14..28 => ipv4_frame(
                eth_src,
                &plain(TCP),
                &tcp_header(sport, dport, 0x18, &payload),
                false,
            ),
            28..42 => ipv4_frame(
                eth_src,
                &plain(UDP),
                &udp_header(sport, dport, &payload),
                true,
            ),
            42..50 => ipv4_frame(
                eth_src,
                &plain(UDP),
                &udp_header(sport, dport, &payload),
                false,
            ),
            50..64 => {
                let id = if icmp_type == 0 { dport } else { sport };
                let mut rest = [0u8; 4];
                rest[..2].copy_from_slice(&id.to_be_bytes());
                rest[2..].copy_from_slice(&self.rng.random::<u16>().to_be_bytes());
                let kind = if self.chance(0.85) {
                    icmp_type
                } else {
                    8 - icmp_type
                };
                ipv4_frame(
                    eth_src,
                    &plain(ICMP),
                    &icmp_header(kind, 0, rest, &payload),
                    false,
                )
            }
            64..70 => {
                // ICMP error (port unreachable / time exceeded) quoting the reverse
                // packet's IPv4 header and first 8 bytes of its TCP/UDP header.
                let proto = self.pick(&[TCP, UDP]);
                let inner_spec = Ipv4Spec {
                    src: dst,
                    dst: src,
                    proto,
                    frag: 0,
                    options: &[],
                };
                let l4 = if proto == TCP {
                    tcp_header(dport, sport, 0x02, &[])
                } else {
                    udp_header(dport, sport, &[1, 2, 3, 4])
                };
                let mut inner = ipv4_header(&inner_spec, l4.len());
                let c = fold_not(sum_be(&inner, 0));
                inner[10..12].copy_from_slice(&c.to_be_bytes());
                inner.extend_from_slice(&l4[..8]);
                let (kind, code) = self.pick(&[(3u8, 3u8), (11, 0), (3, 4)]);
                ipv4_frame(
                    eth_src,
                    &plain(ICMP),
                    &icmp_header(kind, code, [0; 4], &inner),
                    false,
                )
            }
            70..76 => {
                // A fragment: first (MF) or a later one (offset ≠ 0).
                let proto = self.pick(&[TCP, UDP, ICMP]);
                let frag = if self.chance(0.5) {
                    0x2000
                } else {
                    self.rng.random_range(1..0x1fff) | if self.chance(0.5) { 0x2000 } else { 0 }
                };
                let l4 = match proto {
                    TCP => tcp_header(sport, dport, 0x18, &payload),
                    UDP => udp_header(sport, dport, &payload),
                    _ => icmp_header(icmp_type, 0, [0, 1, 0, 1], &payload),
                };
                let spec = Ipv4Spec {
                    frag,
                    ..plain(proto)
                };
                ipv4_frame(eth_src, &spec, &l4, true)
            }
            76..84 => {
                // IP options (IHL > 5).
                let opts = self.options();
                let proto = self.pick(&[TCP, UDP, ICMP]);
                let l4 = match proto {
                    TCP => tcp_header(sport, dport, 0x02, &payload),
                    UDP => udp_header(sport, dport, &payload),
                    _ => {
                        let id = if icmp_type == 0 { dport } else { sport };
                        let b = id.to_be_bytes();
                        icmp_header(icmp_type, 0, [b[0], b[1], 0, 7], &payload)
                    }
                };
                let spec = Ipv4Spec {
                    options: &opts,
                    ..plain(proto)
                };
                ipv4_frame(eth_src, &spec, &l4, true)
            }
            84..89 => {
                // VLAN-tagged IPv4 (802.1Q): not IPv4 to the datapath.
                let inner = ipv4_frame(
                    eth_src,
                    &plain(UDP),
                    &udp_header(sport, dport, &payload),
                    true,
                );
                let mut f = ethernet(ETH_DST, eth_src, 0x8100);
                f.extend_from_slice(&[0x00, 0x64]);
                f.extend_from_slice(&inner[12..]);
                f
            }
            89..94 => {
                let mut f = ethernet([0xff; 6], eth_src, 0x0806);
                f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, self.pick(&[1, 2])]);
                f.extend_from_slice(&eth_src);
                f.extend_from_slice(&src);
                f.extend_from_slice(&[0; 6]);
                f.extend_from_slice(&dst);
                f
            }
            94..98 => {
                let mut f = ethernet(ETH_DST, eth_src, 0x86dd);
                let l4 = udp_header(sport, dport, &payload);
                f.extend_from_slice(&[0x60, 0, 0, 0]);
                f.extend_from_slice(&(l4.len() as u16).to_be_bytes());
                f.extend_from_slice(&[UDP, 64]);
                f.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
                f.extend_from_slice(&src);
                f.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
                f.extend_from_slice(&dst);
                f.extend_from_slice(&l4);
                f
            }
            _ => {
                // Garbage after an Ethernet header with a random ethertype.
                let mut f = ethernet(
                    ETH_DST,
                    eth_src,
                    self.pick(&[0x0800, 0x0806, 0x86dd, 0x88cc]),
                );
                let n = self.rng.random_range(0..80);
                f.extend((0..n).map(|_| self.rng.random::<u8>()));
                f
            }
        }
    }

    /// Mutates `f` in place: bit flips, byte sets, header fields, truncation, extension;
    /// then recomputes the checksums of half of them. IPv4 (and anything else).
    pub(super) fn mutate(&mut self, f: &mut Vec<u8>) {
        let v4 = Mutation {
            head: 74,
            floor: 34,
            field_min: 38,
            field: Gen::field4,
            fix: |f| fix_checksums(f, false),
        };
        self.mutate_with(f, &v4);
    }

    /// Header fields of IPv4: version/IHL, total length, fragment field, protocol,
    /// addresses, ports, ICMP type, ethertype.
    fn field4(&mut self, f: &mut [u8]) {
        let len = f.len();
        match self.rng.random_range(0..8) {
            0 => f[14] = self.pick(&[0x45, 0x46, 0x4f, 0x44, 0x40, 0x55, 0x65]),
            1 => {
                let t = be16(f, 16) as i32 + self.rng.random_range(-24..24);
                f[16..18].copy_from_slice(&(t.clamp(0, 0xffff) as u16).to_be_bytes());
            }
            2 => f[20..22].copy_from_slice(
                &self
                    .pick(&[0x2000u16, 0x0001, 0x4000, 0x3fff, 0x8000, 0x6000])
                    .to_be_bytes(),
            ),
            3 => f[23] = self.pick(&[TCP, UDP, ICMP, 47, 0, 255]),
            4 => {
                let a = self.any_addr();
                let at = self.pick(&[26usize, 30]);
                f[at..at + 4].copy_from_slice(&a);
            }
            5 => {
                let ihl = usize::from(f[14] & 0xf) * 4;
                let at = 14 + ihl.max(20) + self.rng.random_range(0..4);
                if at + 2 <= len {
                    let p = self.port();
                    f[at..at + 2].copy_from_slice(&p.to_be_bytes());
                }
            }
            6 => {
                let ihl = usize::from(f[14] & 0xf) * 4;
                if 14 + ihl.max(20) < len {
                    f[14 + ihl.max(20)] = self.pick(&[0, 8, 3, 11, 5, 13]);
                }
            }
            _ => f[12..14].copy_from_slice(
                &self
                    .pick(&[0x0800u16, 0x0806, 0x86dd, 0x8100, 0x0000])
                    .to_be_bytes(),
            ),
        }
    }

    /// Mutates `f` as `m` says: 1 to 3 times a bit flip or a byte set (mostly in the
    /// headers), a header field, a truncation (rarely below the IP header) or an
    /// extension (Ethernet padding or trailing garbage); then half get their checksums
    /// recomputed, so they reach the rewrites.
    pub(super) fn mutate_with(&mut self, f: &mut Vec<u8>, m: &Mutation) {
        for _ in 0..self.rng.random_range(1..=3) {
            let len = f.len();
            match self.rng.random_range(0..100) {
                0..30 => {
                    let at = if self.chance(0.8) {
                        self.rng.random_range(0..len.min(m.head))
                    } else {
                        self.rng.random_range(0..len)
                    };
                    f[at] ^= 1 << self.rng.random_range(0..8);
                }
                30..45 => {
                    let at = self.rng.random_range(0..len.min(m.head));
                    f[at] = self.rng.random();
                }
                45..75 if len >= m.field_min => (m.field)(self, f),
                75..88 => {
                    let min = if self.chance(0.05) {
                        0
                    } else {
                        m.floor.min(len)
                    };
                    let n = self.rng.random_range(min..=len);
                    f.truncate(n);
                }
                _ => {
                    let n = self.rng.random_range(1..64);
                    let zero = self.chance(0.5);
                    f.extend((0..n).map(|_| if zero { 0 } else { self.rng.random::<u8>() }));
                }
            }
            if f.is_empty() {
                break;
            }
        }
        if self.chance(0.5) {
            (m.fix)(f);
        }
    }
}

/// How `Gen::mutate_with` mutates a family's frames: bit flips and byte sets mostly in
/// the first `head` bytes, `field` (a header field) on frames of `field_min` bytes or
/// more, truncation rarely below `floor` bytes, `fix` recomputing checksums.
pub(super) struct Mutation {
    pub(super) head: usize,
    pub(super) floor: usize,
    pub(super) field_min: usize,
    pub(super) field: fn(&mut Gen, &mut [u8]),
    pub(super) fix: fn(&mut [u8]),
}
