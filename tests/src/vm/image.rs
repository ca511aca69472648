//! Building and caching the guest: Debian's cloud kernel, busybox, the virtio-net
//! modules and a static raw-frame sender, packed into an initramfs.
//!
//! [`guest_image`] builds the guest once and caches it under
//! `<workspace>/target/microvm-cache/`:
//!
//! ```text
//! microvm-cache/
//!   lock                      flock(2)ed while a guest is built
//!   guest-<key>/              a complete guest (appears atomically, by rename)
//!     vmlinuz                 the kernel (/boot/vmlinuz-* of linux-image-<ver>-cloud-amd64)
//!     initramfs.cpio.gz       busybox, /init, /bin/sendraw, the virtio-net modules
//!                             (gzip, NUL-padded to 4)
//!     manifest                kernel and busybox versions, the modules, build time
//!   build-<pid>/              scratch space of a build in progress
//! ```
//!
//! `<key>` is a hash of everything the builder puts in the image (`init.sh`,
//! `netpath.sh`, `sendraw.c`, the module list, the layout version), so changing any of
//! them builds a new guest.

use std::{
    collections::hash_map::DefaultHasher,
    fs,
    hash::{Hash, Hasher},
    io::Write,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context, Result, anyhow, bail, ensure};

use super::cpio::Cpio;

/// Bump when the image layout changes in a way the key below does not capture.
/// 2: IPv6 (`netpath.ip6`/`netpath.gw6`), `/bin/sendraw`.
const LAYOUT_VERSION: u32 = 2;

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

/// The guest's /init (busybox sh).
const INIT: &str = include_str!("init.sh");
/// Helpers for test scripts (`check`), sourced before /test.sh.
const HELPERS: &str = include_str!("netpath.sh");
/// The raw-frame sender, built static with the host's C compiler (see the file).
const SENDRAW_C: &str = include_str!("sendraw.c");

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
    (
        LAYOUT_VERSION,
        INIT,
        HELPERS,
        SENDRAW_C,
        MODULES,
        KERNEL_META,
    )
        .hash(&mut h);
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

/// Compiles [`SENDRAW_C`] into a static executable (glibc's `libc.a`, which the Rust
/// toolchain's `libc6-dev` brings) and returns it.
fn build_sendraw(work: &Path) -> Result<Vec<u8>> {
    let (src, exe) = (work.join("sendraw.c"), work.join("sendraw"));
    fs::write(&src, SENDRAW_C)?;
    cmd(
        "cc",
        &[
            "-static",
            "-Os",
            "-s",
            "-Wall",
            "-Werror",
            "-o",
            &exe.to_string_lossy(),
            &src.to_string_lossy(),
        ],
        None,
    )
    .context("building the guest's static raw-frame sender (a C compiler and libc6-dev)")?;
    Ok(fs::read(&exe)?)
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
    archive.file("bin/sendraw", 0o755, &build_sendraw(work)?);

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
