//! Every rtnetlink operation netpath performs, in one place (no fork/exec of `ip`).
//!
//! A [`Netlink`] wraps one rtnetlink connection. Operations that create are idempotent
//! where the kernel lets us tell "already there" apart (EEXIST), and deletions treat
//! "already gone" (ENODEV) as success, so cleanup can always be re-run.

use std::{
    fs::File,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsFd, AsRawFd},
    path::Path,
};

use futures::TryStreamExt;
use ipnet::IpNet;
use nix::sched::{CloneFlags, setns};
use rtnetlink::{
    Handle, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth,
    RouteMessageBuilder,
    packet_route::{
        address::{AddressAttribute, AddressFlags, AddressHeaderFlags},
        link::{LinkAttribute, LinkFlags, LinkMessage},
        neighbour::NeighbourState,
        route::RouteScope,
    },
};

#[derive(Debug, thiserror::Error)]
#[error("netlink {op} {target}")]
pub struct NetlinkError {
    pub op: &'static str,
    pub target: String,
    #[source]
    pub source: std::io::Error,
}

impl NetlinkError {
    /// The errno the kernel answered with, if it was a kernel error.
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
}

type Result<T, E = NetlinkError> = std::result::Result<T, E>;

/// A link as netpath sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub alias: Option<String>,
    pub mac: Option<[u8; 6]>,
    /// ifindex of the bridge this link is a port of.
    pub master: Option<u32>,
    /// A loopback device (`IFF_LOOPBACK`).
    pub loopback: bool,
}

impl Link {
    fn from_message(msg: &LinkMessage) -> Link {
        let mut link = Link {
            index: msg.header.index,
            name: String::new(),
            alias: None,
            mac: None,
            master: None,
            loopback: msg.header.flags.contains(LinkFlags::Loopback),
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => link.name = n.clone(),
                LinkAttribute::IfAlias(a) => link.alias = Some(a.clone()),
                LinkAttribute::Address(a) => link.mac = <[u8; 6]>::try_from(a.as_slice()).ok(),
                LinkAttribute::Controller(m) => link.master = Some(*m),
                _ => {}
            }
        }
        link
    }
}

fn io_error(e: rtnetlink::Error) -> std::io::Error {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.to_io(),
        other => std::io::Error::other(other.to_string()),
    }
}

/// Changes to apply to a link in one RTM_SETLINK request; `None` leaves a field alone.
#[derive(Debug, Default)]
pub struct LinkConfig<'a> {
    pub name: Option<&'a str>,
    pub mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
    /// Make it a port of this bridge (ifindex).
    pub master: Option<u32>,
    pub alias: Option<&'a str>,
    /// Move it into the network namespace of this file.
    pub netns: Option<&'a File>,
    pub up: bool,
    /// Set the link's IPv6 address generation mode to "none" (see [`no_ipv6_link_local`]).
    pub no_ipv6_link_local: bool,
}

/// The daemon's own network namespace (of the first thread that asks, which is never
/// inside another one: threads only visit namespaces in [`Netlink::connect_in`]).
fn home_netns() -> std::io::Result<&'static File> {
    static HOME: std::sync::OnceLock<File> = std::sync::OnceLock::new();
    if let Some(f) = HOME.get() {
        return Ok(f);
    }
    let f = File::open("/proc/thread-self/ns/net")?;
    Ok(HOME.get_or_init(|| f))
}

/// Adds "IPv6 address generation mode: none" to a link request, so the kernel never
/// gives the link an IPv6 link-local address: no duplicate address detection and no MLD
/// reports from it. netpath's endpoints are IPv4-only, and on a bridge with N ports every
/// such packet from a new endpoint is flooded to all N (cost O(N) per endpoint added,
/// O(N²) in all). The kernel reads the mode when the link gains carrier, so it must be
/// set before the second end of a veth goes up (and cannot be given at creation:
/// RTM_NEWLINK refuses IFLA_AF_SPEC with EAFNOSUPPORT).
pub fn no_ipv6_link_local(msg: &mut LinkMessage) {
    use rtnetlink::packet_route::link::{AfSpecInet6, AfSpecUnspec, In6AddrGenMode};
    msg.attributes
        .push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
            vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)],
        )]));
}

/// One rtnetlink connection in the current network namespace.
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
    /// Held while a dump runs: a netlink socket runs one dump at a time (the kernel
    /// answers a second with EBUSY), and clones of a connection serve concurrent tasks
    /// (the daemon's host-address refresh runs beside API requests).
    dump_turn: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl Netlink {
    fn new(handle: Handle) -> Netlink {
        Netlink {
            handle,
            dump_turn: Default::default(),
        }
    }

    /// Runs the dump request that `request` sends, after any other dump on this
    /// connection has finished (see `dump_turn`), and collects its answers.
    async fn dump<T, S>(
        &self,
        op: &'static str,
        target: impl ToString,
        request: impl FnOnce() -> S,
    ) -> Result<Vec<T>>
    where
        S: futures::Stream<Item = std::result::Result<T, rtnetlink::Error>>,
    {
        let _turn = self.dump_turn.lock().await;
        request().try_collect().await.map_err(Self::err(op, target))
    }

    /// Opens a connection; its I/O task runs on the current tokio runtime.
    pub fn connect() -> Result<Netlink> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(|source| NetlinkError {
            op: "connect",
            target: "rtnetlink".into(),
            source,
        })?;
        tokio::spawn(conn);
        Ok(Netlink::new(handle))
    }

    /// A stream with one item per IPv4 or IPv6 address added or removed on any device of
    /// this namespace, from a connection of its own subscribed to the kernel's
    /// `RTMGRP_IPV4_IFADDR` and `RTMGRP_IPV6_IFADDR` announcements.
    pub fn address_changes() -> Result<impl futures::Stream<Item = ()>> {
        let err = |source| NetlinkError {
            op: "subscribe to address changes",
            target: "rtnetlink".into(),
            source,
        };
        use rtnetlink::sys::AsyncSocket as _;
        let (mut conn, _, messages) = rtnetlink::new_connection().map_err(err)?;
        let groups =
            rtnetlink::constants::RTMGRP_IPV4_IFADDR | rtnetlink::constants::RTMGRP_IPV6_IFADDR;
        conn.socket_mut()
            .socket_mut()
            .bind(&rtnetlink::sys::SocketAddr::new(0, groups))
            .map_err(err)?;
        tokio::spawn(conn);
        Ok(futures::StreamExt::map(messages, |_| ()))
    }

    fn err(
        op: &'static str,
        target: impl ToString,
    ) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
        let target = target.to_string();
        move |e| NetlinkError {
            op,
            target,
            source: io_error(e),
        }
    }

    /// Opens a connection whose socket lives in the network namespace at `netns` (a
    /// netns file such as /run/netns/x or /proc/PID/ns/net). The socket stays bound to
    /// that namespace and is then driven from the current runtime like any other.
    ///
    /// The calling thread enters the namespace only for the `socket()` call and returns
    /// at once: there is no `.await` in between, so no other task can run on this
    /// thread while it is away. (A helper thread per call costs a thread spawn, which
    /// on a busy 2-CPU host means waiting milliseconds to be scheduled.)
    pub async fn connect_in(netns: &Path) -> Result<Netlink> {
        let err = |source| NetlinkError {
            op: "enter netns",
            target: netns.display().to_string(),
            source,
        };
        let target = File::open(netns).map_err(err)?;
        let home = home_netns().map_err(err)?;
        setns(target.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| err(e.into()))?;
        let conn = rtnetlink::new_connection();
        // Not returning would leave this worker thread, and whatever runs on it later,
        // in the container's namespace: nothing sensible can continue after that.
        setns(home.as_fd(), CloneFlags::CLONE_NEWNET)
            .expect("cannot return to the daemon's network namespace");
        let (conn, handle, _) = conn.map_err(err)?;
        tokio::spawn(conn);
        Ok(Netlink::new(handle))
    }

    /// The link with ifindex `index`, or `None`.
    pub async fn link_by_index(&self, index: u32) -> Result<Option<Link>> {
        let mut stream = self.handle.link().get().match_index(index).execute();
        match stream.try_next().await {
            Ok(msg) => Ok(msg.as_ref().map(Link::from_message)),
            Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -libc::ENODEV => Ok(None),
            Err(e) => Err(Self::err("get link", index)(e)),
        }
    }

    /// Creates a veth pair `host` <-> `peer` in this namespace; returns both ends.
    pub async fn create_veth(&self, host: &str, peer: &str) -> Result<(Link, Link)> {
        self.handle
            .link()
            .add(LinkVeth::new(host, peer).build())
            .execute()
            .await
            .map_err(Self::err("create veth", host))?;
        let gone = |name: &str| NetlinkError {
            op: "create veth",
            target: name.to_owned(),
            source: std::io::Error::from_raw_os_error(libc::ENODEV),
        };
        let h = self.link_by_name(host).await?.ok_or_else(|| gone(host))?;
        let p = self.link_by_name(peer).await?.ok_or_else(|| gone(peer))?;
        Ok((h, p))
    }

    /// Creates a veth pair in one request: the host end `host` here (down, `mtu`, a
    /// port of `master` if given), the other end directly inside the network namespace
    /// of `netns` (here if `None`) with its final name, MAC and MTU. Creating the peer in
    /// place avoids moving it, and a move waits for an RCU grace period
    /// (`synchronize_net`), which measured ~20-35 ms here. Returns the host end.
    pub async fn create_veth_into(
        &self,
        host: &str,
        master: Option<u32>,
        mtu: u32,
        netns: Option<&File>,
        peer_name: &str,
        peer_mac: [u8; 6],
    ) -> Result<Link> {
        use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth};
        let mut peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer_name.to_owned())
            .address(peer_mac.to_vec())
            .mtu(mtu);
        if let Some(ns) = netns {
            peer = peer.setns_by_fd(ns.as_raw_fd());
        }
        let peer = peer.build();
        // Created down: the caller finishes the host end (alias, no IPv6 link-local) and
        // brings it up in one request (see `no_ipv6_link_local`).
        let mut b = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(host.to_owned())
            .mtu(mtu)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)));
        if let Some(m) = master {
            b = b.controller(m);
        }
        // Pipelined: the lookup is sent right behind the creation and handled after it
        // (see `sandbox::configure_inside`).
        let (created, found) = futures::join!(
            self.handle.link().add(b.build()).execute(),
            self.link_by_name(host)
        );
        created.map_err(Self::err("create veth", host))?;
        found?.ok_or_else(|| NetlinkError {
            op: "create veth",
            target: host.to_owned(),
            source: std::io::Error::from_raw_os_error(libc::ENODEV),
        })
    }

    /// Applies `cfg` to link `index` in one request.
    pub async fn configure(&self, index: u32, cfg: &LinkConfig<'_>) -> Result<()> {
        let mut b = LinkUnspec::new_with_index(index);
        if let Some(name) = cfg.name {
            b = b.name(name);
        }
        if let Some(mac) = cfg.mac {
            b = b.address(mac.to_vec());
        }
        if let Some(mtu) = cfg.mtu {
            b = b.mtu(mtu);
        }
        if let Some(master) = cfg.master {
            b = b.controller(master);
        }
        if let Some(alias) = cfg.alias {
            b = b.alias(alias);
        }
        if let Some(ns) = cfg.netns {
            b = b.setns_by_fd(ns.as_raw_fd());
        }
        if cfg.up {
            b = b.up();
        }
        let mut msg = b.build();
        if cfg.no_ipv6_link_local {
            no_ipv6_link_local(&mut msg);
        }
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(Self::err("configure link", index))
    }

    /// Adds a route to `dst` via `gateway` and/or out of `oif`; existing is fine. Without
    /// a gateway the destination is directly connected: scope link, as `ip route add X
    /// dev Y` does (a universe-scope route cannot serve as a next hop's way to its
    /// gateway). `dst` and `gateway` are of one family.
    pub async fn add_route(
        &self,
        dst: IpNet,
        gateway: Option<IpAddr>,
        oif: Option<u32>,
    ) -> Result<()> {
        let invalid = |_| NetlinkError {
            op: "add route",
            target: format!("{dst} via {gateway:?}"),
            source: std::io::Error::from_raw_os_error(libc::EINVAL),
        };
        let mut b = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(dst.addr(), dst.prefix_len())
            .map_err(invalid)?;
        b = match gateway {
            Some(gw) => b.gateway(gw).map_err(invalid)?,
            None => b.scope(RouteScope::Link),
        };
        if let Some(oif) = oif {
            b = b.output_interface(oif);
        }
        match self.handle.route().add(b.build()).execute().await {
            Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -libc::EEXIST => Ok(()),
            r => r.map_err(Self::err("add route", dst)),
        }
    }

    /// Adds (or replaces) a permanent neighbor entry `ip` → `mac` on link `index`.
    pub async fn add_permanent_neighbor(&self, index: u32, ip: IpAddr, mac: [u8; 6]) -> Result<()> {
        self.handle
            .neighbours()
            .add(index, ip)
            .link_layer_address(&mac)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(Self::err("add neighbor", ip))
    }

    /// The link named `name`, or `None` if there is none.
    pub async fn link_by_name(&self, name: &str) -> Result<Option<Link>> {
        let mut stream = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute();
        match stream.try_next().await {
            Ok(msg) => Ok(msg.as_ref().map(Link::from_message)),
            Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -libc::ENODEV => Ok(None),
            Err(e) => Err(Self::err("get link", name)(e)),
        }
    }

    /// Every link in the namespace.
    pub async fn links(&self) -> Result<Vec<Link>> {
        let msgs = self
            .dump("list links", "all", || self.handle.link().get().execute())
            .await?;
        Ok(msgs.iter().map(Link::from_message).collect())
    }

    /// Creates bridge `name` (up, tagged with `alias`), or returns the existing one.
    ///
    /// The bridge gets a fixed random MAC: otherwise Linux gives a bridge the lowest MAC
    /// of its ports, so the gateway MAC that sandboxes hold as a static neighbor would
    /// change whenever a port joins or leaves.
    pub async fn ensure_bridge(&self, name: &str, alias: &str, mtu: Option<u32>) -> Result<Link> {
        if let Some(link) = self.link_by_name(name).await? {
            return Ok(link);
        }
        let mut builder =
            LinkBridge::new(name).address(crate::types::MacAddr::random_local().octets().to_vec());
        if let Some(mtu) = mtu {
            builder = builder.mtu(mtu);
        }
        match self.handle.link().add(builder.build()).execute().await {
            Ok(()) => {}
            // Lost a race with a concurrent creator: fine, it exists now.
            Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -libc::EEXIST => {}
            Err(e) => return Err(Self::err("create bridge", name)(e)),
        }
        let link = self.link_by_name(name).await?.ok_or_else(|| NetlinkError {
            op: "create bridge",
            target: name.into(),
            source: std::io::Error::from_raw_os_error(libc::ENODEV),
        })?;
        if let Err(e) = self.set_alias(link.index, alias).await {
            // Untagged, it would look foreign to every later run: don't leave it behind.
            let _ = self.delete_link(link.index).await;
            return Err(e);
        }
        Ok(Link {
            alias: Some(alias.to_owned()),
            ..link
        })
    }

    /// Sets the ifalias of link `index` (the kernel ignores IFLA_IFALIAS on creation,
    /// so tagging is a separate request).
    pub async fn set_alias(&self, index: u32, alias: &str) -> Result<()> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).alias(alias).build())
            .execute()
            .await
            .map_err(Self::err("set alias", index))
    }

    /// Sets link `index` up.
    pub async fn set_up(&self, index: u32) -> Result<()> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(Self::err("set up", index))
    }

    /// Sets or clears the `isolated` flag of bridge port `index` (`ip link set dev X type
    /// bridge_slave isolated on`): an isolated port's frames reach no other isolated
    /// port of its bridge, only the bridge itself (the host) and ports that are not.
    pub async fn set_port_isolated(&self, index: u32, isolated: bool) -> Result<()> {
        self.handle
            .link()
            .set_port(LinkBridgePort::new(index).isolated(isolated).build())
            .execute()
            .await
            .map_err(Self::err("set bridge port isolation", index))
    }

    /// The IPv4 addresses (with prefix lengths) of link `index`, primary first.
    pub async fn ipv4_addresses(&self, index: u32) -> Result<Vec<(Ipv4Addr, u8)>> {
        use rtnetlink::packet_route::address::AddressAttribute;
        let msgs = self.address_dump(index, false).await?;
        Ok(msgs
            .iter()
            .filter_map(|m| {
                m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Local(IpAddr::V4(ip)) => Some((*ip, m.header.prefix_len)),
                    _ => None,
                })
            })
            .collect())
    }

    /// Every address in the namespace, of both families, on any link (one dump): each
    /// IPv4 link's local addresses, IPv6 addresses of any scope (the caller picks).
    pub async fn all_addresses(&self) -> Result<Vec<IpAddr>> {
        use rtnetlink::packet_route::{AddressFamily as Af, address::AddressAttribute as A};
        let msgs = self
            .dump("list addresses", 0, || {
                self.handle.address().get().execute()
            })
            .await?;
        Ok(msgs
            .iter()
            .filter_map(|m| {
                m.attributes
                    .iter()
                    .find_map(|a| match (m.header.family, a) {
                        (Af::Inet, A::Local(ip @ IpAddr::V4(_)))
                        | (Af::Inet6, A::Address(ip @ IpAddr::V6(_))) => Some(*ip),
                        _ => None,
                    })
            })
            .collect())
    }

    /// The global IPv6 addresses of link `index` a connection may take as its source
    /// (NAT66's uplink address): scope global, neither tentative, deprecated nor failed
    /// duplicate address detection; in the kernel's order. A host that gets its address
    /// by SLAAC has none until the router's advertisement arrives.
    pub async fn ipv6_global_addresses(&self, index: u32) -> Result<Vec<Ipv6Addr>> {
        use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressScope};
        let unusable = AddressFlags::Tentative | AddressFlags::Deprecated | AddressFlags::Dadfailed;
        let msgs = self.address_dump(index, true).await?;
        Ok(msgs
            .iter()
            .filter(|m| m.header.scope == AddressScope::Universe)
            .filter(|m| {
                !m.attributes
                    .iter()
                    .any(|a| matches!(a, AddressAttribute::Flags(f) if f.intersects(unusable)))
            })
            .filter_map(|m| {
                m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(IpAddr::V6(ip)) if !ip.is_unicast_link_local() => {
                        Some(*ip)
                    }
                    _ => None,
                })
            })
            .collect())
    }

    /// The address messages of link `index`, IPv6's or IPv4's.
    async fn address_dump(
        &self,
        index: u32,
        ipv6: bool,
    ) -> Result<Vec<rtnetlink::packet_route::address::AddressMessage>> {
        use rtnetlink::packet_route::AddressFamily as Af;
        let family = if ipv6 { Af::Inet6 } else { Af::Inet };
        let msgs = self
            .dump("list addresses", index, || {
                self.handle
                    .address()
                    .get()
                    .set_link_index_filter(index)
                    .execute()
            })
            .await?;
        // The kernel may ignore the filter (strict checking off): filter here too.
        Ok(msgs
            .into_iter()
            .filter(|m| m.header.family == family && m.header.index == index)
            .collect())
    }

    /// Adds `addr/prefix` to link `index`; existing is fine. An IPv6 address skips
    /// duplicate address detection: netpath's addresses are unique by lease, and DAD
    /// would only keep them tentative (unusable) for a second.
    pub async fn add_address(&self, index: u32, addr: IpAddr, prefix: u8) -> Result<()> {
        let mut request = self.handle.address().add(index, addr, prefix);
        if addr.is_ipv6() {
            let message = request.message_mut();
            message.header.flags |= AddressHeaderFlags::Nodad;
            message
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        match request.execute().await {
            Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -libc::EEXIST => Ok(()),
            r => r.map_err(Self::err(
                "add address",
                format!("{addr}/{prefix} on {index}"),
            )),
        }
    }

    /// Deletes link `index`; already gone is fine.
    pub async fn delete_link(&self, index: u32) -> Result<()> {
        match self.handle.link().del(index).execute().await {
            Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -libc::ENODEV => Ok(()),
            r => r.map_err(Self::err("delete link", index)),
        }
    }
}
