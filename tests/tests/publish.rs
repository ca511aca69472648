//! Published ports with real traffic: a client in another namespace reaches the host's
//! uplink address and port; the container sees the client's own address; TCP and UDP
//! on the same host port reach different endpoints; a 127.0.0.1 publish is unreachable
//! from outside; bad `-p` input is refused and changes nothing.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::mpsc,
    time::Duration,
};

use netpath_tests::{Daemon, NetNs, OutsideLink, require_root};

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 11);
const UPLINK: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 12);
const TIMEOUT: Duration = Duration::from_secs(5);

fn endpoint(d: &Daemon, net: &str, ns: &NetNs) -> serde_json::Value {
    serde_json::from_str(&d.ok(&[
        "endpoint",
        "add",
        net,
        "--netns",
        &ns.path().display().to_string(),
        "--json",
    ]))
    .unwrap()
}

#[test]
fn published_ports_reach_the_right_endpoint_with_the_client_address() {
    require_root!();
    let outside = NetNs::new("po");
    let uplink = OutsideLink::new(&outside, UPLINK, CLIENT);
    let up = uplink.name.clone();

    let d = Daemon::start();
    let net = d.network_with_uplink("pn", "10.229.0.0/24", &up);
    let (tcp_ns, udp_ns) = (NetNs::new("pt"), NetNs::new("pw"));
    let (tcp_ep, udp_ep) = (endpoint(&d, &net, &tcp_ns), endpoint(&d, &net, &udp_ns));
    let tcp_ip: Ipv4Addr = tcp_ep["ip"].as_str().unwrap().parse().unwrap();
    let udp_ip: Ipv4Addr = udp_ep["ip"].as_str().unwrap().parse().unwrap();
    let out = d.ok(&[
        "port",
        "publish",
        tcp_ep["id"].as_str().unwrap(),
        "-p",
        "18080:80",
        "-p",
        "127.0.0.1:18081:81",
        "--json",
    ]);
    let leases: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(leases.as_array().unwrap().len(), 2);
    d.ok(&[
        "port",
        "publish",
        udp_ep["id"].as_str().unwrap(),
        "-p",
        "18080:53/udp",
    ]);

    // Servers in the containers report who connected.
    let (tx, rx) = mpsc::channel();
    let tcp_server = tcp_ns.spawn(move || {
        let l = TcpListener::bind((tcp_ip, 80)).unwrap();
        let l81 = TcpListener::bind((tcp_ip, 81)).unwrap();
        l81.set_nonblocking(true).unwrap();
        tx.send(()).unwrap();
        let (mut c, peer) = l.accept().unwrap();
        c.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut buf = [0u8; 5];
        c.read_exact(&mut buf).unwrap();
        c.write_all(b"pong!").unwrap();
        let on_81 = l81.accept().is_ok();
        (peer, on_81)
    });
    rx.recv_timeout(TIMEOUT).unwrap();
    let (tx, rx) = mpsc::channel();
    let udp_server = udp_ns.spawn(move || {
        let u = UdpSocket::bind((udp_ip, 53)).unwrap();
        u.set_read_timeout(Some(TIMEOUT)).unwrap();
        tx.send(()).unwrap();
        let mut buf = [0u8; 64];
        let (n, peer) = u.recv_from(&mut buf).unwrap();
        u.send_to(&buf[..n], peer).unwrap();
        peer
    });
    rx.recv_timeout(TIMEOUT).unwrap();

    let (reply, udp_reply, reached_81) = outside
        .spawn(|| {
            let mut c = TcpStream::connect_timeout(&SocketAddr::from((UPLINK, 18080)), TIMEOUT)
                .expect("connect to the published port");
            c.set_read_timeout(Some(TIMEOUT)).unwrap();
            c.write_all(b"ping!").unwrap();
            let mut buf = [0u8; 5];
            c.read_exact(&mut buf).unwrap();
            let u = UdpSocket::bind((CLIENT, 0)).unwrap();
            u.set_read_timeout(Some(TIMEOUT)).unwrap();
            u.send_to(b"dns?", (UPLINK, 18080)).unwrap();
            let mut ubuf = [0u8; 64];
            let (n, from) = u.recv_from(&mut ubuf).expect("udp reply");
            assert_eq!(
                from,
                SocketAddr::from((UPLINK, 18080)),
                "reply must come from the published address"
            );
            // The 127.0.0.1-bound publish must not answer from outside.
            let reached_81 = TcpStream::connect_timeout(
                &SocketAddr::from((UPLINK, 18081)),
                Duration::from_millis(800),
            )
            .is_ok();
            (buf, ubuf[..n].to_vec(), reached_81)
        })
        .join()
        .unwrap();
    assert_eq!(&reply, b"pong!");
    assert_eq!(udp_reply, b"dns?");
    assert!(
        !reached_81,
        "a 127.0.0.1 publish was reachable from another namespace"
    );
    let (tcp_peer, on_81) = tcp_server.join().unwrap();
    assert_eq!(
        tcp_peer.ip(),
        std::net::IpAddr::V4(CLIENT),
        "the container must see the client's address"
    );
    assert!(!on_81);
    assert_eq!(
        udp_server.join().unwrap().ip(),
        std::net::IpAddr::V4(CLIENT)
    );
    // The uplink's program handed the connections straight to the endpoints (past the
    // host's routing): counted as received by them — the TCP one got at least the SYN,
    // the ACK, the data and the FIN; the UDP one its datagram.
    let rx = d.endpoint_rx();
    let got = |ip: Ipv4Addr| rx.get(&ip).copied().unwrap_or_default();
    assert!(got(tcp_ip) >= 4 && got(udp_ip) >= 1, "{rx:?}");
    // Their replies left through the uplink the same way (SYN-ACK, data, FIN; the UDP
    // answer): forwarded past the host's IP stack.
    let (inbound, outbound) = (
        d.forwarded("uplink_to_endpoint"),
        d.forwarded("endpoint_to_uplink"),
    );
    assert!(
        inbound >= 5 && outbound >= 4,
        "{inbound} in, {outbound} out"
    );

    // Bad input: refused, state unchanged.
    let before = d.ok(&["port", "ls", "--json"]);
    let ep = tcp_ep["id"].as_str().unwrap();
    for (spec, why) in [
        ("0", "out of range"),
        ("65536", "out of range"),
        ("90-80", "reversed"),
        ("18090-18092:80-81", "host range has 3 ports"),
        ("80/sctp", "unknown protocol"),
        ("203.0.113.9:18095:80", "not an address of this host"),
        ("18080:80", "is taken: endpoint"),
        ("18080:80", "has tcp/0.0.0.0:18080 published"),
    ] {
        let out = d.cli(&["port", "publish", ep, "-p", spec]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{spec} accepted");
        assert!(err.contains(why), "{spec}: expected {why:?} in {err}");
    }
    let out = d.cli(&["port", "publish", "0123456789ab", "-p", "18099:80"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
    // A port a host process listens on.
    let l = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
    let busy = l.local_addr().unwrap().port();
    let out = d.cli(&["port", "publish", ep, "-p", &format!("{busy}:80")]);
    // The error names the process holding it.
    let want = format!(
        "is taken on the host by process {} (pid {}) listening on 0.0.0.0:{busy}",
        std::fs::read_to_string("/proc/self/comm").unwrap().trim(),
        std::process::id()
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&want),
        "expected {want:?} in {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Several -p are all or none: with the second taken, the first is not published
    // either, and the error names the conflicting port and its owner.
    let out = d.cli(&["port", "publish", ep, "-p", "18096:80", "-p", "18080:81"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("port tcp/0.0.0.0:18080 is taken") && err.contains(ep),
        "{err}"
    );
    assert_eq!(
        d.ok(&["port", "ls", "--json"]),
        before,
        "bad input changed the leases"
    );
    // Docker's host range for one port: the first free one of it (18080 is taken).
    let got: serde_json::Value = serde_json::from_str(&d.ok(&[
        "port",
        "publish",
        ep,
        "-p",
        "18079-18081:80",
        "-p",
        "18082:81",
        "--json",
    ]))
    .unwrap();
    let ports: Vec<u64> = got
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["host_port"].as_u64().unwrap())
        .collect();
    assert_eq!(ports, [18079, 18082]);
    // `port rm LEASE` removes that lease only; with another endpoint's id it is refused.
    let other = udp_ep["id"].as_str().unwrap();
    let out = d.cli(&["port", "rm", other, "tcp/0.0.0.0:18079"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is published for endpoint"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let gone = d.ok(&["port", "rm", "tcp/0.0.0.0:18079"]);
    assert!(gone.contains("unpublished tcp/0.0.0.0:18079"), "{gone}");
    d.ok(&["port", "rm", "tcp/0.0.0.0:18082", &ep[..6]]);
    assert_eq!(d.ok(&["port", "ls", "--json"]), before);
    let out = d.cli(&["port", "rm", "tcp/0.0.0.0:18079"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no port is published as"));

    // Unpublish: the port stops answering.
    d.ok(&["port", "rm", ep]);
    let refused = outside
        .spawn(|| {
            TcpStream::connect_timeout(
                &SocketAddr::from((UPLINK, 18080)),
                Duration::from_millis(800),
            )
            .is_err()
        })
        .join()
        .unwrap();
    assert!(refused, "unpublished port still reachable");
}

/// A 0.0.0.0 publish answers on every address of the host, including one added after
/// the publish: the daemon hears of the new address from the kernel (an rtnetlink
/// announcement) and tells the datapath at once — its periodic re-read, the safety net,
/// is 30 s away.
#[test]
fn a_host_address_added_later_answers_at_once() {
    require_root!();
    const CLIENT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 21);
    const FIRST: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 22);
    const LATER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 23);
    let outside = NetNs::new("pa");
    let uplink = OutsideLink::new(&outside, FIRST, CLIENT);
    let d = Daemon::start();
    let net = d.network_with_uplink("pn", "10.228.0.0/24", &uplink.name);
    let ns = NetNs::new("pb");
    let ep = endpoint(&d, &net, &ns);
    let ep_ip: Ipv4Addr = ep["ip"].as_str().unwrap().parse().unwrap();
    d.ok(&[
        "port",
        "publish",
        ep["id"].as_str().unwrap(),
        "-p",
        "18180:80",
    ]);
    let (tx, rx) = mpsc::channel();
    let server = ns.spawn(move || {
        let l = TcpListener::bind((ep_ip, 80)).unwrap();
        tx.send(()).unwrap();
        let (_c, peer) = l.accept().unwrap();
        peer
    });
    rx.recv_timeout(TIMEOUT).unwrap();

    netpath_tests::run(&[
        "ip",
        "addr",
        "add",
        &format!("{LATER}/24"),
        "dev",
        &uplink.name,
    ]);
    let added = std::time::Instant::now();
    // Bounded: 5 s, far below the 30 s safety net; a refused connect is retried.
    let connected = outside
        .spawn(move || {
            while added.elapsed() < Duration::from_secs(5) {
                let to = SocketAddr::from((LATER, 18180));
                if TcpStream::connect_timeout(&to, Duration::from_millis(500)).is_ok() {
                    return Some(added.elapsed());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            None
        })
        .join()
        .unwrap();
    let took = connected.expect("the new host address never answered the 0.0.0.0 publish");
    println!(
        "the new address answered after {:.0} ms",
        took.as_secs_f64() * 1e3
    );
    assert_eq!(server.join().unwrap().ip(), std::net::IpAddr::V4(CLIENT));
}
