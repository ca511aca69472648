//! The reference model of the programs: verdicts, rewrites and NAT state.

use super::*;

/// One rewrite the model expects: the address at `addr_at` (the source or destination;
/// IPv4, or IPv6 for `Rewrite<[u8; 16]>`) and the 16-bit port/identifier at `port_at`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Rewrite<A = [u8; 4]> {
    pub(super) addr_at: usize,
    pub(super) addr: A,
    pub(super) port_at: usize,
    pub(super) port: u16,
}

/// How an ICMP error about a masqueraded packet is translated back: the outer
/// destination and the quoted source become `addr`/`port` (IPv4, or ICMPv6 for
/// `IcmpErrorBack<[u8; 16]>`).
#[derive(Clone, Copy, Debug)]
pub(super) struct IcmpErrorBack<A = [u8; 4]> {
    /// Offset of the quoted IP header.
    pub(super) inner: usize,
    /// Offset of the quoted source port (ICMP: identifier).
    pub(super) sport_at: usize,
    /// Offset of the quoted L4 checksum, when the error quotes it.
    pub(super) l4c_at: Option<usize>,
    pub(super) addr: A,
    pub(super) port: u16,
}

#[derive(Debug)]
pub(super) struct Expected {
    /// An ICMP error quoting a masqueraded packet: translated back (checked by
    /// `check_icmp_error`).
    pub(super) icmp_error: Option<IcmpErrorBack>,
    pub(super) verdict: u32,
    pub(super) rewrites: Vec<Rewrite>,
    /// The Ethernet addresses (dst, src) a fast-path redirect writes.
    pub(super) macs: Option<([u8; 6], [u8; 6])>,
    /// Forwarded as a router does: TTL (IPv6: hop limit) one lower (the header checksum
    /// follows).
    pub(super) ttl_dec: bool,
    /// An IPv6 frame the NAT translates (`nat6`).
    pub(super) nat6: Option<Expected6>,
    /// A later fragment's address rewrites (offset, new address): no port, no L4
    /// checksum (`frag`).
    pub(super) addr_only: Vec<(usize, Vec<u8>)>,
}

impl Expected {
    pub(super) fn pass(verdict: u32) -> Self {
        Expected {
            verdict,
            rewrites: Vec::new(),
            macs: None,
            ttl_dec: false,
            icmp_error: None,
            nat6: None,
            addr_only: Vec::new(),
        }
    }
}

/// What the model does to NAT state and counters for one frame (applied only once the
/// kernel's output matched).
#[derive(Default, Debug)]
pub(super) struct Effects {
    pub(super) snat: Option<(Tuple, NatTarget)>,
    pub(super) rnat: Option<(Tuple, NatTarget)>,
    pub(super) dnat_ct: Option<(Tuple, NatTarget)>,
    pub(super) nat6: Changes<[u8; 16]>,
    /// A first fragment's record (`frag`), by family.
    pub(super) frag: Recorded<[u8; 4]>,
    pub(super) frag6: Recorded<[u8; 16]>,
}

#[derive(Default)]
pub(super) struct Model {
    /// The IPv4 NAT state.
    pub(super) v4: Tables<[u8; 4]>,
    /// NAT66 and DNAT66 state (`nat6`).
    pub(super) nat6: Tables<[u8; 16]>,
    /// The datagrams whose first fragments went through the uplink (`frag`), by family.
    pub(super) frags: HashMap<FragKey<[u8; 4]>, FragRecord<[u8; 4]>>,
    pub(super) frags6: HashMap<FragKey<[u8; 16]>, FragRecord<[u8; 16]>>,
    pub(super) endpoints: Vec<(EndpointValue, u32)>,
    /// The dual-stack endpoints by IPv6 address, as `NETPATH_ENDPOINTS6` holds them.
    pub(super) endpoints6: Vec<([u8; 16], EndpointValue)>,
    pub(super) uplink_ifindex: u32,
    /// The local and broadcast routes of the test's namespace (`ip route show table
    /// local`): what `bpf_fib_lookup` reports as "not forwarded", i.e. a host address.
    pub(super) local: Vec<Route>,
}

/// A route's destination: (network, prefix length).
pub(super) type Route = ([u8; 4], u8);

/// `addr:port` with every other byte zero (whatever the flag/padding fields are).
pub(super) fn target(addr: [u8; 4], port: u16) -> NatTarget {
    // SAFETY: `NatTarget` is a `repr(C)` map value of integers and byte arrays, for
    // which all-zero bytes are a valid value.
    let mut t: NatTarget = unsafe { std::mem::zeroed() };
    t.addr = addr;
    t.port = port;
    t
}

/// An IPv6 ethertype: the IPv6 part of the model's.
pub(super) fn is_ipv6(f: &[u8]) -> bool {
    f.len() >= 14 && be16(f, 12) == 0x86dd
}

pub(super) fn in_masq(a: [u8; 4]) -> bool {
    MASQ.iter().any(|(net, len, _)| {
        let mask = u32::MAX << (32 - u32::from(*len));
        u32::from_be_bytes(a) & mask == u32::from_be_bytes(*net)
    })
}

/// The ports (or ICMP identifier) of a NAT-eligible packet: (sport_at, dport_at).
/// ICMP: only echo of `icmp_type`; None for everything else.
pub(super) fn ports_at(f: &[u8], ip: &Ip, icmp_type: u8) -> Option<(usize, usize)> {
    let l4 = ip.l4();
    match ip.proto {
        TCP | UDP => Some((l4, l4 + 2)),
        ICMP if f[l4] == icmp_type => Some((l4 + 4, l4 + 4)),
        _ => None,
    }
}

/// A sound packet from `from` to endpoint `to`: redirected within the network (bridged
/// frames keep their MACs, routed ones get `to`'s and its gateway's), refused across.
fn toward(f: &[u8], from: &EndpointValue, to: &EndpointValue) -> (Expected, Effects) {
    if to.network_id != from.network_id {
        return (Expected::pass(TC_ACT_SHOT), Effects::default());
    }
    if to.ifindex == from.ifindex {
        return (Expected::pass(TC_ACT_UNSPEC), Effects::default());
    }
    (
        Expected {
            verdict: TC_ACT_REDIRECT,
            rewrites: Vec::new(),
            macs: (f[..6] != to.mac).then_some((to.mac, to.host_mac)),
            ttl_dec: false,
            icmp_error: None,
            nat6: None,
            addr_only: Vec::new(),
        },
        Effects::default(),
    )
}

impl Model {
    pub(super) fn endpoint_by_ifindex(&self, ifindex: u32) -> Option<&EndpointValue> {
        self.endpoints
            .iter()
            .find(|(e, _)| e.ifindex == ifindex)
            .map(|(e, _)| e)
    }
    pub(super) fn endpoint_by_ip(&self, ip: [u8; 4]) -> Option<&EndpointValue> {
        self.endpoints
            .iter()
            .find(|(e, _)| e.ip == ip)
            .map(|(e, _)| e)
    }
    /// The dual-stack endpoint with IPv6 address `ip`.
    pub(super) fn endpoint_by_ip6(&self, ip: [u8; 16]) -> Option<&EndpointValue> {
        self.endpoints6
            .iter()
            .find(|(a, _)| *a == ip)
            .map(|(_, e)| e)
    }
    /// The IPv6 address of endpoint `e`, if it has one.
    pub(super) fn ip6_of(&self, e: &EndpointValue) -> Option<[u8; 16]> {
        self.endpoints6
            .iter()
            .find(|(_, v)| v.ifindex == e.ifindex)
            .map(|(a, _)| *a)
    }

    /// XDP: count and pass, never touch.
    pub(super) fn xdp(&self) -> (Expected, Effects) {
        (Expected::pass(XDP_PASS), Effects::default())
    }

    /// The endpoint fast path (an independent statement of `forward::decide`).
    pub(super) fn tc_ingress(&self, f: &[u8], ifindex: u32) -> (Expected, Effects) {
        let pass = (Expected::pass(TC_ACT_UNSPEC), Effects::default());
        let shot = (Expected::pass(TC_ACT_SHOT), Effects::default());
        let Some(from) = self.endpoint_by_ifindex(ifindex) else {
            return pass;
        };
        if f.len() < 12 {
            return pass;
        }
        if f[6..12] != from.mac {
            return shot;
        }
        if be16(f, 12) == 0x86dd {
            // IPv6 only from an endpoint that has it (a dual-stack network's), and only
            // what the guard lets through.
            if from.flags & ENDPOINT_FLAG_IPV6 == 0 {
                return shot;
            }
            let V6::Packet { src, dst, l4, .. } = parse_ip6(f) else {
                return shot;
            };
            let owns = |a| {
                self.endpoint_by_ip6(a)
                    .is_some_and(|e| e.ifindex == from.ifindex)
            };
            if refused(from, f, src, l4, owns) {
                return shot;
            }
            return match self.endpoint_by_ip6(dst) {
                Some(to) => toward(f, from, to),
                None => pass,
            };
        }
        if be16(f, 12) == 0x0806 {
            if f.len() < 32 || f[14..20] != [0, 1, 8, 0, 6, 4] {
                return pass;
            }
            let (sha, spa) = (&f[22..28], addr(f, 28));
            // The endpoint's own MAC always; its address, or 0.0.0.0 for an ARP probe.
            if sha != from.mac || (spa != [0; 4] && spa != from.ip) {
                return shot;
            }
            return pass;
        }
        let Some(ip) = parse_ip(f) else {
            return pass;
        };
        if ip.src != from.ip {
            return shot;
        }
        // A truncated L4 header is not a flow (no hairpin), but its source counts.
        if (ip.fragment || ip.l4_fits())
            && let Some(hairpin) = self.hairpin(f, &ip)
        {
            return hairpin;
        }
        match self.endpoint_by_ip(ip.dst) {
            Some(to) => toward(f, from, to),
            None => pass,
        }
    }

    /// Uplink egress: replies of published connections get the published source;
    /// otherwise masquerade (on an uplink, from a masqueraded subnet).
    pub(super) fn uplink_egress(&self, f: &[u8], ifindex: u32) -> (Expected, Effects) {
        if is_ipv6(f) {
            return self.uplink_egress6(f, ifindex);
        }
        let mut fx = Effects::default();
        let Some(ip) = uplink_ip(f) else {
            return (Expected::pass(TC_ACT_UNSPEC), fx);
        };
        if ip.proto != ICMP {
            let (sp, dp) = (ip.l4(), ip.l4() + 2);
            let key = Tuple::new(ip.proto, ip.src, be16(f, sp), ip.dst, be16(f, dp));
            if let Some(front) = self.v4.dnat_ct.get(&key) {
                if front.flags & NAT_FLAG_INBOUND != 0 {
                    // A reply of a connection routed in: leaves as it is.
                    return (Expected::pass(TC_ACT_UNSPEC), fx);
                }
                let rw = Rewrite {
                    addr_at: 26,
                    addr: front.addr,
                    port_at: sp,
                    port: front.port,
                };
                return (
                    Expected {
                        rewrites: vec![rw],
                        ..Expected::pass(TC_ACT_UNSPEC)
                    },
                    fx,
                );
            }
        }
        let Some((sp, dp)) = ports_at(f, &ip, 8) else {
            return (Expected::pass(TC_ACT_UNSPEC), fx);
        };
        if ifindex != self.uplink_ifindex || !in_masq(ip.src) {
            return (Expected::pass(TC_ACT_UNSPEC), fx);
        }
        let sport = be16(f, sp);
        let dport = if ip.proto == ICMP { 0 } else { be16(f, dp) };
        let orig = Tuple::new(ip.proto, ip.src, sport, ip.dst, dport);
        let t = match self.v4.snat.get(&orig) {
            Some(t) => *t,
            None => {
                let Some(port) = self.v4.allocate(&orig, UPLINK_ADDR) else {
                    return (Expected::pass(TC_ACT_SHOT), fx);
                };
                let t = target(UPLINK_ADDR, port);
                fx.snat = Some((orig, t));
                fx.rnat = Some((
                    Tuple::new(ip.proto, ip.dst, dport, UPLINK_ADDR, port),
                    target(ip.src, sport),
                ));
                t
            }
        };
        let rw = Rewrite {
            addr_at: 26,
            addr: t.addr,
            port_at: sp,
            port: t.port,
        };
        (
            Expected {
                rewrites: vec![rw],
                ..Expected::pass(TC_ACT_UNSPEC)
            },
            fx,
        )
    }

    /// Uplink ingress: replies of masqueraded connections are translated back; other
    /// packets to a published port are DNATed to its endpoint, keeping the client.
    /// An ICMP error (3, 11, 12) quoting, without IP options, a TCP/UDP packet or an
    /// echo request that left masqueraded: where its translation goes.
    pub(super) fn icmp_error_back(&self, f: &[u8], ip: &Ip) -> Option<IcmpErrorBack> {
        let at = ip.l4();
        if ip.proto != ICMP || ![3, 11, 12].contains(&f[at]) {
            return None;
        }
        let inner = at + 8;
        // Quoted bytes end with the datagram (a frame may carry padding after it).
        let end = 14 + ip.total;
        if end < inner + 28 || f[inner] != 0x45 {
            return None;
        }
        let q = Quote {
            at: QuoteAt {
                inner,
                l4: inner + 20,
                end,
            },
            proto: f[inner + 9],
            addrs: (addr(f, inner + 12), addr(f, inner + 16)),
            echo: (ICMP, 8),
        };
        self.v4.error_back(f, &q)
    }

    /// A translated reply is done: it is never also taken for a published port.
    pub(super) fn uplink_ingress(&self, f: &[u8]) -> (Expected, Effects) {
        if is_ipv6(f) {
            return self.uplink_ingress6(f);
        }
        let mut fx = Effects::default();
        let Some(ip) = uplink_ip(f) else {
            return (Expected::pass(TC_ACT_UNSPEC), fx);
        };
        if let Some(back) = self.icmp_error_back(f, &ip) {
            return (
                Expected {
                    icmp_error: Some(back),
                    ..Expected::pass(TC_ACT_UNSPEC)
                },
                fx,
            );
        }
        let mut rewrites = Vec::new();
        let (dst, dport_now): ([u8; 4], Option<u16>) = (ip.dst, None);
        if let Some((sp, dp)) = ports_at(f, &ip, 0) {
            let sport = if ip.proto == ICMP { 0 } else { be16(f, sp) };
            let key = Tuple::new(ip.proto, ip.src, sport, ip.dst, be16(f, dp));
            if let Some(back) = self.v4.rnat.get(&key) {
                rewrites.push(Rewrite {
                    addr_at: 30,
                    addr: back.addr,
                    port_at: dp,
                    port: back.port,
                });
                return (self.inbound(f, back.addr, rewrites), fx);
            }
        }
        if ip.proto != ICMP {
            let (sp, dp) = (ip.l4(), ip.l4() + 2);
            let (sport, dport) = (be16(f, sp), dport_now.unwrap_or_else(|| be16(f, dp)));
            let key = |host_ip| PublishKey {
                host_ip,
                port: dport,
                proto: ip.proto,
                _pad: 0,
            };
            // A 0.0.0.0 publish answers on the host's addresses only (loopback and the
            // local addresses the test registered).
            let host_addr = dst[0] == 127 || dst == UPLINK_ADDR;
            let ep = self.v4.publish.get(&key(dst)).or_else(|| {
                host_addr
                    .then(|| self.v4.publish.get(&key([0; 4])))
                    .flatten()
            });
            if let Some(ep) = ep {
                fx.dnat_ct = Some((
                    Tuple::new(ip.proto, ep.addr, ep.port, ip.src, sport),
                    target(dst, dport),
                ));
                rewrites.push(Rewrite {
                    addr_at: 30,
                    addr: ep.addr,
                    port_at: dp,
                    port: ep.port,
                });
                return (self.inbound(f, ep.addr, rewrites), fx);
            }
            // A connection routed in to an endpoint's own address is recorded, so its
            // replies are not masqueraded: not over an existing entry, nor for the tuple
            // of a masqueraded connection the endpoint opened.
            let reply = Tuple::new(ip.proto, dst, dport, ip.src, sport);
            if self.endpoint_by_ip(dst).is_some()
                && !self.v4.snat.contains_key(&reply)
                && !self.v4.dnat_ct.contains_key(&reply)
            {
                let mut front = target(dst, dport);
                front.flags = NAT_FLAG_INBOUND;
                fx.dnat_ct = Some((reply, front));
            }
        }
        (
            Expected {
                rewrites,
                ..Expected::pass(TC_ACT_UNSPEC)
            },
            fx,
        )
    }

    /// A packet the uplink translated for address `to`: an endpoint's goes straight into
    /// it as a router hands it over (its MAC from its gateway's, TTL one lower) — unless
    /// its TTL runs out or it exceeds the endpoint device's MTU (the test devices' 1500);
    /// anything else is the kernel's.
    pub(super) fn inbound(&self, f: &[u8], to: [u8; 4], rewrites: Vec<Rewrite>) -> Expected {
        match self.endpoint_by_ip(to) {
            Some(ep) if f[22] > 1 && f.len() <= 14 + 1500 => Expected {
                verdict: TC_ACT_REDIRECT,
                rewrites,
                macs: (f[..6] != ep.mac).then_some((ep.mac, ep.host_mac)),
                ttl_dec: true,
                icmp_error: None,
                nat6: None,
                addr_only: Vec::new(),
            },
            _ => Expected {
                rewrites,
                ..Expected::pass(TC_ACT_UNSPEC)
            },
        }
    }

    /// Whether `dst` is a host address as the kernel's FIB sees it (`route::is_local`).
    pub(super) fn is_local(&self, dst: [u8; 4]) -> bool {
        dst[0] < 224
            && self.local.iter().any(|(net, len)| {
                let mask = u32::MAX.checked_shl(32 - u32::from(*len)).unwrap_or(0);
                u32::from_be_bytes(dst) & mask == u32::from_be_bytes(*net) & mask
            })
    }

    /// Hairpin, on an endpoint's device after anti-spoofing (`nat::hairpin`): a reply
    /// of a hairpinned connection gets the published address and port back as its
    /// source; a TCP/UDP packet to a port published on a host address (not to another
    /// endpoint) is DNATed to the published endpoint, recorded in DNAT_CT, and (an
    /// endpoint reaching its own port) given the host address as its source. Either is
    /// redirected to the endpoint it now goes to. `None`: no hairpin packet. (Every
    /// endpoint of the test has ports published, so none skips the lookup.)
    pub(super) fn hairpin(&self, f: &[u8], ip: &Ip) -> Option<(Expected, Effects)> {
        let ip = nat_ip(f).filter(|_| ip.proto != ICMP)?;
        let (sp, dp) = (ip.l4(), ip.l4() + 2);
        let (sport, dport) = (be16(f, sp), be16(f, dp));
        let redirect_to = |to: &EndpointValue, rewrites| Expected {
            verdict: TC_ACT_REDIRECT,
            rewrites,
            macs: (f[..6] != to.mac).then_some((to.mac, to.host_mac)),
            ttl_dec: false,
            icmp_error: None,
            nat6: None,
            addr_only: Vec::new(),
        };
        let rw = |addr_at, addr, port_at, port| Rewrite {
            addr_at,
            addr,
            port_at,
            port,
        };
        if let Some(front) = self
            .v4
            .dnat_ct
            .get(&Tuple::new(ip.proto, ip.src, sport, ip.dst, dport))
        {
            // Connections routed in are the uplink's, never hairpinned.
            if front.flags & NAT_FLAG_INBOUND != 0 {
                return None;
            }
            let to_self = front.flags & NAT_FLAG_SELF != 0;
            let to = self.endpoint_by_ip(if to_self { ip.src } else { ip.dst })?;
            let mut rewrites = vec![rw(26, front.addr, sp, front.port)];
            if to_self {
                rewrites.push(rw(30, ip.src, dp, dport));
            }
            return Some((redirect_to(to, rewrites), Effects::default()));
        }
        if self.endpoint_by_ip(ip.dst).is_some() {
            return None;
        }
        let key = |host_ip| PublishKey {
            host_ip,
            port: dport,
            proto: ip.proto,
            _pad: 0,
        };
        let ep = self
            .v4
            .publish
            .get(&key(ip.dst))
            .or_else(|| self.v4.publish.get(&key([0; 4])))?;
        let to = self.endpoint_by_ip(ep.addr)?;
        if !self.is_local(ip.dst) {
            return None;
        }
        let to_self = ep.addr == ip.src;
        let client = if to_self { ip.dst } else { ip.src };
        let front = NatTarget {
            flags: if to_self { NAT_FLAG_SELF } else { 0 },
            ..target(ip.dst, dport)
        };
        let mut rewrites = vec![rw(30, ep.addr, dp, ep.port)];
        if to_self {
            rewrites.push(rw(26, ip.dst, sp, sport));
        }
        let fx = Effects {
            dnat_ct: Some((Tuple::new(ip.proto, ep.addr, ep.port, client, sport), front)),
            ..Effects::default()
        };
        Some((redirect_to(to, rewrites), fx))
    }

    pub(super) fn apply(&mut self, fx: Effects) {
        self.v4.apply(Changes {
            snat: fx.snat,
            rnat: fx.rnat,
            dnat_ct: fx.dnat_ct,
        });
        self.nat6.apply(fx.nat6);
        if let Some((k, v)) = fx.frag {
            self.frags.insert(k, v);
        }
        if let Some((k, v)) = fx.frag6 {
            self.frags6.insert(k, v);
        }
    }
}
