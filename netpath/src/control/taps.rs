//! microVM TAP endpoints: a persistent TAP owned by the VMM's uid/gid, the guest a
//! point-to-point /32 (and /128) behind it with a known MAC.

use std::net::IpAddr;

use super::{Result, Service, ServiceError, db, validate};
use crate::{
    config,
    model::{Endpoint, EndpointDetails, EndpointKind, Mode, Network, TapCreate},
    netlink::LinkConfig,
    state::NewEndpoint,
    tap::{TapError, TapSpec},
    types::MacAddr,
};

impl Service {
    pub async fn add_tap(&self, req: TapCreate) -> Result<Endpoint> {
        crate::tap::validate_name(&req.name)?;
        let queues = req.queues.unwrap_or(1);
        validate::tap_queues(queues)?;
        validate::owner_ids(req.uid, req.gid)?;
        let mac = req.mac.unwrap_or_else(MacAddr::random_local);
        if self.host.link_by_name(&req.name).await?.is_some() {
            return Err(ServiceError::invalid(format!(
                "interface {} already exists",
                req.name
            )));
        }
        let (_guard, network, ep) = self
            .reserve(&req.network, req.mac, |id, network| NewEndpoint {
                ip6: req.ip6,
                details: EndpointDetails {
                    uid: req.uid,
                    gid: req.gid,
                    queues: Some(queues),
                    ..EndpointDetails::default()
                },
                ..NewEndpoint::new(
                    id,
                    network.name.clone(),
                    EndpointKind::Tap,
                    req.ip,
                    mac,
                    req.name.clone(),
                )
            })
            .await?;
        let id = ep.id.clone();
        let spec = TapSpec {
            name: req.name.clone(),
            uid: req.uid,
            gid: req.gid,
            queues,
            vnet_hdr: true,
        };
        if let Err(e) = self.plumb_tap(&network, &ep, spec).await {
            if matches!(e, ServiceError::Tap(TapError::Exists { .. })) {
                // Someone else's device took the name since the check above: leave it.
                let _ = db(&self.store, move |s| s.release_endpoint(&id)).await;
            } else {
                let _ = self.roll_back(&ep).await;
            }
            return Err(e);
        }
        db(&self.store, move |s| s.mark_ready(&id)).await
    }

    async fn plumb_tap(&self, network: &Network, ep: &Endpoint, spec: TapSpec) -> Result<()> {
        self.host.create_tap(spec).await?;
        let link = self
            .host
            .link_by_name(&ep.host_ifname)
            .await?
            .ok_or_else(|| {
                ServiceError::Internal(format!("TAP {} vanished after creation", ep.host_ifname))
            })?;
        let alias = config::link_alias(&self.instance, "tap", &ep.id);
        let bridge = self.bridge_link(network).await?;
        let cfg = LinkConfig {
            mtu: Some(network.mtu),
            master: bridge.as_ref().map(|b| b.index),
            alias: Some(&alias),
            up: true,
            // The guest does its own IPv6; the host side needs none.
            no_ipv6_link_local: true,
            ..Default::default()
        };
        self.host.configure(link.index, &cfg).await?;
        self.isolate_port(network, link.index).await?;
        let v6 = super::endpoints::ipv6_side(network, ep);
        if network.mode == Mode::Routed {
            // The host side of a point-to-point link answers as the gateway.
            if let Some(gateway) = network.gateway {
                self.host
                    .add_address(link.index, gateway.into(), 32)
                    .await?;
            }
            if let Some(v6) = v6 {
                // With it the kernel answers the guest's neighbour solicitations for the
                // gateway on the TAP (from the /128, the TAP's MAC, router flag), even
                // without a link-local address; in bridge mode the bridge does. Measured
                // with a real guest in tests/tests/microvm.rs.
                self.host
                    .add_address(link.index, v6.gateway.into(), 128)
                    .await?;
            }
        }
        // The guest is a point-to-point /32 (/128) behind its TAP, with a known MAC.
        let addrs = [ep.ip.map(IpAddr::V4), v6.map(|v6| IpAddr::V6(v6.ip))];
        for ip in addrs.into_iter().flatten() {
            self.host.add_host_route(ip, link.index).await?;
            self.host
                .add_permanent_neighbor(link.index, ip, ep.mac.octets())
                .await?;
        }
        let gateway = super::endpoints::gateway_mac(bridge.as_ref(), &link);
        self.register(network, ep, link.index, gateway)
    }
}
