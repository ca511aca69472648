//! The NAT of the uplinks and of hairpin traffic:
//! - egress masquerade: SNAT of connections from netpath networks to the uplink's address
//!   (tc egress) and the reverse translation of their replies (tc ingress), with state in
//!   two LRU maps written as a pair, `NETPATH_SNAT` (original tuple → new source) and
//!   `NETPATH_RNAT` (reply tuple → original source), ages in `NETPATH_NAT_AGE`, and
//!   per-network exemptions in `NETPATH_NO_MASQ`; TCP, UDP (a zero UDP checksum stays
//!   zero), ICMP echo (by identifier) and ICMP errors about them;
//! - published ports: DNAT on the uplink's ingress (`NETPATH_PUBLISH`), the replies'
//!   source restored on its egress (`NETPATH_DNAT_CT`), which also records connections
//!   routed in to an endpoint's own address so their replies are left alone;
//! - hairpin: endpoints reaching a published port on a host address, on their own device.
//!
//! Fragments and everything else go to the kernel path untouched.

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, BPF_NOEXIST},
    helpers::generated::bpf_ktime_get_ns,
    macros::map,
    maps::{HashMap, LpmTrie, LruHashMap, lpm_trie::Key},
    programs::TcContext,
};
use netpath_common::{
    maps::{EndpointKey, EndpointValue},
    nat::{
        CT_NEW, MAX_NO_MASQ, MAX_PUBLISHED, NAT_ENTRIES, NAT_FLAG_INBOUND, NAT_FLAG_SELF, NatAge,
        NatTarget, PORT_RETRIES, PortRange, PublishKey, Tuple, Uplink, csum_replace4, ct_next,
        ct_stale, l4_csum_after_source_change, nat_clock, nat_port, no_masq_key, tuple_hash,
    },
    packet::{
        Classified, ETH_HLEN, Frame, IP_CSUM, IP_DST, IP_SRC, IP_TOTAL_LEN, IPPROTO_ICMP,
        IPPROTO_TCP, IPPROTO_UDP, PacketClass,
    },
};

use crate::{endpoints::NETPATH_ENDPOINTS, frame::TcFrame};

#[map(name = "NETPATH_SNAT")]
static NETPATH_SNAT: LruHashMap<Tuple, NatTarget> = LruHashMap::with_max_entries(NAT_ENTRIES, 0);

#[map(name = "NETPATH_RNAT")]
static NETPATH_RNAT: LruHashMap<Tuple, NatTarget> = LruHashMap::with_max_entries(NAT_ENTRIES, 0);

/// Reply tuple → when the connection was last active and how far TCP got (see
/// `netpath_common::nat::NatAge`): lets `allocate` take back the ports of dead
/// connections, which the LRU maps alone would keep until 262,144 entries pushed them out.
#[map(name = "NETPATH_NAT_AGE")]
static NETPATH_NAT_AGE: LruHashMap<Tuple, NatAge> = LruHashMap::with_max_entries(NAT_ENTRIES, 0);

/// Uplink ifindex → its address and port range.
#[map(name = "NETPATH_UPLINKS")]
static NETPATH_UPLINKS: HashMap<u32, Uplink> = HashMap::with_max_entries(256, 0);

/// Whether `ifindex` is an uplink of a netpath network.
#[inline(always)]
pub fn is_uplink(ifindex: u32) -> bool {
    // SAFETY: presence check only.
    unsafe { NETPATH_UPLINKS.get(ifindex) }.is_some()
}

/// What the uplink's ingress translations did to a packet.
pub enum Inbound {
    /// Not theirs: untouched.
    Untouched,
    /// Translated; the kernel path delivers it (an ICMP error about a masqueraded packet).
    Translated,
    /// Translated, and now addressed to this endpoint address.
    ForEndpoint([u8; 4]),
}

/// Subnets whose traffic is masqueraded (value: network id).
#[map(name = "NETPATH_MASQ_SRC")]
static NETPATH_MASQ_SRC: LpmTrie<[u8; 4], u32> = LpmTrie::with_max_entries(4096, 0);

/// Destinations a network's traffic reaches unmasqueraded (`--no-masquerade`), keyed by
/// `no_masq_key(network id, destination)`; the value is unused.
#[map(name = "NETPATH_NO_MASQ")]
static NETPATH_NO_MASQ: LpmTrie<[u8; 8], u8> = LpmTrie::with_max_entries(MAX_NO_MASQ, 0);

const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP_PARAMETER_PROBLEM: u8 = 12;

/// Where a packet's ports (or ICMP identifier) and L4 checksum are.
struct L4 {
    proto: u8,
    /// Offset of the source port (TCP/UDP) or of the identifier (ICMP).
    sport_at: usize,
    /// Offset of the destination port (TCP/UDP) or of the identifier (ICMP).
    dport_at: usize,
    csum_at: usize,
    /// The checksum covers the pseudo-header (TCP/UDP), so address changes touch it.
    pseudo: bool,
    /// UDP: a zero checksum means "none" and must stay zero.
    mangled_zero: bool,
}

impl L4 {
    /// The L4 layout of a TCP/UDP packet or of an ICMP echo of type `icmp_type`.
    #[inline(always)]
    fn of(frame: &TcFrame, c: Classified, icmp_type: u8) -> Option<L4> {
        let at = c.l4_offset;
        match c.class {
            PacketClass::Ipv4Tcp => Some(L4 {
                proto: IPPROTO_TCP,
                sport_at: at,
                dport_at: at + 2,
                csum_at: at + 16,
                pseudo: true,
                mangled_zero: false,
            }),
            PacketClass::Ipv4Udp => Some(L4 {
                proto: IPPROTO_UDP,
                sport_at: at,
                dport_at: at + 2,
                csum_at: at + 6,
                pseudo: true,
                mangled_zero: true,
            }),
            // Verifier: a 2-byte load (type and code). For a 1-byte load LLVM turns the
            // bounds check `p + 1 > end` into `p >= end`, from which the verifier
            // learns no readable range.
            PacketClass::Ipv4Icmp if frame.load::<2>(at).map(|b| b[0]) == Some(icmp_type) => {
                Some(L4 {
                    proto: IPPROTO_ICMP,
                    sport_at: at + 4,
                    dport_at: at + 4,
                    csum_at: at + 2,
                    pseudo: false,
                    mangled_zero: false,
                })
            }
            _ => None,
        }
    }

    fn csum_flags(&self, size: u64) -> u64 {
        let mut f = size;
        if self.mangled_zero {
            f |= u64::from(BPF_F_MARK_MANGLED_0);
        }
        f
    }
}

/// Rewrites the address at `addr_at` and the port at `port_at`, fixing the IP header
/// checksum and the L4 checksum (pseudo-header included where it applies).
#[inline(always)]
fn rewrite(
    ctx: &TcContext,
    l4: &L4,
    addr_at: usize,
    old: NatTarget,
    new: NatTarget,
) -> Result<(), i64> {
    // The csum helpers take the old and new values as they sit in memory.
    let (old_a, new_a) = (u32::from_ne_bytes(old.addr), u32::from_ne_bytes(new.addr));
    if old_a != new_a {
        ctx.store(addr_at, &new.addr, 0)?;
        ctx.l3_csum_replace(IP_CSUM, u64::from(old_a), u64::from(new_a), 4)?;
        if l4.pseudo {
            ctx.l4_csum_replace(
                l4.csum_at,
                u64::from(old_a),
                u64::from(new_a),
                l4.csum_flags(4) | u64::from(BPF_F_PSEUDO_HDR),
            )?;
        }
    }
    if old.port != new.port {
        let port_at = if addr_at == IP_SRC {
            l4.sport_at
        } else {
            l4.dport_at
        };
        let (old_p, new_p) = (old.port.to_be(), new.port.to_be());
        ctx.store(port_at, &new_p, 0)?;
        ctx.l4_csum_replace(
            l4.csum_at,
            u64::from(old_p),
            u64::from(new_p),
            l4.csum_flags(2),
        )?;
    }
    Ok(())
}

#[inline(always)]
fn port(frame: &TcFrame, at: usize) -> Option<u16> {
    frame.load_be16(at)
}

/// tc egress on an uplink: masquerade connections from netpath networks.
#[inline(always)]
pub fn egress(ctx: &TcContext, frame: &TcFrame, c: Classified, ifindex: u32) -> Result<(), i64> {
    // SAFETY: values are copied out at once.
    let Some(uplink) = (unsafe { NETPATH_UPLINKS.get(ifindex) }).copied() else {
        return Ok(());
    };
    let Some(l4) = L4::of(frame, c, ICMP_ECHO_REQUEST) else {
        return Ok(());
    };
    let (Some(src), Some(dst)) = (frame.load::<4>(IP_SRC), frame.load::<4>(IP_DST)) else {
        return Ok(());
    };
    let Some(&network) = NETPATH_MASQ_SRC.get(Key::new(32, src)) else {
        return Ok(());
    };
    let (Some(sport), Some(dport)) = (port(frame, l4.sport_at), port(frame, l4.dport_at)) else {
        return Ok(());
    };
    // ICMP echo: the identifier is the connection's "port"; replies carry it back.
    let dport = if l4.proto == IPPROTO_ICMP { 0 } else { dport };
    let orig = Tuple::new(l4.proto, src, sport, dst, dport);
    // SAFETY: copied out at once.
    let now = now();
    let target = match unsafe { NETPATH_SNAT.get(orig) }.copied() {
        Some(t) => t,
        // A destination the network reaches with its own addresses: left as it is. (Only
        // looked up for packets without a translation: masqueraded connections pay
        // nothing for it.)
        None if NETPATH_NO_MASQ
            .get(Key::new(64, no_masq_key(network, dst)))
            .is_some() =>
        {
            return Ok(());
        }
        None => allocate(&orig, &uplink, now).ok_or(-1i64)?,
    };
    let reply = Tuple::new(l4.proto, dst, dport, target.addr, target.port);
    touch(&reply, tcp_flags(frame, &l4), false, now);
    rewrite(ctx, &l4, IP_SRC, NatTarget::new(src, sport), target)
}

#[inline(always)]
fn now() -> u32 {
    // SAFETY: a helper without arguments.
    nat_clock(unsafe { bpf_ktime_get_ns() })
}

/// The TCP flags byte of a TCP packet, 0 for anything else.
#[inline(always)]
fn tcp_flags(frame: &TcFrame, l4: &L4) -> u8 {
    if l4.proto != IPPROTO_TCP {
        return 0;
    }
    // Verifier: a 2-byte load (data offset and flags), as in `L4::of`.
    frame.load::<2>(l4.sport_at + 12).map_or(0, |b| b[1])
}

/// Records a packet of the connection whose replies look like `reply`.
#[inline(always)]
fn touch(reply: &Tuple, tcp_flags: u8, from_remote: bool, now: u32) {
    match NETPATH_NAT_AGE.get_ptr_mut(reply) {
        Some(age) => {
            // SAFETY: a pointer into the map value, valid for this run; concurrent
            // writers only ever store a newer time or a later state, and a torn update
            // of these two fields is harmless (one more or one fewer packet's worth).
            unsafe {
                let state = ct_next((*age).state, reply.proto, tcp_flags, from_remote);
                if (*age).seen != now || (*age).state != state {
                    (*age).seen = now;
                    (*age).state = state;
                }
            }
        }
        None => {
            let age = NatAge {
                seen: now,
                state: ct_next(CT_NEW, reply.proto, tcp_flags, from_remote),
                _pad: [0; 3],
            };
            // A full LRU map evicts its oldest entry; failure only loses this record.
            let _ = NETPATH_NAT_AGE.insert(reply, age, 0);
        }
    }
}

/// Claims NAT port `reply` (its reply tuple) for a connection translated back to
/// `back`: free, or held by a connection quiet for longer than its timeout (whose
/// records then go). `BPF_NOEXIST` inserts and the delete (which only one CPU can win)
/// keep two connections from ever sharing a port.
#[inline(always)]
fn claim(reply: &Tuple, back: NatTarget, now: u32) -> bool {
    if NETPATH_RNAT
        .insert(reply, back, u64::from(BPF_NOEXIST))
        .is_ok()
    {
        return true;
    }
    // SAFETY: copied out at once.
    let Some(age) = (unsafe { NETPATH_NAT_AGE.get(reply) }).copied() else {
        // Taken, age unknown (e.g. from before an upgrade): start its clock now.
        let age = NatAge {
            seen: now,
            state: CT_NEW,
            _pad: [0; 3],
        };
        let _ = NETPATH_NAT_AGE.insert(reply, age, u64::from(BPF_NOEXIST));
        return false;
    };
    if !ct_stale(reply.proto, age, now) {
        return false;
    }
    // SAFETY: copied out at once.
    let Some(old) = (unsafe { NETPATH_RNAT.get(reply) }).copied() else {
        return false;
    };
    if NETPATH_RNAT.remove(reply).is_err() {
        return false;
    }
    let old_orig = Tuple::new(reply.proto, old.addr, old.port, reply.src, reply.sport);
    let _ = NETPATH_SNAT.remove(old_orig);
    let _ = NETPATH_NAT_AGE.remove(reply);
    NETPATH_RNAT
        .insert(reply, back, u64::from(BPF_NOEXIST))
        .is_ok()
}

/// Picks a free NAT port for `orig` on `uplink` and records both directions.
#[inline(always)]
fn allocate(orig: &Tuple, uplink: &Uplink, now: u32) -> Option<NatTarget> {
    let range = PortRange {
        first: uplink.first_port,
        last: uplink.last_port,
    };
    let hash = tuple_hash(orig);
    let back = NatTarget::new(orig.src, orig.sport);
    let mut attempt = 0;
    // Verifier: a constant-bounded loop.
    while attempt < PORT_RETRIES {
        let port = nat_port(orig.sport, hash, attempt, range);
        // What the reply will look like when it arrives on the uplink.
        let reply = Tuple::new(orig.proto, orig.dst, orig.dport, uplink.addr, port);
        // The reply tuple is the NAT port's owner.
        if claim(&reply, back, now) {
            let target = NatTarget::new(uplink.addr, port);
            if NETPATH_SNAT.insert(orig, target, 0).is_err() {
                // Roll back the claim: no half-recorded connection.
                let _ = NETPATH_RNAT.remove(reply);
                return None;
            }
            return Some(target);
        }
        attempt += 1;
    }
    None
}

/// tc ingress on an uplink: translate replies to masqueraded connections back. Anything
/// but `Untouched` needs no other translation.
#[inline(always)]
pub fn ingress(ctx: &TcContext, frame: &TcFrame, c: Classified) -> Result<Inbound, i64> {
    let Some(l4) = L4::of(frame, c, ICMP_ECHO_REPLY) else {
        return match icmp_error_ingress(ctx, frame, c)? {
            true => Ok(Inbound::Translated),
            false => Ok(Inbound::Untouched),
        };
    };
    let (Some(src), Some(dst)) = (frame.load::<4>(IP_SRC), frame.load::<4>(IP_DST)) else {
        return Ok(Inbound::Untouched);
    };
    let (Some(sport), Some(dport)) = (port(frame, l4.sport_at), port(frame, l4.dport_at)) else {
        return Ok(Inbound::Untouched);
    };
    let sport = if l4.proto == IPPROTO_ICMP { 0 } else { sport };
    let reply = Tuple::new(l4.proto, src, sport, dst, dport);
    // SAFETY: copied out at once.
    let Some(back) = (unsafe { NETPATH_RNAT.get(reply) }).copied() else {
        return Ok(Inbound::Untouched);
    };
    touch(&reply, tcp_flags(frame, &l4), true, now());
    rewrite(ctx, &l4, IP_DST, NatTarget::new(dst, dport), back)?;
    Ok(Inbound::ForEndpoint(back.addr))
}

/// Published ports: (protocol, host address or 0.0.0.0, port) → endpoint address/port.
#[map(name = "NETPATH_PUBLISH")]
static NETPATH_PUBLISH: HashMap<PublishKey, NatTarget> =
    HashMap::with_max_entries(MAX_PUBLISHED, 0);

/// Connections to published ports, keyed by the endpoint-side tuple of their replies.
#[map(name = "NETPATH_DNAT_CT")]
static NETPATH_DNAT_CT: LruHashMap<Tuple, NatTarget> = LruHashMap::with_max_entries(NAT_ENTRIES, 0);

/// The endpoint a packet to `dst:dport` is published to: an entry for that exact host
/// address first, then one for every address.
#[inline(always)]
fn published(proto: u8, dst: [u8; 4], dport: u16) -> Option<NatTarget> {
    published_at(proto, dst, dport).or_else(|| published_at(proto, [0; 4], dport))
}

/// The publish entry for exactly (`proto`, `host_ip`, `port`); 0.0.0.0 is "every address".
#[inline(always)]
pub fn published_at(proto: u8, host_ip: [u8; 4], port: u16) -> Option<NatTarget> {
    let key = PublishKey {
        host_ip,
        port,
        proto,
        _pad: 0,
    };
    // SAFETY: values are copied out at once.
    unsafe { NETPATH_PUBLISH.get(key) }.copied()
}

/// Records in NETPATH_DNAT_CT that the replies `reply` go back as from `front`, unless
/// that is recorded already. Every packet of a connection passes here, and an LRU map
/// update (a bucket lock, a node off the LRU list) costs several lookups; the lookup also
/// marks the entry recently used, so an ongoing connection's entry is not evicted.
#[inline(always)]
fn remember_front(reply: Tuple, front: NatTarget) -> Result<(), i64> {
    // SAFETY: copied out at once.
    if unsafe { NETPATH_DNAT_CT.get(reply) }.copied() == Some(front) {
        return Ok(());
    }
    NETPATH_DNAT_CT.insert(reply, front, 0).map_err(i64::from)
}

/// Uplink ingress, after masquerade replies: DNAT a new or ongoing connection to a
/// published port to its endpoint, keeping the client's address.
#[inline(always)]
pub fn publish_ingress(ctx: &TcContext, frame: &TcFrame, c: Classified) -> Result<Inbound, i64> {
    let Some(l4) = L4::of(frame, c, ICMP_ECHO_REQUEST) else {
        return Ok(Inbound::Untouched);
    };
    if l4.proto == IPPROTO_ICMP {
        return Ok(Inbound::Untouched);
    }
    let (Some(src), Some(dst)) = (frame.load::<4>(IP_SRC), frame.load::<4>(IP_DST)) else {
        return Ok(Inbound::Untouched);
    };
    let (Some(sport), Some(dport)) = (port(frame, l4.sport_at), port(frame, l4.dport_at)) else {
        return Ok(Inbound::Untouched);
    };
    // A publish on every address answers on the host's own addresses only: traffic routed
    // through this host to a machine behind it (a pod, a VM) keeps its destination.
    let ep = match published_at(l4.proto, dst, dport) {
        Some(ep) => ep,
        None if crate::sock::is_host_addr(dst) => {
            let Some(ep) = published_at(l4.proto, [0; 4], dport) else {
                return Ok(Inbound::Untouched);
            };
            ep
        }
        None => {
            track_inbound(l4.proto, src, sport, dst, dport);
            return Ok(Inbound::Untouched);
        }
    };
    // Remember how to translate the endpoint's replies back.
    let reply = Tuple::new(l4.proto, ep.addr, ep.port, src, sport);
    let front = NatTarget::new(dst, dport);
    remember_front(reply, front)?;
    rewrite(ctx, &l4, IP_DST, front, ep)?;
    Ok(Inbound::ForEndpoint(ep.addr))
}

/// Uplink ingress, for a TCP/UDP packet no translation claimed: a connection routed in to
/// endpoint `dst`'s own address (a route to its network through this host) is recorded
/// in NETPATH_DNAT_CT with itself as the front ([`NAT_FLAG_INBOUND`]), so that
/// [`publish_reply`] lets its replies leave as they are instead of masquerading them —
/// unless the tuple is that of a masqueraded connection the endpoint opened (a remote's
/// packet to it is then the reply the kernel path already delivers), and never over an
/// existing entry (a published connection's state is not replaced by a forged packet).
#[inline(always)]
fn track_inbound(proto: u8, src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) {
    // SAFETY: presence checks only.
    if unsafe { NETPATH_ENDPOINTS.get(EndpointKey { ip: dst }) }.is_none() {
        return;
    }
    let reply = Tuple::new(proto, dst, dport, src, sport);
    // Recorded already (every later packet of the connection): one lookup and done.
    // SAFETY: presence checks only.
    if unsafe { NETPATH_DNAT_CT.get(reply) }.is_some()
        || unsafe { NETPATH_SNAT.get(reply) }.is_some()
    {
        return;
    }
    let front = NatTarget {
        flags: NAT_FLAG_INBOUND,
        ..NatTarget::new(dst, dport)
    };
    // A full LRU map evicts its oldest entry; a lost race means another CPU recorded it.
    let _ = NETPATH_DNAT_CT.insert(reply, front, u64::from(BPF_NOEXIST));
}

/// Uplink egress: a reply of a connection to a published port leaves with the
/// published address and port as its source. `Ok(true)` if it was one.
#[inline(always)]
pub fn publish_reply(ctx: &TcContext, frame: &TcFrame, c: Classified) -> Result<bool, i64> {
    let Some(l4) = L4::of(frame, c, ICMP_ECHO_REPLY) else {
        return Ok(false);
    };
    if l4.proto == IPPROTO_ICMP {
        return Ok(false);
    }
    let (Some(src), Some(dst)) = (frame.load::<4>(IP_SRC), frame.load::<4>(IP_DST)) else {
        return Ok(false);
    };
    let (Some(sport), Some(dport)) = (port(frame, l4.sport_at), port(frame, l4.dport_at)) else {
        return Ok(false);
    };
    // SAFETY: copied out at once.
    let Some(front) =
        (unsafe { NETPATH_DNAT_CT.get(Tuple::new(l4.proto, src, sport, dst, dport)) }).copied()
    else {
        return Ok(false);
    };
    if front.flags & NAT_FLAG_INBOUND != 0 {
        // A reply of a connection routed in: it leaves as it is, unmasqueraded.
        return Ok(true);
    }
    rewrite(ctx, &l4, IP_SRC, NatTarget::new(src, sport), front).map(|()| true)
}

/// Hairpin, on an endpoint's host-side device (after anti-spoofing): an endpoint
/// reaching a port published on one of the host's addresses, and the replies of such
/// connections. The forward packet is DNATed to the published endpoint (keeping the
/// client's address; an endpoint reaching its own published port also gets the host
/// address as its source, or its reply would never leave it); the reply gets the
/// published address and port back. Returns the endpoint the rewritten packet must be
/// handed to; the caller redirects it there (never to the kernel: a packet rewritten to
/// carry a host address as its source would be dropped there as a martian).
/// `Ok(None)`: not a hairpin packet, untouched.
#[inline(always)]
pub fn hairpin(
    ctx: &TcContext,
    frame: &TcFrame,
    c: Classified,
    ifindex: u32,
    dst_is_endpoint: bool,
) -> Result<Option<EndpointValue>, i64> {
    let Some(l4) = L4::of(frame, c, ICMP_ECHO_REQUEST) else {
        return Ok(None);
    };
    if l4.proto == IPPROTO_ICMP {
        return Ok(None);
    }
    let (Some(src), Some(dst)) = (frame.load::<4>(IP_SRC), frame.load::<4>(IP_DST)) else {
        return Ok(None);
    };
    let (Some(sport), Some(dport)) = (port(frame, l4.sport_at), port(frame, l4.dport_at)) else {
        return Ok(None);
    };
    let endpoint = |ip: [u8; 4]| {
        // SAFETY: copied out at once.
        unsafe { NETPATH_ENDPOINTS.get(EndpointKey { ip }) }.copied()
    };
    // A reply of a hairpinned connection?
    // SAFETY: copied out at once.
    if let Some(front) =
        unsafe { NETPATH_DNAT_CT.get(Tuple::new(l4.proto, src, sport, dst, dport)) }.copied()
    {
        // A connection routed in from outside: its replies are the uplink's, untranslated.
        if front.flags & NAT_FLAG_INBOUND != 0 {
            return Ok(None);
        }
        let to_self = front.flags & NAT_FLAG_SELF != 0;
        // Replies to clients that are not endpoints are the uplink's (publish_reply).
        let Some(to) = endpoint(if to_self { src } else { dst }) else {
            return Ok(None);
        };
        rewrite(
            ctx,
            &l4,
            IP_SRC,
            NatTarget::new(src, sport),
            NatTarget::new(front.addr, front.port),
        )?;
        if to_self {
            rewrite(
                ctx,
                &l4,
                IP_DST,
                NatTarget::new(dst, dport),
                NatTarget::new(src, dport),
            )?;
        }
        return Ok(Some(to));
    }
    // A connection to a port published on a host address? (An endpoint's address is
    // never the host's: endpoint ↔ endpoint packets, the fast path's bulk, skip the
    // publish lookups.)
    if dst_is_endpoint {
        return Ok(None);
    }
    let Some(ep) = published(l4.proto, dst, dport) else {
        return Ok(None);
    };
    let Some(to) = endpoint(ep.addr) else {
        return Ok(None);
    };
    if !crate::route::is_local(ctx, ifindex, src, dst) {
        return Ok(None);
    }
    let to_self = ep.addr == src;
    let client = if to_self { dst } else { src };
    let reply = Tuple::new(l4.proto, ep.addr, ep.port, client, sport);
    let front = NatTarget {
        flags: if to_self { NAT_FLAG_SELF } else { 0 },
        ..NatTarget::new(dst, dport)
    };
    remember_front(reply, front)?;
    rewrite(ctx, &l4, IP_DST, NatTarget::new(dst, dport), ep)?;
    if to_self {
        rewrite(
            ctx,
            &l4,
            IP_SRC,
            NatTarget::new(src, sport),
            NatTarget::new(dst, sport),
        )?;
    }
    Ok(Some(to))
}

/// Uplink ingress: an ICMP error (destination unreachable — incl. "fragmentation
/// needed" for path MTU discovery —, time exceeded, parameter problem) about a packet of
/// a masqueraded connection. It quotes that packet as it left (from the uplink's
/// address and NAT port), so the outer destination and the quoted source address and
/// port (ICMP: identifier) are translated back, with the quoted IP header checksum, the
/// quoted L4 checksum (when quoted) and the ICMP checksum over all of it. `Ok(true)` if
/// it was one. Quoted headers with IP options are left to the kernel path.
#[inline(always)]
fn icmp_error_ingress(ctx: &TcContext, frame: &TcFrame, c: Classified) -> Result<bool, i64> {
    if c.class != PacketClass::Ipv4Icmp {
        return Ok(false);
    }
    let at = c.l4_offset;
    // Verifier: a 2-byte load, as in `L4::of`.
    let Some(kind) = frame.load::<2>(at).map(|b| b[0]) else {
        return Ok(false);
    };
    if kind != ICMP_DEST_UNREACH && kind != ICMP_TIME_EXCEEDED && kind != ICMP_PARAMETER_PROBLEM {
        return Ok(false);
    }
    // Verifier: the fixed-offset load first, as in the other translations (loaded after
    // the variable-offset ones, its bounds check was merged away).
    let (Some(outer_dst), Some(total)) = (frame.load::<4>(IP_DST), frame.load_be16(IP_TOTAL_LEN))
    else {
        return Ok(false);
    };
    // The end of the IP datagram: a frame may carry padding after it, which no checksum
    // covers and which must not be taken for quoted bytes.
    let end = ETH_HLEN + usize::from(total);
    let icmp_csum_at = at + 2;
    let inner = at + 8;
    let Some(h) = frame.load::<20>(inner) else {
        return Ok(false);
    };
    if h[0] != 0x45 {
        return Ok(false);
    }
    let proto = h[9];
    let in_csum = u16::from_be_bytes([h[10], h[11]]);
    let in_src = [h[12], h[13], h[14], h[15]];
    let in_dst = [h[16], h[17], h[18], h[19]];
    let in_l4 = inner + 20;
    let Some(p) = frame.load::<8>(in_l4) else {
        return Ok(false);
    };
    if in_l4 + 8 > end {
        return Ok(false);
    }
    // (source port or identifier, destination port as the NAT keys it, where the
    // source port sits, where the quoted L4 checksum sits)
    let (sport, dport, sport_at, l4_csum_at) = match proto {
        IPPROTO_TCP => (
            u16::from_be_bytes([p[0], p[1]]),
            u16::from_be_bytes([p[2], p[3]]),
            in_l4,
            in_l4 + 16,
        ),
        IPPROTO_UDP => (
            u16::from_be_bytes([p[0], p[1]]),
            u16::from_be_bytes([p[2], p[3]]),
            in_l4,
            in_l4 + 6,
        ),
        IPPROTO_ICMP if p[0] == ICMP_ECHO_REQUEST => {
            (u16::from_be_bytes([p[4], p[5]]), 0, in_l4 + 4, in_l4 + 2)
        }
        _ => return Ok(false),
    };
    // The quoted packet left as uplink:port → remote; its replies are keyed this way.
    let reply = Tuple::new(proto, in_dst, dport, in_src, sport);
    // SAFETY: copied out at once.
    let Some(back) = (unsafe { NETPATH_RNAT.get(reply) }).copied() else {
        return Ok(false);
    };
    // Everything is read before the first write: writes invalidate packet pointers.
    // The quoted L4 checksum may lie beyond what the error quotes (8 bytes at least).
    let l4_csum = if l4_csum_at + 2 <= end {
        frame.load_be16(l4_csum_at)
    } else {
        None
    };
    let ne = |a: [u8; 4]| u64::from(u32::from_ne_bytes(a));
    let ne16 = |v: u16| u64::from(v.to_be());
    // Outer destination: the endpoint (the ICMP checksum does not cover the IP header).
    ctx.store(IP_DST, &back.addr, 0)?;
    ctx.l3_csum_replace(IP_CSUM, ne(outer_dst), ne(back.addr), 4)?;
    // Quoted source address and its header checksum; the ICMP checksum covers both.
    let new_in_csum = csum_replace4(in_csum, in_src, back.addr);
    ctx.store(inner + 12, &back.addr, 0)?;
    ctx.store(inner + 10, &new_in_csum.to_be_bytes(), 0)?;
    ctx.l4_csum_replace(icmp_csum_at, ne(in_src), ne(back.addr), 4)?;
    ctx.l4_csum_replace(icmp_csum_at, ne16(in_csum), ne16(new_in_csum), 2)?;
    // Quoted source port (identifier).
    ctx.store(sport_at, &back.port.to_be_bytes(), 0)?;
    ctx.l4_csum_replace(icmp_csum_at, ne16(sport), ne16(back.port), 2)?;
    // Quoted L4 checksum, when quoted.
    if let Some(old) = l4_csum {
        let new = l4_csum_after_source_change(proto, old, in_src, back.addr, sport, back.port);
        ctx.store(l4_csum_at, &new.to_be_bytes(), 0)?;
        ctx.l4_csum_replace(icmp_csum_at, ne16(old), ne16(new), 2)?;
    }
    Ok(true)
}
