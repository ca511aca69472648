//! Network records: create (smallest free id, subnet and gateway checks), policy
//! changes, remove, read.

use super::*;

impl Store {
    /// Records a network, every default decided by the caller, under the smallest free
    /// id ≥ 1 (whatever `network.id` says); returns it as recorded.
    pub fn create_network(&self, mut network: Network) -> Result<Network> {
        self.forget_free_from();
        if let Some((subnet, gateway)) = network.subnet.zip(network.gateway) {
            check_subnet(subnet.into(), 30, gateway.into())?;
        }
        let v6 = network.subnet6.map(|s| {
            let gateway6 = network
                .gateway6
                .expect("an IPv6 subnet comes with its gateway");
            (s, gateway6)
        });
        if let Some((subnet6, gateway6)) = v6 {
            if subnet6.prefix_len() < 64 {
                return Err(StateError::InvalidSubnet {
                    subnet: subnet6.into(),
                    reason: "an IPv6 subnet takes a prefix of /64 or longer".into(),
                });
            }
            check_subnet(subnet6.into(), 120, gateway6.into())?;
        }
        self.write(|t| {
            if t.networks.get(network.name.as_str())?.is_some() {
                return Err(StateError::NetworkExists {
                    name: network.name.clone(),
                });
            }
            let ours = [
                network.subnet.map(IpNet::from),
                network.subnet6.map(IpNet::from),
            ];
            for item in t.networks.iter()? {
                let (k, v) = item?;
                let other: Network = decode(NETWORKS_NAME, k.value(), v.value())?;
                let theirs = [
                    other.subnet.map(IpNet::from),
                    other.subnet6.map(IpNet::from),
                ];
                let clash = ours.iter().flatten().find_map(|subnet| {
                    let other = theirs.iter().flatten().find(|o| overlaps(*subnet, **o))?;
                    Some((*subnet, *other))
                });
                if let Some((subnet, other_subnet)) = clash {
                    return Err(StateError::SubnetOverlap {
                        subnet,
                        other: other.name,
                        other_subnet,
                    });
                }
            }
            network.id = smallest_free_network_id(&t.network_ids)?;
            t.networks
                .insert(network.name.as_str(), encode(&network).as_slice())?;
            t.network_ids.insert(network.id, network.name.as_str())?;
            Ok(network)
        })
    }

    /// Removes a network. With endpoints, fails with [`StateError::NetworkInUse`] unless
    /// `force`, in which case its endpoints and their leases go too and are returned (the
    /// caller then deletes their devices).
    pub fn remove_network(&self, name: &str, force: bool) -> Result<(Network, Vec<Endpoint>)> {
        // Its id may be reused: the next network of that id searches from its start.
        self.forget_free_from();
        self.write(|t| {
            let network = read_network(&t.networks, name)?;
            let ids = leased_endpoint_ids(&t.ip_leases, &t.ip6_leases, network.id)?;
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
            t.ip6_leases
                .retain_in((network.id, 0)..=(network.id, u128::MAX), |_, _| false)?;
            t.networks.remove(name)?;
            t.network_ids.remove(network.id)?;
            removed.sort_by(|a, b| a.id.cmp(&b.id));
            Ok((network, removed))
        })
    }

    /// Records network `name`'s new policy; returns the network as recorded.
    pub fn set_network_policy(&self, name: &str, policy: NetworkPolicy) -> Result<Network> {
        self.write(|t| {
            let network = Network {
                policy,
                ..read_network(&t.networks, name)?
            };
            t.networks
                .insert(network.name.as_str(), encode(&network).as_slice())?;
            Ok(network)
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

/// Refuses a subnet whose prefix is longer than `max_prefix` (no room for a gateway and
/// endpoints), with host bits set, or that cannot hold `gateway`.
fn check_subnet(subnet: IpNet, max_prefix: u8, gateway: IpAddr) -> Result<()> {
    if subnet.prefix_len() > max_prefix {
        return Err(StateError::InvalidSubnet {
            subnet,
            reason: format!(
                "it has no room for a gateway and endpoints (the prefix must be /{max_prefix} or shorter)"
            ),
        });
    }
    if subnet.trunc() != subnet {
        return Err(StateError::InvalidSubnet {
            subnet,
            reason: format!("it has host bits set (did you mean {}?)", subnet.trunc()),
        });
    }
    match unusable_reason(subnet, None, gateway) {
        Some(reason) => Err(StateError::InvalidGateway {
            gateway,
            subnet,
            reason,
        }),
        None => Ok(()),
    }
}
