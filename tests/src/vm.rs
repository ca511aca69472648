//! A real microVM guest for tests: Debian's cloud kernel and busybox in an initramfs,
//! booted with QEMU (TCG) on a TAP, running a per-test shell script and reporting on
//! its serial console.
//!
//! [`guest_image`] builds the guest once and caches it under
//! `<workspace>/target/microvm-cache/`:
//!
//! ```text
//! microvm-cache/
//!   lock                      flock(2)ed while a guest is built
//!   guest-<key>/              a complete guest (appears atomically, by rename)
//!     vmlinuz                 the kernel (/boot/vmlinuz-* of linux-image-<ver>-cloud-amd64)
//!     initramfs.cpio.gz       busybox, /init, the virtio-net modules (gzip, NUL-padded to 4)
//!     manifest                kernel and busybox versions, the modules, build time
//!   build-<pid>/              scratch space of a build in progress
//! ```
//!
//! `<key>` is a hash of everything the builder puts in the image (the /init script, the
//! module list, the layout version), so changing any of them builds a new guest.
//!
//! [`Vm::boot`] appends a second, uncompressed cpio archive holding `/test.sh` to the
//! cached initramfs (the kernel unpacks concatenated archives in order, see
//! Documentation/driver-api/early-userspace/buffer-format.rst) and starts QEMU. The
//! guest's /init loads the modules, configures eth0 from the kernel command line
//! (`netpath.ip=A.B.C.D/N netpath.gw=A.B.C.D netpath.mac=…`), runs `/test.sh` with the
//! helpers of `/lib/netpath.sh` (`check NAME CMD…` prints `NETPATH-RESULT NAME ok` or
//! `NETPATH-RESULT NAME fail …`), prints `NETPATH-DONE rc=N` and powers off.

use std::{
    collections::hash_map::DefaultHasher,
    fs,
    hash::{Hash, Hasher},
    io::{BufRead, BufReader, Write},
    net::Ipv4Addr,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail, ensure};
use ipnet::Ipv4Net;

/// Bump when the image layout changes in a way the key below does not capture.
const LAYOUT_VERSION: u32 = 1;

/// The Debian metapackage whose dependency is the versioned cloud kernel.
const KERNEL_META: &str = "linux-image-cloud-amd64";

/// virtio-net and what it needs, in load order (each needs only the ones before it).
/// Debian's cloud kernel builds them as modules; one that is built in (listed in
/// modules.builtin) is skipped.
pub const MODULES: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
];

/// Marker prefix of a result line on the guest console.
pub const RESULT_MARKER: &str = "NETPATH-RESULT";
/// Marker of the end of the guest's script: `NETPATH-DONE rc=N`.
pub const DONE_MARKER: &str = "NETPATH-DONE";

/// The guest's /init (busybox sh).
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /run
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /tmp
. /lib/netpath.sh

fail_boot() {
    echo "NETPATH-RESULT guest-net fail $*"
    echo "NETPATH-DONE rc=boot-failed"
    poweroff -f
    sleep 10
}

for m in /modules/*.ko; do
    [ -e "$m" ] || continue
    insmod "$m" || fail_boot "insmod $m"
done

IP= GW= MAC=
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        netpath.ip=*) IP=${arg#netpath.ip=} ;;
        netpath.gw=*) GW=${arg#netpath.gw=} ;;
        netpath.mac=*) MAC=${arg#netpath.mac=} ;;
    esac
done
export IP GW MAC

i=0
while [ ! -e /sys/class/net/eth0 ]; do
    i=$((i + 1))
    [ $i -gt 100 ] && fail_boot "no eth0 after 10 s"
    sleep 0.1
done
sysctl -qw net.ipv6.conf.all.disable_ipv6=1
sysctl -qw net.ipv6.conf.default.disable_ipv6=1
sysctl -qw net.ipv6.conf.eth0.disable_ipv6=1
ip link set lo up
HWADDR=$(cat /sys/class/net/eth0/address)
if [ -n "$MAC" ] && [ "$HWADDR" != "$MAC" ]; then
    fail_boot "eth0 has MAC $HWADDR, expected $MAC"
fi
if [ -n "$IP" ]; then
    ip addr add "$IP" dev eth0 || fail_boot "ip addr add $IP"
fi
ip link set eth0 up || fail_boot "ip link set eth0 up"
if [ -n "$GW" ]; then
    # A /32 guest reaches its gateway on-link, and everything else through it.
    ip route add "$GW" dev eth0 2>/dev/null
    ip route add default via "$GW" dev eth0 || fail_boot "ip route add default via $GW"
fi
echo "NETPATH-NET eth0 ip=$IP gw=$GW mac=$HWADDR"
echo "NETPATH-RESULT guest-net ok"

if [ -e /test.sh ]; then
    sh -c '. /lib/netpath.sh; . /test.sh' </dev/null 2>&1
    rc=$?
else
    rc=no-script
fi
echo "NETPATH-DONE rc=$rc"
poweroff -f
sleep 10
"#;

/// Helpers for test scripts, sourced before /test.sh.
const HELPERS: &str = r#"# check NAME CMD...: runs CMD, shows its output prefixed with [NAME], then prints
# "NETPATH-RESULT NAME ok" or "NETPATH-RESULT NAME fail rc=N".
check() {
    _name=$1
    shift
    _out=$("$@" 2>&1)
    _rc=$?
    [ -n "$_out" ] && echo "$_out" | sed "s/^/[$_name] /"
    if [ $_rc -eq 0 ]; then
        echo "NETPATH-RESULT $_name ok"
    else
        echo "NETPATH-RESULT $_name fail rc=$_rc"
    fi
    return $_rc
}
"#;

/// A built guest: kernel and base initramfs.
#[derive(Clone, Debug)]
pub struct GuestImage {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    /// What is in it (kernel and busybox package versions, modules).
    pub manifest: String,
}

/// `<workspace>/target/microvm-cache`.
pub fn cache_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("microvm-cache")
}

fn image_key() -> String {
    let mut h = DefaultHasher::new();
    (LAYOUT_VERSION, INIT, HELPERS, MODULES, KERNEL_META).hash(&mut h);
    format!("{:016x}", h.finish())
}

fn image_in(dir: &Path) -> Option<GuestImage> {
    let kernel = dir.join("vmlinuz");
    let initramfs = dir.join("initramfs.cpio.gz");
    let manifest = fs::read_to_string(dir.join("manifest")).ok()?;
    (kernel.is_file() && initramfs.is_file()).then_some(GuestImage {
        kernel,
        initramfs,
        manifest,
    })
}

/// The cached guest, built on first use (downloads two Debian packages with
/// `apt-get download`: the cloud kernel and busybox-static). Safe to call from
/// concurrent tests and processes: one builds, the others wait for it.
pub fn guest_image() -> Result<GuestImage> {
    let cache = cache_dir();
    let dir = cache.join(format!("guest-{}", image_key()));
    if let Some(image) = image_in(&dir) {
        return Ok(image);
    }
    fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    let lock_path = cache.join("lock");
    let lock_file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| anyhow!("locking {}: {e}", lock_path.display()))?;
    // Someone else may have built it while we waited.
    if let Some(image) = image_in(&dir) {
        return Ok(image);
    }
    let started = Instant::now();
    eprintln!(
        "microvm: building the guest image in {} (first run only)",
        dir.display()
    );
    // Holding the lock, no other build is running: scratch dirs are leftovers.
    for entry in fs::read_dir(&cache)?.flatten() {
        if entry.file_name().to_string_lossy().starts_with("build-") {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
    let work = cache.join(format!("build-{}", std::process::id()));
    fs::create_dir_all(&work)?;
    let result = build(&work).and_then(|out| {
        fs::rename(&out, &dir)
            .with_context(|| format!("renaming {} to {}", out.display(), dir.display()))
    });
    let _ = fs::remove_dir_all(&work);
    result?;
    eprintln!(
        "microvm: guest image ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    image_in(&dir).ok_or_else(|| anyhow!("{} is incomplete after the build", dir.display()))
}

/// Runs a command, returning stdout; the error carries stderr.
fn cmd(program: &str, args: &[&str], cwd: Option<&Path>) -> Result<Vec<u8>> {
    let mut c = Command::new(program);
    c.args(args);
    if let Some(d) = cwd {
        c.current_dir(d);
    }
    let out = c
        .output()
        .with_context(|| format!("running {program} (is it installed?)"))?;
    ensure!(
        out.status.success(),
        "{program} {} failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(out.stdout)
}

/// `apt-get download PACKAGE` into `dir`; returns the .deb.
fn apt_download(package: &str, dir: &Path) -> Result<PathBuf> {
    eprintln!("microvm: apt-get download {package}");
    fs::create_dir_all(dir)?;
    // Downloading as root into a directory `_apt` cannot write: no sandbox user.
    cmd(
        "apt-get",
        &["download", "-q", "-o", "APT::Sandbox::User=root", package],
        Some(dir),
    )
    .with_context(|| {
        format!("downloading the Debian package {package} (run `apt-get update` first?)")
    })?;
    let prefix = format!("{}_", package.split('=').next().unwrap_or(package));
    fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
                && p.extension().is_some_and(|e| e == "deb")
        })
        .ok_or_else(|| {
            anyhow!(
                "apt-get download {package} left no .deb in {}",
                dir.display()
            )
        })
}

fn deb_field(deb: &Path, field: &str) -> Result<String> {
    let out = cmd("dpkg-deb", &["-f", &deb.to_string_lossy(), field], None)?;
    Ok(String::from_utf8_lossy(&out).trim().to_owned())
}

/// The first package named by a Depends field: `linux-image-X (= V), …` → `linux-image-X`.
fn first_dependency(depends: &str) -> Option<String> {
    let first = depends.split([',', '|']).next()?.trim();
    let name = first.split([' ', '(']).next()?.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

/// Every file under `root`, recursively.
fn walk(root: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(entries) = fs::read_dir(root) {
        for e in entries.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&p, out);
            } else {
                out.push(p);
            }
        }
    }
}

/// Reads a module, decompressing `.ko.xz`/`.ko.zst`/`.ko.gz` (busybox's insmod is
/// not relied on to do it).
fn read_module(path: &Path) -> Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".ko.xz") {
        Some("xz")
    } else if name.ends_with(".ko.zst") {
        Some("zstd")
    } else if name.ends_with(".ko.gz") {
        Some("gzip")
    } else {
        None
    };
    let data = match tool {
        Some(t) => cmd(t, &["-dc", &name], None)?,
        None => fs::read(path)?,
    };
    ensure!(
        data.starts_with(b"\x7fELF"),
        "{} is not an ELF module after decompression",
        path.display()
    );
    Ok(data)
}

/// Builds a guest into `work/out`; returns that directory.
fn build(work: &Path) -> Result<PathBuf> {
    // The kernel: the metapackage names the versioned package.
    let meta = apt_download(KERNEL_META, &work.join("debs"))?;
    let depends = deb_field(&meta, "Depends")?;
    let kpkg = first_dependency(&depends)
        .ok_or_else(|| anyhow!("{KERNEL_META} has no dependency (Depends: {depends:?})"))?;
    let kdeb = apt_download(&kpkg, &work.join("debs"))?;
    let kversion = deb_field(&kdeb, "Version")?;
    eprintln!("microvm: extracting {kpkg} {kversion}");
    let kroot = work.join("kernel");
    cmd(
        "dpkg-deb",
        &["-x", &kdeb.to_string_lossy(), &kroot.to_string_lossy()],
        None,
    )?;
    let mut files = Vec::new();
    walk(&kroot, &mut files);
    let vmlinuz = files
        .iter()
        .find(|p| {
            p.parent().is_some_and(|d| d.ends_with("boot"))
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .ok_or_else(|| anyhow!("{kpkg} has no /boot/vmlinuz-*"))?
        .clone();
    let builtin: String = files
        .iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "modules.builtin"))
        .filter_map(|p| fs::read_to_string(p).ok())
        .collect();

    let mut archive = Cpio::default();
    for dir in ["bin", "dev", "lib", "modules", "proc", "run", "sys", "tmp"] {
        archive.dir(dir);
    }
    // Init's stdin/stdout/stderr: the kernel opens /dev/console before running /init.
    archive.char_dev("dev/console", 0o600, 5, 1);
    archive.char_dev("dev/null", 0o666, 1, 3);

    let mut module_lines = Vec::new();
    for (i, m) in MODULES.iter().enumerate() {
        let found = files.iter().find(|p| {
            let n = p.file_name().unwrap_or_default().to_string_lossy();
            let stem = n.split(".ko").next().unwrap_or_default().replace('-', "_");
            n.contains(".ko") && stem == *m
        });
        match found {
            Some(path) => {
                let data = read_module(path)?;
                module_lines.push(format!("module {m} {} bytes", data.len()));
                archive.file(&format!("modules/{:02}-{m}.ko", i + 1), 0o644, &data);
            }
            None if builtin
                .lines()
                .any(|l| l.rsplit('/').next().is_some_and(|f| f == format!("{m}.ko"))) =>
            {
                module_lines.push(format!("module {m} built in"));
            }
            None => bail!("{kpkg} has no module {m} (and it is not built in)"),
        }
    }

    let bdeb = apt_download("busybox-static", &work.join("debs"))?;
    let bversion = deb_field(&bdeb, "Version")?;
    let broot = work.join("busybox");
    cmd(
        "dpkg-deb",
        &["-x", &bdeb.to_string_lossy(), &broot.to_string_lossy()],
        None,
    )?;
    let busybox = [broot.join("bin/busybox"), broot.join("usr/bin/busybox")]
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow!("busybox-static has no bin/busybox"))?;
    archive.file("bin/busybox", 0o755, &fs::read(&busybox)?);
    archive.file("init", 0o755, INIT.as_bytes());
    archive.file("lib/netpath.sh", 0o644, HELPERS.as_bytes());

    eprintln!("microvm: packing the initramfs");
    let out = work.join("out");
    fs::create_dir_all(&out)?;
    let cpio = out.join("initramfs.cpio");
    fs::write(&cpio, archive.finish())?;
    cmd("gzip", &["-n", "-9", &cpio.to_string_lossy()], None)?;
    let gz = out.join("initramfs.cpio.gz");
    // Pad to a multiple of 4 with NULs, so an uncompressed archive can follow it.
    let len = fs::metadata(&gz)?.len();
    let pad = (4 - len % 4) % 4;
    fs::OpenOptions::new()
        .append(true)
        .open(&gz)?
        .write_all(&vec![0u8; pad as usize])?;
    fs::copy(&vmlinuz, out.join("vmlinuz"))?;
    let manifest = format!(
        "kernel {kpkg} {kversion} ({})\nbusybox-static {bversion}\n{}\nbuilt at unix time {}\n",
        vmlinuz.file_name().unwrap_or_default().to_string_lossy(),
        module_lines.join("\n"),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default()
    );
    fs::write(out.join("manifest"), manifest)?;
    Ok(out)
}

/// A `newc` cpio archive, built in memory (what the kernel's initramfs unpacker reads).
#[derive(Default)]
pub struct Cpio {
    buf: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime
            data.len(),
            0, // devmajor
            0, // devminor
            rdev.0,
            rdev.1,
            name.len() + 1,
            0, // check
        );
        self.buf.extend_from_slice(header.as_bytes());
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    pub fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, (0, 0), &[]);
    }

    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100000 | perm, (0, 0), data);
    }

    pub fn char_dev(&mut self, name: &str, perm: u32, major: u32, minor: u32) {
        self.entry(name, 0o020000 | perm, (major, minor), &[]);
    }

    /// The archive with its trailer.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.buf
    }
}

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
    /// Shell script run after the network is up (busybox sh, with `check`).
    pub script: &'a str,
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

        let append = format!(
            "console=ttyS0 quiet panic=-1 netpath.ip={} netpath.gw={} netpath.mac={}",
            cfg.ip, cfg.gateway, cfg.mac
        );
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
