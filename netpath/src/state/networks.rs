//! Network records: create (smallest free id, subnet and gateway checks), remove, read.

use super::*;

impl Store {
    /// Creates a network with the smallest free id ≥ 1.
    pub fn create_network(
        &self,
        req: &NetworkCreate,
        resolved: ResolvedNetwork,
    ) -> Result<Network> {
        let subnet = req.subnet;
        if subnet.prefix_len() > 30 {
            return Err(StateError::InvalidSubnet {
                subnet,
                reason:
                    "it has no room for a gateway and endpoints (the prefix must be /30 or shorter)"
                        .into(),
            });
        }
        if subnet.trunc() != subnet {
            return Err(StateError::InvalidSubnet {
                subnet,
                reason: format!("it has host bits set (did you mean {}?)", subnet.trunc()),
            });
        }
        if let Some(reason) = unusable_reason(subnet, None, resolved.gateway) {
            return Err(StateError::InvalidGateway {
                gateway: resolved.gateway,
                subnet,
                reason,
            });
        }
        self.write(|t| {
            if t.networks.get(req.name.as_str())?.is_some() {
                return Err(StateError::NetworkExists {
                    name: req.name.clone(),
                });
            }
            for item in t.networks.iter()? {
                let (k, v) = item?;
                let other: Network = decode(NETWORKS_NAME, k.value(), v.value())?;
                if overlaps(subnet, other.subnet) {
                    return Err(StateError::SubnetOverlap {
                        subnet,
                        other: other.name,
                        other_subnet: other.subnet,
                    });
                }
            }
            let id = smallest_free_network_id(&t.network_ids)?;
            let network = Network {
                id,
                name: req.name.clone(),
                subnet,
                gateway: resolved.gateway,
                mode: req.mode,
                uplink: resolved.uplink,
                mtu: resolved.mtu,
                bridge: resolved.bridge,
                no_masquerade: req.no_masquerade.clone(),
            };
            t.networks
                .insert(network.name.as_str(), encode(&network).as_slice())?;
            t.network_ids.insert(id, network.name.as_str())?;
            Ok(network)
        })
    }

    /// Removes a network. With endpoints, fails with [`StateError::NetworkInUse`] unless
    /// `force`, in which case its endpoints and their leases go too and are returned (the
    /// caller then deletes their devices).
    pub fn remove_network(&self, name: &str, force: bool) -> Result<(Network, Vec<Endpoint>)> {
        self.write(|t| {
            let network = read_network(&t.networks, name)?;
            let ids = leased_endpoint_ids(&t.ip_leases, network.id)?;
            if !ids.is_empty() && !force {
                return Err(StateError::NetworkInUse {
                    name: name.to_owned(),
                    endpoints: ids.len(),
                });
            }
            let mut removed = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(ep) = find_endpoint(&t.endpoints, &id)? {
                    remove_endpoint_rows(t, &ep, Some(network.id))?;
                    removed.push(ep);
                }
            }
            // Nothing should be left; make sure no lease outlives its network.
            t.ip_leases
                .retain_in((network.id, 0)..=(network.id, u32::MAX), |_, _| false)?;
            t.networks.remove(name)?;
            t.network_ids.remove(network.id)?;
            removed.sort_by(|a, b| a.id.cmp(&b.id));
            Ok((network, removed))
        })
    }

    pub fn get_network(&self, name: &str) -> Result<Network> {
        let txn = self.db.begin_read()?;
        read_network(&txn.open_table(NETWORKS)?, name)
    }

    /// Every network, by name.
    pub fn list_networks(&self) -> Result<Vec<Network>> {
        let txn = self.db.begin_read()?;
        decode_all(&txn.open_table(NETWORKS)?, NETWORKS_NAME, str::to_owned)
    }
}
