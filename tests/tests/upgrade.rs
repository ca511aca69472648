//! Upgrade across a pinned-layout change, under traffic. The previous layout's datapath
//! (the eBPF object of layout 1, `tests/fixtures/datapath-layout1.bpf.o`) is pinned and
//! forwards an iperf3 stream and an idle TCP connection from a container to the outside,
//! both masqueraded; its daemon is killed, and this build's daemon starts on the same
//! pins. It migrates `NETPATH_DROPS` (more drop reasons) and `NETPATH_STATS` (IPv6
//! classes, each hook's block of slots moved) with their counters and widens the
//! connections' clocks in `NETPATH_NAT_AGE` (a creation time, layout 7), reloads the programs
//! and switches every attachment over, attaching the socket hooks the old object lacks
//! (the optional ones, `Program::optional`): no one-second interval of the stream carries nothing, and
//! the idle connection still answers.

use std::{
    io::{BufRead, BufReader, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use aya::{maps::MapInfo, programs::ProgramInfo};
use netpath::{
    datapath::layout,
    ebpf::{PROGRAMS, sock_hooks},
};
use netpath_common::{
    maps::{DROP_ENTRIES, DROPS_MAP, DropReason, LAYOUT, LAYOUT_MAP, STATS_MAP},
    nat::NAT_AGE_MAP,
};
use netpath_tests::{Daemon, NetNs, OutsideLink, require_root};

const OUTSIDE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const UPLINK_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const TIMEOUT: Duration = Duration::from_secs(5);

/// The id of each of `PROGRAMS`, `None` for one the datapath runs without (an older
/// build's object lacks it).
fn prog_ids(d: &Daemon) -> Vec<Option<u32>> {
    PROGRAMS
        .iter()
        .map(|p| {
            let pin = d.paths.bpffs.join("progs").join(p.name);
            pin.exists()
                .then(|| ProgramInfo::from_pin(pin).expect("program pin").id())
        })
        .collect()
}

/// The programs of `PROGRAMS` whose `ids` are `None`, and the socket hooks whose cgroup
/// link is not pinned.
fn absent(d: &Daemon, ids: &[Option<u32>]) -> (Vec<&'static str>, Vec<&'static str>) {
    let progs = PROGRAMS
        .iter()
        .zip(ids)
        .filter(|(_, id)| id.is_none())
        .map(|(p, _)| p.name)
        .collect();
    let links = sock_hooks()
        .map(|(name, _)| name)
        .filter(|name| !d.paths.bpffs.join("cgroup").join(name).exists())
        .collect();
    (progs, links)
}

/// Drops for `reason`, `None` when the datapath has no slot for it.
fn drops(d: &Daemon, reason: &str) -> Option<u64> {
    let all: serde_json::Value =
        serde_json::from_str(&d.ok(&["stats", "--all", "--json"])).expect("stats --json");
    all["drops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["reason"] == reason)
        .map(|r| r["packets"].as_u64().unwrap())
}

/// Packets of `class` seen at `hook` (`netpath stats --all`).
fn class_packets(d: &Daemon, hook: &str, class: &str) -> u64 {
    let all: serde_json::Value =
        serde_json::from_str(&d.ok(&["stats", "--all", "--json"])).expect("stats --json");
    all["classes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["hook"] == hook && c["class"] == class)
        .and_then(|c| c["packets"].as_u64())
        .unwrap_or_else(|| panic!("no {hook} {class} in {all}"))
}

/// One line sent on `conn` and its echo read back.
fn exchange(conn: &mut BufReader<TcpStream>, line: &str) -> std::io::Result<String> {
    conn.get_mut().write_all(format!("{line}\n").as_bytes())?;
    let mut back = String::new();
    conn.read_line(&mut back)?;
    Ok(back.trim_end().to_owned())
}

#[test]
fn a_datapath_pinned_with_the_previous_layout_is_migrated_under_traffic() {
    require_root!();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/datapath-layout1.bpf.o");
    let outside = NetNs::new("uo");
    let uplink = OutsideLink::new(&outside, UPLINK_IP, OUTSIDE);
    let mut d = Daemon::start_with(&[(netpath::ebpf::OBJECT_ENV, fixture.as_os_str())]);
    let old_drops = MapInfo::from_pin(d.paths.bpffs.join("maps").join(DROPS_MAP)).unwrap();
    assert!(
        !d.paths.bpffs.join("maps").join(LAYOUT_MAP).exists(),
        "the fixture is not layout 1: it pins a layout marker"
    );
    assert!(
        old_drops.max_entries() < DropReason::COUNT,
        "the fixture is not the previous layout: NETPATH_DROPS has {} slots",
        old_drops.max_entries()
    );
    let net = d.network_with_uplink("ug", "10.231.0.0/24", &uplink.name);
    let c = NetNs::new("uc");
    let ep = d.add_endpoint(&net, &c);
    let ep_ip = ep["ip"].as_str().unwrap().to_owned();
    let old_ids = prog_ids(&d);
    // The layout-1 object lacks the programs added since: loaded and attached without.
    let (progs, links) = absent(&d, &old_ids);
    let optional: Vec<&str> = PROGRAMS
        .iter()
        .filter(|p| p.optional())
        .map(|p| p.name)
        .collect();
    assert_eq!(progs, optional, "programs the old datapath lacks");
    assert_eq!(links, optional, "socket hooks the old datapath lacks");

    // Drops the old datapath counts: a forged source address.
    c.exec(&["ip", "addr", "add", "10.231.0.250/32", "dev", "eth0"]);
    for _ in 0..3 {
        let _ = Command::new("ip")
            .args(["netns", "exec", c.name(), "ping", "-c", "1", "-W", "1"])
            .args(["-I", "10.231.0.250", &OUTSIDE.to_string()])
            .output();
    }
    let spoofed = drops(&d, "spoofed_ip").expect("spoofed_ip counted");
    assert!(spoofed >= 3, "{spoofed} spoofed packets counted");
    assert_eq!(
        drops(&d, "nat_ports_exhausted"),
        None,
        "layout 1 has no such slot"
    );

    // The idle connection: an echo server outside, a client in the container that
    // exchanges a line before the upgrade and one after.
    let (ready_tx, ready_rx) = mpsc::channel();
    let server = outside.spawn(move || {
        let l = TcpListener::bind((OUTSIDE, 7300)).unwrap();
        ready_tx.send(()).unwrap();
        let (conn, peer) = l.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut conn = BufReader::new(conn);
        let mut line = String::new();
        while conn.read_line(&mut line).unwrap_or(0) > 0 {
            conn.get_mut().write_all(line.as_bytes()).unwrap();
            line.clear();
        }
        peer
    });
    ready_rx.recv_timeout(TIMEOUT).unwrap();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let client = c.spawn(move || {
        let s = TcpStream::connect_timeout(&SocketAddr::from((OUTSIDE, 7300)), TIMEOUT).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut s = BufReader::new(s);
        let before = exchange(&mut s, "before");
        go_rx.recv().unwrap();
        let after = exchange(&mut s, "after");
        (before.ok(), after.map_err(|e| e.to_string()))
    });

    let mut iperf_server = Command::new("ip")
        .args(["netns", "exec", outside.name(), "iperf3", "-s", "-1"])
        .args(["-B", &OUTSIDE.to_string(), "-p", "5212"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3 server (`cargo xtask setup` installs iperf3)");
    std::thread::sleep(Duration::from_millis(300));
    let iperf = Command::new("ip")
        .args([
            "netns",
            "exec",
            c.name(),
            "iperf3",
            "-c",
            &OUTSIDE.to_string(),
        ])
        .args(["-p", "5212", "-t", "12", "-i", "1", "-J"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("iperf3 client");
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    // The stream's packets out of the uplink, counted in the uplink-egress block of the
    // stats array (which the new layout's IPv6 classes move).
    let egress_tcp = class_packets(&d, "uplink_egress", "ipv4_tcp");
    assert!(
        egress_tcp > 1000,
        "{egress_tcp} TCP packets out of the uplink"
    );
    d.kill9();
    std::thread::sleep(Duration::from_secs(5).saturating_sub(start.elapsed()));
    let lines = d.restart_with(&[]);
    eprintln!(
        "upgraded at {:.1} s:\n{}",
        start.elapsed().as_secs_f64(),
        lines.join("\n")
    );
    let from_1 = format!(
        "migrated NETPATH_DROPS from layout 1 to {}",
        layout::version_of(DROPS_MAP)
    );
    let migrated = lines
        .iter()
        .find(|l| l.contains(&from_1))
        .unwrap_or_else(|| panic!("no migration reported: {lines:?}"));
    assert!(migrated.contains("entries carried over"), "{migrated}");
    // Layout 7 widened the masquerade clocks (and the published connections' entries):
    // the running connections' clocks were carried over, each with a creation time.
    let ages = format!("migrated {NAT_AGE_MAP} from layout 1 to 2 (");
    let ages = (lines.iter().find_map(|l| l.split_once(&ages)))
        .and_then(|(_, n)| n.split_whitespace().next()?.parse::<usize>().ok())
        .unwrap_or_else(|| panic!("no {NAT_AGE_MAP} migration: {lines:?}"));
    assert!(
        ages >= 2,
        "{ages} masquerade clocks carried over (two connections run)"
    );

    // The new layout is pinned, the old map gone, the programs this build's.
    let new_drops = MapInfo::from_pin(d.paths.bpffs.join("maps").join(DROPS_MAP)).unwrap();
    assert_eq!(new_drops.max_entries(), DROP_ENTRIES);
    assert!(
        !d.paths
            .bpffs
            .join("maps")
            .join(format!("{DROPS_MAP}.old"))
            .exists()
    );
    // DROPS changed in layouts 2, 3, 4, 5, 6 and 8 (its slots moved along, into blocks
    // per hook); STATS in 4, its slots moved along.
    assert_eq!(layout::version_of(DROPS_MAP), 7);
    let stats_moved = format!("migrated {STATS_MAP} from layout 1 to 2");
    assert!(lines.iter().any(|l| l.contains(&stats_moved)), "{lines:?}");
    let after = class_packets(&d, "uplink_egress", "ipv4_tcp");
    assert!(
        after >= egress_tcp,
        "uplink_egress ipv4_tcp went from {egress_tcp} to {after}: counters landed in other slots"
    );
    let marker = MapInfo::from_pin(d.paths.bpffs.join("maps").join(LAYOUT_MAP)).unwrap();
    assert_eq!(marker.max_entries(), LAYOUT, "the pinned layout marker");
    let new_ids = prog_ids(&d);
    assert_eq!(absent(&d, &new_ids), (vec![], vec![]), "after the upgrade");
    for ((netpath::ebpf::Program { name, .. }, old), new) in
        PROGRAMS.iter().zip(&old_ids).zip(&new_ids)
    {
        assert_ne!(old, new, "{name} was not reloaded");
    }
    // Counters carried over; the new reasons are there.
    let after = drops(&d, "spoofed_ip").unwrap();
    assert!(
        after >= spoofed,
        "spoofed_ip went from {spoofed} to {after}"
    );
    assert_eq!(
        drops(&d, "ipv6_not_enabled"),
        Some(0),
        "{}",
        d.stats()["drops"]
    );
    for reason in ["nat_ports_exhausted", "router_message", "spoofed_nd"] {
        assert_eq!(
            drops(&d, reason),
            Some(0),
            "{reason}: {}",
            d.stats()["drops"]
        );
    }

    // The idle connection still answers, through the new programs.
    go_tx.send(()).unwrap();
    let (before, after) = client.join().expect("client");
    assert_eq!(before.as_deref(), Some("before"));
    assert_eq!(after.as_deref(), Ok("after"), "the idle connection broke");
    let peer = server.join().expect("echo server");
    assert_eq!(peer.ip(), UPLINK_IP, "the connection was not masqueraded");
    assert_ne!(peer.ip().to_string(), ep_ip);

    let out = iperf.wait_with_output().expect("iperf3 client");
    let _ = iperf_server.kill();
    let _ = iperf_server.wait();
    netpath_tests::iperf3_uninterrupted(&out, 11);

    // A second start of this build adopts its own layout: nothing to migrate.
    d.kill9();
    let lines = d.restart_with(&[]);
    assert!(
        lines.iter().any(|l| l.contains("datapath  adopted")),
        "{lines:?}"
    );
    assert!(!lines.iter().any(|l| l.contains("migrated")), "{lines:?}");
}

/// A pinned map whose values changed size cannot be carried over: the daemon refuses to
/// start, touching nothing, unless told to replace it with `--reload`.
#[test]
fn a_map_that_cannot_be_migrated_is_refused_unless_reload() {
    require_root!();
    let mut d = Daemon::start();
    d.kill9();
    let pin = d.paths.bpffs.join("maps").join(DROPS_MAP);
    std::fs::remove_file(&pin).unwrap();
    // The drop counters with 8-byte values (this build's are 16: packets and bytes).
    let pin_s = pin.display().to_string();
    netpath_tests::run(&[
        "bpftool",
        "map",
        "create",
        &pin_s,
        "type",
        "percpu_array",
        "key",
        "4",
        "value",
        "8",
        "entries",
        &DROP_ENTRIES.to_string(),
        "name",
        "NETPATH_DROPS",
    ]);
    let out = Command::new(netpath_tests::netpath_bin())
        .arg("daemon")
        .arg("--no-default-network")
        .arg("--no-docker-plugin")
        .args(d.paths.args())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the daemon started: {err}");
    // The map's version in this build's layout.
    let version = layout::version_of(DROPS_MAP);
    let refused = format!(
        "the pinned map NETPATH_DROPS has layout {version} (type 6, key 4 B, value 8 B, {} entries)",
        DROP_ENTRIES
    );
    assert!(err.contains(&refused) && err.contains("--reload"), "{err}");
    assert!(pin.exists(), "the refused map was touched");
    assert_eq!(MapInfo::from_pin(&pin).unwrap().value_size(), 8);
    // With --reload the map is replaced by this build's.
    let mut args = vec!["--reload".to_owned(), "--no-default-network".to_owned()];
    args.extend(d.paths.args());
    let (mut child, lines) = netpath_tests::spawn_daemon(&args);
    assert!(
        lines.iter().any(|l| l.contains("datapath  loaded")),
        "{lines:?}"
    );
    assert_eq!(MapInfo::from_pin(&pin).unwrap().value_size(), 16);
    let _ = child.kill();
    let _ = child.wait();
}
