//! The kernel's maps: reading, checking against the model, emptying.

use std::hash::Hash;

use aya::Pod;
use netpath_common::nat::{
    DNAT_CT6_MAP, NAT_AGE6_MAP, NatTarget6, PublishKey6, RNAT6_MAP, SNAT6_MAP, Tuple6,
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
    for name in [SNAT_MAP, RNAT_MAP, DNAT_CT_MAP] {
        clear_map::<Tuple, NatTarget>(dp, name);
    }
    clear_map::<Tuple, NatAge>(dp, NAT_AGE_MAP);
    for name in [SNAT6_MAP, RNAT6_MAP, DNAT_CT6_MAP] {
        clear_map::<Tuple6, NatTarget6>(dp, name);
    }
    clear_map::<Tuple6, NatAge>(dp, NAT_AGE6_MAP);
    model.nat6.clear();
    model.snat.clear();
    model.rnat.clear();
    model.dnat_ct.clear();
    model.rnat_keys.clear();
    model.dnat_keys.clear();
}

/// The NAT maps' invariants, on the kernel's maps alone.
pub(super) fn check_maps(dp: &Datapath, model: &Model) {
    check_maps6(dp, model);
    let snat: HashMap<Tuple, NatTarget> = read_map(dp, SNAT_MAP);
    let rnat: HashMap<Tuple, NatTarget> = read_map(dp, RNAT_MAP);
    let dnat_ct: HashMap<Tuple, NatTarget> = read_map(dp, DNAT_CT_MAP);
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

/// The IPv6 NAT maps' invariants, on the kernel's maps alone, as for IPv4: every SNAT6
/// entry paired with its RNAT6 entry and back, to the uplink's IPv6 address and a port
/// in its range; every DNAT_CT6 entry from a dual-stack endpoint's address and port that
/// a published port leads to; then equal to the model's.
fn check_maps6(dp: &Datapath, model: &Model) {
    let snat: HashMap<Tuple6, NatTarget6> = read_map(dp, SNAT6_MAP);
    let rnat: HashMap<Tuple6, NatTarget6> = read_map(dp, RNAT6_MAP);
    let dnat_ct: HashMap<Tuple6, NatTarget6> = read_map(dp, DNAT_CT6_MAP);
    println!(
        "maps: {} SNAT6, {} RNAT6, {} DNAT_CT6 entries",
        snat.len(),
        rnat.len(),
        dnat_ct.len()
    );
    let plain = |t: &NatTarget6| (t.flags, t._pad) == (0, 0);
    for (orig, t) in &snat {
        assert!(plain(t), "SNAT6 {orig:?}: flags/padding {t:?}");
        assert_eq!(orig._pad, [0; 3], "SNAT6 key padding {orig:?}");
        assert!(matches!(orig.proto, TCP | UDP | ICMP6), "SNAT6 {orig:?}");
        assert!(
            in_masq6(orig.src),
            "SNAT6 of a non-masqueraded source {orig:?}"
        );
        assert_eq!(t.addr, UPLINK6, "SNAT6 {orig:?} → {t:?}");
        assert!(
            (NAT_FIRST..=NAT_LAST).contains(&t.port),
            "SNAT6 {orig:?}: port {} outside {NAT_FIRST}-{NAT_LAST}",
            t.port
        );
        if orig.proto == ICMP6 {
            assert_eq!(orig.dport, 0, "ICMPv6 SNAT6 key {orig:?}");
        }
        let reply = Tuple6::new(orig.proto, orig.dst, orig.dport, t.addr, t.port);
        assert_eq!(
            rnat.get(&reply),
            Some(&NatTarget6::new(orig.src, orig.sport)),
            "SNAT6 {orig:?} → {t:?} has no matching RNAT6 {reply:?}"
        );
    }
    for (reply, back) in &rnat {
        assert!(plain(back), "RNAT6 {reply:?}: flags/padding {back:?}");
        let orig = Tuple6::new(reply.proto, back.addr, back.port, reply.src, reply.sport);
        assert_eq!(
            snat.get(&orig),
            Some(&NatTarget6::new(reply.dst, reply.dport)),
            "RNAT6 {reply:?} → {back:?} has no matching SNAT6 {orig:?}"
        );
    }
    for (reply, front) in &dnat_ct {
        assert!(plain(front), "DNAT_CT6 {reply:?}: flags/padding {front:?}");
        assert!(
            model.endpoint_by_ip6(reply.src).is_some(),
            "DNAT_CT6 {reply:?} → {front:?}: not from a dual-stack endpoint"
        );
        let published = [front.addr, [0; 16]].iter().any(|host| {
            model
                .nat6
                .publish
                .get(&PublishKey6::new(reply.proto, *host, front.port))
                == Some(&NatTarget6::new(reply.src, reply.sport))
        });
        assert!(
            published,
            "DNAT_CT6 {reply:?} → {front:?}: no published port leads there"
        );
    }
    assert_eq!(snat, model.nat6.snat, "SNAT6 map differs from the model");
    assert_eq!(rnat, model.nat6.rnat, "RNAT6 map differs from the model");
    assert_eq!(
        dnat_ct, model.nat6.dnat_ct,
        "DNAT_CT6 map differs from the model"
    );
}
