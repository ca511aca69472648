//! The Docker side of the `docker` scenario: `docker` commands against the private
//! dockerd, a network with its containers (removed on drop), readiness probes, the
//! docker-proxy processes and netpath's publish-map entries, and the check that no other
//! dockerd shares the host's Docker iptables chains with it.

use std::{
    fs,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use ipnet::Ipv4Net;
use netpath_tests::engine::{Dockerd, IMAGE};

use super::GUEST_PORT;
use crate::{
    footprint::{bpftool_json, rss_kib},
    proc,
};

/// Bound on one `docker` command.
const DOCKER_TIMEOUT: Duration = Duration::from_secs(120);
/// A started container must answer within this.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound on one probe's connect, and the pause between probes.
pub const PROBE_CONNECT: Duration = Duration::from_millis(100);
pub const PROBE_PAUSE: Duration = Duration::from_millis(2);
/// The maps that hold netpath's published ports.
const PUBLISH_MAPS: [&str; 2] = ["NETPATH_PUBLISH", "NETPATH_PUBLISH6"];
/// busybox httpd in the foreground on [`GUEST_PORT`].
const HTTPD: [&str; 6] = ["httpd", "-f", "-p", "80", "-h", "/www"];

/// `docker ARGS` against `docker`, bounded; returns stdout, trimmed.
pub fn docker_ok(docker: &Dockerd, args: &[&str]) -> Result<String> {
    let out = proc::run_ok(&mut docker.command(args), None, DOCKER_TIMEOUT)?;
    Ok(out.trim().to_owned())
}

/// A Docker network of one run and the containers made on it (named `<network>-<role>`);
/// whatever is left is removed on drop, containers first.
pub struct DockerNet<'d> {
    pub docker: &'d Dockerd,
    name: String,
    pub containers: Vec<String>,
    removed: bool,
}

impl<'d> DockerNet<'d> {
    /// `docker network create -d DRIVER --subnet SUBNET OPTS… NAME`.
    pub fn create(
        docker: &'d Dockerd,
        name: String,
        driver: &str,
        subnet: Ipv4Net,
        opts: &[String],
    ) -> Result<DockerNet<'d>> {
        let subnet = subnet.to_string();
        let mut args = vec!["network", "create", "-d", driver, "--subnet", &subnet];
        args.extend(opts.iter().map(String::as_str));
        args.push(&name);
        docker_ok(docker, &args)?;
        Ok(DockerNet {
            docker,
            name,
            containers: Vec::new(),
            removed: false,
        })
    }

    /// `docker run -d --name <network>-ROLE --network NET --ip IP FLAGS… IMAGE CMD…`;
    /// returns the container's name.
    pub fn run(
        &mut self,
        role: &str,
        ip: Ipv4Addr,
        flags: &[String],
        cmd: &[&str],
    ) -> Result<String> {
        let name = format!("{}-{role}", self.name);
        // Removed on drop even if `docker run` fails half-way.
        self.containers.push(name.clone());
        let ip = ip.to_string();
        let mut args = vec!["run", "-d", "--name", &name, "--network", &self.name];
        args.extend(["--ip", &ip]);
        args.extend(flags.iter().map(String::as_str));
        args.push(IMAGE);
        args.extend(cmd);
        docker_ok(self.docker, &args)?;
        Ok(name)
    }

    /// Runs an httpd container at `ip` and waits (bounded) until it accepts a TCP
    /// connection from the host; returns the time from `docker run` on.
    pub fn run_until_ready(&mut self, role: &str, ip: Ipv4Addr) -> Result<Duration> {
        let start = Instant::now();
        self.run(role, ip, &[], &HTTPD)?;
        let to = SocketAddr::from(SocketAddrV4::new(ip, GUEST_PORT));
        loop {
            if TcpStream::connect_timeout(&to, PROBE_CONNECT).is_ok() {
                return Ok(start.elapsed());
            }
            if start.elapsed() > READY_TIMEOUT {
                bail!(
                    "container {role} ({ip}) did not accept a connection on port {GUEST_PORT} \
                     within {} s of `docker run`",
                    READY_TIMEOUT.as_secs()
                );
            }
            std::thread::sleep(PROBE_PAUSE);
        }
    }

    /// `docker rm -f` of every container made so far.
    pub fn rm_all(&mut self) -> Result<()> {
        if self.containers.is_empty() {
            return Ok(());
        }
        let mut args = vec!["rm", "-f"];
        args.extend(self.containers.iter().map(String::as_str));
        docker_ok(self.docker, &args)?;
        self.containers.clear();
        Ok(())
    }

    /// Removes the containers, then the network.
    pub fn remove(&mut self) -> Result<()> {
        self.rm_all()?;
        docker_ok(self.docker, &["network", "rm", &self.name])?;
        self.removed = true;
        Ok(())
    }
}

impl Drop for DockerNet<'_> {
    fn drop(&mut self) {
        if !self.removed {
            let _ = self.remove();
        }
    }
}

/// The docker-proxy processes forwarding to an address `to` accepts: (pid, VmRSS in KiB).
pub fn docker_proxies(to: impl Fn(Ipv4Addr) -> bool) -> Vec<(u32, f64)> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let forwards = |cmdline: &[u8]| {
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        let proxy = args.first().is_some_and(|a| a.ends_with(b"docker-proxy"));
        let ip = (args.iter().position(|a| *a == b"-container-ip"))
            .and_then(|i| std::str::from_utf8(args.get(i + 1)?).ok()?.parse().ok());
        proxy && ip.is_some_and(&to)
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| forwards(&c)))
        .filter_map(|pid| Some((pid, rss_kib(pid).ok()?)))
        .collect()
}

/// Entries in netpath's publish maps (`bpftool map dump pinned`).
pub fn publish_entries(bpffs: &Path) -> Result<usize> {
    let mut n = 0;
    for map in PUBLISH_MAPS {
        let path = bpffs.join("maps").join(map);
        if path.exists() {
            let dump = bpftool_json(&["-j", "map", "dump", "pinned", &path.to_string_lossy()])?;
            n += dump.as_array().map_or(0, Vec::len);
        }
    }
    Ok(n)
}

/// The running dockerd processes.
pub fn dockerds() -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                c.split(|&b| b == 0)
                    .next()
                    .is_some_and(|a| a.ends_with(b"/dockerd") || a == b"dockerd")
            })
        })
        .collect()
}

/// Fails if a dockerd other than `ours` runs: dockerds share the host's `DOCKER*`
/// iptables chains and each private one removes them when it stops, under the other.
pub fn alone(ours: &[u32]) -> Result<()> {
    let others: Vec<String> = (dockerds().into_iter())
        .filter(|p| !ours.contains(p))
        .map(|p| p.to_string())
        .collect();
    if !others.is_empty() {
        bail!(
            "another dockerd runs (pid {}): it shares Docker's iptables chains with the \
             bench's, and whichever stops first removes them under the other; run the \
             scenario when it is gone",
            others.join(" ")
        );
    }
    Ok(())
}

/// Whether Docker's `nat` chain `DOCKER` is there (another private dockerd stopping
/// removes it).
pub fn chains_present() -> bool {
    let mut c = std::process::Command::new("iptables");
    proc::run_bounded(
        c.args(["-t", "nat", "-S", "DOCKER"]),
        None,
        proc::CMD_TIMEOUT,
    )
    .is_ok_and(|o| o.status.success())
}
