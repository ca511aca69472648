//! A real microVM guest for tests: Debian's cloud kernel and busybox in an initramfs
//! (built and cached by [`image`]), booted with QEMU (TCG) on a TAP, running a per-test
//! shell script and reporting on its serial console.
//!
//! [`Vm::boot`] appends a second, uncompressed cpio archive holding `/test.sh` (and any
//! files the test adds, such as frames for `/bin/sendraw`) to the cached initramfs (the
//! kernel unpacks concatenated archives in order, see
//! Documentation/driver-api/early-userspace/buffer-format.rst) and starts QEMU. The
//! guest's /init (`init.sh`) loads the modules, configures eth0 from the kernel command
//! line (`netpath.ip=A.B.C.D/N netpath.gw=A.B.C.D netpath.mac=…`, for a dual-stack guest
//! also `netpath.ip6=ADDR/128 netpath.gw6=ADDR`), runs `/test.sh` with the helpers of
//! `/lib/netpath.sh` (`check NAME CMD…` prints `NETPATH-RESULT NAME ok` or
//! `NETPATH-RESULT NAME fail …`), prints `NETPATH-DONE rc=N` and powers off.

mod cpio;
pub mod image;

use std::{
    fs,
    io::{BufRead, BufReader},
    net::{Ipv4Addr, Ipv6Addr},
    os::unix::fs::PermissionsExt,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use ipnet::{Ipv4Net, Ipv6Net};

pub use self::{
    cpio::Cpio,
    image::{GuestImage, MODULES, cache_dir, guest_image},
};

/// Marker prefix of a result line on the guest console.
pub const RESULT_MARKER: &str = "NETPATH-RESULT";
/// Marker of the end of the guest's script: `NETPATH-DONE rc=N`.
pub const DONE_MARKER: &str = "NETPATH-DONE";

/// How to boot a guest.
#[derive(Clone, Debug)]
pub struct VmConfig<'a> {
    /// The TAP QEMU attaches to (it must exist; single-queue).
    pub tap: &'a str,
    /// The guest NIC's MAC, `aa:bb:cc:dd:ee:ff`.
    pub mac: &'a str,
    /// The guest's address and prefix (a TAP endpoint's is a /32).
    pub ip: Ipv4Net,
    pub gateway: Ipv4Addr,
    /// A dual-stack guest's IPv6 address (a TAP endpoint's is a /128) and gateway;
    /// `None`: IPv6 is off in the guest.
    pub ipv6: Option<(Ipv6Net, Ipv6Addr)>,
    /// Shell script run after the network is up (busybox sh, with `check`).
    pub script: &'a str,
    /// More files for the guest, at the root of its file system: (name, contents).
    pub files: &'a [(&'a str, Vec<u8>)],
    /// Bound on the whole run, boot to power-off.
    pub timeout: Duration,
}

/// A running QEMU guest. Killed on drop.
pub struct Vm {
    child: Option<Child>,
    console: Arc<Mutex<Vec<(Duration, String)>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    started: Instant,
    timeout: Duration,
    /// The per-run initramfs (removed on drop).
    initrd: PathBuf,
}

/// What a finished guest printed.
#[derive(Clone, Debug)]
pub struct Console {
    /// Every console line (and QEMU's own errors, prefixed `qemu: `).
    pub output: String,
    /// Each line with the time since QEMU started.
    pub lines: Vec<(Duration, String)>,
    /// QEMU start to exit.
    pub elapsed: Duration,
}

impl Console {
    /// When the first line containing `needle` arrived (since QEMU started); e.g.
    /// `at("NETPATH-RESULT guest-net ok")` is the boot time to a configured network.
    pub fn at(&self, needle: &str) -> Option<Duration> {
        self.lines
            .iter()
            .find(|(_, l)| l.contains(needle))
            .map(|(t, _)| *t)
    }

    /// `(name, "ok"|"fail", detail)` for every `NETPATH-RESULT` line.
    pub fn results(&self) -> Vec<(String, String, String)> {
        self.output
            .lines()
            .filter_map(|l| {
                let rest = l.trim_end_matches('\r').split_once(RESULT_MARKER)?.1.trim();
                let mut parts = rest.splitn(3, ' ');
                Some((
                    parts.next()?.to_owned(),
                    parts.next().unwrap_or_default().to_owned(),
                    parts.next().unwrap_or_default().to_owned(),
                ))
            })
            .collect()
    }

    /// True if the guest reported `NAME ok`.
    pub fn ok(&self, name: &str) -> bool {
        self.results()
            .iter()
            .any(|(n, s, _)| n == name && s == "ok")
    }

    /// The script's exit status (`NETPATH-DONE rc=N`), if it finished.
    pub fn done(&self) -> Option<String> {
        self.output.lines().find_map(|l| {
            let rest = l.trim_end_matches('\r').split_once(DONE_MARKER)?.1.trim();
            Some(rest.trim_start_matches("rc=").to_owned())
        })
    }
}

/// True if QEMU is installed. Otherwise prints why the test is skipped, or, under CI
/// (`CI=true`), fails: in CI the microVM tests must run.
pub fn qemu_or_skip(test: &str) -> bool {
    let found = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|d| d.join("qemu-system-x86_64").is_file())
    });
    if found {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: qemu-system-x86_64 is missing, and the microVM tests must run in CI \
         (install the Debian package qemu-system-x86)"
    );
    eprintln!("SKIP {test}: qemu-system-x86_64 is missing (apt-get install qemu-system-x86)");
    false
}

static NEXT_RUN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Vm {
    /// Boots `image` on `cfg.tap` with `cfg.script` as /test.sh. Returns at once; see
    /// [`Vm::wait`]. Console lines are echoed to stderr as `[vm TAP  SECONDS] line`.
    pub fn boot(image: &GuestImage, cfg: &VmConfig<'_>) -> Result<Vm> {
        // Per-run initramfs: the cached one, then /test.sh in an uncompressed archive.
        let mut extra = Cpio::default();
        extra.file("test.sh", 0o755, cfg.script.as_bytes());
        for (name, data) in cfg.files {
            ensure!(
                !name.contains('/') && !name.is_empty(),
                "guest file name {name:?}: one plain name, at the root"
            );
            extra.file(name, 0o644, data);
        }
        let mut initrd_data = fs::read(&image.initramfs)
            .with_context(|| format!("reading {}", image.initramfs.display()))?;
        ensure!(
            initrd_data.len().is_multiple_of(4),
            "{} is not padded to 4 bytes",
            image.initramfs.display()
        );
        initrd_data.extend_from_slice(&extra.finish());
        let initrd = std::env::temp_dir().join(format!(
            "netpath-vm-{}-{}.cpio",
            std::process::id(),
            NEXT_RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        fs::write(&initrd, &initrd_data)?;
        fs::set_permissions(&initrd, fs::Permissions::from_mode(0o600))?;

        let mut append = format!(
            "console=ttyS0 quiet panic=-1 netpath.ip={} netpath.gw={} netpath.mac={}",
            cfg.ip, cfg.gateway, cfg.mac
        );
        if let Some((ip6, gw6)) = cfg.ipv6 {
            append.push_str(&format!(" netpath.ip6={ip6} netpath.gw6={gw6}"));
        }
        let accel = std::env::var("NETPATH_VM_ACCEL").unwrap_or_else(|_| "tcg".into());
        let mut child = Command::new("qemu-system-x86_64")
            .args(["-accel", &accel, "-M", "q35", "-m", "256", "-smp", "1"])
            .args(["-nodefaults", "-no-user-config", "-display", "none"])
            .args(["-serial", "stdio", "-no-reboot"])
            .arg("-kernel")
            .arg(&image.kernel)
            .arg("-initrd")
            .arg(&initrd)
            .args(["-append", &append])
            .arg("-netdev")
            .arg(format!(
                "tap,id=n0,ifname={},script=no,downscript=no",
                cfg.tap
            ))
            .arg("-device")
            .arg(format!("virtio-net-pci,netdev=n0,mac={},romfile=", cfg.mac))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting qemu-system-x86_64 (install the Debian package qemu-system-x86)")?;
        let console: Arc<Mutex<Vec<(Duration, String)>>> = Arc::default();
        let started = Instant::now();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let tag = format!("vm {}", cfg.tap);
        let record = {
            let console = console.clone();
            move |line: String| {
                let t = started.elapsed();
                eprintln!("[{tag} {:6.2}s] {line}", t.as_secs_f64());
                console
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((t, line));
            }
        };
        let reader = std::thread::spawn(move || {
            // QEMU's own errors (stderr) go into the console text too.
            let err_record = record.clone();
            let err_thread = std::thread::spawn(move || {
                for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                    err_record(format!("qemu: {l}"));
                }
            });
            let mut r = BufReader::new(stdout);
            let mut line = Vec::new();
            while r.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                let text = String::from_utf8_lossy(&line);
                record(text.trim_end_matches(['\n', '\r']).to_owned());
                line.clear();
            }
            let _ = err_thread.join();
        });
        Ok(Vm {
            child: Some(child),
            console,
            reader: Some(reader),
            started,
            timeout: cfg.timeout,
            initrd,
        })
    }

    /// Boots and waits: the whole run.
    pub fn run(image: &GuestImage, cfg: &VmConfig<'_>) -> Result<Console> {
        Vm::boot(image, cfg)?.wait()
    }

    /// The console so far.
    pub fn console(&self) -> String {
        self.console
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(_, l)| format!("{l}\n"))
            .collect()
    }

    /// Waits for the guest to power off (bounded by the timeout given to `boot`; QEMU
    /// is killed then). Fails if it timed out, QEMU failed, or the script did not finish.
    pub fn wait(mut self) -> Result<Console> {
        let mut child = self.child.take().expect("wait once");
        let deadline = self.started + self.timeout;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break Some(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let console = Console {
            output: self.console(),
            lines: self
                .console
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            elapsed: self.started.elapsed(),
        };
        match status {
            None => bail!(
                "the guest did not finish within {:?}; console:\n{}",
                self.timeout,
                console.output
            ),
            Some(s) if !s.success() => {
                bail!(
                    "qemu-system-x86_64 failed ({s}); console:\n{}",
                    console.output
                )
            }
            Some(_) if console.done().is_none() => bail!(
                "the guest powered off without finishing its script; console:\n{}",
                console.output
            ),
            Some(_) => Ok(console),
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = fs::remove_file(&self.initrd);
    }
}
