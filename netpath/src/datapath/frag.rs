//! Point reads of the fragment-tracking maps (`NETPATH_FRAG`, `NETPATH_FRAG6`), which
//! only the programs write: what a datagram's later fragments get, for tests and
//! inspection. Opened on demand: an older layout's object has no such maps.

use aya::maps::HashMap;
use netpath_common::{
    frag::{FragKeyOf, FragValueOf},
    nat::Address,
};

use super::*;

impl Datapath {
    /// The record of IPv4 datagram `key` (as its first fragment arrived), if any.
    pub fn frag_entry(&self, key: &FragKeyOf<[u8; 4]>) -> Option<FragValueOf<[u8; 4]>> {
        self.frag_map(FRAG_MAP)?.get(key, 0).ok()
    }

    /// The record of IPv6 datagram `key`, if any.
    pub fn frag6_entry(&self, key: &FragKeyOf<[u8; 16]>) -> Option<FragValueOf<[u8; 16]>> {
        self.frag_map(FRAG6_MAP)?.get(key, 0).ok()
    }

    /// The records of IPv4 and IPv6 datagrams held now (0 for a map the datapath lacks).
    pub fn frag_counts(&self) -> (usize, usize) {
        (
            count(self.frag_map::<[u8; 4]>(FRAG_MAP)),
            count(self.frag_map::<[u8; 16]>(FRAG6_MAP)),
        )
    }

    fn frag_map<A>(
        &self,
        name: &'static str,
    ) -> Option<HashMap<MapData, FragKeyOf<A>, FragValueOf<A>>>
    where
        A: Address,
        FragKeyOf<A>: aya::Pod,
        FragValueOf<A>: aya::Pod,
    {
        open_typed_if_pinned(&self.pins, name).ok().flatten()
    }
}

fn count<K: aya::Pod, V: aya::Pod>(map: Option<HashMap<MapData, K, V>>) -> usize {
    map.map_or(0, |m| m.keys().filter(|k| k.is_ok()).count())
}
