//! Real containerd (Debian's 1.6, a private instance) running tasks with
//! `ctr run --cni`, netpath's conflist first in `/etc/cni/net.d`: the task gets a netpath
//! address and reaches a server in another namespace through netpath's masquerade. In
//! the foreground `ctr` sends DEL with an empty `CNI_NETNS` when the task ends; with `-d`
//! it never sends DEL, and netpath's sweep releases the endpoint once the task's
//! namespace, and the veth pair with it, is gone. Nothing is left either way.

use std::{
    net::{Ipv4Addr, SocketAddr},
    time::Duration,
};

use netpath_tests::{
    Daemon, NetNs, OutsideLink, engine::Containerd, outside::first_peer, require_root, wait_until,
};
use serde_json::{Value, json};

const SUBNET: &str = "10.253.0.0/24";
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(198, 18, 253, 1);
const UPLINK: Ipv4Addr = Ipv4Addr::new(198, 18, 253, 2);
const PORT: u16 = 9253;

fn endpoint_count(np: &Daemon) -> usize {
    let ls: Value = serde_json::from_str(&np.ok(&["ls", "--json"])).unwrap();
    ls["endpoints"].as_array().map_or(0, Vec::len)
}

#[test]
fn ctr_run_cni_gets_a_netpath_address_and_leaves_nothing() {
    require_root!();
    let outside = NetNs::new("ctout");
    let up = OutsideLink::new(&outside, UPLINK, OUTSIDE);
    let np = Daemon::start();
    let net = netpath_tests::unique("ctd");
    np.ok(&[
        "network", "create", &net, "--subnet", SUBNET, "--uplink", &up.name,
    ]);
    let conflist = json!({"cniVersion": "1.0.0", "name": net,
        "plugins": [{"type": "netpath-cni", "socket": np.paths.socket}]});
    let ctr = Containerd::start(&conflist);
    let rootfs = ctr.rootfs();
    let rootfs = rootfs.to_str().unwrap();

    // Foreground: the task's address, a connection out through the masquerade.
    let script = format!("ip -o -4 addr show eth0; echo out | nc -w 5 {OUTSIDE} {PORT}");
    let mut shown = String::new();
    let at = SocketAddr::from((OUTSIDE, PORT));
    let peer = first_peer(&outside, at, Duration::from_secs(30), || {
        shown = ctr.ok(&[
            "run", "--rm", "--cni", "--rootfs", rootfs, "fg", "/bin/sh", "-c", &script,
        ]);
    });
    assert!(shown.contains("inet 10.253.0."), "{shown}");
    assert_eq!(peer.ip(), UPLINK, "masqueraded source");
    // DEL (with no namespace) came as the task ended.
    assert_eq!(endpoint_count(&np), 0);

    // Detached: no DEL ever; the endpoint goes when the task's namespace does.
    ctr.ok(&[
        "run",
        "-d",
        "--cni",
        "--rootfs",
        rootfs,
        "bg",
        "/bin/sleep",
        "600",
    ]);
    assert_eq!(endpoint_count(&np), 1);
    ctr.ok(&["task", "kill", "-s", "KILL", "bg"]);
    let removed = || ctr.output(&["task", "rm", "bg"]).status.success();
    wait_until(Duration::from_secs(10), "task bg stays", removed);
    ctr.ok(&["container", "rm", "bg"]);
    let released = || endpoint_count(&np) == 0;
    wait_until(Duration::from_secs(15), "the endpoint stays", released);
    let ports: Value = serde_json::from_str(&np.ok(&["port", "ls", "--json"])).unwrap();
    assert_eq!(ports.as_array().map(Vec::len), Some(0), "{ports}");
}
