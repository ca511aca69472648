//! IPv6 through the endpoint program, byte by byte: redirects between dual-stack
//! endpoints (routed and bridged, into a veth peer and out of a TAP), and the guard —
//! each refusal with its own drop reason, nothing delivered — and what it lets through
//! (duplicate address detection, MLD, the endpoint's own neighbour advertisements).

use netpath_common::maps::DropReason;
use netpath_tests::{frames, require_root};

use super::*;

const UDP: u8 = 17;

/// `frame` (IPv6, from a's MAC) with a's and c's roles: from `src` to c's address.
fn from_a(f: impl Fn([u8; 16], [u8; 16]) -> Vec<u8>, s: &Setup) -> Vec<u8> {
    f(frames::SRC_IP6, s.c.2)
}

#[test]
fn ipv6_between_dual_stack_endpoints_is_redirected_with_the_right_macs() {
    require_root!();
    let s = setup();
    let (a, c) = (&s.a.1, &s.c.1);
    for (name, frame) in [
        (
            "udp",
            from_a(|x, y| frames::udp6(x, 5000, y, 53, &[1; 20]), &s),
        ),
        (
            "tcp",
            from_a(|x, y| frames::tcp6(x, 5000, y, 80, b"hello"), &s),
        ),
        (
            "echo",
            from_a(|x, y| frames::icmp6(x, y, 128, &[0, 1, 0, 1]), &s),
        ),
        // From its link-local address, as to a neighbour on the link.
        (
            "udp from link-local",
            frames::udp6(frames::link_local(a.mac), 5000, s.c.2, 53, b"ll"),
        ),
    ] {
        let (a_tx, c_rx) = (
            counters(&s.dp, s.a.0.ifindex).tx_packets,
            counters(&s.dp, s.c.0.ifindex).rx_packets,
        );
        // Routed (to a's gateway): leaves with c's MAC, from c's gateway, the IPv6
        // packet untouched (no hop-limit change between endpoints, as for IPv4).
        let mut routed = frame.clone();
        routed[..6].copy_from_slice(&a.host_mac);
        let (verdict, out) = run_tc(&s.dp, s.a.0.ifindex, &routed);
        assert_eq!(verdict, TC_ACT_REDIRECT, "{name}");
        let mut want = routed.clone();
        want[..6].copy_from_slice(&c.mac);
        want[6..12].copy_from_slice(&c.host_mac);
        assert_eq!(out, want, "{name}: output frame");
        // Bridged (to c's MAC): every byte kept.
        let mut bridged = frame;
        bridged[..6].copy_from_slice(&c.mac);
        let (verdict, out) = run_tc(&s.dp, s.a.0.ifindex, &bridged);
        assert_eq!((verdict, out), (TC_ACT_REDIRECT, bridged), "{name} bridged");
        assert_eq!(
            counters(&s.dp, s.a.0.ifindex).tx_packets,
            a_tx + 2,
            "{name}"
        );
        assert_eq!(
            counters(&s.dp, s.c.0.ifindex).rx_packets,
            c_rx + 2,
            "{name}"
        );
    }
    // Out of a TAP (to a microVM), and from network 1 into network 2: refused.
    let to_tap = frames::udp6(frames::SRC_IP6, 1, s.t.2, 2, b"t");
    assert_eq!(run_tc(&s.dp, s.a.0.ifindex, &to_tap).0, TC_ACT_REDIRECT);
    assert_eq!(counters(&s.dp, s.t.0.ifindex).rx_packets, 1);
}

/// Runs `frame` from a (dual-stack) and checks it is dropped, counted under `reason`
/// alone, and delivered nowhere.
fn refused(s: &Setup, name: &str, frame: &[u8], reason: DropReason) {
    let before: Vec<_> = DropReason::ALL
        .iter()
        .map(|r| s.dp.drop_counter(*r).unwrap().packets)
        .collect();
    let rx: Vec<_> = [&s.b, &s.c, &s.t, &s.other]
        .iter()
        .map(|e| counters(&s.dp, e.0.ifindex).rx_packets)
        .collect();
    let (verdict, _) = run_tc(&s.dp, s.a.0.ifindex, frame);
    assert_eq!(verdict, TC_ACT_SHOT, "{name}");
    for (i, r) in DropReason::ALL.iter().enumerate() {
        let want = before[i] + u64::from(*r == reason);
        let got = s.dp.drop_counter(*r).unwrap().packets;
        assert_eq!(got, want, "{name}: drop counter {r:?}");
    }
    for (i, e) in [&s.b, &s.c, &s.t, &s.other].iter().enumerate() {
        assert_eq!(counters(&s.dp, e.0.ifindex).rx_packets, rx[i], "{name}");
    }
}

#[test]
fn the_guard_refuses_what_an_endpoint_may_not_send_each_with_its_reason() {
    require_root!();
    let s = setup();
    let (a, c) = (&s.a.1, &s.c.1);
    let ll = frames::link_local(a.mac);
    let gateway = ip6(0, 1);
    let foreign_mac = [0x02, 9, 9, 9, 9, 9];
    // A router advertisement: hop limit 255, router lifetime, a prefix would follow.
    let ra = frames::icmp6(
        ll,
        frames::ALL_NODES,
        134,
        &[64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0],
    );
    let redirect = frames::icmp6(ll, s.c.2, 137, &[0; 36]);
    let mut ns_body = vec![0; 4];
    ns_body.extend_from_slice(&s.c.2);
    ns_body.extend_from_slice(&[1, 1]);
    ns_body.extend_from_slice(&foreign_mac);
    let ns_forged_mac = frames::icmp6(ll, s.c.2, 135, &ns_body);
    let dhcp_server = frames::udp6(ll, 547, frames::ALL_NODES, 546, &[2; 16]);
    // Five destination-options headers: one more than the walk takes.
    let mut chain = Vec::new();
    for i in 0..5 {
        chain.extend_from_slice(&[if i < 4 { 60 } else { UDP }, 0, 1, 4, 0, 0, 0, 0]);
    }
    let long_chain = frames::ipv6(60, s.a.2, s.c.2, &chain, &[0; 8]);
    for (name, frame, reason) in [
        (
            "c's source",
            frames::udp6(s.c.2, 1, s.t.2, 2, b"s"),
            DropReason::SpoofedIp,
        ),
        (
            "another link-local source",
            frames::udp6(frames::link_local(c.mac), 1, s.t.2, 2, b"l"),
            DropReason::SpoofedIp,
        ),
        ("router advertisement", ra, DropReason::RouterMessage),
        ("redirect", redirect, DropReason::RouterMessage),
        (
            "advertisement for the gateway",
            frames::neighbor_advert(ll, gateway, a.mac),
            DropReason::SpoofedNd,
        ),
        (
            "advertisement for c",
            frames::neighbor_advert(ll, s.c.2, a.mac),
            DropReason::SpoofedNd,
        ),
        (
            "own address, another MAC",
            frames::neighbor_advert(ll, s.a.2, foreign_mac),
            DropReason::SpoofedNd,
        ),
        (
            "solicitation with another MAC",
            ns_forged_mac,
            DropReason::SpoofedNd,
        ),
        ("dhcpv6 server", dhcp_server, DropReason::DhcpServer),
        (
            "extension chain beyond the bound",
            long_chain,
            DropReason::Ipv6Unparsed,
        ),
        (
            "to another network",
            frames::udp6(s.a.2, 1, s.other.2, 2, b"o"),
            DropReason::OtherNetwork,
        ),
    ] {
        refused(&s, name, &frame, reason);
    }
}

#[test]
fn the_guard_lets_through_what_an_endpoint_needs() {
    require_root!();
    let s = setup();
    let a = &s.a.1;
    let ll = frames::link_local(a.mac);
    // Duplicate address detection: a solicitation from :: to the solicited-node group.
    let mut dad = vec![0; 4];
    dad.extend_from_slice(&s.a.2);
    let solicited = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, s.a.2[15]];
    let mut mld = vec![0, 0, 0, 1, 4, 0, 0, 0];
    mld.extend_from_slice(&solicited);
    let mld2 = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x16];
    for (name, frame) in [
        ("dad", frames::icmp6([0; 16], solicited, 135, &dad)),
        (
            "mld report from ::",
            frames::icmp6([0; 16], mld2, 143, &mld),
        ),
        (
            "own advertisement",
            frames::neighbor_advert(ll, s.a.2, a.mac),
        ),
        (
            "own link-local advertisement",
            frames::neighbor_advert(ll, ll, a.mac),
        ),
        (
            "router solicitation",
            frames::icmp6(
                ll,
                [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
                133,
                &[0; 4],
            ),
        ),
        (
            "dhcpv6 client",
            frames::udp6(
                ll,
                546,
                [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 2],
                547,
                &[1; 8],
            ),
        ),
    ] {
        let (verdict, out) = run_tc(&s.dp, s.a.0.ifindex, &frame);
        assert_eq!(verdict, TC_ACT_UNSPEC, "{name}");
        assert_eq!(out, frame, "{name} modified");
    }
}

#[test]
fn fragments_and_extension_headers_within_the_bound_take_the_fast_path() {
    require_root!();
    let s = setup();
    let c = &s.c.1;
    let udp = frames::udp6(s.a.2, 5000, s.c.2, 53, &[3; 24]);
    let l4 = &udp[54..];
    // A first fragment (offset 0, more), a later one, a hop-by-hop header.
    let first = frames::ipv6(44, s.a.2, s.c.2, &[UDP, 0, 0, 1, 0, 0, 0, 9], l4);
    let later = frames::ipv6(44, s.a.2, s.c.2, &[UDP, 0, 0, 0x18, 0, 0, 0, 9], &[4; 16]);
    let hop = frames::ipv6(0, s.a.2, s.c.2, &[UDP, 0, 1, 4, 0, 0, 0, 0], l4);
    for (name, mut frame) in [
        ("first fragment", first),
        ("later fragment", later),
        ("hop-by-hop", hop),
    ] {
        frame[..6].copy_from_slice(&c.mac);
        let (verdict, out) = run_tc(&s.dp, s.a.0.ifindex, &frame);
        assert_eq!((verdict, out), (TC_ACT_REDIRECT, frame), "{name}");
    }
    // A later fragment with a forged source is refused like any other packet.
    let forged = frames::ipv6(44, s.c.2, s.t.2, &[UDP, 0, 0, 0x18, 0, 0, 0, 9], &[4; 16]);
    refused(&s, "forged later fragment", &forged, DropReason::SpoofedIp);
}

#[test]
fn an_ipv6_only_endpoint_is_redirected_by_ipv6_and_sends_no_ipv4_or_arp() {
    require_root!();
    let mut s = setup();
    // Network 1's IPv6-only endpoint: 0.0.0.0 in its entry, known by its IPv6 address.
    let dev = TestDev::new("ft");
    let mac = [0x02, 0, 0, 0, 0, 0x0f];
    let v6only = EndpointValue {
        ip: [0; 4],
        flags: ENDPOINT_FLAG_IPV6 | ENDPOINT_FLAG_NO_IPV4,
        ..endpoint([0; 4], true, &dev, mac, 1, ENDPOINT_KIND_VETH)
    };
    let own6 = ip6(0, 9);
    s.dp.upsert_endpoint(v6only, Some(own6.into()))
        .expect("register");
    let from_it = |mut f: Vec<u8>| {
        f[6..12].copy_from_slice(&mac);
        f
    };
    // IPv6 to c: redirected, every byte kept (bridged: to c's MAC).
    let mut to_c = from_it(frames::udp6(own6, 5000, s.c.2, 53, b"six"));
    to_c[..6].copy_from_slice(&s.c.1.mac);
    let c_rx = counters(&s.dp, s.c.0.ifindex).rx_packets;
    assert_eq!(
        run_tc(&s.dp, dev.ifindex, &to_c),
        (TC_ACT_REDIRECT, to_c.clone())
    );
    assert_eq!(counters(&s.dp, s.c.0.ifindex).rx_packets, c_rx + 1);
    // IPv4 from 0.0.0.0 (what its entry holds), IPv4 to a, an ARP probe: dropped,
    // each under its reason, nothing delivered.
    let mut probe = from_it(arp_probe());
    probe[22..28].copy_from_slice(&mac);
    for (name, frame, reason) in [
        (
            "a DHCP-like broadcast",
            from_it(frames::udp4([0; 4], 68, [255; 4], 67, b"d", false)),
            DropReason::SpoofedIp,
        ),
        (
            "IPv4 from 0.0.0.0 to a",
            from_it(frames::udp4([0; 4], 1, frames::SRC_IP, 2, b"a", false)),
            DropReason::SpoofedIp,
        ),
        ("an ARP probe", probe, DropReason::SpoofedArp),
    ] {
        let before = s.dp.drop_counter(reason).unwrap().packets;
        let a_rx = counters(&s.dp, s.a.0.ifindex).rx_packets;
        assert_eq!(run_tc(&s.dp, dev.ifindex, &frame).0, TC_ACT_SHOT, "{name}");
        assert_eq!(
            s.dp.drop_counter(reason).unwrap().packets,
            before + 1,
            "{name}"
        );
        assert_eq!(counters(&s.dp, s.a.0.ifindex).rx_packets, a_rx, "{name}");
    }
    // Not in the IPv4 map: 0.0.0.0 is nobody's destination; its counters are listed.
    let to_zero = with_dst(frames::udp(b"z"), [0; 4]);
    assert_eq!(run_tc(&s.dp, s.a.0.ifindex, &to_zero).0, TC_ACT_UNSPEC);
    let stats = s.dp.endpoint_stats().expect("stats");
    let mine = stats
        .iter()
        .find(|e| e.ifindex == dev.ifindex)
        .expect("listed");
    assert_eq!((mine.ip, mine.tx_packets), (None, 4));
    // Removed by its IPv6 address alone: its frames are nobody's now.
    s.dp.remove_endpoint(None, Some(own6.into()))
        .expect("remove");
    assert_eq!(run_tc(&s.dp, dev.ifindex, &to_c).0, TC_ACT_UNSPEC);
    assert!(
        s.dp.endpoint_stats()
            .unwrap()
            .iter()
            .all(|e| e.ifindex != dev.ifindex)
    );
}
