//! Network policy through the endpoint program, byte by byte: an isolated network's
//! endpoints reach each other in neither family, an internal network's reach their
//! network, their gateway and link scope only, egress rules refuse what their longest
//! match denies — each refusal counted under its own
//! reason, nothing delivered — and a policy turned off (as `network update` does on
//! running endpoints) gives the fast path back.

use netpath_common::{
    maps::{
        DropReason, ENDPOINT_FLAG_EGRESS, ENDPOINT_FLAG_HOST, ENDPOINT_FLAG_INTERNAL,
        ENDPOINT_FLAG_ISOLATED, EndpointValue, NetworkValue,
    },
    policy::{EGRESS_ALLOW, EGRESS_DENY},
};
use netpath_tests::{frames, require_root};

use super::*;

/// Sets network policy `flags` on the endpoints `eps` (value, IPv6 address) of `s`, as
/// the control plane does.
fn set_policy(s: &mut Setup, flags: u8, eps: &[(EndpointValue, [u8; 16])]) {
    for (e, ip6) in eps {
        let ip6 = (*ip6 != [0; 16]).then(|| std::net::Ipv6Addr::from(*ip6));
        s.dp.set_endpoint_policy(Some(e.ip.into()), ip6, flags)
            .expect("set policy");
    }
}

/// Every drop counter's packets, by reason.
fn drops(s: &Setup) -> Vec<u64> {
    DropReason::ALL
        .iter()
        .map(|r| s.dp.drop_counter(*r).expect("drop counter").packets)
        .collect()
}

/// Runs `frame` from a; checks the verdict and that exactly `reason` (if any) counted
/// one drop, and that `to` (if any) received nothing unless the verdict is a redirect.
fn from_a(s: &Setup, name: &str, frame: &[u8], want: u32, reason: Option<DropReason>) {
    let before = drops(s);
    let (verdict, _) = run_tc(&s.dp, s.a.0.ifindex, frame);
    assert_eq!(verdict, want, "{name}");
    let after = drops(s);
    for (i, r) in DropReason::ALL.iter().enumerate() {
        let counted = u64::from(reason == Some(*r));
        assert_eq!(after[i], before[i] + counted, "{name}: drop counter {r:?}");
    }
}

/// a's IPv6 UDP to `dst`.
fn udp6_to(dst: [u8; 16]) -> Vec<u8> {
    frames::udp6(frames::SRC_IP6, 5000, dst, 53, b"policy")
}

#[test]
fn an_isolated_networks_endpoints_do_not_reach_each_other_in_either_family() {
    require_root!();
    let mut s = setup();
    let all = [&s.a, &s.b, &s.c, &s.t].map(|(_, e, ip6)| (*e, *ip6));
    set_policy(&mut s, ENDPOINT_FLAG_ISOLATED, &all);
    let b_rx = counters(&s.dp, s.b.0.ifindex).rx_packets;
    let iso = Some(DropReason::Isolated);
    for (name, frame) in [
        ("tcp to b", frames::tcp(b"x")),
        ("udp to b", frames::udp(&[1; 20])),
        ("icmp to b", frames::icmp_echo(&[2; 8])),
        ("udp to the tap", with_dst(frames::udp(&[3; 8]), s.t.1.ip)),
        ("ipv6 to c", udp6_to(s.c.2)),
    ] {
        from_a(&s, name, &frame, TC_ACT_SHOT, iso);
    }
    assert_eq!(
        counters(&s.dp, s.b.0.ifindex).rx_packets,
        b_rx,
        "b got nothing"
    );
    // What is not another endpoint of the network is as before: the kernel's path, the
    // other network's refusal, forgeries.
    let out = with_dst(frames::udp(&[4; 8]), [198, 51, 100, 1]);
    from_a(&s, "to the world", &out, TC_ACT_UNSPEC, None);
    let other = with_dst(frames::udp(b"o"), s.other.1.ip);
    from_a(
        &s,
        "other network",
        &other,
        TC_ACT_SHOT,
        Some(DropReason::OtherNetwork),
    );
    let mut spoofed = frames::udp(b"i");
    spoofed[26..30].copy_from_slice(&[10, 200, 0, 99]);
    from_a(
        &s,
        "spoofed",
        &spoofed,
        TC_ACT_SHOT,
        Some(DropReason::SpoofedIp),
    );
    // Turned off on the running endpoints: the fast path is back.
    set_policy(&mut s, 0, &all);
    from_a(
        &s,
        "udp to b, open",
        &frames::udp(&[1; 20]),
        TC_ACT_REDIRECT,
        None,
    );
    from_a(
        &s,
        "ipv6 to c, open",
        &udp6_to(s.c.2),
        TC_ACT_REDIRECT,
        None,
    );
}

#[test]
fn an_internal_networks_endpoints_reach_their_network_gateway_and_link_scope_only() {
    require_root!();
    let mut s = setup();
    let ac = [&s.a, &s.c].map(|(_, e, ip6)| (*e, *ip6));
    set_policy(&mut s, ENDPOINT_FLAG_INTERNAL, &ac);
    let gateway = [10, 200, 0, 1];
    let mut gateway6 = frames::SRC_IP6;
    gateway6[15] = 1;
    let net = NetworkValue { gateway, gateway6 };
    s.dp.set_network(1, Some(net)).expect("network entry");
    let internal = Some(DropReason::Internal);
    let v4 = |dst| with_dst(frames::udp(&[5; 8]), dst);
    let mut link_local = [0u8; 16];
    link_local[..2].copy_from_slice(&[0xfe, 0x80]);
    link_local[15] = 1;
    let mut public6 = [0u8; 16];
    public6[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    public6[15] = 1;
    for (name, frame, want, reason) in [
        ("to b", frames::udp(&[1; 8]), TC_ACT_REDIRECT, None),
        ("ipv6 to c", udp6_to(s.c.2), TC_ACT_REDIRECT, None),
        ("to the gateway", v4(gateway), TC_ACT_UNSPEC, None),
        ("broadcast", v4([255; 4]), TC_ACT_UNSPEC, None),
        (
            "to the ipv6 gateway",
            udp6_to(gateway6),
            TC_ACT_UNSPEC,
            None,
        ),
        ("to link-local", udp6_to(link_local), TC_ACT_UNSPEC, None),
        ("to the world", v4([198, 51, 100, 1]), TC_ACT_SHOT, internal),
        (
            "to another host address",
            v4([10, 200, 9, 9]),
            TC_ACT_SHOT,
            internal,
        ),
        ("ipv6 to the world", udp6_to(public6), TC_ACT_SHOT, internal),
        (
            "other network",
            v4(s.other.1.ip),
            TC_ACT_SHOT,
            Some(DropReason::OtherNetwork),
        ),
    ] {
        from_a(&s, name, &frame, want, reason);
    }
    // Without its entry no gateway is known: nothing outside the network's endpoints.
    s.dp.set_network(1, None).expect("no entry");
    from_a(&s, "gateway, no entry", &v4(gateway), TC_ACT_SHOT, internal);
    from_a(
        &s,
        "ipv6 gateway, no entry",
        &udp6_to(gateway6),
        TC_ACT_SHOT,
        internal,
    );
    // Not internal any more: the world is the kernel's path again.
    set_policy(&mut s, 0, &ac);
    from_a(
        &s,
        "to the world, open",
        &v4([198, 51, 100, 1]),
        TC_ACT_UNSPEC,
        None,
    );
    from_a(
        &s,
        "ipv6 to the world, open",
        &udp6_to(public6),
        TC_ACT_UNSPEC,
        None,
    );
}

#[test]
fn egress_rules_refuse_what_the_longest_match_denies_but_no_host_address() {
    require_root!();
    let mut s = setup();
    let ac = [&s.a, &s.c].map(|(_, e, ip6)| (*e, *ip6));
    set_policy(&mut s, ENDPOINT_FLAG_EGRESS, &ac);
    let net = |c: &str| c.parse::<ipnet::IpNet>().unwrap();
    let rules = [
        (net("198.51.100.0/24"), EGRESS_DENY),
        (net("198.51.100.7/32"), EGRESS_ALLOW),
        (net("2001:db8::/32"), EGRESS_DENY),
    ];
    s.dp.set_egress(1, &rules).expect("egress rules");
    // A host address inside a denied prefix: host access's business, not egress's.
    let host = [198, 51, 100, 9];
    s.dp.set_local_addrs(&[std::net::IpAddr::from(host)])
        .expect("host addresses");
    let denied = Some(DropReason::EgressDenied);
    let v4 = |dst| with_dst(frames::udp(&[6; 8]), dst);
    let mut public6 = [0u8; 16];
    public6[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    public6[15] = 1;
    let mut other6 = public6;
    other6[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb9]);
    for (name, frame, want, reason) in [
        ("denied", v4([198, 51, 100, 1]), TC_ACT_SHOT, denied),
        (
            "the allowed hole",
            v4([198, 51, 100, 7]),
            TC_ACT_UNSPEC,
            None,
        ),
        ("no rule", v4([203, 0, 113, 1]), TC_ACT_UNSPEC, None),
        ("a host address", v4(host), TC_ACT_UNSPEC, None),
        ("to b", frames::udp(&[1; 8]), TC_ACT_REDIRECT, None),
        ("ipv6 denied", udp6_to(public6), TC_ACT_SHOT, denied),
        ("ipv6, no rule", udp6_to(other6), TC_ACT_UNSPEC, None),
        ("ipv6 to c", udp6_to(s.c.2), TC_ACT_REDIRECT, None),
    ] {
        from_a(&s, name, &frame, want, reason);
    }
    // Another network's rules are not a's: network 2 denies everything, a is unmoved.
    s.dp.set_egress(2, &[(net("0.0.0.0/0"), EGRESS_DENY)])
        .expect("network 2's rules");
    from_a(
        &s,
        "no rule of its own",
        &v4([203, 0, 113, 1]),
        TC_ACT_UNSPEC,
        None,
    );
    // Rules removed: nothing denied.
    s.dp.set_egress(1, &[]).expect("no rules");
    from_a(
        &s,
        "rules gone",
        &v4([198, 51, 100, 1]),
        TC_ACT_UNSPEC,
        None,
    );
}

#[test]
fn restricted_host_access_refuses_what_opens_something_on_a_host_address() {
    require_root!();
    let mut s = setup();
    let ac = [&s.a, &s.c].map(|(_, e, ip6)| (*e, *ip6));
    set_policy(&mut s, ENDPOINT_FLAG_HOST, &ac);
    let host = [198, 51, 100, 9];
    let mut host6 = frames::SRC_IP6;
    host6[15] = 0x99;
    let addrs = [std::net::IpAddr::from(host), std::net::IpAddr::from(host6)];
    s.dp.set_local_addrs(&addrs).expect("host addresses");
    // DNS over UDP allowed, nothing else.
    s.dp.set_host_access(1, &[(17, 53)]).expect("host ports");
    let src = frames::SRC_IP;
    let refused = Some(DropReason::HostDenied);
    let syn = |port| frames::tcp4_flags(src, 40000, host, port, frames::TCP_SYN, b"");
    let ack = frames::tcp4_flags(src, 40000, host, 22, frames::TCP_ACK, b"");
    let udp = |port| frames::udp4(src, 40000, host, port, b"q", false);
    let ns6 = frames::icmp6(frames::SRC_IP6, host6, 135, &[0; 20]);
    for (name, frame, want, reason) in [
        ("dns", udp(53), TC_ACT_UNSPEC, None),
        ("udp 54", udp(54), TC_ACT_SHOT, refused),
        ("ssh syn", syn(22), TC_ACT_SHOT, refused),
        (
            "tcp 53 syn (only udp is allowed)",
            syn(53),
            TC_ACT_SHOT,
            refused,
        ),
        ("a segment opening nothing", ack, TC_ACT_UNSPEC, None),
        (
            "ping",
            frames::icmp4(src, host, 8, 7, b"p"),
            TC_ACT_SHOT,
            refused,
        ),
        (
            "an ICMP error",
            frames::icmp4(src, host, 3, 0, b"e"),
            TC_ACT_UNSPEC,
            None,
        ),
        (
            "not a host address",
            frames::udp4(src, 40000, [203, 0, 113, 1], 54, b"q", false),
            TC_ACT_UNSPEC,
            None,
        ),
        ("ipv6 udp 54", udp6_to_port(host6, 54), TC_ACT_SHOT, refused),
        ("ipv6 dns", udp6_to_port(host6, 53), TC_ACT_UNSPEC, None),
        ("neighbour solicitation", ns6, TC_ACT_UNSPEC, None),
    ] {
        from_a(&s, name, &frame, want, reason);
    }
    // Unrestricted again: the flags go, and what was refused passes.
    set_policy(&mut s, 0, &ac);
    from_a(&s, "ssh syn, unrestricted", &syn(22), TC_ACT_UNSPEC, None);
}

/// a's IPv6 UDP to `dst`:`port`.
fn udp6_to_port(dst: [u8; 16], port: u16) -> Vec<u8> {
    frames::udp6(frames::SRC_IP6, 5000, dst, port, b"host")
}
