//! Running steps and child processes: a banner and a duration for every step, the command
//! line echoed before it runs, and an error that names what failed.

use std::{
    ffi::OsStr,
    os::unix::process::ExitStatusExt as _,
    process::{Command, ExitStatus, Output},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

/// Runs `f` as one named step: prints `==> name: what` before it and the outcome with its
/// duration after it. Returns the result and how long the step took.
pub fn timed<T>(name: &str, what: &str, f: impl FnOnce() -> Result<T>) -> (Result<T>, Duration) {
    println!("==> {name}: {what}");
    let start = Instant::now();
    let result = f();
    let took = start.elapsed();
    match &result {
        Ok(_) => println!("<== {name}: done in {}", fmt_duration(took)),
        Err(_) => println!("<== {name}: FAILED after {}", fmt_duration(took)),
    }
    (result, took)
}

/// [`timed`], with the error naming the step.
pub fn step<T>(name: &str, what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    timed(name, what, f)
        .0
        .with_context(|| format!("step `{name}` failed"))
}

/// Records the steps of a multi-step command (`test`, `clippy`) for a closing summary.
pub struct Steps {
    rows: Vec<(String, Duration, bool)>,
    start: Instant,
}

impl Default for Steps {
    fn default() -> Self {
        Self::new()
    }
}

impl Steps {
    pub fn new() -> Self {
        Self {
            rows: Vec::new(),
            start: Instant::now(),
        }
    }

    /// Runs and records one step. On failure, prints the summary so far and returns an error
    /// naming the step.
    pub fn run<T>(&mut self, name: &str, what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let (result, took) = timed(name, what, f);
        self.rows.push((name.to_owned(), took, result.is_ok()));
        if result.is_err() {
            self.print_summary();
        }
        result.with_context(|| format!("step `{name}` failed"))
    }

    /// Notes a step that was skipped on purpose.
    pub fn skip(&self, name: &str, why: &str) {
        println!("==> {name}: skipped ({why})");
    }

    pub fn print_summary(&self) {
        let width = self
            .rows
            .iter()
            .map(|(name, ..)| name.len())
            .chain([5])
            .max()
            .unwrap_or(5);
        println!("==> summary");
        for (name, took, ok) in &self.rows {
            let verdict = if *ok { "ok" } else { "FAILED" };
            println!("    {name:<width$}  {:>9}  {verdict}", fmt_duration(*took));
        }
        let total = fmt_duration(self.start.elapsed());
        println!("    {:<width$}  {total:>9}", "total");
    }
}

pub fn fmt_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.2}s")
    } else {
        let whole = d.as_secs();
        format!("{}m{:04.1}s", whole / 60, secs - (whole / 60 * 60) as f64)
    }
}

/// Runs `cmd` with inherited stdio, echoing it first; fails if it cannot start or exits
/// unsuccessfully.
pub fn run(cmd: &mut Command) -> Result<()> {
    let shown = display(cmd);
    println!("    $ {shown}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` {}", describe(status));
    }
    Ok(())
}

/// Runs `cmd` with captured output and returns it whatever the exit status; fails only if it
/// cannot start.
pub fn capture(cmd: &mut Command) -> Result<Output> {
    let shown = display(cmd);
    cmd.output()
        .with_context(|| format!("could not start `{shown}`"))
}

/// Runs `cmd` with captured output and returns its stdout; fails with its stderr if it exits
/// unsuccessfully.
pub fn stdout_of(cmd: &mut Command) -> Result<String> {
    let shown = display(cmd);
    let out = capture(cmd)?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first = stderr
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim();
        bail!("`{shown}` {}: {first}", describe(out.status));
    }
    String::from_utf8(out.stdout).with_context(|| format!("`{shown}` printed non-UTF-8 output"))
}

pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        (None, None) => format!("ended with {status}"),
    }
}

/// A shell-like rendering of `cmd` for logs: the variables it sets (except PATH and
/// LD_LIBRARY_PATH, which are long and always adjusted), the program and its arguments.
pub fn display(cmd: &Command) -> String {
    let mut parts = Vec::new();
    for (key, value) in cmd.get_envs() {
        if key == "PATH" || key == "LD_LIBRARY_PATH" {
            continue;
        }
        if let Some(value) = value {
            parts.push(format!("{}={}", key.to_string_lossy(), quote(value)));
        }
    }
    parts.push(quote(cmd.get_program()));
    parts.extend(cmd.get_args().map(quote));
    parts.join(" ")
}

fn quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:+,@%".contains(c));
    if plain {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_quotes_and_shows_env() {
        let mut cmd = Command::new("cargo");
        cmd.args(["clippy", "--", "-D", "warnings"])
            .env("RUSTFLAGS", r#"--cfg bpf_target_arch="x86_64""#)
            .env("PATH", "/x")
            .env_remove("RUSTUP_TOOLCHAIN");
        assert_eq!(
            display(&cmd),
            r#"RUSTFLAGS='--cfg bpf_target_arch="x86_64"' cargo clippy -- -D warnings"#
        );
    }

    #[test]
    fn durations() {
        assert_eq!(fmt_duration(Duration::from_millis(1234)), "1.23s");
        assert_eq!(fmt_duration(Duration::from_millis(83_400)), "1m23.4s");
    }
}
