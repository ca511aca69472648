//! Network policy ([`NetworkPolicy`]): what a network's endpoints may reach, set at
//! creation and changed on running endpoints. The datapath enforces it
//! (`netpath_common::policy`) from flags on each endpoint's entries and, for an internal
//! network, its gateways in the network policy map. In bridge mode the bridge's ports of
//! an isolated network carry the kernel's `isolated` flag too, and the bridge answers
//! its endpoints' ARP requests for each other (`sysctl::set_private_vlan`), so that what
//! they send each other reaches the endpoint program (which refuses it, or translates a
//! hairpinned connection's replies) rather than nowhere.

use netpath_common::maps::{ENDPOINT_FLAG_INTERNAL, ENDPOINT_FLAG_ISOLATED, NetworkValue};

use super::{MapWrite, Result, Service, ServiceError, db, read};
use crate::model::{Endpoint, Network, NetworkPolicy, NetworkUpdate};

/// The endpoint flags of `policy`.
pub fn policy_flags(policy: NetworkPolicy) -> u8 {
    let mut flags = 0;
    if policy.isolate {
        flags |= ENDPOINT_FLAG_ISOLATED;
    }
    if policy.internal {
        flags |= ENDPOINT_FLAG_INTERNAL;
    }
    flags
}

/// Network `network`'s entry in the network policy map: its gateways if it is internal
/// (what its endpoints may still reach on the host), else none.
pub fn network_value(network: &Network) -> Option<NetworkValue> {
    network.policy.internal.then(|| NetworkValue {
        gateway: network.gateway.map_or([0; 4], |g| g.octets()),
        gateway6: network.gateway6.map_or([0; 16], |g| g.octets()),
    })
}

impl Service {
    /// Changes network `name`'s policy on its running endpoints, then records it. A
    /// network turning internal must have no published ports (an internal network has
    /// none); its masquerade goes, and comes back when it stops being internal. Should a
    /// step fail, the old policy is put back.
    pub async fn update_network(&self, name: &str, update: NetworkUpdate) -> Result<Network> {
        let lock = self.net_lock(name);
        let _guard = lock.lock().await;
        let network = read(&self.store, |s| s.get_network(name))?;
        let policy = update.apply(network.policy);
        if policy == network.policy {
            return Ok(network);
        }
        let endpoints = self.list_endpoints(Some(name)).await?;
        if policy.internal && !network.policy.internal {
            self.refuse_published(&network, &endpoints).await?;
        }
        let updated = Network {
            policy,
            ..network.clone()
        };
        let applied = match self.apply_policy(&network, &updated, &endpoints).await {
            Ok(()) => {
                let n = name.to_owned();
                db(&self.store, move |s| s.set_network_policy(&n, policy)).await
            }
            Err(e) => Err(e),
        };
        if applied.is_err() {
            let _ = self.apply_policy(&updated, &network, &endpoints).await;
        }
        applied
    }

    /// Refuses to make `network` internal while its endpoints have published ports.
    async fn refuse_published(&self, network: &Network, endpoints: &[Endpoint]) -> Result<()> {
        let ports = self.list_ports().await?;
        let mut published = ports
            .iter()
            .filter(|p| endpoints.iter().any(|e| e.id == p.endpoint))
            .peekable();
        if published.peek().is_none() {
            return Ok(());
        }
        let list: Vec<String> = published
            .map(|p| format!("{} ({})", p.id, p.endpoint))
            .collect();
        Err(ServiceError::Conflict {
            what: format!(
                "network {} has published ports, which an internal network cannot have: {}",
                network.name,
                list.join(", ")
            ),
            hint: Some("unpublish them first (`netpath port unpublish ENDPOINT`)".into()),
        })
    }

    /// Takes network `from`'s kernel state to `to`'s policy (the same network): its
    /// masquerade, its policy entry, each endpoint's flags and, in bridge mode, its
    /// bridge ports' isolation.
    async fn apply_policy(
        &self,
        from: &Network,
        to: &Network,
        endpoints: &[Endpoint],
    ) -> Result<()> {
        let (was, now) = (from.policy, to.policy);
        if now.internal && !was.internal {
            self.unplumb_masquerade(to).await?;
        }
        {
            let mut dp = self.datapath();
            dp.write(MapWrite::SetNetwork {
                network: to.id,
                value: network_value(to),
            })?;
            for ep in endpoints {
                dp.write(MapWrite::SetEndpointPolicy {
                    ip: ep.ip,
                    ip6: ep.ip6,
                    flags: policy_flags(now),
                })?;
            }
        }
        if let Some(bridge) = &to.bridge
            && now.isolate != was.isolate
        {
            self.host.set_private_vlan(bridge, now.isolate)?;
            for ep in endpoints {
                if let Some(link) = self.host.link_by_name(&ep.host_ifname).await? {
                    self.host.set_port_isolated(link.index, now.isolate).await?;
                }
            }
        }
        if was.internal && !now.internal {
            self.plumb_masquerade(to).await?;
        }
        Ok(())
    }

    /// Makes a new bridge port `index` of `network` isolated if the network is.
    pub(super) async fn isolate_port(&self, network: &Network, index: u32) -> Result<()> {
        if network.bridge.is_some() && network.policy.isolate {
            self.host.set_port_isolated(index, true).await?;
        }
        Ok(())
    }
}
