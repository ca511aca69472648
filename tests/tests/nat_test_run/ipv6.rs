//! NAT66 by BPF_PROG_TEST_RUN: TCP, UDP and ICMPv6 echo from a network's IPv6 subnet
//! leave with the uplink's IPv6 address and a NAT port, their replies come back, ICMPv6
//! errors about them are translated back (outer destination, quoted header and port,
//! every checksum); what is not NAT66's stays untouched. Every checksum of a
//! translated frame is also recomputed from scratch (`frames::l4_csum6_valid`).

use netpath::datapath::Datapath;
use netpath_common::{
    maps::Hook,
    nat::{NatTarget6, Tuple6, Uplink6},
    packet::{IPPROTO_TCP, IPPROTO_UDP},
};
use netpath_tests::{TempPins, TestDev, frames, require_root};

use super::{TC_ACT_UNSPEC, run_tc, setup};

const ICMPV6: u8 = frames::IPPROTO_ICMPV6;
/// The endpoints (fd5a:6::/64, the network's IPv6 subnet), the uplink's global address
/// and the remote side (documentation addresses).
pub(super) const EP6: [u8; 16] = ip6(0xfd5a_0006, 2);
const EP6B: [u8; 16] = ip6(0xfd5a_0006, 3);
pub(super) const UPLINK6: [u8; 16] = ip6(0x2001_0db8, 0x0002);
pub(super) const REMOTE6: [u8; 16] = ip6(0x2001_0db8, 0x0001);
const ROUTER6: [u8; 16] = ip6(0x2001_0db8, 0x00fe);

/// `prefix`::`host` (the first 32 bits, then the last 16).
const fn ip6(prefix: u32, host: u16) -> [u8; 16] {
    let p = prefix.to_be_bytes();
    let h = host.to_be_bytes();
    [
        p[0], p[1], p[2], p[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, h[0], h[1],
    ]
}

/// The IPv4 setup, plus the uplink's IPv6 address over the same ports and the network's
/// IPv6 subnet as masqueraded.
pub(super) fn setup6(first_port: u16, last_port: u16) -> (TempPins, Datapath, TestDev) {
    let (pins, mut dp, up) = setup(first_port, last_port);
    let uplink = Uplink6 {
        addr: UPLINK6,
        first_port,
        last_port,
    };
    dp.set_uplink6(up.ifindex, Some(uplink)).unwrap();
    assert_eq!(dp.uplink6(up.ifindex), Some(uplink));
    dp.add_masq_subnet6("fd5a:6::/64".parse().unwrap(), 1)
        .unwrap();
    (pins, dp, up)
}

/// The NAT port of `orig`, checking both map entries: SNAT6 to the uplink's address,
/// RNAT6 of the reply `reply_dport`-keyed back to the original source.
fn nat6_port(dp: &Datapath, orig: &Tuple6) -> u16 {
    let t = dp.snat6_entry(orig).expect("no SNAT6 entry recorded");
    assert_eq!(t.addr, UPLINK6);
    let reply = Tuple6::new(orig.proto, orig.dst, orig.dport, UPLINK6, t.port);
    assert_eq!(
        dp.rnat6_entry(&reply),
        Some(NatTarget6::new(orig.src, orig.sport)),
        "RNAT6 entry of {orig:?}"
    );
    t.port
}

/// Egress on the uplink: the verdict is "continue" and the frame comes out.
fn egress(dp: &Datapath, up: &TestDev, frame: &[u8]) -> Vec<u8> {
    let (v, out) = run_tc(dp, Hook::UplinkEgress, up.ifindex, frame);
    assert_eq!(v, TC_ACT_UNSPEC);
    out
}

/// Ingress on the uplink, likewise.
fn ingress(dp: &Datapath, up: &TestDev, frame: &[u8]) -> Vec<u8> {
    let (v, out) = run_tc(dp, Hook::UplinkIngress, up.ifindex, frame);
    assert_eq!(v, TC_ACT_UNSPEC);
    out
}

#[test]
fn tcp_snat66_and_reverse() {
    require_root!();
    let (_p, dp, up) = setup6(40000, 40999);
    let payload = b"GET / HTTP/1.0\r\n\r\n";
    let out = egress(&dp, &up, &frames::tcp6(EP6, 51000, REMOTE6, 80, payload));
    let port = nat6_port(&dp, &Tuple6::new(IPPROTO_TCP, EP6, 51000, REMOTE6, 80));
    assert!((40000..=40999).contains(&port), "{port}");
    assert_eq!(out, frames::tcp6(UPLINK6, port, REMOTE6, 80, payload));
    assert!(frames::l4_csum6_valid(&out));
    // Keep-port: a source port inside the range is kept.
    let out = egress(&dp, &up, &frames::tcp6(EP6, 40123, REMOTE6, 80, b"x"));
    assert_eq!(out, frames::tcp6(UPLINK6, 40123, REMOTE6, 80, b"x"));
    // The reply gets the endpoint's address and port back.
    let back = ingress(&dp, &up, &frames::tcp6(REMOTE6, 80, UPLINK6, port, b"200"));
    assert_eq!(back, frames::tcp6(REMOTE6, 80, EP6, 51000, b"200"));
    assert!(frames::l4_csum6_valid(&back));
}

#[test]
fn udp_snat66_never_produces_a_zero_checksum() {
    require_root!();
    // One port, so the translated datagram is known before it is sent.
    let (_p, dp, up) = setup6(40000, 40000);
    // A payload word that makes the translated datagram's sum all ones: its computed
    // checksum is 0, which IPv6 UDP must send as 0xffff.
    let probe = frames::udp6(UPLINK6, 40000, REMOTE6, 53, &[0, 0]);
    let c = u16::from_be_bytes([probe[60], probe[61]]);
    let payload = c.to_be_bytes();
    let out = egress(&dp, &up, &frames::udp6(EP6, 53000, REMOTE6, 53, &payload));
    nat6_port(&dp, &Tuple6::new(IPPROTO_UDP, EP6, 53000, REMOTE6, 53));
    let mut want = frames::udp6(UPLINK6, 40000, REMOTE6, 53, &payload);
    assert_eq!(&want[60..62], &[0, 0], "the probe's computed checksum is 0");
    want[60..62].copy_from_slice(&[0xff, 0xff]);
    assert_eq!(out, want);
    assert!(frames::l4_csum6_valid(&out));
    let back = ingress(
        &dp,
        &up,
        &frames::udp6(REMOTE6, 53, UPLINK6, 40000, b"answer"),
    );
    assert_eq!(back, frames::udp6(REMOTE6, 53, EP6, 53000, b"answer"));
    assert!(frames::l4_csum6_valid(&back));
}

/// An ICMPv6 echo body: identifier, sequence number, data.
fn echo(id: u16, data: &[u8]) -> Vec<u8> {
    [&id.to_be_bytes()[..], &[0, 1], data].concat()
}

#[test]
fn icmpv6_echo_is_translated_by_identifier() {
    require_root!();
    let (_p, dp, up) = setup6(40000, 40999);
    let out = egress(
        &dp,
        &up,
        &frames::icmp6(EP6, REMOTE6, 128, &echo(0x1234, b"ping")),
    );
    let id = nat6_port(&dp, &Tuple6::new(ICMPV6, EP6, 0x1234, REMOTE6, 0));
    assert_eq!(
        out,
        frames::icmp6(UPLINK6, REMOTE6, 128, &echo(id, b"ping"))
    );
    assert!(frames::l4_csum6_valid(&out));
    let reply = frames::icmp6(REMOTE6, UPLINK6, 129, &echo(id, b"ping"));
    let back = ingress(&dp, &up, &reply);
    assert_eq!(
        back,
        frames::icmp6(REMOTE6, EP6, 129, &echo(0x1234, b"ping"))
    );
    assert!(frames::l4_csum6_valid(&back));
}

/// An ICMPv6 error of type `ty` from the router to `dst`, quoting `quoted` (an IPv6
/// packet) after the 4 bytes `word` (unused, or the MTU of "packet too big").
fn error6(dst: [u8; 16], ty: u8, word: [u8; 4], quoted: &[u8]) -> Vec<u8> {
    frames::icmp6(ROUTER6, dst, ty, &[&word[..], quoted].concat())
}

#[test]
fn icmpv6_errors_about_translated_flows_are_translated_back() {
    require_root!();
    let (_p, dp, up) = setup6(40000, 40999);
    let ip_of = |frame: Vec<u8>| frame[14..].to_vec();
    // TCP: destination unreachable (1), quoted whole.
    let payload = b"GET /";
    egress(&dp, &up, &frames::tcp6(EP6, 51000, REMOTE6, 80, payload));
    let port = nat6_port(&dp, &Tuple6::new(IPPROTO_TCP, EP6, 51000, REMOTE6, 80));
    let sent = ip_of(frames::tcp6(UPLINK6, port, REMOTE6, 80, payload));
    let original = ip_of(frames::tcp6(EP6, 51000, REMOTE6, 80, payload));
    let out = ingress(&dp, &up, &error6(UPLINK6, 1, [0; 4], &sent));
    assert_eq!(out, error6(EP6, 1, [0; 4], &original), "unreachable, TCP");
    assert!(frames::l4_csum6_valid(&out));
    // UDP: packet too big (2), MTU 1280.
    let mtu = 1280u32.to_be_bytes();
    egress(&dp, &up, &frames::udp6(EP6, 52000, REMOTE6, 53, b"query"));
    let port = nat6_port(&dp, &Tuple6::new(IPPROTO_UDP, EP6, 52000, REMOTE6, 53));
    let sent = ip_of(frames::udp6(UPLINK6, port, REMOTE6, 53, b"query"));
    let original = ip_of(frames::udp6(EP6, 52000, REMOTE6, 53, b"query"));
    let out = ingress(&dp, &up, &error6(UPLINK6, 2, mtu, &sent));
    assert_eq!(out, error6(EP6, 2, mtu, &original), "packet too big, UDP");
    assert!(frames::l4_csum6_valid(&out));
    // An echo request whose hop limit ran out: time exceeded (3).
    egress(
        &dp,
        &up,
        &frames::icmp6(EP6, REMOTE6, 128, &echo(0x4242, b"hop")),
    );
    let id = nat6_port(&dp, &Tuple6::new(ICMPV6, EP6, 0x4242, REMOTE6, 0));
    let sent = ip_of(frames::icmp6(UPLINK6, REMOTE6, 128, &echo(id, b"hop")));
    let original = ip_of(frames::icmp6(EP6, REMOTE6, 128, &echo(0x4242, b"hop")));
    let out = ingress(&dp, &up, &error6(UPLINK6, 3, [0; 4], &sent));
    assert_eq!(
        out,
        error6(EP6, 3, [0; 4], &original),
        "time exceeded, echo"
    );
    // An error about a connection NAT66 never saw: untouched.
    let stranger = ip_of(frames::tcp6(UPLINK6, 40999, REMOTE6, 443, b""));
    let unknown = error6(UPLINK6, 1, [0; 4], &stranger);
    assert_eq!(ingress(&dp, &up, &unknown), unknown);
}

#[test]
fn a_taken_port_makes_the_second_flow_take_another() {
    require_root!();
    let (_p, dp, up) = setup6(40000, 40999);
    // Two endpoints, the same source port (inside the range), the same destination.
    egress(&dp, &up, &frames::tcp6(EP6, 40500, REMOTE6, 80, b"a"));
    let out = egress(&dp, &up, &frames::tcp6(EP6B, 40500, REMOTE6, 80, b"b"));
    let first = nat6_port(&dp, &Tuple6::new(IPPROTO_TCP, EP6, 40500, REMOTE6, 80));
    let second = nat6_port(&dp, &Tuple6::new(IPPROTO_TCP, EP6B, 40500, REMOTE6, 80));
    assert_eq!(first, 40500, "the first keeps its port");
    assert_ne!(second, 40500, "the second cannot");
    assert!((40000..=40999).contains(&second));
    assert_eq!(out, frames::tcp6(UPLINK6, second, REMOTE6, 80, b"b"));
    // Each reply goes to its own endpoint.
    let back = ingress(&dp, &up, &frames::tcp6(REMOTE6, 80, UPLINK6, second, b""));
    assert_eq!(back, frames::tcp6(REMOTE6, 80, EP6B, 40500, b""));
}

#[test]
fn traffic_not_nat66s_is_untouched() {
    require_root!();
    let (_p, dp, up) = setup6(40000, 40999);
    let untouched = |frame: Vec<u8>, what: &str| {
        assert_eq!(egress(&dp, &up, &frame), frame, "{what}");
    };
    // Not from a masqueraded subnet.
    untouched(
        frames::tcp6(ip6(0xfd5b_0006, 2), 51000, REMOTE6, 80, b"x"),
        "other source",
    );
    // A fragment (first, more to come) from elsewhere: the kernel path's, unrecorded
    // (fragments of NAT66's own flows: `super::frag`).
    let other = ip6(0xfd5b_0006, 2);
    let udp = frames::udp6(other, 52000, REMOTE6, 53, b"frag")[54..].to_vec();
    let frag_hdr = [IPPROTO_UDP, 0, 0, 1, 0, 0, 0, 7];
    untouched(
        frames::ipv6(44, other, REMOTE6, &frag_hdr, &udp),
        "first fragment",
    );
    assert!(
        dp.snat6_entry(&Tuple6::new(IPPROTO_UDP, other, 52000, REMOTE6, 53))
            .is_none()
    );
    assert_eq!(dp.frag_counts(), (0, 0));
    // Replies nobody asked for come in untouched.
    let stray = frames::tcp6(REMOTE6, 80, UPLINK6, 40001, b"x");
    assert_eq!(ingress(&dp, &up, &stray), stray);
    // An uplink without an IPv6 address: no NAT66 through it.
    let (_p2, mut dp2, up2) = setup(40000, 40999);
    dp2.add_masq_subnet6("fd5a:6::/64".parse().unwrap(), 1)
        .unwrap();
    let frame = frames::tcp6(EP6, 51000, REMOTE6, 80, b"x");
    let (v, out) = run_tc(&dp2, Hook::UplinkEgress, up2.ifindex, &frame);
    assert_eq!((v, out), (TC_ACT_UNSPEC, frame), "uplink without IPv6");
}
