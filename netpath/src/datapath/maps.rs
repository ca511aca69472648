//! Writes to the datapath's maps: endpoints, uplinks, masquerade, published ports, the
//! host's addresses; and point reads of NAT state.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;

/// A delete of an absent key is success (aya reports it as KeyNotFound or ENOENT).
pub(super) fn absent_ok(map: &'static str, r: Result<(), MapError>) -> Result<()> {
    match r {
        Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(source) => Err(DatapathError::WriteMap { map, source }),
    }
}

/// The netns cookie of this thread's network namespace (`SO_NETNS_COOKIE`, Linux 5.14).
pub(super) fn netns_cookie() -> io::Result<u64> {
    let sock = std::net::UdpSocket::bind((std::net::Ipv4Addr::LOCALHOST, 0))?;
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: a getsockopt on a socket we own, into a u64 whose size we pass.
    let r = unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cookie)
}

/// Makes the address set `map` (values unused) hold exactly `want`.
fn set_exactly<K: aya::Pod + Ord>(
    map: &mut HashMap<MapData, K, u8>,
    name: &'static str,
    want: &[K],
) -> Result<()> {
    let want: std::collections::BTreeSet<K> = want.iter().copied().collect();
    let have: Vec<K> = map.keys().filter_map(|k| k.ok()).collect();
    for old in have.iter().filter(|a| !want.contains(*a)) {
        absent_ok(name, map.remove(old))?;
    }
    for new in want.iter().filter(|a| !have.contains(*a)) {
        map.insert(new, 1, 0)
            .map_err(DatapathError::writing(name))?;
    }
    Ok(())
}

impl Datapath {
    /// Records this process's network namespace (its netns cookie) as the host
    /// namespace, the only one whose sockets the socket hooks translate.
    pub(super) fn set_host_netns(&mut self) -> Result<()> {
        let cookie = netns_cookie().map_err(|source| DatapathError::Cgroup {
            path: PathBuf::from("/proc/self/ns/net"),
            source,
        })?;
        let map = open_map(&self.pins, HOST_NETNS_MAP)?;
        let mut array: Array<MapData, u64> =
            Array::try_from(map).map_err(|source| DatapathError::OpenMap {
                path: self.pins.map(HOST_NETNS_MAP),
                source,
            })?;
        array
            .set(0, cookie, 0)
            .map_err(DatapathError::writing(HOST_NETNS_MAP))
    }

    /// Makes `NETPATH_LOCAL_ADDRS` and `NETPATH_LOCAL_ADDRS6` (the host addresses a
    /// publish on every address answers on for host processes) hold exactly `addrs`, each
    /// family's in its map (a datapath without the IPv6 map ignores the IPv6 ones).
    pub fn set_local_addrs(&mut self, addrs: &[std::net::IpAddr]) -> Result<()> {
        let (v4, v6) = crate::types::split_families(addrs);
        let v4: Vec<[u8; 4]> = v4.iter().map(|a| a.octets()).collect();
        set_exactly(&mut self.local_addrs, LOCAL_ADDRS_MAP, &v4)?;
        if let Some(map) = self.local_addrs6.as_mut() {
            let v6: Vec<[u8; 16]> = v6.iter().map(|a| a.octets()).collect();
            set_exactly(map, LOCAL_ADDRS6_MAP, &v6)?;
        }
        Ok(())
    }

    /// Registers (or updates) an endpoint: by address (destination lookups: by its IPv4
    /// address unless it has none, by its IPv6 address if it has one), by host-side ifindex (source checks), and a zeroed
    /// counter entry if it has none.
    /// The ifindex entry goes in last, so the fast path never enforces for an endpoint
    /// it cannot also reach.
    /// [`ENDPOINT_FLAG_PUBLISHED`], if the endpoint's entry has it, is kept; the other
    /// flags are `value`'s (a policy change rewrites them). (A datapath of an older
    /// layout has no IPv6 endpoint map: there `ip6` has no fast path.)
    pub fn upsert_endpoint(
        &mut self,
        mut value: EndpointValue,
        ip6: Option<Ipv6Addr>,
    ) -> Result<()> {
        if let Ok(old) = self.ifaces.get(&value.ifindex, 0)
            && old.ip == value.ip
        {
            value.flags |= old.flags & ENDPOINT_FLAG_PUBLISHED;
        }
        if self.ep_stats.get(&value.ifindex, 0).is_err() {
            let cpus = aya::util::nr_cpus().map_err(|(_, e)| DatapathError::Cpus(e))?;
            let zero = PerCpuValues::try_from(vec![EndpointCounters::default(); cpus])
                .map_err(DatapathError::Cpus)?;
            self.ep_stats
                .insert(value.ifindex, zero, 0)
                .map_err(DatapathError::writing(EP_STATS_MAP))?;
        }
        if value.flags & ENDPOINT_FLAG_NO_IPV4 == 0 {
            self.endpoints
                .insert(EndpointKey { ip: value.ip }, value, 0)
                .map_err(DatapathError::writing(ENDPOINTS_MAP))?;
        }
        if let (Some(ip6), Some(map)) = (ip6, self.endpoints6.as_mut()) {
            map.insert(EndpointKey6 { ip: ip6.octets() }, value, 0)
                .map_err(DatapathError::writing(ENDPOINTS6_MAP))?;
        }
        self.ifaces
            .insert(value.ifindex, value, 0)
            .map_err(DatapathError::writing(IFACES_MAP))
    }

    /// Unregisters the endpoint with addresses `ip` and `ip6` (at least one of them)
    /// from every map; absent is fine.
    pub fn remove_endpoint(&mut self, ip: Option<Ipv4Addr>, ip6: Option<Ipv6Addr>) -> Result<()> {
        let ifindex = self.endpoint_by(ip, ip6).map(|v| v.ifindex);
        if let (Some(ip6), Some(map)) = (ip6, self.endpoints6.as_mut()) {
            let key6 = EndpointKey6 { ip: ip6.octets() };
            absent_ok(ENDPOINTS6_MAP, map.remove(&key6))?;
        }
        if let Some(ifindex) = ifindex {
            absent_ok(IFACES_MAP, self.ifaces.remove(&ifindex))?;
            absent_ok(EP_STATS_MAP, self.ep_stats.remove(&ifindex))?;
        }
        match ip {
            Some(ip) => absent_ok(
                ENDPOINTS_MAP,
                self.endpoints.remove(&EndpointKey { ip: ip.octets() }),
            ),
            None => Ok(()),
        }
    }

    /// The entry of the endpoint with IPv4 address `ip`, else of the one with IPv6
    /// address `ip6`.
    fn endpoint_by(&self, ip: Option<Ipv4Addr>, ip6: Option<Ipv6Addr>) -> Option<EndpointValue> {
        let v4 = ip.and_then(|ip| self.endpoints.get(&EndpointKey { ip: ip.octets() }, 0).ok());
        v4.or_else(|| {
            let map = self.endpoints6.as_ref()?;
            map.get(&EndpointKey6 { ip: ip6?.octets() }, 0).ok()
        })
    }

    /// Makes `ifindex` an uplink whose masqueraded connections take `uplink.addr`.
    pub fn set_uplink(&mut self, ifindex: u32, uplink: Uplink) -> Result<()> {
        self.uplinks
            .insert(ifindex, uplink, 0)
            .map_err(DatapathError::writing(UPLINKS_MAP))
    }

    /// Stops masquerading on `ifindex`; absent is fine.
    pub fn remove_uplink(&mut self, ifindex: u32) -> Result<()> {
        absent_ok(UPLINKS_MAP, self.uplinks.remove(&ifindex))
    }

    /// Masquerades traffic from `subnet` (network `network_id`) leaving an uplink.
    pub fn add_masq_subnet(&mut self, subnet: ipnet::Ipv4Net, network_id: u16) -> Result<()> {
        let key = LpmKey::new(u32::from(subnet.prefix_len()), subnet.network().octets());
        self.masq_src
            .insert(&key, u32::from(network_id), 0)
            .map_err(DatapathError::writing(MASQ_SRC_MAP))
    }

    /// Stops masquerading `subnet`; absent is fine.
    pub fn remove_masq_subnet(&mut self, subnet: ipnet::Ipv4Net) -> Result<()> {
        let key = LpmKey::new(u32::from(subnet.prefix_len()), subnet.network().octets());
        absent_ok(MASQ_SRC_MAP, self.masq_src.remove(&key))
    }

    /// Sets the destinations network `network_id` reaches unmasqueraded to exactly
    /// `cidrs` (entries of that network not in `cidrs` go), each family in its own trie.
    /// A datapath without NAT66 (an older layout's) does not masquerade IPv6 at all, so
    /// its IPv6 exemptions are moot and not written.
    pub fn set_no_masquerade(&mut self, network_id: u16, cidrs: &[ipnet::IpNet]) -> Result<()> {
        let network = u32::from(network_id);
        let (v4, v6) = crate::types::split_families(cidrs);
        let v4 = v4.iter().map(|c| {
            (
                c.prefix_len(),
                no_masq_key(network, c.network().octets()),
                1,
            )
        });
        sync_network_trie(&mut self.no_masq, NO_MASQ_MAP, network, v4)?;
        if let Some(m) = self.nat66.as_mut() {
            let v6 = v6.iter().map(|c| {
                (
                    c.prefix_len(),
                    no_masq_key6(network, c.network().octets()),
                    1,
                )
            });
            sync_network_trie(m.no_masq_mut(), NO_MASQ6_MAP, network, v6)?;
        }
        Ok(())
    }

    /// Network `network_id`'s policy entry ([`NETWORKS_MAP`]): `value`, or none. A
    /// datapath of a layout before 8 has no such map, and refuses a policy.
    pub fn set_network(&mut self, network_id: u16, value: Option<NetworkValue>) -> Result<()> {
        let key = u32::from(network_id);
        match (self.networks.as_mut(), value) {
            (Some(map), Some(v)) => map
                .insert(key, v, 0)
                .map_err(DatapathError::writing(NETWORKS_MAP)),
            (Some(map), None) => absent_ok(NETWORKS_MAP, map.remove(&key)),
            (None, None) => Ok(()),
            (None, Some(_)) => Err(DatapathError::Layout {
                detail: format!(
                    "the pinned datapath has no {NETWORKS_MAP} map (network policy): restart the daemon with this build to migrate it"
                ),
            }),
        }
    }

    /// Network `network_id`'s egress rules: exactly `rules` (a CIDR of either family and
    /// `policy::EGRESS_DENY` or `EGRESS_ALLOW`), each family in its trie. A datapath of a
    /// layout before 8 has none, and refuses rules.
    pub fn set_egress(&mut self, network_id: u16, rules: &[(ipnet::IpNet, u8)]) -> Result<()> {
        let network = u32::from(network_id);
        let Some((v4, v6)) = self.egress.as_mut() else {
            if rules.is_empty() {
                return Ok(());
            }
            return Err(DatapathError::Layout {
                detail: format!(
                    "the pinned datapath has no {EGRESS_MAP} map (egress rules): restart the daemon with this build to migrate it"
                ),
            });
        };
        let rules4 = rules.iter().filter_map(|(c, rule)| match c {
            ipnet::IpNet::V4(c) => Some((
                c.prefix_len(),
                egress_key(network, c.network().octets()),
                *rule,
            )),
            ipnet::IpNet::V6(_) => None,
        });
        sync_network_trie(v4, EGRESS_MAP, network, rules4)?;
        let rules6 = rules.iter().filter_map(|(c, rule)| match c {
            ipnet::IpNet::V6(c) => Some((
                c.prefix_len(),
                egress_key6(network, c.network().octets()),
                *rule,
            )),
            ipnet::IpNet::V4(_) => None,
        });
        sync_network_trie(v6, EGRESS6_MAP, network, rules6)
    }

    /// The host ports network `network_id`'s endpoints may reach under restricted host
    /// access: exactly `ports` (IP protocol, port). A datapath of a layout before 8 has no
    /// such map, and refuses ports.
    pub fn set_host_access(&mut self, network_id: u16, ports: &[(u8, u16)]) -> Result<()> {
        let network = u32::from(network_id);
        let Some(map) = self.host_access.as_mut() else {
            if ports.is_empty() {
                return Ok(());
            }
            return Err(DatapathError::Layout {
                detail: format!(
                    "the pinned datapath has no {HOST_ACCESS_MAP} map (host access): restart the daemon with this build to migrate it"
                ),
            });
        };
        let key = |&(proto, port): &(u8, u16)| HostAccessKey {
            network,
            port,
            proto,
            _pad: 0,
        };
        let want: Vec<HostAccessKey> = ports.iter().map(key).collect();
        let stale: Vec<HostAccessKey> = (map.keys().filter_map(|k| k.ok()))
            .filter(|k| k.network == network && !want.contains(k))
            .collect();
        for k in stale {
            absent_ok(HOST_ACCESS_MAP, map.remove(&k))?;
        }
        for k in want {
            map.insert(k, 1, 0)
                .map_err(DatapathError::writing(HOST_ACCESS_MAP))?;
        }
        Ok(())
    }

    /// Publishes `key` (protocol, host address or 0.0.0.0, host port) to `endpoint`,
    /// marking the endpoint first ([`Datapath::mark_published`]).
    pub fn publish(&mut self, key: PublishKey, endpoint: NatTarget) -> Result<()> {
        self.mark_published(IpAddr::V4(endpoint.addr.into()))?;
        self.publish
            .insert(key, endpoint, 0)
            .map_err(DatapathError::writing(PUBLISH_MAP))
    }

    /// Sets [`ENDPOINT_FLAG_PUBLISHED`] on the endpoint with address `ip` (either
    /// family), on its ifindex entry (the one the programs read; its address entries
    /// keep their flags) and its IPv4 entry; no endpoint there is fine.
    pub fn mark_published(&mut self, ip: IpAddr) -> Result<()> {
        let found = match ip {
            IpAddr::V4(v4) => self.endpoint_by(Some(v4), None),
            IpAddr::V6(v6) => self.endpoint_by(None, Some(v6)),
        };
        // The ifindex entry's flags, not the address entry's.
        let Some(mut value) = found.and_then(|v| self.ifaces.get(&v.ifindex, 0).ok()) else {
            return Ok(());
        };
        if value.flags & ENDPOINT_FLAG_PUBLISHED != 0 {
            return Ok(());
        }
        value.flags |= ENDPOINT_FLAG_PUBLISHED;
        self.upsert_endpoint(value, None)
    }

    /// Sets the policy flags ([`POLICY_FLAGS`]) of the endpoint with address `ip` or
    /// `ip6` to `flags`, on each of its entries (the programs read the ifindex entry's);
    /// its other flags stay. No endpoint there is fine.
    pub fn set_endpoint_policy(
        &mut self,
        ip: Option<Ipv4Addr>,
        ip6: Option<Ipv6Addr>,
        flags: u8,
    ) -> Result<()> {
        let found = self.endpoint_by(ip, ip6);
        let Some(mut value) = found.and_then(|v| self.ifaces.get(&v.ifindex, 0).ok()) else {
            return Ok(());
        };
        value.flags = (value.flags & !POLICY_FLAGS) | (flags & POLICY_FLAGS);
        self.upsert_endpoint(value, ip6)
    }

    /// Stops publishing `key`; absent is fine.
    pub fn unpublish(&mut self, key: PublishKey) -> Result<()> {
        absent_ok(PUBLISH_MAP, self.publish.remove(&key))
    }

    /// Publishes the IPv6 `key` to `endpoint` (the endpoint's IPv6 address and port),
    /// marking the endpoint first ([`Datapath::mark_published`]). `Err` on a datapath
    /// whose object has no IPv6 publish map.
    pub fn publish6(&mut self, key: PublishKey6, endpoint: NatTarget6) -> Result<()> {
        if self.publish6.is_none() {
            return Err(DatapathError::MissingMap { map: PUBLISH6_MAP });
        }
        self.mark_published(IpAddr::V6(endpoint.addr.into()))?;
        let map = self
            .publish6
            .as_mut()
            .ok_or(DatapathError::MissingMap { map: PUBLISH6_MAP })?;
        map.insert(key, endpoint, 0)
            .map_err(DatapathError::writing(PUBLISH6_MAP))
    }

    /// Stops publishing the IPv6 `key`; absent (or no such map) is fine.
    pub fn unpublish6(&mut self, key: PublishKey6) -> Result<()> {
        match self.publish6.as_mut() {
            Some(map) => absent_ok(PUBLISH6_MAP, map.remove(&key)),
            None => Ok(()),
        }
    }

    /// [`Datapath::dnat_entry`] for an IPv6 connection.
    pub fn dnat_entry6(&self, reply: &Tuple6) -> Option<CtFront6> {
        self.dnat_ct6.as_ref()?.get(reply, 0).ok()
    }

    /// Number of published ports.
    pub fn published_count(&self) -> usize {
        self.publish.keys().filter(|k| k.is_ok()).count()
    }

    /// The front (host address and port) a reply with endpoint-side tuple `reply`
    /// is translated to, and the connection's clock and state, if it is tracked.
    pub fn dnat_entry(&self, reply: &Tuple) -> Option<CtFront> {
        self.dnat_ct.as_ref()?.get(reply, 0).ok()
    }

    /// The masquerade mapping of connection `orig`, if one exists.
    pub fn snat_entry(&self, orig: &Tuple) -> Option<NatTarget> {
        self.snat.get(orig, 0).ok()
    }

    /// The activity record of the masqueraded connection whose replies look like `reply`.
    pub fn nat_age(&self, reply: &Tuple) -> Option<NatAge> {
        self.nat_age.as_ref()?.get(reply, 0).ok()
    }

    /// Overwrites a connection's activity record (tests: age a connection).
    pub fn set_nat_age(&mut self, reply: &Tuple, age: NatAge) -> Result<()> {
        let Some(map) = self.nat_age.as_mut() else {
            return Err(DatapathError::Layout {
                detail: format!("{NAT_AGE_MAP} is of an older layout"),
            });
        };
        map.insert(reply, age, 0)
            .map_err(DatapathError::writing(NAT_AGE_MAP))
    }

    /// Number of masqueraded connections tracked.
    pub fn snat_count(&self) -> usize {
        self.snat.keys().filter(|k| k.is_ok()).count()
    }
}

/// Makes the exemption trie `map` hold exactly `want` for `network` (a destination's
/// prefix length, its key data, its value): keys whose first four bytes are the network
/// id ([`no_masq_key`], `policy::egress_key`) and not wanted go, the wanted ones are
/// written (prefix length: the id's 32 bits and the destination's).
fn sync_network_trie<const K: usize>(
    map: &mut LpmTrie<MapData, [u8; K], u8>,
    name: &'static str,
    network: u32,
    want: impl Iterator<Item = (u8, [u8; K], u8)>,
) -> Result<()> {
    let want: Vec<(LpmKey<[u8; K]>, u8)> = want
        .map(|(prefix, data, value)| (LpmKey::new(32 + u32::from(prefix), data), value))
        .collect();
    let same = |a: &LpmKey<[u8; K]>, b: &LpmKey<[u8; K]>| {
        a.data() == b.data() && a.prefix_len() == b.prefix_len()
    };
    let stale: Vec<LpmKey<[u8; K]>> = map
        .keys()
        .filter_map(|k| k.ok())
        .filter(|k| k.data()[..4] == network.to_be_bytes() && !want.iter().any(|(w, _)| same(w, k)))
        .collect();
    for k in stale {
        absent_ok(name, map.remove(&k))?;
    }
    for (k, value) in &want {
        map.insert(k, value, 0)
            .map_err(DatapathError::writing(name))?;
    }
    Ok(())
}
