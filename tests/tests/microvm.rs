//! A real microVM guest (QEMU, TCG) on a netpath TAP talks to a container endpoint on the
//! same dual-stack network, in bridge and in routed mode (issue #4, acceptance 3): it
//! pings its gateway and the container over IPv4 and IPv6, and streams 2 MiB over TCP
//! of each family to a server in the container, which echoes them back. Whether the
//! packets take the kernel path or netpath's fast path, the guest must see all of it
//! work and the servers must receive every byte. The guest's neighbour discovery for
//! its IPv6 gateway is answered by the host's kernel (the bridge, or in routed mode the
//! TAP's host side, which holds the gateway /128): a capture on the TAP counts the
//! solicitations and advertisements, the answering device's ICMPv6 counters show the
//! kernel sent them, and the guest's neighbour table holds the gateway at the bridge's
//! (the TAP's) MAC. The guest also serves a port published for it (issue #5:
//! publishing works for TAPs): a client in a namespace behind the network's uplink
//! reaches it through the uplink's address and gets its bytes echoed.
//!
//! From inside the guest, forged IPv6 (a router advertisement, a neighbour advertisement
//! for the gateway, a datagram from an address not its own; `netpath_tests::guard6`),
//! sent with the guest's `/bin/sendraw` through its virtio NIC, enters the host at the
//! TAP and goes no further: the container and the host do not see it, and each raises
//! its drop counter by exactly the number sent.
//!
//! Root only; needs qemu-system-x86_64 (skipped with a reason without it, except under
//! CI=true) and, on first run, `apt-get download` and a C compiler for the guest (see
//! `netpath_tests::vm`).

use std::{
    io::{ErrorKind, Read, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use ipnet::{Ipv4Net, Ipv6Net};
use netpath_tests::{
    Daemon, Ipv6ForwardingRestored, NetNs, OutsideLink,
    guard6::{self, Sender, ep_ip6, parse_mac},
    raw::Ipv6Capture,
    require_root, unique,
    vm::{Console, Vm, VmConfig, guest_image, qemu_or_skip},
};
use serde_json::Value;

/// The container's echo servers: IPv4, IPv6.
const PORT: u16 = 7471;
const PORT6: u16 = 7472;
/// The guest's port published on the uplink's address as [`PUBLISHED_HOST`].
const PUBLISHED_GUEST: u16 = 80;
const PUBLISHED_HOST: u16 = 18280;
/// What the outside client sends to the guest's published port.
const GREETING: &[u8] = b"hello from behind the uplink\n";
/// What the guest sends over each family: 32 blocks of 64 KiB.
const STREAM_BYTES: usize = 32 * 65536;
/// Boot to power-off, including the transfers; a TCG boot takes about 4 s.
const VM_TIMEOUT: Duration = Duration::from_secs(150);
/// ICMPv6 neighbour solicitation and advertisement.
const ND_NS: u8 = 135;
const ND_NA: u8 = 136;

/// The guest's script: each step prints `NETPATH-RESULT <name> ok|fail`.
fn guest_script(gateway: Ipv4Addr, container: Ipv4Addr, gw6: Ipv6Addr, c6: Ipv6Addr) -> String {
    format!(
        r#"
# The published port: an echo server for one connection, served while the rest runs.
nc -l -p {PUBLISHED_GUEST} -e cat &
NC=$!
check ping-gw ping -c 3 -w 10 {gateway}
check ping6-gw ping6 -c 3 -w 10 {gw6}
# Right after: the gateway as neighbour discovery found it.
check neigh6 ip -6 neigh show dev eth0
check ping-container ping -c 3 -w 10 {container}
check ping6-container ping6 -c 3 -w 10 {c6}
dd if=/dev/urandom of=/tmp/data bs=65536 count={blocks} 2>/dev/null
echo "sending $(wc -c < /tmp/data) bytes"
# nc sends stdin, half-closes, and prints what the server echoes until it closes.
check tcp-stream sh -c 'timeout 30 nc -w 10 {container} {PORT} < /tmp/data > /tmp/back && cmp /tmp/data /tmp/back && echo "echoed $(wc -c < /tmp/back) bytes"'
check tcp6-stream sh -c 'timeout 30 nc -w 10 {c6} {PORT6} < /tmp/data > /tmp/back6 && cmp /tmp/data /tmp/back6 && echo "echoed $(wc -c < /tmp/back6) bytes"'
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

/// Accepts one connection on `ip:port` (in the calling thread's namespace), reads to
/// EOF, echoes everything back and closes. Returns the byte count. Gives up when `stop`
/// is set before a connection came.
fn echo_once(
    ip: IpAddr,
    port: u16,
    ready: mpsc::Sender<()>,
    stop: Arc<AtomicBool>,
) -> Result<usize, String> {
    let listener = TcpListener::bind((ip, port)).map_err(|e| format!("bind {ip}:{port}: {e}"))?;
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

/// [`echo_once`] on a thread in `ns`, listening when this returns.
fn echo_server(
    ns: &NetNs,
    ip: IpAddr,
    port: u16,
    stop: &Arc<AtomicBool>,
) -> std::thread::JoinHandle<Result<usize, String>> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let stop = stop.clone();
    let server = ns.spawn(move || echo_once(ip, port, ready_tx, stop));
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("the echo server on {ip}:{port} did not start"));
    server
}

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn field<'a>(v: &'a Value, name: &str) -> &'a str {
    v[name]
        .as_str()
        .unwrap_or_else(|| panic!("no string field {name} in {v}"))
}

fn sysfs_mac(dev: &str) -> [u8; 6] {
    let path = format!("/sys/class/net/{dev}/address");
    parse_mac(std::fs::read_to_string(&path).expect(&path).trim())
}

fn mac_str(m: [u8; 6]) -> String {
    m.map(|b| format!("{b:02x}")).join(":")
}

/// Counter `name` of device `dev`'s IPv6 statistics (/proc/net/dev_snmp6/DEV).
fn snmp6(dev: &str, name: &str) -> u64 {
    let path = format!("/proc/net/dev_snmp6/{dev}");
    let text = std::fs::read_to_string(&path).expect(&path);
    text.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(char::is_whitespace)?;
            (k == name).then(|| v.trim().parse().expect("a number"))
        })
        .unwrap_or_else(|| panic!("no {name} in {path}"))
}

/// The host's and the container's view of the network, for a failing run.
fn network_state(ns: &NetNs, devices: &[&str]) -> String {
    let mut cmds: Vec<Vec<String>> = [
        "ip -br addr",
        "ip route",
        "ip -6 route",
        "ip neigh",
        "sysctl net.ipv4.ip_forward net.ipv6.conf.all.forwarding",
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
    for c in ["ip addr", "ip route", "ip -6 route", "ip neigh"] {
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

/// A daemon, a dual-stack network of `mode` with one container and one TAP on it.
struct Setup {
    d: Daemon,
    /// The container's namespace and its endpoint.
    ns: NetNs,
    container: Value,
    tap: Value,
    tap_name: String,
    /// The device that holds the gateway: the bridge, or in routed mode the TAP.
    gateway_dev: String,
    /// Every host-side device of the network, for [`network_state`].
    devices: Vec<String>,
    _forwarding: Ipv6ForwardingRestored,
}

impl Setup {
    fn new(mode: &'static str, subnet: &str, subnet6: &str, uplink: Option<&str>) -> Setup {
        let forwarding = Ipv6ForwardingRestored::new();
        let d = Daemon::start();
        let net = unique("vm");
        let mut args = vec![
            "network", "create", &net, "--subnet", subnet, "--subnet", subnet6, "--mode", mode,
            "--json",
        ];
        if let Some(up) = uplink {
            args.extend(["--uplink", up]);
        }
        let network = json(&d.ok(&args));
        let bridge = network["bridge"].as_str().map(str::to_owned);
        let mut devices: Vec<String> = bridge.iter().cloned().collect();
        let ns = NetNs::with_ipv6("vmc");
        let container = d.add_endpoint(&net, &ns);
        devices.push(field(&container, "host_ifname").to_owned());
        let tap_name = unique("vmt");
        let tap = json(&d.ok(&["tap", "add", &net, "--name", &tap_name, "--json"]));
        assert_eq!(field(&tap, "host_ifname"), tap_name);
        devices.push(tap_name.clone());
        Setup {
            d,
            ns,
            container,
            gateway_dev: bridge.unwrap_or_else(|| tap_name.clone()),
            tap,
            tap_name,
            devices,
            _forwarding: forwarding,
        }
    }

    /// The TAP's guest: its config for `script` and `files`.
    fn vm<'a>(&'a self, script: &'a str, files: &'a [(&'a str, Vec<u8>)]) -> VmConfig<'a> {
        let ip: Ipv4Addr = field(&self.tap, "ip").parse().expect("guest ip");
        let prefix = self.tap["prefix_len"].as_u64().expect("prefix_len") as u8;
        let gw6: Ipv6Addr = field(&self.tap, "gateway6").parse().expect("gateway6");
        VmConfig {
            tap: &self.tap_name,
            mac: field(&self.tap, "mac"),
            ip: Ipv4Net::new(ip, prefix).expect("guest prefix"),
            gateway: field(&self.tap, "gateway").parse().expect("gateway"),
            ipv6: Some((Ipv6Net::new(ep_ip6(&self.tap), 128).expect("/128"), gw6)),
            script,
            files,
            timeout: VM_TIMEOUT,
        }
    }

    fn state(&self) -> String {
        let devices: Vec<&str> = self.devices.iter().map(String::as_str).collect();
        network_state(&self.ns, &devices)
    }
}

/// Neighbour discovery for the guest's IPv6 gateway, as a capture on its TAP saw it.
#[derive(Debug, Default)]
struct GatewayNd {
    /// Solicitations from the guest for the gateway's address.
    solicits: usize,
    /// Advertisements of the gateway's address to the guest: (Ethernet source, target
    /// link-layer address option, router flag).
    adverts: Vec<([u8; 6], [u8; 6], bool)>,
}

fn gateway_nd(frames: &[Vec<u8>], guest_mac: [u8; 6], gateway: Ipv6Addr) -> GatewayNd {
    let mut nd = GatewayNd::default();
    for f in frames.iter().filter(|f| f.len() >= 78 && f[20] == 58) {
        if f[62..78] != gateway.octets() {
            continue;
        }
        let (dst, src) = (&f[..6], &f[6..12]);
        match f[54] {
            ND_NS if src == guest_mac => nd.solicits += 1,
            ND_NA if dst == guest_mac || dst[0] == 0x33 => {
                // The target link-layer address option, if the first option is one.
                let tlla: [u8; 6] = if f.len() >= 86 && f[78] == 2 && f[79] == 1 {
                    f[80..86].try_into().expect("6 bytes")
                } else {
                    [0; 6]
                };
                nd.adverts
                    .push((src.try_into().expect("6 bytes"), tlla, f[58] & 0x80 != 0));
            }
            _ => {}
        }
    }
    nd
}

/// The guest's neighbour entry for `gateway` in its `neigh6` step: (MAC, state).
fn guest_neighbour(console: &Console, gateway: Ipv6Addr) -> Option<(String, String)> {
    console.output.lines().find_map(|l| {
        let words: Vec<&str> = l.strip_prefix("[neigh6] ")?.split_whitespace().collect();
        if words.first()?.parse::<Ipv6Addr>().ok()? != gateway {
            return None;
        }
        let at = words.iter().position(|w| *w == "lladdr")?;
        Some((words.get(at + 1)?.to_string(), words.last()?.to_string()))
    })
}

/// `outside`: the /24 (first three octets) of the link from the host's uplink to the
/// client's namespace — the host end `.1`, the client `.2`.
fn microvm_talks_to_a_container(mode: &'static str, subnet: &str, subnet6: &str, outside: [u8; 3]) {
    let image = guest_image().expect("building the microVM guest image");
    let outside_ns = NetNs::new("vmo");
    let [a, b, c] = outside;
    let uplink_ip = Ipv4Addr::new(a, b, c, 1);
    let uplink = OutsideLink::new(&outside_ns, uplink_ip, Ipv4Addr::new(a, b, c, 2));
    let s = Setup::new(mode, subnet, subnet6, Some(&uplink.name));
    let d = &s.d;
    let container_ip: Ipv4Addr = field(&s.container, "ip").parse().expect("container ip");
    let container_ip6 = ep_ip6(&s.container);
    let cfg_probe = s.vm("", &[]);
    let (gateway, (guest_ip6, gw6)) = (cfg_probe.gateway, cfg_probe.ipv6.expect("dual-stack"));
    let guest_mac = parse_mac(cfg_probe.mac);
    // The gateway's MAC as the guest must learn it: the bridge's, or the TAP's own.
    let gateway_mac = sysfs_mac(&s.gateway_dev);
    d.ok(&[
        "port",
        "publish",
        field(&s.tap, "id"),
        "-p",
        &format!("{PUBLISHED_HOST}:{PUBLISHED_GUEST}"),
    ]);
    eprintln!(
        "{mode}: container {container_ip} {container_ip6}, guest {} {guest_ip6} mac {} gw {gateway} {gw6} ({}) on {}",
        cfg_probe.ip,
        cfg_probe.mac,
        mac_str(gateway_mac),
        s.tap_name
    );

    let stop = Arc::new(AtomicBool::new(false));
    let server = echo_server(&s.ns, container_ip.into(), PORT, &stop);
    let server6 = echo_server(&s.ns, container_ip6.into(), PORT6, &stop);
    let client = {
        let stop = stop.clone();
        let to = SocketAddr::from((uplink_ip, PUBLISHED_HOST));
        outside_ns.spawn(move || published_echo(to, &stop))
    };
    let out_na = || snmp6(&s.gateway_dev, "Icmp6OutNeighborAdvertisements");
    let (tap_capture, out_na_before) = (Ipv6Capture::start(None, &s.tap_name), out_na());

    let script = guest_script(gateway, container_ip, gw6, container_ip6);
    let run = Vm::run(&image, &s.vm(&script, &[]));
    stop.store(true, Ordering::Relaxed);
    let on_tap = tap_capture.stop();
    let kernel_adverts = out_na() - out_na_before;
    let (received, received6) = (
        server.join().expect("echo server thread panicked"),
        server6.join().expect("IPv6 echo server thread panicked"),
    );
    let echoed = client.join().expect("outside client thread panicked");
    let state = s.state();
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
        "ping6-gw",
        "neigh6",
        "ping-container",
        "ping6-container",
        "tcp-stream",
        "tcp6-stream",
    ]
    .into_iter()
    .filter(|r| !console.ok(r))
    .collect();
    assert!(
        failed.is_empty(),
        "{mode}: the guest reported failures {failed:?}: {:?}\nconsole:\n{}\n{state}\nservers: {received:?} {received6:?}",
        console.results(),
        console.output
    );
    assert_eq!(
        (received, received6),
        (Ok(STREAM_BYTES), Ok(STREAM_BYTES)),
        "{mode}: the container's servers must receive exactly what the guest sent"
    );

    // Who answered the guest's neighbour discovery for its gateway, and with what.
    let nd = gateway_nd(&on_tap, guest_mac, gw6);
    eprintln!(
        "{mode}: on the TAP, {} solicitations from the guest for {gw6}, {} advertisements of it \
         to the guest {:?} (Ethernet source, target link-layer address, router flag); \
         {kernel_adverts} neighbour advertisements sent by the kernel on {}; {} IPv6 ICMP/UDP \
         frames captured on the TAP in all",
        nd.solicits,
        nd.adverts.len(),
        nd.adverts
            .iter()
            .map(|(s, t, r)| format!("({}, {}, {r})", mac_str(*s), mac_str(*t)))
            .collect::<Vec<_>>(),
        s.gateway_dev,
        on_tap.len()
    );
    assert!(nd.solicits >= 1, "{mode}: the guest never solicited {gw6}");
    assert!(
        !nd.adverts.is_empty()
            && nd
                .adverts
                .iter()
                .all(|&(_, tlla, router)| tlla == gateway_mac && router),
        "{mode}: the gateway must be advertised at {} with the router flag: {nd:?}",
        mac_str(gateway_mac)
    );
    assert!(
        kernel_adverts >= nd.adverts.len() as u64,
        "{mode}: {} advertisements on the TAP, the kernel sent {kernel_adverts} on {}",
        nd.adverts.len(),
        s.gateway_dev
    );
    let (mac, nud) = guest_neighbour(&console, gw6).unwrap_or_else(|| {
        panic!(
            "{mode}: no neighbour {gw6} in the guest:\n{}",
            console.output
        )
    });
    assert_eq!(
        mac,
        mac_str(gateway_mac),
        "{mode}: the guest's neighbour {gw6}"
    );
    assert!(
        nud == "REACHABLE" || nud == "STALE",
        "{mode}: the guest's neighbour {gw6} is {nud}"
    );

    assert!(
        console.ok("published-served"),
        "{mode}: the guest's published port served no connection: {:?}",
        console.results()
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
    microvm_talks_to_a_container("bridge", "10.231.0.0/24", "fd6a::/64", [198, 18, 31]);
}

#[test]
fn microvm_and_container_on_a_routed_network() {
    require_root!();
    if !qemu_or_skip(module_path!()) {
        return;
    }
    microvm_talks_to_a_container("routed", "10.232.0.0/24", "fd6b::/64", [198, 18, 32]);
}

/// The guest sends each forged frame three times, then the control frames.
fn forged_ipv6_from_a_guest(mode: &'static str, subnet: &str, subnet6: &str) {
    let image = guest_image().expect("building the microVM guest image");
    let s = Setup::new(mode, subnet, subnet6, None);
    let from = Sender::of(&s.tap);
    let to = ep_ip6(&s.container).octets();
    // Off the link, through the gateway (the guest is a /128).
    let gateway_mac = sysfs_mac(&s.gateway_dev);
    let names = [
        "forged-ra",
        "forged-na",
        "forged-src",
        "control-na",
        "control-udp",
    ];
    let frames: Vec<Vec<u8>> = guard6::forged(&from, to, gateway_mac)
        .into_iter()
        .chain(guard6::control(&from, to, gateway_mac))
        .collect();
    let files: Vec<(&str, Vec<u8>)> = names.iter().copied().zip(frames).collect();
    let forged = names[..3]
        .iter()
        .map(|n| format!("/{n}"))
        .collect::<Vec<_>>()
        .join(" ");
    let script = format!(
        "check forged sendraw eth0 {forged} {forged} {forged}\n\
         check control sendraw eth0 /control-na /control-udp\n\
         sleep 1\n"
    );
    let before = guard6::guard_drops(&s.d);
    let in_na = || snmp6(&s.tap_name, "Icmp6InNeighborAdvertisements");
    let in_ra = || snmp6(&s.tap_name, "Icmp6InRouterAdvertisements");
    let tap_before = (in_ra(), in_na());
    let captures = [
        Ipv6Capture::start(Some(&s.ns), "eth0"),
        Ipv6Capture::start(None, &s.gateway_dev),
        Ipv6Capture::start(None, &s.tap_name),
    ];
    let run = Vm::run(&image, &s.vm(&script, &files));
    let [at_container, at_host, at_tap] = captures.map(|c| guard6::seen(&c.stop(), &from));
    let state = s.state();
    let console = run.unwrap_or_else(|e| panic!("{mode}: {e:#}\n{state}"));
    assert!(
        console.ok("forged") && console.ok("control"),
        "{mode}: the guest could not send: {:?}\n{}",
        console.results(),
        console.output
    );
    eprintln!(
        "{mode}: the TAP saw {at_tap:?}, the container {at_container:?}, {} {at_host:?}",
        s.gateway_dev
    );
    // All of it entered the host at the TAP (a capture there sees frames before tc).
    assert_eq!(at_tap.forged(), (3, 3, 3), "{mode}: what the guest sent");
    assert_eq!(
        (at_tap.control_adverts, at_tap.control_datagrams),
        (1, 1),
        "{mode}"
    );
    assert_eq!(
        at_container.forged(),
        (0, 0, 0),
        "{mode}: forged frames reached the container"
    );
    assert_eq!(
        at_container.control_datagrams, 1,
        "{mode}: {at_container:?}"
    );
    if mode == "bridge" {
        assert_eq!(
            at_host.forged(),
            (0, 0, 0),
            "{mode}: forged frames reached the host's bridge"
        );
        assert_eq!(at_host.control_adverts, 1, "{mode}: {at_host:?}");
    } else {
        // The TAP is the host's side of the link: what passed tc reached the host's
        // IPv6 stack on it, and only the control advertisement did.
        assert_eq!(
            (in_ra() - tap_before.0, in_na() - tap_before.1),
            (0, 1),
            "{mode}: router and neighbour advertisements the host took on {}",
            s.tap_name
        );
    }
    let after = guard6::guard_drops(&s.d);
    for (i, r) in guard6::REASONS.iter().enumerate() {
        assert_eq!(after[i] - before[i], 3, "{mode}: {r}");
    }
}

#[test]
fn forged_ipv6_from_a_guest_on_a_bridge_network() {
    require_root!();
    if !qemu_or_skip(module_path!()) {
        return;
    }
    forged_ipv6_from_a_guest("bridge", "10.236.0.0/24", "fd6c::/64");
}

#[test]
fn forged_ipv6_from_a_guest_on_a_routed_network() {
    require_root!();
    if !qemu_or_skip(module_path!()) {
        return;
    }
    forged_ipv6_from_a_guest("routed", "10.237.0.0/24", "fd6d::/64");
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
