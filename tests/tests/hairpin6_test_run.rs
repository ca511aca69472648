//! BPF_PROG_TEST_RUN of hairpin over IPv6 (DNAT66 on an endpoint's own device), byte for
//! byte, in a namespace of the test's own (hairpin asks its FIB whether a destination is
//! a host address): dual-stack endpoints A and B, `fd5d::1` the host's address, TCP
//! `[::]:8080` and UDP `[fd5d::1]:5353` published to B.
//! - A → `[fd5d::1]:8080`: DNATed to B's address and port, A's source kept, handed
//!   straight to B (its MACs), the connection tracked; B's reply gets the published
//!   address and port back and goes straight to A;
//! - B → its own published port: also SNATed to the host address (tracked as "self"),
//!   and its reply comes back to it from the published address and port;
//! - UDP likewise, on a publish for exactly the host address;
//! - untouched: a destination that is not the host's, an unpublished port, a link-local
//!   source (the FIB calls anything link-local "not forwarded"); a spoofed source is
//!   dropped before any of it, and nothing is tracked for them; a packet of B's to A
//!   that is no reply takes the fast path as it is.
//!
//! Every expected frame is built from scratch (`frames::tcp6`/`udp6`, checksums over the
//! pseudo-header) and compared whole.

use std::net::Ipv6Addr;

use netpath::datapath::Datapath;
use netpath_common::{
    ipv6::link_local,
    maps::{ENDPOINT_FLAG_IPV6, ENDPOINT_KIND_VETH, EndpointValue, Hook},
    nat::{NAT_FLAG_SELF, NatTarget6, PublishKey6, Tuple6},
    packet::{IPPROTO_TCP, IPPROTO_UDP},
};
use netpath_tests::{NetNs, TempPins, frames, require_root, tc_test_run};

const TC_ACT_UNSPEC: u32 = u32::MAX;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;

/// `fd5d::<host>` (the host's), `fd5d:0:0:1::<host>` (the endpoints' network).
const fn ip6(subnet: u8, host: u8) -> [u8; 16] {
    [0xfd, 0x5d, 0, 0, 0, 0, 0, subnet, 0, 0, 0, 0, 0, 0, 0, host]
}
const HOST6: [u8; 16] = ip6(0, 1);
const A6: [u8; 16] = ip6(1, 2);
const B6: [u8; 16] = ip6(1, 3);
/// An address of the endpoints' network no endpoint has.
const OTHER6: [u8; 16] = ip6(1, 9);
/// Not the host's: routed elsewhere.
const FAR6: [u8; 16] = [0xfd, 0x5d, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
const MAC_A: [u8; 6] = [0x02, 0x5d, 0, 0, 0, 0x0a];
const MAC_B: [u8; 6] = [0x02, 0x5d, 0, 0, 0, 0x0b];
const GW_A: [u8; 6] = [0x02, 0xee, 0x5d, 0, 0, 0x0a];
const GW_B: [u8; 6] = [0x02, 0xee, 0x5d, 0, 0, 0x0b];

/// `frame` as sent by an endpoint with MAC `mac` (to its gateway).
fn from(mac: [u8; 6], gw: [u8; 6], mut frame: Vec<u8>) -> Vec<u8> {
    frame[..6].copy_from_slice(&gw);
    frame[6..12].copy_from_slice(&mac);
    frame
}

/// `frame` as handed straight to an endpoint: to its MAC, from its gateway's; the hop
/// limit unchanged (endpoint to endpoint, as the fast path does).
fn to(mac: [u8; 6], gw: [u8; 6], mut frame: Vec<u8>) -> Vec<u8> {
    frame[..6].copy_from_slice(&mac);
    frame[6..12].copy_from_slice(&gw);
    frame
}

/// A veth pair in `ns` (both ends up); the ifindex of `name`.
fn veth(ns: &NetNs, name: &str) -> u32 {
    let peer = format!("{name}p");
    ns.exec(&[
        "ip", "link", "add", name, "type", "veth", "peer", "name", &peer,
    ]);
    ns.exec(&["ip", "link", "set", name, "up"]);
    ns.exec(&["ip", "link", "set", &peer, "up"]);
    let out = ns.exec(&["ip", "-j", "link", "show", name]);
    let links: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j");
    links[0]["ifindex"].as_u64().expect("ifindex") as u32
}

/// The namespace: the host's address `HOST6` alone on one device, a default route
/// through another (the FIB helper answers "not forwarded" for a destination without a
/// route as for a local one, as for IPv4), A's and B's devices, IPv6 forwarding on (the
/// helper answers "forwarding disabled" otherwise). Returns it and A's and B's
/// ifindexes.
fn namespace() -> (NetNs, u32, u32) {
    let ns = NetNs::with_ipv6("h6t");
    ns.exec(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
    veth(&ns, "h6u");
    let host = format!("{}/128", Ipv6Addr::from(HOST6));
    ns.exec(&["ip", "-6", "addr", "add", &host, "dev", "h6u", "nodad"]);
    veth(&ns, "h6o");
    ns.exec(&[
        "ip",
        "-6",
        "addr",
        "add",
        "fd5d:8::1/64",
        "dev",
        "h6o",
        "nodad",
    ]);
    ns.exec(&[
        "ip",
        "-6",
        "route",
        "add",
        "default",
        "via",
        "fd5d:8::fe",
        "dev",
        "h6o",
    ]);
    let (a, b) = (veth(&ns, "h6a"), veth(&ns, "h6b"));
    (ns, a, b)
}

fn endpoint(ip: [u8; 4], ifindex: u32, mac: [u8; 6], host_mac: [u8; 6]) -> EndpointValue {
    EndpointValue {
        ip,
        ifindex,
        mac,
        host_mac,
        network_id: 1,
        kind: ENDPOINT_KIND_VETH,
        flags: ENDPOINT_FLAG_IPV6,
    }
}

#[test]
fn dnat66_hairpin_to_another_endpoint_and_to_itself() {
    require_root!();
    let (ns, a_dev, b_dev) = namespace();
    ns.enter(|| hairpin(a_dev, b_dev));
}

fn hairpin(a_dev: u32, b_dev: u32) {
    let pins = TempPins::new();
    let mut dp = Datapath::open(&pins.path, false).expect("load datapath");
    let a = endpoint([10, 217, 0, 2], a_dev, MAC_A, GW_A);
    let b = endpoint([10, 217, 0, 3], b_dev, MAC_B, GW_B);
    dp.upsert_endpoint(a, Some(A6.into())).unwrap();
    dp.upsert_endpoint(b, Some(B6.into())).unwrap();
    let key = |proto, host, port| PublishKey6::new(proto, host, port);
    dp.publish6(key(IPPROTO_TCP, [0; 16], 8080), NatTarget6::new(B6, 80))
        .unwrap();
    dp.publish6(key(IPPROTO_UDP, HOST6, 5353), NatTarget6::new(B6, 53))
        .unwrap();
    let run = |dev, frame: &[u8]| tc_test_run(dp.tc_prog(Hook::TcIngress), dev, frame);
    let tracked = |t: Tuple6| dp.dnat_entry6(&t).map(|ct| (ct.addr, ct.port, ct.flags));

    // A → [host]:8080: to [B]:80, A's address kept, straight to B.
    let syn = from(MAC_A, GW_A, frames::tcp6(A6, 50000, HOST6, 8080, b"hi"));
    let want = to(MAC_B, GW_B, frames::tcp6(A6, 50000, B6, 80, b"hi"));
    assert_eq!(run(a_dev, &syn), (TC_ACT_REDIRECT, want), "A → B");
    assert_eq!(
        tracked(Tuple6::new(IPPROTO_TCP, B6, 80, A6, 50000)),
        Some((HOST6, 8080, 0))
    );
    // The next packet of the connection: the same, the entry as it was.
    let ack = from(MAC_A, GW_A, frames::tcp6(A6, 50000, HOST6, 8080, b"more"));
    let want = to(MAC_B, GW_B, frames::tcp6(A6, 50000, B6, 80, b"more"));
    assert_eq!(run(a_dev, &ack), (TC_ACT_REDIRECT, want), "A → B again");
    // B's reply: from the published address and port, straight to A.
    let reply = from(MAC_B, GW_B, frames::tcp6(B6, 80, A6, 50000, b"ok"));
    let want = to(MAC_A, GW_A, frames::tcp6(HOST6, 8080, A6, 50000, b"ok"));
    assert_eq!(run(b_dev, &reply), (TC_ACT_REDIRECT, want), "B → A");

    // B → its own published port: from the host address too, so that its reply comes
    // back here; the reply returns to B from the published address and port.
    let syn = from(MAC_B, GW_B, frames::tcp6(B6, 50001, HOST6, 8080, b"me"));
    let want = to(MAC_B, GW_B, frames::tcp6(HOST6, 50001, B6, 80, b"me"));
    assert_eq!(run(b_dev, &syn), (TC_ACT_REDIRECT, want), "B → B");
    assert_eq!(
        tracked(Tuple6::new(IPPROTO_TCP, B6, 80, HOST6, 50001)),
        Some((HOST6, 8080, NAT_FLAG_SELF))
    );
    let reply = from(MAC_B, GW_B, frames::tcp6(B6, 80, HOST6, 50001, b"me too"));
    let want = to(MAC_B, GW_B, frames::tcp6(HOST6, 8080, B6, 50001, b"me too"));
    assert_eq!(
        run(b_dev, &reply),
        (TC_ACT_REDIRECT, want),
        "B's reply to B"
    );

    // UDP, on a publish for exactly the host address.
    let q = from(MAC_A, GW_A, frames::udp6(A6, 50002, HOST6, 5353, b"query"));
    let want = to(MAC_B, GW_B, frames::udp6(A6, 50002, B6, 53, b"query"));
    assert_eq!(run(a_dev, &q), (TC_ACT_REDIRECT, want), "UDP A → B");
    let answer = from(MAC_B, GW_B, frames::udp6(B6, 53, A6, 50002, b"answer"));
    let want = to(MAC_A, GW_A, frames::udp6(HOST6, 5353, A6, 50002, b"answer"));
    assert_eq!(run(b_dev, &answer), (TC_ACT_REDIRECT, want), "UDP B → A");

    // Untouched: not the host's address (on the published port), an unpublished port,
    // the UDP port over TCP, a link-local source.
    for (what, frame, sport) in [
        (
            "not the host's address",
            frames::tcp6(A6, 50010, FAR6, 8080, b"x"),
            50010,
        ),
        (
            "unpublished port",
            frames::tcp6(A6, 50011, HOST6, 8081, b"x"),
            50011,
        ),
        (
            "TCP to the UDP port",
            frames::tcp6(A6, 50012, HOST6, 5353, b"x"),
            50012,
        ),
        (
            "link-local source",
            frames::tcp6(link_local(MAC_A), 50013, HOST6, 8080, b"x"),
            50013,
        ),
    ] {
        let frame = from(MAC_A, GW_A, frame);
        assert_eq!(run(a_dev, &frame), (TC_ACT_UNSPEC, frame.clone()), "{what}");
        let src = if what == "link-local source" {
            link_local(MAC_A)
        } else {
            A6
        };
        assert_eq!(tracked(Tuple6::new(IPPROTO_TCP, B6, 80, src, sport)), None);
    }
    // Spoofed: dropped by the guard, never translated or tracked.
    let spoofed = from(MAC_A, GW_A, frames::tcp6(OTHER6, 50014, HOST6, 8080, b"x"));
    let (v, _) = run(a_dev, &spoofed);
    assert_eq!(v, TC_ACT_SHOT, "spoofed source");
    assert_eq!(
        tracked(Tuple6::new(IPPROTO_TCP, B6, 80, OTHER6, 50014)),
        None
    );
    // A packet of B's (published: its packets are looked up as hairpin replies) to A's
    // address that is no such reply takes the fast path unchanged, straight to A.
    let direct = from(MAC_B, GW_B, frames::tcp6(B6, 80, A6, 50015, b"x"));
    let want = to(MAC_A, GW_A, frames::tcp6(B6, 80, A6, 50015, b"x"));
    assert_eq!(run(b_dev, &direct), (TC_ACT_REDIRECT, want), "B → A direct");
}
