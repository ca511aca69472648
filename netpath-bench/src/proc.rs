//! Child processes of the bench: commands bounded in time, background servers killed on
//! drop, and the Ctrl-C flag every loop checks.

use std::{
    fs,
    io::{Read as _, Write as _},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::atomic::{AtomicBool, AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static SIGNALS: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
    // A third Ctrl-C gives up on the cleanup.
    if SIGNALS.fetch_add(1, Ordering::SeqCst) >= 2 {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(130) };
    }
}

/// SIGINT, SIGTERM and SIGHUP set the interrupt flag instead of killing the bench, so
/// that it stops at the next check and cleans up.
pub fn install_interrupt_handler() -> Result<()> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only touches atomics and calls _exit.
        unsafe { sigaction(sig, &action) }.with_context(|| format!("cannot handle {sig}"))?;
    }
    Ok(())
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Fails if Ctrl-C (or SIGTERM) was received.
pub fn check_interrupt() -> Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

/// `cmd` as a shell-like line, for errors.
pub fn display(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The first non-empty line of `bytes`, trimmed.
pub fn first_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .to_owned()
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!("was killed by signal {s}"),
        _ => status.to_string(),
    }
}

/// Runs `cmd` (its own process group, so Ctrl-C reaches only the bench), feeding it
/// `stdin`; kills it after `timeout`. Returns the output whatever the exit status.
/// Not cut short by Ctrl-C: cleanup commands use it after one.
pub fn run_bounded(cmd: &mut Command, stdin: Option<&[u8]>, timeout: Duration) -> Result<Output> {
    run_with(cmd, stdin, timeout, false)
}

/// [`run_bounded`], also killed on Ctrl-C (for long traffic runs).
pub fn run_interruptible(
    cmd: &mut Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<Output> {
    run_with(cmd, stdin, timeout, true)
}

fn run_with(
    cmd: &mut Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
    interruptible: bool,
) -> Result<Output> {
    let shown = display(cmd);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start `{shown}`"))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // Small inputs (configs): fits the pipe buffer, no writer thread needed.
        let _ = pipe.write_all(input);
    }
    let drain = |mut r: Box<dyn std::io::Read + Send>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let err = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        let why = if interruptible && interrupted() {
            Some("interrupted".to_owned())
        } else if start.elapsed() > timeout {
            Some(format!("did not finish within {} s", timeout.as_secs()))
        } else {
            None
        };
        if let Some(why) = why {
            let _ = child.kill();
            let _ = child.wait();
            bail!("`{shown}` {why}");
        }
        thread::sleep(Duration::from_millis(5));
    };
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// [`run_bounded`] that must succeed; returns stdout.
pub fn run_ok(cmd: &mut Command, stdin: Option<&[u8]>, timeout: Duration) -> Result<String> {
    let shown = display(cmd);
    let out = run_bounded(cmd, stdin, timeout)?;
    if !out.status.success() {
        let mut why = first_line(&out.stderr);
        if why.is_empty() {
            why = first_line(&out.stdout);
        }
        bail!("`{shown}` {}: {why}", describe(out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Default bound of a set-up command (`ip …`).
pub const CMD_TIMEOUT: Duration = Duration::from_secs(30);

/// `ip ARGS` (bounded, must succeed); returns stdout.
pub fn ip(args: &[&str]) -> Result<String> {
    run_ok(Command::new("ip").args(args), None, CMD_TIMEOUT)
}

/// `ip -batch -` with `lines` on stdin (bounded, must succeed).
pub fn ip_batch(lines: &[String], timeout: Duration) -> Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    let mut input = lines.join("\n");
    input.push('\n');
    run_ok(
        Command::new("ip").args(["-batch", "-"]),
        Some(input.as_bytes()),
        timeout,
    )
    .map(drop)
}

/// `ip -force -batch -`: runs every line, ignoring failures (for cleanup).
pub fn ip_batch_force(lines: &[String], timeout: Duration) {
    if lines.is_empty() {
        return;
    }
    let mut input = lines.join("\n");
    input.push('\n');
    let _ = run_bounded(
        Command::new("ip").args(["-force", "-batch", "-"]),
        Some(input.as_bytes()),
        timeout,
    );
}

/// A background process (a traffic server, the daemon), in its own process group,
/// with stdout and stderr in a log file. Killed (SIGKILL) and reaped on drop.
pub struct Bg {
    child: Option<Child>,
    what: String,
    log: PathBuf,
}

impl Bg {
    /// Starts `cmd` logging to `log`.
    pub fn spawn(cmd: &mut Command, what: &str, log: &Path) -> Result<Bg> {
        let file =
            fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        let shown = display(cmd);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start `{shown}`"))?;
        Ok(Bg {
            child: Some(child),
            what: what.to_owned(),
            log: log.to_owned(),
        })
    }

    /// Fails with the end of its log if the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        let Some(child) = &mut self.child else {
            bail!("{} was stopped", self.what);
        };
        if let Some(status) = child.try_wait()? {
            bail!("{} {}: {}", self.what, describe(status), self.log_tail());
        }
        Ok(())
    }

    /// The last lines of its log, on one line.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(3)..].join(" | ")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGTERM, then SIGKILL after `grace`; reaps it. Returns whether it exited on
    /// SIGTERM in time.
    pub fn terminate(&mut self, grace: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < grace {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
