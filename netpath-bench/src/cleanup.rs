//! The final sweep (everything named with the run's prefix, the daemon's state and pins,
//! the scratch directory, leftover child processes, `ip_forward`) and the check that
//! nothing is left; and, at start, the removal of what a killed earlier run left.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde::Serialize;

use super::{
    Ctx,
    ctx::{IP_FORWARD, IP6_FORWARD, prefix_pid},
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

    // What the CNI `bridge` and `portmap` plugins left in the host's iptables (their DELs
    // and the `cni` scenario's finish should have removed it all).
    let cni_net = ctx.subnets.cni_bridge();
    let ours_rule = |l: &str| l.contains(&prefix) || mentions_net24(l, cni_net);
    if let Some(before) = &ctx.iptables_before {
        match iptables_remove(ours_rule) {
            Ok(r) if !r.is_empty() => rep.swept.push(format!("iptables rules: {}", r.join("; "))),
            Ok(_) => {}
            Err(e) => rep.problems.push(format!("removing iptables rules: {e:#}")),
        }
        match remove_hostport_chains(before) {
            Ok(c) if !c.is_empty() => rep
                .swept
                .push(format!("portmap's iptables chains {}", c.join(" "))),
            Ok(_) => {}
            Err(e) => rep.problems.push(format!("portmap's chains: {e:#}")),
        }
        match remove_new_empty_nat_tables(before) {
            Ok(t) if !t.is_empty() => rep.swept.push(format!("empty nat tables {}", t.join(" "))),
            Ok(_) => {}
            Err(e) => rep.problems.push(format!("empty nat tables: {e:#}")),
        }
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

    let forwarding = [
        ("net.ipv4.ip_forward", IP_FORWARD, &ctx.ip_forward_before),
        (
            "net.ipv6.conf.all.forwarding",
            IP6_FORWARD,
            &ctx.ip6_forward_before,
        ),
    ];
    for (name, path, before) in forwarding {
        let now = fs::read_to_string(path).ok().map(|s| s.trim().to_owned());
        if let Some(before) = before
            && now.as_ref() != Some(before)
        {
            match fs::write(path, format!("{before}\n")) {
                Ok(()) => rep.restored.push(format!(
                    "{name} back to {before} (the netpath daemon and the CNI bridge plugin \
                     set it to 1)"
                )),
                Err(e) => rep.problems.push(format!("restoring {path}: {e}")),
            }
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
        "net.ipv6.conf.all.forwarding".into(),
    ];
    if let Some(before) = &ctx.iptables_before {
        rep.checked.push(format!(
            "iptables rules mentioning `{prefix}` or {cni_net}; portmap's CNI-HOSTPORT-* \
             chains and nat tables unless there before"
        ));
        match iptables_save() {
            Some(save) => {
                let rules = iptables_rules(&save, ours_rule);
                if !rules.is_empty() {
                    rep.leftovers
                        .push(format!("iptables rules: {}", rules.join("; ")));
                }
                let chains = new_hostport_chains(&save, before);
                if !chains.is_empty() {
                    rep.leftovers
                        .push(format!("iptables chains: {}", chains.join(" ")));
                }
                if !before.contains(NAT_PREROUTING)
                    && iptables_chains(&save).contains(NAT_PREROUTING)
                {
                    rep.leftovers
                        .push("an IPv4 nat table that was not there before".into());
                }
            }
            None => rep.problems.push("cannot run iptables-save".into()),
        }
    }
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
    for (name, path, before) in forwarding {
        let now = fs::read_to_string(path).ok().map(|s| s.trim().to_owned());
        if before.is_some() && now != *before {
            rep.leftovers.push(format!(
                "{name} is {} (was {})",
                now.unwrap_or_default(),
                before.clone().unwrap_or_default()
            ));
        }
    }
    rep
}

/// File in a run's scratch directory listing the iptables chains there were before the
/// CNI `portmap` plugin first ran (for the sweep after a killed run).
pub const IPTABLES_BEFORE: &str = "iptables-before";

/// Processes running `<dir>/netpath daemon …` (the daemon of the run whose scratch dir is
/// `dir`).
fn stale_daemons(dir: &Path) -> Vec<i32> {
    let exe = dir.join("netpath");
    let Ok(procs) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let mut args = c.split(|&b| b == 0);
                args.next() == Some(exe.as_os_str().as_encoded_bytes())
                    && args.next() == Some(b"daemon".as_slice())
            })
        })
        .collect()
}

/// True while `pid` runs (a zombie has finished).
fn running(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .and_then(|(_, t)| t.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

/// SIGTERM, up to 10 s to finish, then SIGKILL.
fn stop_process(pid: i32) {
    use nix::sys::signal::{Signal, kill};
    let p = nix::unistd::Pid::from_raw(pid);
    let _ = kill(p, Signal::SIGTERM);
    let start = Instant::now();
    while running(pid) && start.elapsed() < Duration::from_secs(10) {
        thread::sleep(Duration::from_millis(50));
    }
    if running(pid) {
        let _ = kill(p, Signal::SIGKILL);
        thread::sleep(Duration::from_millis(200));
    }
}

/// True if `pid` is a running netpath-bench (a killed one may linger as a zombie).
fn bench_alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .is_ok_and(|c| c.trim_end().starts_with("netpath-bench"))
        && running(pid as i32)
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
    let mut iptables_befores = Vec::new();
    for (dir, id) in &dirs {
        // A killed bench leaves its daemon running (its own process group): stop it, or
        // `netpath reset` would leave its attachments and pins.
        for pid in stale_daemons(dir) {
            stop_process(pid);
            removed.push(format!("daemon process {pid}"));
        }
        let bpffs = Path::new("/sys/fs/bpf").join(format!("netpath-bench-{id}"));
        let paths = BenchDaemon::paths_for(&dir.join("daemon"), &bpffs);
        if paths.state_dir.exists() || bpffs.exists() {
            let _ = daemon::reset(netpath_bin, &paths);
        }
        if let Ok(text) = fs::read_to_string(dir.join(IPTABLES_BEFORE)) {
            iptables_befores.push(text.lines().map(str::to_owned).collect::<BTreeSet<_>>());
        }
        let _ = fs::remove_dir_all(dir);
        removed.push(dir.display().to_string());
    }

    // CNI plugins' iptables rules of killed runs (named in their comments; only when
    // iptables-save shows any, so hosts without such rules pay one exec), then portmap's
    // shared chains if such a run made them and nothing uses them.
    let stale_rule = |l: &str| cni_comment_names(l).iter().any(|n| stale(n));
    if iptables_save().is_some_and(|s| !iptables_rules(&s, stale_rule).is_empty())
        && let Ok(r) = iptables_remove(stale_rule)
        && !r.is_empty()
    {
        removed.push(format!("iptables rules: {}", r.join("; ")));
    }
    for before in &iptables_befores {
        if let Ok(c) = remove_hostport_chains(before)
            && !c.is_empty()
        {
            removed.push(format!("portmap's iptables chains {}", c.join(" ")));
        }
        if let Ok(t) = remove_new_empty_nat_tables(before)
            && !t.is_empty()
        {
            removed.push(format!("empty nat tables {}", t.join(" ")));
        }
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

/// `iptables-save` (all tables) as (table, rule and chain lines); `None` when it cannot
/// run (no iptables).
pub fn iptables_save() -> Option<Vec<(String, Vec<String>)>> {
    let out = proc::run_bounded(
        &mut std::process::Command::new("iptables-save"),
        None,
        proc::CMD_TIMEOUT,
    )
    .ok()
    .filter(|o| o.status.success())?;
    let mut tables: Vec<(String, Vec<String>)> = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(t) = line.strip_prefix('*') {
            tables.push((t.to_owned(), Vec::new()));
        } else if (line.starts_with(':') || line.starts_with("-A "))
            && let Some((_, lines)) = tables.last_mut()
        {
            lines.push(line.to_owned());
        }
    }
    Some(tables)
}

/// The chains of a save, as `table:chain`.
pub fn iptables_chains(save: &[(String, Vec<String>)]) -> BTreeSet<String> {
    save.iter()
        .flat_map(|(t, lines)| {
            lines.iter().filter_map(move |l| {
                let name = l.strip_prefix(':')?.split_whitespace().next()?;
                Some(format!("{t}:{name}"))
            })
        })
        .collect()
}

/// The rules (`table: -A …`) for which `ours` holds.
pub fn iptables_rules(save: &[(String, Vec<String>)], ours: impl Fn(&str) -> bool) -> Vec<String> {
    save.iter()
        .flat_map(|(t, lines)| {
            lines
                .iter()
                .filter(|l| l.starts_with("-A ") && ours(l))
                .map(move |l| format!("{t}: {l}"))
        })
        .collect()
}

/// The chain a rule jumps to (`-j X`).
fn jump_target(rule: &str) -> Option<&str> {
    let mut words = rule.split_whitespace();
    while let Some(w) = words.next() {
        if w == "-j" || w == "-g" {
            return words.next();
        }
    }
    None
}

/// `iptables-restore --noflush` of `text` (a `*table … COMMIT` text).
fn iptables_restore(text: &str) -> anyhow::Result<()> {
    proc::run_ok(
        std::process::Command::new("iptables-restore").arg("--noflush"),
        Some(text.as_bytes()),
        Duration::from_secs(60),
    )
    .map(drop)
}

/// Removes the rules for which `ours` holds, and the per-container CNI chains they jump to
/// (`CNI-…`, not portmap's shared `CNI-HOSTPORT-*`): what the `bridge` and `portmap`
/// plugins' DEL would have removed. Returns the removed rules.
pub fn iptables_remove(ours: impl Fn(&str) -> bool) -> anyhow::Result<Vec<String>> {
    let Some(save) = iptables_save() else {
        return Ok(Vec::new());
    };
    let mut removed = Vec::new();
    let (mut deletes, mut chains) = (String::new(), String::new());
    for (table, lines) in &save {
        let rules: Vec<&String> = lines
            .iter()
            .filter(|l| l.starts_with("-A ") && ours(l))
            .collect();
        if rules.is_empty() {
            continue;
        }
        deletes.push_str(&format!("*{table}\n"));
        let mut targets = BTreeSet::new();
        for r in &rules {
            deletes.push_str(&format!("-D {}\n", &r[3..]));
            removed.push(format!("{table}: {r}"));
            if let Some(t) = jump_target(r)
                && t.starts_with("CNI-")
                && !t.starts_with("CNI-HOSTPORT-")
            {
                targets.insert(t.to_owned());
            }
        }
        deletes.push_str("COMMIT\n");
        if !targets.is_empty() {
            chains.push_str(&format!("*{table}\n"));
            for t in &targets {
                chains.push_str(&format!("-F {t}\n-X {t}\n"));
            }
            chains.push_str("COMMIT\n");
        }
    }
    if !deletes.is_empty() {
        iptables_restore(&deletes)?;
    }
    if !chains.is_empty() {
        iptables_restore(&chains)?;
    }
    Ok(removed)
}

/// portmap's shared chains (`CNI-HOSTPORT-*`, in the nat table) that are not in `before`.
fn new_hostport_chains(save: &[(String, Vec<String>)], before: &BTreeSet<String>) -> Vec<String> {
    iptables_chains(save)
        .into_iter()
        .filter(|c| c.starts_with("nat:CNI-HOSTPORT-") && !before.contains(c))
        .collect()
}

/// Removes portmap's shared `CNI-HOSTPORT-*` chains (and the jumps to them) that were not
/// there `before`, when no container uses them any more (`CNI-HOSTPORT-DNAT` has no
/// rule): portmap's DEL leaves them. Returns what it removed.
/// The base chain whose presence in `iptables-save` means an IPv4 nat table exists.
const NAT_PREROUTING: &str = "nat:PREROUTING";

/// Deletes the IPv4 and IPv6 `nat` tables if the IPv4 one was not there before the run
/// (`before`, the chains then) and they hold no rule now: what the CNI plugins leave
/// behind (they create the tables; nothing deletes them). An empty nat table is not
/// harmless: its hooks turn connection tracking on for every flow of the host, which
/// slows whatever runs after. Returns the tables removed.
pub fn remove_new_empty_nat_tables(before: &BTreeSet<String>) -> anyhow::Result<Vec<String>> {
    if before.contains(NAT_PREROUTING) {
        return Ok(Vec::new());
    }
    let mut removed = Vec::new();
    for (save_cmd, family) in [("iptables-save", "ip"), ("ip6tables-save", "ip6")] {
        let Ok(out) = std::process::Command::new(save_cmd)
            .args(["-t", "nat"])
            .output()
        else {
            continue;
        };
        let text = String::from_utf8_lossy(&out.stdout);
        let exists = text.lines().any(|l| l.starts_with(":PREROUTING"));
        let empty = !text.lines().any(|l| l.starts_with("-A "));
        if exists && empty {
            let st = std::process::Command::new("nft")
                .args(["delete", "table", family, "nat"])
                .status()
                .context("running nft (Debian package nftables)")?;
            if !st.success() {
                bail!("`nft delete table {family} nat` failed");
            }
            removed.push(format!("{family}:nat"));
        }
    }
    Ok(removed)
}

pub fn remove_hostport_chains(before: &BTreeSet<String>) -> anyhow::Result<Vec<String>> {
    let Some(save) = iptables_save() else {
        return Ok(Vec::new());
    };
    let new = new_hostport_chains(&save, before);
    if new.is_empty() {
        return Ok(Vec::new());
    }
    let nat: &[String] = save
        .iter()
        .find(|(t, _)| t == "nat")
        .map_or(&[], |(_, l)| l.as_slice());
    if nat.iter().any(|l| l.starts_with("-A CNI-HOSTPORT-DNAT ")) {
        bail!(
            "portmap's CNI-HOSTPORT-DNAT chain still has rules (containers with published ports)"
        );
    }
    let names: Vec<&str> = new.iter().map(|c| &c["nat:".len()..]).collect();
    let mut deletes = String::from("*nat\n");
    for l in nat.iter().filter(|l| l.starts_with("-A ")) {
        let chain = l[3..].split_whitespace().next().unwrap_or("");
        if names.contains(&chain) || jump_target(l).is_some_and(|t| names.contains(&t)) {
            deletes.push_str(&format!("-D {}\n", &l[3..]));
        }
    }
    deletes.push_str("COMMIT\n");
    iptables_restore(&deletes)?;
    let mut chains = String::from("*nat\n");
    for n in &names {
        chains.push_str(&format!("-X {n}\n"));
    }
    chains.push_str("COMMIT\n");
    iptables_restore(&chains)?;
    Ok(new)
}

/// True if `line` mentions an address of `net` (a /24: `a.b.c.` not preceded by a digit
/// or a dot).
pub fn mentions_net24(line: &str, net: ipnet::Ipv4Net) -> bool {
    let o = net.network().octets();
    let needle = format!("{}.{}.{}.", o[0], o[1], o[2]);
    line.match_indices(&needle).any(|(i, _)| {
        !line[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_digit() || c == '.')
    })
}

/// The bench names (`nb…-…`) in the CNI comments of a rule (`name: "X" id: "Y"`, quotes
/// escaped in a save).
fn cni_comment_names(rule: &str) -> Vec<&str> {
    if !rule.contains("--comment") {
        return Vec::new();
    }
    rule.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'))
        .filter(|w| w.starts_with("nb") && prefix_pid(w).is_some())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iptables_lines_are_read() {
        let r = r#"-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \"nb1a-br3\" id: \"nb1a-k4\"" -m multiport --dports 18181 -j CNI-DN-0123abcd"#;
        assert_eq!(jump_target(r), Some("CNI-DN-0123abcd"));
        assert_eq!(cni_comment_names(r), vec!["nb1a-br3", "nb1a-k4"]);
        assert!(cni_comment_names("-A X -s nb1a-k4 -j ACCEPT").is_empty());
        let net: ipnet::Ipv4Net = "10.152.2.0/24".parse().unwrap();
        assert!(mentions_net24("-A CNI-DN-1 -s 10.152.2.0/24 -j X", net));
        assert!(mentions_net24("--to-destination 10.152.2.5:80", net));
        assert!(!mentions_net24("-s 110.152.2.5/32", net));
        assert!(!mentions_net24("-s 10.152.20.5/32", net));
    }
}
