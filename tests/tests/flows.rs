//! `netpath flows` with real traffic: a container's TCP connection and UDP datagram out
//! through the uplink (masqueraded) and a client outside reaching a port the container
//! publishes show with their tuples before and after translation, their kind, state
//! and endpoint; the filters select them; the UDP ones (unanswered: 30 s) are gone from
//! the listing once their timeout has passed, while the live TCP connection stays.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket},
    sync::mpsc,
    time::{Duration, Instant},
};

use netpath_tests::{Daemon, NetNs, OutsideLink, require_root};
use serde_json::Value;

const OUTSIDE: Ipv4Addr = Ipv4Addr::new(198, 18, 240, 1);
const UPLINK: Ipv4Addr = Ipv4Addr::new(198, 18, 240, 2);
const TIMEOUT: Duration = Duration::from_secs(5);

fn flows(d: &Daemon, filter: &[&str]) -> Vec<Value> {
    let mut args = vec!["flows", "--json"];
    args.extend(filter);
    let out = d.ok(&args);
    serde_json::from_str::<Value>(&out)
        .unwrap_or_else(|e| panic!("{out}: {e}"))
        .as_array()
        .unwrap()
        .clone()
}

/// The flow with `kind` and `proto`, panicking with the listing if there is none.
fn find<'a>(all: &'a [Value], kind: &str, proto: &str) -> &'a Value {
    all.iter()
        .find(|f| f["kind"] == kind && f["proto"] == proto)
        .unwrap_or_else(|| panic!("no {kind} {proto} flow in {all:#?}"))
}

fn tuple(f: &Value, which: &str) -> (String, String) {
    let s = |k: &str| f[which][k].as_str().unwrap().to_owned();
    (s("src"), s("dst"))
}

#[test]
fn flows_list_translated_connections_and_forget_them_after_their_timeout() {
    require_root!();
    let outside = NetNs::new("fo");
    let uplink = OutsideLink::new(&outside, UPLINK, OUTSIDE);
    let d = Daemon::start();
    let net = d.network_with_uplink("fl", "10.238.0.0/24", &uplink.name);
    let c = NetNs::new("fc");
    let ep = d.add_endpoint(&net, &c);
    let (id, ep_ip) = (
        ep["id"].as_str().unwrap().to_owned(),
        ep["ip"].as_str().unwrap().parse::<Ipv4Addr>().unwrap(),
    );

    // Out: a TCP connection kept open, a UDP datagram nobody answers.
    let (tx, rx) = mpsc::channel();
    let server = outside.spawn(move || {
        let l = TcpListener::bind((OUTSIDE, 7300)).unwrap();
        let u = UdpSocket::bind((OUTSIDE, 7301)).unwrap();
        u.set_read_timeout(Some(TIMEOUT)).unwrap();
        tx.send(()).unwrap();
        let (mut s, peer) = l.accept().unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).unwrap();
        s.write_all(&b).unwrap();
        let (_, udp_peer) = u.recv_from(&mut [0u8; 16]).unwrap();
        (s, peer, udp_peer)
    });
    rx.recv_timeout(TIMEOUT).unwrap();
    let client = c.spawn(move || {
        let mut s = TcpStream::connect_timeout(&(OUTSIDE, 7300).into(), TIMEOUT).unwrap();
        s.write_all(b"x").unwrap();
        s.read_exact(&mut [0u8; 1]).unwrap();
        let u = UdpSocket::bind((ep_ip, 0)).unwrap();
        u.send_to(b"q", (OUTSIDE, 7301)).unwrap();
        (s, u.local_addr().unwrap())
    });
    // The client's end stays open (closed, the connection would be `closing`).
    let (tcp_client, udp_local) = client.join().unwrap();
    let tcp_local = tcp_client.local_addr().unwrap();
    let (_conn, tcp_peer, udp_peer) = server.join().unwrap();

    // In: a client outside sends one datagram to a port the container publishes; it
    // is not answered (the container has no socket there; its ICMP error is not an
    // answer either), so it stays `new`.
    d.ok(&["port", "publish", &id, "-p", "7310:7311/udp"]);
    let from = outside.spawn(move || {
        let u = UdpSocket::bind((OUTSIDE, 0)).unwrap();
        u.send_to(b"p", (UPLINK, 7310)).unwrap();
        u.local_addr().unwrap()
    });
    let published_from = from.join().unwrap();

    let all = flows(&d, &[]);
    let tcp = find(&all, "masq", "tcp");
    assert_eq!(
        tuple(tcp, "original"),
        (tcp_local.to_string(), format!("{OUTSIDE}:7300"))
    );
    assert_eq!(
        tuple(tcp, "translated"),
        (tcp_peer.to_string(), format!("{OUTSIDE}:7300")),
        "the translated source is what the server saw"
    );
    assert_eq!(tcp["state"], "established", "{tcp:#}");
    assert_eq!(
        (tcp["endpoint"].as_str(), tcp["direction"].as_str()),
        (Some(id.as_str()), Some("outbound"))
    );
    let udp = find(&all, "masq", "udp");
    assert_eq!(
        tuple(udp, "translated"),
        (udp_peer.to_string(), format!("{OUTSIDE}:7301"))
    );
    assert_eq!(tuple(udp, "original").0, udp_local.to_string());
    assert_eq!(udp["state"], "new");
    let published = find(&all, "publish", "udp");
    assert_eq!(
        tuple(published, "original"),
        (published_from.to_string(), format!("{UPLINK}:7310"))
    );
    assert_eq!(
        tuple(published, "translated"),
        (published_from.to_string(), format!("{ep_ip}:7311"))
    );
    assert_eq!(published["direction"], "inbound");
    for f in [tcp, udp, published] {
        let (age, expires) = (
            f["age_secs"].as_u64().unwrap(),
            f["expires_in_secs"].as_u64().unwrap(),
        );
        assert!(age < 30 && expires > 0, "{f:#}");
    }
    assert_eq!(all.len(), 3, "{all:#?}");

    // The filters.
    assert_eq!(flows(&d, &["--kind", "publish"]).len(), 1);
    assert_eq!(flows(&d, &["--proto", "tcp"]).len(), 1);
    assert_eq!(flows(&d, &["--endpoint", &id[..6]]).len(), 3);
    d.refused(
        &["flows", "--endpoint", "ffffffffff"],
        "endpoint ffffffffff does not exist",
    );
    // The table.
    let table = d.ok(&["flows"]);
    assert!(
        table.lines().next().unwrap().starts_with("KIND") && table.lines().count() == 4,
        "{table}"
    );

    // Unanswered UDP times out after 30 units of 2^30 ns (32.2 s); the TCP connection,
    // answered and open, stays for a day. Bounded wait.
    let start = Instant::now();
    loop {
        let left = flows(&d, &[]);
        if left.len() == 1 {
            assert_eq!(left[0]["kind"], "masq");
            assert_eq!(left[0]["proto"], "tcp");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(45), "{left:#?}");
        std::thread::sleep(Duration::from_secs(1));
    }
    eprintln!(
        "UDP flows gone after {:.1} s",
        start.elapsed().as_secs_f64()
    );
}
