//! The connections the datapath translates, read from its maps when asked (`netpath
//! flows`, `GET /v1/flows`): masqueraded ones from `NETPATH_SNAT`/`6` with their clocks
//! in `NETPATH_NAT_AGE`/`6`, published ones (hairpin included) from
//! `NETPATH_DNAT_CT`/`6`. Each becomes a [`Tracked`]: its tuple before and after
//! translation, its state and its clock, in the datapath's own units ([`nat_now`]).
//! Connections routed in untranslated (`NAT_FLAG_INBOUND`) are no translation and are
//! left out.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use aya::Pod;
use netpath_common::nat::{
    Address, CtFrontOf, NAT_FLAG_INBOUND, NAT_FLAG_SELF, NatAge, NatTargetOf, TupleOf, nat_clock,
};

use super::*;

/// The datapath's clock now: `CLOCK_MONOTONIC` (what `bpf_ktime_get_ns` reads) in
/// [`nat_clock`] units (≈ 1.07 s).
pub fn nat_now() -> u32 {
    // CLOCK_MONOTONIC is always there on Linux; its reading cannot fail.
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC");
    nat_clock(t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
}

/// What translates a [`Tracked`] connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Translation {
    /// Egress masquerade: an endpoint's connection out through an uplink.
    Masquerade,
    /// A connection to a published port (from outside, or from an endpoint: hairpin).
    Publish,
}

/// One translated connection as the maps hold it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tracked {
    pub translation: Translation,
    /// `IPPROTO_*` (ICMP echo: its identifier stands for both ports).
    pub proto: u8,
    /// Source and destination as the opening side sent them.
    pub original: (SocketAddr, SocketAddr),
    /// Source and destination after translation.
    pub translated: (SocketAddr, SocketAddr),
    /// The endpoint's address: a masqueraded connection's source, a published one's
    /// target.
    pub endpoint: IpAddr,
    /// `CT_*`.
    pub state: u8,
    /// Last packet and first packet, in [`nat_clock`] units.
    pub seen: u32,
    pub created: u32,
}

/// An address of the maps as a standard one.
pub trait MapAddr: Address {
    fn ip(self) -> IpAddr;
}

impl MapAddr for [u8; 4] {
    fn ip(self) -> IpAddr {
        Ipv4Addr::from(self).into()
    }
}

impl MapAddr for [u8; 16] {
    fn ip(self) -> IpAddr {
        Ipv6Addr::from(self).into()
    }
}

fn at<A: MapAddr>(addr: A, port: u16) -> SocketAddr {
    SocketAddr::new(addr.ip(), port)
}

/// The masqueraded connection `orig` (endpoint → remote) that leaves as from `to`, its
/// clock `age` (`None` if its record is gone: counted from `now`).
pub fn masqueraded<A: MapAddr>(
    orig: TupleOf<A>,
    to: NatTargetOf<A>,
    age: Option<NatAge>,
    now: u32,
) -> Tracked {
    let age = age.unwrap_or(NatAge::new(now, netpath_common::nat::CT_NEW));
    Tracked {
        translation: Translation::Masquerade,
        proto: orig.proto,
        original: (at(orig.src, orig.sport), at(orig.dst, orig.dport)),
        translated: (at(to.addr, to.port), at(orig.dst, orig.dport)),
        endpoint: orig.src.ip(),
        state: age.state,
        seen: age.seen,
        created: age.created,
    }
}

/// The reply tuple of masqueraded connection `orig` leaving as from `to`: the key of its
/// clock (as the programs write it).
pub fn masquerade_reply<A: Address>(orig: &TupleOf<A>, to: &NatTargetOf<A>) -> TupleOf<A> {
    TupleOf::new(orig.proto, orig.dst, orig.dport, to.addr, to.port)
}

/// The published connection whose replies look like `reply` (endpoint → client) and
/// leave as from `ct`'s front; `None` for a connection routed in untranslated.
///
/// A client that is the endpoint itself (`NAT_FLAG_SELF`: it reached its own published
/// port through a host address) had its source rewritten to that host address, which
/// is what the reply tuple holds as the client.
pub fn published<A: MapAddr>(reply: TupleOf<A>, ct: CtFrontOf<A>) -> Option<Tracked> {
    if ct.flags & NAT_FLAG_INBOUND != 0 {
        return None;
    }
    let endpoint = at(reply.src, reply.sport);
    let front = at(ct.addr, ct.port);
    let client = at(reply.dst, reply.dport);
    let (original, translated) = if ct.flags & NAT_FLAG_SELF != 0 {
        ((at(reply.src, reply.dport), front), (client, endpoint))
    } else {
        ((client, front), (client, endpoint))
    };
    Some(Tracked {
        translation: Translation::Publish,
        proto: reply.proto,
        original,
        translated,
        endpoint: reply.src.ip(),
        state: ct.state,
        seen: ct.seen,
        created: ct.created,
    })
}

impl Datapath {
    /// Every translated connection the maps hold, both families.
    pub fn tracked(&self) -> Result<Vec<Tracked>> {
        let now = nat_now();
        let mut out = Vec::new();
        masquerade_walk::<[u8; 4]>(&self.pins, SNAT_MAP, NAT_AGE_MAP, now, &mut out)?;
        masquerade_walk::<[u8; 16]>(&self.pins, SNAT6_MAP, NAT_AGE6_MAP, now, &mut out)?;
        publish_walk::<[u8; 4]>(&self.pins, DNAT_CT_MAP, &mut out)?;
        publish_walk::<[u8; 16]>(&self.pins, DNAT_CT6_MAP, &mut out)?;
        Ok(out)
    }
}

/// The masqueraded connections of one family (none if its maps are not pinned), read
/// in batches: 100,000 connections in a few dozen calls, not 300,000.
fn masquerade_walk<A: MapAddr>(
    pins: &Pins,
    snat: &'static str,
    ages: &'static str,
    now: u32,
    out: &mut Vec<Tracked>,
) -> Result<()>
where
    TupleOf<A>: Pod + std::hash::Hash,
    NatTargetOf<A>: Pod,
{
    let Some(entries) = batch::dump::<TupleOf<A>, NatTargetOf<A>>(pins, snat)? else {
        return Ok(());
    };
    // Clocks of an older layout's shape are not read: those connections count from now.
    let shaped: Option<HashMap<MapData, TupleOf<A>, NatAge>> = open_typed_if_shaped(pins, ages)?;
    let clocks: std::collections::HashMap<TupleOf<A>, NatAge> = match shaped {
        Some(_) => batch::dump(pins, ages)?
            .unwrap_or_default()
            .into_iter()
            .collect(),
        None => std::collections::HashMap::new(),
    };
    out.reserve(entries.len());
    for (orig, to) in entries {
        let reply = masquerade_reply(&orig, &to);
        out.push(masqueraded(orig, to, clocks.get(&reply).copied(), now));
    }
    Ok(())
}

/// The published connections of one family (none if its map is not pinned, or of a
/// layout before 7, which kept no clock).
fn publish_walk<A: MapAddr>(pins: &Pins, name: &'static str, out: &mut Vec<Tracked>) -> Result<()>
where
    TupleOf<A>: Pod,
    CtFrontOf<A>: Pod,
{
    let shaped: Option<HashMap<MapData, TupleOf<A>, CtFrontOf<A>>> =
        open_typed_if_shaped(pins, name)?;
    if shaped.is_none() {
        return Ok(());
    }
    let entries = batch::dump::<TupleOf<A>, CtFrontOf<A>>(pins, name)?.unwrap_or_default();
    out.extend(
        entries
            .into_iter()
            .filter_map(|(reply, ct)| published(reply, ct)),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use netpath_common::{
        nat::{CT_ESTABLISHED, CT_NEW, NatTarget},
        packet::{IPPROTO_TCP, IPPROTO_UDP},
    };

    use super::*;

    const EP: [u8; 4] = [10, 200, 0, 2];
    const REMOTE: [u8; 4] = [198, 51, 100, 1];
    const UPLINK: [u8; 4] = [198, 51, 100, 2];

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// A new connection's front `addr:port` with `flags`.
    fn new_front(flags: u8, addr: [u8; 4], port: u16) -> CtFront {
        let front = NatTargetOf {
            flags,
            ..NatTarget::new(addr, port)
        };
        CtFrontOf::new(front, CT_NEW, 1)
    }

    #[test]
    fn a_masqueraded_connection_leaves_from_the_uplink_and_keeps_its_clock() {
        let orig = TupleOf::new(IPPROTO_TCP, EP, 41000, REMOTE, 80);
        let to = NatTarget::new(UPLINK, 40001);
        assert_eq!(
            masquerade_reply(&orig, &to),
            TupleOf::new(IPPROTO_TCP, REMOTE, 80, UPLINK, 40001)
        );
        let age = NatAge {
            created: 90,
            ..NatAge::new(100, CT_ESTABLISHED)
        };
        let t = masqueraded(orig, to, Some(age), 120);
        assert_eq!(t.translation, Translation::Masquerade);
        assert_eq!(t.original, (sa("10.200.0.2:41000"), sa("198.51.100.1:80")));
        assert_eq!(
            t.translated,
            (sa("198.51.100.2:40001"), sa("198.51.100.1:80"))
        );
        assert_eq!(t.endpoint, IpAddr::from(EP));
        assert_eq!((t.state, t.seen, t.created), (CT_ESTABLISHED, 100, 90));
        // No clock (its record evicted): counted from now.
        let t = masqueraded(orig, to, None, 120);
        assert_eq!((t.state, t.seen, t.created), (CT_NEW, 120, 120));
    }

    #[test]
    fn a_published_connection_goes_from_the_front_to_the_endpoint() {
        let reply = TupleOf::new(IPPROTO_UDP, EP, 53, REMOTE, 5353);
        let ct = CtFrontOf::new(NatTarget::new(UPLINK, 8053), CT_NEW, 7);
        let t = published(reply, ct).unwrap();
        assert_eq!(t.translation, Translation::Publish);
        assert_eq!(
            t.original,
            (sa("198.51.100.1:5353"), sa("198.51.100.2:8053"))
        );
        assert_eq!(t.translated, (sa("198.51.100.1:5353"), sa("10.200.0.2:53")));
        assert_eq!((t.state, t.seen, t.created), (CT_NEW, 7, 7));
    }

    #[test]
    fn an_endpoint_reaching_its_own_published_port_comes_from_the_host_address() {
        // It sent from EP:45000 to UPLINK:8080; the programs rewrote its source to
        // UPLINK:45000, so the reply tuple is EP:80 → UPLINK:45000.
        let reply = TupleOf::new(IPPROTO_TCP, EP, 80, UPLINK, 45000);
        let t = published(reply, new_front(NAT_FLAG_SELF, UPLINK, 8080)).unwrap();
        assert_eq!(
            t.original,
            (sa("10.200.0.2:45000"), sa("198.51.100.2:8080"))
        );
        assert_eq!(
            t.translated,
            (sa("198.51.100.2:45000"), sa("10.200.0.2:80"))
        );
    }

    #[test]
    fn connections_routed_in_are_no_translation() {
        let reply = TupleOf::new(IPPROTO_TCP, EP, 22, REMOTE, 50000);
        let front = new_front(NAT_FLAG_INBOUND, EP, 22);
        assert_eq!(published(reply, front), None);
    }

    #[test]
    fn ipv6_connections_show_ipv6_addresses() {
        let ep: [u8; 16] = "fd50::2".parse::<Ipv6Addr>().unwrap().octets();
        let remote: [u8; 16] = "fd99::1".parse::<Ipv6Addr>().unwrap().octets();
        let reply = TupleOf::new(IPPROTO_TCP, ep, 80, remote, 50000);
        let front = NatTargetOf::new(remote, 8080);
        let t = published(reply, CtFrontOf::new(front, CT_ESTABLISHED, 1)).unwrap();
        assert_eq!(t.translated, (sa("[fd99::1]:50000"), sa("[fd50::2]:80")));
    }
}
