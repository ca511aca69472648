//! Who may use the API socket: it is 0660, owned by root and the `--socket-group`
//! group (default `netpath` where that group exists, else root's own); a member of the
//! group gets answers without sudo, anyone else a refusal that names the group to join.
//! The clients run as `nobody` (uid 65534), with or without the group `nogroup`
//! (gid 65534, on every Debian host).

use std::{
    os::unix::{fs::MetadataExt, process::CommandExt},
    process::{Command, Output},
};

use netpath_tests::{Daemon, DaemonPaths, netpath_bin, require_root};

const NOBODY: u32 = 65534;

/// `netpath ls` against `d` as uid `nobody` with primary group `gid` (and no other).
fn ls_as_nobody(d: &Daemon, gid: u32) -> Output {
    Command::new(netpath_bin())
        .arg("ls")
        .args(d.paths.args())
        .uid(NOBODY)
        .gid(gid)
        .output()
        .expect("run netpath as nobody")
}

#[test]
fn the_socket_group_may_use_the_api_and_anyone_else_is_told_which_group_to_join() {
    require_root!();
    let d = Daemon::start_args(&["--socket-group", "nogroup"], &[]);
    let meta = std::fs::metadata(&d.paths.socket).expect("the API socket");
    assert_eq!(
        (meta.mode() & 0o777, meta.uid(), meta.gid()),
        (0o660, 0, NOBODY),
        "mode, owner, group"
    );
    let member = ls_as_nobody(&d, NOBODY);
    assert!(
        member.status.success(),
        "a member of the socket's group is refused: {}",
        String::from_utf8_lossy(&member.stderr)
    );
    // gid 1 (daemon): not the socket's group.
    let other = ls_as_nobody(&d, 1);
    let said = String::from_utf8_lossy(&other.stderr);
    assert!(!other.status.success(), "a non-member got an answer");
    assert!(
        said.contains("Permission denied") && said.contains("members of group nogroup"),
        "{said}"
    );
}

#[test]
fn without_a_socket_group_the_api_is_root_only_and_the_refusal_says_so() {
    require_root!();
    if nix::unistd::Group::from_name("netpath")
        .ok()
        .flatten()
        .is_some()
    {
        println!("skipped: this host has a group netpath, the default socket group");
        return;
    }
    let d = Daemon::start();
    let meta = std::fs::metadata(&d.paths.socket).expect("the API socket");
    assert_eq!((meta.mode() & 0o777, meta.gid()), (0o660, 0));
    let out = ls_as_nobody(&d, NOBODY);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("root only"),
        "{said}"
    );
    // An unknown group is refused at start, before the socket is bound.
    let other = DaemonPaths::new();
    let bad = other.netpath(&["daemon", "--socket-group", "no-such-group-here"]);
    let said = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && said.contains("group no-such-group-here does not exist"),
        "{said}"
    );
    assert!(!other.socket.exists(), "a socket was bound");
}
