//! Endpoint records and their IP leases: reserve (lowest free address), mark ready,
//! release, read by id or prefix, list.

use super::*;

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
            let ip = match new.ip {
                Some(ip) => {
                    if let Some(reason) = unusable_reason(network.subnet, Some(network.gateway), ip)
                    {
                        return Err(StateError::InvalidIp {
                            network: network.name,
                            subnet: network.subnet,
                            ip,
                            reason,
                        });
                    }
                    let owner = t
                        .ip_leases
                        .get((network.id, u32::from(ip)))?
                        .map(|g| g.value().to_owned());
                    if let Some(endpoint) = owner {
                        return Err(StateError::IpInUse {
                            network: network.name,
                            ip,
                            endpoint,
                        });
                    }
                    ip
                }
                None => lowest_free_ip(&t.ip_leases, &network)?.ok_or_else(|| {
                    StateError::SubnetExhausted {
                        network: network.name.clone(),
                        subnet: network.subnet,
                    }
                })?,
            };
            let endpoint = Endpoint {
                id: new.id,
                network: network.name,
                kind: new.kind,
                state: EndpointState::Creating,
                ip,
                // A bridged container shares the subnet's link; a routed container
                // and a microVM are point-to-point /32s behind their gateway.
                prefix_len: match (new.kind, network.mode) {
                    (EndpointKind::Veth, Mode::Bridge) => network.subnet.prefix_len(),
                    _ => 32,
                },
                mac: new.mac,
                gateway: network.gateway,
                host_ifname: new.host_ifname,
                details: new.details,
            };
            t.endpoints
                .insert(endpoint.id.as_str(), encode(&endpoint).as_slice())?;
            t.ip_leases
                .insert((network.id, u32::from(ip)), endpoint.id.as_str())?;
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
                let ids = leased_endpoint_ids(&txn.open_table(IP_LEASES)?, network.id)?;
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
