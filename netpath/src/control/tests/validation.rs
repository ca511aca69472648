//! Every refused request: the error names the field, and nothing changes — no call to
//! the kernel, no record. The rows share one world (a bridge network `web` with a
//! published endpoint, a foreign device `np-db`, a host socket on tcp/9000): each row
//! checks that it left it as it was.

use std::path::PathBuf;

use futures::{FutureExt, future::BoxFuture};

use super::*;
use crate::{netlink::Link, types::MacAddr};

/// The endpoint every row may refer to.
const MAC: &str = "02:aa:bb:cc:dd:01";

type Request = for<'a> fn(&'a Rig, &'a str) -> BoxFuture<'a, Result<(), ServiceError>>;

/// (what is asked, the request, a piece of the error it must get).
type Row = (&'static str, Request, &'static str);

fn net(req: NetworkCreate) -> impl FnOnce(&Rig) -> BoxFuture<'_, Result<(), ServiceError>> {
    move |rig| async move { rig.svc.create_network(req).await.map(drop) }.boxed()
}

fn web(f: impl FnOnce(&mut NetworkCreate)) -> NetworkCreate {
    let mut req = net_req("other", Mode::Bridge);
    req.subnet = "10.78.0.0/24".parse().expect("subnet");
    f(&mut req);
    req
}

fn veth(f: impl FnOnce(&mut EndpointCreate)) -> EndpointCreate {
    let mut req = veth_req("web");
    f(&mut req);
    req
}

fn tap(f: impl FnOnce(&mut TapCreate)) -> TapCreate {
    let mut req = tap_req("web", "vm9");
    f(&mut req);
    req
}

const ROWS: &[Row] = &[
    // Networks.
    (
        "a name with a slash",
        |r, _| net(web(|n| n.name = "bad/name".into()))(r),
        "invalid network name \"bad/name\"",
    ),
    (
        "a name too long for its bridge",
        |r, _| net(web(|n| n.name = "a-very-long-name".into()))(r),
        "use 1 to 12 characters",
    ),
    (
        "an empty name",
        |r, _| net(web(|n| n.name = String::new()))(r),
        "invalid network name \"\"",
    ),
    (
        "MTU 67",
        |r, _| net(web(|n| n.mtu = Some(67)))(r),
        "invalid MTU 67: use 68 to 65535",
    ),
    (
        "MTU 65536",
        |r, _| net(web(|n| n.mtu = Some(65536)))(r),
        "invalid MTU 65536",
    ),
    (
        "a host address as subnet",
        |r, _| net(web(|n| n.subnet = "10.78.0.5/24".parse().expect("net")))(r),
        "invalid subnet 10.78.0.5/24: give the network address with a prefix of /30 or shorter (e.g. 10.78.0.0/24)",
    ),
    (
        "a /31",
        |r, _| net(web(|n| n.subnet = "10.78.0.0/31".parse().expect("net")))(r),
        "invalid subnet 10.78.0.0/31",
    ),
    (
        "65 --no-masquerade",
        |r, _| {
            net(web(|n| {
                n.no_masquerade = (0..65)
                    .map(|i| format!("10.{i}.0.0/16").parse().expect("net"))
                    .collect()
            }))(r)
        },
        "65 --no-masquerade destinations: at most 64 per network",
    ),
    (
        "a host address as --no-masquerade",
        |r, _| {
            net(web(|n| {
                n.no_masquerade = vec!["10.1.2.3/8".parse().expect("net")]
            }))(r)
        },
        "invalid --no-masquerade 10.1.2.3/8: give the network address (e.g. 10.0.0.0/8)",
    ),
    (
        "a subnet inside a host route",
        |r, _| net(web(|n| n.subnet = "192.0.2.0/25".parse().expect("net")))(r),
        "subnet 192.0.2.0/25 overlaps the host route 192.0.2.0/24 on eth0",
    ),
    (
        "a subnet holding a host route",
        |r, _| net(web(|n| n.subnet = "192.0.0.0/16".parse().expect("net")))(r),
        "overlaps the host route 192.0.2.0/24",
    ),
    (
        "a subnet of another network",
        |r, _| net(web(|n| n.subnet = "10.77.0.0/16".parse().expect("net")))(r),
        "overlaps",
    ),
    (
        "a name taken",
        |r, _| net(web(|n| n.name = "web".into()))(r),
        "network \"web\" already exists",
    ),
    (
        "a gateway outside the subnet",
        |r, _| net(web(|n| n.gateway = Some("10.99.0.1".parse().expect("ip"))))(r),
        "10.99.0.1",
    ),
    (
        "an uplink that does not exist",
        |r, _| net(web(|n| n.uplink = Some("nope0".into())))(r),
        "uplink interface nope0 does not exist",
    ),
    (
        "a malformed uplink",
        |r, _| net(web(|n| n.uplink = Some("a/b".into())))(r),
        "invalid uplink \"a/b\"",
    ),
    (
        "loopback as uplink",
        |r, _| net(web(|n| n.uplink = Some("lo".into())))(r),
        "lo is a loopback device",
    ),
    (
        "a netpath bridge as uplink",
        |r, _| net(web(|n| n.uplink = Some("np-web".into())))(r),
        "np-web is a device netpath made for a network or endpoint, not an uplink",
    ),
    (
        "a bridge name taken by another device",
        |r, _| net(web(|n| n.name = "db".into()))(r),
        "interface np-db already exists on this host",
    ),
    // Container endpoints.
    (
        "both a namespace and a pid",
        |r, _| {
            async {
                r.svc
                    .add_endpoint(veth(|e| e.pid = Some(1)))
                    .await
                    .map(drop)
            }
            .boxed()
        },
        "give exactly one of netns (a namespace path) or pid",
    ),
    (
        "neither a namespace nor a pid",
        |r, _| async { r.svc.add_endpoint(veth(|e| e.netns = None)).await.map(drop) }.boxed(),
        "give exactly one of netns",
    ),
    (
        "a namespace that does not exist",
        |r, _| {
            async {
                r.svc
                    .add_endpoint(veth(|e| e.netns = Some(PathBuf::from("/run/netns/gone"))))
                    .await
                    .map(drop)
            }
            .boxed()
        },
        "network namespace /run/netns/gone does not exist",
    ),
    (
        "a container id starting with '-'",
        |r, _| {
            async {
                r.svc
                    .add_endpoint(veth(|e| e.container_id = Some("-x".into())))
                    .await
                    .map(drop)
            }
            .boxed()
        },
        "invalid container id \"-x\"",
    ),
    (
        "a container id with a slash",
        |r, _| {
            async {
                r.svc
                    .add_endpoint(veth(|e| e.container_id = Some("a/b".into())))
                    .await
                    .map(drop)
            }
            .boxed()
        },
        "invalid container id \"a/b\"",
    ),
    (
        "an interface name too long",
        |r, _| {
            async {
                r.svc
                    .add_endpoint(veth(|e| e.ifname = Some("0123456789abcdef".into())))
                    .await
                    .map(drop)
            }
            .boxed()
        },
        "invalid interface name \"0123456789abcdef\"",
    ),
    (
        "a network that does not exist",
        |r, _| {
            async {
                r.svc
                    .add_endpoint(veth(|e| e.network = "nope".into()))
                    .await
                    .map(drop)
            }
            .boxed()
        },
        "network \"nope\" does not exist",
    ),
    (
        "a MAC another endpoint has",
        |r, _| {
            async {
                r.svc
                    .add_endpoint(veth(|e| e.mac = Some(MAC.parse().expect("mac"))))
                    .await
                    .map(drop)
            }
            .boxed()
        },
        "MAC 02:aa:bb:cc:dd:01 is already used by endpoint",
    ),
    (
        "an address outside the subnet",
        |r, _| {
            async {
                r.svc
                    .add_endpoint(veth(|e| e.ip = Some("10.99.0.2".parse().expect("ip"))))
                    .await
                    .map(drop)
            }
            .boxed()
        },
        "10.99.0.2 cannot be leased",
    ),
    (
        "the gateway's address",
        |r, _| {
            async {
                r.svc
                    .add_endpoint(veth(|e| e.ip = Some(GW)))
                    .await
                    .map(drop)
            }
            .boxed()
        },
        "10.77.0.1 cannot be leased",
    ),
    (
        "an address taken",
        |r, _| {
            async {
                r.svc
                    .add_endpoint(veth(|e| e.ip = Some("10.77.0.2".parse().expect("ip"))))
                    .await
                    .map(drop)
            }
            .boxed()
        },
        "10.77.0.2",
    ),
    // TAPs.
    (
        "a TAP name with a slash",
        |r, _| {
            async {
                r.svc
                    .add_tap(tap(|t| t.name = "a/b".into()))
                    .await
                    .map(drop)
            }
            .boxed()
        },
        "invalid TAP name \"a/b\"",
    ),
    (
        "0 queues",
        |r, _| async { r.svc.add_tap(tap(|t| t.queues = Some(0))).await.map(drop) }.boxed(),
        "invalid queue count 0: use 1 to 256",
    ),
    (
        "257 queues",
        |r, _| async { r.svc.add_tap(tap(|t| t.queues = Some(257))).await.map(drop) }.boxed(),
        "invalid queue count 257",
    ),
    (
        "uid 4294967295",
        |r, _| {
            async {
                r.svc
                    .add_tap(tap(|t| t.uid = Some(u32::MAX)))
                    .await
                    .map(drop)
            }
            .boxed()
        },
        "invalid uid 4294967295: use 0 to 4294967294",
    ),
    (
        "gid 4294967295",
        |r, _| {
            async {
                r.svc
                    .add_tap(tap(|t| t.gid = Some(u32::MAX)))
                    .await
                    .map(drop)
            }
            .boxed()
        },
        "invalid gid 4294967295",
    ),
    (
        "a TAP name a device has",
        |r, _| {
            async {
                r.svc
                    .add_tap(tap(|t| t.name = "eth0".into()))
                    .await
                    .map(drop)
            }
            .boxed()
        },
        "interface eth0 already exists",
    ),
    (
        "a TAP in a network that does not exist",
        |r, _| {
            async {
                r.svc
                    .add_tap(tap(|t| t.network = "nope".into()))
                    .await
                    .map(drop)
            }
            .boxed()
        },
        "network \"nope\" does not exist",
    ),
    (
        "a TAP MAC another endpoint has",
        |r, _| {
            async {
                r.svc
                    .add_tap(tap(|t| t.mac = Some(MAC.parse().expect("mac"))))
                    .await
                    .map(drop)
            }
            .boxed()
        },
        "is already used by endpoint",
    ),
    // Published ports.
    (
        "no spec",
        |r, ep| async move { r.svc.publish_ports(publish_req(ep, &[])).await.map(drop) }.boxed(),
        "no port to publish: give at least one spec, e.g. 8080:80",
    ),
    (
        "a spec with a name for a port",
        |r, ep| {
            async move {
                r.svc
                    .publish_ports(publish_req(ep, &["80:http"]))
                    .await
                    .map(drop)
            }
            .boxed()
        },
        "http",
    ),
    (
        "an address the host does not have",
        |r, ep| {
            async move {
                r.svc
                    .publish_ports(publish_req(ep, &["198.51.100.1:80:80"]))
                    .await
                    .map(drop)
            }
            .boxed()
        },
        "198.51.100.1 is not an address of this host",
    ),
    (
        "a port a host process holds",
        |r, ep| {
            async move {
                r.svc
                    .publish_ports(publish_req(ep, &["9000:80"]))
                    .await
                    .map(drop)
            }
            .boxed()
        },
        "port tcp/0.0.0.0:9000 is taken on the host by process fake (pid 4242)",
    ),
    (
        "a port already published, beside a free one",
        |r, ep| {
            async move {
                r.svc
                    .publish_ports(publish_req(ep, &["8081:81", "8080:80"]))
                    .await
                    .map(drop)
            }
            .boxed()
        },
        "tcp/0.0.0.0:8080",
    ),
    (
        "an endpoint that does not exist",
        |r, _| {
            async {
                r.svc
                    .publish_ports(publish_req("000000000000", &["8081:80"]))
                    .await
                    .map(drop)
            }
            .boxed()
        },
        "endpoint 000000000000 does not exist",
    ),
    (
        "unpublish with neither endpoint nor lease",
        |r, _| async { r.svc.unpublish_ports(None, None).await.map(drop) }.boxed(),
        "say what to unpublish",
    ),
    (
        "unpublish a lease nobody has",
        |r, _| {
            async {
                r.svc
                    .unpublish_ports(None, Some("tcp/0.0.0.0:7"))
                    .await
                    .map(drop)
            }
            .boxed()
        },
        "no port is published as tcp/0.0.0.0:7",
    ),
    // Removals.
    (
        "remove a network with endpoints, without force",
        |r, _| async { r.svc.remove_network("web", false).await.map(drop) }.boxed(),
        "network \"web\" still has 1 endpoint",
    ),
    (
        "remove a network that does not exist",
        |r, _| async { r.svc.remove_network("nope", true).await.map(drop) }.boxed(),
        "network \"nope\" does not exist",
    ),
    (
        "remove an endpoint that does not exist",
        |r, _| async { r.svc.remove_endpoint("0000").await.map(drop) }.boxed(),
        "0000",
    ),
];

#[tokio::test]
async fn refused_requests_change_nothing() {
    let rig = Rig::new();
    rig.network("web", Mode::Bridge).await;
    let mut req = veth_req("web");
    req.mac = Some(MAC.parse::<MacAddr>().expect("mac"));
    let ep = rig.svc.add_endpoint(req).await.expect("endpoint");
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
    let mut failures = Vec::new();
    for (what, request, expected) in ROWS {
        let (kernel, records, m) = (rig.kernel(), rig.records().await, rig.mark());
        let outcome = request(&rig, &ep.id).await;
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
    assert!(ROWS.len() >= 45, "the table has {} rows", ROWS.len());
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        ROWS.len(),
        failures.join("\n")
    );
}
