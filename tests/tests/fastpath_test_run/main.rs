//! BPF_PROG_TEST_RUN of the endpoint fast path: known destination → redirect with the
//! right MACs and target; unknown → pass; spoofed IP/MAC/ARP and other network → drop
//! with the right reason; ARP, broadcast, IPv6 → pass untouched. IPv6's fast path and
//! guard: [`ipv6`]. Network policy (isolate, internal): [`policy`].

mod ipv6;
mod policy;

use netpath::datapath::Datapath;
use netpath_common::{
    maps::{
        DropReason, ENDPOINT_FLAG_IPV6, ENDPOINT_FLAG_NO_IPV4, ENDPOINT_FLAG_PUBLISHED,
        ENDPOINT_KIND_TAP, ENDPOINT_KIND_VETH, EndpointCounters, EndpointValue,
    },
    nat::{NatTarget, PublishKey},
};
use netpath_tests::{TempPins, TestDev, frames, require_root, tc_test_run};

const TC_ACT_UNSPEC: u32 = u32::MAX;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;

/// An endpoint with `ip` behind `dev` (dual-stack with `dual`).
fn endpoint(
    ip: [u8; 4],
    dual: bool,
    dev: &TestDev,
    mac: [u8; 6],
    net: u16,
    kind: u8,
) -> EndpointValue {
    EndpointValue {
        ip,
        ifindex: dev.ifindex,
        mac,
        host_mac: [0x02, 0xee, 0, 0, 0, net as u8],
        network_id: net,
        kind,
        flags: if dual { ENDPOINT_FLAG_IPV6 } else { 0 },
    }
}

/// A test IPv6 address in network `net`'s subnet (fd00:2NN::/64), host part `host`.
fn ip6(net: u8, host: u8) -> [u8; 16] {
    let mut a = [0xfd, 0, 0x02, net, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    a[15] = host;
    a
}

struct Setup {
    _pins: TempPins,
    dp: Datapath,
    /// Each endpoint: its device, its value and its IPv6 address (all zero: none).
    a: Ep,
    b: Ep,
    /// A second veth endpoint of network 1 with IPv6 (b has none).
    c: Ep,
    t: Ep,
    other: Ep,
}

type Ep = (TestDev, EndpointValue, [u8; 16]);

fn setup() -> Setup {
    let pins = TempPins::new();
    let mut dp = Datapath::open(&pins.path, false).expect("load datapath");
    let mk = |(ip, ip6): ([u8; 4], [u8; 16]), mac, net, kind| {
        let d = TestDev::new("ft");
        let e = endpoint(ip, ip6 != [0; 16], &d, mac, net, kind);
        (d, e, ip6)
    };
    // a and b: the frames module's SRC/DST addresses and MACs, network 1; a is
    // dual-stack (SRC_IP6), b is not; c, t (a TAP) and other (network 2) are.
    let a = mk(
        (frames::SRC_IP, frames::SRC_IP6),
        frames::SRC_MAC,
        1,
        ENDPOINT_KIND_VETH,
    );
    let b = mk(
        (frames::DST_IP, [0; 16]),
        [0x02, 0, 0, 0, 0, 0x0b],
        1,
        ENDPOINT_KIND_VETH,
    );
    let c = mk(
        ([10, 200, 0, 6], ip6(0, 6)),
        [0x02, 0, 0, 0, 0, 0x0e],
        1,
        ENDPOINT_KIND_VETH,
    );
    let t = mk(
        ([10, 200, 0, 4], ip6(0, 4)),
        [0x02, 0, 0, 0, 0, 0x0c],
        1,
        ENDPOINT_KIND_TAP,
    );
    let other = mk(
        ([10, 201, 0, 5], ip6(1, 5)),
        [0x02, 0, 0, 0, 0, 0x0d],
        2,
        ENDPOINT_KIND_VETH,
    );
    for (_, e, ip6) in [&a, &b, &c, &t, &other] {
        let ip6 = (*ip6 != [0; 16]).then(|| std::net::Ipv6Addr::from(*ip6));
        dp.upsert_endpoint(*e, ip6).expect("register endpoint");
    }
    Setup {
        _pins: pins,
        dp,
        a,
        b,
        c,
        t,
        other,
    }
}

/// Runs `frame` through the tc program as if it arrived on `ingress`; returns the
/// verdict and the output frame.
fn run_tc(dp: &Datapath, ingress: u32, frame: &[u8]) -> (u32, Vec<u8>) {
    tc_test_run(dp.tc_ingress(), ingress, frame)
}

fn counters(dp: &Datapath, ifindex: u32) -> EndpointCounters {
    dp.endpoint_counters(ifindex).expect("endpoint counters")
}

fn with_dst(mut frame: Vec<u8>, ip: [u8; 4]) -> Vec<u8> {
    frame[30..34].copy_from_slice(&ip);
    // Fix the IPv4 header checksum for the new destination.
    frame[24..26].copy_from_slice(&[0, 0]);
    let c = netpath_common::packet::checksum(&frame[14..34]);
    frame[24..26].copy_from_slice(&c.to_be_bytes());
    frame
}

#[test]
fn known_destination_is_redirected_with_the_right_macs() {
    require_root!();
    let s = setup();
    for (name, frame) in [
        ("tcp", frames::tcp(b"x")),
        ("udp", frames::udp(&[1; 20])),
        ("icmp", frames::icmp_echo(&[2; 8])),
    ] {
        let (a_before, b_before) = (
            counters(&s.dp, s.a.0.ifindex),
            counters(&s.dp, s.b.0.ifindex),
        );
        // Sent to a's gateway (routed mode), so it leaves from b's gateway.
        let mut frame = frame;
        frame[..6].copy_from_slice(&s.a.1.host_mac);
        let (verdict, out) = run_tc(&s.dp, s.a.0.ifindex, &frame);
        assert_eq!(verdict, TC_ACT_REDIRECT, "{name}");
        // Whole expected frame: only the Ethernet addresses change.
        let mut expected = frame.clone();
        expected[..6].copy_from_slice(&s.b.1.mac);
        expected[6..12].copy_from_slice(&s.b.1.host_mac);
        assert_eq!(out, expected, "{name}: output frame");
        // The redirect went to b's device: its rx counter moved; a's tx counter moved.
        let (a_after, b_after) = (
            counters(&s.dp, s.a.0.ifindex),
            counters(&s.dp, s.b.0.ifindex),
        );
        assert_eq!(b_after.rx_packets, b_before.rx_packets + 1, "{name}: b rx");
        assert_eq!(b_after.rx_bytes, b_before.rx_bytes + frame.len() as u64);
        assert_eq!(a_after.tx_packets, a_before.tx_packets + 1, "{name}: a tx");
        assert_eq!(a_after.rx_packets, a_before.rx_packets, "{name}: a rx");
    }
    // A frame sent on-link to b (bridge mode: a ARPed b) is bridged: redirected with
    // both MAC addresses as they were.
    let mut on_link = frames::tcp(b"y");
    on_link[..6].copy_from_slice(&s.b.1.mac);
    let before = counters(&s.dp, s.b.0.ifindex);
    let (verdict, out) = run_tc(&s.dp, s.a.0.ifindex, &on_link);
    assert_eq!(verdict, TC_ACT_REDIRECT, "on-link");
    assert_eq!(out, on_link, "on-link frame modified");
    assert_eq!(
        counters(&s.dp, s.b.0.ifindex).rx_packets,
        before.rx_packets + 1
    );
    // A TAP destination is redirected too (bpf_redirect, same rewrite).
    let frame = with_dst(frames::udp(&[3; 16]), s.t.1.ip);
    let before = counters(&s.dp, s.t.0.ifindex);
    let (verdict, out) = run_tc(&s.dp, s.a.0.ifindex, &frame);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(&out[..6], &s.t.1.mac);
    assert_eq!(
        counters(&s.dp, s.t.0.ifindex).rx_packets,
        before.rx_packets + 1
    );
}

#[test]
fn unknown_destination_and_non_ip_pass_untouched() {
    require_root!();
    let s = setup();
    let mut broadcast = with_dst(frames::udp(&[0; 8]), [255, 255, 255, 255]);
    broadcast[..6].copy_from_slice(&[0xff; 6]);
    for (name, frame) in [
        (
            "unknown dst",
            with_dst(frames::udp(&[0; 8]), [10, 200, 9, 9]),
        ),
        ("broadcast", broadcast),
        ("arp", frames::arp_request()),
        ("arp probe (RFC 5227, sender 0.0.0.0)", arp_probe()),
        ("ipv6", frames::ipv6_udp()),
    ] {
        let (verdict, out) = run_tc(&s.dp, s.a.0.ifindex, &frame);
        assert_eq!(verdict, TC_ACT_UNSPEC, "{name}");
        assert_eq!(out, frame, "{name} was modified");
    }
    // A frame arriving on a device that is no endpoint's (like the bridge) passes even
    // with a foreign source.
    let d = TestDev::new("ft");
    let (verdict, _) = run_tc(&s.dp, d.ifindex, &frames::udp(b"z"));
    assert_eq!(verdict, TC_ACT_UNSPEC);
}

/// An ARP probe (RFC 5227): who-has 10.200.0.9, sender IP 0.0.0.0, the endpoint's MAC.
fn arp_probe() -> Vec<u8> {
    let mut f = frames::arp_request();
    f[28..32].copy_from_slice(&[0; 4]);
    f
}

#[test]
fn spoofing_and_isolation_drop_with_the_right_reason() {
    require_root!();
    let s = setup();
    let mut spoofed_mac = frames::udp(b"m");
    spoofed_mac[6..12].copy_from_slice(&[0x02, 9, 9, 9, 9, 9]);
    let mut spoofed_ip = frames::udp(b"i");
    spoofed_ip[26..30].copy_from_slice(&[10, 200, 0, 99]);
    let mut spoofed_arp = frames::arp_request();
    spoofed_arp[28..32].copy_from_slice(&[10, 200, 0, 99]);
    // A probe is no licence to claim another's hardware address.
    let mut spoofed_probe = arp_probe();
    spoofed_probe[22..28].copy_from_slice(&[0x02, 9, 9, 9, 9, 9]);
    let cases = [
        ("spoofed mac", spoofed_mac, DropReason::SpoofedMac),
        ("spoofed ip", spoofed_ip, DropReason::SpoofedIp),
        ("spoofed arp", spoofed_arp, DropReason::SpoofedArp),
        ("spoofed arp probe", spoofed_probe, DropReason::SpoofedArp),
        (
            "other network",
            with_dst(frames::udp(b"o"), s.other.1.ip),
            DropReason::OtherNetwork,
        ),
    ];
    for (name, frame, reason) in cases {
        let before: Vec<_> = DropReason::ALL
            .iter()
            .map(|r| s.dp.drop_counter(*r).unwrap())
            .collect();
        let other_rx = counters(&s.dp, s.other.0.ifindex).rx_packets;
        let (verdict, _) = run_tc(&s.dp, s.a.0.ifindex, &frame);
        assert_eq!(verdict, TC_ACT_SHOT, "{name}");
        for (i, r) in DropReason::ALL.iter().enumerate() {
            let after = s.dp.drop_counter(*r).unwrap();
            let want = before[i].packets + u64::from(*r == reason);
            assert_eq!(after.packets, want, "{name}: drop counter {r:?}");
        }
        assert_eq!(counters(&s.dp, s.other.0.ifindex).rx_packets, other_rx);
    }
    // From b's device, a's addresses are spoofed.
    let (verdict, _) = run_tc(&s.dp, s.b.0.ifindex, &frames::udp(b"b"));
    assert_eq!(verdict, TC_ACT_SHOT);
    // b has no IPv6 (an IPv4-only network's endpoint): its IPv6, with its own MAC, is
    // dropped and counted; a's passes (above, `unknown_destination_and_non_ip_pass_untouched`).
    let mut v6 = frames::ipv6_udp();
    v6[6..12].copy_from_slice(&s.b.1.mac);
    let before =
        s.dp.drop_counter(DropReason::Ipv6NotEnabled)
            .unwrap()
            .packets;
    let (verdict, _) = run_tc(&s.dp, s.b.0.ifindex, &v6);
    assert_eq!(verdict, TC_ACT_SHOT, "IPv6 from an endpoint without it");
    let after =
        s.dp.drop_counter(DropReason::Ipv6NotEnabled)
            .unwrap()
            .packets;
    assert_eq!(after, before + 1, "ipv6_not_enabled counted");
}

#[test]
fn removing_an_endpoint_removes_its_fast_path() {
    require_root!();
    let mut s = setup();
    s.dp.remove_endpoint(Some(std::net::Ipv4Addr::from(s.b.1.ip)), None)
        .unwrap();
    let (verdict, out) = run_tc(&s.dp, s.a.0.ifindex, &frames::udp(b"r"));
    assert_eq!(
        verdict, TC_ACT_UNSPEC,
        "a removed destination must go to the kernel path"
    );
    assert_eq!(out, frames::udp(b"r"));
    assert!(
        s.dp.endpoint_counters(s.b.0.ifindex).is_err(),
        "counters entry left"
    );
    // Removing twice is fine.
    s.dp.remove_endpoint(Some(std::net::Ipv4Addr::from(s.b.1.ip)), None)
        .unwrap();
}

/// Publishing a port to an endpoint marks it (the program then checks its packets for
/// hairpin replies); re-registering keeps the mark; other endpoints stay unmarked.
#[test]
fn publishing_marks_the_endpoint_and_the_mark_survives_re_registration() {
    require_root!();
    let mut s = setup();
    let flags = |dp: &Datapath, ip: [u8; 4]| {
        dp.endpoints()
            .unwrap()
            .into_iter()
            .find(|(a, _)| a.octets() == ip)
            .map(|(_, v)| v.flags)
            .expect("registered")
    };
    assert_eq!(flags(&s.dp, s.b.1.ip), 0);
    let key = PublishKey {
        host_ip: [0; 4],
        port: 8080,
        proto: 6,
        _pad: 0,
    };
    s.dp.publish(key, NatTarget::new(s.b.1.ip, 80)).unwrap();
    assert_eq!(flags(&s.dp, s.b.1.ip), ENDPOINT_FLAG_PUBLISHED);
    // a keeps its own flag (dual-stack), not the mark.
    assert_eq!(flags(&s.dp, s.a.1.ip), ENDPOINT_FLAG_IPV6);
    s.dp.upsert_endpoint(s.b.1, None).unwrap();
    assert_eq!(flags(&s.dp, s.b.1.ip), ENDPOINT_FLAG_PUBLISHED);
    // The program reads the entry by ifindex: a → b still takes the fast path, and so
    // does b → a (b's packets are now looked up as possible hairpin replies; none is).
    let mut to_b = frames::tcp(b"y");
    to_b[..6].copy_from_slice(&s.b.1.mac);
    assert_eq!(run_tc(&s.dp, s.a.0.ifindex, &to_b).0, TC_ACT_REDIRECT);
    let mut to_a = with_dst(frames::udp(&[1; 8]), s.a.1.ip);
    to_a[6..12].copy_from_slice(&s.b.1.mac);
    to_a[26..30].copy_from_slice(&s.b.1.ip);
    let to_a = with_dst(to_a, s.a.1.ip);
    assert_eq!(run_tc(&s.dp, s.b.0.ifindex, &to_a).0, TC_ACT_REDIRECT);
}
