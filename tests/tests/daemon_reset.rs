//! The main job end to end: `netpath daemon` sets up the default network and the
//! datapath, survives its own exit, is adopted by a restart, and `netpath reset` leaves
//! no link, attachment, program or pin behind.

use std::process::Child;

use aya::programs::{ProgramInfo, SchedClassifier, TcAttachType, loaded_programs};
use netpath::{config, ebpf::PROGRAMS};
use netpath_tests::{DaemonPaths, require_root, run, spawn_daemon};

fn start_daemon(paths: &DaemonPaths) -> (Child, Vec<String>) {
    spawn_daemon(&paths.args())
}

fn stop(mut child: Child, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "daemon exited with {status} on {signal}");
}

/// Kills a leftover daemon and resets, even when an assertion failed midway.
struct Cleanup<'a>(&'a DaemonPaths);
impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = self.0.netpath(&["reset"]);
        let _ = std::fs::remove_dir_all(self.0.state_dir.parent().unwrap());
    }
}

fn our_program_ids(paths: &DaemonPaths) -> Vec<u32> {
    PROGRAMS
        .iter()
        .map(|p| {
            ProgramInfo::from_pin(paths.bpffs.join("progs").join(p.name))
                .expect("program pin")
                .id()
        })
        .collect()
}

fn tcx_ingress_ids(ifname: &str) -> Vec<u32> {
    SchedClassifier::query_tcx(ifname, TcAttachType::Ingress)
        .map(|(_, progs)| progs.iter().map(|p| p.id()).collect())
        .unwrap_or_default()
}

#[test]
fn daemon_sets_up_outlives_itself_and_reset_removes_everything() {
    require_root!();
    let bridge = config::bridge_name(config::DEFAULT_NETWORK);
    let links = String::from_utf8(run(&["ip", "-o", "link", "show"]).stdout).unwrap();
    assert!(
        !links.contains(&format!(" {bridge}:")),
        "{bridge} already exists: another netpath is running here; stop it and run `netpath reset`"
    );
    let paths = DaemonPaths::new();
    let _cleanup = Cleanup(&paths);

    let (child, lines) = start_daemon(&paths);
    let text = lines.join("\n");
    assert!(text.contains("10.200.0.0/16 gateway 10.200.0.1"), "{text}");
    assert!(text.contains("datapath  loaded"), "{text}");
    let ids = our_program_ids(&paths);
    let tc_id = ids[1];
    assert_eq!(
        tcx_ingress_ids(&bridge),
        vec![tc_id],
        "tc program not on {bridge}"
    );
    let addr =
        String::from_utf8(run(&["ip", "-o", "addr", "show", "dev", &bridge]).stdout).unwrap();
    assert!(addr.contains("10.200.0.1/16"), "{addr}");

    // SIGINT: the daemon exits 0 and the datapath stays.
    stop(child, nix::sys::signal::Signal::SIGINT);
    assert_eq!(
        tcx_ingress_ids(&bridge),
        vec![tc_id],
        "attachment gone after exit"
    );
    assert_eq!(our_program_ids(&paths), ids);

    // Restart: the pinned datapath is adopted, not reloaded.
    let (child, lines) = start_daemon(&paths);
    let text = lines.join("\n");
    assert!(text.contains("datapath  adopted"), "{text}");
    assert!(text.contains("[adopted]"), "{text}");
    assert_eq!(our_program_ids(&paths), ids, "programs were reloaded");
    // reset refuses while the daemon runs, and changes nothing.
    let out = paths.netpath(&["reset"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("daemon is running"));
    assert_eq!(tcx_ingress_ids(&bridge), vec![tc_id]);
    stop(child, nix::sys::signal::Signal::SIGTERM);

    let out = paths.netpath(&["reset", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["links_removed"], serde_json::json!([bridge]));

    // Nothing left: no tagged link, no bridge, no pin, no state, no program in the kernel.
    let links = String::from_utf8(run(&["ip", "-o", "link", "show"]).stdout).unwrap();
    assert!(!links.contains(&format!(" {bridge}:")), "{links}");
    let instance_tag = format!(
        "netpath:{}",
        netpath::config::Paths {
            state_dir: paths.state_dir.clone(),
            socket: paths.socket.clone(),
            bpffs: paths.bpffs.clone(),
        }
        .instance()
    );
    let details = String::from_utf8(run(&["ip", "-d", "link", "show"]).stdout).unwrap();
    assert!(!details.contains(&instance_tag), "{details}");
    assert!(
        !paths.bpffs.exists(),
        "pins left in {}",
        paths.bpffs.display()
    );
    assert!(!paths.state_dir.exists(), "state left");
    let loaded: Vec<u32> = loaded_programs()
        .filter_map(Result::ok)
        .map(|p| p.id())
        .collect();
    for id in ids {
        assert!(
            !loaded.contains(&id),
            "program {id} still loaded after reset"
        );
    }

    // A second reset is harmless.
    let out = paths.netpath(&["reset"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
