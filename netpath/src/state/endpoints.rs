//! Endpoint records and their IP leases: reserve (lowest free address), mark ready,
//! release, read by id or prefix, list.

use super::*;

/// Endpoints a bridge-mode network holds: the ports a Linux bridge takes, 1,024 port
/// numbers of which 0 is reserved (`BR_MAX_PORTS` and `find_portno` in the kernel's
/// `net/bridge/br_if.c`; one more fails with `EXFULL`). Routed networks have no such
/// limit.
pub const BRIDGE_MAX_PORTS: usize = 1023;

impl Store {
    /// A fresh endpoint id: 12 random lowercase hex digits, unused by any endpoint.
    /// [`Store::reserve_endpoint`] still rejects a duplicate, should another caller
    /// reserve the same id in between (48 random bits make that practically impossible).
    pub fn new_endpoint_id(&self) -> Result<String> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(ENDPOINTS)?;
        loop {
            let id = format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
            if table.get(id.as_str())?.is_none() {
                return Ok(id);
            }
        }
    }

    /// Writes a `Creating` endpoint record and leases its address, in one transaction.
    pub fn reserve_endpoint(&self, new: NewEndpoint) -> Result<Endpoint> {
        if !is_endpoint_id(&new.id) {
            return Err(StateError::InvalidEndpointId { id: new.id });
        }
        self.write_with(Flush::CrashOnly, |t| {
            let network = read_network(&t.networks, &new.network)?;
            if network.mode == Mode::Bridge && bridge_ports(t, network.id)? >= BRIDGE_MAX_PORTS {
                return Err(StateError::BridgeFull {
                    network: network.name,
                    max: BRIDGE_MAX_PORTS,
                });
            }
            if t.endpoints.get(new.id.as_str())?.is_some() {
                return Err(StateError::EndpointExists { id: new.id });
            }
            let owner = t
                .host_ifnames
                .get(new.host_ifname.as_str())?
                .map(|g| g.value().to_owned());
            if let Some(endpoint) = owner {
                return Err(StateError::HostIfnameInUse {
                    ifname: new.host_ifname,
                    endpoint,
                });
            }
            let ip = lease_in(
                &network,
                network.subnet.zip(network.gateway),
                new.ip,
                |ip| StateError::NoIpv4 {
                    network: network.name.clone(),
                    ip,
                },
                |key| t.ip_leases.get(key.to_v4(network.id)).map(lease_owner),
                |subnet, gateway| {
                    self.lowest_from((network.id, false), |from| {
                        lowest_free_ip(&t.ip_leases, network.id, subnet, gateway, from)
                    })
                },
            )?;
            let ip6 = lease_in(
                &network,
                network.subnet6.zip(network.gateway6),
                new.ip6,
                |ip| StateError::NoIpv6 {
                    network: network.name.clone(),
                    ip,
                },
                |key| t.ip6_leases.get(key.to_v6(network.id)).map(lease_owner),
                |subnet, gateway| {
                    self.lowest_from((network.id, true), |from| {
                        lowest_free_ip6(&t.ip6_leases, network.id, subnet, gateway, from)
                    })
                },
            )?;
            let endpoint = Endpoint {
                id: new.id,
                network: network.name,
                kind: new.kind,
                state: EndpointState::Creating,
                ip,
                ip6,
                gateway6: ip6.and(network.gateway6),
                // A bridged container shares the subnet's link; a routed container
                // and a microVM are point-to-point /32s behind their gateway.
                prefix_len: match (new.kind, network.mode, network.subnet) {
                    (EndpointKind::Veth, Mode::Bridge, Some(subnet)) => subnet.prefix_len(),
                    _ => 32,
                },
                mac: new.mac,
                gateway: ip.and(network.gateway),
                host_ifname: new.host_ifname,
                details: new.details,
            };
            t.endpoints
                .insert(endpoint.id.as_str(), encode(&endpoint).as_slice())?;
            if let Some(ip) = ip {
                t.ip_leases
                    .insert((network.id, u32::from(ip)), endpoint.id.as_str())?;
            }
            if let Some(ip6) = ip6 {
                t.ip6_leases
                    .insert((network.id, u128::from(ip6)), endpoint.id.as_str())?;
            }
            t.host_ifnames
                .insert(endpoint.host_ifname.as_str(), endpoint.id.as_str())?;
            Ok(endpoint)
        })
    }

    /// Marks an endpoint `Ready` (its devices exist). Idempotent.
    pub fn mark_ready(&self, id: &str) -> Result<Endpoint> {
        self.write_with(Flush::CrashOnly, |t| {
            let mut endpoint = read_endpoint(&t.endpoints, id)?;
            if endpoint.state != EndpointState::Ready {
                endpoint.state = EndpointState::Ready;
                t.endpoints.insert(id, encode(&endpoint).as_slice())?;
            }
            Ok(endpoint)
        })
    }

    /// Removes an endpoint record and frees its address; returns the removed record.
    pub fn release_endpoint(&self, id: &str) -> Result<Endpoint> {
        self.write_with(Flush::CrashOnly, |t| {
            let endpoint = read_endpoint(&t.endpoints, id)?;
            let network_id = t
                .networks
                .get(endpoint.network.as_str())?
                .map(|g| decode::<Network>(NETWORKS_NAME, &endpoint.network, g.value()))
                .transpose()?
                .map(|n| n.id);
            remove_endpoint_rows(t, &endpoint, network_id)?;
            if let Some(id) = network_id {
                let addrs = [endpoint.ip.map(IpAddr::V4), endpoint.ip6.map(IpAddr::V6)];
                for ip in addrs.into_iter().flatten() {
                    self.freed(id, ip);
                }
            }
            Ok(endpoint)
        })
    }

    pub fn get_endpoint(&self, id: &str) -> Result<Endpoint> {
        let txn = self.db.begin_read()?;
        read_endpoint(&txn.open_table(ENDPOINTS)?, id)
    }

    /// The endpoint whose id is `id` or, as with Docker's ids, the only one whose id starts
    /// with `id`. [`StateError::EndpointNotFound`] if none does,
    /// [`StateError::AmbiguousEndpointId`] if several do.
    pub fn find_endpoint_by_prefix(&self, id: &str) -> Result<Endpoint> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(ENDPOINTS)?;
        if let Some(ep) = find_endpoint(&table, id)? {
            return Ok(ep);
        }
        let not_found = || StateError::EndpointNotFound { id: id.to_owned() };
        if id.is_empty() {
            return Err(not_found());
        }
        let mut matches = Vec::new();
        for item in table.range(id..)? {
            let (k, v) = item?;
            if !k.value().starts_with(id) {
                break;
            }
            matches.push(decode::<Endpoint>(ENDPOINTS_NAME, k.value(), v.value())?);
            if matches.len() > 1 {
                return Err(StateError::AmbiguousEndpointId {
                    prefix: id.to_owned(),
                });
            }
        }
        matches.pop().ok_or_else(not_found)
    }

    /// Every endpoint (of `network`, if given; [`StateError::NetworkNotFound`] if it
    /// does not exist), by id.
    pub fn list_endpoints(&self, network: Option<&str>) -> Result<Vec<Endpoint>> {
        let txn = self.db.begin_read()?;
        let endpoints = txn.open_table(ENDPOINTS)?;
        let mut out = Vec::new();
        match network {
            None => out = decode_all(&endpoints, ENDPOINTS_NAME, str::to_owned)?,
            Some(name) => {
                let network = read_network(&txn.open_table(NETWORKS)?, name)?;
                let (v4, v6) = (txn.open_table(IP_LEASES)?, txn.open_table(IP6_LEASES)?);
                let ids = leased_endpoint_ids(&v4, &v6, network.id)?;
                for id in ids {
                    if let Some(ep) = find_endpoint(&endpoints, &id)? {
                        out.push(ep);
                    }
                }
                out.sort_by(|a, b| a.id.cmp(&b.id));
            }
        }
        Ok(out)
    }
}

/// An address to look a lease up by, in either family's table.
#[derive(Clone, Copy)]
struct LeaseKey(IpAddr);

impl LeaseKey {
    fn to_v4(self, network: u16) -> (u16, u32) {
        match self.0 {
            IpAddr::V4(ip) => (network, u32::from(ip)),
            IpAddr::V6(_) => unreachable!("an IPv6 lease looked up in the IPv4 table"),
        }
    }
    fn to_v6(self, network: u16) -> (u16, u128) {
        match self.0 {
            IpAddr::V6(ip) => (network, u128::from(ip)),
            IpAddr::V4(_) => unreachable!("an IPv4 lease looked up in the IPv6 table"),
        }
    }
}

/// The endpoint id of a lease row.
fn lease_owner(row: Option<redb::AccessGuard<'_, &'static str>>) -> Option<String> {
    row.map(|g| g.value().to_owned())
}

/// Refuses a requested `ip` that `subnet` cannot lease, or that `holder` says is leased.
fn check_lease(
    network: &Network,
    subnet: IpNet,
    gateway: IpAddr,
    ip: IpAddr,
    holder: impl FnOnce(LeaseKey) -> std::result::Result<Option<String>, redb::StorageError>,
) -> Result<()> {
    if let Some(reason) = unusable_reason(subnet, Some(gateway), ip) {
        let network = network.name.clone();
        return Err(StateError::InvalidIp {
            network,
            subnet,
            ip,
            reason,
        });
    }
    if let Some(endpoint) = holder(LeaseKey(ip))? {
        let network = network.name.clone();
        return Err(StateError::IpInUse {
            network,
            ip,
            endpoint,
        });
    }
    Ok(())
}

/// The endpoints of network `id`, each a port of its bridge in bridge mode: its leases of
/// whichever family it has more of (every endpoint has one of each family its network
/// has). A range scan of at most [`BRIDGE_MAX_PORTS`] entries.
fn bridge_ports(t: &Tables<'_>, id: u16) -> Result<usize> {
    let v4 = t.ip_leases.range((id, 0)..=(id, u32::MAX))?.count();
    let v6 = t.ip6_leases.range((id, 0)..=(id, u128::MAX))?.count();
    Ok(v4.max(v6))
}

/// The address of one family a new endpoint gets in `network`, whose subnet and gateway
/// of that family are `family` (`None`: it has none): the one `asked` for, if usable
/// and not held (`holder`), else the lowest free one (`lowest`); `None` for a family the
/// network lacks, and `no_family` if an address of it was asked for anyway.
fn lease_in<A: Copy + Into<IpAddr>, N: Copy + Into<IpNet>>(
    network: &Network,
    family: Option<(N, A)>,
    asked: Option<A>,
    no_family: impl FnOnce(A) -> StateError,
    holder: impl FnOnce(LeaseKey) -> std::result::Result<Option<String>, redb::StorageError>,
    lowest: impl FnOnce(N, A) -> Result<Option<A>>,
) -> Result<Option<A>> {
    match (family, asked) {
        (None, None) => Ok(None),
        (None, Some(ip)) => Err(no_family(ip)),
        (Some((subnet, gateway)), Some(ip)) => {
            check_lease(network, subnet.into(), gateway.into(), ip.into(), holder)?;
            Ok(Some(ip))
        }
        (Some((subnet, gateway)), None) => match lowest(subnet, gateway)? {
            Some(ip) => Ok(Some(ip)),
            None => Err(exhausted(network, subnet.into())),
        },
    }
}

fn exhausted(network: &Network, subnet: IpNet) -> StateError {
    let network = network.name.clone();
    StateError::SubnetExhausted { network, subnet }
}
