//! IPv6 frames for the uplink programs (NAT66, DNAT66): crafted to hit the tables —
//! connections from the masqueraded subnet, replies of those the fuzzer made earlier,
//! connections to IPv6 published ports and their replies, ICMPv6 errors quoting
//! translated packets — in every shape the NAT must handle or leave alone (extension
//! headers, fragments, other protocols, hop limit 1, near-MTU sizes); the mutations of
//! IPv6 frames; and the IPv6 L4 checksum (its own 16-byte pseudo-header, not
//! netpath-common's code).

use netpath_common::nat::Tuple6;

use super::*;

/// The one's-complement sum over an IPv6 packet's L4 data to the end of its datagram,
/// pseudo-header included (RFC 8200 §8.1), checksum field included: `fold_not` of it is
/// 0 for a valid checksum.
pub(super) fn l4_sum6(f: &[u8], ip: &Ip6) -> u64 {
    let data = &f[ip.l4..ip.end];
    let mut pseudo = [0u8; 40];
    pseudo[..16].copy_from_slice(&ip.src);
    pseudo[16..32].copy_from_slice(&ip.dst);
    pseudo[32..36].copy_from_slice(&(data.len() as u32).to_be_bytes());
    pseudo[39] = ip.proto;
    sum_be(data, sum_be(&pseudo, 0))
}

/// Recomputes the L4 checksum of an IPv6 packet the NAT may translate (`nat_ip6`); a
/// computed 0 goes as 0xffff for UDP, whose checksum IPv6 makes mandatory.
pub(super) fn fix_checksums6(f: &mut [u8]) {
    let Some(ip) = nat_ip6(f) else {
        return;
    };
    let at = ip.csum_at();
    f[at..at + 2].copy_from_slice(&[0, 0]);
    let mut c = fold_not(l4_sum6(f, &ip));
    if ip.proto == UDP && c == 0 {
        c = 0xffff;
    }
    f[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

/// Ethernet + IPv6 (hop limit `hops`) + `ext` (chained to `next`) + `l4`, the L4
/// checksum computed.
fn ipv6_frame(eth_src: [u8; 6], ends: ([u8; 16], [u8; 16]), hops: u8, l4: (u8, &[u8])) -> Vec<u8> {
    let mut f = ethernet(ETH_DST, eth_src, 0x86dd);
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(l4.1.len() as u16).to_be_bytes());
    f.extend_from_slice(&[l4.0, hops]);
    f.extend_from_slice(&ends.0);
    f.extend_from_slice(&ends.1);
    f.extend_from_slice(l4.1);
    fix_checksums6(&mut f);
    f
}

impl Gen {
    /// A source in the masqueraded IPv6 subnet mostly: an endpoint's, another of the
    /// subnet's, or one outside it.
    pub(super) fn masq6_src(&mut self, m: &Model) -> [u8; 16] {
        match self.rng.random_range(0..10) {
            0..6 => self.pick(&m.endpoints6).0,
            6..9 => {
                let mut a = ip6_of(0);
                a[14] = self.rng.random();
                a[15] = self.rng.random_range(1..8);
                a
            }
            _ => FOREIGN6,
        }
    }

    pub(super) fn any_addr6(&mut self) -> [u8; 16] {
        match self.rng.random_range(0..7) {
            0 => UPLINK6,
            1 => LOOPBACK6,
            2 => OTHER_HOST6,
            3 => ip6_of(self.rng.random_range(0..3)),
            4 => self.pick(&REMOTES6),
            _ => self.rng.random(),
        }
    }

    /// An IPv6 frame for the uplink's egress: a reply of a connection to an IPv6
    /// published port, or a connection from (mostly) the masqueraded subnet outwards.
    pub(super) fn egress6(&mut self, m: &Model) -> Vec<u8> {
        let mac = [2, 0, 0, 0, 0, 0x10];
        if !m.nat6.dnat_keys.is_empty() && self.chance(0.25) {
            let k = self.pick(&m.nat6.dnat_keys);
            let l4 = self.tcp_or_udp(k.proto, k.sport, k.dport);
            return ipv6_frame(mac, (k.src, k.dst), 64, (k.proto, &l4));
        }
        if !m.nat6.rnat_keys.is_empty() && self.chance(0.2) {
            // A later packet of a masqueraded connection.
            let k = self.pick(&m.nat6.rnat_keys);
            let back = m.nat6.rnat[&k];
            return self.base6_nat(
                mac,
                Tuple6::new(0, back.addr, back.port, k.src, k.sport),
                128,
            );
        }
        let src = self.masq6_src(m);
        let (sport, dst, dport) = (self.port(), self.pick(&REMOTES6), self.port());
        self.base6_nat(mac, Tuple6::new(0, src, sport, dst, dport), 128)
    }

    /// An IPv6 frame for the uplink's ingress: a reply of a masqueraded connection (or
    /// an ICMPv6 error quoting it), or a connection from outside, mostly to the uplink's
    /// address and a published port.
    pub(super) fn ingress6(&mut self, m: &Model) -> Vec<u8> {
        let mac = [2, 0, 0, 0, 0, 0x99];
        if !m.nat6.rnat_keys.is_empty() && self.chance(0.45) {
            let k = self.pick(&m.nat6.rnat_keys);
            return self.base6_nat(mac, k, 129);
        }
        let src = if self.chance(0.7) {
            self.pick(&REMOTES6)
        } else {
            self.any_addr6()
        };
        let dst = match self.rng.random_range(0..10) {
            0..7 => UPLINK6,
            7 => LOOPBACK6,
            _ => self.any_addr6(),
        };
        let (sport, dport) = (self.port(), self.pick(&INBOUND_PORTS6));
        self.base6_nat(mac, Tuple6::new(0, src, sport, dst, dport), 129)
    }

    /// A TCP (SYN/ACK) or UDP header and payload.
    fn tcp_or_udp(&mut self, proto: u8, sport: u16, dport: u16) -> Vec<u8> {
        let payload = self.payload();
        match proto {
            TCP => tcp_header(sport, dport, 0x12, &payload),
            _ => udp_header(sport, dport, &payload),
        }
    }

    /// A valid IPv6 frame of a random kind from `t`'s source to its destination:
    /// TCP, UDP, ICMPv6 echo (`echo`, identifier `sport` for a request, `dport` for a
    /// reply), an ICMPv6 error quoting the reverse packet, extension headers before the
    /// L4 header, fragments, other protocols; hop limit 1 and near-MTU sizes at times.
    pub(super) fn base6_nat(&mut self, eth_src: [u8; 6], t: Tuple6, echo: u8) -> Vec<u8> {
        let (src, sport, dst, dport) = (t.src, t.sport, t.dst, t.dport);
        let mut payload = self.payload();
        if self.chance(0.02) {
            let n = self.rng.random_range(1400..1480);
            payload = (0..n).map(|_| self.rng.random()).collect();
        }
        let hops = if self.chance(0.1) { 1 } else { 64 };
        let mut outer_src = src;
        let (next, l4) = match self.rng.random_range(0..100) {
            0..16 => (TCP, tcp_header(sport, dport, 0x02, &payload)),
            16..30 => (TCP, tcp_header(sport, dport, 0x18, &payload)),
            30..46 => (UDP, udp_header(sport, dport, &payload)),
            46..62 => {
                let id = if echo == 129 { dport } else { sport };
                let b = id.to_be_bytes();
                let kind = if self.chance(0.85) { echo } else { echo ^ 1 };
                (ICMP6, icmp_header(kind, 0, [b[0], b[1], 0, 1], &payload))
            }
            62..78 => {
                if self.chance(0.3) {
                    outer_src = ROUTER6;
                }
                (ICMP6, self.error6(dst, dport, src, sport))
            }
            78..86 => {
                // Hop-by-hop and destination options before the L4 header.
                let proto = self.pick(&[TCP, UDP, ICMP6]);
                let l4 = match proto {
                    ICMP6 => {
                        let b = if echo == 129 { dport } else { sport }.to_be_bytes();
                        icmp_header(echo, 0, [b[0], b[1], 0, 2], &payload)
                    }
                    p => self.tcp_or_udp(p, sport, dport),
                };
                let mut h = [DEST_OPTS_HDR, 0, 1, 4, 0, 0, 0, 0].to_vec();
                h.extend_from_slice(&[proto, 0, 1, 4, 0, 0, 0, 0]);
                return ipv6_frame(eth_src, (src, dst), hops, (0, &[h, l4].concat()));
            }
            86..92 => {
                // A fragment: the first (more to come) or a later one.
                let proto = self.pick(&[TCP, UDP]);
                let l4 = self.tcp_or_udp(proto, sport, dport);
                let offset: u16 = if self.chance(0.5) {
                    1
                } else {
                    self.rng.random_range(1..0x1fff) << 3
                };
                let mut h = vec![proto, 0];
                h.extend_from_slice(&offset.to_be_bytes());
                h.extend_from_slice(&[0, 0, 0, 9]);
                return ipv6_frame(eth_src, (src, dst), hops, (44, &[h, l4].concat()));
            }
            _ => (self.pick(&[59u8, 132, 47]), payload),
        };
        let mut f = ipv6_frame(eth_src, (outer_src, dst), hops, (next, &l4));
        if next == UDP && self.chance(0.1) {
            // A zero UDP checksum, which IPv6 forbids: still translated, never sent as 0.
            f[60..62].copy_from_slice(&[0, 0]);
        }
        f
    }

    /// An ICMPv6 error to `to` quoting the packet `to`:`to_port` sent `from`:`from_port`
    /// (its IPv6 header and L4 header, whole or cut after 8 or more bytes): TCP, UDP or
    /// an echo request (identifier `to_port`), its checksum valid.
    fn error6(&mut self, to: [u8; 16], to_port: u16, from: [u8; 16], from_port: u16) -> Vec<u8> {
        let proto = self.pick(&[TCP, UDP, ICMP6]);
        let data = self.payload();
        let l4 = match proto {
            ICMP6 => {
                let b = to_port.to_be_bytes();
                icmp_header(128, 0, [b[0], b[1], 0, 3], &data)
            }
            p => self.tcp_or_udp(p, to_port, from_port),
        };
        let quoted = ipv6_frame([2, 0, 0, 0, 0, 1], (to, from), 63, (proto, &l4));
        let cut = match self.rng.random_range(0..3) {
            0 => quoted.len(),
            1 => 54 + 8,
            _ => self.rng.random_range(54 + 8..=quoted.len()),
        };
        let (kind, code, word) = self.pick(&[
            (1u8, 4u8, [0u8; 4]),
            (2, 0, [0, 0, 5, 0]),
            (3, 0, [0; 4]),
            (4, 0, [0, 0, 0, 6]),
        ]);
        icmp_header(kind, code, word, &quoted[14..cut])
    }

    /// Mutates an IPv6 frame in place as `mutate` does an IPv4 one, with the IPv6
    /// header's fields; then recomputes the L4 checksum of half of them.
    pub(super) fn mutate6(&mut self, f: &mut Vec<u8>) {
        let v6 = Mutation {
            head: 110,
            floor: 54,
            field_min: 58,
            field: Gen::field6,
            fix: fix_checksums6,
        };
        self.mutate_with(f, &v6);
    }

    /// Header fields of IPv6: version, payload length, next header, hop limit,
    /// addresses, ports, ICMPv6 type, ethertype.
    fn field6(&mut self, f: &mut [u8]) {
        let len = f.len();
        match self.rng.random_range(0..8) {
            0 => f[14] = self.pick(&[0x60, 0x6f, 0x40, 0x00, 0x70]),
            1 => {
                let t = be16(f, 18) as i32 + self.rng.random_range(-24..24);
                f[18..20].copy_from_slice(&(t.clamp(0, 0xffff) as u16).to_be_bytes());
            }
            2 => f[20] = self.pick(&[TCP, UDP, ICMP6, 0, 44, 60, 59]),
            3 => f[21] = self.pick(&[0, 1, 2, 64, 255]),
            4 => {
                let a = self.any_addr6();
                let at = self.pick(&[22usize, 38]);
                f[at..at + 16].copy_from_slice(&a);
            }
            5 => {
                let at = 54 + self.rng.random_range(0..4);
                let p = self.port();
                if at + 2 <= len {
                    f[at..at + 2].copy_from_slice(&p.to_be_bytes());
                }
            }
            6 => f[54] = self.pick(&[128, 129, 1, 2, 3, 4, 135]),
            _ => f[12..14].copy_from_slice(&self.pick(&[0x86ddu16, 0x0800, 0x8100]).to_be_bytes()),
        }
    }
}

/// Destination options (60), as the extension-header frames chain them.
const DEST_OPTS_HDR: u8 = 60;
