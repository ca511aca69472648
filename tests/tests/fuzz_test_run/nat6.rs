//! NAT66 and DNAT66 in the fuzz (issue #15): the model's IPv6 NAT state (SNAT6, RNAT6,
//! DNAT_CT6 and the IPv6 published ports, set up as the daemon would in [`setup6`]) and
//! what the uplink programs are specified to do to an IPv6 frame — on egress a published
//! connection's reply gets its published source, else masquerade (SNAT to the uplink's
//! IPv6 address, ICMPv6 echo by identifier); on ingress a masqueraded connection's reply
//! and an ICMPv6 error (1–4) quoting one are translated back, else a connection to a
//! published port is DNATed (client kept) and handed to its endpoint. An independent
//! statement of `netpath-ebpf/src/nat` for IPv6; it never reads the kernel's maps.
//!
//! Whole packets only here (`nat_ip6`; a tracked first fragment is classed as whole by
//! `frag::uplink_ip6`, later fragments are `frag`'s), and no IPv6 hairpin is modelled.

use netpath_common::nat::{NatTarget6, PublishKey6, Tuple6, Uplink6};

use super::*;

/// The uplink's global IPv6 address (2001:db8:2::2).
pub(super) const UPLINK6: [u8; 16] = ip6(0x2001_0db8, 2, 2);
/// Remote hosts, a router (the source of some ICMPv6 errors), a source outside the
/// masqueraded subnet, `::1`.
pub(super) const REMOTES6: [[u8; 16]; 3] = [
    ip6(0x2001_0db8, 1, 1),
    ip6(0x2001_0db8, 3, 7),
    ip6(0x2001_0db8, 4, 9),
];
pub(super) const ROUTER6: [u8; 16] = ip6(0x2001_0db8, 2, 0xfe);
pub(super) const FOREIGN6: [u8; 16] = ip6(0xfd21_0000, 0, 5);
pub(super) const LOOPBACK6: [u8; 16] = ip6(0, 0, 1);
/// A published address that is not the host's (an exact publish still answers there).
pub(super) const OTHER_HOST6: [u8; 16] = ip6(0x2001_0db8, 9, 1);
/// The dual-stack network's masqueraded IPv6 subnet: fd20::/64 (`ip6_of`).
const MASQ6_PREFIX: [u8; 8] = [0xfd, 0x20, 0, 0, 0, 0, 0, 0];
/// IPv6 published ports: (protocol, host address, port, endpoint index, endpoint port).
const PUBLISH6: [(u8, [u8; 16], u16, usize, u16); 6] = [
    (TCP, [0; 16], 8080, 0, 80),
    (UDP, [0; 16], 8080, 1, 53),
    (TCP, UPLINK6, 9090, 0, 90),
    (UDP, UPLINK6, 5353, 1, 5353),
    (TCP, LOOPBACK6, 9091, 1, 91),
    (UDP, OTHER_HOST6, 7070, 0, 70),
];
/// Destination ports of crafted inbound IPv6 traffic: the published ones and others.
pub(super) const INBOUND_PORTS6: [u16; 8] = [8080, 9090, 5353, 9091, 7070, 80, 40000, 40001];

/// `prefix`(32 bits):`group`(16 bits)::`host`(16 bits).
const fn ip6(prefix: u32, group: u16, host: u16) -> [u8; 16] {
    let (p, g, h) = (
        prefix.to_be_bytes(),
        group.to_be_bytes(),
        host.to_be_bytes(),
    );
    [
        p[0], p[1], p[2], p[3], g[0], g[1], 0, 0, 0, 0, 0, 0, 0, 0, h[0], h[1],
    ]
}

pub(super) fn in_masq6(a: [u8; 16]) -> bool {
    a[..8] == MASQ6_PREFIX
}

/// The uplink's IPv6 address over the IPv4 ports, the dual-stack network's subnet
/// masqueraded, `UPLINK6` listed as the host's, and the IPv6 published ports.
pub(super) fn setup6(dp: &mut Datapath, model: &mut Model, uplink: u32) {
    let up = Uplink6 {
        addr: UPLINK6,
        first_port: NAT_FIRST,
        last_port: NAT_LAST,
    };
    dp.set_uplink6(uplink, Some(up)).unwrap();
    let net: [u8; 16] = [&MASQ6_PREFIX[..], &[0; 8]].concat().try_into().unwrap();
    dp.add_masq_subnet6(ipnet::Ipv6Net::new(net.into(), 64).unwrap(), 1)
        .unwrap();
    dp.set_local_addrs(&[UPLINK_ADDR.into(), UPLINK6.into()])
        .unwrap();
    for (proto, host, port, ep, ep_port) in PUBLISH6 {
        let (key, to) = (
            PublishKey6::new(proto, host, port),
            NatTarget6::new(ip6_of(ep), ep_port),
        );
        dp.publish6(key, to).unwrap();
        model.nat6.publish.insert(key, to);
    }
}

/// The paths of the IPv6 NAT, tallied per frame that took them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Path6 {
    SnatNew,
    SnatKnown,
    PublishReply,
    Reply,
    IcmpError,
    DnatRedirect,
    DnatKernel,
}

impl Path6 {
    pub(super) const ALL: [Path6; 7] = [
        Path6::SnatNew,
        Path6::SnatKnown,
        Path6::PublishReply,
        Path6::Reply,
        Path6::IcmpError,
        Path6::DnatRedirect,
        Path6::DnatKernel,
    ];
    pub(super) fn name(self) -> &'static str {
        match self {
            Path6::SnatNew => "NAT66 new connection",
            Path6::SnatKnown => "NAT66 known connection",
            Path6::PublishReply => "DNAT66 reply (egress)",
            Path6::Reply => "NAT66 reply (ingress)",
            Path6::IcmpError => "ICMPv6 error translated back",
            Path6::DnatRedirect => "DNAT66 to the endpoint",
            Path6::DnatKernel => "DNAT66 left to the kernel",
        }
    }
}

/// An IPv6 packet the NAT may translate: not a fragment (first fragments included),
/// TCP/UDP/ICMPv6 with its header whole, behind at most the bounded extension headers.
#[derive(Clone, Copy, Debug)]
pub(super) struct Ip6 {
    pub(super) src: [u8; 16],
    pub(super) dst: [u8; 16],
    pub(super) proto: u8,
    /// Offset of the L4 header.
    pub(super) l4: usize,
    /// The end of the datagram (Ethernet padding may follow).
    pub(super) end: usize,
}

impl Ip6 {
    pub(super) fn csum_at(&self) -> usize {
        self.l4
            + match self.proto {
                TCP => 16,
                UDP => 6,
                _ => 2,
            }
    }
}

pub(super) fn nat_ip6(f: &[u8]) -> Option<Ip6> {
    if f.len() < 54 || be16(f, 12) != 0x86dd {
        return None;
    }
    match parse_ip6(f) {
        V6::Packet {
            src,
            dst,
            l4: Some((proto, l4)),
            fragment: false,
        } if matches!(proto, TCP | UDP | ICMP6) => Some(Ip6 {
            src,
            dst,
            proto,
            l4,
            end: 54 + usize::from(be16(f, 18)),
        }),
        _ => None,
    }
}

/// The ports of a TCP/UDP packet, or the identifier of an ICMPv6 echo of `icmp_type`.
fn ports6(f: &[u8], ip: &Ip6, icmp_type: u8) -> Option<(usize, usize)> {
    match ip.proto {
        TCP | UDP => Some((ip.l4, ip.l4 + 2)),
        ICMP6 if f[ip.l4] == icmp_type => Some((ip.l4 + 4, ip.l4 + 4)),
        _ => None,
    }
}

/// One IPv6 address (at `addr_at`, 22 source or 38 destination) and its port rewritten.
pub(super) type Rewrite6 = Rewrite<[u8; 16]>;
const fn rewrite6(addr_at: usize, addr: [u8; 16], port_at: usize, port: u16) -> Rewrite6 {
    Rewrite6 {
        addr_at,
        addr,
        port_at,
        port,
    }
}

/// An ICMPv6 error translated back.
pub(super) type IcmpError6 = IcmpErrorBack<[u8; 16]>;

/// What the model expects of an IPv6 frame the NAT translates (part of `Expected`).
#[derive(Clone, Copy, Debug)]
pub(super) struct Expected6 {
    pub(super) path: Path6,
    pub(super) ip: Ip6,
    pub(super) rewrite: Option<Rewrite6>,
    pub(super) icmp_error: Option<IcmpError6>,
}

/// The expectation of a translated IPv6 frame: `verdict` (with a redirect's MACs and hop
/// limit), the path, the rewrite or the ICMPv6 error's translation.
fn translated(
    path: Path6,
    ip: Ip6,
    rewrite: Option<Rewrite6>,
    err: Option<IcmpError6>,
) -> Expected {
    Expected {
        nat6: Some(Expected6 {
            path,
            ip,
            rewrite,
            icmp_error: err,
        }),
        ..Expected::pass(TC_ACT_UNSPEC)
    }
}

impl Model {
    /// Uplink egress of an IPv6 frame: a reply of a connection to an IPv6 published port
    /// leaves with the published address and port as its source; otherwise a TCP/UDP
    /// packet or echo request from the masqueraded subnet leaving by the uplink gets the
    /// uplink's IPv6 address and a NAT port (identifier).
    pub(super) fn uplink_egress6(&self, f: &[u8], ifindex: u32) -> (Expected, Effects) {
        let (n, mut fx) = (&self.nat6, Effects::default());
        let Some(ip) = uplink_ip6(f) else {
            return (Expected::pass(TC_ACT_UNSPEC), fx);
        };
        let rw = |addr, port_at, port| rewrite6(22, addr, port_at, port);
        if ip.proto != ICMP6 {
            let (sp, dp) = (ip.l4, ip.l4 + 2);
            let key = Tuple6::new(ip.proto, ip.src, be16(f, sp), ip.dst, be16(f, dp));
            if let Some(front) = n.dnat_ct.get(&key) {
                if front.flags & NAT_FLAG_INBOUND != 0 {
                    // A reply of a connection routed in: leaves as it is.
                    return (Expected::pass(TC_ACT_UNSPEC), fx);
                }
                let r = rw(front.addr, sp, front.port);
                return (translated(Path6::PublishReply, ip, Some(r), None), fx);
            }
        }
        // Masqueraded: leaving by the uplink from the masqueraded subnet.
        let masq = ifindex == self.uplink_ifindex && in_masq6(ip.src);
        let Some((sp, dp)) = ports6(f, &ip, 128).filter(|_| masq) else {
            return (Expected::pass(TC_ACT_UNSPEC), fx);
        };
        // The connection; an echo's identifier is its only "port".
        let (sport, dport) = (
            be16(f, sp),
            [be16(f, dp), 0][usize::from(ip.proto == ICMP6)],
        );
        let orig = Tuple6::new(ip.proto, ip.src, sport, ip.dst, dport);
        let (port, path) = match n.snat.get(&orig) {
            Some(t) => (t.port, Path6::SnatKnown),
            None => {
                let Some(port) = n.allocate(&orig, UPLINK6) else {
                    return (Expected::pass(TC_ACT_SHOT), fx);
                };
                let reply = Tuple6::new(ip.proto, ip.dst, dport, UPLINK6, port);
                fx.nat6.snat = Some((orig, NatTarget6::new(UPLINK6, port)));
                fx.nat6.rnat = Some((reply, NatTarget6::new(ip.src, sport)));
                (port, Path6::SnatNew)
            }
        };
        let r = rw(UPLINK6, sp, port);
        (translated(path, ip, Some(r), None), fx)
    }

    /// Uplink ingress of an IPv6 frame: a reply of a masqueraded connection gets the
    /// endpoint's address and port back and goes to the kernel path; so does an ICMPv6
    /// error quoting one, translated back; any other TCP/UDP packet to a published port
    /// is DNATed to its endpoint, keeping the client, and handed to it.
    pub(super) fn uplink_ingress6(&self, f: &[u8]) -> (Expected, Effects) {
        let (n, mut fx) = (&self.nat6, Effects::default());
        let Some(ip) = uplink_ip6(f) else {
            return (Expected::pass(TC_ACT_UNSPEC), fx);
        };
        let rw = |addr, port_at, port| rewrite6(38, addr, port_at, port);
        if let Some((sp, dp)) = ports6(f, &ip, 129) {
            let sport = if ip.proto == ICMP6 { 0 } else { be16(f, sp) };
            let key = Tuple6::new(ip.proto, ip.src, sport, ip.dst, be16(f, dp));
            if let Some(back) = n.rnat.get(&key) {
                let r = rw(back.addr, dp, back.port);
                return (translated(Path6::Reply, ip, Some(r), None), fx);
            }
        }
        if let Some(err) = self.icmp_error6(f, &ip) {
            return (translated(Path6::IcmpError, ip, None, Some(err)), fx);
        }
        if ip.proto == ICMP6 {
            return (Expected::pass(TC_ACT_UNSPEC), fx);
        }
        let (sp, dp) = (ip.l4, ip.l4 + 2);
        let (sport, dport) = (be16(f, sp), be16(f, dp));
        let key = |host| PublishKey6::new(ip.proto, host, dport);
        // A publish on `::` answers on the host's addresses only: `::1` and the listed.
        let host_addr = ip.dst == LOOPBACK6 || ip.dst == UPLINK6;
        let Some(ep) = n
            .publish
            .get(&key(ip.dst))
            .or_else(|| host_addr.then(|| n.publish.get(&key([0; 16]))).flatten())
        else {
            // A connection routed in to an endpoint's own address is recorded, so its
            // replies are not masqueraded: not over an existing entry, nor for the tuple
            // of a masqueraded connection the endpoint opened.
            let reply = Tuple6::new(ip.proto, ip.dst, dport, ip.src, sport);
            if !host_addr
                && self.endpoint_by_ip6(ip.dst).is_some()
                && !n.snat.contains_key(&reply)
                && !n.dnat_ct.contains_key(&reply)
            {
                let mut front = NatTarget6::new(ip.dst, dport);
                front.flags = NAT_FLAG_INBOUND;
                fx.nat6.dnat_ct = Some((reply, front));
            }
            return (Expected::pass(TC_ACT_UNSPEC), fx);
        };
        let reply = Tuple6::new(ip.proto, ep.addr, ep.port, ip.src, sport);
        fx.nat6.dnat_ct = Some((reply, NatTarget6::new(ip.dst, dport)));
        let r = Some(rw(ep.addr, dp, ep.port));
        // Into the endpoint as a router hands it over, unless its hop limit runs out or
        // it exceeds the endpoint device's MTU (1500).
        let x = match self.endpoint_by_ip6(ep.addr) {
            Some(to) if f[21] > 1 && f.len() <= 14 + 1500 => Expected {
                verdict: TC_ACT_REDIRECT,
                macs: (f[..6] != to.mac).then_some((to.mac, to.host_mac)),
                ttl_dec: true,
                ..translated(Path6::DnatRedirect, ip, r, None)
            },
            _ => translated(Path6::DnatKernel, ip, r, None),
        };
        (x, fx)
    }

    /// An ICMPv6 error (1–4) quoting, without extension headers, a TCP/UDP packet or an
    /// echo request that left masqueraded (its first 8 L4 bytes within the datagram):
    /// where its translation goes.
    fn icmp_error6(&self, f: &[u8], ip: &Ip6) -> Option<IcmpError6> {
        if ip.proto != ICMP6 || !(1..=4).contains(&f[ip.l4]) {
            return None;
        }
        let inner = ip.l4 + 8;
        let l4 = inner + 40;
        if l4 + 8 > ip.end || f[inner] >> 4 != 6 {
            return None;
        }
        let at = QuoteAt {
            inner,
            l4,
            end: ip.end,
        };
        let (proto, addrs) = (f[inner + 6], (addr6(f, inner + 8), addr6(f, inner + 24)));
        let quote = Quote {
            at,
            proto,
            addrs,
            echo: (ICMP6, 128),
        };
        self.nat6.error_back(f, &quote)
    }
}

/// The expected output of a translated IPv6 frame, checksum fields aside.
pub(super) fn expected_frame6(input: &[u8], e: &Expected, x: &Expected6) -> Vec<u8> {
    let mut f = input.to_vec();
    if let Some((dst, src)) = e.macs {
        f[..6].copy_from_slice(&dst);
        f[6..12].copy_from_slice(&src);
    }
    if let Some(r) = x.rewrite {
        f[r.addr_at..r.addr_at + 16].copy_from_slice(&r.addr);
        f[r.port_at..r.port_at + 2].copy_from_slice(&r.port.to_be_bytes());
    }
    if let Some(b) = x.icmp_error {
        f[38..54].copy_from_slice(&b.addr);
        f[b.inner + 8..b.inner + 24].copy_from_slice(&b.addr);
        f[b.sport_at..b.sport_at + 2].copy_from_slice(&b.port.to_be_bytes());
    }
    if e.ttl_dec {
        f[21] -= 1;
    }
    f
}
