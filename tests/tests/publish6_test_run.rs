//! BPF_PROG_TEST_RUN of IPv6 published ports (DNAT66), byte for byte: a connection to a
//! published port DNATed to the endpoint's IPv6 address on the uplink's ingress (client
//! address kept, hop limit one lower, handed straight to the endpoint), the reply's
//! source restored on the uplink's egress, for TCP and UDP; what must stay untouched (an
//! unpublished port, an IPv4-only publish, a `[::1]` publish, a destination that is not
//! the host's). Every expected frame is built from scratch with its checksum computed
//! over the pseudo-header (`frames::tcp6`/`udp6`) and compared whole.

use std::net::{IpAddr, Ipv6Addr};

use netpath::datapath::Datapath;
use netpath_common::{
    maps::{ENDPOINT_KIND_VETH, EndpointValue, Hook},
    nat::{
        NAT_FLAG_INBOUND, NatTarget, NatTarget6, PublishKey, PublishKey6, Tuple6, Uplink, Uplink6,
    },
    packet::{IPPROTO_TCP, IPPROTO_UDP},
};
use netpath_tests::{TempPins, TestDev, frames, require_root, tc_test_run};

const TC_ACT_UNSPEC: u32 = u32::MAX;
const TC_ACT_REDIRECT: u32 = 7;
const EP: [u8; 4] = [10, 207, 0, 2];
const UPLINK: [u8; 4] = [192, 0, 2, 2];
/// 2001:db8:5:2::2, the endpoint's IPv6 address.
const EP6: [u8; 16] = ip6(0x0002, 2);
/// 2001:db8:5:2::3, an endpoint this test does not register.
const OTHER6: [u8; 16] = ip6(0x0002, 3);
/// 2001:db8:5:1::2, the host's address on the uplink.
const UPLINK6: [u8; 16] = ip6(0x0001, 2);
/// 2001:db8:5:1::1, the client.
const REMOTE6: [u8; 16] = ip6(0x0001, 1);
/// The endpoint's gateway MAC (its host side's).
const GW_MAC: [u8; 6] = [2, 0xee, 0, 0, 0, 1];

/// `2001:db8:5:<subnet>::<host>`.
const fn ip6(subnet: u16, host: u8) -> [u8; 16] {
    let s = subnet.to_be_bytes();
    [
        0x20, 0x01, 0x0d, 0xb8, 0, 5, s[0], s[1], 0, 0, 0, 0, 0, 0, 0, host,
    ]
}

fn run_tc(dp: &Datapath, hook: Hook, ifindex: u32, frame: &[u8]) -> (u32, Vec<u8>) {
    tc_test_run(dp.tc_prog(hook), ifindex, frame)
}

/// Runs `frame` through `hook` on `ifindex` and checks it goes on to the kernel path
/// (`TC_ACT_UNSPEC`) as exactly `want`.
fn passes_as(dp: &Datapath, (hook, ifindex): (Hook, u32), frame: &[u8], want: &[u8], what: &str) {
    let (v, out) = run_tc(dp, hook, ifindex, frame);
    assert_eq!((v, out.as_slice()), (TC_ACT_UNSPEC, want), "{what}");
}

/// A datapath with an uplink, the dual-stack endpoint `EP`/`EP6` on a device of its
/// own, and `UPLINK6` listed as the host's: (pins, datapath, uplink, endpoint device).
fn setup() -> (TempPins, Datapath, TestDev, TestDev) {
    let pins = TempPins::new();
    let mut dp = Datapath::open(&pins.path, false).expect("load datapath");
    let uplink = TestDev::new("p6");
    dp.set_uplink(
        uplink.ifindex,
        Uplink {
            addr: UPLINK,
            first_port: 40000,
            last_port: 40999,
        },
    )
    .unwrap();
    let ep_dev = TestDev::new("p6");
    dp.upsert_endpoint(
        EndpointValue {
            ip: EP,
            ifindex: ep_dev.ifindex,
            mac: frames::SRC_MAC,
            host_mac: GW_MAC,
            network_id: 1,
            kind: ENDPOINT_KIND_VETH,
            flags: 0,
        },
        Some(Ipv6Addr::from(EP6)),
    )
    .unwrap();
    dp.set_local_addrs(&[IpAddr::from(UPLINK), IpAddr::from(UPLINK6)])
        .unwrap();
    (pins, dp, uplink, ep_dev)
}

fn key6(proto: u8, host_ip: [u8; 16], port: u16) -> PublishKey6 {
    PublishKey6::new(proto, host_ip, port)
}

#[test]
fn dnat66_tcp_to_the_endpoint_and_back_keeping_the_client_address() {
    require_root!();
    let (_p, mut dp, up, ep_dev) = setup();
    dp.publish6(key6(IPPROTO_TCP, [0; 16], 8080), NatTarget6::new(EP6, 80))
        .unwrap();

    // Client → [host]:8080: DNAT to [EP6]:80, source kept, straight into the endpoint
    // (its MAC, from its gateway's; hop limit one lower).
    let syn = frames::tcp6(REMOTE6, 50000, UPLINK6, 8080, b"hi");
    let (v, out) = run_tc(&dp, Hook::UplinkIngress, up.ifindex, &syn);
    assert_eq!(v, TC_ACT_REDIRECT);
    assert_eq!(
        out,
        frames::routed6(
            frames::tcp6(REMOTE6, 50000, EP6, 80, b"hi"),
            frames::SRC_MAC,
            GW_MAC
        ),
        "DNAT66 frame"
    );
    let ct = dp
        .dnat_entry6(&Tuple6::new(IPPROTO_TCP, EP6, 80, REMOTE6, 50000))
        .expect("connection tracked");
    assert_eq!((ct.addr, ct.port, ct.flags), (UPLINK6, 8080, 0));

    // Hop limit 1: DNATed, but left to the kernel (which answers "time exceeded").
    passes_as(
        &dp,
        (Hook::UplinkIngress, up.ifindex),
        &frames::with_hop_limit(frames::tcp6(REMOTE6, 50006, UPLINK6, 8080, b"hi"), 1),
        &frames::with_hop_limit(frames::tcp6(REMOTE6, 50006, EP6, 80, b"hi"), 1),
        "hop limit 1",
    );

    // The reply passes the endpoint's device untouched and leaves the uplink from the
    // published address and port.
    let reply = frames::tcp6(EP6, 80, REMOTE6, 50000, b"ok");
    assert_eq!(
        run_tc(&dp, Hook::TcIngress, ep_dev.ifindex, &reply).1,
        reply
    );
    let egress = (Hook::UplinkEgress, up.ifindex);
    let published = frames::tcp6(UPLINK6, 8080, REMOTE6, 50000, b"ok");
    passes_as(&dp, egress, &reply, &published, "reverse DNAT66 frame");
    // A packet of the endpoint's to a client it has no published connection with
    // leaves as it is.
    let other = frames::tcp6(EP6, 80, REMOTE6, 50099, b"x");
    passes_as(&dp, egress, &other, &other, "no published connection");

    // Unpublished: no more DNAT.
    dp.unpublish6(key6(IPPROTO_TCP, [0; 16], 8080)).unwrap();
    let frame = frames::tcp6(REMOTE6, 50004, UPLINK6, 8080, b"x");
    let ingress = (Hook::UplinkIngress, up.ifindex);
    passes_as(&dp, ingress, &frame, &frame, "unpublished");
}

#[test]
fn dnat66_udp_on_one_host_address_and_back() {
    require_root!();
    let (_p, mut dp, up, _ep) = setup();
    // On exactly the uplink's address; to an endpoint this test did not register (the
    // kernel path then delivers it).
    dp.publish6(
        key6(IPPROTO_UDP, UPLINK6, 5353),
        NatTarget6::new(OTHER6, 53),
    )
    .unwrap();
    let (ingress, egress) = (
        (Hook::UplinkIngress, up.ifindex),
        (Hook::UplinkEgress, up.ifindex),
    );
    let q = frames::udp6(REMOTE6, 50001, UPLINK6, 5353, b"query");
    let dnat = frames::udp6(REMOTE6, 50001, OTHER6, 53, b"query");
    passes_as(&dp, ingress, &q, &dnat, "DNAT66 UDP frame");
    let answer = frames::udp6(OTHER6, 53, REMOTE6, 50001, b"answer");
    let published = frames::udp6(UPLINK6, 5353, REMOTE6, 50001, b"answer");
    passes_as(&dp, egress, &answer, &published, "reverse DNAT66 UDP frame");
    // TCP on the same port is not published.
    let frame = frames::tcp6(REMOTE6, 50002, UPLINK6, 5353, b"x");
    passes_as(&dp, ingress, &frame, &frame, "TCP");
}

/// What DNAT66 leaves alone: an unpublished port, a port published on IPv4 only, a port
/// published on `[::1]` (host-local), and a destination that is not the host's (routed
/// through it to a machine behind it) even on a port published on `[::]`.
#[test]
fn dnat66_leaves_other_traffic_untouched() {
    require_root!();
    let (_p, mut dp, up, _ep) = setup();
    dp.publish(
        PublishKey::new(IPPROTO_TCP, [0; 4], 7070),
        NatTarget::new(EP, 70),
    )
    .unwrap();
    let loopback6 = Ipv6Addr::LOCALHOST.octets();
    dp.publish6(key6(IPPROTO_TCP, loopback6, 9090), NatTarget6::new(EP6, 90))
        .unwrap();
    dp.publish6(key6(IPPROTO_TCP, [0; 16], 8080), NatTarget6::new(EP6, 80))
        .unwrap();
    for (what, frame) in [
        (
            "unpublished port",
            frames::tcp6(REMOTE6, 50010, UPLINK6, 8081, b"x"),
        ),
        (
            "IPv4-only publish",
            frames::tcp6(REMOTE6, 50011, UPLINK6, 7070, b"x"),
        ),
        (
            "[::1] publish",
            frames::tcp6(REMOTE6, 50012, UPLINK6, 9090, b"x"),
        ),
        (
            "not the host's address",
            frames::tcp6(REMOTE6, 50013, ip6(0x0099, 7), 8080, b"x"),
        ),
    ] {
        passes_as(&dp, (Hook::UplinkIngress, up.ifindex), &frame, &frame, what);
    }
    // Nothing was recorded for them.
    assert!(
        dp.dnat_entry6(&Tuple6::new(IPPROTO_TCP, EP6, 90, REMOTE6, 50012))
            .is_none()
    );
    // And the IPv4 publish still answers IPv4.
    let (v, out) = run_tc(
        &dp,
        Hook::UplinkIngress,
        up.ifindex,
        &frames::tcp4([192, 0, 2, 1], 50014, UPLINK, 7070, b"x"),
    );
    assert_eq!(v, TC_ACT_REDIRECT);
    assert_eq!(
        out,
        frames::routed(
            frames::tcp4([192, 0, 2, 1], 50014, EP, 70, b"x"),
            frames::SRC_MAC,
            GW_MAC
        )
    );
}

/// A connection routed in to the endpoint's own IPv6 address (no publish involved) is
/// recorded on the uplink's ingress with itself as the front (`NAT_FLAG_INBOUND`), and
/// its replies leave the uplink untouched although the endpoint's subnet is NAT66ed;
/// the endpoint's own new connections still are. Nothing is recorded for a destination
/// that is no endpoint.
#[test]
fn a_connection_routed_in_keeps_its_replies_unmasqueraded() {
    require_root!();
    let (_p, mut dp, up, _ep) = setup();
    dp.set_uplink6(
        up.ifindex,
        Some(Uplink6 {
            addr: UPLINK6,
            first_port: 40000,
            last_port: 40999,
        }),
    )
    .unwrap();
    dp.add_masq_subnet6("2001:db8:5:2::/64".parse().unwrap(), 1)
        .unwrap();
    let (ingress, egress) = (
        (Hook::UplinkIngress, up.ifindex),
        (Hook::UplinkEgress, up.ifindex),
    );
    let syn = frames::tcp6(REMOTE6, 50020, EP6, 22, b"in");
    passes_as(&dp, ingress, &syn, &syn, "routed in: untouched");
    let ct = dp
        .dnat_entry6(&Tuple6::new(IPPROTO_TCP, EP6, 22, REMOTE6, 50020))
        .expect("connection routed in recorded");
    assert_eq!((ct.addr, ct.port, ct.flags), (EP6, 22, NAT_FLAG_INBOUND));
    let reply = frames::tcp6(EP6, 22, REMOTE6, 50020, b"ok");
    passes_as(
        &dp,
        egress,
        &reply,
        &reply,
        "reply of a connection routed in",
    );
    assert!(
        dp.snat6_entry(&Tuple6::new(IPPROTO_TCP, EP6, 22, REMOTE6, 50020))
            .is_none(),
        "the reply was NAT66ed"
    );
    // The endpoint's own connection out is NAT66ed (to the uplink's address).
    let own = frames::tcp6(EP6, 33000, REMOTE6, 443, b"out");
    let (v, out) = run_tc(&dp, egress.0, egress.1, &own);
    assert_eq!(v, TC_ACT_UNSPEC);
    assert_eq!(&out[22..38], &UPLINK6[..], "source NAT66ed: {out:02x?}");
    // Routed to an address that is no endpoint: nothing recorded.
    let by = frames::tcp6(REMOTE6, 50021, OTHER6, 22, b"in");
    passes_as(&dp, ingress, &by, &by, "routed through");
    assert!(
        dp.dnat_entry6(&Tuple6::new(IPPROTO_TCP, OTHER6, 22, REMOTE6, 50021))
            .is_none()
    );
}
