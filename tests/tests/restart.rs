//! Restart without loss: an iperf3 stream between two container endpoints runs 20 s;
//! the daemon is SIGKILLed at 5 s and restarted at 10 s. Forwarding lives in the pinned
//! datapath, so no one-second interval may drop to zero, and the restarted daemon adopts
//! the pinned programs instead of reloading them.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use netpath_tests::{Daemon, NetNs, require_root, unique};

fn prog_ids(d: &Daemon) -> Vec<u32> {
    netpath::ebpf::PROGRAMS
        .iter()
        .map(|p| {
            aya::programs::ProgramInfo::from_pin(d.paths.bpffs.join("progs").join(p.name))
                .expect("program pin")
                .id()
        })
        .collect()
}

#[test]
fn iperf3_survives_kill9_and_restart_of_the_daemon() {
    require_root!();
    let mut d = Daemon::start();
    let net = unique("rs");
    d.ok(&["network", "create", &net, "--subnet", "10.225.0.0/24"]);
    let (a, b) = (NetNs::new("ra"), NetNs::new("rb"));
    let ep = |ns: &NetNs| -> serde_json::Value {
        serde_json::from_str(&d.ok(&[
            "endpoint",
            "add",
            &net,
            "--netns",
            &ns.path().display().to_string(),
            "--json",
        ]))
        .unwrap()
    };
    let (_ea, eb) = (ep(&a), ep(&b));
    let b_ip = eb["ip"].as_str().unwrap().to_owned();
    let ids = prog_ids(&d);

    let mut server = Command::new("ip")
        .args([
            "netns",
            "exec",
            b.name(),
            "iperf3",
            "-s",
            "-1",
            "-B",
            &b_ip,
            "-p",
            "5211",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3 server (is iperf3 installed? `cargo xtask setup` installs it)");
    std::thread::sleep(Duration::from_millis(300));
    let client = Command::new("ip")
        .args([
            "netns",
            "exec",
            a.name(),
            "iperf3",
            "-c",
            &b_ip,
            "-p",
            "5211",
            "-t",
            "20",
            "-i",
            "1",
            "-J",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("iperf3 client");
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(5));
    d.kill9();
    eprintln!(
        "killed the daemon at {:.1} s",
        start.elapsed().as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(10).saturating_sub(start.elapsed()));
    d.restart();
    eprintln!(
        "restarted the daemon at {:.1} s",
        start.elapsed().as_secs_f64()
    );
    assert_eq!(
        prog_ids(&d),
        ids,
        "the restarted daemon reloaded the programs"
    );

    let out = client.wait_with_output().expect("iperf3 client");
    let _ = server.kill();
    let _ = server.wait();
    let report = netpath_tests::iperf3_uninterrupted(&out, 19);
    // The stream went through the fast path: b's fast-path rx covers the bytes sent.
    let sent = report["end"]["sum_sent"]["bytes"].as_u64().unwrap();
    let stats = d.stats();
    let b_rx = stats["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["ip"] == b_ip.as_str())
        .map(|e| e["rx_bytes"].as_u64().unwrap())
        .unwrap();
    assert!(b_rx >= sent, "fast path delivered {b_rx} bytes of {sent}");
}
