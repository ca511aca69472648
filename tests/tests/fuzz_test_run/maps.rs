//! The kernel's maps: reading, checking against the model, emptying.

use std::hash::Hash;

use aya::Pod;
use netpath_common::nat::{
    CT_CLOSING, CtFront, CtFront6, CtFrontOf, DNAT_CT6_MAP, NAT_AGE6_MAP, NatTarget6, RNAT6_MAP,
    SNAT6_MAP, Tuple6,
};

use super::*;

pub(super) fn open_map<K: Pod, V: Pod>(dp: &Datapath, name: &str) -> BpfHashMap<MapData, K, V> {
    let data = MapData::from_pin(dp.pins().map(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let map = Map::from_map_data(data).unwrap_or_else(|e| panic!("{name}: {e}"));
    BpfHashMap::try_from(map).unwrap_or_else(|e| panic!("{name}: {e}"))
}

pub(super) fn read_map<K: Pod + Eq + Hash, V: Pod>(dp: &Datapath, name: &str) -> HashMap<K, V> {
    open_map(dp, name)
        .iter()
        .map(|r| r.unwrap_or_else(|e| panic!("iterating {name}: {e}")))
        .collect()
}

/// A family's SNAT, RNAT and DNAT_CT maps (`names`), their sizes printed and checked
/// against the maps' bound; DNAT_CT's values as their fronts (each entry's state
/// checked to be one there is).
fn read_nat<A: Address>(dp: &Datapath, names: [&str; 3]) -> [HashMap<TupleOf<A>, NatTargetOf<A>>; 3]
where
    TupleOf<A>: Pod,
    NatTargetOf<A>: Pod,
    CtFrontOf<A>: Pod,
{
    let [snat, rnat, dnat_ct] = names;
    let cts = read_map::<TupleOf<A>, CtFrontOf<A>>(dp, dnat_ct);
    for (reply, ct) in &cts {
        assert!(
            ct.state <= CT_CLOSING,
            "{dnat_ct} {reply:?}: state {}",
            ct.state
        );
    }
    let fronts = cts.into_iter().map(|(k, ct)| (k, ct.front())).collect();
    let maps = [read_map(dp, snat), read_map(dp, rnat), fronts];
    let sizes: Vec<String> = (names.iter().zip(&maps))
        .map(|(name, m)| format!("{} {name}", m.len()))
        .collect();
    println!(
        "maps: {} entries (max {NAT_ENTRIES} each)",
        sizes.join(", ")
    );
    for (name, m) in names.iter().zip(&maps) {
        assert!(
            m.len() <= NAT_ENTRIES as usize,
            "{name}: {} entries",
            m.len()
        );
    }
    maps
}

/// Frames per epoch of NAT state (see the frame loop): ~3 s at this machine's rate.
pub(super) const EPOCH: u64 = 100_000;

/// Empties the kernel's map `name` (keys `K`, values `V`).
fn clear_map<K: Pod, V: Pod>(dp: &Datapath, name: &str) {
    let mut map = open_map::<K, V>(dp, name);
    let keys: Vec<K> = map.keys().filter_map(Result::ok).collect();
    for k in keys {
        let _ = map.remove(&k);
    }
}

/// Empties the kernel's connection maps (SNAT, RNAT, DNAT_CT, NAT_AGE and their IPv6
/// ones) and the model's.
pub(super) fn clear_nat_state(dp: &Datapath, model: &mut Model) {
    for name in [SNAT_MAP, RNAT_MAP] {
        clear_map::<Tuple, NatTarget>(dp, name);
    }
    clear_map::<Tuple, CtFront>(dp, DNAT_CT_MAP);
    clear_map::<Tuple, NatAge>(dp, NAT_AGE_MAP);
    for name in [SNAT6_MAP, RNAT6_MAP] {
        clear_map::<Tuple6, NatTarget6>(dp, name);
    }
    clear_map::<Tuple6, CtFront6>(dp, DNAT_CT6_MAP);
    clear_map::<Tuple6, NatAge>(dp, NAT_AGE6_MAP);
    model.v4.clear();
    model.nat6.clear();
    clear_frags(dp, model);
}

/// The NAT maps' invariants, on the kernel's maps alone.
pub(super) fn check_maps(dp: &Datapath, model: &Model) {
    check_maps6(dp, model);
    // The fragment records are exactly the model's.
    check_frags(dp, model);
    let [snat, rnat, dnat_ct] = read_nat::<[u8; 4]>(dp, [SNAT_MAP, RNAT_MAP, DNAT_CT_MAP]);
    assert!(dp.published_count() <= netpath_common::nat::MAX_PUBLISHED as usize);
    let masq = Masq {
        family: "",
        uplink: UPLINK_ADDR,
        in_masq,
        icmp: ICMP,
    };
    check_masq(&masq, &snat, &rnat);
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
        assert!(
            published(&model.v4.publish, reply, front),
            "DNAT_CT {reply:?} → {front:?}: no published port leads there"
        );
    }
    same_as_model("", [snat, rnat, dnat_ct], &model.v4);
}

/// The IPv6 NAT maps' invariants, on the kernel's maps alone, as for IPv4: every SNAT6
/// entry paired with its RNAT6 entry and back, to the uplink's IPv6 address and a port
/// in its range; every DNAT_CT6 entry from a dual-stack endpoint's address and port that
/// a published port leads to; then equal to the model's.
fn check_maps6(dp: &Datapath, model: &Model) {
    let [snat, rnat, dnat_ct] = read_nat::<[u8; 16]>(dp, [SNAT6_MAP, RNAT6_MAP, DNAT_CT6_MAP]);
    let masq = Masq {
        family: "6",
        uplink: UPLINK6,
        in_masq: in_masq6,
        icmp: ICMP6,
    };
    check_masq(&masq, &snat, &rnat);
    for (reply, front) in &dnat_ct {
        assert!(
            model.endpoint_by_ip6(reply.src).is_some(),
            "DNAT_CT6 {reply:?} → {front:?}: not from a dual-stack endpoint"
        );
        if front.flags == NAT_FLAG_INBOUND {
            // A connection routed in: the endpoint's own address and port are its front.
            assert_eq!(
                (front.addr, front.port, front._pad),
                (reply.src, reply.sport, 0),
                "DNAT_CT6 {reply:?} → {front:?}: an inbound entry's front is not its endpoint"
            );
            continue;
        }
        assert!(plain(front), "DNAT_CT6 {reply:?}: flags/padding {front:?}");
        assert!(
            published(&model.nat6.publish, reply, front),
            "DNAT_CT6 {reply:?} → {front:?}: no published port leads there"
        );
    }
    same_as_model("6", [snat, rnat, dnat_ct], &model.nat6);
}

/// The kernel's state is exactly the model's: no entry lost (evicted), none extra.
fn same_as_model<A: Address>(
    family: &str,
    [snat, rnat, dnat_ct]: [HashMap<TupleOf<A>, NatTargetOf<A>>; 3],
    model: &Tables<A>,
) {
    assert_eq!(snat, model.snat, "SNAT{family} map differs from the model");
    assert_eq!(rnat, model.rnat, "RNAT{family} map differs from the model");
    let what = format!("DNAT_CT{family} map differs from the model");
    assert_eq!(dnat_ct, model.dnat_ct, "{what}");
}

/// A family's masquerade as the maps must reflect it: the uplink's address, the
/// masqueraded subnets, its ICMP's protocol; `family` names its maps ("" or "6").
struct Masq<A> {
    family: &'static str,
    uplink: A,
    in_masq: fn(A) -> bool,
    icmp: u8,
}

/// No flags, no padding: a SNAT/RNAT (or IPv6 DNAT_CT) value.
fn plain<A: Address>(t: &NatTargetOf<A>) -> bool {
    (t.flags, t._pad) == (0, 0)
}

/// The masquerade maps' invariants, for either family: every SNAT entry is of a
/// masqueraded source, to the uplink's address and a port in its range, and paired with
/// its RNAT entry, and every RNAT entry with its SNAT entry.
fn check_masq<A: Address>(
    m: &Masq<A>,
    snat: &HashMap<TupleOf<A>, NatTargetOf<A>>,
    rnat: &HashMap<TupleOf<A>, NatTargetOf<A>>,
) {
    let f = m.family;
    for (orig, t) in snat {
        assert!(plain(t), "SNAT{f} {orig:?}: flags/padding {t:?}");
        assert_eq!(orig._pad, [0; 3], "SNAT{f} key padding {orig:?}");
        let proto = orig.proto;
        assert!(
            proto == TCP || proto == UDP || proto == m.icmp,
            "SNAT{f} {orig:?}"
        );
        assert!(
            (m.in_masq)(orig.src),
            "SNAT{f} of a non-masqueraded source {orig:?}"
        );
        assert_eq!(t.addr, m.uplink, "SNAT{f} {orig:?} → {t:?}");
        assert!(
            (NAT_FIRST..=NAT_LAST).contains(&t.port),
            "SNAT{f} {orig:?}: port {} outside {NAT_FIRST}-{NAT_LAST}",
            t.port
        );
        if orig.proto == m.icmp {
            assert_eq!(orig.dport, 0, "ICMP SNAT{f} key {orig:?}");
        }
        let reply = TupleOf::new(orig.proto, orig.dst, orig.dport, t.addr, t.port);
        assert_eq!(
            rnat.get(&reply),
            Some(&NatTargetOf::new(orig.src, orig.sport)),
            "SNAT{f} {orig:?} → {t:?} has no matching RNAT{f} {reply:?}"
        );
    }
    for (reply, back) in rnat {
        assert!(plain(back), "RNAT{f} {reply:?}: flags/padding {back:?}");
        let orig = TupleOf::new(reply.proto, back.addr, back.port, reply.src, reply.sport);
        assert_eq!(
            snat.get(&orig),
            Some(&NatTargetOf::new(reply.dst, reply.dport)),
            "RNAT{f} {reply:?} → {back:?} has no matching SNAT{f} {orig:?}"
        );
    }
}

/// Whether a published port (on the connection's front address, or on every address)
/// leads to DNAT_CT entry `reply`'s endpoint address and port.
fn published<A: Address>(
    publish: &HashMap<PublishKeyOf<A>, NatTargetOf<A>>,
    reply: &TupleOf<A>,
    front: &NatTargetOf<A>,
) -> bool {
    [front.addr, A::UNSPECIFIED].iter().any(|host| {
        publish.get(&PublishKeyOf::new(reply.proto, *host, front.port))
            == Some(&NatTargetOf::new(reply.src, reply.sport))
    })
}
