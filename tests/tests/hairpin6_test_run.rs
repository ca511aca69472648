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

/// The namespace: the host's address `HOST6` alone on one device, a default route
/// through another (the FIB helper answers "not forwarded" for a destination without a
/// route as for a local one, as for IPv4), A's and B's devices, IPv6 forwarding on (the
/// helper answers "forwarding disabled" otherwise). Returns it and A's and B's
/// ifindexes.
fn namespace() -> (NetNs, u32, u32) {
    let ns = NetNs::with_ipv6("h6t");
    ns.exec(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
    ns.veth("h6u");
    let host = format!("{}/128", Ipv6Addr::from(HOST6));
    ns.exec(&["ip", "-6", "addr", "add", &host, "dev", "h6u", "nodad"]);
    ns.veth("h6o");
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
    let (a, b) = (ns.veth("h6a"), ns.veth("h6b"));
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
    let (tcp, udp) = (frames::tcp6, frames::udp6);
    // (device, MAC, gateway MAC) of the endpoint with address `ip`.
    let ep = |ip| match ip {
        A6 => (a_dev, MAC_A, GW_A),
        _ => (b_dev, MAC_B, GW_B),
    };

    // Each sent (source, port, destination, port) on the sender's device, and handed
    // straight to the endpoint it now goes to as expected (the same payload).
    type Frame6 = fn([u8; 16], u16, [u8; 16], u16, &[u8]) -> Vec<u8>;
    type Ends = ([u8; 16], u16, [u8; 16], u16);
    // One row a packet (the table kept one row a line).
    #[rustfmt::skip]
    let hairpinned: [(&str, [u8; 16], Frame6, Ends, Ends); 8] = [
        // A → [host]:8080: to [B]:80, A's address kept; the next packet likewise.
        ("A → B", A6, tcp, (A6, 50000, HOST6, 8080), (A6, 50000, B6, 80)),
        ("A → B again", A6, tcp, (A6, 50000, HOST6, 8080), (A6, 50000, B6, 80)),
        // B's reply: from the published address and port.
        ("B → A", B6, tcp, (B6, 80, A6, 50000), (HOST6, 8080, A6, 50000)),
        // B → its own published port: from the host address too, so that its reply
        // comes back here; the reply returns to B from the published address and port.
        ("B → B", B6, tcp, (B6, 50001, HOST6, 8080), (HOST6, 50001, B6, 80)),
        ("B's reply to B", B6, tcp, (B6, 80, HOST6, 50001), (HOST6, 8080, B6, 50001)),
        // UDP, on a publish for exactly the host address.
        ("UDP A → B", A6, udp, (A6, 50002, HOST6, 5353), (A6, 50002, B6, 53)),
        ("UDP B → A", B6, udp, (B6, 53, A6, 50002), (HOST6, 5353, A6, 50002)),
        // A packet of B's (published: its packets are looked up as hairpin replies) to
        // A's address that is no such reply takes the fast path unchanged.
        ("B → A direct", B6, tcp, (B6, 80, A6, 50015), (B6, 80, A6, 50015)),
    ];
    for (what, sender, l4, (s, sp, d, dp), (ws, wsp, wd, wdp)) in hairpinned {
        let ((dev, mac, gw), (_, to_mac, to_gw)) = (ep(sender), ep(wd));
        let sent = from(mac, gw, l4(s, sp, d, dp, what.as_bytes()));
        let want = to(to_mac, to_gw, l4(ws, wsp, wd, wdp, what.as_bytes()));
        assert_eq!(run(dev, &sent), (TC_ACT_REDIRECT, want), "{what}");
    }
    let tcp_to_b = |client, port| tracked(Tuple6::new(IPPROTO_TCP, B6, 80, client, port));
    assert_eq!(tcp_to_b(A6, 50000), Some((HOST6, 8080, 0)));
    assert_eq!(tcp_to_b(HOST6, 50001), Some((HOST6, 8080, NAT_FLAG_SELF)));
    let udp_to_b = tracked(Tuple6::new(IPPROTO_UDP, B6, 53, A6, 50002));
    assert_eq!(udp_to_b, Some((HOST6, 5353, 0)));

    // Untouched, nothing tracked: not the host's address (on the published port), an
    // unpublished port, the UDP port over TCP, a link-local source.
    let ll = link_local(MAC_A);
    for (what, src, sport, dst, dport) in [
        ("not the host's address", A6, 50010, FAR6, 8080),
        ("unpublished port", A6, 50011, HOST6, 8081),
        ("TCP to the UDP port", A6, 50012, HOST6, 5353),
        ("link-local source", ll, 50013, HOST6, 8080),
    ] {
        let frame = from(MAC_A, GW_A, tcp(src, sport, dst, dport, b"x"));
        assert_eq!(run(a_dev, &frame), (TC_ACT_UNSPEC, frame.clone()), "{what}");
        assert_eq!(tcp_to_b(src, sport), None, "{what}");
    }
    // Spoofed: dropped by the guard, never translated or tracked.
    let spoofed = from(MAC_A, GW_A, tcp(OTHER6, 50014, HOST6, 8080, b"x"));
    assert_eq!(run(a_dev, &spoofed).0, TC_ACT_SHOT, "spoofed source");
    assert_eq!(tcp_to_b(OTHER6, 50014), None);
}
