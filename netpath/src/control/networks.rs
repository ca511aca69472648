//! Networks: creating one (validation, record, bridge and masquerade), plumbing its
//! devices again (start-up, reconcile), and removing it with or without its endpoints.

use ipnet::IpNet;
use netpath_common::{
    maps::Hook,
    nat::{MASQ_PORTS, Uplink, Uplink6},
};

use super::{MapWrite, Result, Service, ServiceError, db, read, validate};
use crate::{
    config,
    datapath::Attachment,
    model::{Mode, Network, NetworkCreate},
    state::StateError,
};

impl Service {
    pub async fn list_networks(&self) -> Result<Vec<Network>> {
        db(&self.store, |s| s.list_networks()).await
    }

    pub async fn get_network(&self, name: &str) -> Result<Network> {
        read(&self.store, |s| s.get_network(name))
    }

    pub async fn create_network(&self, mut req: NetworkCreate) -> Result<Network> {
        req.no_masquerade.sort();
        req.no_masquerade.dedup();
        validate::network_name(&req.name)?;
        let mtu = req.mtu.unwrap_or(super::DEFAULT_MTU);
        validate::mtu(mtu)?;
        match req.subnet {
            Some(subnet) => validate::subnet(subnet)?,
            None if req.subnet6.is_none() => {
                return Err(ServiceError::Invalid {
                    what: "a network needs a subnet".into(),
                    hint: Some(
                        "give an IPv4 subnet, an IPv6 subnet or both (--subnet 10.50.0.0/24 --subnet fd50::/64)"
                            .into(),
                    ),
                });
            }
            None if req.gateway.is_some() => {
                return Err(ServiceError::invalid(
                    "an IPv4 gateway needs an IPv4 subnet",
                ));
            }
            None => {}
        }
        if let Some(subnet6) = req.subnet6 {
            validate::subnet6(subnet6)?;
        }
        if req.gateway6.is_some() && req.subnet6.is_none() {
            return Err(ServiceError::invalid(
                "an IPv6 gateway needs an IPv6 subnet",
            ));
        }
        validate::no_masquerade(
            &req.no_masquerade,
            req.subnet.is_some(),
            req.subnet6.is_some(),
        )?;
        let policy = match req.profile {
            Some(p) => p.apply(req.policy.clone()),
            None => req.policy.clone(),
        };
        validate::policy(&policy, (req.subnet.is_some(), req.subnet6.is_some()))?;
        let gateway = req.subnet.map(|subnet| {
            req.gateway
                .unwrap_or_else(|| subnet.hosts().next().expect("a /30 or larger has hosts"))
        });
        let routes = self.host.routes();
        let ours: Vec<String> = self
            .list_networks()
            .await?
            .iter()
            .filter_map(|n| n.bridge.clone())
            .collect();
        let subnets = (req.subnet.map(IpNet::V4))
            .into_iter()
            .chain(req.subnet6.map(IpNet::V6));
        for subnet in subnets {
            if let Some((dev, dst)) = validate::overlapping_route(&routes, &ours, subnet) {
                return Err(ServiceError::Invalid {
                    what: format!("subnet {subnet} overlaps the host route {dst} on {dev}"),
                    hint: Some("pick a subnet no host interface uses".into()),
                });
            }
        }
        // The uplink by default: the device of the IPv4 default route.
        let uplink = match &req.uplink {
            Some(u) => Some(self.check_uplink(u).await?),
            None => routes
                .iter()
                .find(|(_, dst)| matches!(dst, IpNet::V4(d) if d.prefix_len() == 0))
                .map(|(dev, _)| dev.clone()),
        };
        // Said before the bridge check below, which would otherwise find its bridge.
        if self.get_network(&req.name).await.is_ok() {
            return Err(StateError::NetworkExists { name: req.name }.into());
        }
        let bridge = (req.mode == Mode::Bridge).then(|| config::bridge_name(&req.name));
        if let Some(b) = &bridge
            && self.host.link_by_name(b).await?.is_some()
        {
            return Err(ServiceError::invalid(format!(
                "interface {b} already exists on this host"
            )));
        }
        let lock = self.net_lock(&req.name);
        let _guard = lock.lock().await;
        // The first address after the subnet-router anycast address.
        let gateway6 = req.subnet6.map(|s| {
            req.gateway6
                .unwrap_or_else(|| (u128::from(s.network()) + 1).into())
        });
        let network = Network {
            id: 0, // the store's to pick
            name: req.name,
            subnet: req.subnet,
            gateway,
            subnet6: req.subnet6,
            gateway6,
            mode: req.mode,
            uplink,
            mtu,
            bridge,
            no_masquerade: req.no_masquerade,
            policy,
        };
        let network = db(&self.store, move |s| s.create_network(network)).await?;
        if let Err(e) = self.plumb_network(&network).await {
            let name = network.name.clone();
            let _ = self.unplumb_network(&network).await;
            let _ = db(&self.store, move |s| s.remove_network(&name, true)).await;
            return Err(e);
        }
        Ok(network)
    }

    /// An uplink the user named: an existing device traffic can leave by, not one of
    /// netpath's own.
    async fn check_uplink(&self, name: &str) -> Result<String> {
        validate::ifname("uplink", name)?;
        let Some(link) = self.host.link_by_name(name).await? else {
            return Err(ServiceError::invalid(format!(
                "uplink interface {name} does not exist"
            )));
        };
        if link.loopback {
            return Err(ServiceError::Invalid {
                what: format!(
                    "{name} is a loopback device: traffic cannot leave the host through it"
                ),
                hint: Some(
                    "give the interface traffic leaves by (the default route's, say), or omit --uplink"
                        .into(),
                ),
            });
        }
        if link
            .alias
            .as_deref()
            .is_some_and(|a| a.starts_with(config::ALIAS_PREFIX))
        {
            return Err(ServiceError::invalid(format!(
                "{name} is a device netpath made for a network or endpoint, not an uplink"
            )));
        }
        Ok(name.to_owned())
    }

    /// Creates a network's devices (bridge mode: the bridge with the gateway address,
    /// and the tc program on its ingress) and its masquerade. Idempotent.
    pub(super) async fn plumb_network(&self, network: &Network) -> Result<Option<Attachment>> {
        // An internal network's traffic leaves by no uplink; its endpoints reach its
        // gateways, which its policy entry names. (Only an internal network has one: the
        // endpoints of any other never read it.)
        match super::policy::network_value(network) {
            None => self.plumb_masquerade(network).await?,
            value => self.datapath().write(MapWrite::SetNetwork {
                network: network.id,
                value,
            })?,
        }
        if !network.policy.egress_deny.is_empty() {
            let write = self.egress_write(network);
            self.datapath().write(write)?;
        }
        if !network.policy.host_access.is_all() {
            let write = super::policy::host_access_write(network);
            self.datapath().write(write)?;
        }
        if network.subnet6.is_some() {
            // Said on the daemon's log, as its other host-wide changes.
            for line in self
                .host
                .enable_ipv6_forwarding(network.uplink.as_deref())?
            {
                eprintln!("netpath: network {}: {line}", network.name);
            }
        }
        let Some(bridge) = &network.bridge else {
            return Ok(None);
        };
        let alias = config::link_alias(&self.instance, "bridge", &network.name);
        let link = self.host.ensure_bridge(bridge, &alias, network.mtu).await?;
        if network.policy.isolate {
            self.host.set_private_vlan(bridge, true)?;
        }
        if let Some((subnet, gateway)) = network.subnet.zip(network.gateway) {
            self.host
                .add_address(link.index, gateway.into(), subnet.prefix_len())
                .await?;
        }
        if let Some((subnet6, gateway6)) = network.subnet6.zip(network.gateway6) {
            let prefix = subnet6.prefix_len();
            self.host
                .add_address(link.index, gateway6.into(), prefix)
                .await?;
        }
        self.host.set_up(link.index).await?;
        Ok(Some(self.datapath().attach_tc(
            Hook::TcIngress,
            &link.name,
            link.index,
        )?))
    }

    /// Egress masquerade for `network` on its uplink: the SNAT/reverse-SNAT programs on
    /// the uplink's egress/ingress, its addresses as the masquerade sources (IPv4's
    /// first, and for NAT66 its first global IPv6 address if it has one), and the
    /// network's subnets as masqueraded. Without an uplink, or an uplink without an
    /// IPv4 address, there is nothing to do.
    pub(super) async fn plumb_masquerade(&self, network: &Network) -> Result<()> {
        let Some(name) = &network.uplink else {
            return Ok(());
        };
        let Some(link) = self.host.link_by_name(name).await? else {
            return Ok(());
        };
        let Some(uplink) = self.uplink_write(link.index).await? else {
            return Ok(());
        };
        let mut dp = self.datapath();
        dp.attach_tc(Hook::UplinkEgress, &link.name, link.index)?;
        dp.attach_tc(Hook::UplinkIngress, &link.name, link.index)?;
        dp.write(uplink)?;
        dp.write(MapWrite::AddMasqSubnet {
            subnet: network.subnet,
            subnet6: network.subnet6,
            network: network.id,
        })?;
        dp.write(MapWrite::SetNoMasquerade {
            network: network.id,
            cidrs: network.no_masquerade.clone(),
        })?;
        Ok(())
    }

    /// Undoes [`Self::plumb_masquerade`]; the uplink keeps its programs while another
    /// network still uses it.
    pub(super) async fn unplumb_masquerade(&self, network: &Network) -> Result<()> {
        {
            let mut dp = self.datapath();
            dp.write(MapWrite::RemoveMasqSubnet {
                subnet: network.subnet,
                subnet6: network.subnet6,
            })?;
            dp.write(MapWrite::SetNoMasquerade {
                network: network.id,
                cidrs: Vec::new(),
            })?;
        }
        let Some(name) = &network.uplink else {
            return Ok(());
        };
        let still_used = self
            .list_networks()
            .await?
            .iter()
            .any(|n| n.name != network.name && n.uplink.as_deref() == Some(name));
        if still_used {
            return Ok(());
        }
        if let Some(link) = self.host.link_by_name(name).await? {
            let mut dp = self.datapath();
            dp.write(MapWrite::RemoveUplink(link.index))?;
            dp.forget_links(&link.name, link.index)?;
        }
        Ok(())
    }

    /// The uplink entry of link `index` as its addresses are now: its first IPv4 address
    /// and its first global IPv6 address (none: no NAT66 through it), over
    /// [`MASQ_PORTS`]. `None` without an IPv4 address.
    async fn uplink_write(&self, index: u32) -> Result<Option<MapWrite>> {
        let Some((addr, _)) = self.host.ipv4_addresses(index).await?.first().copied() else {
            return Ok(None);
        };
        let addr6 = self
            .host
            .ipv6_global_addresses(index)
            .await?
            .first()
            .copied();
        Ok(Some(MapWrite::SetUplink {
            ifindex: index,
            uplink: Uplink {
                addr: addr.octets(),
                first_port: MASQ_PORTS.first,
                last_port: MASQ_PORTS.last,
            },
            uplink6: addr6.map(|a| Uplink6 {
                addr: a.octets(),
                first_port: MASQ_PORTS.first,
                last_port: MASQ_PORTS.last,
            }),
        }))
    }

    /// Re-reads the addresses of every uplink a dual-stack network masquerades through
    /// and updates their entries: a host that gets its global IPv6 address by SLAAC may
    /// get it (or a new one) after the network was made. The daemon calls it with
    /// [`Self::refresh_local_addrs`]. A network's lock is not taken: the write is one map
    /// update, the same whoever makes it.
    pub async fn refresh_uplinks6(&self) -> Result<()> {
        let mut uplinks: Vec<String> = self
            .list_networks()
            .await?
            .into_iter()
            .filter(|n| n.subnet6.is_some())
            .filter_map(|n| n.uplink)
            .collect();
        uplinks.sort();
        uplinks.dedup();
        for name in uplinks {
            let Some(link) = self.host.link_by_name(&name).await? else {
                continue;
            };
            if let Some(write) = self.uplink_write(link.index).await? {
                self.datapath().write(write)?;
            }
        }
        Ok(())
    }

    /// Makes sure network `name` has its devices; returns the bridge's tc attachment.
    pub async fn plumb(&self, name: &str) -> Result<Option<Attachment>> {
        let network = self.get_network(name).await?;
        let lock = self.net_lock(name);
        let _guard = lock.lock().await;
        self.plumb_network(&network).await
    }

    /// Undoes [`Self::plumb_network`]. Idempotent.
    async fn unplumb_network(&self, network: &Network) -> Result<()> {
        self.unplumb_masquerade(network).await?;
        if network.policy.internal {
            let write = MapWrite::SetNetwork {
                network: network.id,
                value: None,
            };
            self.datapath().write(write)?;
        }
        if !network.policy.host_access.is_all() {
            let ports = Vec::new();
            let write = MapWrite::SetHostAccess {
                network: network.id,
                ports,
            };
            self.datapath().write(write)?;
        }
        if !network.policy.egress_deny.is_empty() {
            let rules = Vec::new();
            let write = MapWrite::SetEgress {
                network: network.id,
                rules,
            };
            self.datapath().write(write)?;
        }
        if let Some(bridge) = &network.bridge
            && let Some(link) = self.host.link_by_name(bridge).await?
        {
            // Pins first: should the deletion fail, a retry still finds the device.
            self.datapath().forget_links(&link.name, link.index)?;
            self.host.delete_link(link.index).await?;
        }
        Ok(())
    }

    /// Removes network `name`; with `force`, its endpoints first. Kernel state goes
    /// before records, one endpoint at a time: should a step fail, what is left is
    /// still recorded (the network, the endpoints not yet removed), and a retry
    /// finishes the job.
    pub async fn remove_network(&self, name: &str, force: bool) -> Result<Network> {
        let lock = self.net_lock(name);
        let _guard = lock.lock().await;
        let network = read(&self.store, |s| s.get_network(name))?;
        let mut endpoints = self.list_endpoints(Some(name)).await?;
        endpoints.sort_by_key(|e| e.ip);
        if !endpoints.is_empty() && !force {
            return Err(StateError::NetworkInUse {
                name: name.to_owned(),
                endpoints: endpoints.len(),
            }
            .into());
        }
        for ep in &endpoints {
            self.roll_back(ep).await?;
        }
        self.unplumb_network(&network).await?;
        let n = name.to_owned();
        let (network, _) = db(&self.store, move |s| s.remove_network(&n, true)).await?;
        Ok(network)
    }
}
