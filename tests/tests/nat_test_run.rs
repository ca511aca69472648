//! BPF_PROG_TEST_RUN of egress masquerade, byte for byte: SNAT on the uplink's egress,
//! reverse SNAT of the replies on its ingress, for TCP, UDP (incl. a zero checksum) and
//! ICMP echo; untouched traffic; port exhaustion; NAT66, the same for IPv6
//! ([`ipv6`]); and fragments of both families ([`frag`]). Every expected frame is built from scratch with freshly computed
//! checksums and compared whole.

#[path = "nat_test_run/frag.rs"]
mod frag;
#[path = "nat_test_run/ipv6.rs"]
mod ipv6;

use netpath::datapath::Datapath;
use netpath_common::{
    maps::{DropReason, Hook},
    nat::{Tuple, Uplink},
    packet::{IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP},
};
use netpath_tests::{TempPins, TestDev, frames, require_root, tc_test_run};

const TC_ACT_UNSPEC: u32 = u32::MAX;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;
const EP: [u8; 4] = [10, 200, 0, 2];
const UPLINK: [u8; 4] = [192, 0, 2, 2];
const REMOTE: [u8; 4] = [192, 0, 2, 1];

fn setup(first_port: u16, last_port: u16) -> (TempPins, Datapath, TestDev) {
    let pins = TempPins::new();
    let mut dp = Datapath::open(&pins.path, false).expect("load datapath");
    let uplink = TestDev::new("nt");
    dp.set_uplink(
        uplink.ifindex,
        Uplink {
            addr: UPLINK,
            first_port,
            last_port,
        },
    )
    .unwrap();
    dp.add_masq_subnet("10.200.0.0/16".parse().unwrap(), 1)
        .unwrap();
    (pins, dp, uplink)
}

fn run_tc(dp: &Datapath, hook: Hook, ifindex: u32, frame: &[u8]) -> (u32, Vec<u8>) {
    tc_test_run(dp.tc_prog(hook), ifindex, frame)
}

fn nat_port(dp: &Datapath, t: &Tuple) -> u16 {
    let target = dp.snat_entry(t).expect("no SNAT entry recorded");
    assert_eq!(target.addr, UPLINK);
    target.port
}

#[test]
fn tcp_snat_and_reverse_snat() {
    require_root!();
    let (_p, dp, up) = setup(40000, 40999);
    let out_frame = frames::tcp4(EP, 51000, REMOTE, 80, b"GET / HTTP/1.0\r\n\r\n");
    let (v, out) = run_tc(&dp, Hook::UplinkEgress, up.ifindex, &out_frame);
    assert_eq!(v, TC_ACT_UNSPEC);
    let port = nat_port(&dp, &Tuple::new(IPPROTO_TCP, EP, 51000, REMOTE, 80));
    assert!((40000..=40999).contains(&port));
    assert_eq!(
        out,
        frames::tcp4(UPLINK, port, REMOTE, 80, b"GET / HTTP/1.0\r\n\r\n"),
        "SNAT frame"
    );
    // The same connection keeps its port.
    let (_, again) = run_tc(&dp, Hook::UplinkEgress, up.ifindex, &out_frame);
    assert_eq!(again, out);

    let reply = frames::tcp4(REMOTE, 80, UPLINK, port, b"HTTP/1.0 200 OK\r\n");
    let (v, back) = run_tc(&dp, Hook::UplinkIngress, up.ifindex, &reply);
    assert_eq!(v, TC_ACT_UNSPEC);
    assert_eq!(
        back,
        frames::tcp4(REMOTE, 80, EP, 51000, b"HTTP/1.0 200 OK\r\n"),
        "reverse SNAT frame"
    );
}

/// `--no-masquerade`: a network's traffic to an exempted destination leaves with the
/// endpoint's own address, untouched and unrecorded; to any other, masqueraded. The
/// exemption is per network, and removing it masquerades again.
#[test]
fn exempted_destinations_are_not_masqueraded() {
    require_root!();
    let (_p, mut dp, up) = setup(40000, 40999);
    let lan: [u8; 4] = [198, 51, 100, 7];
    dp.set_no_masquerade(1, &["198.51.100.0/24".parse().unwrap()])
        .unwrap();
    // Another network's exemption does not apply to network 1.
    dp.set_no_masquerade(2, &["192.0.2.0/24".parse().unwrap()])
        .unwrap();
    let to_lan = frames::tcp4(EP, 51000, lan, 80, b"x");
    let (v, out) = run_tc(&dp, Hook::UplinkEgress, up.ifindex, &to_lan);
    assert_eq!((v, &out), (TC_ACT_UNSPEC, &to_lan), "exempted: untouched");
    assert!(
        dp.snat_entry(&Tuple::new(IPPROTO_TCP, EP, 51000, lan, 80))
            .is_none()
    );
    let to_remote = frames::tcp4(EP, 51001, REMOTE, 80, b"x");
    let (_, out) = run_tc(&dp, Hook::UplinkEgress, up.ifindex, &to_remote);
    let port = nat_port(&dp, &Tuple::new(IPPROTO_TCP, EP, 51001, REMOTE, 80));
    assert_eq!(out, frames::tcp4(UPLINK, port, REMOTE, 80, b"x"));
    // Exemption removed: masqueraded like the rest.
    dp.set_no_masquerade(1, &[]).unwrap();
    let (_, out) = run_tc(&dp, Hook::UplinkEgress, up.ifindex, &to_lan);
    let port = nat_port(&dp, &Tuple::new(IPPROTO_TCP, EP, 51000, lan, 80));
    assert_eq!(out, frames::tcp4(UPLINK, port, lan, 80, b"x"));
}

#[test]
fn udp_snat_keeps_checksums_valid_and_zero_checksums_zero() {
    require_root!();
    let (_p, dp, up) = setup(40000, 40999);
    for (sport, none) in [(52000u16, false), (52001, true)] {
        let (v, out) = run_tc(
            &dp,
            Hook::UplinkEgress,
            up.ifindex,
            &frames::udp4(EP, sport, REMOTE, 53, b"query", none),
        );
        assert_eq!(v, TC_ACT_UNSPEC);
        let port = nat_port(&dp, &Tuple::new(IPPROTO_UDP, EP, sport, REMOTE, 53));
        assert_eq!(
            out,
            frames::udp4(UPLINK, port, REMOTE, 53, b"query", none),
            "zero checksum: {none}"
        );
        let (_, back) = run_tc(
            &dp,
            Hook::UplinkIngress,
            up.ifindex,
            &frames::udp4(REMOTE, 53, UPLINK, port, b"answer", none),
        );
        assert_eq!(back, frames::udp4(REMOTE, 53, EP, sport, b"answer", none));
    }
}

#[test]
fn icmp_echo_is_translated_by_identifier() {
    require_root!();
    let (_p, dp, up) = setup(40000, 40999);
    let (v, out) = run_tc(
        &dp,
        Hook::UplinkEgress,
        up.ifindex,
        &frames::icmp4(EP, REMOTE, 8, 0x1234, b"ping"),
    );
    assert_eq!(v, TC_ACT_UNSPEC);
    let id = nat_port(&dp, &Tuple::new(IPPROTO_ICMP, EP, 0x1234, REMOTE, 0));
    assert_eq!(out, frames::icmp4(UPLINK, REMOTE, 8, id, b"ping"));
    let (_, back) = run_tc(
        &dp,
        Hook::UplinkIngress,
        up.ifindex,
        &frames::icmp4(REMOTE, UPLINK, 0, id, b"ping"),
    );
    assert_eq!(back, frames::icmp4(REMOTE, EP, 0, 0x1234, b"ping"));
}

/// A router on the way reports an error about a masqueraded packet: the error comes
/// back to the uplink quoting the packet as it left (uplink address and NAT port); the
/// endpoint must get it quoting its own packet, all checksums valid.
#[test]
fn icmp_errors_about_masqueraded_packets_are_translated_back() {
    require_root!();
    const ROUTER: [u8; 4] = [192, 0, 2, 254];
    let (_p, dp, up) = setup(40000, 40999);
    let ip_of = |frame: Vec<u8>| frame[14..].to_vec();
    let mtu = [0, 0, 0x05, 0x78]; // "fragmentation needed", next-hop MTU 1400
    // TCP, quoted whole (as Linux quotes up to 576 bytes) and cut after 8 bytes of TCP.
    let payload = b"GET / HTTP/1.0\r\n\r\n";
    run_tc(
        &dp,
        Hook::UplinkEgress,
        up.ifindex,
        &frames::tcp4(EP, 51000, REMOTE, 80, payload),
    );
    let port = nat_port(&dp, &Tuple::new(IPPROTO_TCP, EP, 51000, REMOTE, 80));
    let sent = ip_of(frames::tcp4(UPLINK, port, REMOTE, 80, payload));
    let original = ip_of(frames::tcp4(EP, 51000, REMOTE, 80, payload));
    for quoted_len in [sent.len(), 28] {
        let error = frames::icmp4_error(ROUTER, UPLINK, 3, 4, mtu, &sent[..quoted_len]);
        let (v, out) = run_tc(&dp, Hook::UplinkIngress, up.ifindex, &error);
        assert_eq!(v, TC_ACT_UNSPEC);
        let mut want_quote = original[..quoted_len].to_vec();
        if quoted_len == 28 {
            // The TCP checksum is not quoted; only what is quoted changes.
            want_quote = original[..28].to_vec();
        }
        assert_eq!(
            out,
            frames::icmp4_error(ROUTER, EP, 3, 4, mtu, &want_quote),
            "ICMP error quoting {quoted_len} bytes"
        );
    }
    // UDP with a checksum and with none; time exceeded.
    for none in [false, true] {
        run_tc(
            &dp,
            Hook::UplinkEgress,
            up.ifindex,
            &frames::udp4(EP, 52000, REMOTE, 53, b"query", none),
        );
        let port = nat_port(&dp, &Tuple::new(IPPROTO_UDP, EP, 52000, REMOTE, 53));
        let sent = ip_of(frames::udp4(UPLINK, port, REMOTE, 53, b"query", none));
        let original = ip_of(frames::udp4(EP, 52000, REMOTE, 53, b"query", none));
        let (v, out) = run_tc(
            &dp,
            Hook::UplinkIngress,
            up.ifindex,
            &frames::icmp4_error(ROUTER, UPLINK, 11, 0, [0; 4], &sent),
        );
        assert_eq!(v, TC_ACT_UNSPEC);
        assert_eq!(
            out,
            frames::icmp4_error(ROUTER, EP, 11, 0, [0; 4], &original),
            "time exceeded quoting UDP (no checksum: {none})"
        );
    }
    // A ping whose TTL ran out: the quoted echo request carries the NAT identifier.
    run_tc(
        &dp,
        Hook::UplinkEgress,
        up.ifindex,
        &frames::icmp4(EP, REMOTE, 8, 0x4242, b"ttl"),
    );
    let id = nat_port(&dp, &Tuple::new(IPPROTO_ICMP, EP, 0x4242, REMOTE, 0));
    let sent = ip_of(frames::icmp4(UPLINK, REMOTE, 8, id, b"ttl"));
    let original = ip_of(frames::icmp4(EP, REMOTE, 8, 0x4242, b"ttl"));
    let (_, out) = run_tc(
        &dp,
        Hook::UplinkIngress,
        up.ifindex,
        &frames::icmp4_error(ROUTER, UPLINK, 11, 0, [0; 4], &sent),
    );
    assert_eq!(
        out,
        frames::icmp4_error(ROUTER, EP, 11, 0, [0; 4], &original)
    );
    // An error about a packet that was never masqueraded is left alone.
    let stranger = ip_of(frames::tcp4(UPLINK, 40999, REMOTE, 81, b"x"));
    let error = frames::icmp4_error(ROUTER, UPLINK, 3, 1, [0; 4], &stranger);
    let (v, out) = run_tc(&dp, Hook::UplinkIngress, up.ifindex, &error);
    assert_eq!(v, TC_ACT_UNSPEC);
    assert_eq!(out, error, "unrelated ICMP error was modified");
}

#[test]
fn unrelated_traffic_and_fragments_pass_untouched() {
    require_root!();
    let (_p, dp, up) = setup(40000, 40999);
    // A first fragment from outside the masqueraded subnets (those of masqueraded flows:
    // `frag`).
    let mut fragment = frames::udp4([172, 16, 0, 5], 53000, REMOTE, 53, &[1; 32], false);
    fragment[20..22].copy_from_slice(&0x2000u16.to_be_bytes()); // more fragments
    fragment[24..26].copy_from_slice(&[0, 0]);
    let c = netpath_common::packet::checksum(&fragment[14..34]);
    fragment[24..26].copy_from_slice(&c.to_be_bytes());
    for (name, hook, frame) in [
        (
            "foreign source",
            Hook::UplinkEgress,
            frames::tcp4([172, 16, 0, 5], 1234, REMOTE, 80, b"x"),
        ),
        ("fragment", Hook::UplinkEgress, fragment),
        (
            "reply without a connection",
            Hook::UplinkIngress,
            frames::tcp4(REMOTE, 80, UPLINK, 40001, b"x"),
        ),
        (
            "icmp echo request inbound",
            Hook::UplinkIngress,
            frames::icmp4(REMOTE, UPLINK, 8, 7, b"x"),
        ),
        ("arp", Hook::UplinkEgress, frames::arp_request()),
    ] {
        let (v, out) = run_tc(&dp, hook, up.ifindex, &frame);
        assert_eq!(v, TC_ACT_UNSPEC, "{name}");
        assert_eq!(out, frame, "{name} was modified");
    }
    assert_eq!(
        dp.frag_counts(),
        (0, 0),
        "no fragment of the NAT's recorded"
    );
    // Egress on a device that is not an uplink: untouched.
    let other = TestDev::new("nt");
    let frame = frames::tcp4(EP, 51000, REMOTE, 80, b"x");
    assert_eq!(
        run_tc(&dp, Hook::UplinkEgress, other.ifindex, &frame).1,
        frame
    );
}

#[test]
fn exhausted_ports_drop_instead_of_colliding() {
    require_root!();
    // One port: the second connection to the same remote endpoint cannot get one.
    let (_p, dp, up) = setup(40000, 40000);
    let before = dp
        .drop_counter(DropReason::NatPortsExhausted)
        .unwrap()
        .packets;
    let (v1, _) = run_tc(
        &dp,
        Hook::UplinkEgress,
        up.ifindex,
        &frames::tcp4(EP, 1111, REMOTE, 80, b"a"),
    );
    assert_eq!(v1, TC_ACT_UNSPEC);
    let (v2, _) = run_tc(
        &dp,
        Hook::UplinkEgress,
        up.ifindex,
        &frames::tcp4(EP, 2222, REMOTE, 80, b"b"),
    );
    assert_eq!(v2, TC_ACT_SHOT);
    assert_eq!(
        dp.drop_counter(DropReason::NatPortsExhausted)
            .unwrap()
            .packets,
        before + 1
    );
    // A different remote port is a different reply tuple: the one port serves it too.
    let (v3, _) = run_tc(
        &dp,
        Hook::UplinkEgress,
        up.ifindex,
        &frames::tcp4(EP, 2222, REMOTE, 443, b"c"),
    );
    assert_eq!(v3, TC_ACT_UNSPEC);
    assert_eq!(dp.snat_count(), 2);
}

/// A port whose connection died (closed, or quiet past its timeout) goes to the next
/// connection that needs it; an answered connection that is merely idle keeps it.
#[test]
fn ports_of_dead_connections_are_taken_back() {
    use netpath_common::nat::{CT_CLOSING, CT_ESTABLISHED, NatAge};
    require_root!();
    let (_p, mut dp, up) = setup(40000, 40000);
    let egress = |dp: &Datapath, sport: u16| {
        run_tc(
            dp,
            Hook::UplinkEgress,
            up.ifindex,
            &frames::tcp4(EP, sport, REMOTE, 80, b"x"),
        )
        .0
    };
    let reply = Tuple::new(IPPROTO_TCP, REMOTE, 80, UPLINK, 40000);
    let first = Tuple::new(IPPROTO_TCP, EP, 1111, REMOTE, 80);
    assert_eq!(egress(&dp, 1111), TC_ACT_UNSPEC);
    assert_eq!(nat_port(&dp, &first), 40000);
    let age = dp
        .nat_age(&reply)
        .expect("activity recorded with the claim");
    // The remote answers: established.
    run_tc(
        &dp,
        Hook::UplinkIngress,
        up.ifindex,
        &frames::tcp4(REMOTE, 80, UPLINK, 40000, b"y"),
    );
    assert_eq!(dp.nat_age(&reply).unwrap().state, CT_ESTABLISHED);
    let now = netpath::datapath::nat_now();
    assert!(
        now.wrapping_sub(age.seen) <= 1 && age.created == age.seen,
        "seen {}, created {} vs now {now}",
        age.seen,
        age.created
    );
    // Idle for an hour but answered: the port stays taken.
    let aged = |seen, state| NatAge::new(seen, state);
    dp.set_nat_age(&reply, aged(now.wrapping_sub(3600), CT_ESTABLISHED))
        .unwrap();
    assert_eq!(
        egress(&dp, 2222),
        TC_ACT_SHOT,
        "an idle live connection lost its port"
    );
    // Closed three minutes ago: the port goes to the new connection, the old records go.
    dp.set_nat_age(&reply, aged(now.wrapping_sub(180), CT_CLOSING))
        .unwrap();
    assert_eq!(egress(&dp, 2222), TC_ACT_UNSPEC);
    let second = Tuple::new(IPPROTO_TCP, EP, 2222, REMOTE, 80);
    assert_eq!(nat_port(&dp, &second), 40000);
    assert!(
        dp.snat_entry(&first).is_none(),
        "the dead connection's SNAT entry stayed"
    );
    assert_eq!(dp.snat_count(), 1);
    // Its replies now reach the new connection.
    let (_, back) = run_tc(
        &dp,
        Hook::UplinkIngress,
        up.ifindex,
        &frames::tcp4(REMOTE, 80, UPLINK, 40000, b"z"),
    );
    assert_eq!(back, frames::tcp4(REMOTE, 80, EP, 2222, b"z"));
}

mod publish {
    use netpath_common::{
        maps::{ENDPOINT_KIND_VETH, EndpointValue},
        nat::{NAT_FLAG_INBOUND, NatTarget, PublishKey},
    };

    use super::*;

    pub(super) fn key(proto: u8, host_ip: [u8; 4], port: u16) -> PublishKey {
        PublishKey {
            host_ip,
            port,
            proto,
            _pad: 0,
        }
    }
    pub(super) fn target(addr: [u8; 4], port: u16) -> NatTarget {
        NatTarget {
            addr,
            port,
            flags: 0,
            _pad: 0,
        }
    }

    /// A connection routed in to an endpoint's own address (a route to its network via
    /// this host): recorded on the uplink's ingress, untouched, and its replies leave the
    /// uplink unmasqueraded — TCP and UDP. The endpoint's own masqueraded connections are
    /// not taken for inbound ones, and a forged packet does not replace their state.
    #[test]
    fn replies_of_connections_routed_in_are_not_masqueraded() {
        require_root!();
        let (_p, mut dp, up) = setup(40000, 40999);
        let ep_dev = TestDev::new("nt");
        register_ep(&mut dp, ep_dev.ifindex);
        for (proto, syn, reply) in [
            (
                IPPROTO_TCP,
                frames::tcp4(REMOTE, 50000, EP, 22, b"SSH-2.0-client"),
                frames::tcp4(EP, 22, REMOTE, 50000, b"SSH-2.0-server"),
            ),
            (
                IPPROTO_UDP,
                frames::udp4(REMOTE, 50001, EP, 53, b"query", false),
                frames::udp4(EP, 53, REMOTE, 50001, b"answer", false),
            ),
        ] {
            let (v, out) = run_tc(&dp, Hook::UplinkIngress, up.ifindex, &syn);
            assert_eq!(
                (v, &out),
                (TC_ACT_UNSPEC, &syn),
                "{proto}: inbound untouched"
            );
            let key = Tuple::new(proto, EP, be16(&reply, 34), REMOTE, be16(&reply, 36));
            let ct = dp.dnat_entry(&key).expect("inbound connection tracked");
            assert_eq!((ct.addr, ct.port), (EP, be16(&reply, 34)));
            assert_eq!(ct.flags, NAT_FLAG_INBOUND);
            // Without the record this reply would leave from UPLINK and a NAT port.
            let (v, out) = run_tc(&dp, Hook::UplinkEgress, up.ifindex, &reply);
            assert_eq!(
                (v, &out),
                (TC_ACT_UNSPEC, &reply),
                "{proto}: reply untouched"
            );
            assert!(dp.snat_entry(&key).is_none(), "{proto}: reply masqueraded");
            // On the endpoint's device it is no hairpin reply either.
            let (v, out) = run_tc(&dp, Hook::TcIngress, ep_dev.ifindex, &reply);
            assert_eq!(
                (v, &out),
                (TC_ACT_UNSPEC, &reply),
                "{proto}: endpoint device"
            );
        }
        // The endpoint's own connection out is masqueraded; a packet from the remote to
        // the endpoint's address with that tuple does not turn it into an inbound one.
        let out_frame = frames::tcp4(EP, 51000, REMOTE, 443, b"hello");
        let (_, out) = run_tc(&dp, Hook::UplinkEgress, up.ifindex, &out_frame);
        let orig = Tuple::new(IPPROTO_TCP, EP, 51000, REMOTE, 443);
        let port = nat_port(&dp, &orig);
        assert_eq!(out, frames::tcp4(UPLINK, port, REMOTE, 443, b"hello"));
        let forged = frames::tcp4(REMOTE, 443, EP, 51000, b"x");
        run_tc(&dp, Hook::UplinkIngress, up.ifindex, &forged);
        assert!(dp.dnat_entry(&orig).is_none(), "forged inbound recorded");
        let (_, again) = run_tc(&dp, Hook::UplinkEgress, up.ifindex, &out_frame);
        assert_eq!(again, out, "masquerade still applies");
        // Not an endpoint: nothing recorded.
        let foreign = frames::tcp4(REMOTE, 50002, [10, 200, 0, 99], 22, b"x");
        run_tc(&dp, Hook::UplinkIngress, up.ifindex, &foreign);
        assert!(
            dp.dnat_entry(&Tuple::new(
                IPPROTO_TCP,
                [10, 200, 0, 99],
                22,
                REMOTE,
                50002
            ))
            .is_none()
        );
    }

    /// A published connection's entry keeps its clock and TCP progress — the client's
    /// SYN makes it new, the endpoint's SYN-ACK established, a FIN closing — and the
    /// datapath lists it (and a masqueraded one) as a translated connection.
    #[test]
    fn tracked_connections_keep_their_state_and_clock() {
        use frames::{TCP_ACK, TCP_FIN, TCP_SYN, tcp4_flags};
        use netpath::datapath::{Translation, nat_now};
        use netpath_common::nat::{CT_CLOSING, CT_ESTABLISHED, CT_NEW};
        require_root!();
        let (_p, mut dp, up) = setup(40000, 40999);
        let ep_dev = TestDev::new("nc");
        register_ep(&mut dp, ep_dev.ifindex);
        dp.set_local_addrs(&[UPLINK.into()]).unwrap();
        dp.publish(key(IPPROTO_TCP, [0; 4], 8080), target(EP, 80))
            .unwrap();
        let reply = Tuple::new(IPPROTO_TCP, EP, 80, REMOTE, 50100);
        let state = |dp: &Datapath| dp.dnat_entry(&reply).map(|ct| ct.state);
        let ingress = |dp: &Datapath, flags| {
            let f = tcp4_flags(REMOTE, 50100, UPLINK, 8080, flags, b"");
            run_tc(dp, Hook::UplinkIngress, up.ifindex, &f).0
        };
        let before = nat_now();
        assert_eq!(ingress(&dp, TCP_SYN), TC_ACT_REDIRECT, "SYN DNATed");
        let ct = dp.dnat_entry(&reply).expect("connection tracked");
        let after = nat_now();
        assert_eq!(ct.state, CT_NEW);
        assert!(
            (before..=after).contains(&ct.created) && ct.seen == ct.created,
            "created {} seen {} not in {before}..={after}",
            ct.created,
            ct.seen
        );
        // The endpoint's SYN-ACK leaves the uplink as from the published port: answered.
        let syn_ack = tcp4_flags(EP, 80, REMOTE, 50100, TCP_SYN | TCP_ACK, b"");
        let (v, out) = run_tc(&dp, Hook::UplinkEgress, up.ifindex, &syn_ack);
        assert_eq!(
            (v, out),
            (
                TC_ACT_UNSPEC,
                tcp4_flags(UPLINK, 8080, REMOTE, 50100, TCP_SYN | TCP_ACK, b"")
            )
        );
        assert_eq!(state(&dp), Some(CT_ESTABLISHED));
        // The client's data keeps it so; its FIN makes it closing.
        ingress(&dp, TCP_ACK);
        assert_eq!(state(&dp), Some(CT_ESTABLISHED));
        ingress(&dp, TCP_FIN | TCP_ACK);
        assert_eq!(state(&dp), Some(CT_CLOSING));
        assert_eq!(dp.dnat_entry(&reply).unwrap().created, ct.created);

        // A masqueraded connection of the endpoint, and both as the datapath lists them.
        let out = frames::tcp4(EP, 33333, REMOTE, 443, b"m");
        assert_eq!(
            run_tc(&dp, Hook::UplinkEgress, up.ifindex, &out).0,
            TC_ACT_UNSPEC
        );
        let tracked = dp.tracked().unwrap();
        let sa = |ip: [u8; 4], port| std::net::SocketAddr::from((ip, port));
        let published = (tracked.iter())
            .find(|t| t.translation == Translation::Publish)
            .expect("the published connection listed");
        assert_eq!(published.original, (sa(REMOTE, 50100), sa(UPLINK, 8080)));
        assert_eq!(published.translated, (sa(REMOTE, 50100), sa(EP, 80)));
        assert_eq!(published.state, CT_CLOSING);
        let masq = (tracked.iter())
            .find(|t| t.translation == Translation::Masquerade)
            .expect("the masqueraded connection listed");
        assert_eq!(masq.original, (sa(EP, 33333), sa(REMOTE, 443)));
        assert_eq!(masq.translated.1, sa(REMOTE, 443));
        assert_eq!(masq.translated.0.ip(), std::net::IpAddr::from(UPLINK));
        assert_eq!((masq.state, masq.created), (CT_NEW, masq.seen));
        assert_eq!(tracked.len(), 2, "{tracked:?}");
    }

    /// Registers the veth endpoint `EP` (network 1) on device `ifindex`, its gateway MAC
    /// `02:ee:00:00:00:01`.
    pub(super) fn register_ep(dp: &mut Datapath, ifindex: u32) {
        dp.upsert_endpoint(
            EndpointValue {
                ip: EP,
                ifindex,
                mac: frames::SRC_MAC,
                host_mac: [2, 0xee, 0, 0, 0, 1],
                network_id: 1,
                kind: ENDPOINT_KIND_VETH,
                flags: 0,
            },
            None,
        )
        .unwrap();
    }

    fn be16(f: &[u8], at: usize) -> u16 {
        u16::from_be_bytes([f[at], f[at + 1]])
    }

    #[test]
    fn dnat_to_the_endpoint_and_back_keeping_the_client_address() {
        require_root!();
        let (_p, mut dp, up) = setup(40000, 40999);
        let ep_dev = TestDev::new("nt");
        register_ep(&mut dp, ep_dev.ifindex);
        let other_ep = [10, 200, 0, 3];
        // The host's addresses, as the daemon lists them: 0.0.0.0 publishes answer there.
        dp.set_local_addrs(&[UPLINK.into()]).unwrap();
        dp.publish(key(IPPROTO_TCP, [0; 4], 8080), target(EP, 80))
            .unwrap();
        dp.publish(key(IPPROTO_UDP, [0; 4], 8080), target(other_ep, 53))
            .unwrap();
        dp.publish(key(IPPROTO_TCP, [127, 0, 0, 1], 9090), target(EP, 90))
            .unwrap();

        // Client → host:8080/tcp: DNAT to the endpoint, source kept, and straight into
        // the endpoint as a router would hand it over (its MAC, from its gateway's; TTL
        // one lower).
        let (v, out) = run_tc(
            &dp,
            Hook::UplinkIngress,
            up.ifindex,
            &frames::tcp4(REMOTE, 50000, UPLINK, 8080, b"hi"),
        );
        assert_eq!(v, TC_ACT_REDIRECT);
        assert_eq!(
            out,
            frames::routed(
                frames::tcp4(REMOTE, 50000, EP, 80, b"hi"),
                frames::SRC_MAC,
                [2, 0xee, 0, 0, 0, 1]
            ),
            "DNAT frame"
        );
        // TTL 1: DNATed, but left to the kernel (which answers "time exceeded").
        let (v, out) = run_tc(
            &dp,
            Hook::UplinkIngress,
            up.ifindex,
            &frames::with_ttl(frames::tcp4(REMOTE, 50006, UPLINK, 8080, b"hi"), 1),
        );
        assert_eq!(
            (v, out),
            (
                TC_ACT_UNSPEC,
                frames::with_ttl(frames::tcp4(REMOTE, 50006, EP, 80, b"hi"), 1)
            ),
            "TTL 1"
        );
        let ct = dp
            .dnat_entry(&Tuple::new(IPPROTO_TCP, EP, 80, REMOTE, 50000))
            .expect("connection tracked");
        assert_eq!((ct.addr, ct.port), (UPLINK, 8080));

        // The endpoint's reply is routed as is (its own source address: rewritten on
        // the endpoint's device, the host would drop it as a martian) and leaves the
        // uplink with the published address and port — not masqueraded.
        let reply = frames::tcp4(EP, 80, REMOTE, 50000, b"ok");
        assert_eq!(
            run_tc(&dp, Hook::TcIngress, ep_dev.ifindex, &reply).1,
            reply
        );
        let (v, out) = run_tc(&dp, Hook::UplinkEgress, up.ifindex, &reply);
        assert_eq!(v, TC_ACT_UNSPEC);
        assert_eq!(
            out,
            frames::tcp4(UPLINK, 8080, REMOTE, 50000, b"ok"),
            "reverse DNAT frame"
        );

        // Same port, UDP: another endpoint (one this test did not register: the kernel
        // path delivers it).
        let (_, out) = run_tc(
            &dp,
            Hook::UplinkIngress,
            up.ifindex,
            &frames::udp4(REMOTE, 50001, UPLINK, 8080, b"q", false),
        );
        assert_eq!(out, frames::udp4(REMOTE, 50001, other_ep, 53, b"q", false));

        // Bound to 127.0.0.1: not reachable through the uplink's address.
        let frame = frames::tcp4(REMOTE, 50002, UPLINK, 9090, b"x");
        assert_eq!(
            run_tc(&dp, Hook::UplinkIngress, up.ifindex, &frame).1,
            frame
        );
        // Not published: untouched.
        let frame = frames::tcp4(REMOTE, 50003, UPLINK, 8081, b"x");
        assert_eq!(
            run_tc(&dp, Hook::UplinkIngress, up.ifindex, &frame).1,
            frame
        );

        // Routed through this host to another machine (a pod, a VM behind it) on the same
        // port: not the host's address, so the 0.0.0.0 publish leaves it alone.
        let frame = frames::tcp4(REMOTE, 50005, [10, 99, 0, 7], 8080, b"x");
        assert_eq!(
            run_tc(&dp, Hook::UplinkIngress, up.ifindex, &frame),
            (TC_ACT_UNSPEC, frame),
            "traffic to a non-host address was DNATed"
        );

        // Unpublished: no more DNAT.
        dp.unpublish(key(IPPROTO_TCP, [0; 4], 8080)).unwrap();
        let frame = frames::tcp4(REMOTE, 50004, UPLINK, 8080, b"x");
        assert_eq!(
            run_tc(&dp, Hook::UplinkIngress, up.ifindex, &frame).1,
            frame
        );
    }
}

/// The shortcuts past the host's IP stack between endpoints and an uplink, in a namespace
/// of the test's own (its routes decide where packets go; nothing is sent: a test run
/// only returns the verdict).
mod host_routing {
    use netpath_common::maps::{ENDPOINT_KIND_VETH, EndpointValue};
    use netpath_tests::NetNs;

    use super::*;

    const GW_MAC: [u8; 6] = [2, 0xee, 0, 0, 0, 1];

    fn with_macs(mut f: Vec<u8>, dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
        f[..6].copy_from_slice(&dst);
        f[6..12].copy_from_slice(&src);
        f
    }

    #[test]
    fn endpoint_traffic_to_and_from_the_uplink_skips_the_host_stack() {
        require_root!();
        let ns = NetNs::new("nr");
        for (dev, addr) in [
            ("up0", "192.0.2.2/24"),
            ("lan0", "10.99.0.1/24"),
            ("ep0", ""),
        ] {
            ns.exec(&[
                "ip",
                "link",
                "add",
                dev,
                "type",
                "veth",
                "peer",
                "name",
                &format!("{dev}p"),
            ]);
            ns.exec(&["ip", "link", "set", &format!("{dev}p"), "up"]);
            ns.exec(&["ip", "link", "set", dev, "up"]);
            if !addr.is_empty() {
                ns.exec(&["ip", "addr", "add", addr, "dev", dev]);
            }
        }
        ns.exec(&["ip", "route", "add", "default", "via", "192.0.2.1"]);
        ns.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        let (up_if, ep_if) = (ns.ifindex("up0"), ns.ifindex("ep0"));
        ns.enter(|| {
            let pins = TempPins::new();
            let mut dp = Datapath::open(&pins.path, false).expect("load datapath");
            dp.set_uplink(
                up_if,
                Uplink {
                    addr: UPLINK,
                    first_port: 40000,
                    last_port: 40999,
                },
            )
            .unwrap();
            dp.add_masq_subnet("10.200.0.0/16".parse().unwrap(), 1)
                .unwrap();
            dp.upsert_endpoint(
                EndpointValue {
                    ip: EP,
                    ifindex: ep_if,
                    mac: frames::SRC_MAC,
                    host_mac: GW_MAC,
                    network_id: 1,
                    kind: ENDPOINT_KIND_VETH,
                    flags: 0,
                },
                None,
            )
            .unwrap();
            let from_ep = |dst: [u8; 4], eth_dst: [u8; 6]| {
                with_macs(
                    frames::tcp4(EP, 51000, dst, 80, b"x"),
                    eth_dst,
                    frames::SRC_MAC,
                )
            };

            // Out: routed (sent to the gateway), via the uplink's default route: handed
            // to the uplink, TTL one lower; its neighbour entry supplies the MACs.
            let out_frame = from_ep(REMOTE, GW_MAC);
            assert_eq!(
                run_tc(&dp, Hook::TcIngress, ep_if, &out_frame),
                (TC_ACT_REDIRECT, frames::with_ttl(out_frame.clone(), 63)),
                "endpoint → uplink"
            );
            // The kernel path keeps everything else, untouched: a frame bridged to a
            // neighbour, a host address, a network that is not an uplink's, loopback,
            // an expiring TTL.
            for (what, f) in [
                ("bridged", from_ep(REMOTE, [2, 0, 0, 0, 0, 9])),
                ("host address", from_ep(UPLINK, GW_MAC)),
                ("not via an uplink", from_ep([10, 99, 0, 7], GW_MAC)),
                ("loopback", from_ep([127, 0, 0, 1], GW_MAC)),
                ("TTL 1", frames::with_ttl(from_ep(REMOTE, GW_MAC), 1)),
            ] {
                assert_eq!(
                    run_tc(&dp, Hook::TcIngress, ep_if, &f),
                    (TC_ACT_UNSPEC, f),
                    "{what}"
                );
            }

            // The uplink's egress masquerades it as before.
            let (v, snat) = run_tc(&dp, Hook::UplinkEgress, up_if, &out_frame);
            assert_eq!(v, TC_ACT_UNSPEC);
            let port = nat_port(&dp, &Tuple::new(IPPROTO_TCP, EP, 51000, REMOTE, 80));
            assert_eq!(
                snat,
                with_macs(
                    frames::tcp4(UPLINK, port, REMOTE, 80, b"x"),
                    GW_MAC,
                    frames::SRC_MAC
                )
            );

            // In: the reply, translated back, goes straight into the endpoint.
            let reply = frames::tcp4(REMOTE, 80, UPLINK, port, b"y");
            assert_eq!(
                run_tc(&dp, Hook::UplinkIngress, up_if, &reply),
                (
                    TC_ACT_REDIRECT,
                    frames::routed(
                        frames::tcp4(REMOTE, 80, EP, 51000, b"y"),
                        frames::SRC_MAC,
                        GW_MAC
                    )
                ),
                "uplink → endpoint"
            );
            // Too big for the endpoint's device (an uplink may have the larger MTU):
            // translated, but left to the kernel, which answers "fragmentation needed" —
            // a redirect would drop it silently.
            netpath_tests::run(&[
                "ip",
                "netns",
                "exec",
                ns.name(),
                "ip",
                "link",
                "set",
                "ep0",
                "mtu",
                "1000",
            ]);
            let big = frames::tcp4(REMOTE, 80, UPLINK, port, &[7; 1000]);
            assert_eq!(
                run_tc(&dp, Hook::UplinkIngress, up_if, &big),
                (
                    TC_ACT_UNSPEC,
                    frames::tcp4(REMOTE, 80, EP, 51000, &[7; 1000])
                ),
                "larger than the endpoint's MTU"
            );
            // Counted as the endpoint's: everything it sent, the one packet handed to it.
            let c = dp.endpoint_counters(ep_if).expect("endpoint counters");
            assert_eq!((c.tx_packets, c.rx_packets), (6, 1), "{c:?}");
            // And as the fast path's forwards, each way once.
            let forwards = dp.forwards().unwrap();
            let ways: Vec<(&str, u64)> = forwards
                .iter()
                .map(|f| (f.way.as_str(), f.count.packets))
                .collect();
            assert_eq!(
                ways,
                [
                    ("endpoint_to_endpoint", 0),
                    ("uplink_to_endpoint", 1),
                    ("endpoint_to_uplink", 1)
                ]
            );
        });
    }
}
