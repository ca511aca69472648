//! Bad input gets one clear line on stderr and a non-zero exit, never a panic trace.

use std::process::{Command, Output};

use netpath_tests::{DaemonPaths, netpath_bin, require_root};

fn assert_one_line_error(out: &Output, expect: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "exit status {} for {expect:?}",
        out.status
    );
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "not one line: {stderr}"
    );
    assert!(stderr.starts_with("netpath: "), "{stderr}");
    assert!(stderr.contains(expect), "expected {expect:?} in {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn unknown_subcommand() {
    let out = Command::new(netpath_bin())
        .arg("frobnicate")
        .output()
        .unwrap();
    assert_one_line_error(&out, "unrecognized subcommand 'frobnicate'");
}

#[test]
fn unknown_flag() {
    let out = Command::new(netpath_bin())
        .args(["daemon", "--nope"])
        .output()
        .unwrap();
    assert_one_line_error(&out, "--nope");
}

#[test]
fn bpffs_not_mounted() {
    require_root!();
    let dir = std::env::temp_dir().join("netpath-not-bpffs");
    let state = std::env::temp_dir().join("netpath-test-nobpffs-state");
    let out = Command::new(netpath_bin())
        .arg("daemon")
        .arg("--bpffs")
        .arg(&dir)
        .arg("--state-dir")
        .arg(&state)
        .output()
        .unwrap();
    assert_one_line_error(&out, "is not on a bpffs mount");
    assert!(
        !dir.exists() && !state.exists(),
        "the failed daemon created files"
    );
}

#[test]
fn missing_privileges() {
    require_root!();
    let paths = DaemonPaths::new();
    // Drop every capability and become nobody: what an unprivileged user gets.
    for cmd in [&["daemon"][..], &["stats"], &["reset"]] {
        let out = Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
                "--",
            ])
            .arg(netpath_bin())
            .args(cmd)
            .args(paths.args())
            .output()
            .unwrap();
        assert_one_line_error(&out, "needs root (CAP_NET_ADMIN and CAP_BPF)");
    }
    assert!(!paths.state_dir.exists() && !paths.bpffs.exists());
}

#[test]
fn stats_without_a_datapath() {
    require_root!();
    let paths = DaemonPaths::new();
    let out = paths.netpath(&["stats"]);
    assert_one_line_error(&out, "the netpath daemon is not running (no answer on");
    assert_one_line_error(&out, "and no datapath is pinned under");
}
