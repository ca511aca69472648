//! Dual-stack configurations: `subnets` and `gateways` (one per family), requested
//! addresses of both families, the result of a dual-stack endpoint in every spec
//! version, an existing network held to its IPv6 settings, IPv6 port mappings.

use super::*;

fn v4net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn v6net(s: &str) -> Ipv6Net {
    s.parse().unwrap()
}

#[test]
fn subnets_and_gateways_take_one_value_per_family() {
    let c = conf(json!({"subnets": ["fd88::/64", "10.88.0.0/24"],
        "gateways": ["fd88::fe", "10.88.0.254"]}))
    .unwrap();
    let n = &c.network;
    assert_eq!(n.subnet, Some(v4net("10.88.0.0/24")));
    assert_eq!(n.subnet6, Some(v6net("fd88::/64")));
    assert_eq!(n.gateway, Some("10.88.0.254".parse().unwrap()));
    assert_eq!(n.gateway6, Some("fd88::fe".parse().unwrap()));
    let req = n.create("web").unwrap();
    assert_eq!(
        (req.subnet, req.subnet6, req.gateway, req.gateway6),
        (
            Some(v4net("10.88.0.0/24")),
            n.subnet6,
            n.gateway,
            n.gateway6
        )
    );
    // One family in `subnets`, and `subnet` as before: IPv4-only.
    for c in [
        json!({"subnets": ["10.88.0.0/24"]}),
        json!({"subnet": "10.88.0.0/24"}),
    ] {
        let n = conf(c.clone()).unwrap().network;
        assert_eq!(
            (n.subnet, n.subnet6),
            (Some(v4net("10.88.0.0/24")), None),
            "{c}"
        );
        assert_eq!(n.create("web").unwrap().subnet6, None, "{c}");
    }
    // The IPv6 family alone: an IPv6-only network.
    let n = conf(json!({"subnets": ["fd88::/64"]})).unwrap().network;
    let req = n.create("web").unwrap();
    assert_eq!((req.subnet, req.subnet6), (None, Some(v6net("fd88::/64"))));
    // An IPv6 gateway beside an IPv4 `subnet` (to hold an existing network to it).
    let n = conf(json!({"subnet": "10.88.0.0/24", "gateways": ["fd88::1"]}))
        .unwrap()
        .network;
    assert_eq!(
        (n.gateway, n.gateway6),
        (None, Some("fd88::1".parse().unwrap()))
    );
}

#[test]
fn per_family_settings_are_refused_with_what_is_wrong() {
    let cases = [
        (
            json!({"subnet": "10.88.0.0/24", "subnets": ["10.88.0.0/24", "fd88::/64"]}),
            "the network configuration has both \"subnet\" and \"subnets\": give one of them",
        ),
        (
            json!({"subnets": ["10.88.0.0/24", "10.89.0.0/24"]}),
            "\"subnets\" has two IPv4 CIDRs (10.88.0.0/24, 10.89.0.0/24): give at most one per address family",
        ),
        (
            json!({"subnets": ["fd88::/64", "10.88.0.0/24", "fd89::/64"]}),
            "\"subnets\" has two IPv6 CIDRs (fd88::/64, fd89::/64)",
        ),
        (
            json!({"subnets": ["10.88.0.0/24", "fd88::"]}),
            "invalid \"subnets\" entry \"fd88::\": expected an IPv4 or IPv6 CIDR",
        ),
        (
            json!({"subnet": "fd88::/64"}),
            "invalid subnet \"fd88::/64\": \"subnet\" takes the IPv4 CIDR; list one CIDR per family in \"subnets\" instead",
        ),
        (
            json!({"gateway": "10.88.0.1", "gateways": ["fd88::1"]}),
            "has both \"gateway\" and \"gateways\"",
        ),
        (
            json!({"gateways": ["fd88::1", "fd88::2"]}),
            "\"gateways\" has two IPv6 addresses (fd88::1, fd88::2)",
        ),
        (
            json!({"gateway": "fd88::1"}),
            "\"gateway\" takes the IPv4 address; list one address per family in \"gateways\"",
        ),
    ];
    for (given, says) in cases {
        let e = conf(given.clone()).unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG, "{given}: {}", e.msg);
        assert!(e.msg.contains(says), "{given}: {}", e.msg);
    }
    let e = conf(json!({"subnets": "10.88.0.0/24"})).unwrap_err();
    assert_eq!(e.code, code::DECODE, "{}", e.msg);
}

#[test]
fn requested_addresses_are_one_per_family() {
    let e = |args: &str| {
        env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_ARGS", args),
        ])
        .unwrap()
    };
    let (a4, a6): (Ipv4Addr, Ipv6Addr) = ("10.88.0.9".parse().unwrap(), "fd88::9".parse().unwrap());
    // Both families, from one source or from several, in either order.
    for (c, args) in [
        (
            json!({"runtimeConfig": {"ips": ["fd88::9/64", "10.88.0.9/24"]}}),
            "",
        ),
        (
            json!({"args": {"cni": {"ips": ["fd88::9"]}}}),
            "IP=10.88.0.9",
        ),
        (json!({}), "IP=10.88.0.9,fd88::9"),
        (
            json!({"runtimeConfig": {"ips": ["fd88::9"]}, "args": {"cni": {"ips": ["fd88::9", "10.88.0.9"]}}}),
            "",
        ),
    ] {
        let got = conf(c.clone()).unwrap().requested_ips(&e(args)).unwrap();
        assert_eq!(got, (Some(a4), Some(a6)), "{c} {args}");
    }
    let only6 = conf(json!({"runtimeConfig": {"ips": ["fd88::9/64"]}})).unwrap();
    assert_eq!(only6.requested_ips(&e("")).unwrap(), (None, Some(a6)));
    // Two of one family: refused, naming both.
    for (c, args, says) in [
        (
            json!({"runtimeConfig": {"ips": ["fd88::9", "10.88.0.9", "fd88::a"]}}),
            "",
            "two IPv6 addresses requested (fd88::9, fd88::a): a netpath endpoint has at most one address per family",
        ),
        (
            json!({"runtimeConfig": {"ips": ["10.88.0.9"]}}),
            "IP=fd88::9,10.88.0.10",
            "two IPv4 addresses requested (10.88.0.9, 10.88.0.10)",
        ),
    ] {
        let err = conf(c.clone())
            .unwrap()
            .requested_ips(&e(args))
            .unwrap_err();
        assert_eq!(err.code, code::INVALID_CONFIG, "{c} {args}");
        assert!(err.msg.contains(says), "{c} {args}: {}", err.msg);
    }
}

#[test]
fn a_dual_stack_result_has_both_families_in_every_version() {
    for (mode, v4, v6) in [
        (Mode::Bridge, "10.88.0.2/24", "fd88::2/64"),
        (Mode::Routed, "10.88.0.2/32", "fd88::2/128"),
    ] {
        let net = network(mode, Some("fd88::/64"));
        let ep = endpoint(&net, Some("fd88::2"));
        for &version in SUPPORTED_VERSIONS {
            let c = NetConf::parse(
                json!({"cniVersion": version, "name": "web"})
                    .to_string()
                    .as_bytes(),
            )
            .unwrap();
            let r = result(&c, &net, &ep, Path::new("/run/netns/x"));
            assert_eq!(r["cniVersion"], version);
            let mut want = json!([
                {"address": v4, "gateway": "10.88.0.1", "interface": 1},
                {"address": v6, "gateway": "fd88::1", "interface": 1},
            ]);
            // `ips[].version` is in the formats before 1.0.0 only.
            if !at_least(version, "1.0.0") {
                want[0]["version"] = json!("4");
                want[1]["version"] = json!("6");
            }
            assert_eq!(r["ips"], want, "{mode:?} {version}");
            assert_eq!(
                r["routes"],
                json!([
                    {"dst": "0.0.0.0/0", "gw": "10.88.0.1"},
                    {"dst": "::/0", "gw": "fd88::1"},
                ]),
                "{mode:?} {version}"
            );
        }
    }
    // An IPv4-only endpoint of a dual-stack network (a record from before IPv6) has
    // one entry.
    let net = network(Mode::Bridge, Some("fd88::/64"));
    let r = result(
        &conf(json!({})).unwrap(),
        &net,
        &endpoint(&net, None),
        Path::new("/x"),
    );
    assert_eq!(r["ips"].as_array().unwrap().len(), 1, "{r}");
}

#[test]
fn an_ipv6_only_result_has_the_ipv6_family_alone() {
    let mut net = network(Mode::Bridge, Some("fd88::/64"));
    let mut ep = endpoint(&net, Some("fd88::2"));
    (net.subnet, net.gateway) = (None, None);
    (ep.ip, ep.gateway) = (None, None);
    let r = result(&conf(json!({})).unwrap(), &net, &ep, Path::new("/x"));
    assert_eq!(
        r["ips"],
        json!([{"address": "fd88::2/64", "gateway": "fd88::1", "interface": 1}]),
        "{r}"
    );
    assert_eq!(
        r["routes"],
        json!([{"dst": "::/0", "gw": "fd88::1"}]),
        "{r}"
    );
}

#[test]
fn an_existing_network_is_held_to_its_ipv6_settings() {
    let dual = network(Mode::Bridge, Some("fd88::/64"));
    let v4only = network(Mode::Bridge, None);
    let held = |c: Value, n: &Network| conf(c).unwrap().network.held_to(n);
    // What matches, or is not said, is fine: `subnet` alone joins a dual-stack network.
    for c in [
        json!({"subnets": ["10.88.0.0/24", "fd88::/64"], "gateways": ["fd88::1"]}),
        json!({"subnet": "10.88.0.0/24"}),
        json!({}),
    ] {
        held(c.clone(), &dual).unwrap_or_else(|e| panic!("{c}: {e:?}"));
    }
    for (c, n, says) in [
        (
            json!({"subnets": ["10.88.0.0/24", "fd89::/64"]}),
            &dual,
            "netpath network \"web\" exists with IPv6 subnet fd88::/64, but the network configuration says fd89::/64",
        ),
        (
            json!({"subnets": ["10.88.0.0/24", "fd88::/64"]}),
            &v4only,
            "netpath network \"web\" exists without an IPv6 subnet, but the network configuration says fd88::/64",
        ),
        (
            json!({"gateways": ["fd88::fe"]}),
            &dual,
            "exists with IPv6 gateway fd88::1, but the network configuration says fd88::fe",
        ),
        (
            json!({"gateways": ["fd88::1"]}),
            &v4only,
            "exists with IPv6 gateway none, but the network configuration says fd88::1",
        ),
    ] {
        let e = held(c.clone(), n).unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG, "{c}");
        assert!(e.msg.contains(says), "{c}: {}", e.msg);
    }
}

#[test]
fn host_addresses_of_both_families_are_published() {
    let m = |host: &str| {
        serde_json::from_value::<PortMapping>(
            json!({"hostPort": 8080, "containerPort": 80, "hostIP": host}),
        )
        .unwrap()
    };
    for (host, address) in [
        ("", HostAddress::Any),
        ("0.0.0.0", HostAddress::V4(Ipv4Addr::UNSPECIFIED)),
        ("192.0.2.7", HostAddress::V4("192.0.2.7".parse().unwrap())),
        ("::", HostAddress::V6(Ipv6Addr::UNSPECIFIED)),
        ("fd00::1", HostAddress::V6("fd00::1".parse().unwrap())),
    ] {
        assert_eq!(m(host).host_address().unwrap(), address, "{host:?}");
    }
    // Each family's every-address mapping and one address, in brackets for IPv6.
    let mappings = [m("0.0.0.0"), m("::"), m("fd00::1")];
    assert_eq!(
        specs(&mappings).unwrap(),
        [
            "0.0.0.0:8080:80/tcp",
            "[::]:8080:80/tcp",
            "[fd00::1]:8080:80/tcp"
        ]
    );
    // An empty hostIP publishes on both families: its per-family twins are left out, a
    // mapping of another port or protocol is not.
    let udp: PortMapping = serde_json::from_value(
        json!({"hostPort": 8080, "containerPort": 80, "hostIP": "::", "protocol": "UDP"}),
    )
    .unwrap();
    let mappings = [m(""), m("::"), m("0.0.0.0"), udp];
    assert_eq!(
        specs(&mappings).unwrap(),
        ["8080:80/tcp", "[::]:8080:80/udp"]
    );
    let e = m("fd00::zz").spec().unwrap_err();
    assert_eq!(e.code, code::INVALID_CONFIG);
    assert!(
        e.msg
            .contains("port mapping 8080:80: hostIP \"fd00::zz\" is not an IP address"),
        "{}",
        e.msg
    );
}
