//! The bench's `netpath daemon`: private state dir, socket and bpffs, no default
//! network, no Docker plugin unless asked for one (the `docker` scenario); stopped and
//! reset (`netpath reset` on its paths) when the bench is done.

use std::{
    io::{BufRead as _, BufReader},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use netpath::config::Paths;

use super::proc;

pub struct BenchDaemon {
    pub paths: Paths,
    /// Where it serves the Docker plugin, if it does.
    pub plugin_socket: Option<PathBuf>,
    bin: PathBuf,
    child: Option<Child>,
    log: PathBuf,
}

/// How long the daemon may take to load its datapath and answer.
const START_TIMEOUT: Duration = Duration::from_secs(60);

impl BenchDaemon {
    /// Paths of a daemon whose files live in `dir` and pins in `bpffs`.
    pub fn paths_for(dir: &Path, bpffs: &Path) -> Paths {
        Paths {
            state_dir: dir.join("state"),
            socket: dir.join("netpath.sock"),
            bpffs: bpffs.to_owned(),
        }
    }

    /// `--state-dir … --socket … --bpffs …`.
    pub fn path_args(paths: &Paths) -> Vec<PathBuf> {
        vec![
            "--state-dir".into(),
            paths.state_dir.clone(),
            "--socket".into(),
            paths.socket.clone(),
            "--bpffs".into(),
            paths.bpffs.clone(),
        ]
    }

    /// Starts the daemon (serving the Docker plugin on `plugin_socket` if given) and waits
    /// (bounded) until it says it is serving.
    pub fn start(
        bin: &Path,
        dir: &Path,
        bpffs: &Path,
        plugin_socket: Option<&Path>,
    ) -> Result<BenchDaemon> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let paths = Self::paths_for(dir, bpffs);
        let log = dir.join("daemon.log");
        let stderr = std::fs::File::create(&log)?;
        let plugin: Vec<&std::ffi::OsStr> = match plugin_socket {
            Some(s) => vec!["--docker-plugin-socket".as_ref(), s.as_os_str()],
            None => vec!["--no-docker-plugin".as_ref()],
        };
        let mut child = Command::new(bin)
            .arg("daemon")
            .arg("--no-default-network")
            .args(plugin)
            .args(Self::path_args(&paths))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {} daemon", bin.display()))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        // Reads the daemon's stdout to the end (it must never block on a full pipe).
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("Ctrl-C") {
                    let _ = tx.send(());
                }
            }
        });
        let mut d = BenchDaemon {
            paths,
            plugin_socket: plugin_socket.map(Path::to_owned),
            bin: bin.to_owned(),
            child: Some(child),
            log,
        };
        let start = std::time::Instant::now();
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(()) => return Ok(d),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    d.check_alive()?;
                    bail!("the netpath daemon closed its output before it was ready");
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    d.check_alive()?;
                    proc::check_interrupt()?;
                    if start.elapsed() > START_TIMEOUT {
                        bail!(
                            "the netpath daemon did not come up within {} s: {}",
                            START_TIMEOUT.as_secs(),
                            d.log_tail()
                        );
                    }
                }
            }
        }
    }

    /// The daemon's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(3)..].join(" | ")
    }

    /// Fails with the end of its stderr if the daemon has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        let Some(child) = &mut self.child else {
            bail!("the netpath daemon was stopped");
        };
        if let Some(status) = child.try_wait()? {
            bail!("the netpath daemon exited ({status}): {}", self.log_tail());
        }
        Ok(())
    }

    /// Stops the daemon (SIGTERM, SIGKILL after 10 s) and runs `netpath reset` on its
    /// paths. Returns the problems met, if any.
    pub fn shutdown(mut self) -> Vec<String> {
        self.stop_and_reset()
    }

    fn stop_and_reset(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let start = std::time::Instant::now();
            loop {
                match child.try_wait() {
                    Ok(Some(status)) => {
                        if !status.success() {
                            problems.push(format!(
                                "the netpath daemon exited with {status} on SIGTERM: {}",
                                self.log_tail()
                            ));
                        }
                        break;
                    }
                    Ok(None) if start.elapsed() < Duration::from_secs(10) => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        problems.push("the netpath daemon ignored SIGTERM for 10 s".into());
                        break;
                    }
                }
            }
        }
        if let Err(e) = reset(&self.bin, &self.paths) {
            problems.push(format!("{e:#}"));
        }
        problems
    }
}

/// `netpath reset` on `paths` (bounded).
pub fn reset(bin: &Path, paths: &Paths) -> Result<()> {
    proc::run_ok(
        Command::new(bin)
            .arg("reset")
            .args(BenchDaemon::path_args(paths)),
        None,
        Duration::from_secs(60),
    )
    .map(drop)
    .context("netpath reset")
}

impl Drop for BenchDaemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop_and_reset();
        }
    }
}
