//! The kernel side of one container endpoint: checking its network namespace, creating
//! a veth pair whose inner end is born in that namespace (or left in the host's, for an
//! engine to move), and configuring that end there (address, default route, a static gateway neighbour). Only devices and kernel
//! state here; the order of the steps and their undo are `control::endpoints`'.

use std::{
    fs::File,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::netlink::{Link, LinkConfig, Netlink, NetlinkError};

/// ifindex of `lo` in every network namespace (a kernel guarantee since Linux 4.0).
const LOOPBACK_IFINDEX: u32 = 1;

/// What to build for a container endpoint.
#[derive(Debug)]
pub struct VethPlan<'a> {
    /// Host end name (`np-…`).
    pub host_ifname: &'a str,
    /// ifalias tag of the host end.
    pub alias: &'a str,
    /// Where the container end goes.
    pub inner: Inner<'a>,
    pub mac: [u8; 6],
    /// The endpoint's IPv4 side; `None` in an IPv6-only network.
    pub v4: Option<Ipv4Side>,
    /// MAC of the gateway the sandbox talks to (bridge mode: the bridge's MAC);
    /// `None`: the host end's own MAC (routed mode).
    pub gateway_mac: Option<[u8; 6]>,
    pub mtu: u32,
    /// Bridge to make the host end a port of (bridge mode).
    pub bridge: Option<u32>,
    /// Routed mode: put the gateway as a /32 on the host end and route the endpoint's
    /// address/32 to it (and the same with /128s for IPv6).
    pub routed: bool,
    /// The endpoint's IPv6 side (a dual-stack or IPv6-only network's).
    pub v6: Option<Ipv6Side>,
}

/// Where the container end of a veth pair is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inner<'a> {
    /// Born in the container's network namespace `netns` as `ifname` (e.g. eth0), and
    /// configured there.
    Namespace { netns: &'a Path, ifname: &'a str },
    /// Left in the host's namespace as `name`, down and unconfigured: an engine moves
    /// it into the container and configures it itself (libnetwork, after Join).
    Host { name: &'a str },
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot open network namespace {path}")]
    Netns {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("network namespace {path} does not exist")]
    NetnsMissing { path: String },
    #[error("network namespace {path} cannot be opened by the daemon: permission denied")]
    NetnsDenied { path: String },
    #[error(
        "{path} is not a network namespace (give /run/netns/NAME, /proc/PID/ns/net or a bind mount of one)"
    )]
    NotNetns { path: String },
    #[error("{path} is the host's own network namespace, not a container's")]
    HostNetns { path: String },
    #[error("network namespace {path} already has an interface named {ifname}")]
    IfnameExists { path: String, ifname: String },
    #[error("the host already has an interface named {ifname}")]
    HostIfnameExists { ifname: String },
    #[error(
        "IPv6 is disabled on {ifname} in network namespace {path}, and the network is dual-stack: enable it there (sysctl net.ipv6.conf.default.disable_ipv6=0 before the interface is made), or use an IPv4-only network"
    )]
    Ipv6Disabled { path: String, ifname: String },
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error("configuring the namespace side failed: {0}")]
    Task(String),
}

/// Checks that `path` is a network namespace other than the daemon's own (the host's):
/// what `endpoint add` needs before anything is leased or created. Returns the
/// namespace's identity, the inode of its nsfs file.
pub fn check_netns(path: &Path) -> Result<u64, SandboxError> {
    use std::os::{fd::AsRawFd, unix::fs::MetadataExt};
    let shown = path.display().to_string();
    let file = File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => SandboxError::NetnsMissing {
            path: shown.clone(),
        },
        std::io::ErrorKind::PermissionDenied => SandboxError::NetnsDenied {
            path: shown.clone(),
        },
        _ => SandboxError::Netns {
            path: shown.clone(),
            source: e,
        },
    })?;
    /// `NS_GET_NSTYPE` (linux/nsfs.h: `_IO(0xb7, 0x3)`): the kind of a namespace file.
    const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
    // SAFETY: an argument-less ioctl on a file descriptor we own; it only returns a value.
    let kind = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE) };
    if kind != libc::CLONE_NEWNET {
        return Err(SandboxError::NotNetns { path: shown });
    }
    let ours = std::fs::metadata("/proc/self/ns/net").map_err(|source| SandboxError::Netns {
        path: "/proc/self/ns/net".into(),
        source,
    })?;
    let theirs = file.metadata().map_err(|source| SandboxError::Netns {
        path: shown.clone(),
        source,
    })?;
    if (ours.dev(), ours.ino()) == (theirs.dev(), theirs.ino()) {
        return Err(SandboxError::HostNetns { path: shown });
    }
    Ok(theirs.ino())
}

/// Creates the veth pair of `plan`, its inner end born where the plan says (in the
/// container's namespace with its final name, or in the host's) with its MAC and MTU;
/// returns the host end (down, untagged). The caller configures both ends (see
/// `control::endpoints`).
pub async fn create_veth(host: &Netlink, plan: &VethPlan<'_>) -> Result<Link, SandboxError> {
    let (netns, peer_name) = match plan.inner {
        Inner::Namespace { netns, ifname } => {
            let file = File::open(netns).map_err(|source| SandboxError::Netns {
                path: netns.display().to_string(),
                source,
            })?;
            (Some(file), ifname)
        }
        Inner::Host { name } => (None, name),
    };
    host.create_veth_into(
        plan.host_ifname,
        plan.bridge,
        plan.mtu,
        netns.as_ref(),
        peer_name,
        plan.mac,
    )
    .await
    .map_err(|e| {
        // The host end's name is the endpoint's own (`np-<id>`): a name taken is the
        // container end's.
        if e.source.raw_os_error() != Some(libc::EEXIST) {
            return SandboxError::from(e);
        }
        match plan.inner {
            Inner::Namespace { netns, ifname } => SandboxError::IfnameExists {
                path: netns.display().to_string(),
                ifname: ifname.to_owned(),
            },
            Inner::Host { name } => SandboxError::HostIfnameExists {
                ifname: name.to_owned(),
            },
        }
    })
}

/// The container side's settings, owned so they can be applied from their own task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceSide {
    pub netns: PathBuf,
    pub ifname: String,
    pub v4: Option<Ipv4Side>,
    /// The gateway's MAC, of either family: the bridge's, or the host end's (routed).
    pub gateway_mac: [u8; 6],
    pub routed: bool,
    pub v6: Option<Ipv6Side>,
}

/// One family's address of an endpoint, its prefix (the subnet's behind a bridge; 32 or
/// 128, the whole address, when routed or on a TAP) and its gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Side<A> {
    pub ip: A,
    pub prefix_len: u8,
    pub gateway: A,
}

pub type Ipv4Side = Side<Ipv4Addr>;
pub type Ipv6Side = Side<Ipv6Addr>;

/// Configures the container end of a veth pair inside its namespace: loopback up,
/// address, default route via the gateway, and a static gateway neighbour.
pub async fn configure_inside(c: NamespaceSide) -> Result<(), SandboxError> {
    let inside = Netlink::connect_in(&c.netns).await?;
    let link = inside
        .link_by_name(&c.ifname)
        .await?
        .ok_or_else(|| NetlinkError {
            op: "find the container end",
            target: c.ifname.clone(),
            source: std::io::Error::from_raw_os_error(libc::ENODEV),
        })?;
    // The steps below depend on each other only through their order (the address
    // before the route via the gateway, the mode before the link goes up), so they are
    // pipelined: rtnetlink sends a request when its future is first polled,
    // `try_join!` polls its futures in argument order, and the kernel handles one
    // socket's requests in the order sent. Same effect as awaiting each in turn, one
    // round trip instead of seven. (Should one fail, the caller deletes the veth.)
    let no_ipv6 = LinkConfig {
        no_ipv6_link_local: true,
        ..Default::default()
    };
    let (index, mac, routed) = (link.index, c.gateway_mac, c.routed);
    futures::try_join!(
        // The kernel gives every namespace's loopback ifindex 1.
        inside.set_up(LOOPBACK_IFINDEX),
        // Before the link goes up (see `no_ipv6_link_local`).
        inside.configure(index, &no_ipv6),
        if_v4(c.v4, |v4| inside.add_address(
            index,
            v4.ip.into(),
            v4.prefix_len
        )),
        inside.set_up(index),
        // Routed: no on-link subnet, so the gateway through a /32 link route first.
        if_v4(c.v4.filter(|_| routed), |v4| {
            inside.add_route(Ipv4Net::from(v4.gateway).into(), None, Some(index))
        }),
        // Static gateway neighbor: the sandbox never ARPs for its gateway.
        if_v4(c.v4, |v4| inside.add_permanent_neighbor(
            index,
            v4.gateway.into(),
            mac
        )),
        if_v4(c.v4, |v4| {
            let default = IpNet::V4(Ipv4Net::default());
            inside.add_route(default, Some(v4.gateway.into()), Some(index))
        }),
    )?;
    if let Some(v6) = c.v6 {
        // The same for IPv6, the gateway always through a link route (it is on-link
        // behind a bridge too, but the /128 costs nothing and serves both modes), and
        // a static neighbour for it: the sandbox never solicits its gateway.
        let (index, gw) = (link.index, IpAddr::V6(v6.gateway));
        // The kernel refuses IPv6 addresses on a device with IPv6 disabled (EACCES).
        let address = inside.add_address(index, v6.ip.into(), v6.prefix_len);
        let address = async {
            address.await.map_err(|e| match e.errno() {
                Some(libc::EACCES) => SandboxError::Ipv6Disabled {
                    path: c.netns.display().to_string(),
                    ifname: c.ifname.clone(),
                },
                _ => e.into(),
            })
        };
        futures::try_join!(
            address,
            sandboxed(inside.add_route(Ipv6Net::from(v6.gateway).into(), None, Some(index))),
            sandboxed(inside.add_permanent_neighbor(index, gw, c.gateway_mac)),
            sandboxed(inside.add_route(IpNet::V6(Ipv6Net::default()), Some(gw), Some(index))),
        )?;
    }
    Ok(())
}

/// `step` of IPv4 side `v4`, none without one (an IPv6-only network). The step's request
/// is made, and so sent, when this is first polled: in `try_join!`'s argument order.
async fn if_v4<F>(
    v4: Option<Ipv4Side>,
    step: impl FnOnce(Ipv4Side) -> F,
) -> Result<(), NetlinkError>
where
    F: std::future::Future<Output = Result<(), NetlinkError>>,
{
    match v4 {
        Some(v4) => step(v4).await,
        None => Ok(()),
    }
}

/// A netlink step of the namespace side, as a [`SandboxError`].
async fn sandboxed(
    step: impl std::future::Future<Output = Result<(), NetlinkError>>,
) -> Result<(), SandboxError> {
    Ok(step.await?)
}
