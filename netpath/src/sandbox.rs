//! Plumbing one endpoint's devices: a container's veth (host end + the end inside its
//! network namespace, with address, default route and a static gateway neighbor), or a
//! microVM's TAP. Only devices and kernel state here; leases and records are the
//! caller's (see `service`).

use std::{fs::File, net::Ipv4Addr, path::Path};

use ipnet::Ipv4Net;

use crate::netlink::{Link, LinkConfig, Netlink, NetlinkError};

/// What to build for a container endpoint.
#[derive(Debug)]
pub struct VethPlan<'a> {
    /// Host end name (`np-…`) and the temporary name of the container end.
    pub host_ifname: &'a str,
    pub peer_ifname: &'a str,
    /// ifalias tag of the host end.
    pub alias: &'a str,
    /// The container's network namespace file.
    pub netns: &'a Path,
    /// Final name of the container end (e.g. eth0).
    pub ifname: &'a str,
    pub mac: [u8; 6],
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    pub mtu: u32,
    /// Bridge to make the host end a port of (bridge mode).
    pub bridge: Option<u32>,
    /// MAC of the gateway the sandbox talks to (bridge mode: the bridge's MAC);
    /// `None`: the host end's own MAC (routed mode).
    pub gateway_mac: Option<[u8; 6]>,
    /// Routed mode: put the gateway as a /32 on the host end and route `ip`/32 to it.
    pub routed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot open network namespace {path}: {source}")]
    Netns {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
}

/// Creates the veth pair and configures both ends. On any failure, removes what it
/// created (the host end; its peer dies with it) before returning the error.
pub async fn create_veth_endpoint(
    host: &Netlink,
    plan: &VethPlan<'_>,
) -> Result<Link, SandboxError> {
    let netns = File::open(plan.netns).map_err(|source| SandboxError::Netns {
        path: plan.netns.display().to_string(),
        source,
    })?;
    let (h, p) = host.create_veth(plan.host_ifname, plan.peer_ifname).await?;
    match configure_veth(host, plan, &netns, &h, &p).await {
        Ok(link) => Ok(link),
        Err(e) => {
            let _ = host.delete_link(h.index).await;
            Err(e)
        }
    }
}

async fn configure_veth(
    host: &Netlink,
    plan: &VethPlan<'_>,
    netns: &File,
    h: &Link,
    p: &Link,
) -> Result<Link, SandboxError> {
    let gateway_mac = plan.gateway_mac.or(h.mac).unwrap_or_default();
    // Container end: name, MAC and MTU are set while it is still in the host namespace,
    // then it moves; one request.
    host.configure(
        p.index,
        &LinkConfig {
            name: Some(plan.ifname),
            mac: Some(plan.mac),
            mtu: Some(plan.mtu),
            netns: Some(netns),
            ..Default::default()
        },
    )
    .await?;
    host.configure(
        h.index,
        &LinkConfig {
            mtu: Some(plan.mtu),
            master: plan.bridge,
            alias: Some(plan.alias),
            up: true,
            ..Default::default()
        },
    )
    .await?;
    if plan.routed {
        host.add_address(h.index, plan.gateway.into(), 32).await?;
        host.add_route(Ipv4Net::new(plan.ip, 32).expect("/32"), None, Some(h.index))
            .await?;
    }

    let inside = Netlink::connect_in(plan.netns).await?;
    let c = inside
        .link_by_name(plan.ifname)
        .await?
        .ok_or_else(|| NetlinkError {
            op: "find moved veth",
            target: plan.ifname.to_owned(),
            source: std::io::Error::from_raw_os_error(libc::ENODEV),
        })?;
    if let Some(lo) = inside.link_by_name("lo").await? {
        inside.set_up(lo.index).await?;
    }
    inside
        .add_address(c.index, plan.ip.into(), plan.prefix_len)
        .await?;
    inside.set_up(c.index).await?;
    if plan.routed {
        // No on-link subnet: reach the gateway through a /32 host route first.
        inside
            .add_route(
                Ipv4Net::new(plan.gateway, 32).expect("/32"),
                None,
                Some(c.index),
            )
            .await?;
    }
    // Static gateway neighbor: the sandbox never ARPs for its gateway.
    inside
        .add_permanent_neighbor(c.index, plan.gateway, gateway_mac)
        .await?;
    inside
        .add_route(Ipv4Net::default(), Some(plan.gateway), Some(c.index))
        .await?;
    Ok(Link {
        alias: Some(plan.alias.to_owned()),
        ..h.clone()
    })
}
