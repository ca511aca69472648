//! How a migrated map's entries are carried into this build's map ([`super::layout`]):
//! most are copied as they are; where a layout changed what the values hold, the old
//! ones are converted. Every map has a rule here; a map without one cannot migrate.

use aya::{
    Pod,
    maps::{HashMap, LpmTrie, PerCpuArray, PerCpuHashMap},
};
use netpath_common::{
    maps::{Counter, EndpointCounters, EndpointKey, EndpointValue},
    nat::{NatAge, NatTarget, PublishKey, SockNatKey, Tuple, Uplink},
    packet::PacketClass,
};

use super::*;

/// The packet classes per hook in `NETPATH_STATS` version 1 (layouts 1 to 3), before the
/// IPv6 classes were appended (each hook's block of slots grew from 11 to 16).
const STATS_V1_CLASSES: u32 = 11;

/// The size of an endpoint value in `NETPATH_ENDPOINTS` and `NETPATH_IFACES` version 1
/// (layouts 1 to 3): [`EndpointValue`] without the IPv6 address.
const ENDPOINT_V1_SIZE: u32 = 24;

/// Whether the values of map `name` at `version`, `size` bytes each, can be widened into
/// this build's by [`copy_entries`].
pub fn widens(name: &str, version: u32, size: u32) -> bool {
    matches!(name, ENDPOINTS_MAP | IFACES_MAP) && version == 1 && size == ENDPOINT_V1_SIZE
}

/// An endpoint value of version 1: the same fields, in the same place, without `ip6`
/// (zero until the daemon's reconcile, which runs before the migration finishes, writes
/// the endpoint anew).
fn endpoint_from_v1(v: [u8; ENDPOINT_V1_SIZE as usize]) -> EndpointValue {
    EndpointValue {
        ip: [v[0], v[1], v[2], v[3]],
        ifindex: u32::from_ne_bytes([v[4], v[5], v[6], v[7]]),
        mac: [v[8], v[9], v[10], v[11], v[12], v[13]],
        host_mac: [v[14], v[15], v[16], v[17], v[18], v[19]],
        network_id: u16::from_ne_bytes([v[20], v[21]]),
        kind: v[22],
        flags: v[23],
        ip6: [0; 16],
    }
}

/// Where slot `i` of a stats array of `version` goes in this build's: the same (hook,
/// class) — classes keep their numbers, new ones come after them in each hook's block.
fn stats_slot(version: u32, i: u32) -> u32 {
    if version == 1 {
        (i / STATS_V1_CLASSES) * PacketClass::COUNT + i % STATS_V1_CLASSES
    } else {
        i
    }
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
    let e = move |source| DatapathError::ReadMap { map: name, source };
    match name {
        STATS_MAP | DROPS_MAP | FORWARDS_MAP if only_new => Ok(0),
        STATS_MAP | DROPS_MAP | FORWARDS_MAP => {
            let old = PerCpuArray::<_, Counter>::try_from(old).map_err(e)?;
            let mut new = PerCpuArray::<_, Counter>::try_from(new).map_err(e)?;
            let slot = |i| {
                if name == STATS_MAP {
                    stats_slot(from, i)
                } else {
                    i
                }
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
        ENDPOINTS_MAP if from == 1 => {
            copy_hash_with(name, old, new, flags, |k: EndpointKey| k, endpoint_from_v1)
        }
        IFACES_MAP if from == 1 => {
            copy_hash_with(name, old, new, flags, |k: u32| k, endpoint_from_v1)
        }
        ENDPOINTS_MAP => copy_hash::<EndpointKey, EndpointValue>(name, old, new, flags),
        ENDPOINTS6_MAP => copy_hash::<EndpointKey6, EndpointValue>(name, old, new, flags),
        IFACES_MAP => copy_hash::<u32, EndpointValue>(name, old, new, flags),
        EP_STATS_MAP => {
            let old = PerCpuHashMap::<_, u32, EndpointCounters>::try_from(old).map_err(e)?;
            let mut new = PerCpuHashMap::<_, u32, EndpointCounters>::try_from(new).map_err(e)?;
            copy_all(name, old.iter(), |k, v| new.insert(k, v, flags).is_ok())
        }
        SNAT_MAP | RNAT_MAP | DNAT_CT_MAP => copy_hash::<Tuple, NatTarget>(name, old, new, flags),
        NAT_AGE_MAP => copy_hash::<Tuple, NatAge>(name, old, new, flags),
        UPLINKS_MAP => copy_hash::<u32, Uplink>(name, old, new, flags),
        PUBLISH_MAP => copy_hash::<PublishKey, NatTarget>(name, old, new, flags),
        SOCK_NAT_MAP => copy_hash::<SockNatKey, NatTarget>(name, old, new, flags),
        LOCAL_ADDRS_MAP => copy_hash::<[u8; 4], u8>(name, old, new, flags),
        LAYOUT_MAP => Ok(0),
        MASQ_SRC_MAP => copy_lpm::<[u8; 4], u32>(name, old, new, flags),
        NO_MASQ_MAP => copy_lpm::<[u8; 8], u8>(name, old, new, flags),
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
    let e = move |source| DatapathError::ReadMap { map: name, source };
    let old = HashMap::<_, K, V>::try_from(old).map_err(e)?;
    let mut new = HashMap::<_, K2, V2>::try_from(new).map_err(e)?;
    copy_all(name, old.iter(), |k, v| {
        new.insert(key(k), value(v), flags).is_ok()
    })
}

fn copy_lpm<K: Pod, V: Pod>(name: &'static str, old: Map, new: Map, flags: u64) -> Result<usize> {
    let e = move |source| DatapathError::ReadMap { map: name, source };
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
        let (k, v) = item.map_err(|source| DatapathError::ReadMap { map: name, source })?;
        n += usize::from(insert(k, v));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_1_endpoint_keeps_every_field_and_has_no_ipv6_yet() {
        let v = EndpointValue {
            ip: [10, 0, 0, 2],
            ifindex: 0x0102_0304,
            mac: [2, 0, 0, 0, 0, 2],
            host_mac: [2, 0xee, 0, 0, 0, 1],
            network_id: 0x0506,
            kind: 2,
            flags: 3,
            ip6: [0; 16],
        };
        // SAFETY: `EndpointValue` is plain data of 40 bytes (map_type!), read as bytes.
        let bytes: [u8; 40] = unsafe { std::mem::transmute(v) };
        let mut v1 = [0u8; 24];
        v1.copy_from_slice(&bytes[..24]);
        assert_eq!(endpoint_from_v1(v1), v);
        assert!(widens(ENDPOINTS_MAP, 1, 24) && widens(IFACES_MAP, 1, 24));
        assert!(!widens(ENDPOINTS_MAP, 2, 24), "only from version 1");
        assert!(!widens(DROPS_MAP, 1, 24));
    }

    #[test]
    fn stats_slots_keep_their_hook_and_class() {
        // Hook 0's block is where it was; hook 2's `ipv4_udp` (slot 2 * 11 + 1) moves.
        assert_eq!(stats_slot(1, 5), 5);
        assert_eq!(stats_slot(1, 2 * 11 + 1), 2 * PacketClass::COUNT + 1);
        assert_eq!(stats_slot(1, 3 * 11 + 10), 3 * PacketClass::COUNT + 10);
        assert_eq!(stats_slot(2, 40), 40, "this build's own version: unchanged");
    }
}
