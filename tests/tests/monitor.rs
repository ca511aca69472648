//! `netpath monitor` with real traffic: each spoofed datagram a container sends shows as
//! one drop event (reason, hook, endpoint, addresses and ports); a flood traced one in
//! one, read by a monitor that does not keep up, yields events and a lost count while the
//! fast path forwards every datagram; once the monitors are gone, the datapath reports
//! nothing again. `netpath top --plain` shows the drops per second and the endpoint.

use std::{
    io::{BufRead, BufReader},
    net::{Ipv4Addr, UdpSocket},
    process::{Child, ChildStdout, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use aya::maps::{Array, Map, MapData};
use netpath_common::events::{MONITOR_MAP, MonitorConfig};
use netpath_tests::{Daemon, NetNs, netpath_bin, require_root, wait_until};
use serde_json::Value;

const FORGED: &str = "10.199.230.250";
const PORT: u16 = 7400;
const FLOOD: u64 = 100_000;

/// What the datapath is told to report.
fn config(d: &Daemon) -> MonitorConfig {
    let data = MapData::from_pin(d.paths.bpffs.join("maps").join(MONITOR_MAP)).unwrap();
    let map: Array<_, MonitorConfig> = Array::try_from(Map::Array(data)).unwrap();
    map.get(&0, 0).unwrap()
}

/// `netpath monitor ARGS --json`, its lines delivered on a channel.
struct Monitor {
    child: Child,
}

impl Monitor {
    fn start(d: &Daemon, args: &[&str]) -> (Monitor, ChildStdout) {
        let mut child = Command::new(netpath_bin())
            .arg("monitor")
            .args(args)
            .arg("--json")
            .args(d.paths.args())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        (Monitor { child }, stdout)
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads lines of `out` on a thread of its own.
fn lines(out: ChildStdout) -> mpsc::Receiver<Value> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
            if tx.send(v).is_err() {
                return;
            }
        }
    });
    rx
}

#[test]
fn spoofed_frames_show_as_drops_and_a_traced_flood_loses_events_not_packets() {
    require_root!();
    let d = Daemon::start();
    let net = netpath_tests::unique("mo");
    d.ok(&["network", "create", &net, "--subnet", "10.199.230.0/24"]);
    let (ns_a, ns_b) = (NetNs::new("moa"), NetNs::new("mob"));
    let a = d.add_endpoint(&net, &ns_a);
    let b = d.add_endpoint(&net, &ns_b);
    let s = |v: &Value, k: &str| v[k].as_str().unwrap().to_owned();
    let (a_id, b_ip, b_mac) = (s(&a, "id"), s(&b, "ip"), s(&b, "mac"));
    ns_a.exec(&[
        "ip",
        "neigh",
        "replace",
        &b_ip,
        "lladdr",
        &b_mac,
        "dev",
        "eth0",
        "nud",
        "permanent",
    ]);
    ns_a.exec(&["ip", "addr", "add", &format!("{FORGED}/32"), "dev", "eth0"]);
    let b_addr: Ipv4Addr = b_ip.parse().unwrap();
    // B's socket takes the datagrams (never read: what overflows it is lost quietly),
    // so B's kernel sends no ICMP errors back, which the fast path would count too.
    let _sink = ns_b.enter(move || UdpSocket::bind((b_addr, PORT)).unwrap());
    assert_eq!(
        config(&d),
        MonitorConfig {
            drops: 0,
            trace_every: 0
        },
        "nobody watches yet"
    );

    // Five datagrams from the forged address, from ports 6001..=6005.
    let (drops, out) = Monitor::start(&d, &["--type", "drop", "--count", "5"]);
    let events = lines(out);
    wait_until(Duration::from_secs(10), "the monitor watches", || {
        config(&d).drops == 1
    });
    ns_a.spawn(move || {
        for port in 6001..=6005 {
            let u = UdpSocket::bind((FORGED.parse::<Ipv4Addr>().unwrap(), port)).unwrap();
            u.send_to(b"forged", (b_addr, PORT)).unwrap();
        }
    })
    .join()
    .unwrap();
    let mut ports = Vec::new();
    for _ in 0..5 {
        let e = events
            .recv_timeout(Duration::from_secs(10))
            .expect("a drop event");
        assert_eq!(
            (e["type"].as_str(), e["reason"].as_str(), e["hook"].as_str()),
            (Some("drop"), Some("spoofed_ip"), Some("tc_ingress")),
            "{e}"
        );
        assert_eq!(e["endpoint"].as_str(), Some(a_id.as_str()), "{e}");
        assert_eq!(e["proto"], "udp", "{e}");
        assert_eq!(
            e["dst"].as_str(),
            Some(format!("{b_ip}:{PORT}").as_str()),
            "{e}"
        );
        let src = e["src"].as_str().unwrap();
        let port = src
            .strip_prefix(&format!("{FORGED}:"))
            .unwrap_or_else(|| panic!("{e}"));
        ports.push(port.parse::<u16>().unwrap());
    }
    ports.sort();
    assert_eq!(ports, (6001..=6005).collect::<Vec<_>>());
    // --count 5: the monitor ends by itself, and the datapath stops reporting drops.
    let mut drops = drops;
    let status = drops.child.wait().unwrap();
    assert!(status.success(), "{status}");
    wait_until(Duration::from_secs(10), "drops no longer reported", || {
        config(&d).drops == 0
    });

    // `netpath top --plain` while forged datagrams go on: the drops per second by reason
    // and the endpoint's rate.
    let sending = ns_a.spawn(move || {
        let u = UdpSocket::bind((FORGED.parse::<Ipv4Addr>().unwrap(), 6100)).unwrap();
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(2500) {
            u.send_to(b"forged", (b_addr, PORT)).unwrap();
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let top = d.ok(&["top", "--plain", "--iterations", "1", "--interval", "1"]);
    sending.join().unwrap();
    let section = |title: &str| -> Vec<String> {
        (top.split("\n")
            .skip_while(|l| !l.starts_with(title))
            .skip(2))
        .take_while(|l| l.starts_with("  "))
        .map(|l| l.trim().to_owned())
        .collect()
    };
    let drops = section("drops per second");
    let rate: f64 = (drops.iter().find_map(|l| l.strip_prefix("spoofed_ip")))
        .and_then(|r| r.trim().parse().ok())
        .unwrap_or_else(|| panic!("no spoofed_ip rate in\n{top}"));
    assert!(
        (20.0..=150.0).contains(&rate),
        "{rate} drops/s of ~100 sent\n{top}"
    );
    let endpoints = section("endpoints");
    assert!(
        endpoints.iter().any(|l| l.starts_with(&a_id[..12])),
        "{a_id} not in\n{top}"
    );

    // A flood traced one in one, to a monitor nobody reads for now.
    let (_trace, out) = Monitor::start(&d, &["--type", "trace", "--trace-every", "1"]);
    wait_until(Duration::from_secs(10), "the trace monitor watches", || {
        config(&d).trace_every == 1
    });
    let forwarded = || d.forwarded("endpoint_to_endpoint");
    let before = forwarded();
    let a_ip: Ipv4Addr = s(&a, "ip").parse().unwrap();
    let start = Instant::now();
    let sent = ns_a
        .spawn(move || {
            let u = UdpSocket::bind((a_ip, 0)).unwrap();
            let start = Instant::now();
            let mut sent = 0;
            // Bounded in count and time.
            while sent < FLOOD && start.elapsed() < Duration::from_secs(20) {
                u.send_to(&[0u8; 32], (b_addr, PORT)).unwrap();
                sent += 1;
            }
            sent
        })
        .join()
        .unwrap();
    let took = start.elapsed();
    // Every datagram went through the fast path, monitored or not.
    assert_eq!(forwarded() - before, sent, "datagrams forwarded of {sent}");
    eprintln!("flood: {sent} datagrams in {:.2} s", took.as_secs_f64());
    // Now read: traces, and a line saying how many were lost.
    let events = lines(out);
    let (mut traces, mut lost) = (0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(20);
    while lost == 0 && Instant::now() < deadline {
        let Ok(e) = events.recv_timeout(Duration::from_secs(5)) else {
            break;
        };
        match e["type"].as_str() {
            Some("trace") => {
                traces += 1;
                assert_eq!(e["hook"], "tc_ingress", "{e}");
                assert_eq!(e["endpoint"].as_str(), Some(a_id.as_str()), "{e}");
            }
            Some("lost") => lost = e["ring"].as_u64().unwrap() + e["behind"].as_u64().unwrap(),
            _ => panic!("{e}"),
        }
    }
    eprintln!("trace events read: {traces}, lost: {lost}");
    assert!(traces > 0, "no trace events");
    assert!(lost > 0, "no lost count after {traces} events of {sent}");
    assert!(traces + lost <= sent + 64, "{traces} + {lost} > {sent}");
    // The datapath still forwards at once.
    ns_a.exec(&["ping", "-c", "1", "-W", "2", &b_ip]);
    drop(_trace);
    wait_until(Duration::from_secs(10), "traces no longer reported", || {
        config(&d)
            == MonitorConfig {
                drops: 0,
                trace_every: 0,
            }
    });
}
