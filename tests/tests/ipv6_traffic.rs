//! IPv6 through the fast path with real traffic, and the guard against forged IPv6 from
//! inside a container: TCP and UDP between dual-stack containers are redirected by the
//! endpoint program (its counters prove it), in both network modes; a router
//! advertisement, a neighbour advertisement for the gateway and a forged source sent
//! from a container reach neither its neighbour nor the host, and are counted; an
//! IPv4-only network's container cannot send IPv6 to its neighbour at all.

use std::{
    io::{Read, Write},
    net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::mpsc,
    time::Duration,
};

use netpath_tests::{
    Daemon, Ipv6ForwardingRestored, NetNs, frames,
    guard6::{self, Sender, ep_ip6 as ip6, ep_mac as mac, guard_drops},
    raw::{Capture, send_raw},
    require_root, unique,
};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(5);
const TCP_BYTES: usize = 1 << 20;
const DATAGRAMS: usize = 100;

/// Packets of `class` the endpoints' tc ingress saw.
fn tc_packets(d: &Daemon, class: &str) -> u64 {
    let all: Value = serde_json::from_str(&d.ok(&["stats", "--all", "--json"])).unwrap();
    all["classes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["hook"] == "tc_ingress" && c["class"] == class)
        .and_then(|c| c["packets"].as_u64())
        .unwrap_or_else(|| panic!("no tc_ingress {class}"))
}

/// A dual-stack network of `mode` and two containers on it.
fn two_containers(
    d: &Daemon,
    mode: &str,
    subnet: &str,
    subnet6: &str,
) -> (NetNs, Value, NetNs, Value) {
    let name = unique("v6");
    d.ok(&[
        "network", "create", &name, "--subnet", subnet, "--subnet", subnet6, "--mode", mode,
    ]);
    let (a, b) = (NetNs::with_ipv6("v6a"), NetNs::with_ipv6("v6b"));
    let (ea, eb) = (d.add_endpoint(&name, &a), d.add_endpoint(&name, &b));
    (a, ea, b, eb)
}

#[test]
fn ipv6_tcp_and_udp_between_containers_take_the_fast_path() {
    require_root!();
    let _forwarding = Ipv6ForwardingRestored::new();
    let d = Daemon::start();
    for (mode, subnet, subnet6) in [
        ("bridge", "10.247.0.0/24", "fd47::/64"),
        ("routed", "10.248.0.0/24", "fd48::/64"),
    ] {
        let (a, _, b, eb) = two_containers(&d, mode, subnet, subnet6);
        let to = ip6(&eb);
        let (forwards, udp_seen) = (
            d.forwarded("endpoint_to_endpoint"),
            tc_packets(&d, "ipv6_udp"),
        );
        // TCP: a megabyte from a to b.
        let (ready_tx, ready_rx) = mpsc::channel();
        let server = b.spawn(move || {
            let l = TcpListener::bind((to, 7470)).expect("bind");
            ready_tx.send(()).unwrap();
            let (mut c, _) = l.accept().expect("accept");
            c.set_read_timeout(Some(TIMEOUT)).unwrap();
            let mut got = Vec::new();
            c.read_to_end(&mut got).map(|_| got.len())
        });
        ready_rx.recv_timeout(TIMEOUT).expect("server up");
        a.enter(|| {
            let addr = SocketAddr::from((to, 7470));
            let mut c = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connect over IPv6");
            c.write_all(&[7; TCP_BYTES]).expect("send");
        });
        assert_eq!(server.join().unwrap().expect("read"), TCP_BYTES, "{mode}");
        // UDP: a hundred datagrams, each answered.
        let (ready_tx, ready_rx) = mpsc::channel();
        let echo = b.spawn(move || {
            let s = UdpSocket::bind((to, 7471)).expect("bind");
            s.set_read_timeout(Some(TIMEOUT)).unwrap();
            ready_tx.send(()).unwrap();
            let mut buf = [0u8; 256];
            for _ in 0..DATAGRAMS {
                let (n, from) = s.recv_from(&mut buf).expect("datagram");
                s.send_to(&buf[..n], from).unwrap();
            }
        });
        ready_rx.recv_timeout(TIMEOUT).expect("echo up");
        a.enter(|| {
            let s = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0)).unwrap();
            s.set_read_timeout(Some(TIMEOUT)).unwrap();
            let mut buf = [0u8; 256];
            for i in 0..DATAGRAMS {
                s.send_to(&[i as u8; 100], (to, 7471)).unwrap();
                let (n, _) = s.recv_from(&mut buf).expect("echo over IPv6");
                assert_eq!(&buf[..n], &[i as u8; 100][..]);
            }
        });
        echo.join().unwrap();
        // Both ways of every datagram went past the kernel's path, counted as IPv6.
        let forwarded = d.forwarded("endpoint_to_endpoint") - forwards;
        let udp = tc_packets(&d, "ipv6_udp") - udp_seen;
        assert!(
            udp >= 2 * DATAGRAMS as u64,
            "{mode}: {udp} IPv6 UDP packets seen"
        );
        assert!(
            forwarded >= 2 * DATAGRAMS as u64,
            "{mode}: only {forwarded} packets took the fast path"
        );
    }
}

#[test]
fn forged_ipv6_from_a_container_reaches_no_one_and_is_counted() {
    require_root!();
    let _forwarding = Ipv6ForwardingRestored::new();
    let d = Daemon::start();
    let (a, ea, b, eb) = two_containers(&d, "bridge", "10.249.0.0/24", "fd49::/64");
    let (from, b6, b_mac) = (Sender::of(&ea), ip6(&eb).octets(), mac(&eb));
    let forged = guard6::forged(&from, b6, b_mac);
    // What a may send, so the captures are shown to see it.
    let control = guard6::control(&from, b6, b_mac);
    let before = guard_drops(&d);
    let bridge = {
        let n: Value = serde_json::from_str(&d.ok(&["network", "ls", "--json"])).unwrap();
        n.as_array()
            .unwrap()
            .iter()
            .find(|n| n["subnet"] == "10.249.0.0/24")
            .unwrap()["bridge"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let at_b = Capture::start_in(&b, "eth0", Duration::from_millis(700));
    let at_host = Capture::start(&bridge);
    a.enter(|| {
        for _ in 0..3 {
            for f in &forged {
                send_raw("eth0", f);
            }
        }
        for f in &control {
            send_raw("eth0", f);
        }
    });
    let (at_b, at_host) = (
        guard6::seen(&at_b.join().unwrap(), &from),
        guard6::seen(&at_host.frames(Duration::from_millis(700)), &from),
    );
    assert_eq!(
        at_b.forged(),
        (0, 0, 0),
        "forged frames reached the neighbour"
    );
    // (The container's kernel may add advertisements of its own.)
    assert!(
        at_b.control_adverts >= 1 && at_b.control_datagrams == 1,
        "the neighbour's capture: {at_b:?}"
    );
    assert_eq!(
        at_host.forged(),
        (0, 0, 0),
        "forged frames reached the host's bridge"
    );
    assert!(
        at_host.control_adverts >= 1,
        "the bridge's capture: {at_host:?}"
    );
    let after = guard_drops(&d);
    for (i, r) in guard6::REASONS.iter().enumerate() {
        assert_eq!(after[i] - before[i], 3, "{r}");
    }
    // An IPv4-only network's container speaks no IPv6, not even link-local to its
    // neighbour.
    let name = unique("v4");
    d.ok(&["network", "create", &name, "--subnet", "10.250.0.0/24"]);
    let (c, e) = (NetNs::with_ipv6("v4c"), NetNs::with_ipv6("v4e"));
    let (ec, ee) = (d.add_endpoint(&name, &c), d.add_endpoint(&name, &e));
    let (c_mac, e_mac) = (mac(&ec), mac(&ee));
    // c's only IPv6 address is its link-local one.
    let c_ll = Sender {
        mac: c_mac,
        ip6: frames::link_local(c_mac),
        gateway: [0; 16],
    };
    let [_, hello] = guard6::control(&c_ll, frames::link_local(e_mac), e_mac);
    let not_enabled = d.drops("ipv6_not_enabled");
    let at_e = Capture::start_in(&e, "eth0", Duration::from_millis(700));
    c.enter(|| send_raw("eth0", &hello));
    let got = at_e.join().unwrap();
    assert_eq!(
        guard6::seen(&got, &c_ll).control_datagrams,
        0,
        "IPv6 from an IPv4-only network arrived"
    );
    assert_eq!(d.drops("ipv6_not_enabled") - not_enabled, 1);
}
