//! The final sweep (everything named with the run's prefix, the daemon's state and pins,
//! the scratch directory, leftover child processes, `ip_forward`) and the check that
//! nothing is left; and, at start, the removal of what a killed earlier run left.

use std::{
    fs,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use serde::Serialize;

use super::{
    Ctx,
    ctx::{IP_FORWARD, prefix_pid},
    daemon::{self, BenchDaemon},
    proc,
};

#[derive(Debug, Default, Serialize)]
pub struct CleanupReport {
    /// What was checked.
    pub checked: Vec<String>,
    /// What the sweep had to remove (the guards should have).
    pub swept: Vec<String>,
    /// Host settings put back as they were before the bench.
    pub restored: Vec<String>,
    /// What is still there after the sweep: the check failed.
    pub leftovers: Vec<String>,
    /// Errors met on the way.
    pub problems: Vec<String>,
}

/// Network namespaces whose names pass `keep`.
fn netns_matching(keep: impl Fn(&str) -> bool) -> Vec<String> {
    let out = proc::ip(&["netns", "list"]).unwrap_or_default();
    out.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| keep(n))
        .map(str::to_owned)
        .collect()
}

/// Host links (name, alias) passing `keep`.
fn links_matching(keep: impl Fn(&str, Option<&str>) -> bool) -> Vec<String> {
    let out = proc::ip(&["-j", "-d", "link", "show"]).unwrap_or_default();
    let links: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    links
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| {
            let name = l["ifname"].as_str()?;
            keep(name, l["ifalias"].as_str()).then(|| name.to_owned())
        })
        .collect()
}

/// Live or zombie child processes of the bench: (pid, command).
fn children() -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (head, tail) = stat.rsplit_once(')')?;
            let comm = head.split_once('(')?.1.to_owned();
            let ppid: i32 = tail.split_whitespace().nth(1)?.parse().ok()?;
            (ppid == me).then_some((pid, comm))
        })
        .collect()
}

fn kill_and_reap(pid: i32) {
    let pid = nix::unistd::Pid::from_raw(pid);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(pid, None);
}

/// Removes what the run with `prefix` created and checks that nothing is left.
pub fn final_sweep(ctx: &mut Ctx) -> CleanupReport {
    let mut rep = CleanupReport {
        problems: ctx.stop_daemon(),
        ..Default::default()
    };
    let prefix = ctx.prefix.clone();
    let bridge_prefix = format!("{}{prefix}", netpath::config::LINK_PREFIX);
    let paths = ctx.daemon_paths();
    let tag = format!("{}{}:", netpath::config::ALIAS_PREFIX, paths.instance());
    let foreign = ctx.foreign_links.clone();
    let ours = |name: &str, alias: Option<&str>| {
        name.starts_with(&prefix)
            || name.starts_with(&bridge_prefix)
            || foreign.iter().any(|f| f == name)
            || alias.is_some_and(|a| a.starts_with(&tag))
    };

    for (pid, comm) in children() {
        kill_and_reap(pid);
        rep.swept.push(format!("process {pid} ({comm})"));
    }

    let nss = netns_matching(|n| n.starts_with(&prefix));
    if !nss.is_empty() {
        let lines: Vec<String> = nss.iter().map(|n| format!("netns del {n}")).collect();
        proc::ip_batch_force(&lines, Duration::from_secs(300));
        rep.swept.push(format!("{} network namespaces", nss.len()));
    }

    // Namespaces are torn down asynchronously: their veths may linger a moment.
    let start = Instant::now();
    while !links_matching(ours).is_empty() && start.elapsed() < Duration::from_secs(30) {
        thread::sleep(Duration::from_millis(200));
    }
    let links = links_matching(ours);
    for l in &links {
        let _ = proc::ip(&["link", "del", l]);
    }
    if !links.is_empty() {
        rep.swept.push(format!("links {}", links.join(" ")));
    }

    if paths.state_dir.exists() || ctx.bpffs.exists() {
        match daemon::reset(&ctx.opts.netpath_bin, &paths) {
            Ok(()) => rep
                .swept
                .push("the daemon's state and pins (netpath reset)".into()),
            Err(e) => rep.problems.push(format!("{e:#}")),
        }
    }
    if ctx.bpffs.exists()
        && let Err(e) = netpath::datapath::remove_pins(&ctx.bpffs)
    {
        rep.problems.push(format!("{}: {e}", ctx.bpffs.display()));
    }
    if let Err(e) = fs::remove_dir_all(&ctx.tmp)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        rep.problems.push(format!("{}: {e}", ctx.tmp.display()));
    }

    let forward_now = fs::read_to_string(IP_FORWARD)
        .ok()
        .map(|s| s.trim().to_owned());
    if let Some(before) = &ctx.ip_forward_before
        && forward_now.as_ref() != Some(before)
    {
        match fs::write(IP_FORWARD, format!("{before}\n")) {
            Ok(()) => rep.restored.push(format!(
                "net.ipv4.ip_forward back to {before} (the netpath daemon and the CNI bridge \
                 plugin set it to 1)"
            )),
            Err(e) => rep.problems.push(format!("restoring {IP_FORWARD}: {e}")),
        }
    }

    // The check.
    rep.checked = vec![
        format!("network namespaces `{prefix}*`"),
        format!("host links `{prefix}*` and `{bridge_prefix}*`"),
        format!("links tagged `{tag}` (the daemon's)"),
        format!("{} CNI host veths", ctx.foreign_links.len()),
        format!("bpffs {}", ctx.bpffs.display()),
        format!("scratch dir {}", ctx.tmp.display()),
        "child processes (daemon, iperf3, sockperf)".into(),
        "net.ipv4.ip_forward".into(),
    ];
    let nss = netns_matching(|n| n.starts_with(&prefix));
    if !nss.is_empty() {
        rep.leftovers
            .push(format!("network namespaces: {}", nss.join(" ")));
    }
    let links = links_matching(ours);
    if !links.is_empty() {
        rep.leftovers.push(format!("links: {}", links.join(" ")));
    }
    for p in [&ctx.bpffs, &ctx.tmp] {
        if p.exists() {
            rep.leftovers.push(p.display().to_string());
        }
    }
    let kids = children();
    if !kids.is_empty() {
        rep.leftovers.push(format!(
            "processes: {}",
            kids.iter()
                .map(|(p, c)| format!("{p} ({c})"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let forward_now = fs::read_to_string(IP_FORWARD)
        .ok()
        .map(|s| s.trim().to_owned());
    if ctx.ip_forward_before.is_some() && forward_now != ctx.ip_forward_before {
        rep.leftovers.push(format!(
            "net.ipv4.ip_forward is {} (was {})",
            forward_now.unwrap_or_default(),
            ctx.ip_forward_before.clone().unwrap_or_default()
        ));
    }
    rep
}

/// True if `pid` is a running netpath-bench.
fn bench_alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .is_ok_and(|c| c.trim_end().starts_with("netpath-bench"))
}

/// Removes what earlier bench runs that no longer run (killed with SIGKILL, say) left:
/// their namespaces, links, daemon state and pins, scratch directories. Returns what it
/// removed.
pub fn sweep_stale(netpath_bin: &Path) -> Vec<String> {
    let me = std::process::id();
    let stale = |name: &str| prefix_pid(name).is_some_and(|pid| pid != me && !bench_alive(pid));
    let mut removed = Vec::new();

    let nss = netns_matching(stale);
    if !nss.is_empty() {
        let lines: Vec<String> = nss.iter().map(|n| format!("netns del {n}")).collect();
        proc::ip_batch_force(&lines, Duration::from_secs(300));
        removed.push(format!("{} network namespaces", nss.len()));
    }

    let tmp = std::env::temp_dir();
    let dirs: Vec<(PathBuf, String)> = fs::read_dir(&tmp)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_owned();
            let id = name.strip_prefix("netpath-bench-")?.to_owned();
            stale(&format!("{id}-")).then(|| (e.path(), id))
        })
        .collect();
    for (dir, id) in &dirs {
        let bpffs = Path::new("/sys/fs/bpf").join(format!("netpath-bench-{id}"));
        let paths = BenchDaemon::paths_for(&dir.join("daemon"), &bpffs);
        if paths.state_dir.exists() || bpffs.exists() {
            let _ = daemon::reset(netpath_bin, &paths);
        }
        let _ = fs::remove_dir_all(dir);
        removed.push(dir.display().to_string());
    }

    thread::sleep(Duration::from_millis(if nss.is_empty() { 0 } else { 500 }));
    let links = links_matching(|name, _| {
        stale(name)
            || name
                .strip_prefix(netpath::config::LINK_PREFIX)
                .is_some_and(stale)
    });
    for l in &links {
        let _ = proc::ip(&["link", "del", l]);
    }
    if !links.is_empty() {
        removed.push(format!("links {}", links.join(" ")));
    }
    removed
}
