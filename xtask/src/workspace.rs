//! Where things are, and a clean environment for the processes xtask starts.

use std::{
    env,
    ffi::{OsStr, OsString},
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

/// Variables that `cargo run` (for xtask itself) and the rustup proxy put into our
/// environment. Children must not inherit them: `RUSTUP_TOOLCHAIN` would override both the
/// workspace's `rust-toolchain.toml` and the toolchain file lookup of nested builds, and the
/// `CARGO_*` ones describe the xtask package, not whatever the child builds.
const STRIPPED_VARS: &[&str] = &[
    "RUSTUP_TOOLCHAIN",
    "RUSTUP_TOOLCHAIN_SOURCE",
    "CARGO",
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_NAME",
    "CARGO_PRIMARY_PACKAGE",
];

pub struct Workspace {
    /// The workspace root (the directory holding the top-level `Cargo.toml`).
    pub root: PathBuf,
    /// Cargo's target directory: `$CARGO_TARGET_DIR` if set, else `<root>/target`.
    pub target_dir: PathBuf,
    /// The directory `cargo xtask` was started from (arguments of `run` are relative to it).
    pub invoked_from: PathBuf,
    target_dir_from_env: bool,
}

impl Workspace {
    pub fn locate() -> Result<Self> {
        let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let root = manifest_dir
            .parent()
            .with_context(|| format!("{} has no parent directory", manifest_dir.display()))?
            .to_path_buf();
        if !root.join("Cargo.toml").is_file() {
            bail!("no Cargo.toml in {} (the workspace root)", root.display());
        }
        let invoked_from = env::current_dir().context("cannot read the current directory")?;
        let (target_dir, target_dir_from_env) = match env::var_os("CARGO_TARGET_DIR") {
            Some(dir) if !dir.is_empty() => (invoked_from.join(dir), true),
            _ => (root.join("target"), false),
        };
        Ok(Self {
            root,
            target_dir,
            invoked_from,
            target_dir_from_env,
        })
    }

    /// The dated nightly the eBPF crate is built with, from `netpath-ebpf/NIGHTLY`.
    pub fn nightly(&self) -> Result<String> {
        let path = self.root.join("netpath-ebpf/NIGHTLY");
        let text = fs::read_to_string(&path)
            .with_context(|| format!("cannot read the pinned nightly from {}", path.display()))?;
        let nightly = text.trim();
        if nightly.is_empty() || nightly.contains(char::is_whitespace) {
            bail!(
                "{} must hold one toolchain name (e.g. nightly-2026-05-20), found {text:?}",
                path.display()
            );
        }
        Ok(nightly.to_owned())
    }

    /// Project-local tools (bpf-linker and its LLVM prefix); gitignored.
    pub fn tools_dir(&self) -> PathBuf {
        self.root.join(".tools")
    }

    /// The netpath binary built by `cargo build [--release] -p netpath`.
    pub fn netpath_bin(&self, release: bool) -> PathBuf {
        let profile = if release { "release" } else { "debug" };
        self.target_dir.join(profile).join("netpath")
    }

    /// A command run from the workspace root (so rustup picks the toolchain from
    /// `rust-toolchain.toml`) with the variables of our own `cargo run` removed.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(&self.root);
        for var in STRIPPED_VARS {
            cmd.env_remove(var);
        }
        for (key, _) in env::vars_os() {
            if key.to_str().is_some_and(|k| k.starts_with("CARGO_PKG_")) {
                cmd.env_remove(key);
            }
        }
        match self.library_path() {
            Some(path) => cmd.env("LD_LIBRARY_PATH", path),
            None => cmd.env_remove("LD_LIBRARY_PATH"),
        };
        if self.target_dir_from_env {
            // Made absolute: children run from the workspace root, not where we started.
            cmd.env("CARGO_TARGET_DIR", &self.target_dir);
        }
        cmd
    }

    /// `LD_LIBRARY_PATH` without the entries `cargo run` added for xtask (our target dir and
    /// the running toolchain's libraries), which must not leak into other toolchains' rustc.
    fn library_path(&self) -> Option<OsString> {
        let current = env::var_os("LD_LIBRARY_PATH")?;
        let rustup_home = env::var_os("RUSTUP_HOME")
            .map(PathBuf::from)
            .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".rustup")));
        let toolchains = rustup_home.map(|h| h.join("toolchains"));
        let kept: Vec<PathBuf> = env::split_paths(&current)
            .filter(|p| !p.as_os_str().is_empty())
            .filter(|p| !p.starts_with(&self.target_dir))
            .filter(|p| toolchains.as_ref().is_none_or(|t| !p.starts_with(t)))
            .collect();
        if kept.is_empty() {
            None
        } else {
            env::join_paths(kept).ok()
        }
    }
}
