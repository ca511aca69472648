mod dual_stack;

use std::collections::HashMap;

use super::*;
use crate::model::{EndpointDetails, EndpointKind};

pub(super) fn env(pairs: &[(&str, &str)]) -> Result<Env> {
    let m: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Env::from_vars(|k| m.get(k).cloned())
}

#[test]
fn env_is_validated_per_command() {
    assert_eq!(env(&[]).unwrap_err().code, code::INVALID_ENV);
    assert_eq!(
        env(&[("CNI_COMMAND", "FOO")]).unwrap_err().code,
        code::INVALID_ENV
    );
    assert_eq!(
        env(&[("CNI_COMMAND", "VERSION")]).unwrap().command,
        Command::Version
    );
    let e = env(&[("CNI_COMMAND", "ADD"), ("CNI_IFNAME", "eth0")]).unwrap_err();
    assert!(e.msg.contains("CNI_CONTAINERID"), "{}", e.msg);
    let e = env(&[
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_IFNAME", "eth0"),
    ])
    .unwrap_err();
    assert!(e.msg.contains("CNI_NETNS"), "{}", e.msg);
    // DEL needs no namespace.
    let d = env(&[
        ("CNI_COMMAND", "DEL"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_ARGS", "IgnoreUnknown=1;IP=10.1.0.5"),
    ])
    .unwrap();
    assert_eq!(d.arg("IP"), Some("10.1.0.5"));
    for (k, v) in [
        ("CNI_CONTAINERID", "-bad"),
        ("CNI_CONTAINERID", "a/b"),
        ("CNI_IFNAME", "waytoolongifname0"),
        ("CNI_IFNAME", "a b"),
        ("CNI_ARGS", "novalue"),
    ] {
        let mut pairs = vec![
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
        ];
        pairs.retain(|(pk, _)| *pk != k);
        pairs.push((k, v));
        assert_eq!(env(&pairs).unwrap_err().code, code::INVALID_ENV, "{k}={v}");
    }
    // GC and STATUS need no attachment.
    env(&[("CNI_COMMAND", "GC")]).unwrap();
    env(&[("CNI_COMMAND", "STATUS")]).unwrap();
}

/// A configuration of network `web` (1.0.0) with the members of `extra`.
pub(super) fn conf(extra: Value) -> Result<NetConf> {
    let mut v = json!({"cniVersion": "1.0.0", "name": "web", "type": "netpath-cni"});
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    NetConf::parse(v.to_string().as_bytes())
}

#[test]
fn netconf_decoding_and_codes() {
    let c = conf(json!({"subnet": "10.88.0.0/24", "mode": "routed", "uplink": "eth0",
        "gateway": "10.88.0.254", "socket": "/tmp/x.sock", "dns": {"nameservers": ["10.0.0.1"]},
        "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""}],
            "ips": ["10.88.0.9/24"], "mac": "02:00:00:00:00:09"}}))
    .unwrap();
    assert_eq!(c.network.subnet, Some("10.88.0.0/24".parse().unwrap()));
    assert_eq!(c.network.mode, Some(Mode::Routed));
    assert_eq!(c.socket, Path::new("/tmp/x.sock"));
    assert_eq!(c.runtime.port_mappings.len(), 1);
    assert_eq!(c.runtime.mac.as_deref(), Some("02:00:00:00:00:09"));
    let e = env(&[
        ("CNI_COMMAND", "DEL"),
        ("CNI_CONTAINERID", "c"),
        ("CNI_IFNAME", "eth0"),
    ])
    .unwrap();
    assert_eq!(
        c.requested_ips(&e).unwrap(),
        (Some("10.88.0.9".parse().unwrap()), None)
    );
    assert_eq!(conf(json!({})).unwrap().socket, Path::new(DEFAULT_SOCKET));

    let code_of = |b: &[u8]| NetConf::parse(b).unwrap_err().code;
    assert_eq!(code_of(b"{not json"), code::DECODE);
    assert_eq!(code_of(b"[1]"), code::DECODE);
    assert_eq!(code_of(br#"{"name":"a"}"#), code::INVALID_CONFIG);
    assert_eq!(
        code_of(br#"{"cniVersion":"9.9.9","name":"a"}"#),
        code::INCOMPATIBLE_VERSION
    );
    assert_eq!(code_of(br#"{"cniVersion":"1.0.0"}"#), code::INVALID_CONFIG);
    let bad = |v: Value| conf(v).unwrap_err().code;
    assert_eq!(bad(json!({"subnet": "10.88.0.0"})), code::INVALID_CONFIG);
    assert_eq!(bad(json!({"subnet": "fd00::/64"})), code::INVALID_CONFIG);
    assert_eq!(bad(json!({"mode": "overlay"})), code::INVALID_CONFIG);
    assert_eq!(bad(json!({"type": "bridge"})), code::INVALID_CONFIG);
    assert_eq!(bad(json!({"gateway": "x"})), code::INVALID_CONFIG);
    assert_eq!(bad(json!({"subnet": 5})), code::DECODE);
    assert_eq!(
        bad(json!({"ipam": {"type": "host-local"}})),
        code::UNSUPPORTED_FIELD
    );
    assert_eq!(
        bad(json!({"runtimeConfig": {"portMappings": [{"hostPort": "x"}]}})),
        code::DECODE
    );
}

#[test]
fn no_masquerade_destinations_parse_sorted_and_checked() {
    let c =
        conf(json!({"noMasquerade": ["10.245.0.0/16", "10.244.0.0/16", "10.244.0.0/16"]})).unwrap();
    assert_eq!(
        c.network.no_masquerade,
        Some(vec![
            "10.244.0.0/16".parse().unwrap(),
            "10.245.0.0/16".parse().unwrap()
        ])
    );
    assert_eq!(conf(json!({})).unwrap().network.no_masquerade, None);
    // Both families, IPv4 first.
    let c = conf(json!({"noMasquerade": ["fd44::/48", "10.244.0.0/16"]})).unwrap();
    assert_eq!(
        c.network.no_masquerade,
        Some(vec![
            "10.244.0.0/16".parse().unwrap(),
            "fd44::/48".parse().unwrap()
        ])
    );
    let e = conf(json!({"noMasquerade": ["10.244.0.0"]})).unwrap_err();
    assert_eq!(e.code, code::INVALID_CONFIG);
    assert!(e.msg.contains("invalid noMasquerade entry"), "{}", e.msg);
    let e = conf(json!({"noMasquerade": "10.244.0.0/16"})).unwrap_err();
    assert_eq!(e.code, code::DECODE);
}

#[test]
fn a_policy_and_a_profile_parse_into_the_create_request_and_hold_an_existing_network() {
    let c = conf(json!({"subnet": "10.88.0.0/24", "profile": "untrusted",
        "policy": {"egress_allow": ["10.88.0.0/16"], "host_access": "53/udp"}}))
    .unwrap();
    let req = c.network.create("n").expect("a request");
    assert_eq!(req.profile, Some(crate::model::Profile::Untrusted));
    assert_eq!(req.policy.host_access.to_string(), "53/udp");
    for (bad, code) in [
        (json!({"profile": "lax"}), code::DECODE),
        (json!({"policy": {"isolated": true}}), code::DECODE),
        (
            json!({"policy": {"egress_deny": ["10.0.0.0/33"]}}),
            code::DECODE,
        ),
    ] {
        assert_eq!(conf(bad.clone()).unwrap_err().code, code, "{bad}");
    }
    // An existing network is held to the sum of the two.
    let mut network = network(Mode::Bridge, None);
    let e = c.network.held_to(&network).unwrap_err();
    assert!(e.msg.contains("with policy -"), "{}", e.msg);
    network.policy = crate::model::Profile::Untrusted.apply(req.policy.clone());
    c.network.held_to(&network).expect("the same policy");
    // Neither given: whatever the network's policy.
    conf(json!({"subnet": "10.88.0.0/24"}))
        .unwrap()
        .network
        .held_to(&network)
        .unwrap();
}

#[test]
fn requested_addresses() {
    let e = |a: &str| {
        env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", a),
        ])
        .unwrap()
    };
    let v4 = |a: &str| Some(a.parse::<Ipv4Addr>().unwrap());
    let c = conf(json!({"args": {"cni": {"ips": ["10.88.0.7"]}}})).unwrap();
    assert_eq!(c.requested_ips(&e("")).unwrap(), (v4("10.88.0.7"), None));
    // The same address from two sources is one request.
    assert_eq!(
        c.requested_ips(&e("IP=10.88.0.7")).unwrap(),
        (v4("10.88.0.7"), None)
    );
    assert_eq!(
        c.requested_ips(&e("IP=10.88.0.8")).unwrap_err().code,
        code::INVALID_CONFIG
    );
    let c = conf(json!({})).unwrap();
    assert_eq!(
        c.requested_ips(&e("IP=10.88.0.3")).unwrap(),
        (v4("10.88.0.3"), None)
    );
    let bad = c.requested_ips(&e("IP=10.88.0.300")).unwrap_err();
    assert_eq!(bad.code, code::INVALID_CONFIG);
    assert!(bad.msg.contains("is not an IP address"), "{}", bad.msg);
    assert_eq!(
        c.requested_mac(&e("MAC=02:00:00:00:00:01"))
            .unwrap()
            .map(|m| m.to_string())
            .as_deref(),
        Some("02:00:00:00:00:01")
    );
    let bad = c.requested_mac(&e("MAC=01:00:00:00:00:01")).unwrap_err();
    assert_eq!(bad.code, code::INVALID_CONFIG);
    assert!(bad.msg.contains("unicast"), "{}", bad.msg);
}

#[test]
fn port_mappings_become_docker_specs() {
    let m = |v: Value| serde_json::from_value::<PortMapping>(v).unwrap().spec();
    assert_eq!(
        m(json!({"hostPort": 18080, "containerPort": 80, "protocol": "tcp", "hostIP": ""}))
            .unwrap(),
        "18080:80/tcp"
    );
    assert_eq!(
        m(json!({"hostPort": 53, "containerPort": 5353, "protocol": "UDP", "hostIP": "127.0.0.1"}))
            .unwrap(),
        "127.0.0.1:53:5353/udp"
    );
    assert_eq!(
        m(json!({"hostPort": 1, "containerPort": 2})).unwrap(),
        "1:2/tcp"
    );
    assert_eq!(
        m(json!({"hostPort": 1, "containerPort": 2, "hostIP": "::"})).unwrap(),
        "[::]:1:2/tcp"
    );
    assert_eq!(
        m(json!({"hostPort": 1, "containerPort": 2, "protocol": "sctp"}))
            .unwrap_err()
            .code,
        code::INVALID_CONFIG
    );
    for spec in [
        "18080:80/tcp",
        "127.0.0.1:53:5353/udp",
        "1:2/tcp",
        "[::]:1:2/tcp",
    ] {
        spec.parse::<crate::portspec::PortSpec>().unwrap();
    }
}

/// Network `web`, 10.88.0.0/24 in `mode`, with IPv6 subnet `subnet6` if given (its
/// gateway the first address).
pub(super) fn network(mode: Mode, subnet6: Option<&str>) -> Network {
    let subnet6: Option<Ipv6Net> = subnet6.map(|s| s.parse().unwrap());
    Network {
        id: 1,
        name: "web".into(),
        subnet: Some("10.88.0.0/24".parse().unwrap()),
        gateway: Some("10.88.0.1".parse().unwrap()),
        subnet6,
        gateway6: subnet6.map(|s| (u128::from(s.network()) + 1).into()),
        mode,
        uplink: Some("eth0".into()),
        mtu: 1500,
        bridge: (mode == Mode::Bridge).then(|| "np-web".into()),
        no_masquerade: Vec::new(),
        policy: Default::default(),
    }
}

/// A ready container endpoint of `network`: 10.88.0.2 (and `ip6`, if given).
pub(super) fn endpoint(network: &Network, ip6: Option<&str>) -> Endpoint {
    let ip6: Option<Ipv6Addr> = ip6.map(|a| a.parse().unwrap());
    Endpoint {
        id: "0123456789ab".into(),
        network: network.name.clone(),
        kind: EndpointKind::Veth,
        state: EndpointState::Ready,
        ip: Some("10.88.0.2".parse().unwrap()),
        ip6,
        gateway6: ip6.and(network.gateway6),
        prefix_len: match network.mode {
            Mode::Bridge => network.subnet.expect("an IPv4 network").prefix_len(),
            Mode::Routed => 32,
        },
        mac: "02:00:00:00:00:02".parse().unwrap(),
        gateway: network.gateway,
        host_ifname: "np-0123456789ab".into(),
        details: EndpointDetails {
            ifname: Some("eth0".into()),
            netns: Some("/run/netns/x".into()),
            container_id: Some("c1".into()),
            ..EndpointDetails::default()
        },
    }
}

#[test]
fn results_follow_the_version() {
    let net = network(Mode::Bridge, None);
    let ep = endpoint(&net, None);
    let c = conf(json!({"dns": {"nameservers": ["10.88.0.1"]}})).unwrap();
    let r = result(&c, &net, &ep, Path::new("/run/netns/x"));
    assert_eq!(r["cniVersion"], "1.0.0");
    assert_eq!(
        r["interfaces"][1],
        json!({"name": "eth0", "mac": "02:00:00:00:00:02", "sandbox": "/run/netns/x"})
    );
    assert_eq!(r["interfaces"][0]["name"], "np-0123456789ab");
    assert_eq!(
        r["ips"],
        json!([{"address": "10.88.0.2/24", "gateway": "10.88.0.1", "interface": 1}])
    );
    assert_eq!(
        r["routes"],
        json!([{"dst": "0.0.0.0/0", "gw": "10.88.0.1"}])
    );
    assert_eq!(r["dns"], json!({"nameservers": ["10.88.0.1"]}));
    let c = NetConf::parse(br#"{"cniVersion":"0.4.0","name":"web"}"#).unwrap();
    assert_eq!(
        result(&c, &net, &ep, Path::new("/x"))["ips"][0]["version"],
        "4"
    );
}

#[test]
fn errors_have_the_spec_shape() {
    let e = CniError::new(code::INVALID_CONFIG, "bad").details("why");
    assert_eq!(
        e.to_json("1.1.0"),
        json!({"cniVersion": "1.1.0", "code": 7, "msg": "bad", "details": "why"})
    );
    assert_eq!(version_of(br#"{"cniVersion":"0.4.0"}"#), "0.4.0");
    assert_eq!(version_of(br#"{"cniVersion":"7.0.0"}"#), CNI_VERSION);
    assert_eq!(version_of(b"nope"), CNI_VERSION);
    let down = CniError::from_client(
        ClientError::DaemonDown {
            socket: "/x.sock".into(),
        },
        code::TRY_AGAIN_LATER,
    );
    assert_eq!(down.code, code::TRY_AGAIN_LATER);
    assert!(down.msg.contains("netpath daemon"), "{}", down.msg);
    assert!(at_least("1.1.0", "1.0.0") && !at_least("0.3.1", "0.4.0"));
}

#[test]
fn old_endpoint_records_load_without_container_id() {
    let old = r#"{"id":"0123456789ab","network":"web","kind":"veth","state":"ready","ip":"10.88.0.2","prefix_len":24,"mac":"02:00:00:00:00:02","gateway":"10.88.0.1","host_ifname":"np-0123456789ab","ifname":"eth0","netns":"/run/netns/x","uid":null,"gid":null,"queues":null}"#;
    let ep: Endpoint = serde_json::from_str(old).unwrap();
    assert_eq!(ep.details.container_id, None);
    assert!(!serde_json::to_string(&ep).unwrap().contains("container_id"));
}

#[tokio::test]
async fn daemon_down_is_try_again_later() {
    let stdin = br#"{"cniVersion":"1.1.0","name":"web","type":"netpath-cni","subnet":"10.88.0.0/24","socket":"/nonexistent/netpath.sock"}"#;
    let vars = |cmd: &'static str| {
        move |k: &str| match k {
            "CNI_COMMAND" => Some(cmd.to_owned()),
            "CNI_CONTAINERID" => Some("c1".to_owned()),
            "CNI_IFNAME" => Some("eth0".to_owned()),
            "CNI_NETNS" => Some("/proc/self/ns/net".to_owned()),
            _ => None,
        }
    };
    for (cmd, want) in [
        ("ADD", 11),
        ("DEL", 11),
        ("CHECK", 11),
        ("GC", 7),
        ("STATUS", 50),
    ] {
        let out = run(vars(cmd), stdin).await;
        assert_eq!(out.exit_code, 1, "{cmd}");
        let v: Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(v["code"], want, "{cmd}: {v}");
        assert_eq!(v["cniVersion"], "1.1.0");
    }
    let out = run(vars("VERSION"), b"").await;
    assert_eq!(out.exit_code, 0);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        v["supportedVersions"].as_array().unwrap().len(),
        SUPPORTED_VERSIONS.len()
    );
}
