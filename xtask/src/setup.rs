//! `cargo xtask setup`: everything the build and the tests need on this machine. Idempotent,
//! and quick when everything is already there.
//!
//! 1. Debian packages the tests and the daemon use ([`DEBIAN_PACKAGES`]).
//! 2. The workspace's pinned stable has rustfmt and clippy; the dated nightly named in
//!    `netpath-ebpf/NIGHTLY` is installed with rust-src (for `-Z build-std=core`), clippy
//!    and rustfmt (`rustfmt.toml` uses unstable options, as aya's does).
//! 3. bpf-linker, built against that nightly's own libLLVM, under `<workspace>/.tools/`.

use std::{
    env,
    ffi::OsString,
    fs, io,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::{self, Command},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    cmd::{self, step},
    workspace::Workspace,
};

/// Debian packages the project needs (network tooling for the tests, bpftool for
/// inspecting loaded programs). The only list of them.
pub const DEBIAN_PACKAGES: &[&str] = &[
    "iproute2",
    "iputils-ping",
    "iperf3",
    "bpftool",
    "ethtool",
    "tcpdump",
    "procps",
    "sockperf",
    "containernetworking-plugins",
    // The microVM test boots a guest under QEMU (TCG); the guest's kernel and busybox
    // are downloaded by the test itself (`apt-get download`), not installed.
    "qemu-system-x86",
    "xz-utils",
    // The guest's raw-frame sender (tests/src/vm/sendraw.c) is linked statically.
    "gcc",
    "libc6-dev",
    // The CNI test runs real podman (CNI backend, runc) on a busybox root filesystem.
    "podman",
    "runc",
    "busybox-static",
    // The Docker test runs a private dockerd (Docker 20.10) with netpath as its network
    // and IPAM driver; containerd runs its containers (and `ctr run --cni` in the
    // containerd test).
    "docker.io",
    "containerd",
    // The bench removes the empty `nat` tables the CNI `portmap` plugin leaves behind
    // (iptables-nft cannot delete a table; `nft` can).
    "nftables",
    // The metrics test lints the exposition with `promtool check metrics` and has a
    // private Prometheus server scrape the daemon.
    "prometheus",
];

/// Components the workspace's pinned stable (rust-toolchain.toml) needs.
const STABLE_COMPONENTS: &[&str] = &["rustfmt", "clippy"];
/// Components the pinned nightly needs.
const NIGHTLY_COMPONENTS: &[&str] = &["rust-src", "clippy", "rustfmt"];

const BPF_LINKER_VERSION: &str = "0.13.0";

/// What later steps need from setup.
pub struct Env {
    /// The pinned nightly (contents of `netpath-ebpf/NIGHTLY`).
    pub nightly: String,
    /// The bpf-linker binary.
    pub bpf_linker: PathBuf,
    /// PATH with bpf-linker's directory first.
    pub path: OsString,
}

impl Env {
    /// Applies the environment to a child process (bpf-linker first on PATH, so that rustc,
    /// run by build scripts, finds it).
    pub fn apply<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        // NETPATH_REQUIRE_EBPF: netpath's build script fails instead of building without
        // the eBPF object (what a plain `cargo test` without bpf-linker does).
        cmd.env("PATH", &self.path).env("NETPATH_REQUIRE_EBPF", "1")
    }
}

pub fn setup(ws: &Workspace) -> Result<Env> {
    step(
        "setup/apt",
        &format!("Debian packages ({})", DEBIAN_PACKAGES.join(" ")),
        debian_packages,
    )?;
    step(
        "setup/stable",
        &format!(
            "workspace toolchain components ({})",
            STABLE_COMPONENTS.join(", ")
        ),
        || stable_components(ws),
    )?;
    let nightly = ws.nightly()?;
    step(
        "setup/nightly",
        &format!("{nightly} with {}", NIGHTLY_COMPONENTS.join(", ")),
        || nightly_toolchain(ws, &nightly),
    )?;
    step("setup/bpffs", "bpffs mounted at /sys/fs/bpf", bpffs)?;
    let bpf_linker = step(
        "setup/bpf-linker",
        &format!("bpf-linker {BPF_LINKER_VERSION} against {nightly}'s LLVM"),
        || bpf_linker(ws, &nightly),
    )?;
    let bin_dir = bpf_linker
        .parent()
        .context("bpf-linker path has no parent")?;
    let path = prepend_path(bin_dir)?;
    Ok(Env {
        nightly,
        bpf_linker,
        path,
    })
}

/// `BPF_FS_MAGIC` from `linux/magic.h`.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Mounts bpffs at /sys/fs/bpf if nothing is mounted there (the daemon pins its
/// datapath under it; some machines, like minimal VMs, boot without it).
fn bpffs() -> Result<()> {
    let path = c"/sys/fs/bpf";
    let mut st = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `path` is NUL-terminated and `st` is writable memory of the right type.
    #[expect(
        clippy::unnecessary_cast,
        reason = "f_type's width differs between libcs"
    )]
    let mounted = unsafe { libc::statfs(path.as_ptr(), st.as_mut_ptr()) } == 0
        // SAFETY: statfs returned 0, so `st` is initialised.
        && unsafe { st.assume_init() }.f_type as i64 == BPF_FS_MAGIC;
    if mounted {
        println!("    already mounted");
        return Ok(());
    }
    if !is_root() {
        println!("    not mounted, and not root: root tests will skip (run as root to mount it)");
        return Ok(());
    }
    cmd::run(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

// ---------------------------------------------------------------------------------------
// Debian packages

fn debian_packages() -> Result<()> {
    let missing = missing_debian_packages()?;
    if missing.is_empty() {
        println!("    all installed");
        return Ok(());
    }
    let list = missing.join(" ");
    if !is_root() {
        bail!(
            "missing Debian packages: {list}; install them with `sudo apt-get update && sudo \
             apt-get install -y --no-install-recommends {list}` (or run xtask as root)"
        );
    }
    println!("    missing: {list}");
    cmd::run(Command::new("apt-get").arg("update"))?;
    cmd::run(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing),
    )?;
    let still = missing_debian_packages()?;
    if !still.is_empty() {
        bail!(
            "apt-get succeeded but these are still not installed: {}",
            still.join(" ")
        );
    }
    Ok(())
}

fn missing_debian_packages() -> Result<Vec<&'static str>> {
    // One dpkg-query for all of them. It exits non-zero when some package is unknown to dpkg
    // (never installed): those simply do not appear in its output.
    let out = cmd::capture(
        Command::new("dpkg-query")
            .args(["-W", "-f=${Package}\\t${Status}\\n"])
            .args(DEBIAN_PACKAGES),
    )
    .context("this step needs a Debian-based system (dpkg-query)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let installed: Vec<&str> = stdout
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .filter(|(_, status)| *status == "install ok installed")
        .map(|(name, _)| name.split(':').next().unwrap_or(name))
        .collect();
    Ok(DEBIAN_PACKAGES
        .iter()
        .copied()
        .filter(|p| !installed.contains(p))
        .collect())
}

// ---------------------------------------------------------------------------------------
// Rust toolchains

fn host_triple(ws: &Workspace) -> Result<String> {
    let out = cmd::stdout_of(ws.command("rustc").arg("-vV"))?;
    out.lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(|h| h.trim().to_owned())
        .context("`rustc -vV` printed no host line")
}

/// Whether `name` (as rustup lists it, e.g. `clippy-x86_64-unknown-linux-gnu` or
/// `nightly-2026-05-20-x86_64-unknown-linux-gnu`) is `wanted` (possibly with the host suffix).
fn same_name(name: &str, wanted: &str, host: &str) -> bool {
    name == wanted
        || name
            .strip_prefix(wanted)
            .and_then(|rest| rest.strip_prefix('-'))
            == Some(host)
}

/// Which of `components` are not installed in `toolchain` (None: the workspace's).
fn missing_components(
    ws: &Workspace,
    toolchain: Option<&str>,
    components: &[&'static str],
    host: &str,
) -> Result<Vec<&'static str>> {
    let mut list = ws.command("rustup");
    list.args(["component", "list", "--installed"]);
    if let Some(toolchain) = toolchain {
        list.args(["--toolchain", toolchain]);
    }
    let installed = cmd::stdout_of(&mut list)?;
    Ok(components
        .iter()
        .copied()
        .filter(|c| !installed.lines().any(|l| same_name(l.trim(), c, host)))
        .collect())
}

fn stable_components(ws: &Workspace) -> Result<()> {
    let host = host_triple(ws)?;
    let missing = missing_components(ws, None, STABLE_COMPONENTS, &host)?;
    if missing.is_empty() {
        println!("    all installed");
        return Ok(());
    }
    cmd::run(
        ws.command("rustup")
            .args(["component", "add"])
            .args(&missing),
    )
}

fn nightly_toolchain(ws: &Workspace, nightly: &str) -> Result<()> {
    let host = host_triple(ws)?;
    let toolchains = cmd::stdout_of(ws.command("rustup").args(["toolchain", "list"]))?;
    let present = toolchains
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .any(|name| same_name(name, nightly, &host));
    if !present {
        return cmd::run(ws.command("rustup").args([
            "toolchain",
            "install",
            nightly,
            "--profile",
            "minimal",
            "--component",
            &NIGHTLY_COMPONENTS.join(","),
        ]));
    }
    let missing = missing_components(ws, Some(nightly), NIGHTLY_COMPONENTS, &host)?;
    if missing.is_empty() {
        println!("    installed, with all components");
        return Ok(());
    }
    cmd::run(
        ws.command("rustup")
            .args(["component", "add", "--toolchain", nightly])
            .args(&missing),
    )
}

// ---------------------------------------------------------------------------------------
// bpf-linker

/// The nightly's libLLVM, and what the bpf-linker build built against it is called.
struct Llvm {
    /// `$SYSROOT/lib/libLLVM.so.<version>`.
    so: PathBuf,
    /// Its file name, e.g. `libLLVM.so.22.1-rust-1.97.0-nightly`.
    file_name: String,
    /// A file-name-safe id derived from it: names the prefix and install dirs.
    id: String,
    /// LLVM major version, for bpf-linker's `llvm-<major>` feature.
    major: u32,
}

fn nightly_llvm(ws: &Workspace, nightly: &str) -> Result<Llvm> {
    let sysroot = cmd::stdout_of(
        ws.command("rustc")
            .arg(format!("+{nightly}"))
            .args(["--print", "sysroot"]),
    )?;
    let lib = Path::new(sysroot.trim()).join("lib");
    let mut found = Vec::new();
    for entry in fs::read_dir(&lib).with_context(|| format!("cannot list {}", lib.display()))? {
        let entry = entry.with_context(|| format!("cannot list {}", lib.display()))?;
        if let Some(name) = entry.file_name().to_str()
            && name.starts_with("libLLVM.so.")
        {
            found.push(name.to_owned());
        }
    }
    let [file_name] = found.as_slice() else {
        bail!(
            "expected exactly one libLLVM.so.* in {}, found {found:?}",
            lib.display()
        );
    };
    let version = &file_name["libLLVM.so.".len()..];
    let major: u32 = version
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|m| m.parse().ok())
        .with_context(|| format!("no LLVM major version in {file_name}"))?;
    let id = file_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    Ok(Llvm {
        so: lib.join(file_name),
        file_name: file_name.clone(),
        id,
        major,
    })
}

/// Whether `bin --version` runs; returns what it printed.
fn linker_version(bin: &Path) -> Option<String> {
    let out = Command::new(bin).arg("--version").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn bpf_linker(ws: &Workspace, nightly: &str) -> Result<PathBuf> {
    let llvm = nightly_llvm(ws, nightly)?;
    let tools = ws.tools_dir();
    let root = tools.join(format!("bpf-linker-{}", llvm.id));
    let bin = root.join("bin/bpf-linker");
    if let Some(version) = linker_version(&bin) {
        println!("    {version} at {}", bin.display());
        return Ok(bin);
    }

    // An LLVM prefix holding just the nightly's libLLVM, under both names the build and the
    // loader look for. The linker keeps an rpath into it, so it stays where it is.
    let prefix = tools.join(format!("llvm-{}", llvm.id));
    let prefix_lib = prefix.join("lib");
    fs::create_dir_all(&prefix_lib)
        .with_context(|| format!("cannot create {}", prefix_lib.display()))?;
    for name in ["libLLVM.so", llvm.file_name.as_str()] {
        ensure_symlink(&llvm.so, &prefix_lib.join(name))?;
    }

    // Install into a private directory and move it into place at the end, so an
    // interrupted or concurrent build never leaves a half-installed linker behind.
    let staging = tools.join(format!(".bpf-linker-{}.tmp-{}", llvm.id, process::id()));
    remove_dir_if_exists(&staging)?;
    let install = |locked: bool| {
        let mut c = ws.command("cargo");
        // The staging bin dir goes on PATH only to spare us cargo's "add it to your PATH".
        c.env("PATH", prepend_path(&staging.join("bin"))?)
            .env("LLVM_PREFIX", &prefix)
            .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION]);
        if locked {
            c.arg("--locked");
        }
        c.args(["--no-default-features", "--features"])
            .arg(format!("llvm-{}", llvm.major))
            .arg("--root")
            .arg(&staging);
        cmd::run(&mut c)
    };
    if let Err(err) = install(true) {
        println!(
            "    `cargo install --locked` failed ({err:#}); retrying without --locked \
             (dependencies resolved afresh)"
        );
        install(false)?;
    }

    match fs::rename(&staging, &root) {
        Ok(()) => {}
        Err(_) if linker_version(&bin).is_some() => {
            // Another xtask finished the same build first; keep its copy.
            remove_dir_if_exists(&staging)?;
        }
        Err(_) => {
            // A linker that no longer runs is in the way (its libLLVM moved, say: the
            // check above failed for it): the new build replaces it.
            remove_dir_if_exists(&root)?;
            fs::rename(&staging, &root).with_context(|| {
                format!("cannot move {} to {}", staging.display(), root.display())
            })?;
        }
    }
    let version = linker_version(&bin)
        .with_context(|| format!("{} --version fails after installing it", bin.display()))?;
    println!("    built {version} at {}", bin.display());
    Ok(bin)
}

fn ensure_symlink(target: &Path, link: &Path) -> Result<()> {
    if fs::read_link(link).is_ok_and(|t| t == target) {
        return Ok(());
    }
    match fs::remove_file(link) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot replace {}", link.display())),
    }
    match symlink(target, link) {
        Ok(()) => Ok(()),
        // Lost a race with a concurrent setup making the same link.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e)
            .with_context(|| format!("cannot link {} -> {}", link.display(), target.display())),
    }
}

fn remove_dir_if_exists(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", dir.display())),
    }
}

/// PATH with `dir` first (and not repeated later).
fn prepend_path(dir: &Path) -> Result<OsString> {
    let current = env::var_os("PATH").unwrap_or_default();
    let rest = env::split_paths(&current).filter(|p| p != dir);
    env::join_paths(std::iter::once(dir.to_path_buf()).chain(rest))
        .with_context(|| format!("cannot put {} on PATH", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_with_or_without_host() {
        let host = "x86_64-unknown-linux-gnu";
        assert!(same_name("rust-src", "rust-src", host));
        assert!(same_name("clippy-x86_64-unknown-linux-gnu", "clippy", host));
        assert!(same_name(
            "nightly-2026-05-20-x86_64-unknown-linux-gnu",
            "nightly-2026-05-20",
            host
        ));
        assert!(!same_name(
            "nightly-2026-05-20-x86_64-unknown-linux-gnu",
            "nightly",
            host
        ));
        assert!(!same_name(
            "rust-std-x86_64-unknown-linux-gnu",
            "rust-src",
            host
        ));
    }

    #[test]
    fn path_prepend_is_idempotent() {
        let dir = Path::new("/nonexistent/xtask-test/bin");
        let once = prepend_path(dir).unwrap();
        let first = env::split_paths(&once).next().unwrap();
        assert_eq!(first, dir);
        assert_eq!(env::split_paths(&once).filter(|p| p == dir).count(), 1);
    }
}
