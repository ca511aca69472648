//! A real microVM guest (QEMU, TCG) on a netpath TAP talks to a container endpoint on the
//! same network, in bridge and in routed mode (issue #4, acceptance 3): it pings its
//! gateway and the container, and streams 2 MiB over TCP to a server in the container,
//! which echoes them back. Whether the packets take the kernel path or netpath's fast
//! path, the guest must see all three work and the server must receive every byte.
//! The guest also serves a port published for it (issue #5: publishing works for TAPs):
//! a client in a namespace behind the network's uplink reaches it through the uplink's
//! address and gets its bytes echoed.
//!
//! Root only; needs qemu-system-x86_64 (skipped with a reason without it, except under
//! CI=true) and, on first run, `apt-get download` for the guest (see
//! `netpath_tests::vm`).

use std::{
    io::{ErrorKind, Read, Write},
    net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use ipnet::Ipv4Net;
use netpath_tests::{
    Daemon, NetNs, OutsideLink, require_root, unique,
    vm::{Console, Vm, VmConfig, guest_image, qemu_or_skip},
};
use serde_json::Value;

const PORT: u16 = 7471;
/// The guest's port published on the uplink's address as [`PUBLISHED_HOST`].
const PUBLISHED_GUEST: u16 = 80;
const PUBLISHED_HOST: u16 = 18280;
/// What the outside client sends to the guest's published port.
const GREETING: &[u8] = b"hello from behind the uplink\n";
/// What the guest sends: 32 blocks of 64 KiB.
const STREAM_BYTES: usize = 32 * 65536;
/// Boot to power-off, including the transfer; a TCG boot takes about 4 s.
const VM_TIMEOUT: Duration = Duration::from_secs(150);

/// The guest's script: each step prints `NETPATH-RESULT <name> ok|fail`.
fn guest_script(gateway: Ipv4Addr, container: Ipv4Addr) -> String {
    format!(
        r#"
# The published port: an echo server for one connection, served while the rest runs.
nc -l -p {PUBLISHED_GUEST} -e cat &
NC=$!
check ping-gw ping -c 3 -w 10 {gateway}
check ping-container ping -c 3 -w 10 {container}
dd if=/dev/urandom of=/tmp/data bs=65536 count={blocks} 2>/dev/null
echo "sending $(wc -c < /tmp/data) bytes"
# nc sends stdin, half-closes, and prints what the server echoes until it closes.
check tcp-stream sh -c 'timeout 30 nc -w 10 {container} {PORT} < /tmp/data > /tmp/back && cmp /tmp/data /tmp/back && echo "echoed $(wc -c < /tmp/back) bytes"'
# Done once the server has served its connection and exited (at most 90 s).
check published-served sh -c "i=0; while kill -0 $NC 2>/dev/null; do i=\$((i+1)); [ \$i -gt 90 ] && exit 1; sleep 1; done"
"#,
        blocks = STREAM_BYTES / 65536,
    )
}

/// From outside: connects to the guest's published port at `to` (retrying while the
/// guest boots, until `stop`), sends [`GREETING`], half-closes, and returns what comes back.
fn published_echo(to: SocketAddr, stop: &AtomicBool) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + VM_TIMEOUT;
    let mut tries = 0;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        tries += 1;
        let Ok(mut s) = TcpStream::connect_timeout(&to, Duration::from_secs(1)) else {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        };
        eprintln!("client: connected to {to} on try {tries}");
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .map_err(|e| e.to_string())?;
        s.write_all(GREETING).map_err(|e| format!("send: {e}"))?;
        s.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
        let mut back = Vec::new();
        s.read_to_end(&mut back)
            .map_err(|e| format!("read the echo: {e}"))?;
        return Ok(back);
    }
    Err(format!("no connection to {to} after {tries} tries"))
}

/// Accepts one connection on `ip:PORT` (in the calling thread's namespace), reads to
/// EOF, echoes everything back and closes. Returns the byte count. Gives up when `stop`
/// is set before a connection came.
fn echo_once(
    ip: Ipv4Addr,
    ready: mpsc::Sender<()>,
    stop: Arc<AtomicBool>,
) -> Result<usize, String> {
    let listener = TcpListener::bind((ip, PORT)).map_err(|e| format!("bind {ip}:{PORT}: {e}"))?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let _ = ready.send(());
    let (mut stream, peer) = loop {
        match listener.accept() {
            Ok(c) => break c,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if stop.load(Ordering::Relaxed) {
                    return Err("no connection came".into());
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(format!("accept: {e}")),
        }
    };
    eprintln!("server: connection from {peer}");
    stream.set_nonblocking(false).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut data = Vec::with_capacity(STREAM_BYTES);
    let mut buf = vec![0u8; 65536];
    loop {
        if Instant::now() > deadline {
            return Err(format!("still reading after 90 s ({} bytes)", data.len()));
        }
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => data.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("read after {} bytes: {e}", data.len())),
        }
    }
    stream
        .write_all(&data)
        .map_err(|e| format!("echoing {} bytes: {e}", data.len()))?;
    stream
        .shutdown(Shutdown::Write)
        .map_err(|e| e.to_string())?;
    Ok(data.len())
}

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn field<'a>(v: &'a Value, name: &str) -> &'a str {
    v[name]
        .as_str()
        .unwrap_or_else(|| panic!("no string field {name} in {v}"))
}

/// The host's and the container's view of the network, for a failing run.
fn network_state(ns: &NetNs, devices: &[&str]) -> String {
    let mut cmds: Vec<Vec<String>> = [
        "ip -br addr",
        "ip route",
        "ip neigh",
        "sysctl net.ipv4.ip_forward",
    ]
    .iter()
    .map(|c| c.split(' ').map(str::to_owned).collect())
    .collect();
    for dev in devices {
        cmds.push(vec![
            "sysctl".into(),
            format!("net.ipv4.conf.{dev}.forwarding"),
            format!("net.ipv4.conf.{dev}.proxy_arp"),
        ]);
    }
    for c in ["ip addr", "ip route", "ip neigh"] {
        let mut v: Vec<String> = ["ip", "netns", "exec", ns.name()]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.extend(c.split(' ').map(str::to_owned));
        cmds.push(v);
    }
    let mut s = String::new();
    for args in cmds {
        s.push_str(&format!("$ {}\n", args.join(" ")));
        if let Ok(o) = std::process::Command::new(&args[0])
            .args(&args[1..])
            .output()
        {
            s.push_str(&String::from_utf8_lossy(&o.stdout));
            s.push_str(&String::from_utf8_lossy(&o.stderr));
        }
    }
    s
}

/// `outside`: the /24 (first three octets) of the link from the host's uplink to the
/// client's namespace — the host end `.1`, the client `.2`.
fn microvm_talks_to_a_container(mode: &str, subnet: &str, outside: [u8; 3]) {
    let image = guest_image().expect("building the microVM guest image");
    let outside_ns = NetNs::new("vmo");
    let [a, b, c] = outside;
    let uplink_ip = Ipv4Addr::new(a, b, c, 1);
    let uplink = OutsideLink::new(&outside_ns, uplink_ip, Ipv4Addr::new(a, b, c, 2));
    let d = Daemon::start();
    let net = unique("vm");
    let network = json(&d.ok(&[
        "network",
        "create",
        &net,
        "--subnet",
        subnet,
        "--mode",
        mode,
        "--uplink",
        &uplink.name,
        "--json",
    ]));
    let bridge = network["bridge"].as_str().map(str::to_owned);
    let mut devices: Vec<String> = bridge.iter().cloned().collect();

    let ns = NetNs::new("vmc");
    let netns = ns.path().display().to_string();
    let container = json(&d.ok(&["endpoint", "add", &net, "--netns", &netns, "--json"]));
    let container_ip: Ipv4Addr = field(&container, "ip").parse().expect("container ip");
    devices.push(field(&container, "host_ifname").to_owned());

    let tap_name = unique("vmt");
    let tap = json(&d.ok(&["tap", "add", &net, "--name", &tap_name, "--json"]));
    assert_eq!(field(&tap, "host_ifname"), tap_name);
    devices.push(tap_name.clone());
    let guest_ip: Ipv4Addr = field(&tap, "ip").parse().expect("guest ip");
    let prefix = tap["prefix_len"].as_u64().expect("prefix_len") as u8;
    let gateway: Ipv4Addr = field(&tap, "gateway").parse().expect("gateway");
    let mac = field(&tap, "mac").to_owned();
    d.ok(&[
        "port",
        "publish",
        field(&tap, "id"),
        "-p",
        &format!("{PUBLISHED_HOST}:{PUBLISHED_GUEST}"),
    ]);
    eprintln!(
        "{mode}: container {container_ip}, guest {guest_ip}/{prefix} mac {mac} gw {gateway} on {tap_name}"
    );

    let (ready_tx, ready_rx) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let server = {
        let stop = stop.clone();
        ns.spawn(move || echo_once(container_ip, ready_tx, stop))
    };
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the echo server in the container did not start");
    let client = {
        let stop = stop.clone();
        let to = SocketAddr::from((uplink_ip, PUBLISHED_HOST));
        outside_ns.spawn(move || published_echo(to, &stop))
    };

    let script = guest_script(gateway, container_ip);
    let run = Vm::run(
        &image,
        &VmConfig {
            tap: &tap_name,
            mac: &mac,
            ip: Ipv4Net::new(guest_ip, prefix).expect("guest prefix"),
            gateway,
            script: &script,
            timeout: VM_TIMEOUT,
        },
    );
    stop.store(true, Ordering::Relaxed);
    let received = server.join().expect("echo server thread panicked");
    let echoed = client.join().expect("outside client thread panicked");
    let devices: Vec<&str> = devices.iter().map(String::as_str).collect();
    let state = network_state(&ns, &devices);
    eprintln!(
        "{mode}: netpath stats after the run:\n{}",
        String::from_utf8_lossy(&d.cli(&["stats"]).stdout)
    );
    let console: Console = run.unwrap_or_else(|e| panic!("{mode}: {e:#}\n{state}"));
    eprintln!(
        "{mode}: the guest's network was up {:.1} s after QEMU started; it powered off after {:.1} s",
        console
            .at("NETPATH-RESULT guest-net ok")
            .unwrap_or_default()
            .as_secs_f64(),
        console.elapsed.as_secs_f64()
    );

    let failed: Vec<_> = [
        "guest-net",
        "ping-gw",
        "ping-container",
        "tcp-stream",
        "published-served",
    ]
    .into_iter()
    .filter(|r| !console.ok(r))
    .collect();
    assert!(
        failed.is_empty(),
        "{mode}: the guest reported failures {failed:?}: {:?}\nconsole:\n{}\n{state}\nserver: {received:?}",
        console.results(),
        console.output
    );
    assert_eq!(
        received,
        Ok(STREAM_BYTES),
        "{mode}: the container's server must receive exactly what the guest sent"
    );
    assert_eq!(console.done().as_deref(), Some("0"), "{}", console.output);
    assert_eq!(
        echoed.as_deref(),
        Ok(GREETING),
        "{mode}: the client behind the uplink must get its bytes back from the guest's published port"
    );
}

#[test]
fn microvm_and_container_on_a_bridge_network() {
    require_root!();
    if !qemu_or_skip(module_path!()) {
        return;
    }
    microvm_talks_to_a_container("bridge", "10.231.0.0/24", [198, 18, 31]);
}

#[test]
fn microvm_and_container_on_a_routed_network() {
    require_root!();
    if !qemu_or_skip(module_path!()) {
        return;
    }
    microvm_talks_to_a_container("routed", "10.232.0.0/24", [198, 18, 32]);
}

/// The cached guest is found again, not rebuilt (its files are the same, untouched), and
/// its manifest names what is in it.
#[test]
fn guest_image_is_cached() {
    // No root needed to read the cache, but building it needs apt-get download; the
    // VM tests above are what need it, so build (or find) it the same way.
    require_root!();
    if !qemu_or_skip(module_path!()) {
        return;
    }
    let first = guest_image().expect("guest image");
    let mtime = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).unwrap();
    let before = (mtime(&first.kernel), mtime(&first.initramfs));
    let again = guest_image().expect("guest image again");
    assert_eq!(
        (&first.kernel, &first.initramfs),
        (&again.kernel, &again.initramfs)
    );
    assert_eq!(
        (mtime(&again.kernel), mtime(&again.initramfs)),
        before,
        "the cached guest was rebuilt"
    );
    assert!(
        again.manifest.contains("kernel linux-image-"),
        "{}",
        again.manifest
    );
    for m in netpath_tests::vm::MODULES {
        assert!(
            again.manifest.contains(&format!("module {m} ")),
            "{}",
            again.manifest
        );
    }
}
