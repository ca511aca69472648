//! How a migrated map's entries are carried into this build's map ([`super::layout`]):
//! most are copied as they are; where a layout changed where values sit (the stats
//! array's slots), they are moved. Every map has a rule here; a map without one cannot
//! migrate.

use aya::{
    Pod,
    maps::{HashMap, LpmTrie, PerCpuArray, PerCpuHashMap},
};
use netpath_common::{
    maps::{
        Counter, DropReason, EndpointCounters, EndpointKey, EndpointValue, Hook, HostAccessKey,
        NetworkValue,
    },
    nat::{
        CT_ESTABLISHED, CtFront, CtFront6, CtFrontOf, NatAge, NatTarget, NatTarget6, NatTargetOf,
        PublishKey, PublishKey6, SockNatKey, SockNatKey6, Tuple, Tuple6, Uplink,
    },
    packet::PacketClass,
};

use super::*;

/// The packet classes per hook in `NETPATH_STATS` version 1 (layouts 1 to 3), before the
/// IPv6 classes were appended (each hook's block of slots grew from 11 to 16).
const STATS_V1_CLASSES: u32 = 11;

/// Where slot `i` of a stats array of `version` goes in this build's: the same (hook,
/// class) — classes keep their numbers, new ones come after them in each hook's block.
fn stats_slot(version: u32, i: u32) -> u32 {
    if version == 1 {
        (i / STATS_V1_CLASSES) * PacketClass::COUNT + i % STATS_V1_CLASSES
    } else {
        i
    }
}

/// The drop reasons per hook in `NETPATH_DROPS` version 6 (layouts 6 and 7), before the
/// policy reasons were appended (each hook's block of slots grew from 14 to 17).
const DROPS_V6_REASONS: u32 = 14;

/// Where slot `i` of a drops array of `version` goes in this build's: before version 6
/// the array had one slot per reason and no hook; those counts go to the `tc_ingress`
/// block (every hook but the uplinks' is a tc ingress one). From version 6 on, the same
/// (hook, reason): reasons keep their numbers, new ones come after them in each block.
fn drops_slot(version: u32, i: u32) -> u32 {
    match version {
        ..6 => Hook::TcIngress as u32 * DropReason::COUNT + i,
        6 => (i / DROPS_V6_REASONS) * DropReason::COUNT + i % DROPS_V6_REASONS,
        _ => i,
    }
}

/// `NETPATH_NAT_AGE`'s value before layout 7 (version 1): no creation time.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct NatAgeV1 {
    seen: u32,
    state: u8,
    _pad: [u8; 3],
}

// SAFETY: `repr(C)`, integer fields only, no implicit padding (4 + 1 + 3 bytes).
unsafe impl Pod for NatAgeV1 {}

/// Maps whose values [`copy_entries`] widens from pinned version `from`: the
/// connection-tracking maps before layout 7 (their version 1).
pub fn reshapes(name: &str, from: u32) -> bool {
    matches!(
        name,
        NAT_AGE_MAP | NAT_AGE6_MAP | DNAT_CT_MAP | DNAT_CT6_MAP
    ) && from == 1
}

/// A masquerade age from before layout 7: created when last seen, for all it knows.
fn widen_age(v: NatAgeV1) -> NatAge {
    NatAge {
        created: v.seen,
        ..NatAge::new(v.seen, v.state)
    }
}

/// A published connection's front from before layout 7, which kept no clock: seen and
/// created `now`, and taken as answered (the longer timeout: a live connection is not
/// listed as expired for want of a record).
fn widen_front<A: netpath_common::nat::Address>(front: NatTargetOf<A>, now: u32) -> CtFrontOf<A> {
    CtFrontOf::new(front, CT_ESTABLISHED, now)
}

/// Copies every entry of `old` (map `name` at version `from`) into `new` with update
/// flags `flags`, by the key and value types of the map, converting what changed.
/// Counter arrays are copied slot by slot (the new array may be longer: new slots start
/// at zero), and only once (`only_new` skips them).
pub fn copy_entries(
    name: &'static str,
    from: u32,
    old: Map,
    new: Map,
    flags: u64,
    only_new: bool,
) -> Result<usize> {
    let e = DatapathError::reading(name);
    match name {
        STATS_MAP | DROPS_MAP | FORWARDS_MAP if only_new => Ok(0),
        STATS_MAP | DROPS_MAP | FORWARDS_MAP => {
            let old = PerCpuArray::<_, Counter>::try_from(old).map_err(e)?;
            let mut new = PerCpuArray::<_, Counter>::try_from(new).map_err(e)?;
            let slot = |i| match name {
                STATS_MAP => stats_slot(from, i),
                DROPS_MAP => drops_slot(from, i),
                _ => i,
            };
            let mut n = 0;
            let len = new.len();
            for i in (0..old.len()).filter(|&i| slot(i) < len) {
                new.set(slot(i), old.get(&i, 0).map_err(e)?, 0).map_err(e)?;
                n += 1;
            }
            Ok(n)
        }
        HOST_NETNS_MAP => {
            // Rewritten by the daemon at every start (`attach_host_local`).
            Ok(0)
        }
        // What to report is set again by whoever watches; the ring, its lost count and
        // the last drop are the moment's, nothing to carry.
        MONITOR_MAP | EVENTS_MAP | EVENTS_LOST_MAP | LAST_DROP_MAP => Ok(0),
        ENDPOINTS_MAP => copy_hash::<EndpointKey, EndpointValue>(name, old, new, flags),
        ENDPOINTS6_MAP => copy_hash::<EndpointKey6, EndpointValue>(name, old, new, flags),
        IFACES_MAP => copy_hash::<u32, EndpointValue>(name, old, new, flags),
        NETWORKS_MAP => copy_hash::<u32, NetworkValue>(name, old, new, flags),
        HOST_ACCESS_MAP => copy_hash::<HostAccessKey, u8>(name, old, new, flags),
        EP_STATS_MAP => {
            let old = PerCpuHashMap::<_, u32, EndpointCounters>::try_from(old).map_err(e)?;
            let mut new = PerCpuHashMap::<_, u32, EndpointCounters>::try_from(new).map_err(e)?;
            copy_all(name, old.iter(), |k, v| new.insert(k, v, flags).is_ok())
        }
        SNAT_MAP | RNAT_MAP => copy_hash::<Tuple, NatTarget>(name, old, new, flags),
        DNAT_CT_MAP if reshapes(name, from) => {
            let now = nat_now();
            let widen = |v: NatTarget| widen_front(v, now);
            copy_hash_with(name, old, new, flags, |k: Tuple| k, widen)
        }
        DNAT_CT_MAP => copy_hash::<Tuple, CtFront>(name, old, new, flags),
        NAT_AGE_MAP if reshapes(name, from) => {
            copy_hash_with(name, old, new, flags, |k: Tuple| k, widen_age)
        }
        NAT_AGE_MAP => copy_hash::<Tuple, NatAge>(name, old, new, flags),
        SNAT6_MAP | RNAT6_MAP => copy_hash::<Tuple6, NatTarget6>(name, old, new, flags),
        NAT_AGE6_MAP if reshapes(name, from) => {
            copy_hash_with(name, old, new, flags, |k: Tuple6| k, widen_age)
        }
        NAT_AGE6_MAP => copy_hash::<Tuple6, NatAge>(name, old, new, flags),
        UPLINKS_MAP => copy_hash::<u32, Uplink>(name, old, new, flags),
        PUBLISH_MAP => copy_hash::<PublishKey, NatTarget>(name, old, new, flags),
        SOCK_NAT_MAP => copy_hash::<SockNatKey, NatTarget>(name, old, new, flags),
        LOCAL_ADDRS_MAP => copy_hash::<[u8; 4], u8>(name, old, new, flags),
        PUBLISH6_MAP => copy_hash::<PublishKey6, NatTarget6>(name, old, new, flags),
        DNAT_CT6_MAP if reshapes(name, from) => {
            let now = nat_now();
            let widen = |v: NatTarget6| widen_front(v, now);
            copy_hash_with(name, old, new, flags, |k: Tuple6| k, widen)
        }
        DNAT_CT6_MAP => copy_hash::<Tuple6, CtFront6>(name, old, new, flags),
        SOCK_NAT6_MAP => copy_hash::<SockNatKey6, NatTarget6>(name, old, new, flags),
        LOCAL_ADDRS6_MAP => copy_hash::<[u8; 16], u8>(name, old, new, flags),
        LAYOUT_MAP => Ok(0),
        MASQ_SRC_MAP => copy_lpm::<[u8; 4], u32>(name, old, new, flags),
        NO_MASQ_MAP | EGRESS_MAP => copy_lpm::<[u8; 8], u8>(name, old, new, flags),
        EGRESS6_MAP => copy_lpm::<[u8; 20], u8>(name, old, new, flags),
        _ => Err(DatapathError::Layout {
            detail: format!("no rule carries map {name} across layouts"),
        }),
    }
}

/// Copies a hash or LRU hash map; returns how many entries the new map took (with
/// `BPF_NOEXIST`, those it lacked).
fn copy_hash<K: Pod, V: Pod>(name: &'static str, old: Map, new: Map, flags: u64) -> Result<usize> {
    copy_hash_with(name, old, new, flags, |k: K| k, |v: V| v)
}

/// Copies a hash or LRU hash map whose old keys and values become new ones by `key` and
/// `value`.
fn copy_hash_with<K: Pod, V: Pod, K2: Pod, V2: Pod>(
    name: &'static str,
    old: Map,
    new: Map,
    flags: u64,
    key: impl Fn(K) -> K2,
    value: impl Fn(V) -> V2,
) -> Result<usize> {
    let e = DatapathError::reading(name);
    let old = HashMap::<_, K, V>::try_from(old).map_err(e)?;
    let mut new = HashMap::<_, K2, V2>::try_from(new).map_err(e)?;
    copy_all(name, old.iter(), |k, v| {
        new.insert(key(k), value(v), flags).is_ok()
    })
}

fn copy_lpm<K: Pod, V: Pod>(name: &'static str, old: Map, new: Map, flags: u64) -> Result<usize> {
    let e = DatapathError::reading(name);
    let old = LpmTrie::<_, K, V>::try_from(old).map_err(e)?;
    let mut new = LpmTrie::<_, K, V>::try_from(new).map_err(e)?;
    copy_all(name, old.iter(), |k, v| new.insert(&k, v, flags).is_ok())
}

/// Feeds every entry of `entries` to `insert`; how many it took.
fn copy_all<K, V>(
    name: &'static str,
    entries: impl Iterator<Item = Result<(K, V), MapError>>,
    mut insert: impl FnMut(K, V) -> bool,
) -> Result<usize> {
    let mut n = 0;
    for item in entries {
        let (k, v) = item.map_err(DatapathError::reading(name))?;
        n += usize::from(insert(k, v));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_slots_keep_their_hook_and_class() {
        // Hook 0's block is where it was; hook 2's `ipv4_udp` (slot 2 * 11 + 1) moves.
        assert_eq!(stats_slot(1, 5), 5);
        assert_eq!(stats_slot(1, 2 * 11 + 1), 2 * PacketClass::COUNT + 1);
        assert_eq!(stats_slot(1, 3 * 11 + 10), 3 * PacketClass::COUNT + 10);
        assert_eq!(stats_slot(2, 40), 40, "this build's own version: unchanged");
    }

    #[test]
    fn drops_without_a_hook_go_to_tc_ingress() {
        let spoofed = DropReason::SpoofedIp as u32;
        let at = |hook| netpath_common::maps::drop_index(hook, DropReason::SpoofedIp);
        assert_eq!(drops_slot(1, spoofed), at(Hook::TcIngress));
        assert_eq!(drops_slot(5, spoofed), at(Hook::TcIngress));
        let own = at(Hook::UplinkEgress);
        assert_eq!(
            drops_slot(7, own),
            own,
            "this build's own version: unchanged"
        );
    }

    #[test]
    fn layout_8_moves_each_hooks_drops_to_its_wider_block() {
        use netpath_common::maps::drop_index;
        // Version 6 (layouts 6 and 7): blocks of 14 reasons.
        for hook in Hook::ALL {
            for reason in [DropReason::SpoofedIp, DropReason::FragmentUnseen] {
                let old = hook as u32 * 14 + reason as u32;
                assert_eq!(
                    drops_slot(6, old),
                    drop_index(hook, reason),
                    "{hook:?} {reason:?}"
                );
            }
        }
        // The new reasons' slots start at zero: no old slot lands on them.
        let targets: Vec<u32> = (0..4 * 14).map(|i| drops_slot(6, i)).collect();
        assert!(!targets.contains(&drop_index(Hook::TcIngress, DropReason::Isolated)));
        assert!(!targets.contains(&drop_index(Hook::Xdp, DropReason::Internal)));
    }

    #[test]
    fn layout_7_widens_connection_records_and_keeps_their_translation() {
        use netpath_common::nat::{CT_CLOSING, NAT_FLAG_SELF};
        let old = NatAgeV1 {
            seen: 500,
            state: CT_CLOSING,
            _pad: [0; 3],
        };
        assert_eq!(std::mem::size_of::<NatAgeV1>(), 8, "layout 6's value");
        let age = widen_age(old);
        assert_eq!((age.seen, age.created, age.state), (500, 500, CT_CLOSING));
        let front = NatTarget {
            flags: NAT_FLAG_SELF,
            ..NatTarget::new([198, 51, 100, 2], 8080)
        };
        let ct = widen_front(front, 77);
        assert_eq!(ct.front(), front);
        assert_eq!((ct.state, ct.seen, ct.created), (CT_ESTABLISHED, 77, 77));
        for name in [NAT_AGE_MAP, NAT_AGE6_MAP, DNAT_CT_MAP, DNAT_CT6_MAP] {
            assert!(reshapes(name, 1) && !reshapes(name, 2), "{name}");
        }
        assert!(!reshapes(SNAT_MAP, 1));
    }
}
