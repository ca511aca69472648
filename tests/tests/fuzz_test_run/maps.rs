//! The kernel's maps: reading, checking against the model, emptying.

use super::*;

pub(super) fn open_map(dp: &Datapath, name: &str) -> BpfHashMap<MapData, Tuple, NatTarget> {
    let data = MapData::from_pin(dp.pins().map(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let map = Map::from_map_data(data).unwrap_or_else(|e| panic!("{name}: {e}"));
    BpfHashMap::try_from(map).unwrap_or_else(|e| panic!("{name}: {e}"))
}

pub(super) fn read_map(dp: &Datapath, name: &str) -> HashMap<Tuple, NatTarget> {
    open_map(dp, name)
        .iter()
        .map(|r| r.unwrap_or_else(|e| panic!("iterating {name}: {e}")))
        .collect()
}

/// Frames per epoch of NAT state (see the frame loop): ~3 s at this machine's rate.
pub(super) const EPOCH: u64 = 100_000;

/// Empties the kernel's connection maps (SNAT, RNAT, DNAT_CT, NAT_AGE) and the model's.
pub(super) fn clear_nat_state(dp: &Datapath, model: &mut Model) {
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
pub(super) fn check_maps(dp: &Datapath, model: &Model) {
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
