//! Container endpoints: a veth pair whose inner end is born in the container's network
//! namespace (or left in the host's, for an engine to move); registering any endpoint (veth or TAP) in the datapath; removing one.

use netpath_common::maps::{
    ENDPOINT_FLAG_IPV6, ENDPOINT_FLAG_NO_IPV4, ENDPOINT_KIND_TAP, ENDPOINT_KIND_VETH, EndpointValue,
};

use super::{MapWrite, Result, Service, ServiceError, db, read, validate};
use crate::{
    config,
    model::{
        Endpoint, EndpointCreate, EndpointDetails, EndpointKind, EndpointState, Mode, Network,
    },
    netlink::{Link, LinkConfig},
    sandbox::{Inner, Ipv4Side, Ipv6Side, NamespaceSide, SandboxError, VethPlan},
    state::NewEndpoint,
    types::MacAddr,
};

impl Service {
    pub async fn list_endpoints(&self, network: Option<&str>) -> Result<Vec<Endpoint>> {
        let network = network.map(str::to_owned);
        db(&self.store, move |s| s.list_endpoints(network.as_deref())).await
    }

    /// The endpoint with id `id`, or the only one whose id starts with `id`.
    pub async fn get_endpoint(&self, id: &str) -> Result<Endpoint> {
        read(&self.store, |s| s.find_endpoint_by_prefix(id))
    }

    pub async fn add_endpoint(&self, req: EndpointCreate) -> Result<Endpoint> {
        let place = self.placement(&req).await?;
        if let Some(c) = &req.container_id {
            validate::container_id(c)?;
        }
        let mac = req.mac.unwrap_or_else(MacAddr::random_local);
        let details = match &place {
            Placement::Namespace {
                netns,
                inode,
                ifname,
            } => EndpointDetails {
                ifname: Some(ifname.clone()),
                netns: Some(netns.clone()),
                netns_inode: Some(*inode),
                ..EndpointDetails::default()
            },
            Placement::Host { peer } => EndpointDetails {
                peer: Some(peer.clone()),
                ..EndpointDetails::default()
            },
        };
        let (_guard, network, ep) = self
            .reserve(&req.network, req.mac, |id, network| NewEndpoint {
                ip6: req.ip6,
                details: EndpointDetails {
                    container_id: req.container_id.clone(),
                    ..details
                },
                ..NewEndpoint::new(
                    id.clone(),
                    network.name.clone(),
                    EndpointKind::Veth,
                    req.ip,
                    mac,
                    format!("{}{id}", config::LINK_PREFIX),
                )
            })
            .await?;
        let id = ep.id.clone();
        let plan = VethPlan {
            host_ifname: &ep.host_ifname,
            alias: &config::link_alias(&self.instance, "veth", &ep.id),
            inner: match &place {
                Placement::Namespace { netns, ifname, .. } => Inner::Namespace { netns, ifname },
                Placement::Host { peer } => Inner::Host { name: peer },
            },
            mac: mac.octets(),
            v4: ipv4_side(&ep),
            gateway_mac: None,
            mtu: network.mtu,
            bridge: None,
            routed: network.mode == Mode::Routed,
            v6: ipv6_side(&network, &ep),
        };
        if let Err(e) = self.plumb_veth(&network, &ep, plan).await {
            let _ = self.roll_back(&ep).await;
            return Err(e);
        }
        db(&self.store, move |s| s.mark_ready(&id)).await
    }

    /// Where a request puts the container end, checked before anything changes: in a
    /// namespace (that exists, and is not the host's) under a valid name, or in the
    /// host's under a name no interface has.
    async fn placement(&self, req: &EndpointCreate) -> Result<Placement> {
        let Some(peer) = &req.peer else {
            let netns = validate::netns(req.netns.as_ref(), req.pid)?;
            let inode = self.host.check_netns(&netns)?;
            let ifname = req.ifname.clone().unwrap_or_else(|| "eth0".into());
            validate::ifname("interface name", &ifname)?;
            return Ok(Placement::Namespace {
                netns,
                inode,
                ifname,
            });
        };
        if req.netns.is_some() || req.pid.is_some() || req.ifname.is_some() {
            return Err(ServiceError::invalid(
                "peer leaves the container end in the host's namespace: give no netns, pid or ifname with it",
            ));
        }
        validate::peer_name(peer)?;
        if self.host.link_by_name(peer).await?.is_some() {
            return Err(ServiceError::Conflict {
                what: format!("the host already has an interface named {peer}"),
                hint: Some("choose another peer name".into()),
            });
        }
        Ok(Placement::Host { peer: peer.clone() })
    }

    /// The first steps of every add: takes network `name`'s lock (held until the
    /// returned guard drops), refuses a MAC the client asked for that the network has,
    /// and records the endpoint `new` builds from a fresh id and the network, `Creating`.
    pub(super) async fn reserve(
        &self,
        name: &str,
        asked_mac: Option<MacAddr>,
        new: impl FnOnce(String, &Network) -> NewEndpoint,
    ) -> Result<(tokio::sync::OwnedMutexGuard<()>, Network, Endpoint)> {
        let guard = self.net_lock(name).lock_owned().await;
        let network = self.get_network(name).await?;
        if let Some(asked) = asked_mac {
            self.refuse_duplicate_mac(&network, asked).await?;
        }
        let id = db(&self.store, |s| s.new_endpoint_id()).await?;
        let new = new(id, &network);
        let ep = db(&self.store, move |s| s.reserve_endpoint(new)).await?;
        Ok((guard, network, ep))
    }

    /// Refuses a MAC another endpoint of `network` has: two on one bridge (or one
    /// subnet) would steal each other's frames. Called under the network's lock, for MACs
    /// the client asked for only: it reads every endpoint of the network, which a default
    /// add (a random MAC, 46 random bits) must not pay for.
    async fn refuse_duplicate_mac(&self, network: &Network, wanted: MacAddr) -> Result<()> {
        let name = network.name.clone();
        let endpoints = db(&self.store, move |s| s.list_endpoints(Some(&name))).await?;
        if let Some(other) = endpoints.iter().find(|e| e.mac == wanted) {
            return Err(ServiceError::Conflict {
                what: format!(
                    "MAC {wanted} is already used by endpoint {} in network {}",
                    other.id, network.name
                ),
                hint: Some("omit the MAC to get a random one".into()),
            });
        }
        Ok(())
    }

    /// The bridge of a bridge-mode network (`None` in routed mode).
    pub(super) async fn bridge_link(&self, network: &Network) -> Result<Option<Link>> {
        match &network.bridge {
            Some(b) => Ok(Some(self.host.link_by_name(b).await?.ok_or_else(|| {
                ServiceError::Internal(format!("bridge {b} of network {} is missing", network.name))
            })?)),
            None => Ok(None),
        }
    }

    /// Creates the veth pair of `plan` and configures both ends; the datapath is
    /// registered on the host end while the namespace side is configured (both wait on
    /// kernel RCU grace periods, which then overlap). On failure the host end is deleted
    /// (its peer dies with it) before the error returns.
    async fn plumb_veth(&self, network: &Network, ep: &Endpoint, plan: VethPlan<'_>) -> Result<()> {
        let bridge = self.bridge_link(network).await?;
        let plan = VethPlan {
            gateway_mac: bridge.as_ref().and_then(|b| b.mac),
            bridge: bridge.as_ref().map(|b| b.index),
            ..plan
        };
        let host_end = self.host.create_veth(&plan).await?;
        let configured = async {
            self.isolate_port(network, host_end.index).await?;
            let during = |link: &Link| {
                let gateway = gateway_mac(bridge.as_ref(), link);
                self.register(network, ep, link.index, gateway)
            };
            self.configure_veth(&plan, &host_end, during).await
        };
        if let Err(e) = configured.await {
            let _ = self.host.delete_link(host_end.index).await;
            return Err(e);
        }
        Ok(())
    }

    async fn configure_veth(
        &self,
        plan: &VethPlan<'_>,
        h: &Link,
        during: impl FnOnce(&Link) -> Result<()>,
    ) -> Result<()> {
        // Tag it, bring it up, and keep IPv6 off it, in one request.
        let host_side = LinkConfig {
            alias: Some(plan.alias),
            up: true,
            no_ipv6_link_local: true,
            ..Default::default()
        };
        self.host.configure(h.index, &host_side).await?;
        if plan.routed {
            if let Some(v4) = plan.v4 {
                self.host
                    .add_address(h.index, v4.gateway.into(), 32)
                    .await?;
                self.host.add_host_route(v4.ip.into(), h.index).await?;
            }
            if let Some(v6) = plan.v6 {
                self.host
                    .add_address(h.index, v6.gateway.into(), 128)
                    .await?;
                self.host.add_host_route(v6.ip.into(), h.index).await?;
            }
        }
        // An end left in the host's namespace is the engine's to configure.
        let inside = match plan.inner {
            Inner::Namespace { netns, ifname } => {
                Some(tokio::spawn(self.host.configure_namespace(NamespaceSide {
                    netns: netns.to_owned(),
                    ifname: ifname.to_owned(),
                    v4: plan.v4,
                    gateway_mac: plan.gateway_mac.or(h.mac).unwrap_or_default(),
                    routed: plan.routed,
                    v6: plan.v6,
                })))
            }
            Inner::Host { .. } => None,
        };
        // `during` blocks (BPF syscalls); on a multi-threaded runtime let the worker go
        // meanwhile so the namespace side proceeds in parallel.
        let multi = tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::MultiThread;
        let during_result = if multi {
            tokio::task::block_in_place(|| during(h))
        } else {
            during(h)
        };
        // Waited for even when `during` failed: the caller deletes the link next.
        let inside_result = match inside {
            Some(task) => task.await.map_err(|e| SandboxError::Task(e.to_string()))?,
            None => Ok(()),
        };
        during_result?;
        Ok(inside_result?)
    }

    /// Puts endpoint `ep` in the datapath's maps and attaches the endpoint program to
    /// its host-side device `ifindex`; `host_mac` is its gateway's MAC.
    pub(super) fn register(
        &self,
        network: &Network,
        ep: &Endpoint,
        ifindex: u32,
        host_mac: [u8; 6],
    ) -> Result<()> {
        let mut dp = self.datapath();
        dp.attach_tc_endpoint(&ep.host_ifname, ifindex)?;
        let value = EndpointValue {
            ip: ep.ip.map_or([0; 4], |ip| ip.octets()),
            ifindex,
            mac: ep.mac.octets(),
            host_mac,
            network_id: network.id,
            kind: match ep.kind {
                EndpointKind::Veth => ENDPOINT_KIND_VETH,
                EndpointKind::Tap => ENDPOINT_KIND_TAP,
            },
            // Without IPv6 the endpoint's IPv6 frames are dropped (an IPv4-only
            // network's), without IPv4 its IPv4 and ARP (an IPv6-only network's).
            flags: super::policy::policy_flags(&network.policy)
                | match (ep.ip, ep.ip6) {
                    (Some(_), Some(_)) => ENDPOINT_FLAG_IPV6,
                    (Some(_), None) => 0,
                    (None, _) => ENDPOINT_FLAG_IPV6 | ENDPOINT_FLAG_NO_IPV4,
                },
        };
        dp.write(MapWrite::UpsertEndpoint { value, ip6: ep.ip6 })?;
        Ok(())
    }

    /// Removes an endpoint's devices, map entries (its published ports included) and
    /// attachment pins; the record stays. Idempotent.
    pub(super) async fn unplumb_endpoint(&self, ep: &Endpoint) -> Result<()> {
        let ports = self.list_ports().await?;
        {
            let mut dp = self.datapath();
            for l in ports.iter().filter(|l| l.endpoint == ep.id) {
                dp.write(super::ports::unpublish_write(l))?;
            }
            dp.write(MapWrite::RemoveEndpoint {
                ip: ep.ip,
                ip6: ep.ip6,
            })?;
        }
        if let Some(link) = self.host.link_by_name(&ep.host_ifname).await? {
            // Only delete what carries our tag (a TAP name is the user's choice), or
            // what an unfinished creation made before tagging it.
            let ours = link.alias.as_deref().is_some_and(|a| {
                a == config::link_alias(&self.instance, kind_role(ep.kind), &ep.id)
            });
            // Pins first: should the deletion fail, a retry still finds the device.
            self.datapath().forget_links(&link.name, link.index)?;
            if ours || ep.state == EndpointState::Creating {
                self.host.delete_link(link.index).await?;
            }
        }
        Ok(())
    }

    pub async fn remove_endpoint(&self, id: &str) -> Result<Endpoint> {
        let ep = self.get_endpoint(id).await?;
        let lock = self.net_lock(&ep.network);
        let _guard = lock.lock().await;
        // Re-read under the lock: a concurrent removal may have won.
        let ep = read(&self.store, |s| s.get_endpoint(&ep.id))?;
        self.unplumb_endpoint(&ep).await?;
        let id = ep.id.clone();
        db(&self.store, move |s| s.release_endpoint(&id)).await
    }
}

/// Where an add puts the container end of its veth pair (see [`Inner`]).
enum Placement {
    Namespace {
        netns: std::path::PathBuf,
        inode: u64,
        ifname: String,
    },
    Host {
        peer: String,
    },
}

pub(super) fn kind_role(kind: EndpointKind) -> &'static str {
    match kind {
        EndpointKind::Veth => "veth",
        EndpointKind::Tap => "tap",
    }
}

/// The MAC of an endpoint's gateway, as the endpoint sees it (the datapath's
/// `EndpointValue::host_mac`): its network's bridge in bridge mode, else the host side of
/// its own link (routed veth, point-to-point TAP).
pub(super) fn gateway_mac(bridge: Option<&Link>, link: &Link) -> [u8; 6] {
    bridge.and_then(|b| b.mac).or(link.mac).unwrap_or_default()
}

/// An endpoint's IPv4 address, prefix and gateway, if it has IPv4.
pub fn ipv4_side(ep: &Endpoint) -> Option<Ipv4Side> {
    Some(Ipv4Side {
        ip: ep.ip?,
        prefix_len: ep.prefix_len,
        gateway: ep.gateway?,
    })
}

/// An endpoint's IPv6 address, prefix and gateway: the subnet's prefix behind
/// a bridge (the endpoints share the link), a /128 behind its gateway when routed.
pub fn ipv6_side(network: &Network, ep: &Endpoint) -> Option<Ipv6Side> {
    let (ip, gateway, subnet) = (ep.ip6?, ep.gateway6?, network.subnet6?);
    let prefix_len = match (network.mode, ep.kind) {
        (Mode::Bridge, EndpointKind::Veth) => subnet.prefix_len(),
        _ => 128,
    };
    Some(Ipv6Side {
        ip,
        prefix_len,
        gateway,
    })
}
