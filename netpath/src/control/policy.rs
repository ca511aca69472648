//! Network policy ([`NetworkPolicy`]): what a network's endpoints may reach, set at
//! creation and changed on running endpoints. The datapath enforces it
//! (`netpath_common::policy`) from flags on each endpoint's entries, an internal
//! network's gateways in the network policy map, and egress rules in an LPM trie per
//! family. In bridge mode the bridge's ports of an isolated network carry the kernel's
//! `isolated` flag too, and the bridge answers its endpoints' ARP requests for each
//! other (`sysctl::set_private_vlan`), so that what they send each other reaches the
//! endpoint program (which refuses it, or translates a hairpinned connection's replies)
//! rather than nowhere.

use ipnet::IpNet;
use netpath_common::{
    maps::{
        ENDPOINT_FLAG_EGRESS, ENDPOINT_FLAG_HOST, ENDPOINT_FLAG_INTERNAL, ENDPOINT_FLAG_ISOLATED,
        NetworkValue,
    },
    policy::{EGRESS_ALLOW, EGRESS_DENY},
};

use super::{MapWrite, Result, Service, ServiceError, db, read};
use crate::model::{Destination, Endpoint, Network, NetworkPolicy, NetworkUpdate};

/// Most egress rules a network may have (both lists, `private` as one).
pub const EGRESS_RULES_MAX: usize = 1024;

/// What `private` stands for, besides the host's own subnets: RFC 1918, shared address
/// space (100.64/10, carrier-grade NAT), link-local (169.254/16: cloud metadata
/// services), unique local (fc00::/7) and link-local IPv6 (fe80::/10).
pub const PRIVATE: [&str; 7] = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "fc00::/7",
    "fe80::/10",
];

/// The endpoint flags of `policy`.
pub fn policy_flags(policy: &NetworkPolicy) -> u8 {
    let mut flags = 0;
    if policy.isolate {
        flags |= ENDPOINT_FLAG_ISOLATED;
    }
    if policy.internal {
        flags |= ENDPOINT_FLAG_INTERNAL;
    }
    // Allow rules alone refuse nothing: no lookup.
    if !policy.egress_deny.is_empty() {
        flags |= ENDPOINT_FLAG_EGRESS;
    }
    if !policy.host_access.is_all() {
        flags |= ENDPOINT_FLAG_HOST;
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

/// The egress trie entries of `policy` for a network with these families: its denied
/// destinations (`private` expanded, with the host's own subnets `host_subnets`), then
/// its allowed ones, which win over a denial of the same prefix. Sorted, one per CIDR.
pub fn egress_rules(
    policy: &NetworkPolicy,
    (ipv4, ipv6): (bool, bool),
    host_subnets: &[IpNet],
) -> Vec<(IpNet, u8)> {
    let mut rules = std::collections::BTreeMap::new();
    for d in &policy.egress_deny {
        match d {
            Destination::Cidr(c) => {
                rules.insert(*c, EGRESS_DENY);
            }
            Destination::Private => {
                let preset = PRIVATE.iter().map(|c| c.parse().expect("a CIDR"));
                for c in preset.chain(host_subnets.iter().map(IpNet::trunc)) {
                    rules.insert(c, EGRESS_DENY);
                }
            }
        }
    }
    for c in &policy.egress_allow {
        rules.insert(*c, EGRESS_ALLOW);
    }
    let family = |c: &IpNet| if c.addr().is_ipv4() { ipv4 } else { ipv6 };
    rules.into_iter().filter(|(c, _)| family(c)).collect()
}

/// The host access write of `network`: the ports it may reach (none when unrestricted:
/// its entries go).
pub fn host_access_write(network: &Network) -> MapWrite {
    MapWrite::SetHostAccess {
        network: network.id,
        ports: network.policy.host_access.ports(),
    }
}

/// The host's own subnets, for `private`: its routes to destinations that are neither a
/// default route nor a single host (a routed endpoint's /32, a TAP's).
pub fn host_subnets(routes: &[(String, IpNet)]) -> Vec<IpNet> {
    let mut subnets: Vec<IpNet> = routes
        .iter()
        .map(|(_, dst)| *dst)
        .filter(|d| d.prefix_len() > 0 && d.prefix_len() < d.max_prefix_len())
        .collect();
    subnets.sort();
    subnets.dedup();
    subnets
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
        let policy = update.apply(&network.policy);
        let families = (network.subnet.is_some(), network.subnet6.is_some());
        super::validate::policy(&policy, families)?;
        if policy == network.policy {
            return Ok(network);
        }
        let endpoints = self.list_endpoints(Some(name)).await?;
        if policy.internal && !network.policy.internal {
            self.refuse_published(&network, &endpoints).await?;
        }
        let updated = Network {
            policy: policy.clone(),
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

    /// The egress write of `network` (its rules as the host is now).
    pub(super) fn egress_write(&self, network: &Network) -> MapWrite {
        let subnets = host_subnets(&self.host.routes());
        let families = (network.subnet.is_some(), network.subnet6.is_some());
        MapWrite::SetEgress {
            network: network.id,
            rules: egress_rules(&network.policy, families, &subnets),
        }
    }

    /// Takes network `from`'s kernel state to `to`'s policy (the same network): its
    /// masquerade, its policy entry and egress rules, each endpoint's flags and, in
    /// bridge mode, its bridge's proxy ARP and its ports' isolation.
    async fn apply_policy(
        &self,
        from: &Network,
        to: &Network,
        endpoints: &[Endpoint],
    ) -> Result<()> {
        let (was, now) = (&from.policy, &to.policy);
        if now.internal && !was.internal {
            self.unplumb_masquerade(to).await?;
        }
        {
            let mut dp = self.datapath();
            dp.write(MapWrite::SetNetwork {
                network: to.id,
                value: network_value(to),
            })?;
            if (&now.egress_deny, &now.egress_allow) != (&was.egress_deny, &was.egress_allow) {
                dp.write(self.egress_write(to))?;
            }
            if now.host_access != was.host_access {
                dp.write(host_access_write(to))?;
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn private_expands_with_the_host_subnets_and_an_allow_wins_its_prefix() {
        let policy = NetworkPolicy {
            egress_deny: vec![
                Destination::Private,
                Destination::Cidr(net("203.0.113.0/24")),
            ],
            egress_allow: vec![net("10.1.2.0/24"), net("192.168.0.0/16")],
            ..Default::default()
        };
        let host = [net("198.18.0.0/24"), net("2001:db8:1::/64")];
        let rules = egress_rules(&policy, (true, false), &host);
        let find = |c: &str| rules.iter().find(|(r, _)| *r == net(c)).map(|(_, v)| *v);
        for denied in [
            "10.0.0.0/8",
            "172.16.0.0/12",
            "100.64.0.0/10",
            "169.254.0.0/16",
        ] {
            assert_eq!(find(denied), Some(EGRESS_DENY), "{denied}");
        }
        assert_eq!(
            find("198.18.0.0/24"),
            Some(EGRESS_DENY),
            "the host's subnet"
        );
        assert_eq!(find("203.0.113.0/24"), Some(EGRESS_DENY));
        assert_eq!(find("10.1.2.0/24"), Some(EGRESS_ALLOW), "a hole in 10/8");
        assert_eq!(
            find("192.168.0.0/16"),
            Some(EGRESS_ALLOW),
            "allow wins its own prefix"
        );
        // An IPv4-only network gets no IPv6 rule.
        assert!(rules.iter().all(|(c, _)| c.addr().is_ipv4()), "{rules:?}");
        let both = egress_rules(&policy, (true, true), &host);
        assert!(both.contains(&(net("fc00::/7"), EGRESS_DENY)));
        assert!(both.contains(&(net("2001:db8:1::/64"), EGRESS_DENY)));
        // Nothing denied: no flag, whatever is allowed.
        let only_allow = NetworkPolicy {
            egress_allow: vec![net("10.0.0.0/8")],
            ..Default::default()
        };
        assert_eq!(policy_flags(&only_allow), 0);
        assert_eq!(policy_flags(&policy), ENDPOINT_FLAG_EGRESS);
    }

    #[test]
    fn the_host_subnets_leave_out_default_routes_and_single_hosts() {
        let routes: Vec<(String, IpNet)> = [
            "0.0.0.0/0",
            "198.18.0.0/24",
            "10.60.0.7/32",
            "::/0",
            "fd60::7/128",
            "2001:db8::/64",
            "198.18.0.0/24",
        ]
        .iter()
        .map(|d| ("eth0".to_owned(), net(d)))
        .collect();
        assert_eq!(
            host_subnets(&routes),
            [net("198.18.0.0/24"), net("2001:db8::/64")]
        );
    }
}
