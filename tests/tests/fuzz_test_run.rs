//! Fuzzing the datapath through BPF_PROG_TEST_RUN (issue #5): a million random and
//! mutated frames through every loaded program — the XDP program, the endpoint tc
//! ingress (fast path), the uplink egress (reverse DNAT of published ports, masquerade
//! SNAT) and the uplink ingress (reverse SNAT, published-port DNAT) — with the maps set
//! up as the daemon would (endpoints, an uplink, masquerade subnets, published ports).
//!
//! Frames start as valid crafted frames (TCP SYN/ACK, UDP with and without checksum,
//! ICMP echo request/reply, ICMP errors quoting TCP/UDP, IPv4 fragments, IP options,
//! VLAN tags, ARP, IPv6, garbage) addressed so that they hit the NAT tables (replies
//! to connections the fuzzer made earlier, connections to published ports, …), then
//! get bits flipped, bytes set, header fields changed, are truncated or extended, and
//! half of the mutated ones get their checksums recomputed so they reach the rewrites.
//!
//! Every frame is checked against a reference model of the datapath kept in this file
//! (its own parser, its own NAT state, its own RFC 1071 checksum): the verdict, the
//! output length, the output bytes outside the checksum fields, byte identity for
//! frames that must pass untouched, valid IPv4 and TCP/UDP/ICMP checksums on outputs of
//! inputs whose checksums were valid, UDP's zero checksum. At the end the kernel's NAT
//! maps must equal the model's and satisfy the invariants on their own: every SNAT
//! entry paired with its RNAT entry and back, NAT ports in the uplink's range, DNAT_CT
//! entries pointing at registered endpoints through a published port, counts in bounds.
//!
//! Hairpin (an endpoint reaching a port published on a host address, and the replies)
//! is modelled exactly too: the fuzz runs in a namespace of its own whose routes the
//! test sets (see `fuzz_namespace`), so which destinations are host addresses — what the
//! program asks the FIB — is known; the model never reads the kernel's maps into itself.
//!
//! The connection state is checked and emptied every 100,000 frames (an epoch, a few
//! seconds), so no connection idles long enough for its port to be reclaimed, which the
//! model, having no clock, does not predict.
//!
//! Seeded: `NETPATH_FUZZ_SEED` (decimal or 0x-hex) replays a run, `NETPATH_FUZZ_FRAMES`
//! changes the frame count. The first failure prints the seed, the frame's index and the
//! input, output and expected frames as hex.

use std::{
    collections::{HashMap, HashSet},
    fmt::Write as _,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use aya::{
    maps::{HashMap as BpfHashMap, Map, MapData},
    programs::{TestRun, TestRunOptions},
};
use netpath::datapath::Datapath;
use netpath_common::{
    maps::{ENDPOINT_KIND_TAP, ENDPOINT_KIND_VETH, EndpointValue, Hook},
    nat::{
        DNAT_CT_MAP, NAT_AGE_MAP, NAT_ENTRIES, NAT_FLAG_INBOUND, NAT_FLAG_SELF, NatAge, NatTarget,
        PORT_RETRIES, PortRange, PublishKey, RNAT_MAP, SNAT_MAP, Tuple, Uplink, nat_port,
        tuple_hash,
    },
};
use netpath_tests::{NetNs, TempPins, require_root};
use rand::{Rng, SeedableRng, rngs::StdRng};

const DEFAULT_SEED: u64 = 0x6e70_6675_7a7a_0005;
const DEFAULT_FRAMES: u64 = 1_000_000;

const TC_ACT_UNSPEC: u32 = u32::MAX;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;
const XDP_PASS: u32 = 2;

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;

const UPLINK_ADDR: [u8; 4] = [192, 0, 2, 2];
const NAT_FIRST: u16 = 40000;
const NAT_LAST: u16 = 40999;
const REMOTES: [[u8; 4]; 3] = [[192, 0, 2, 1], [198, 51, 100, 7], [203, 0, 113, 9]];
const FOREIGN: [u8; 4] = [172, 16, 0, 5];
/// Masqueraded subnets: (network, prefix length, network id).
const MASQ: [([u8; 4], u8, u16); 2] = [([10, 200, 0, 0], 16, 1), ([10, 201, 0, 0], 16, 2)];
const PORTS: [u16; 10] = [80, 443, 53, 8080, 9090, 5353, 22, 40000, 40500, 65535];

// ---------------------------------------------------------------------------------------
// An independent RFC 1071 checksum (deliberately not netpath-common's).

fn sum_be(data: &[u8], mut acc: u64) -> u64 {
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
fn fold_not(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

fn be16(f: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([f[at], f[at + 1]])
}

fn addr(f: &[u8], at: usize) -> [u8; 4] {
    [f[at], f[at + 1], f[at + 2], f[at + 3]]
}

// ---------------------------------------------------------------------------------------
// An independent parser: what the datapath is specified to treat as IPv4.

#[derive(Clone, Copy, Debug)]
struct Ip {
    ihl: usize,
    total: usize,
    proto: u8,
    fragment: bool,
    src: [u8; 4],
    dst: [u8; 4],
}

impl Ip {
    fn l4(&self) -> usize {
        14 + self.ihl
    }
    fn l4_len(&self) -> usize {
        self.total - self.ihl
    }
    /// The minimum L4 header the datapath needs before it touches TCP/UDP/ICMP.
    fn l4_fits(&self) -> bool {
        match self.proto {
            TCP => self.l4_len() >= 20,
            UDP | ICMP => self.l4_len() >= 8,
            _ => true,
        }
    }
}

/// A well-formed IPv4 frame (fragments and any protocol included): IPv4 ethertype,
/// version 4, IHL ≥ 5, total length ≥ header, the whole datagram inside the frame.
fn parse_ip(f: &[u8]) -> Option<Ip> {
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
fn nat_ip(f: &[u8]) -> Option<Ip> {
    parse_ip(f).filter(|ip| !ip.fragment && matches!(ip.proto, TCP | UDP | ICMP) && ip.l4_fits())
}

fn ip_header_valid(f: &[u8], ip: &Ip) -> bool {
    fold_not(sum_be(&f[14..14 + ip.ihl], 0)) == 0
}

/// Offset of the L4 checksum field.
fn l4_csum_at(ip: &Ip) -> usize {
    ip.l4()
        + match ip.proto {
            TCP => 16,
            UDP => 6,
            _ => 2,
        }
}

/// The one's-complement sum over the L4 data (with the pseudo-header for TCP/UDP),
/// the checksum field included: `fold_not` of it is 0 for a valid checksum.
fn l4_sum(f: &[u8], ip: &Ip) -> u64 {
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
fn l4_valid(f: &[u8], ip: &Ip) -> bool {
    if ip.proto == UDP && be16(f, l4_csum_at(ip)) == 0 {
        return true;
    }
    fold_not(l4_sum(f, ip)) == 0
}

/// Recomputes the IPv4 header checksum and, for a non-fragment TCP/UDP/ICMP datagram,
/// the L4 checksum. A zero UDP checksum stays zero unless `udp_compute` (then a
/// computed 0 is sent as 0xffff).
fn fix_checksums(f: &mut [u8], udp_compute: bool) {
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

const ETH_DST: [u8; 6] = [0x02, 0xee, 0, 0, 0, 1];

fn ethernet(dst: [u8; 6], src: [u8; 6], ethertype: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(256);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

struct Ipv4Spec<'a> {
    src: [u8; 4],
    dst: [u8; 4],
    proto: u8,
    frag: u16,
    options: &'a [u8],
}

fn ipv4_header(s: &Ipv4Spec, l4_len: usize) -> Vec<u8> {
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

fn tcp_header(sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(20 + payload.len());
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&0x1122_3344u32.to_be_bytes());
    t.extend_from_slice(&(if flags & 0x10 != 0 { 0x5566_7788u32 } else { 0 }).to_be_bytes());
    t.extend_from_slice(&[0x50, flags, 0xfa, 0xf0, 0, 0, 0, 0]);
    t.extend_from_slice(payload);
    t
}

fn udp_header(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::with_capacity(8 + payload.len());
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

fn icmp_header(kind: u8, code: u8, rest: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut i = vec![kind, code, 0, 0];
    i.extend_from_slice(&rest);
    i.extend_from_slice(payload);
    i
}

/// Ethernet + IPv4 + `l4`, checksums computed (a UDP checksum only if `udp_csum`).
fn ipv4_frame(eth_src: [u8; 6], s: &Ipv4Spec, l4: &[u8], udp_csum: bool) -> Vec<u8> {
    let mut f = ethernet(ETH_DST, eth_src, 0x0800);
    f.extend_from_slice(&ipv4_header(s, l4.len()));
    f.extend_from_slice(l4);
    fix_checksums(&mut f, udp_csum);
    f
}

// ---------------------------------------------------------------------------------------
// The reference model of the NAT programs.

/// One rewrite the model expects: the address at `addr_at` (IPv4 source or destination)
/// and the 16-bit port/identifier at `port_at`.
#[derive(Clone, Copy, Debug)]
struct Rewrite {
    addr_at: usize,
    addr: [u8; 4],
    port_at: usize,
    port: u16,
}

/// How an ICMP error about a masqueraded packet is translated back: the outer
/// destination and the quoted source become `addr`/`port`.
#[derive(Debug)]
struct IcmpErrorBack {
    /// Offset of the quoted IPv4 header.
    inner: usize,
    /// Offset of the quoted source port (ICMP: identifier).
    sport_at: usize,
    /// Offset of the quoted L4 checksum, when the error quotes it.
    l4c_at: Option<usize>,
    addr: [u8; 4],
    port: u16,
}

#[derive(Debug)]
struct Expected {
    /// An ICMP error quoting a masqueraded packet: translated back (checked by
    /// `check_icmp_error`).
    icmp_error: Option<IcmpErrorBack>,
    verdict: u32,
    rewrites: Vec<Rewrite>,
    /// The Ethernet addresses (dst, src) a fast-path redirect writes.
    macs: Option<([u8; 6], [u8; 6])>,
    /// Forwarded as a router does: TTL one lower (the header checksum follows).
    ttl_dec: bool,
}

impl Expected {
    fn pass(verdict: u32) -> Self {
        Expected {
            verdict,
            rewrites: Vec::new(),
            macs: None,
            ttl_dec: false,
            icmp_error: None,
        }
    }
}

/// What the model does to NAT state and counters for one frame (applied only once the
/// kernel's output matched).
#[derive(Default, Debug)]
struct Effects {
    snat: Option<(Tuple, NatTarget)>,
    rnat: Option<(Tuple, NatTarget)>,
    dnat_ct: Option<(Tuple, NatTarget)>,
}

#[derive(Default)]
struct Model {
    snat: HashMap<Tuple, NatTarget>,
    rnat: HashMap<Tuple, NatTarget>,
    dnat_ct: HashMap<Tuple, NatTarget>,
    /// Reply tuples of masqueraded connections and DNAT_CT keys, to craft traffic that
    /// hits them.
    rnat_keys: Vec<Tuple>,
    dnat_keys: Vec<Tuple>,
    publish: HashMap<PublishKey, NatTarget>,
    endpoints: Vec<(EndpointValue, u32)>,
    uplink_ifindex: u32,
    /// The local and broadcast routes of the test's namespace (`ip route show table
    /// local`): what `bpf_fib_lookup` reports as "not forwarded", i.e. a host address.
    local: Vec<Route>,
}

/// A route's destination: (network, prefix length).
type Route = ([u8; 4], u8);

/// `addr:port` with every other byte zero (whatever the flag/padding fields are).
fn target(addr: [u8; 4], port: u16) -> NatTarget {
    // SAFETY: `NatTarget` is a `repr(C)` map value of integers and byte arrays, for
    // which all-zero bytes are a valid value.
    let mut t: NatTarget = unsafe { std::mem::zeroed() };
    t.addr = addr;
    t.port = port;
    t
}

/// The bytes after `addr` and `port`: flags and padding.
fn target_extra(t: &NatTarget) -> [u8; 2] {
    // SAFETY: `NatTarget` is 8 bytes of plain integers without implicit padding.
    let b: [u8; 8] = unsafe { std::mem::transmute(*t) };
    [b[6], b[7]]
}

fn in_masq(a: [u8; 4]) -> bool {
    MASQ.iter().any(|(net, len, _)| {
        let mask = u32::MAX << (32 - u32::from(*len));
        u32::from_be_bytes(a) & mask == u32::from_be_bytes(*net)
    })
}

/// The ports (or ICMP identifier) of a NAT-eligible packet: (sport_at, dport_at).
/// ICMP: only echo of `icmp_type`; None for everything else.
fn ports_at(f: &[u8], ip: &Ip, icmp_type: u8) -> Option<(usize, usize)> {
    let l4 = ip.l4();
    match ip.proto {
        TCP | UDP => Some((l4, l4 + 2)),
        ICMP if f[l4] == icmp_type => Some((l4 + 4, l4 + 4)),
        _ => None,
    }
}

impl Model {
    fn endpoint_by_ifindex(&self, ifindex: u32) -> Option<&EndpointValue> {
        self.endpoints
            .iter()
            .find(|(e, _)| e.ifindex == ifindex)
            .map(|(e, _)| e)
    }
    fn endpoint_by_ip(&self, ip: [u8; 4]) -> Option<&EndpointValue> {
        self.endpoints
            .iter()
            .find(|(e, _)| e.ip == ip)
            .map(|(e, _)| e)
    }

    /// XDP: count and pass, never touch.
    fn xdp(&self) -> (Expected, Effects) {
        (Expected::pass(XDP_PASS), Effects::default())
    }

    /// The endpoint fast path (an independent statement of `forward::decide`).
    fn tc_ingress(&self, f: &[u8], ifindex: u32) -> (Expected, Effects) {
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
        if !ip.fragment && !ip.l4_fits() {
            return pass; // a truncated L4 header: not interpreted
        }
        if ip.src != from.ip {
            return shot;
        }
        if let Some(hairpin) = self.hairpin(f, &ip) {
            return hairpin;
        }
        let Some(to) = self.endpoint_by_ip(ip.dst) else {
            return pass;
        };
        if to.network_id != from.network_id {
            return shot;
        }
        if to.ifindex == from.ifindex {
            return pass;
        }
        (
            Expected {
                verdict: TC_ACT_REDIRECT,
                rewrites: Vec::new(),
                // Sent on-link to the endpoint: bridged, MACs kept; else routed.
                macs: (f[..6] != to.mac).then_some((to.mac, to.host_mac)),
                ttl_dec: false,
                icmp_error: None,
            },
            Effects::default(),
        )
    }

    /// Uplink egress: replies of published connections get the published source;
    /// otherwise masquerade (on an uplink, from a masqueraded subnet).
    fn uplink_egress(&self, f: &[u8], ifindex: u32) -> (Expected, Effects) {
        let mut fx = Effects::default();
        let Some(ip) = nat_ip(f) else {
            return (Expected::pass(TC_ACT_UNSPEC), fx);
        };
        if ip.proto != ICMP {
            let (sp, dp) = (ip.l4(), ip.l4() + 2);
            let key = Tuple::new(ip.proto, ip.src, be16(f, sp), ip.dst, be16(f, dp));
            if let Some(front) = self.dnat_ct.get(&key) {
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
        let t = match self.snat.get(&orig) {
            Some(t) => *t,
            None => {
                let range = PortRange {
                    first: NAT_FIRST,
                    last: NAT_LAST,
                };
                let hash = tuple_hash(&orig);
                let free = (0..PORT_RETRIES)
                    .map(|a| nat_port(sport, hash, a, range))
                    .find(|p| {
                        !self.rnat.contains_key(&Tuple::new(
                            ip.proto,
                            ip.dst,
                            dport,
                            UPLINK_ADDR,
                            *p,
                        ))
                    });
                let Some(port) = free else {
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
    fn icmp_error_back(&self, f: &[u8], ip: &Ip) -> Option<IcmpErrorBack> {
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
        let (proto, in_src, in_dst) = (f[inner + 9], addr(f, inner + 12), addr(f, inner + 16));
        let l4 = inner + 20;
        let (sport, dport, sport_at, l4c) = match proto {
            TCP => (be16(f, l4), be16(f, l4 + 2), l4, l4 + 16),
            UDP => (be16(f, l4), be16(f, l4 + 2), l4, l4 + 6),
            ICMP if f[l4] == 8 => (be16(f, l4 + 4), 0, l4 + 4, l4 + 2),
            _ => return None,
        };
        let back = self
            .rnat
            .get(&Tuple::new(proto, in_dst, dport, in_src, sport))?;
        Some(IcmpErrorBack {
            inner,
            sport_at,
            l4c_at: (l4c + 2 <= end).then_some(l4c),
            addr: back.addr,
            port: back.port,
        })
    }

    /// A translated reply is done: it is never also taken for a published port.
    fn uplink_ingress(&self, f: &[u8]) -> (Expected, Effects) {
        let mut fx = Effects::default();
        let Some(ip) = nat_ip(f) else {
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
            if let Some(back) = self.rnat.get(&key) {
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
            let ep = self
                .publish
                .get(&key(dst))
                .or_else(|| host_addr.then(|| self.publish.get(&key([0; 4]))).flatten());
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
                && !self.snat.contains_key(&reply)
                && !self.dnat_ct.contains_key(&reply)
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
    fn inbound(&self, f: &[u8], to: [u8; 4], rewrites: Vec<Rewrite>) -> Expected {
        match self.endpoint_by_ip(to) {
            Some(ep) if f[22] > 1 && f.len() <= 14 + 1500 => Expected {
                verdict: TC_ACT_REDIRECT,
                rewrites,
                macs: (f[..6] != ep.mac).then_some((ep.mac, ep.host_mac)),
                ttl_dec: true,
                icmp_error: None,
            },
            _ => Expected {
                rewrites,
                ..Expected::pass(TC_ACT_UNSPEC)
            },
        }
    }

    /// Whether `dst` is a host address as the kernel's FIB sees it (`route::is_local`).
    fn is_local(&self, dst: [u8; 4]) -> bool {
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
    fn hairpin(&self, f: &[u8], ip: &Ip) -> Option<(Expected, Effects)> {
        let ip = nat_ip(f).filter(|_| ip.proto != ICMP)?;
        let (sp, dp) = (ip.l4(), ip.l4() + 2);
        let (sport, dport) = (be16(f, sp), be16(f, dp));
        let redirect_to = |to: &EndpointValue, rewrites| Expected {
            verdict: TC_ACT_REDIRECT,
            rewrites,
            macs: (f[..6] != to.mac).then_some((to.mac, to.host_mac)),
            ttl_dec: false,
            icmp_error: None,
        };
        let rw = |addr_at, addr, port_at, port| Rewrite {
            addr_at,
            addr,
            port_at,
            port,
        };
        if let Some(front) = self
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
            .publish
            .get(&key(ip.dst))
            .or_else(|| self.publish.get(&key([0; 4])))?;
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

    fn apply(&mut self, fx: Effects) {
        if let Some((k, v)) = fx.snat {
            self.snat.insert(k, v);
        }
        if let Some((k, v)) = fx.rnat {
            self.rnat.insert(k, v);
            self.rnat_keys.push(k);
        }
        if let Some((k, v)) = fx.dnat_ct
            && self.dnat_ct.insert(k, v).is_none()
        {
            self.dnat_keys.push(k);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The checks of one frame.

fn hex(f: &[u8]) -> String {
    let mut s = String::with_capacity(f.len() * 2);
    for b in f {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The expected output frame (checksum fields aside) and the checksum fields' offsets.
fn expected_frame(input: &[u8], e: &Expected) -> Vec<u8> {
    let mut x = input.to_vec();
    if let Some((dst, src)) = e.macs {
        x[..6].copy_from_slice(&dst);
        x[6..12].copy_from_slice(&src);
    }
    for rw in &e.rewrites {
        x[rw.addr_at..rw.addr_at + 4].copy_from_slice(&rw.addr);
        x[rw.port_at..rw.port_at + 2].copy_from_slice(&rw.port.to_be_bytes());
    }
    if e.ttl_dec {
        x[22] -= 1;
    }
    x
}

#[derive(Default)]
struct Tally {
    rewritten: u64,
    rewritten_valid: u64,
    shot: u64,
    redirected: u64,
    refused: u64,
    untouched: u64,
    hairpinned: u64,
}

/// Checks the kernel's output against the model's expectation; Err describes the first
/// violated property.
fn check(input: &[u8], verdict: u32, out: &[u8], e: &Expected) -> Result<(), String> {
    if let Some(back) = &e.icmp_error {
        return check_icmp_error(input, verdict, out, back);
    }
    if verdict != e.verdict {
        return Err(format!("verdict {verdict:#x}, expected {:#x}", e.verdict));
    }
    if out.len() != input.len() {
        return Err(format!("length {} → {}", input.len(), out.len()));
    }
    let want = expected_frame(input, e);
    if e.rewrites.is_empty() || verdict == TC_ACT_SHOT {
        // Dropped frames are not checked byte for byte beyond this: a drop may come after
        // a partial rewrite in principle; the datapath never sends them.
        if verdict != TC_ACT_SHOT && out != want {
            return Err("frame must pass untouched (apart from a redirect's MACs)".into());
        }
        return Ok(());
    }
    let ip = nat_ip(input).expect("rewrites only for NAT-eligible frames");
    let l4c = l4_csum_at(&ip);
    for (i, (o, w)) in out.iter().zip(&want).enumerate() {
        let csum = (24..26).contains(&i) || (l4c..l4c + 2).contains(&i);
        if !csum && o != w {
            return Err(format!("byte {i}: {o:#04x}, expected {w:#04x}"));
        }
    }
    let out_ip = nat_ip(out).ok_or("output is no longer a NAT-eligible IPv4 packet")?;
    let in_udp_csum = be16(input, l4c);
    if ip.proto == UDP {
        let o = be16(out, l4c);
        if in_udp_csum == 0 && o != 0 {
            return Err(format!("UDP zero checksum became {o:#06x}"));
        }
        if in_udp_csum != 0 && o == 0 {
            return Err("UDP checksum became zero (\"no checksum\")".into());
        }
    }
    if ip_header_valid(input, &ip) && !ip_header_valid(out, &out_ip) {
        return Err(format!(
            "IPv4 header checksum of a valid input is invalid on output ({:#06x})",
            be16(out, 24)
        ));
    }
    if l4_valid(input, &ip) && !l4_valid(out, &out_ip) {
        return Err(format!(
            "L4 (proto {}) checksum of a valid input is invalid on output ({:#06x}, in {:#06x})",
            ip.proto,
            be16(out, l4c),
            in_udp_csum
        ));
    }
    Ok(())
}

/// An ICMP error translated back: only the outer destination, the quoted source and
/// the four checksums covering them change, to exactly the expected values, and every
/// checksum that was valid stays valid (the ICMP one over the whole quote).
fn check_icmp_error(
    input: &[u8],
    verdict: u32,
    out: &[u8],
    b: &IcmpErrorBack,
) -> Result<(), String> {
    if verdict != TC_ACT_UNSPEC {
        return Err(format!("verdict {verdict:#x} for an ICMP error"));
    }
    if out.len() != input.len() {
        return Err(format!("length {} → {}", input.len(), out.len()));
    }
    let ip = nat_ip(input).expect("ICMP errors are NAT-eligible");
    let mut want = input.to_vec();
    want[30..34].copy_from_slice(&b.addr);
    want[b.inner + 12..b.inner + 16].copy_from_slice(&b.addr);
    want[b.sport_at..b.sport_at + 2].copy_from_slice(&b.port.to_be_bytes());
    let csums = [Some(24), Some(ip.l4() + 2), Some(b.inner + 10), b.l4c_at];
    for (i, (o, w)) in out.iter().zip(&want).enumerate() {
        let csum = csums.iter().flatten().any(|c| (*c..*c + 2).contains(&i));
        if !csum && o != w {
            return Err(format!("ICMP error byte {i}: {o:#04x}, expected {w:#04x}"));
        }
    }
    let out_ip = nat_ip(out).ok_or("output is no longer a valid IPv4 ICMP packet")?;
    if ip_header_valid(input, &ip) && !ip_header_valid(out, &out_ip) {
        return Err("outer IPv4 checksum of a valid input is invalid on output".into());
    }
    if l4_valid(input, &ip) && !l4_valid(out, &out_ip) {
        return Err("ICMP checksum of a valid input is invalid on output".into());
    }
    let inner_valid = |f: &[u8]| fold_not(sum_be(&f[b.inner..b.inner + 20], 0)) == 0;
    if inner_valid(input) && !inner_valid(out) {
        return Err("quoted IPv4 checksum of a valid input is invalid on output".into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Frame generation.

struct Gen {
    rng: StdRng,
}

impl Gen {
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.rng.random_range(0..xs.len())]
    }
    fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }
    fn port(&mut self) -> u16 {
        match self.rng.random_range(0..10) {
            0..5 => self.pick(&PORTS),
            5..8 => 50000 + self.rng.random_range(0..64),
            _ => self.rng.random(),
        }
    }
    fn payload(&mut self) -> Vec<u8> {
        let n = match self.rng.random_range(0..4) {
            0 => 0,
            1 => self.rng.random_range(1..8),
            2 => self.rng.random_range(8..64),
            _ => self.rng.random_range(64..400),
        };
        (0..n).map(|_| self.rng.random()).collect()
    }
    fn options(&mut self) -> Vec<u8> {
        let words = self.rng.random_range(1..=10);
        let mut o: Vec<u8> = (0..words * 4).map(|_| self.rng.random()).collect();
        if self.chance(0.5) {
            o.fill(1); // NOPs
            let last = o.len() - 1;
            o[last] = 0; // end of options
        }
        o
    }
    fn masq_src(&mut self, m: &Model) -> [u8; 4] {
        match self.rng.random_range(0..5) {
            0..3 => self.pick(&m.endpoints).0.ip,
            3 => [10, 200, self.rng.random_range(0..4), self.rng.random()],
            _ => [10, 201, 0, self.rng.random_range(1..8)],
        }
    }
    fn any_addr(&mut self) -> [u8; 4] {
        match self.rng.random_range(0..6) {
            0 => UPLINK_ADDR,
            1 => FOREIGN,
            2 => [10, 200, 0, self.rng.random_range(1..6)],
            3 => [127, 0, 0, 1],
            _ => self.rng.random(),
        }
    }

    /// A valid base frame of a random kind, between the given endpoints.
    fn base(
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
    /// then recomputes the checksums of half of them.
    fn mutate(&mut self, f: &mut Vec<u8>) {
        for _ in 0..self.rng.random_range(1..=3) {
            let len = f.len();
            match self.rng.random_range(0..100) {
                // Bit flip, mostly in the headers.
                0..30 => {
                    let at = if self.chance(0.8) {
                        self.rng.random_range(0..len.min(74))
                    } else {
                        self.rng.random_range(0..len)
                    };
                    f[at] ^= 1 << self.rng.random_range(0..8);
                }
                30..45 => {
                    let at = self.rng.random_range(0..len.min(74));
                    f[at] = self.rng.random();
                }
                // Header fields: version/IHL, total length, fragment field, protocol,
                // addresses, ports, ICMP type.
                45..75 if len >= 38 => match self.rng.random_range(0..8) {
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
                },
                // Truncate (rarely below an Ethernet or IPv4 header).
                75..88 => {
                    let min = if self.chance(0.05) { 0 } else { 34.min(len) };
                    let n = self.rng.random_range(min..=len);
                    f.truncate(n);
                }
                // Extend: Ethernet padding or trailing garbage.
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
            fix_checksums(f, false);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Kernel maps.

fn open_map(dp: &Datapath, name: &str) -> BpfHashMap<MapData, Tuple, NatTarget> {
    let data = MapData::from_pin(dp.pins().map(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let map = Map::from_map_data(data).unwrap_or_else(|e| panic!("{name}: {e}"));
    BpfHashMap::try_from(map).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn read_map(dp: &Datapath, name: &str) -> HashMap<Tuple, NatTarget> {
    open_map(dp, name)
        .iter()
        .map(|r| r.unwrap_or_else(|e| panic!("iterating {name}: {e}")))
        .collect()
}

/// Frames per epoch of NAT state (see the frame loop): ~3 s at this machine's rate.
const EPOCH: u64 = 100_000;

/// Empties the kernel's connection maps (SNAT, RNAT, DNAT_CT, NAT_AGE) and the model's.
fn clear_nat_state(dp: &Datapath, model: &mut Model) {
    for name in [SNAT_MAP, RNAT_MAP, DNAT_CT_MAP] {
        let mut map = open_map(dp, name);
        let keys: Vec<Tuple> = map.keys().filter_map(Result::ok).collect();
        for k in keys {
            let _ = map.remove(&k);
        }
    }
    let data = MapData::from_pin(dp.pins().map(NAT_AGE_MAP)).expect("NAT_AGE pin");
    let mut ages: BpfHashMap<MapData, Tuple, NatAge> =
        BpfHashMap::try_from(Map::from_map_data(data).expect("NAT_AGE map")).expect("NAT_AGE");
    let keys: Vec<Tuple> = ages.keys().filter_map(Result::ok).collect();
    for k in keys {
        let _ = ages.remove(&k);
    }
    model.snat.clear();
    model.rnat.clear();
    model.dnat_ct.clear();
    model.rnat_keys.clear();
    model.dnat_keys.clear();
}

/// The NAT maps' invariants, on the kernel's maps alone.
fn check_maps(dp: &Datapath, model: &Model) {
    let snat = read_map(dp, SNAT_MAP);
    let rnat = read_map(dp, RNAT_MAP);
    let dnat_ct = read_map(dp, DNAT_CT_MAP);
    println!(
        "maps: {} SNAT, {} RNAT, {} DNAT_CT entries (max {NAT_ENTRIES} each)",
        snat.len(),
        rnat.len(),
        dnat_ct.len()
    );
    for (name, m) in [("SNAT", &snat), ("RNAT", &rnat), ("DNAT_CT", &dnat_ct)] {
        assert!(
            m.len() <= NAT_ENTRIES as usize,
            "{name}: {} entries",
            m.len()
        );
    }
    assert!(dp.published_count() <= netpath_common::nat::MAX_PUBLISHED as usize);
    for (orig, t) in &snat {
        assert_eq!(
            target_extra(t),
            [0; 2],
            "SNAT {orig:?}: flags/padding {t:?}"
        );
        assert_eq!(orig._pad, [0; 3], "SNAT key padding {orig:?}");
        assert!(matches!(orig.proto, TCP | UDP | ICMP), "SNAT {orig:?}");
        assert!(
            in_masq(orig.src),
            "SNAT of a non-masqueraded source {orig:?}"
        );
        assert_eq!(t.addr, UPLINK_ADDR, "SNAT {orig:?} → {t:?}");
        assert!(
            (NAT_FIRST..=NAT_LAST).contains(&t.port),
            "SNAT {orig:?}: port {} outside {NAT_FIRST}-{NAT_LAST}",
            t.port
        );
        if orig.proto == ICMP {
            assert_eq!(orig.dport, 0, "ICMP SNAT key {orig:?}");
        }
        let reply = Tuple::new(orig.proto, orig.dst, orig.dport, t.addr, t.port);
        assert_eq!(
            rnat.get(&reply),
            Some(&target(orig.src, orig.sport)),
            "SNAT {orig:?} → {t:?} has no matching RNAT {reply:?}"
        );
    }
    for (reply, back) in &rnat {
        assert_eq!(
            target_extra(back),
            [0; 2],
            "RNAT {reply:?}: flags/padding {back:?}"
        );
        let orig = Tuple::new(reply.proto, back.addr, back.port, reply.src, reply.sport);
        assert_eq!(
            snat.get(&orig),
            Some(&target(reply.dst, reply.dport)),
            "RNAT {reply:?} → {back:?} has no matching SNAT {orig:?}"
        );
    }
    let endpoints: HashSet<[u8; 4]> = dp
        .endpoints()
        .expect("endpoints")
        .into_iter()
        .map(|(ip, _)| ip.octets())
        .collect();
    for (reply, front) in &dnat_ct {
        assert!(
            endpoints.contains(&reply.src),
            "DNAT_CT {reply:?} → {front:?}: {:?} is not a registered endpoint",
            reply.src
        );
        if front.flags & NAT_FLAG_INBOUND != 0 {
            // A connection routed in: the endpoint's own address and port are its front.
            assert_eq!(
                (front.addr, front.port),
                (reply.src, reply.sport),
                "DNAT_CT {reply:?} → {front:?}: an inbound entry's front is not its endpoint"
            );
            continue;
        }
        let published = [front.addr, [0; 4]].iter().any(|host_ip| {
            model.publish.get(&PublishKey {
                host_ip: *host_ip,
                port: front.port,
                proto: reply.proto,
                _pad: 0,
            }) == Some(&target(reply.src, reply.sport))
        });
        assert!(
            published,
            "DNAT_CT {reply:?} → {front:?}: no published port leads there"
        );
    }
    // And the kernel's state is exactly the model's: no entry lost (evicted), none extra.
    assert_eq!(snat, model.snat, "SNAT map differs from the model");
    assert_eq!(rnat, model.rnat, "RNAT map differs from the model");
    assert_eq!(dnat_ct, model.dnat_ct, "DNAT_CT map differs from the model");
}

// ---------------------------------------------------------------------------------------

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    let parsed = match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => v.parse(),
    };
    Some(parsed.unwrap_or_else(|e| panic!("{name}={v}: {e}")))
}

const SKB_IFINDEX: usize = 40;

/// A device of namespace `ns` (a veth pair, both ends up) that exists for its ifindex:
/// BPF_PROG_TEST_RUN resolves `__sk_buff.ifindex`, and `bpf_fib_lookup` routes, in the
/// caller's namespace.
struct Dev {
    ifindex: u32,
}

impl Dev {
    fn new(ns: &NetNs, name: &str) -> Dev {
        let peer = format!("{name}p");
        ns.exec(&[
            "ip", "link", "add", name, "type", "veth", "peer", "name", &peer,
        ]);
        ns.exec(&["ip", "link", "set", name, "up"]);
        ns.exec(&["ip", "link", "set", &peer, "up"]);
        let out = ns.exec(&["ip", "-j", "link", "show", name]);
        let links: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j");
        Dev {
            ifindex: links[0]["ifindex"].as_u64().expect("ifindex") as u32,
        }
    }
}

/// The namespace the fuzz runs in, so that hairpin (which asks the FIB whether a
/// destination is a host address) is predictable: the uplink's address on its device, a
/// default route through another device, forwarding on, and nothing else. Returns the namespace,
/// its devices (uplink, another device, three endpoints') and its local routes.
fn fuzz_namespace() -> (NetNs, [Dev; 5], Vec<Route>) {
    let ns = NetNs::new("fz");
    ns.exec(&["ip", "link", "set", "lo", "up"]);
    let devs = ["fzu", "fzo", "fz0", "fz1", "fz2"].map(|n| Dev::new(&ns, n));
    // The uplink's address alone (/32: no subnet route through the uplink), and the
    // default route through the other device — as on a host whose uplink is not the
    // default route's device, so that the fast path routes nothing out by itself.
    let up = Ipv4Addr::from(UPLINK_ADDR);
    ns.exec(&["ip", "addr", "add", &format!("{up}/32"), "dev", "fzu"]);
    ns.exec(&["ip", "addr", "add", "198.18.0.1/24", "dev", "fzo"]);
    ns.exec(&["ip", "route", "add", "default", "via", "198.18.0.254"]);
    ns.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    let out = ns.exec(&["ip", "-j", "route", "show", "table", "local"]);
    let routes: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j route");
    let local = routes
        .as_array()
        .expect("routes")
        .iter()
        .filter(|r| matches!(r["type"].as_str(), Some("local" | "broadcast")))
        .map(|r| {
            let dst = r["dst"].as_str().expect("dst");
            let (a, len) = dst.split_once('/').unwrap_or((dst, "32"));
            let a: Ipv4Addr = a.parse().expect("IPv4 route");
            (a.octets(), len.parse().expect("prefix"))
        })
        .collect();
    (ns, devs, local)
}

#[test]
fn fuzz_nat_and_fast_path_with_a_million_frames() {
    require_root!();
    let seed = env_u64("NETPATH_FUZZ_SEED").unwrap_or(DEFAULT_SEED);
    let frames = env_u64("NETPATH_FUZZ_FRAMES").unwrap_or(DEFAULT_FRAMES);
    println!("fuzz: seed {seed:#x} (NETPATH_FUZZ_SEED), {frames} frames (NETPATH_FUZZ_FRAMES)");
    let (ns, devs, local) = fuzz_namespace();
    println!("fuzz: host addresses and broadcasts in its namespace: {local:?}");
    ns.enter(|| fuzz(seed, frames, devs, local));
}

fn fuzz(seed: u64, frames: u64, devs: [Dev; 5], local: Vec<Route>) {
    let pins = TempPins::new();
    let mut dp = Datapath::open(&pins.path, false).expect("load datapath");
    let [uplink, other_dev, d0, d1, d2] = devs;
    let devs = [d0, d1, d2];
    let mut model = Model {
        uplink_ifindex: uplink.ifindex,
        local,
        ..Model::default()
    };
    let eps = [
        ([10, 200, 0, 2], 1, ENDPOINT_KIND_VETH),
        ([10, 200, 0, 3], 1, ENDPOINT_KIND_TAP),
        ([10, 201, 0, 5], 2, ENDPOINT_KIND_VETH),
    ];
    for (i, ((ip, net, kind), dev)) in eps.into_iter().zip(&devs).enumerate() {
        let e = EndpointValue {
            ip,
            ifindex: dev.ifindex,
            mac: [0x02, 0, 0, 0, 0, 0x10 + i as u8],
            host_mac: [0x02, 0xee, 0, 0, net as u8, i as u8],
            network_id: net,
            kind,
            flags: 0,
        };
        dp.upsert_endpoint(e).expect("endpoint");
        model.endpoints.push((e, dev.ifindex));
    }
    dp.set_uplink(
        uplink.ifindex,
        Uplink {
            addr: UPLINK_ADDR,
            first_port: NAT_FIRST,
            last_port: NAT_LAST,
        },
    )
    .unwrap();
    for (net, len, id) in MASQ {
        dp.add_masq_subnet(ipnet::Ipv4Net::new(net.into(), len).unwrap(), id)
            .unwrap();
    }
    // The host's addresses as the daemon would list them: 0.0.0.0 publishes answer there.
    dp.set_local_addrs(&[UPLINK_ADDR.into()]).unwrap();
    let (ep_a, ep_b, ep_c) = (eps[0].0, eps[1].0, eps[2].0);
    for (proto, host_ip, port, ep, ep_port) in [
        (TCP, [0; 4], 8080, ep_a, 80),
        (UDP, [0; 4], 8080, ep_b, 53),
        (TCP, UPLINK_ADDR, 9090, ep_a, 90),
        (UDP, UPLINK_ADDR, 5353, ep_c, 5353),
        (TCP, [127, 0, 0, 1], 9091, ep_b, 91),
    ] {
        let key = PublishKey {
            host_ip,
            port,
            proto,
            _pad: 0,
        };
        dp.publish(key, target(ep, ep_port)).unwrap();
        model.publish.insert(key, target(ep, ep_port));
    }

    let mut g = Gen {
        rng: StdRng::seed_from_u64(seed),
    };
    let mut tally = Tally::default();
    let mut per_hook: HashMap<Hook, u64> = HashMap::new();
    let mut in_kernel = Duration::ZERO;
    let mut out = vec![0u8; 4096];
    let started = Instant::now();
    for n in 0..frames {
        if n > 0 && n % EPOCH == 0 {
            // Connections idle for 30 s may lose their NAT port (ICMP, unanswered UDP);
            // the model has no clock. Every epoch is far shorter than that, even on a
            // loaded machine: check the maps, then start the NAT state afresh.
            check_maps(&dp, &model);
            clear_nat_state(&dp, &mut model);
        }
        let hook = match g.rng.random_range(0..100) {
            0..15 => Hook::Xdp,
            15..40 => Hook::TcIngress,
            40..70 => Hook::UplinkEgress,
            _ => Hook::UplinkIngress,
        };
        // The device and a frame fit for it, so that it reaches the interesting paths.
        let (ifindex, mut frame) = match hook {
            Hook::UplinkEgress => {
                let ifindex = if g.chance(0.05) {
                    other_dev.ifindex
                } else {
                    uplink.ifindex
                };
                let f = if !model.dnat_keys.is_empty() && g.chance(0.25) {
                    // A reply of a connection to a published port.
                    let k = g.pick(&model.dnat_keys);
                    let kind = if k.proto == TCP { 0 } else { 1 };
                    let l4 = if kind == 0 {
                        tcp_header(k.sport, k.dport, 0x12, &g.payload())
                    } else {
                        udp_header(k.sport, k.dport, &g.payload())
                    };
                    let spec = Ipv4Spec {
                        src: k.src,
                        dst: k.dst,
                        proto: k.proto,
                        frag: 0,
                        options: &[],
                    };
                    ipv4_frame([2, 0, 0, 0, 0, 0x10], &spec, &l4, g.chance(0.8))
                } else {
                    let src = if g.chance(0.9) {
                        g.masq_src(&model)
                    } else {
                        FOREIGN
                    };
                    let (sport, dst, dport) = (g.port(), g.pick(&REMOTES), g.port());
                    g.base([2, 0, 0, 0, 0, 0x10], src, sport, dst, dport, 8)
                };
                (ifindex, f)
            }
            Hook::UplinkIngress => {
                let f = if !model.rnat_keys.is_empty() && g.chance(0.45) {
                    // A reply of a masqueraded connection.
                    let k = g.pick(&model.rnat_keys);
                    g.base([2, 0, 0, 0, 0, 0x99], k.src, k.sport, k.dst, k.dport, 0)
                } else {
                    let src = if g.chance(0.7) {
                        g.pick(&REMOTES)
                    } else {
                        g.any_addr()
                    };
                    let dst = if g.chance(0.7) {
                        UPLINK_ADDR
                    } else {
                        g.any_addr()
                    };
                    let dport = g.pick(&[8080, 9090, 5353, 9091, 80, 40000, 40001]);
                    let sport = g.port();
                    g.base([2, 0, 0, 0, 0, 0x99], src, sport, dst, dport, 8)
                };
                (uplink.ifindex, f)
            }
            Hook::TcIngress => {
                let i = g.rng.random_range(0..4);
                let reply_of = (!model.dnat_keys.is_empty() && g.chance(0.1))
                    .then(|| g.pick(&model.dnat_keys))
                    .and_then(|k| Some((model.endpoint_by_ip(k.src)?.ifindex, k)));
                if let Some((ifindex, k)) = reply_of {
                    // An endpoint answering a connection to its published port (a
                    // hairpinned one, or from outside).
                    let e = model.endpoint_by_ifindex(ifindex).expect("endpoint");
                    let l4 = if k.proto == TCP {
                        tcp_header(k.sport, k.dport, 0x12, &g.payload())
                    } else {
                        udp_header(k.sport, k.dport, &g.payload())
                    };
                    let spec = Ipv4Spec {
                        src: k.src,
                        dst: k.dst,
                        proto: k.proto,
                        frag: 0,
                        options: &[],
                    };
                    (ifindex, ipv4_frame(e.mac, &spec, &l4, g.chance(0.8)))
                } else if i < 3 && g.chance(0.08) {
                    // An endpoint reaching a port published on a host address.
                    let (e, ifindex) = model.endpoints[i];
                    let dst = g.pick(&[UPLINK_ADDR, [127, 0, 0, 1]]);
                    let dport = g.pick(&[8080, 9090, 5353, 9091]);
                    let sport = g.port();
                    let proto = g.pick(&[TCP, UDP]);
                    let l4 = if proto == TCP {
                        tcp_header(sport, dport, 0x02, &g.payload())
                    } else {
                        udp_header(sport, dport, &g.payload())
                    };
                    let spec = Ipv4Spec {
                        src: e.ip,
                        dst,
                        proto,
                        frag: 0,
                        options: &[],
                    };
                    (ifindex, ipv4_frame(e.mac, &spec, &l4, g.chance(0.8)))
                } else if i == 3 {
                    let src = g.any_addr();
                    (
                        other_dev.ifindex,
                        g.base([2, 0, 0, 0, 0, 1], src, 1, ep_a, 2, 8),
                    )
                } else {
                    let (e, ifindex) = model.endpoints[i];
                    let mac = if g.chance(0.9) {
                        e.mac
                    } else {
                        [2, 0, 0, 0, 0, 0x66]
                    };
                    let src = if g.chance(0.9) {
                        e.ip
                    } else {
                        g.masq_src(&model)
                    };
                    let dst = match g.rng.random_range(0..4) {
                        0..2 => g.pick(&model.endpoints).0.ip,
                        2 => g.pick(&REMOTES),
                        _ => g.any_addr(),
                    };
                    let (sport, dport) = (g.port(), g.port());
                    let mut f = g.base(mac, src, sport, dst, dport, 8);
                    // Half the frames to an endpoint are addressed to it on-link (as
                    // in bridge mode), the others to the gateway (routed).
                    if let Some((to, _)) = model.endpoints.iter().find(|(e, _)| e.ip == dst)
                        && g.chance(0.5)
                    {
                        f[..6].copy_from_slice(&to.mac);
                    }
                    (ifindex, f)
                }
            }
            Hook::Xdp => {
                let (src, dst) = (g.any_addr(), g.any_addr());
                let (sport, dport) = (g.port(), g.port());
                (0, g.base([2, 0, 0, 0, 0, 3], src, sport, dst, dport, 8))
            }
        };
        if g.chance(0.6) {
            g.mutate(&mut frame);
        }
        *per_hook.entry(hook).or_default() += 1;

        let mut ctx = [0u8; 48];
        ctx[SKB_IFINDEX..SKB_IFINDEX + 4].copy_from_slice(&ifindex.to_ne_bytes());
        let opts = TestRunOptions {
            data_in: Some(&frame),
            data_out: Some(&mut out),
            ctx_in: if hook == Hook::Xdp { None } else { Some(&ctx) },
            ..TestRunOptions::default()
        };
        let t0 = Instant::now();
        let r = match hook {
            Hook::Xdp => dp.xdp().test_run(opts),
            tc => dp.tc_prog(tc).test_run(opts),
        };
        in_kernel += t0.elapsed();
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                // The kernel refuses to build a packet from less than an Ethernet header,
                // and (for an skb) from an IPv4 ethertype without a full IPv4 header or
                // an IPv6 one without an IPv6 header. Nothing else may fail.
                let et = if frame.len() >= 14 {
                    be16(&frame, 12)
                } else {
                    0
                };
                let short = frame.len() < 14
                    || hook != Hook::Xdp
                        && (et == 0x0800 && frame.len() < 34 || et == 0x86dd && frame.len() < 54);
                if short {
                    tally.refused += 1;
                    continue;
                }
                fail(
                    seed,
                    n,
                    hook,
                    ifindex,
                    &frame,
                    &[],
                    None,
                    &format!("test_run failed: {e}"),
                );
            }
        };
        let output = &out[..r.data_size_out as usize];
        let (expected, fx) = match hook {
            Hook::Xdp => model.xdp(),
            Hook::TcIngress => model.tc_ingress(&frame, ifindex),
            Hook::UplinkEgress => model.uplink_egress(&frame, ifindex),
            Hook::UplinkIngress => model.uplink_ingress(&frame),
        };
        if let Err(msg) = check(&frame, r.return_value, output, &expected) {
            let want = expected_frame(&frame, &expected);
            fail(seed, n, hook, ifindex, &frame, output, Some(&want), &msg);
        }
        if hook == Hook::TcIngress && !expected.rewrites.is_empty() {
            tally.hairpinned += 1;
        }
        match r.return_value {
            TC_ACT_SHOT if hook != Hook::Xdp => tally.shot += 1,
            TC_ACT_REDIRECT if hook == Hook::TcIngress => tally.redirected += 1,
            _ if !expected.rewrites.is_empty() => {
                tally.rewritten += 1;
                if let Some(ip) = nat_ip(&frame)
                    && ip_header_valid(&frame, &ip)
                    && l4_valid(&frame, &ip)
                {
                    tally.rewritten_valid += 1;
                }
            }
            _ => tally.untouched += 1,
        }
        model.apply(fx);
    }
    let elapsed = started.elapsed();
    println!(
        "fuzz: {frames} frames in {:.1?} ({:.1?} in BPF_PROG_TEST_RUN, {:.2} µs per run)",
        elapsed,
        in_kernel,
        in_kernel.as_secs_f64() * 1e6 / frames as f64
    );
    let mut hooks: Vec<_> = per_hook.into_iter().collect();
    hooks.sort_by_key(|(h, _)| *h as u32);
    for (h, c) in hooks {
        println!("  {:>15}: {c} frames", h.name());
    }
    println!(
        "  NAT-rewritten: {} ({} with valid input checksums, outputs verified), dropped: {}, \
         redirected: {}, passed untouched: {}, refused by the kernel (short): {}",
        tally.rewritten,
        tally.rewritten_valid,
        tally.shot,
        tally.redirected,
        tally.untouched,
        tally.refused
    );
    println!("  hairpinned: {}", tally.hairpinned);
    assert!(tally.hairpinned > 0, "no frame was hairpinned");
    assert!(
        tally.rewritten_valid > frames / 20,
        "too few valid frames reached a rewrite"
    );
    check_maps(&dp, &model);
}

#[expect(
    clippy::too_many_arguments,
    reason = "one call site; a struct of the same fields would only rename them"
)]
fn fail(
    seed: u64,
    n: u64,
    hook: Hook,
    ifindex: u32,
    input: &[u8],
    output: &[u8],
    expected: Option<&[u8]>,
    msg: &str,
) -> ! {
    eprintln!(
        "FUZZ FAILURE at frame {n} (seed {seed:#x}), {} on ifindex {ifindex}: {msg}",
        hook.name()
    );
    eprintln!("  input    ({:4} bytes): {}", input.len(), hex(input));
    eprintln!("  output   ({:4} bytes): {}", output.len(), hex(output));
    if let Some(x) = expected {
        eprintln!(
            "  expected ({:4} bytes): {} (checksum fields aside)",
            x.len(),
            hex(x)
        );
    }
    panic!("fuzz failure at frame {n} (seed {seed:#x}): {msg}");
}
