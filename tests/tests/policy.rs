//! Network policy with real traffic, both families, through the daemon and the CLI:
//! - an isolated network's endpoints reach each other with neither TCP, UDP nor ICMP
//!   (IPv4 and IPv6), and the `isolated` drop counter rises; a neighbour's published port
//!   through the host's address still answers; `network update --isolate=false` on the
//!   running endpoints lets them talk, `--isolate` stops them again;
//! - an internal network's endpoints reach each other and a listener on their gateway,
//!   but neither a server behind the uplink (IPv4, IPv6) nor a listener on the host's
//!   uplink address (`internal_network` rises); its endpoints publish nothing; after
//!   `network update --internal=false` the same server answers, masqueraded;
//! - `--profile untrusted` (`--isolate --egress-deny private`): a server on a private
//!   address behind the uplink sees nothing (`egress_denied` rises), one on a public
//!   address answers, the gateway too; `network update --clear-egress` opens the way.

use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use netpath_tests::{
    Daemon, Ipv6ForwardingRestored, NetNs, OutsideLink, echo::tcp_echo, require_root,
};

const OUTSIDE4: Ipv4Addr = Ipv4Addr::new(198, 18, 235, 1);
const UPLINK4: Ipv4Addr = Ipv4Addr::new(198, 18, 235, 2);
const OUTSIDE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x235, 0, 0, 0, 0, 1);
const UPLINK6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x235, 0, 0, 0, 0, 2);
const PUBLISHED: u16 = 18235;
/// How long a connection that must fail is given.
const REFUSED_WITHIN: Duration = Duration::from_millis(700);

/// A dual-stack endpoint of `net` in a new namespace: (namespace, id, IPv4, IPv6, MAC).
fn endpoint(d: &Daemon, net: &str, prefix: &str) -> (NetNs, String, Ipv4Addr, Ipv6Addr, String) {
    let ns = NetNs::with_ipv6(prefix);
    let v = d.add_endpoint(net, &ns);
    let field = |k: &str| {
        v[k].as_str()
            .unwrap_or_else(|| panic!("{k}: {v}"))
            .to_owned()
    };
    let (ip, ip6) = (
        field("ip").parse().expect("ipv4"),
        field("ip6").parse().expect("ipv6"),
    );
    (ns, field("id"), ip, ip6, field("mac"))
}

/// Whether a TCP connection from `ns` to `to` is accepted within [`REFUSED_WITHIN`]
/// (something listens there, or it is a port published to a listener).
fn tcp_reaches(ns: &NetNs, to: SocketAddr) -> bool {
    ns.spawn(move || TcpStream::connect_timeout(&to, REFUSED_WITHIN).is_ok())
        .join()
        .expect("client")
}

/// Whether a UDP datagram from `ns` to `to` is echoed within [`REFUSED_WITHIN`].
fn udp_reaches(ns: &NetNs, to: SocketAddr) -> bool {
    ns.spawn(move || {
        let any: IpAddr = match to {
            SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
            SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
        };
        let u = UdpSocket::bind((any, 0)).expect("bind");
        u.set_read_timeout(Some(REFUSED_WITHIN)).unwrap();
        u.send_to(b"p?", to).expect("send");
        u.recv_from(&mut [0u8; 16]).is_ok()
    })
    .join()
    .expect("client")
}

/// Whether one ping from `ns` to `to` is answered within a second.
fn pings(ns: &NetNs, to: IpAddr) -> bool {
    let family = if to.is_ipv6() { "-6" } else { "-4" };
    let mut cmd = std::process::Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        ns.name(),
        "ping",
        family,
        "-c",
        "1",
        "-W",
        "1",
    ]);
    cmd.arg(to.to_string());
    cmd.output().expect("ping").status.success()
}

/// An echo server on `[::]:port` inside a namespace, TCP (5 bytes, as `tcp_echo` sends)
/// and UDP, both families; it answers until stopped, for at most 30 s.
struct Responder {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<SocketAddr>>>,
}

impl Responder {
    fn new(ns: &NetNs, port: u16) -> Responder {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let flag = stop.clone();
        let thread = ns.spawn(move || {
            let l = TcpListener::bind((Ipv6Addr::UNSPECIFIED, port)).expect("tcp");
            let u = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, port)).expect("udp");
            l.set_nonblocking(true).unwrap();
            u.set_nonblocking(true).unwrap();
            tx.send(()).unwrap();
            let (mut peers, end) = (Vec::new(), Instant::now() + Duration::from_secs(30));
            while !flag.load(Ordering::Relaxed) && Instant::now() < end {
                if let Ok((mut c, peer)) = l.accept() {
                    c.set_nonblocking(false).unwrap();
                    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                    let mut buf = [0u8; 5];
                    if c.read_exact(&mut buf).is_ok() {
                        let _ = c.write_all(&buf);
                    }
                    peers.push(peer);
                }
                let mut buf = [0u8; 64];
                if let Ok((n, peer)) = u.recv_from(&mut buf) {
                    let _ = u.send_to(&buf[..n], peer);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            peers
        });
        rx.recv_timeout(Duration::from_secs(5))
            .expect("responder up");
        Responder {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops it; the TCP peers it served.
    fn finish(mut self) -> Vec<SocketAddr> {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().expect("running");
        thread.join().expect("responder")
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Host routes a test added, deleted on drop.
struct HostRoutes(Vec<String>);

impl Drop for HostRoutes {
    fn drop(&mut self) {
        for dst in &self.0 {
            let _ = std::process::Command::new("ip")
                .args(["route", "del", dst])
                .status();
        }
    }
}

/// A TCP listener that accepts (and drops) connections in the background until the
/// process ends; returns its address.
fn host_listener(ip: IpAddr, port: u16) -> SocketAddr {
    let l = TcpListener::bind((ip, port)).expect("host listener");
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for c in l.incoming().take(32) {
            drop(c);
        }
    });
    addr
}

#[test]
fn isolation_and_internal_networks_with_real_traffic_and_updates() {
    require_root!();
    let _forwarding = Ipv6ForwardingRestored::new();
    let outside = NetNs::with_ipv6("plo");
    let uplink = OutsideLink::new(&outside, UPLINK4, OUTSIDE4);
    uplink.add_ipv6(&outside, UPLINK6, OUTSIDE6);
    let up = uplink.name.clone();
    let d = Daemon::start();

    // An isolated network.
    let iso = netpath_tests::unique("pi");
    let subnets = ["--subnet", "10.235.0.0/24", "--subnet", "fd5e:35::/64"];
    let args = [
        &["network", "create", &iso][..],
        &subnets,
        &["--uplink", &up, "--isolate"],
    ];
    let out = d.ok(&args.concat());
    assert!(out.contains("isolate"), "ls shows the policy: {out}");
    let (a, _, _, _, _) = endpoint(&d, &iso, "pa");
    let (b, b_id, b_ip, b_ip6, b_mac) = endpoint(&d, &iso, "pb");
    d.publish(&b_id, &[format!("{PUBLISHED}:80")]);
    let refused_before = d.drops("isolated");
    let b_server = Responder::new(&b, 80);
    let (b4, b6) = (IpAddr::V4(b_ip), IpAddr::V6(b_ip6));
    let refused = |what: &str| {
        for to in [b4, b6] {
            let (tcp, udp) = (SocketAddr::new(to, 80), SocketAddr::new(to, 80));
            assert!(!tcp_reaches(&a, tcp), "{what}: TCP to {to}");
            assert!(!udp_reaches(&a, udp), "{what}: UDP to {to}");
            assert!(!pings(&a, to), "{what}: ping {to}");
        }
    };
    // The bridge's isolated ports carry no ARP or neighbour discovery between them: A
    // never learns B's MAC.
    refused("isolated");
    // A that knows it anyway (a static neighbour entry, as a guest may forge) sends
    // straight to B's MAC: the endpoint program drops and counts each packet.
    for to in [b4, b6] {
        let to = to.to_string();
        a.exec(&[
            "ip", "neigh", "replace", &to, "lladdr", &b_mac, "dev", "eth0",
        ]);
    }
    refused("isolated, B's MAC known");
    let refused = d.drops("isolated") - refused_before;
    assert!(refused >= 6, "isolated drops counted: {refused}");
    // A neighbour's published port through the host's address still answers.
    let published = SocketAddr::from((UPLINK4, PUBLISHED));
    a.spawn(move || tcp_echo(published))
        .join()
        .unwrap()
        .expect("isolated A → B's published port on the uplink address");
    // Turned off on the running endpoints: A reaches B in both families.
    d.ok(&["network", "update", &iso, "--isolate=false"]);
    for to in [b4, b6] {
        let to = SocketAddr::new(to, 80);
        a.spawn(move || tcp_echo(to))
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("open again: TCP to {to}: {e}"));
    }
    assert!(udp_reaches(&a, SocketAddr::new(b6, 80)), "open again: UDP");
    assert!(pings(&a, b4), "open again: ping");
    // And on again.
    d.ok(&["network", "update", &iso, "--isolate"]);
    assert!(!tcp_reaches(&a, SocketAddr::new(b4, 80)), "isolated again");
    assert!(
        !tcp_reaches(&a, SocketAddr::new(b6, 80)),
        "isolated again, IPv6"
    );
    let served = b_server.finish();
    // The published port's connection and the two of the open spell; no other.
    assert_eq!(served.len(), 3, "B served {served:?}");

    // An internal network.
    let int = netpath_tests::unique("pn");
    let subnets = ["--subnet", "10.239.0.0/24", "--subnet", "fd5e:39::/64"];
    let args = [
        &["network", "create", &int][..],
        &subnets,
        &["--uplink", &up, "--internal"],
    ];
    d.ok(&args.concat());
    let (c, c_id, _, _, _) = endpoint(&d, &int, "pc");
    let (e, _, e_ip, _, _) = endpoint(&d, &int, "pe");
    let gateway = host_listener(Ipv4Addr::new(10, 239, 0, 1).into(), 0);
    let uplink_listener = host_listener(UPLINK4.into(), 0);
    let refused_before = d.drops("internal_network");
    let e_server = Responder::new(&e, 80);
    let to_e = SocketAddr::from((e_ip, 80));
    c.spawn(move || tcp_echo(to_e))
        .join()
        .unwrap()
        .expect("internal: C → E inside the network");
    drop(e_server);
    assert!(tcp_reaches(&c, gateway), "internal: C → its gateway");
    let server = Responder::new(&outside, 7235);
    for to in [IpAddr::V4(OUTSIDE4), IpAddr::V6(OUTSIDE6)] {
        assert!(
            !tcp_reaches(&c, SocketAddr::new(to, 7235)),
            "internal: TCP to {to}"
        );
        assert!(!pings(&c, to), "internal: ping {to}");
    }
    assert!(
        !tcp_reaches(&c, uplink_listener),
        "internal: the host's uplink address"
    );
    let refused = d.drops("internal_network") - refused_before;
    assert!(refused >= 5, "internal_network drops counted: {refused}");
    // It publishes nothing.
    let out = d.cli(&["port", "publish", &c_id, "-p", "18236:80"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("is internal"),
        "{err}"
    );
    // No longer internal: the same server answers, masqueraded.
    d.ok(&["network", "update", &int, "--internal=false"]);
    let to = SocketAddr::from((OUTSIDE4, 7235));
    let (_, seen) = c
        .spawn(move || tcp_echo(to))
        .join()
        .unwrap()
        .expect("open: C → outside");
    assert_eq!(seen, to);
    let peers = server.finish();
    assert_eq!(
        peers.len(),
        1,
        "the outside server saw only the open spell: {peers:?}"
    );
    let mapped = match peers[0].ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
        v4 => Some(v4),
    };
    assert_eq!(mapped, Some(IpAddr::V4(UPLINK4)), "masqueraded again");

    // `--profile untrusted` (isolated, `--egress-deny private`): a server on a private
    // address behind the uplink sees nothing, one on a public address answers; the
    // gateway (a host address) is not egress. An update lifting the deny list opens it.
    let private = Ipv4Addr::new(10, 209, 0, 1);
    let public = Ipv4Addr::new(203, 0, 113, 236);
    for ip in [private, public] {
        let on = format!("{ip}/32");
        outside.exec(&["ip", "addr", "add", &on, "dev", "lo"]);
        netpath_tests::run(&["ip", "route", "replace", &on, "via", &OUTSIDE4.to_string()]);
    }
    let _routes = HostRoutes(vec![format!("{private}/32"), format!("{public}/32")]);
    let unt = netpath_tests::unique("pu");
    let args = [
        &[
            "network",
            "create",
            &unt,
            "--subnet",
            "10.208.0.0/24",
            "--subnet",
            "fd5e:38::/64",
        ][..],
        &[
            "--uplink",
            &up,
            "--profile",
            "untrusted",
            "--mode",
            "routed",
        ],
    ];
    let out = d.ok(&args.concat());
    assert!(out.contains("egress-deny=private"), "{out}");
    let (u, _, _, _, _) = endpoint(&d, &unt, "pv");
    let server = Responder::new(&outside, 7236);
    let refused_before = d.drops("egress_denied");
    assert!(
        !tcp_reaches(&u, SocketAddr::from((private, 7236))),
        "private reached"
    );
    assert!(!pings(&u, private.into()), "private pinged");
    let to_public = SocketAddr::from((public, 7236));
    u.spawn(move || tcp_echo(to_public))
        .join()
        .unwrap()
        .expect("untrusted → a public address");
    let refused = d.drops("egress_denied") - refused_before;
    assert!(refused >= 2, "egress_denied drops counted: {refused}");
    // Host access none: listeners on its gateway and on the uplink address see nothing,
    // a port published on the uplink address (B's, of another network) answers.
    let gateway = host_listener(Ipv4Addr::new(10, 208, 0, 1).into(), 0);
    let refused_before = d.drops("host_access_denied");
    assert!(
        !tcp_reaches(&u, gateway),
        "untrusted → a listener on its gateway"
    );
    assert!(
        !tcp_reaches(&u, uplink_listener),
        "untrusted → the uplink address"
    );
    assert!(!pings(&u, IpAddr::V4(UPLINK4)), "untrusted pinged the host");
    let refused = d.drops("host_access_denied") - refused_before;
    assert!(refused >= 3, "host_access_denied drops counted: {refused}");
    let b_again = Responder::new(&b, 80);
    u.spawn(move || tcp_echo(published))
        .join()
        .unwrap()
        .expect("untrusted → a published port on the uplink address");
    drop(b_again);
    // The gateway's port allowed: it answers; the uplink's other listener still not.
    let allow = format!("{}/tcp,53/udp", gateway.port());
    d.ok(&["network", "update", &unt, "--host-access", &allow]);
    assert!(tcp_reaches(&u, gateway), "an allowed port of the gateway");
    d.ok(&["network", "update", &unt, "--clear-egress"]);
    let to_private = SocketAddr::from((private, 7236));
    u.spawn(move || tcp_echo(to_private))
        .join()
        .unwrap()
        .expect("no egress rule: the private server answers");
    let peers = server.finish();
    assert_eq!(
        peers.len(),
        2,
        "the outside saw the public and the last connection"
    );

    let ls = d.ok(&["network", "ls", "--json"]);
    let nets: serde_json::Value = serde_json::from_str(&ls).expect("ls --json");
    let policy = |name: &str| {
        let n = nets.as_array().unwrap().iter().find(|n| n["name"] == name);
        n.expect("listed")["policy"].clone()
    };
    assert_eq!(policy(&iso), serde_json::json!({"isolate": true}));
    assert_eq!(policy(&int), serde_json::Value::Null, "open: no policy");
}
