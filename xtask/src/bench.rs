//! `cargo xtask bench`: set up, build `netpath`, `netpath-cni` and `netpath-bench` (release),
//! then replace xtask with `netpath-bench` (so Ctrl-C reaches it directly and it can clean
//! up).

use std::{
    ffi::OsString,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::{
    cmd::{self, step},
    setup,
    tasks::Ctx,
    workspace::Workspace,
};

/// The options `netpath-bench` takes, passed through.
#[derive(clap::Args, Debug, Default)]
pub struct BenchArgs {
    /// Fewer rounds (2), fewer endpoints (200) and shorter traffic runs (3 s).
    #[arg(long)]
    pub quick: bool,
    /// Rounds per variant (default 3, 2 with --quick).
    #[arg(long, value_name = "N")]
    pub rounds: Option<u16>,
    /// Run only these scenarios (default: all; `setup`, `endpoint`).
    #[arg(long = "scenario", value_name = "NAME", num_args = 1..)]
    pub scenarios: Vec<String>,
    /// Output directory (default: target/bench/<UTC date-time>, linked from
    /// target/bench/latest).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Also build netpath at git revision REV (in a worktree under
    /// target/baseline/) and measure this build against it in the same run (variant
    /// `previous` of the `cost`, `endpoint` and `publish` scenarios), e.g.
    /// `--baseline HEAD~1`.
    #[arg(long, value_name = "REV")]
    pub baseline: Option<String>,
}

impl BenchArgs {
    /// The arguments for `netpath-bench`, with `out` resolved.
    fn to_args(&self, out: &Path, netpath: &Path, baseline: Option<&Path>) -> Vec<OsString> {
        let mut args = Vec::new();
        if self.quick {
            args.push("--quick".into());
        }
        if let Some(n) = self.rounds {
            args.push("--rounds".into());
            args.push(n.to_string().into());
        }
        if !self.scenarios.is_empty() {
            args.push("--scenario".into());
            args.extend(self.scenarios.iter().map(OsString::from));
        }
        args.push("--out".into());
        args.push(out.into());
        args.push("--netpath-bin".into());
        args.push(netpath.into());
        if let Some(b) = baseline {
            args.push("--baseline-bin".into());
            args.push(b.into());
        }
        args
    }
}

/// `YYYY-MM-DDTHH-MM-SSZ`, now, in UTC.
fn utc_stamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}-{:02}-{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Creates `<target>/bench/<stamp>` and points `<target>/bench/latest` at it.
fn default_out(target_dir: &Path) -> Result<PathBuf> {
    let base = target_dir.join("bench");
    let stamp = utc_stamp();
    let out = base.join(&stamp);
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let latest = base.join("latest");
    match std::fs::remove_file(&latest) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("cannot replace {}", latest.display()));
        }
        _ => {}
    }
    std::os::unix::fs::symlink(&stamp, &latest)
        .with_context(|| format!("cannot link {} to {stamp}", latest.display()))?;
    Ok(out)
}

pub fn bench(ws: Workspace, args: &BenchArgs) -> Result<()> {
    if !setup::is_root() {
        bail!(
            "the bench needs root (network namespaces, links, a netpath daemon with BPF): run \
             `sudo -E cargo xtask bench`"
        );
    }
    let ctx = Ctx::new(ws)?;
    step(
        "build",
        "netpath, netpath-cni and netpath-bench (release, with the eBPF object)",
        || {
            let mut c = ctx.ws.command("cargo");
            ctx.env.apply(&mut c);
            cmd::run(c.args([
                "build",
                "--release",
                "-p",
                "netpath",
                "--bin",
                "netpath",
                "--bin",
                "netpath-cni",
                "-p",
                "netpath-bench",
                // `--bin` selects across every `-p`: the bench's own must be named too.
                "--bin",
                "netpath-bench",
            ]))
        },
    )?;
    let release = ctx.ws.target_dir.join("release");
    let (netpath, bench) = (release.join("netpath"), release.join("netpath-bench"));
    for bin in [&netpath, &bench] {
        if !bin.is_file() {
            bail!("the build succeeded but {} is missing", bin.display());
        }
    }
    let baseline = match &args.baseline {
        Some(rev) => Some(step(
            "baseline",
            &format!("netpath at {rev} (release, in a git worktree)"),
            || build_baseline(&ctx, rev),
        )?),
        None => None,
    };
    let out = match &args.out {
        Some(dir) => ctx.ws.invoked_from.join(dir),
        None => default_out(&ctx.ws.target_dir)?,
    };
    let mut run = ctx.ws.command(&bench);
    ctx.env.apply(&mut run);
    run.args(args.to_args(&out, &netpath, baseline.as_deref()));
    println!("==> bench: {}", cmd::display(&run));
    // exec: Ctrl-C reaches netpath-bench alone, which then removes what it created.
    let err = Command::exec(&mut run);
    Err(err).with_context(|| format!("cannot exec {}", bench.display()))
}

/// Builds `netpath` at git revision `rev` in a worktree
/// (`<target>/baseline/src-<commit>`, kept for the next run; its own target directory,
/// shared between revisions) and returns the binary.
fn build_baseline(ctx: &Ctx, rev: &str) -> Result<PathBuf> {
    let commit = cmd::stdout_of(ctx.ws.command("git").args([
        "rev-parse",
        "--short=12",
        "--verify",
        &format!("{rev}^{{commit}}"),
    ]))
    .with_context(|| format!("{rev:?} names no commit of this repository"))?;
    let commit = commit.trim();
    let base = ctx.ws.target_dir.join("baseline");
    let src = base.join(format!("src-{commit}"));
    if !src.join("Cargo.toml").is_file() {
        // A worktree git no longer knows (its directory removed by hand) would block
        // the `add`.
        cmd::run(ctx.ws.command("git").args(["worktree", "prune"]))?;
        cmd::run(
            ctx.ws
                .command("git")
                .args(["worktree", "add", "--detach"])
                .arg(&src)
                .arg(commit),
        )?;
    }
    let target = base.join("target");
    let mut c = ctx.ws.command("cargo");
    ctx.env.apply(&mut c);
    c.current_dir(&src).env("CARGO_TARGET_DIR", &target);
    cmd::run(c.args(["build", "--release", "-p", "netpath", "--bin", "netpath"]))?;
    let bin = target.join("release/netpath");
    if !bin.is_file() {
        bail!(
            "the build of {commit} succeeded but {} is missing",
            bin.display()
        );
    }
    Ok(bin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_is_a_utc_date_time() {
        let s = utc_stamp();
        assert_eq!(s.len(), 20, "{s}");
        assert!(s.ends_with('Z') && !s.contains(':'), "{s}");
        assert!(s.starts_with("20"), "{s}");
    }

    #[test]
    fn args_pass_through() {
        let a = BenchArgs {
            quick: true,
            rounds: Some(5),
            scenarios: vec!["setup".into(), "endpoint".into()],
            out: None,
            baseline: None,
        };
        assert_eq!(
            a.to_args(Path::new("/o"), Path::new("/n"), None),
            [
                "--quick",
                "--rounds",
                "5",
                "--scenario",
                "setup",
                "endpoint",
                "--out",
                "/o",
                "--netpath-bin",
                "/n"
            ]
        );
        let with = a.to_args(Path::new("/o"), Path::new("/n"), Some(Path::new("/b")));
        assert_eq!(with[with.len() - 2..], ["--baseline-bin", "/b"]);
    }
}
