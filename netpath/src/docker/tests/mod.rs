//! The plugin's protocol through its router (tower `oneshot`, no socket, no root) over
//! the real [`Service`] on the recording fakes: every call valid and malformed, the exact
//! reply JSON, and on every refusal the state database, the fake kernel and its call
//! log unchanged.

mod join;

use std::{
    future::pending,
    sync::{Arc, Mutex},
};

use axum::{
    body::Body,
    http::{Request, StatusCode},
};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::{driver::port_spec, wire::PortBinding, *};
use crate::{
    api::ApiError,
    control::{
        Service,
        fake::{UPLINK, World},
    },
    model::{
        Endpoint, EndpointCreate, Mode, Network, NetworkCreate, PortLease, StatsReport, TapCreate,
    },
};

const NET_ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const NET_NAME: &str = "d-0123456789";
const EP_ID: &str = "ep0123456789abcdef";
/// The MAC `Rig::endpoint` asks for, and the name its container end is left under.
const MAC: &str = "02:42:0a:cf:00:02";
const PEER: &str = "npdep0123456789";

struct Rig {
    svc: Arc<Service>,
    plugin: Arc<Plugin<Service>>,
    world: Arc<Mutex<World>>,
    _dir: tempfile::TempDir,
}

/// What a refusal must leave alone: the records, the fake kernel's call log and the
/// plugin's own memory.
#[derive(Debug, PartialEq, Eq)]
struct Everything {
    networks: Vec<Network>,
    endpoints: Vec<Endpoint>,
    calls: usize,
    docker_endpoints: Vec<(String, driver::DockerEndpoint)>,
    pools: Vec<(String, ipam::Pool)>,
}

impl Rig {
    fn new() -> Rig {
        let (svc, world, dir) = crate::control::fake::service();
        let svc = Arc::new(svc);
        Rig {
            plugin: Arc::new(Plugin::new(svc.clone())),
            svc,
            world,
            _dir: dir,
        }
    }

    async fn call(&self, path: &str, body: &str) -> (StatusCode, Value) {
        call(router(self.plugin.clone(), CALL_TIMEOUT), path, body).await
    }

    /// A call that must succeed with exactly `want`.
    async fn ok(&self, path: &str, body: Value, want: Value) {
        assert_eq!(
            self.call(path, &body.to_string()).await,
            (StatusCode::OK, want),
            "{path} {body}"
        );
    }

    /// Calls that must each succeed with exactly the reply given, in order.
    async fn oks<const N: usize>(&self, calls: [(&str, Value, Value); N]) {
        for (path, body, want) in calls {
            self.ok(path, body, want).await;
        }
    }

    /// A call that must be refused with exactly `key: msg` and change nothing.
    async fn refused(&self, path: &str, body: &str, key: &str, msg: &str) {
        let before = self.everything().await;
        assert_eq!(
            self.call(path, body).await,
            (StatusCode::OK, json!({ key: msg })),
            "{path} {body}"
        );
        assert_eq!(
            self.everything().await,
            before,
            "{path} {body} changed state"
        );
    }

    async fn everything(&self) -> Everything {
        let mut docker_endpoints: Vec<_> = self.plugin.driver.remembered().into_iter().collect();
        docker_endpoints.sort_by(|a, b| a.0.cmp(&b.0));
        Everything {
            networks: self.svc.list_networks().await.expect("networks"),
            endpoints: self.svc.list_endpoints(None).await.expect("endpoints"),
            calls: self.world.lock().unwrap().calls.len(),
            docker_endpoints,
            pools: self.plugin.ipam.snapshot().into_iter().collect(),
        }
    }

    async fn network(&self) {
        self.ok(
            "/NetworkDriver.CreateNetwork",
            create_net(json!({"com.docker.network.generic": {"uplink": UPLINK}})),
            json!({}),
        )
        .await;
    }

    async fn delete_network(&self) {
        let body = json!({ "NetworkID": NET_ID });
        self.ok("/NetworkDriver.DeleteNetwork", body, json!({}))
            .await;
    }

    async fn endpoint(&self) {
        self.ok(
            "/NetworkDriver.CreateEndpoint",
            json!({"NetworkID": NET_ID, "EndpointID": EP_ID,
                   "Interface": {"Address": "10.207.0.2/24", "AddressIPv6": "", "MacAddress": MAC},
                   "Options": {"com.docker.network.portmap": [], "com.docker.network.endpoint.exposedports": []}}),
            json!({}),
        )
        .await;
    }
}

/// One request through a fresh copy of the router, without a Content-Type (as dockerd).
async fn call(app: Router, path: &str, body: &str) -> (StatusCode, Value) {
    let req = Request::post(path)
        .header("Accept", "application/vnd.docker.plugins.v1.2+json")
        .body(Body::from(body.to_owned()))
        .expect("request");
    let resp = app.oneshot(req).await.expect("infallible");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{path}: reply {bytes:?} is not JSON: {e}"));
    (status, value)
}

/// A CreateNetwork body as dockerd 20.10 sends it, on 10.207.0.0/24.
fn create_net(options: Value) -> Value {
    let mut opts =
        json!({"com.docker.network.enable_ipv6": false, "com.docker.network.generic": {}});
    for (k, v) in options.as_object().expect("object") {
        opts[k] = v.clone();
    }
    json!({"NetworkID": NET_ID, "Options": opts,
           "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": "10.207.0.0/24", "Gateway": "10.207.0.1/24"}],
           "IPv6Data": []})
}

#[tokio::test]
async fn handshake_and_capabilities() {
    let rig = Rig::new();
    for (path, want) in [
        (
            "/Plugin.Activate",
            json!({"Implements": ["NetworkDriver", "IpamDriver"]}),
        ),
        (
            "/NetworkDriver.GetCapabilities",
            json!({"Scope": "local", "ConnectivityScope": "local"}),
        ),
        (
            "/IpamDriver.GetCapabilities",
            json!({"RequiresMACAddress": false, "RequiresRequestReplay": false}),
        ),
        (
            "/IpamDriver.GetDefaultAddressSpaces",
            json!({"LocalDefaultAddressSpace": "netpath-local",
                   "GlobalDefaultAddressSpace": "netpath-global"}),
        ),
    ] {
        // dockerd sends these with an empty body.
        assert_eq!(rig.call(path, "").await, (StatusCode::OK, want.clone()));
        assert_eq!(rig.call(path, "").await, (StatusCode::OK, want), "repeated");
    }
    assert_eq!(
        rig.call("/NetworkDriver.DiscoverNew", "{}").await,
        (
            StatusCode::NOT_FOUND,
            json!({"Err": "netpath does not implement NetworkDriver.DiscoverNew"})
        )
    );
    assert_eq!(
        rig.call("/IpamDriver.Nothing", "{}").await,
        (
            StatusCode::NOT_FOUND,
            json!({"Error": "netpath does not implement IpamDriver.Nothing"})
        )
    );
}

#[tokio::test]
async fn create_network_makes_the_netpath_network() {
    let rig = Rig::new();
    rig.ok(
        "/NetworkDriver.CreateNetwork",
        create_net(json!({"com.docker.network.generic":
            {"mode": "routed", "uplink": UPLINK, "mtu": "1400"}})),
        json!({}),
    )
    .await;
    let net = rig.svc.get_network(NET_NAME).await.expect("network made");
    assert_eq!(
        (
            net.subnet.map(|s| s.to_string()),
            net.gateway.map(|g| g.to_string()),
            net.mode,
            net.uplink.as_deref(),
            net.mtu,
            net.subnet6
        ),
        (
            Some("10.207.0.0/24".into()),
            Some("10.207.0.1".into()),
            Mode::Routed,
            Some(UPLINK),
            1400,
            None
        )
    );
    // The same call again: a clear refusal, nothing changed.
    rig.refused(
        "/NetworkDriver.CreateNetwork",
        &create_net(json!({})).to_string(),
        "Err",
        "network \"d-0123456789\" already exists (choose another name, or remove the existing network first)",
    )
    .await;
    rig.delete_network().await;
    assert!(rig.svc.list_networks().await.expect("list").is_empty());
    // `--internal`, and isolation as Docker's bridge driver asks for it or as netpath's
    // `-o isolate=true`: the network's policy.
    for (options, isolate, internal) in [
        (json!({"com.docker.network.internal": true}), false, true),
        (
            json!({"com.docker.network.generic": {"com.docker.network.bridge.enable_icc": "false"}}),
            true,
            false,
        ),
        (
            json!({"com.docker.network.generic": {"isolate": "true"}}),
            true,
            false,
        ),
        (
            json!({"com.docker.network.generic": {"isolate": "false"}}),
            false,
            false,
        ),
    ] {
        let call = "/NetworkDriver.CreateNetwork";
        rig.ok(call, create_net(options.clone()), json!({})).await;
        let net = rig.svc.get_network(NET_NAME).await.expect("network made");
        let want = crate::model::NetworkPolicy {
            isolate,
            internal,
            ..Default::default()
        };
        assert_eq!(net.policy, want, "{options}");
        rig.delete_network().await;
    }
    // Egress rules, host access and the profile, as `-o`.
    let generic = json!({"com.docker.network.generic": {
        "profile": "untrusted", "egress-allow": "10.9.0.0/16",
        "host-access": "53/udp,53/tcp", "egress-deny": "203.0.113.0/24"}});
    rig.ok(
        "/NetworkDriver.CreateNetwork",
        create_net(generic),
        json!({}),
    )
    .await;
    let net = rig.svc.get_network(NET_NAME).await.expect("network made");
    let policy = &net.policy;
    assert!(policy.isolate, "{policy:?}");
    let deny: Vec<String> = policy.egress_deny.iter().map(|d| d.to_string()).collect();
    assert_eq!(deny, ["203.0.113.0/24", "private"]);
    assert_eq!(
        policy.egress_allow,
        ["10.9.0.0/16".parse::<ipnet::IpNet>().unwrap()]
    );
    assert_eq!(
        policy.host_access.to_string(),
        "53/tcp,53/udp",
        "given wins the profile's none"
    );
    rig.delete_network().await;
    rig.refused(
        "/NetworkDriver.DeleteNetwork",
        &json!({ "NetworkID": NET_ID }).to_string(),
        "Err",
        "network \"d-0123456789\" does not exist",
    )
    .await;
}

#[tokio::test]
async fn malformed_create_network_is_refused_and_changes_nothing() {
    let rig = Rig::new();
    let c = "/NetworkDriver.CreateNetwork";
    let mut two_pools = create_net(json!({}));
    two_pools["IPv4Data"] = json!([{"Pool": "10.207.0.0/24"}, {"Pool": "10.208.0.0/24"}]);
    let mut no_pool = create_net(json!({}));
    no_pool["IPv4Data"] = json!([]);
    let mut bad_pool = create_net(json!({}));
    bad_pool["IPv4Data"] = json!([{"Pool": "10.207.0.0/33"}]);
    let mut short_id = create_net(json!({}));
    short_id["NetworkID"] = json!("abc");
    for (body, msg) in [
        (
            "".to_owned(),
            "NetworkDriver.CreateNetwork: malformed request: EOF while parsing a value at line 1 column 0",
        ),
        (
            "{}".to_owned(),
            "NetworkDriver.CreateNetwork: malformed request: missing field `NetworkID` at line 1 column 2",
        ),
        (
            r#"{"NetworkID": 5}"#.to_owned(),
            "NetworkDriver.CreateNetwork: malformed request: invalid type: integer `5`, expected a string at line 1 column 15",
        ),
        (
            short_id.to_string(),
            "NetworkID \"abc\" is not a Docker network id (at least 10 hex digits)",
        ),
        (
            no_pool.to_string(),
            "netpath needs exactly one IPv4 pool (--subnet), got 0",
        ),
        (
            two_pools.to_string(),
            "netpath needs exactly one IPv4 pool (--subnet), got 2",
        ),
        (
            bad_pool.to_string(),
            "IPv4 pool \"10.207.0.0/33\" is not an IPv4 CIDR",
        ),
        (
            create_net(json!({"com.docker.network.generic": {"vlan": "3"}})).to_string(),
            "unknown option -o vlan (netpath knows mode, uplink, mtu, isolate, egress-deny, egress-allow, host-access, profile)",
        ),
        (
            create_net(json!({"com.docker.network.generic": {"mode": "nat"}})).to_string(),
            "-o mode=nat: the mode is bridge or routed",
        ),
        (
            create_net(json!({"com.docker.network.generic": {"mtu": "big"}})).to_string(),
            "-o mtu=big: not a number",
        ),
        (
            create_net(json!({"com.docker.network.generic": {"mtu": 1400}})).to_string(),
            "option -o mtu is not a string",
        ),
        (
            create_net(json!({"com.docker.network.generic": {"isolate": "yes"}})).to_string(),
            "-o isolate=yes: give true or false",
        ),
        (
            create_net(json!({"com.docker.network.generic": {"egress-deny": "private,10.0.0.0/33"}})).to_string(),
            "-o egress-deny=private,10.0.0.0/33: invalid destination \"10.0.0.0/33\": give a CIDR (10.0.0.0/8, fd00::/8) or `private`",
        ),
        (
            create_net(json!({"com.docker.network.generic": {"profile": "lax"}})).to_string(),
            "-o profile=lax: the profile is untrusted",
        ),
        (
            create_net(json!({"com.docker.network.generic": {"egress-deny": "10.5.0.0/16", "egress-allow": "10.5.0.0/16"}})).to_string(),
            "10.5.0.0/16 is both denied and allowed (give a prefix in one list only: an allow inside a denied prefix must be longer than it)",
        ),
    ] {
        rig.refused(c, &body, "Err", msg).await;
    }
    assert!(rig.svc.list_networks().await.expect("list").is_empty());
}

#[tokio::test]
async fn endpoint_calls_valid_and_refused() {
    let rig = Rig::new();
    let unknown_net = json!({"NetworkID": "fedcba9876543210", "EndpointID": EP_ID}).to_string();
    let no_ep = |path: &'static str| async move {
        (
            path,
            json!({"NetworkID": NET_ID, "EndpointID": EP_ID}).to_string(),
        )
    };
    // Before the network exists.
    rig.refused(
        "/NetworkDriver.CreateEndpoint",
        &json!({"NetworkID": NET_ID, "EndpointID": EP_ID,
                "Interface": {"Address": "10.207.0.2/24"}})
        .to_string(),
        "Err",
        "network \"d-0123456789\" does not exist",
    )
    .await;
    rig.network().await;
    let missing =
        format!("no endpoint \"{EP_ID}\" on network {NET_ID} (netpath network {NET_NAME})");
    let not_joined = format!("endpoint {EP_ID} on network {NET_ID} is not joined");
    for (path, msg) in [
        ("/NetworkDriver.EndpointOperInfo", &missing),
        ("/NetworkDriver.DeleteEndpoint", &missing),
        ("/NetworkDriver.Join", &missing),
        ("/NetworkDriver.Leave", &not_joined),
        ("/NetworkDriver.ProgramExternalConnectivity", &not_joined),
        ("/NetworkDriver.RevokeExternalConnectivity", &not_joined),
    ] {
        let (path, body) = no_ep(path).await;
        rig.refused(path, &body, "Err", msg).await;
        rig.refused(
            path,
            r#"{"NetworkID": "0123456789abcdef"}"#,
            "Err",
            &format!(
                "{}: malformed request: missing field `EndpointID` at line 1 column 33",
                &path[1..]
            ),
        )
        .await;
    }
    let ce = "/NetworkDriver.CreateEndpoint";
    for (iface, msg) in [
        (
            json!({}),
            "the endpoint has no IPv4 address (Interface.Address)",
        ),
        (
            json!({"Address": "10.9.0.2/24"}),
            "address 10.9.0.2 is outside network 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef's subnet 10.207.0.0/24",
        ),
        (
            json!({"Address": "10.207.0.2/24", "AddressIPv6": "fd51::2/64"}),
            "IPv6 address fd51::2 is outside network 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef's IPv6 subnet",
        ),
        (
            json!({"Address": "ten"}),
            "Interface.Address \"ten\" is not an address",
        ),
        (
            json!({"Address": 7}),
            "NetworkDriver.CreateEndpoint: malformed request: invalid type: integer `7`, expected a string at line 1 column 59",
        ),
    ] {
        let body = json!({"NetworkID": NET_ID, "EndpointID": EP_ID, "Interface": iface});
        let body = body.to_string();
        rig.refused(ce, &body, "Err", msg).await;
    }
    let bad_ports = json!({"NetworkID": NET_ID, "EndpointID": EP_ID,
        "Interface": {"Address": "10.207.0.2/24"},
        "Options": {"com.docker.network.portmap": [{"Proto": 132, "Port": 80, "HostPort": 8080}]}});
    rig.refused(
        ce,
        &bad_ports.to_string(),
        "Err",
        "port 80: protocol 132 is not supported (tcp and udp are)",
    )
    .await;
    rig.refused(
        "/NetworkDriver.CreateEndpoint",
        &unknown_net,
        "Err",
        "network \"d-fedcba9876\" does not exist",
    )
    .await;

    rig.endpoint().await;
    assert_eq!(
        rig.plugin.driver.remembered()[EP_ID],
        driver::DockerEndpoint {
            network: NET_NAME.into(),
            ip: "10.207.0.2".parse().unwrap(),
            ip6: None,
            mac: MAC.parse().unwrap(),
        }
    );
    // A repeated create, and another endpoint on the same address.
    let dup = json!({"NetworkID": NET_ID, "EndpointID": EP_ID,
        "Interface": {"Address": "10.207.0.3/24"}});
    rig.refused(
        ce,
        &dup.to_string(),
        "Err",
        &format!("endpoint {EP_ID} already exists"),
    )
    .await;
    let same_ip = json!({"NetworkID": NET_ID, "EndpointID": "other",
        "Interface": {"Address": "10.207.0.2/24"}});
    rig.refused(
        ce,
        &same_ip.to_string(),
        "Err",
        &format!("address 10.207.0.2 is already used by endpoint {EP_ID}"),
    )
    .await;
    let ep = json!({"NetworkID": NET_ID, "EndpointID": EP_ID});
    for _ in 0..2 {
        rig.ok(
            "/NetworkDriver.EndpointOperInfo",
            ep.clone(),
            json!({"Value": {}}),
        )
        .await;
    }
    // The endpoint is on another network than the one named.
    rig.refused(
        "/NetworkDriver.EndpointOperInfo",
        &unknown_net,
        "Err",
        &format!(
            "no endpoint \"{EP_ID}\" on network fedcba9876543210 (netpath network d-fedcba9876)"
        ),
    )
    .await;
    // Not joined yet: nothing to publish on, nothing to leave.
    rig.refused("/NetworkDriver.Leave", &ep.to_string(), "Err", &not_joined)
        .await;
    rig.ok("/NetworkDriver.DeleteEndpoint", ep.clone(), json!({}))
        .await;
    assert!(rig.plugin.driver.remembered().is_empty());
    rig.refused(
        "/NetworkDriver.DeleteEndpoint",
        &ep.to_string(),
        "Err",
        &missing,
    )
    .await;
    rig.delete_network().await;
}

#[tokio::test]
async fn ipam_pools_and_addresses() {
    let rig = Rig::new();
    let rp = "/IpamDriver.RequestPool";
    let ra = "/IpamDriver.RequestAddress";
    for (body, msg) in [
        (
            json!({"AddressSpace": "netpath-local", "Pool": ""}),
            "netpath IPAM needs the pool: give --subnet",
        ),
        (
            json!({"Pool": "10.207.0.0/24", "SubPool": "10.207.0.128/25"}),
            "--ip-range 10.207.0.128/25 is not supported by netpath IPAM",
        ),
        (
            json!({"Pool": "10.207.0.1/24"}),
            "pool 10.207.0.1/24 has host bits set (did you mean 10.207.0.0/24)",
        ),
        (
            json!({"Pool": "fd51::/64"}),
            "pool fd51::/64 is not of the family V6=false asks for",
        ),
        (json!({"Pool": "nope"}), "pool \"nope\" is not a CIDR"),
    ] {
        rig.refused(rp, &body.to_string(), "Error", msg).await;
    }
    rig.refused(rp, r#"{"Pool": 1}"#, "Error",
        "IpamDriver.RequestPool: malformed request: invalid type: integer `1`, expected a string at line 1 column 10").await;
    let pool = "netpath/10.207.0.0/24";
    let (rel, rpool) = ("/IpamDriver.ReleaseAddress", "/IpamDriver.ReleasePool");
    let addr = |a: &str| json!({"Address": a, "Data": {}});
    rig.oks([
        (rp, json!({"AddressSpace": "netpath-local", "Pool": "10.207.0.0/24", "SubPool": "", "Options": {}, "V6": false}),
            json!({"PoolID": pool, "Pool": "10.207.0.0/24", "Data": {}})),
        (rp, json!({"Pool": "fd51::/64", "V6": true}),
            json!({"PoolID": "netpath/fd51::/64", "Pool": "fd51::/64", "Data": {}})),
    ])
    .await;
    rig.refused(
        rp,
        &json!({"Pool": "10.207.0.0/16"}).to_string(),
        "Error",
        "pool 10.207.0.0/16 overlaps pool netpath/10.207.0.0/24",
    )
    .await;
    rig.oks([
        (ra, json!({"PoolID": pool, "Address": "", "Options": {"RequestAddressType": "com.docker.network.gateway"}}),
            addr("10.207.0.1/24")),
        (ra, json!({"PoolID": pool, "Address": ""}), addr("10.207.0.2/24")),
        (ra, json!({"PoolID": pool, "Address": "10.207.0.9"}), addr("10.207.0.9/24")),
        (ra, json!({"PoolID": "netpath/fd51::/64", "Address": ""}), addr("fd51::1/64")),
    ])
    .await;
    for (body, msg) in [
        (
            json!({"PoolID": pool, "Address": "10.207.0.9"}),
            "address 10.207.0.9 is already in use",
        ),
        (
            json!({"PoolID": pool, "Address": "10.9.0.9"}),
            "address 10.9.0.9 is not a host of pool 10.207.0.0/24",
        ),
        (
            json!({"PoolID": pool, "Address": "10.207.0.0"}),
            "address 10.207.0.0 is not a host of pool 10.207.0.0/24",
        ),
        (
            json!({"PoolID": "netpath/10.1.0.0/24", "Address": ""}),
            "no pool \"netpath/10.1.0.0/24\"",
        ),
        (
            json!({"Address": ""}),
            "IpamDriver.RequestAddress: malformed request: missing field `PoolID` at line 1 column 14",
        ),
    ] {
        rig.refused(ra, &body.to_string(), "Error", msg).await;
    }
    rig.oks([(
        rel,
        json!({"PoolID": pool, "Address": "10.207.0.2/24"}),
        json!({}),
    )])
    .await;
    rig.refused(
        rel,
        &json!({"PoolID": pool, "Address": "10.207.0.2"}).to_string(),
        "Error",
        "address 10.207.0.2 is not leased from pool 10.207.0.0/24",
    )
    .await;
    // The freed address is handed out again, lowest first; then the pool goes.
    rig.oks([
        (
            ra,
            json!({"PoolID": pool, "Address": ""}),
            addr("10.207.0.2/24"),
        ),
        (rpool, json!({"PoolID": pool}), json!({})),
    ])
    .await;
    rig.refused(
        rpool,
        &json!({"PoolID": pool}).to_string(),
        "Error",
        "no pool \"netpath/10.207.0.0/24\"",
    )
    .await;
    assert_eq!(
        rig.plugin.ipam.snapshot().keys().collect::<Vec<_>>(),
        ["netpath/fd51::/64"]
    );
}

#[test]
fn port_bindings_become_netpath_specs() {
    let b = |proto, host_ip: &str, host_port, host_port_end| PortBinding {
        proto,
        ip: String::new(),
        port: 80,
        host_ip: host_ip.into(),
        host_port,
        host_port_end,
    };
    assert_eq!(port_spec(&b(6, "", 8080, 8080)), Ok("8080:80/tcp".into()));
    assert_eq!(port_spec(&b(17, "", 0, 0)), Ok("80/udp".into()));
    assert_eq!(
        port_spec(&b(6, "127.0.0.1", 18081, 18081)),
        Ok("127.0.0.1:18081:80/tcp".into())
    );
    assert_eq!(port_spec(&b(6, "::1", 0, 0)), Ok("[::1]::80/tcp".into()));
    assert_eq!(
        port_spec(&b(6, "0.0.0.0", 0, 0)),
        Ok("0.0.0.0::80/tcp".into())
    );
    assert_eq!(
        port_spec(&b(6, "", 8000, 8010)),
        Ok("8000-8010:80/tcp".into())
    );
    assert_eq!(
        port_spec(&b(6, "", 8010, 8000)),
        Ok("8010:80/tcp".into()),
        "an end before the start is no range"
    );
    assert_eq!(
        port_spec(&b(6, "x", 1, 1)),
        Err("HostIP \"x\" is not an address".into())
    );
}

/// A backend that never answers.
struct Hung;

impl Backend for Hung {
    async fn create_network(&self, _: NetworkCreate) -> Result<Network, ApiError> {
        pending().await
    }
    async fn remove_network(&self, _: &str, _: bool) -> Result<Network, ApiError> {
        pending().await
    }
    async fn list_networks(&self) -> Result<Vec<Network>, ApiError> {
        pending().await
    }
    async fn get_network(&self, _: &str) -> Result<Network, ApiError> {
        pending().await
    }
    async fn add_endpoint(&self, _: EndpointCreate) -> Result<Endpoint, ApiError> {
        pending().await
    }
    async fn add_tap(&self, _: TapCreate) -> Result<Endpoint, ApiError> {
        pending().await
    }
    async fn remove_endpoint(&self, _: &str) -> Result<Endpoint, ApiError> {
        pending().await
    }
    async fn list_endpoints(&self, _: Option<&str>) -> Result<Vec<Endpoint>, ApiError> {
        pending().await
    }
    async fn get_endpoint(&self, _: &str) -> Result<Endpoint, ApiError> {
        pending().await
    }
    async fn stats(&self) -> Result<StatsReport, ApiError> {
        pending().await
    }
    async fn list_ports(&self) -> Result<Vec<PortLease>, ApiError> {
        pending().await
    }
}

#[tokio::test]
async fn a_hung_backend_is_answered_within_the_timeout() {
    let app = router(
        Arc::new(Plugin::new(Arc::new(Hung))),
        std::time::Duration::from_millis(50),
    );
    assert_eq!(
        call(
            app.clone(),
            "/NetworkDriver.CreateNetwork",
            &create_net(json!({})).to_string()
        )
        .await,
        (
            StatusCode::OK,
            json!({"Err": "NetworkDriver.CreateNetwork: netpath did not answer within 50ms (the call goes on in the daemon)"})
        )
    );
    // Calls that need no backend still answer.
    assert_eq!(
        call(app, "/Plugin.Activate", "").await,
        (
            StatusCode::OK,
            json!({"Implements": ["NetworkDriver", "IpamDriver"]})
        )
    );
}
