//! Join, ProgramExternalConnectivity, RevokeExternalConnectivity and Leave over the real
//! [`Service`] on the recording fakes: the netpath endpoint made and removed, the reply
//! libnetwork configures the container from, the ports published, and refusals that
//! change nothing.

use serde_json::json;

use super::*;

fn ep() -> Value {
    json!({"NetworkID": NET_ID, "EndpointID": EP_ID})
}

fn join_req() -> Value {
    let mut join = ep();
    join["SandboxKey"] = json!("/var/run/docker/netns/0123456789ab");
    join["Options"] =
        json!({"com.docker.network.portmap": [], "com.docker.network.endpoint.exposedports": []});
    join
}

/// Join's reply on the IPv4-only bridge network of `Rig::network`.
fn bridge_join_reply() -> Value {
    json!({
        "InterfaceName": {"SrcName": PEER, "DstPrefix": "eth"},
        "Gateway": "10.207.0.1",
        "GatewayIPv6": "",
        "StaticRoutes": [],
    })
}

fn program_req(portmap: Value) -> Value {
    let mut program = ep();
    program["Options"] = json!({ "com.docker.network.portmap": portmap });
    program
}

/// The netpath endpoints, as (container id, peer, address).
async fn made(rig: &Rig) -> Vec<(Option<String>, Option<String>, String)> {
    let all = rig.svc.list_endpoints(None).await.expect("endpoints");
    (all.into_iter())
        .map(|e| {
            let ip = e.primary_ip().to_string();
            (e.details.container_id, e.details.peer, ip)
        })
        .collect()
}

/// A rig with `Rig::network`'s network and `Rig::endpoint`'s endpoint joined.
async fn joined() -> Rig {
    let rig = Rig::new();
    rig.network().await;
    rig.endpoint().await;
    rig.ok("/NetworkDriver.Join", join_req(), bridge_join_reply())
        .await;
    rig
}

#[tokio::test]
async fn join_makes_the_endpoint_publish_and_leave_remove_it() {
    let rig = joined().await;
    assert_eq!(
        made(&rig).await,
        [(Some(EP_ID.into()), Some(PEER.into()), "10.207.0.2".into())]
    );
    let made_ep = &rig.svc.list_endpoints(None).await.unwrap()[0];
    assert_eq!(made_ep.mac.to_string(), MAC);
    {
        // The container end is left in the host's namespace, unconfigured (libnetwork's
        // to move and configure), and the host end is registered in the datapath.
        let w = rig.world.lock().unwrap();
        let peers: Vec<_> = w.kernel.peers.values().cloned().collect();
        assert_eq!(peers, [("host".into(), PEER.to_owned(), false)]);
        assert!(
            !w.calls.iter().any(|c| c.starts_with("configure_namespace")),
            "{:?}",
            w.calls
        );
        let value = w.kernel.endpoints[&"10.207.0.2".parse().unwrap()];
        assert_eq!(value.mac, made_ep.mac.octets());
    }
    // Joined once only.
    rig.refused(
        "/NetworkDriver.Join",
        &join_req().to_string(),
        "Err",
        &format!(
            "endpoint {EP_ID} is already joined (netpath endpoint {})",
            made_ep.id
        ),
    )
    .await;
    // `-p 18081:80` and `-p 127.0.0.1::53/udp` become netpath leases.
    let portmap = json!([
        {"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 18081, "HostPortEnd": 18081},
        {"Proto": 17, "IP": "", "Port": 53, "HostIP": "127.0.0.1", "HostPort": 0, "HostPortEnd": 0},
    ]);
    let program = "/NetworkDriver.ProgramExternalConnectivity";
    rig.ok(program, program_req(portmap), json!({})).await;
    let leases = rig.svc.list_ports().await.expect("ports");
    let shown: Vec<_> = (leases.iter())
        .map(|l| (l.endpoint.as_str(), l.host_ip.to_string(), l.guest_port))
        .collect();
    assert_eq!(
        shown,
        [
            (made_ep.id.as_str(), "0.0.0.0".to_owned(), 80),
            (made_ep.id.as_str(), "127.0.0.1".to_owned(), 53)
        ]
    );
    assert_eq!(leases[0].host_port, 18081);
    assert!(rig.world.lock().unwrap().kernel.publish.len() == 2);
    // A port another endpoint holds: refused, nothing changed.
    let taken = json!([{"Proto": 6, "IP": "", "Port": 81, "HostIP": "", "HostPort": 18081, "HostPortEnd": 18081}]);
    let before = rig.everything().await;
    let (status, body) = rig.call(program, &program_req(taken).to_string()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["Err"].as_str().unwrap().contains("18081"), "{body}");
    assert_eq!(rig.everything().await, before);
    assert_eq!(rig.svc.list_ports().await.unwrap().len(), 2);
    // Revoked: the leases and the datapath's entries go, the endpoint stays.
    rig.ok("/NetworkDriver.RevokeExternalConnectivity", ep(), json!({}))
        .await;
    assert!(rig.svc.list_ports().await.unwrap().is_empty());
    assert!(rig.world.lock().unwrap().kernel.publish.is_empty());
    assert_eq!(made(&rig).await.len(), 1);
    rig.ok("/NetworkDriver.Leave", ep(), json!({})).await;
    assert!(made(&rig).await.is_empty());
    {
        let w = rig.world.lock().unwrap();
        assert!(w.kernel.peers.is_empty() && w.kernel.endpoints.is_empty());
    }
    let not_joined = format!("endpoint {EP_ID} on network {NET_ID} is not joined");
    rig.refused(
        "/NetworkDriver.Leave",
        &ep().to_string(),
        "Err",
        &not_joined,
    )
    .await;
    // Joined again after a Leave (docker restart): a new netpath endpoint, same address.
    rig.ok("/NetworkDriver.Join", join_req(), bridge_join_reply())
        .await;
    assert_eq!(made(&rig).await.len(), 1);
}

#[tokio::test]
async fn a_routed_dual_stack_join_routes_the_pool_through_the_gateway() {
    let rig = Rig::new();
    let mut create =
        create_net(json!({"com.docker.network.generic": {"mode": "routed", "uplink": UPLINK}}));
    create["IPv6Data"] =
        json!([{"AddressSpace": "LocalDefault", "Pool": "fd51::/64", "Gateway": "fd51::1/64"}]);
    rig.ok("/NetworkDriver.CreateNetwork", create, json!({}))
        .await;
    rig.ok(
        "/NetworkDriver.CreateEndpoint",
        json!({"NetworkID": NET_ID, "EndpointID": EP_ID,
               "Interface": {"Address": "10.207.0.2/24", "AddressIPv6": "fd51::2/64", "MacAddress": MAC}}),
        json!({}),
    )
    .await;
    let hop = |d: &str, via: &str| json!({"Destination": d, "RouteType": 0, "NextHop": via});
    let reply = json!({
        "InterfaceName": {"SrcName": PEER, "DstPrefix": "eth"},
        "Gateway": "10.207.0.1",
        "GatewayIPv6": "fd51::1",
        "StaticRoutes": [
            json!({"Destination": "10.207.0.1/32", "RouteType": 1}),
            hop("10.207.0.0/25", "10.207.0.1"),
            hop("10.207.0.128/25", "10.207.0.1"),
            json!({"Destination": "fd51::1/128", "RouteType": 1}),
            hop("fd51::/65", "fd51::1"),
            hop("fd51::8000:0:0:0/65", "fd51::1"),
        ],
    });
    rig.ok("/NetworkDriver.Join", join_req(), reply).await;
    let e = &rig.svc.list_endpoints(None).await.unwrap()[0];
    assert_eq!(e.ip6, Some("fd51::2".parse().unwrap()));
    // Routed: the gateways on the host end, a host route to each address.
    let w = rig.world.lock().unwrap();
    let host_end = w
        .kernel
        .links
        .values()
        .find(|l| l.name == e.host_ifname)
        .unwrap();
    for (addr, len) in [("10.207.0.1", 32), ("fd51::1", 128)] {
        assert!(
            w.kernel
                .addrs
                .contains(&(host_end.index, addr.parse().unwrap(), len)),
            "{:?}",
            w.kernel.addrs
        );
    }
}

#[tokio::test]
async fn a_join_that_cannot_be_made_changes_nothing() {
    let rig = Rig::new();
    rig.network().await;
    rig.endpoint().await;
    // Something on the host has the name the container end would get.
    rig.world.lock().unwrap().new_link(PEER, None);
    rig.refused(
        "/NetworkDriver.Join",
        &join_req().to_string(),
        "Err",
        &format!("the host already has an interface named {PEER} (choose another peer name)"),
    )
    .await;
    assert!(made(&rig).await.is_empty());
    // The veth's creation fails in the kernel: rolled back, the record released.
    rig.world
        .lock()
        .unwrap()
        .kernel
        .links
        .retain(|_, l| l.name != PEER);
    let at = rig.world.lock().unwrap().calls.len();
    rig.world.lock().unwrap().fail_at = Some(at);
    let (_, body) = rig
        .call("/NetworkDriver.Join", &join_req().to_string())
        .await;
    assert!(body["Err"].is_string(), "{body}");
    assert!(made(&rig).await.is_empty());
    assert!(rig.world.lock().unwrap().kernel.peers.is_empty());
}

#[tokio::test]
async fn create_endpoint_without_a_mac_gets_one_and_tells_docker() {
    let rig = Rig::new();
    rig.network().await;
    let (status, reply) = rig
        .call(
            "/NetworkDriver.CreateEndpoint",
            &json!({"NetworkID": NET_ID, "EndpointID": EP_ID,
                    "Interface": {"Address": "10.207.0.2/24", "AddressIPv6": "", "MacAddress": ""}})
            .to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let mac = rig.plugin.driver.remembered()[EP_ID].mac;
    assert_eq!(reply, json!({"Interface": {"MacAddress": mac.to_string()}}));
    // Locally administered, unicast.
    assert_eq!(mac.octets()[0] & 0b11, 0b10, "{mac}");
}

#[tokio::test]
async fn a_restarted_plugin_remembers_pools_endpoints_and_joins() {
    let rig = Rig::new();
    let dir = tempfile::tempdir().unwrap();
    let first = Plugin::open(rig.svc.clone(), dir.path()).expect("open");
    let app = || {
        router(
            Arc::new(Plugin::open(rig.svc.clone(), dir.path()).unwrap()),
            CALL_TIMEOUT,
        )
    };
    let (_, pool) = call(
        router(Arc::new(first), CALL_TIMEOUT),
        "/IpamDriver.RequestPool",
        r#"{"Pool": "10.207.0.0/24"}"#,
    )
    .await;
    assert_eq!(pool["PoolID"], "netpath/10.207.0.0/24");
    // Each call below runs on a plugin opened afresh from the files: a restart each time.
    let gw = r#"{"PoolID": "netpath/10.207.0.0/24", "Address": ""}"#;
    assert_eq!(
        call(app(), "/IpamDriver.RequestAddress", gw).await.1["Address"],
        "10.207.0.1/24"
    );
    assert_eq!(
        call(app(), "/IpamDriver.RequestAddress", gw).await.1["Address"],
        "10.207.0.2/24"
    );
    let net = create_net(json!({"com.docker.network.generic": {"uplink": UPLINK}}));
    assert_eq!(
        call(app(), "/NetworkDriver.CreateNetwork", &net.to_string())
            .await
            .1,
        json!({})
    );
    let ce = json!({"NetworkID": NET_ID, "EndpointID": EP_ID,
        "Interface": {"Address": "10.207.0.2/24", "MacAddress": MAC}});
    assert_eq!(
        call(app(), "/NetworkDriver.CreateEndpoint", &ce.to_string())
            .await
            .1,
        json!({})
    );
    let joined = call(app(), "/NetworkDriver.Join", &join_req().to_string())
        .await
        .1;
    assert_eq!(joined["InterfaceName"]["SrcName"], PEER, "{joined}");
    assert_eq!(
        call(app(), "/NetworkDriver.Leave", &ep().to_string())
            .await
            .1,
        json!({})
    );
    assert_eq!(
        call(app(), "/NetworkDriver.DeleteEndpoint", &ep().to_string())
            .await
            .1,
        json!({})
    );
    let release = r#"{"PoolID": "netpath/10.207.0.0/24", "Address": "10.207.0.2/24"}"#;
    assert_eq!(
        call(app(), "/IpamDriver.ReleaseAddress", release).await.1,
        json!({})
    );
    let last = Plugin::open(rig.svc.clone(), dir.path()).unwrap();
    assert!(last.driver.remembered().is_empty());
    let pools = last.ipam.snapshot();
    let used: Vec<_> = pools["netpath/10.207.0.0/24"]
        .used
        .iter()
        .map(|a| a.to_string())
        .collect();
    assert_eq!(used, ["10.207.0.1"]);
}

#[tokio::test]
async fn delete_network_takes_what_docker_never_left_with_it() {
    let rig = joined().await;
    // No Leave, no DeleteEndpoint (netpath was down then); Docker deletes the network.
    rig.delete_network().await;
    assert!(rig.svc.list_networks().await.unwrap().is_empty());
    assert!(made(&rig).await.is_empty());
    assert!(rig.plugin.driver.remembered().is_empty());
    let w = rig.world.lock().unwrap();
    assert!(w.kernel.peers.is_empty() && w.kernel.endpoints.is_empty());
}
