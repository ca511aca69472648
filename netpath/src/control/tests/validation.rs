//! Every refused request: the error names the field, and nothing changes — no call to
//! the kernel, no record. The rows share one world (a bridge network `web` with a
//! published endpoint, a dual-stack network `dual` (10.79.0.0/24, fd79::/64) whose
//! endpoint has fd79::7, a foreign device `np-db`, a host socket on tcp/9000): each row
//! checks that it left it as it was.

use std::path::PathBuf;

use super::*;
use crate::{model::NetworkUpdate, netlink::Link, types::MacAddr};

/// The endpoint every row may refer to.
const MAC: &str = "02:aa:bb:cc:dd:01";

/// Stands for the published endpoint's id in a [`Req::Publish`].
const EP: &str = "<the endpoint>";
/// Stands for the dual-stack endpoint's id in a [`Req::Publish`].
const EP6: &str = "<the dual-stack endpoint>";

/// A request, as the service gets it.
enum Req {
    Network(NetworkCreate),
    Endpoint(EndpointCreate),
    Tap(TapCreate),
    /// (endpoint id or [`EP`], specs).
    Publish(&'static str, &'static [&'static str]),
    /// (endpoint, lease).
    Unpublish(Option<&'static str>, Option<&'static str>),
    /// (name, force).
    RemoveNetwork(&'static str, bool),
    /// A policy change of network `name`.
    Update(&'static str, NetworkUpdate),
    RemoveEndpoint(&'static str),
}
use Req::*;

impl Req {
    async fn send(self, rig: &Rig, (ep, ep6): (&str, &str)) -> Result<(), ServiceError> {
        let svc = &rig.svc;
        match self {
            Network(req) => svc.create_network(req).await.map(drop),
            Endpoint(req) => svc.add_endpoint(req).await.map(drop),
            Tap(req) => svc.add_tap(req).await.map(drop),
            Publish(id, specs) => {
                let id = match id {
                    EP => ep,
                    EP6 => ep6,
                    id => id,
                };
                svc.publish_ports(publish_req(id, specs)).await.map(drop)
            }
            Unpublish(id, lease) => svc.unpublish_ports(id, lease).await.map(drop),
            RemoveNetwork(name, force) => svc.remove_network(name, force).await.map(drop),
            Update(name, update) => svc.update_network(name, update).await.map(drop),
            RemoveEndpoint(id) => svc.remove_endpoint(id).await.map(drop),
        }
    }
}

/// (what is asked, the request, a piece of the error it must get).
type Row = (&'static str, Req, &'static str);

fn web(f: impl FnOnce(&mut NetworkCreate)) -> NetworkCreate {
    let mut req = net_req("other", Mode::Bridge);
    req.subnet = Some("10.78.0.0/24".parse().expect("subnet"));
    f(&mut req);
    req
}

/// `web` with egress rules: denied, allowed (CIDRs or `private`).
fn egress(deny: &[&str], allow: &[&str]) -> NetworkCreate {
    web(|n| {
        n.policy.egress_deny = deny
            .iter()
            .map(|d| d.parse().expect("destination"))
            .collect();
        n.policy.egress_allow = allow.iter().map(|c| c.parse().expect("CIDR")).collect();
    })
}

/// A change of `web`'s egress rules.
fn egress_update(deny: &[&str], allow: &[&str]) -> NetworkUpdate {
    NetworkUpdate {
        egress_deny: Some(
            deny.iter()
                .map(|d| d.parse().expect("destination"))
                .collect(),
        ),
        egress_allow: Some(allow.iter().map(|c| c.parse().expect("CIDR")).collect()),
        ..Default::default()
    }
}

fn veth(f: impl FnOnce(&mut EndpointCreate)) -> EndpointCreate {
    let mut req = veth_req("web");
    f(&mut req);
    req
}

/// An endpoint of the dual-stack network.
fn dual(f: impl FnOnce(&mut EndpointCreate)) -> EndpointCreate {
    let mut req = veth_req("dual");
    f(&mut req);
    req
}

fn net6(s: &str) -> ipnet::Ipv6Net {
    s.parse().expect("IPv6 subnet")
}

fn v6(s: &str) -> std::net::Ipv6Addr {
    s.parse().expect("IPv6 address")
}

fn tap(f: impl FnOnce(&mut TapCreate)) -> TapCreate {
    let mut req = tap_req("web", "vm9");
    f(&mut req);
    req
}

/// One row a line: the table reads as a list of refusals.
#[rustfmt::skip]
fn rows() -> Vec<Row> {
    vec![
        // Networks.
        ("a name with a slash", Network(web(|n| n.name = "bad/name".into())), "invalid network name \"bad/name\""),
        ("a name too long for its bridge", Network(web(|n| n.name = "a-very-long-name".into())), "use 1 to 12 characters"),
        ("an empty name", Network(web(|n| n.name = String::new())), "invalid network name \"\""),
        ("MTU 67", Network(web(|n| n.mtu = Some(67))), "invalid MTU 67: use 68 to 65535"),
        ("MTU 65536", Network(web(|n| n.mtu = Some(65536))), "invalid MTU 65536"),
        ("a host address as subnet", Network(web(|n| n.subnet = Some("10.78.0.5/24".parse().expect("net")))), "invalid subnet 10.78.0.5/24: give the network address with a prefix of /30 or shorter (e.g. 10.78.0.0/24)"),
        ("a /31", Network(web(|n| n.subnet = Some("10.78.0.0/31".parse().expect("net")))), "invalid subnet 10.78.0.0/31"),
        ("65 --no-masquerade", Network(web(|n| { n.no_masquerade = (0..65).map(|i| format!("10.{i}.0.0/16").parse().expect("net")).collect() })), "65 --no-masquerade destinations: at most 64 per network"),
        ("a host address as --no-masquerade", Network(web(|n| { n.no_masquerade = vec!["10.1.2.3/8".parse().expect("net")] })), "invalid --no-masquerade 10.1.2.3/8: give the network address (e.g. 10.0.0.0/8)"),
        ("an IPv6 --no-masquerade on an IPv4-only network", Network(web(|n| { n.no_masquerade = vec!["2001:db8:5::/48".parse().expect("net")] })), "invalid --no-masquerade 2001:db8:5::/48: the network has no IPv6 subnet"),
        ("an IPv6 host address as --no-masquerade", Network(web(|n| { n.subnet6 = Some("fd78::/64".parse().expect("net")); n.no_masquerade = vec!["2001:db8:5::1/48".parse().expect("net")] })), "invalid --no-masquerade 2001:db8:5::1/48: give the network address (e.g. 2001:db8:5::/48)"),
        ("a subnet inside a host route", Network(web(|n| n.subnet = Some("192.0.2.0/25".parse().expect("net")))), "subnet 192.0.2.0/25 overlaps the host route 192.0.2.0/24 on eth0"),
        ("a subnet holding a host route", Network(web(|n| n.subnet = Some("192.0.0.0/16".parse().expect("net")))), "overlaps the host route 192.0.2.0/24"),
        ("an IPv6 subnet inside a host route", Network(web(|n| n.subnet6 = Some("2001:db8:1:2::/64".parse().expect("net")))), "subnet 2001:db8:1:2::/64 overlaps the host route 2001:db8:1::/48 on eth0"),
        ("a subnet of another network", Network(web(|n| n.subnet = Some("10.77.0.0/16".parse().expect("net")))), "overlaps"),
        ("a name taken", Network(web(|n| n.name = "web".into())), "network \"web\" already exists"),
        ("a gateway outside the subnet", Network(web(|n| n.gateway = Some("10.99.0.1".parse().expect("ip")))), "10.99.0.1"),
        ("an uplink that does not exist", Network(web(|n| n.uplink = Some("nope0".into()))), "uplink interface nope0 does not exist"),
        ("a malformed uplink", Network(web(|n| n.uplink = Some("a/b".into()))), "invalid uplink \"a/b\""),
        ("loopback as uplink", Network(web(|n| n.uplink = Some("lo".into()))), "lo is a loopback device"),
        ("a netpath bridge as uplink", Network(web(|n| n.uplink = Some("np-web".into()))), "np-web is a device netpath made for a network or endpoint, not an uplink"),
        ("a bridge name taken by another device", Network(web(|n| n.name = "db".into())), "interface np-db already exists on this host"),
        ("an IPv6 subnet of /48", Network(web(|n| n.subnet6 = Some(net6("fd78::/48")))), "invalid subnet fd78::/48: give the network address with a prefix of /64 to /120 (e.g. fd78::/64)"),
        ("an IPv6 subnet with host bits", Network(web(|n| n.subnet6 = Some(net6("fd78::1/64")))), "invalid subnet fd78::1/64"),
        ("no subnet at all", Network(web(|n| n.subnet = None)), "a network needs a subnet"),
        ("an IPv4 gateway without an IPv4 subnet", Network(web(|n| { n.subnet = None; n.subnet6 = Some(net6("fd78::/64")); n.gateway = Some("10.78.0.1".parse().expect("ip")) })), "an IPv4 gateway needs an IPv4 subnet"),
        ("an IPv4 --no-masquerade on an IPv6-only network", Network(web(|n| { n.subnet = None; n.subnet6 = Some(net6("fd78::/64")); n.no_masquerade = vec!["10.5.0.0/16".parse().expect("net")] })), "invalid --no-masquerade 10.5.0.0/16: the network has no IPv4 subnet"),
        ("an IPv6 gateway without an IPv6 subnet", Network(web(|n| n.gateway6 = Some(v6("fd78::1")))), "an IPv6 gateway needs an IPv6 subnet"),
        ("an IPv6 gateway outside the IPv6 subnet", Network(web(|n| { n.subnet6 = Some(net6("fd78::/64")); n.gateway6 = Some(v6("fd77::1")) })), "gateway fd77::1 cannot be used in subnet fd78::/64: it is outside the subnet"),
        ("an IPv6 subnet inside another network's", Network(web(|n| n.subnet6 = Some(net6("fd79::/80")))), "subnet fd79::/80 overlaps network \"dual\" (fd79::/64)"),
        // Network policy, at creation and in an update.
        ("a host address as --egress-deny", Network(egress(&["10.1.2.3/8"], &[])), "invalid --egress-deny 10.1.2.3/8: give the network address (e.g. 10.0.0.0/8)"),
        ("a host address as --egress-allow", Network(egress(&["private"], &["10.1.2.3/24"])), "invalid --egress-allow 10.1.2.3/24: give the network address"),
        ("an IPv6 --egress-deny on an IPv4-only network", Network(egress(&["2001:db8:7::/48"], &[])), "invalid --egress-deny 2001:db8:7::/48: the network has no IPv6 subnet"),
        ("a prefix both denied and allowed", Network(egress(&["10.5.0.0/16"], &["10.5.0.0/16"])), "10.5.0.0/16 is both denied and allowed"),
        ("1,025 egress rules", Network(web(|n| n.policy.egress_deny = (0..1025).map(|i| format!("10.{}.{}.0/24", i / 256, i % 256).parse().expect("net")).collect())), "1025 egress rules: at most 1024 per network"),
        ("65 host access ports", Network(web(|n| n.policy.host_access = (1..=65).map(|p| p.to_string()).collect::<Vec<_>>().join(",").parse().expect("ports"))), "65 host access ports: at most 64 per network"),
        ("an update denying and allowing one prefix", Update("web", egress_update(&["198.51.100.0/24"], &["198.51.100.0/24"])), "198.51.100.0/24 is both denied and allowed"),
        ("an update with an IPv6 rule on an IPv4-only network", Update("web", egress_update(&["fd00::/8"], &[])), "the network has no IPv6 subnet"),
        ("an update of a network that does not exist", Update("nope", NetworkUpdate { isolate: Some(true), ..Default::default() }), "network \"nope\" does not exist"),
        ("making a network with published ports internal", Update("web", NetworkUpdate { internal: Some(true), ..Default::default() }), "network web has published ports, which an internal network cannot have"),
        // Container endpoints.
        ("both a namespace and a pid", Endpoint(veth(|e| e.pid = Some(1))), "give exactly one of netns (a namespace path) or pid"),
        ("neither a namespace nor a pid", Endpoint(veth(|e| e.netns = None)), "give exactly one of netns"),
        ("a namespace that does not exist", Endpoint(veth(|e| e.netns = Some(PathBuf::from("/run/netns/gone")))), "network namespace /run/netns/gone does not exist"),
        ("a container id starting with '-'", Endpoint(veth(|e| e.container_id = Some("-x".into()))), "invalid container id \"-x\""),
        ("a container id with a slash", Endpoint(veth(|e| e.container_id = Some("a/b".into()))), "invalid container id \"a/b\""),
        ("an interface name too long", Endpoint(veth(|e| e.ifname = Some("0123456789abcdef".into()))), "invalid interface name \"0123456789abcdef\""),
        ("a network that does not exist", Endpoint(veth(|e| e.network = "nope".into())), "network \"nope\" does not exist"),
        // A container end left in the host's namespace (Docker's Join).
        ("a peer with a namespace", Endpoint(veth(|e| e.peer = Some("npdx".into()))), "peer leaves the container end in the host's namespace: give no netns, pid or ifname with it"),
        ("a peer with an interface name", Endpoint(veth(|e| { e.netns = None; e.ifname = Some("eth0".into()); e.peer = Some("npdx".into()) })), "give no netns, pid or ifname"),
        ("a peer name too long", Endpoint(veth(|e| { e.netns = None; e.peer = Some("0123456789abcdef".into()) })), "invalid peer name \"0123456789abcdef\""),
        ("a peer name of netpath's own", Endpoint(veth(|e| { e.netns = None; e.peer = Some("np-web".into()) })), "invalid peer name \"np-web\": names starting with \"np-\" are netpath's own"),
        ("a peer name the host has", Endpoint(veth(|e| { e.netns = None; e.peer = Some(super::super::fake::UPLINK.into()) })), "the host already has an interface named eth0"),
        ("a MAC another endpoint has", Endpoint(veth(|e| e.mac = Some(MAC.parse().expect("mac")))), "MAC 02:aa:bb:cc:dd:01 is already used by endpoint"),
        ("an address outside the subnet", Endpoint(veth(|e| e.ip = Some("10.99.0.2".parse().expect("ip")))), "10.99.0.2 cannot be leased"),
        ("the gateway's address", Endpoint(veth(|e| e.ip = Some(GW))), "10.77.0.1 cannot be leased"),
        ("an address taken", Endpoint(veth(|e| e.ip = Some("10.77.0.2".parse().expect("ip")))), "10.77.0.2"),
        ("an IPv6 address in an IPv4-only network", Endpoint(veth(|e| e.ip6 = Some(v6("fd77::2")))), "network \"web\" has no IPv6 subnet: it cannot lease fd77::2"),
        ("an IPv6 address outside the IPv6 subnet", Endpoint(dual(|e| e.ip6 = Some(v6("fd7a::2")))), "fd7a::2 cannot be leased in network \"dual\" (fd79::/64): it is outside the subnet"),
        ("the IPv6 gateway's address", Endpoint(dual(|e| e.ip6 = Some(v6("fd79::1")))), "fd79::1 cannot be leased in network \"dual\" (fd79::/64): it is the gateway"),
        ("an IPv6 address taken", Endpoint(dual(|e| e.ip6 = Some(v6("fd79::7")))), "fd79::7 is already leased to endpoint"),
        // TAPs.
        ("a TAP name with a slash", Tap(tap(|t| t.name = "a/b".into())), "invalid TAP name \"a/b\""),
        ("0 queues", Tap(tap(|t| t.queues = Some(0))), "invalid queue count 0: use 1 to 256"),
        ("257 queues", Tap(tap(|t| t.queues = Some(257))), "invalid queue count 257"),
        ("uid 4294967295", Tap(tap(|t| t.uid = Some(u32::MAX))), "invalid uid 4294967295: use 0 to 4294967294"),
        ("gid 4294967295", Tap(tap(|t| t.gid = Some(u32::MAX))), "invalid gid 4294967295"),
        ("a TAP name a device has", Tap(tap(|t| t.name = "eth0".into())), "interface eth0 already exists"),
        ("a TAP in a network that does not exist", Tap(tap(|t| t.network = "nope".into())), "network \"nope\" does not exist"),
        ("a TAP's IPv6 address that is its network's gateway", Tap(tap(|t| { t.network = "dual".into(); t.ip6 = Some(v6("fd79::1")) })), "it is the gateway"),
        ("a TAP MAC another endpoint has", Tap(tap(|t| t.mac = Some(MAC.parse().expect("mac")))), "is already used by endpoint"),
        // Published ports.
        ("no spec", Publish(EP, &[]), "no port to publish: give at least one spec, e.g. 8080:80"),
        ("a spec with a name for a port", Publish(EP, &["80:http"]), "http"),
        ("an address the host does not have", Publish(EP, &["198.51.100.1:80:80"]), "198.51.100.1 is not an address of this host"),
        ("a port a host process holds", Publish(EP, &["9000:80"]), "port tcp/0.0.0.0:9000 is taken on the host by process fake (pid 4242)"),
        ("a port already published, beside a free one", Publish(EP, &["8081:81", "8080:80"]), "tcp/0.0.0.0:8080"),
        ("an endpoint that does not exist", Publish("000000000000", &["8081:80"]), "endpoint 000000000000 does not exist"),
        ("an IPv6 host address for an IPv4-only endpoint", Publish(EP, &["[::1]:8081:80"]), "has no IPv6 address (network web is IPv4-only): nothing to publish on [::1]"),
        ("every IPv6 address for an IPv4-only endpoint", Publish(EP, &["8082:82", "[::]:8081:80"]), "nothing to publish on [::]"),
        ("an IPv6 address not the host's", Publish(EP6, &["8083:83", "[2001:db8:77::1]:8081:80"]), "2001:db8:77::1 is not an address of this host"),
        ("every IPv6 address, on a port a host socket holds", Publish(EP6, &["8083:83", "[::]:9000:80"]), "port tcp/[::]:9000 is taken on the host"),
        ("an unclosed IPv6 host address", Publish(EP6, &["[::1:8081:80"]), "lacks its closing ]"),
        ("an IPv6 host address without brackets", Publish(EP6, &["::1:8081:80"]), "an IPv6 HOSTIP in brackets"),
        ("an IPv4 address in brackets", Publish(EP6, &["[127.0.0.1]:8081:80"]), "[127.0.0.1] is not an IPv6 address"),
        ("unpublish with neither endpoint nor lease", Unpublish(None, None), "say what to unpublish"),
        ("unpublish a lease nobody has", Unpublish(None, Some("tcp/0.0.0.0:7")), "no port is published as tcp/0.0.0.0:7"),
        // Removals.
        ("remove a network with endpoints, without force", RemoveNetwork("web", false), "network \"web\" still has 1 endpoint"),
        ("remove a network that does not exist", RemoveNetwork("nope", true), "network \"nope\" does not exist"),
        ("remove an endpoint that does not exist", RemoveEndpoint("0000"), "0000"),
    ]
}

#[tokio::test]
async fn refused_requests_change_nothing() {
    let rig = Rig::new();
    rig.network("web", Mode::Bridge).await;
    let mut req = veth_req("web");
    req.mac = Some(MAC.parse::<MacAddr>().expect("mac"));
    let ep = rig.svc.add_endpoint(req).await.expect("endpoint");
    let mut dual = net_req("dual", Mode::Bridge);
    dual.subnet = Some("10.79.0.0/24".parse().expect("subnet"));
    dual.subnet6 = Some(net6("fd79::/64"));
    rig.svc
        .create_network(dual)
        .await
        .expect("dual-stack network");
    let mut req = veth_req("dual");
    req.ip6 = Some(v6("fd79::7"));
    let ep6 = rig
        .svc
        .add_endpoint(req)
        .await
        .expect("dual-stack endpoint");
    rig.svc
        .publish_ports(publish_req(&ep.id, &["8080:80"]))
        .await
        .expect("publish");
    {
        let mut w = rig.world();
        w.busy_ports.insert((crate::portspec::Proto::Tcp, 9000));
        w.kernel.links.insert(
            90,
            Link {
                index: 90,
                name: "np-db".into(),
                alias: None,
                mac: None,
                master: None,
                loopback: false,
            },
        );
    }
    let (mut failures, rows) = (Vec::new(), rows());
    let count = rows.len();
    for (what, request, expected) in rows {
        let (kernel, records, m) = (rig.kernel(), rig.records().await, rig.mark());
        let outcome = request.send(&rig, (&ep.id, &ep6.id)).await;
        let calls = rig.calls_since(m);
        match outcome {
            Ok(()) => failures.push(format!("{what}: accepted")),
            Err(e) if !message(&e).contains(expected) => {
                failures.push(format!("{what}: {:?} lacks {expected:?}", message(&e)))
            }
            Err(_) if !calls.is_empty() => failures.push(format!("{what}: made calls {calls:?}")),
            Err(_) if rig.kernel() != kernel => {
                failures.push(format!("{what}: changed the kernel"))
            }
            Err(_) if rig.records().await != records => {
                failures.push(format!("{what}: changed the records"))
            }
            Err(_) => {}
        }
    }
    assert!(count >= 55, "the table has {count} rows");
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        count,
        failures.join("\n")
    );
}
