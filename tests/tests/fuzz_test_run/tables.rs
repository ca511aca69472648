//! The model's NAT state, per address family ([`Tables`]: what the kernel's SNAT, RNAT
//! and DNAT_CT maps must hold, and the published ports), what one frame adds to it
//! ([`Changes`]), and the port a new masqueraded connection gets.

use super::*;

/// A family's NAT state as the model keeps it — the kernel's SNAT, RNAT and DNAT_CT maps
/// and the published ports — with the keys of its entries, to craft traffic that hits
/// them (reply tuples of masqueraded connections, DNAT_CT keys).
pub(super) struct Tables<A: Address> {
    pub(super) snat: HashMap<TupleOf<A>, NatTargetOf<A>>,
    pub(super) rnat: HashMap<TupleOf<A>, NatTargetOf<A>>,
    pub(super) dnat_ct: HashMap<TupleOf<A>, NatTargetOf<A>>,
    pub(super) rnat_keys: Vec<TupleOf<A>>,
    pub(super) dnat_keys: Vec<TupleOf<A>>,
    pub(super) publish: HashMap<PublishKeyOf<A>, NatTargetOf<A>>,
}

impl<A: Address> Default for Tables<A> {
    fn default() -> Self {
        Tables {
            snat: HashMap::new(),
            rnat: HashMap::new(),
            dnat_ct: HashMap::new(),
            rnat_keys: Vec::new(),
            dnat_keys: Vec::new(),
            publish: HashMap::new(),
        }
    }
}

/// What one frame adds to a family's [`Tables`].
#[derive(Debug)]
pub(super) struct Changes<A: Address> {
    pub(super) snat: Option<(TupleOf<A>, NatTargetOf<A>)>,
    pub(super) rnat: Option<(TupleOf<A>, NatTargetOf<A>)>,
    pub(super) dnat_ct: Option<(TupleOf<A>, NatTargetOf<A>)>,
}

impl<A: Address> Default for Changes<A> {
    fn default() -> Self {
        Changes {
            snat: None,
            rnat: None,
            dnat_ct: None,
        }
    }
}

impl<A: Address> Tables<A> {
    pub(super) fn apply(&mut self, fx: Changes<A>) {
        record(&mut self.snat, None, fx.snat);
        record(&mut self.rnat, Some(&mut self.rnat_keys), fx.rnat);
        record(&mut self.dnat_ct, Some(&mut self.dnat_keys), fx.dnat_ct);
    }

    /// Forgets the connections (the published ports stay).
    pub(super) fn clear(&mut self) {
        self.snat.clear();
        self.rnat.clear();
        self.dnat_ct.clear();
        self.rnat_keys.clear();
        self.dnat_keys.clear();
    }

    /// How the ICMP error quoting `q` is translated back, if `q` is a TCP/UDP packet or
    /// an echo request that left masqueraded (from the uplink's address and NAT port).
    pub(super) fn error_back(&self, f: &[u8], q: &Quote<A>) -> Option<IcmpErrorBack<A>> {
        let (l4, (src, dst)) = (q.at.l4, q.addrs);
        let (sport, dport, sport_at, l4c) = match q.proto {
            TCP => (be16(f, l4), be16(f, l4 + 2), l4, l4 + 16),
            UDP => (be16(f, l4), be16(f, l4 + 2), l4, l4 + 6),
            p if (p, f[l4]) == q.echo => (be16(f, l4 + 4), 0, l4 + 4, l4 + 2),
            _ => return None,
        };
        let back = self
            .rnat
            .get(&TupleOf::new(q.proto, dst, dport, src, sport))?;
        Some(IcmpErrorBack {
            inner: q.at.inner,
            sport_at,
            l4c_at: (l4c + 2 <= q.at.end).then_some(l4c),
            addr: back.addr,
            port: back.port,
        })
    }

    /// The NAT port a new connection `orig` leaving by uplink address `uplink` gets: its
    /// own port or a hash-chosen one whose reply tuple is free (`None`: every retry
    /// taken).
    pub(super) fn allocate(&self, orig: &TupleOf<A>, uplink: A) -> Option<u16> {
        let range = PortRange {
            first: NAT_FIRST,
            last: NAT_LAST,
        };
        let hash = tuple_hash(orig);
        (0..PORT_RETRIES)
            .map(|a| nat_port(orig.sport, hash, a, range))
            .find(|p| {
                let reply = TupleOf::new(orig.proto, orig.dst, orig.dport, uplink, *p);
                !self.rnat.contains_key(&reply)
            })
    }
}

/// Records `entry` in `map`, and a new key in `keys` (to craft traffic that hits it).
pub(super) fn record<K: Copy + Eq + std::hash::Hash, V>(
    map: &mut HashMap<K, V>,
    keys: Option<&mut Vec<K>>,
    entry: Option<(K, V)>,
) {
    if let Some((k, v)) = entry
        && map.insert(k, v).is_none()
        && let Some(keys) = keys
    {
        keys.push(k);
    }
}

/// What an ICMP error quotes of the offending packet: where its IP header and L4
/// header are and where the datagram ends (`at`), its protocol, its source and
/// destination; `echo`: the family's ICMP protocol and echo request type.
pub(super) struct Quote<A> {
    pub(super) at: QuoteAt,
    pub(super) proto: u8,
    pub(super) addrs: (A, A),
    pub(super) echo: (u8, u8),
}

/// Offsets of a quote: its IP header, its L4 header, the end of the error's datagram.
pub(super) struct QuoteAt {
    pub(super) inner: usize,
    pub(super) l4: usize,
    pub(super) end: usize,
}
