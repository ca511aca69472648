//! `cargo xtask install`: puts the release binaries, the CNI plugin, an example CNI
//! network configuration and a systemd unit in place.
//!
//! | what | where (under `--destdir`, default `/`) |
//! |---|---|
//! | `netpath`, `netpath-cni` | `<prefix>/bin/` (prefix default `/usr/local`) |
//! | `netpath-cni` | `/usr/lib/cni/` (Debian's CNI plugin directory, podman's default) and `/opt/cni/bin/` (containerd, Kubernetes) |
//! | `netpath.conflist` | `/etc/cni/net.d/` |
//! | `netpath.service` | `/etc/systemd/system/` |
//!
//! Binaries are replaced (written next to the target, then renamed over it, so a running
//! daemon keeps its old file). Configuration is never overwritten: when a file exists
//! with other content (the admin's own), the new one is written next to it as
//! `<name>.example` (CNI runtimes only load `*.conf`, `*.conflist` and `*.json`, so the
//! example is inert). Nothing is started or enabled.

use std::{
    fs, io,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};
use clap::Args;

use crate::{cmd::step, tasks, workspace::Workspace};

#[derive(Args, Debug)]
pub struct InstallArgs {
    /// Install into this directory as if it were `/` (for packaging and tests).
    #[arg(long, value_name = "DIR")]
    pub destdir: Option<PathBuf>,
    /// Where the binaries go (`<prefix>/bin`).
    #[arg(long, value_name = "DIR", default_value = "/usr/local")]
    pub prefix: PathBuf,
    /// Do not set up and build first: install the binaries already in target/release.
    #[arg(long)]
    pub no_build: bool,
}

/// The CNI network configuration installed as an example: a bridge network `netpath`
/// (created by the plugin on first use) with the capabilities podman and containerd use.
pub const CONFLIST: &str = r#"{
  "cniVersion": "1.1.0",
  "name": "netpath",
  "plugins": [
    {
      "type": "netpath-cni",
      "subnet": "10.210.0.0/16",
      "mode": "bridge",
      "capabilities": {"portMappings": true, "ips": true, "mac": true}
    }
  ]
}
"#;

fn unit(bin_dir: &Path) -> String {
    format!(
        "[Unit]
Description=netpath: eBPF/XDP + tc host datapath for containers and microVMs
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
ExecStart={} daemon
# Stopping the daemon leaves the datapath (pinned programs, devices) running;
# `netpath reset` removes everything.
Restart=on-failure
RestartSec=2
LimitMEMLOCK=infinity

[Install]
WantedBy=multi-user.target
",
        bin_dir.join("netpath").display()
    )
}

/// Where everything goes.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The file system root to install into.
    pub root: PathBuf,
    /// The binaries' prefix as seen on the installed system.
    pub prefix: PathBuf,
}

impl Layout {
    /// `path` (absolute, as on the installed system) under the root.
    fn under(&self, path: &Path) -> PathBuf {
        self.root.join(path.strip_prefix("/").unwrap_or(path))
    }

    fn bin_dir(&self) -> PathBuf {
        self.prefix.join("bin")
    }
}

/// What [`install_files`] did with one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Done {
    Wrote(PathBuf),
    Unchanged(PathBuf),
    /// An existing file differs: the new content went to `example` instead.
    Kept {
        existing: PathBuf,
        example: PathBuf,
    },
}

pub fn install(ws: Workspace, args: &InstallArgs) -> Result<()> {
    let layout = Layout {
        root: args.destdir.clone().unwrap_or_else(|| PathBuf::from("/")),
        prefix: args.prefix.clone(),
    };
    if !layout.prefix.is_absolute() {
        bail!(
            "--prefix {} must be an absolute path",
            layout.prefix.display()
        );
    }
    let bin_dir = if args.no_build {
        ws.netpath_bin(true)
            .parent()
            .expect("target/release")
            .to_owned()
    } else {
        let ctx = tasks::Ctx::new(ws)?;
        let bin = step("build", &tasks::build_what(true), || {
            tasks::build_netpath(&ctx, true)
        })?;
        bin.parent().expect("target/release").to_owned()
    };
    let done = step(
        "install",
        &format!("into {}", layout.root.display()),
        || install_files(&bin_dir, &layout),
    )?;
    for d in &done {
        match d {
            Done::Wrote(p) => println!("    wrote {}", p.display()),
            Done::Unchanged(p) => println!("    unchanged {}", p.display()),
            Done::Kept { existing, example } => println!(
                "    kept {} (it differs from netpath's); the new one is {}",
                existing.display(),
                example.display()
            ),
        }
    }
    if args.destdir.is_none() {
        println!(
            "==> next: `systemctl daemon-reload && systemctl enable --now netpath`; podman: `podman --network-backend cni run --network netpath …`"
        );
    }
    Ok(())
}

/// Installs from `bin_dir` (holding `netpath` and `netpath-cni`) into `layout`.
pub fn install_files(bin_dir: &Path, layout: &Layout) -> Result<Vec<Done>> {
    let mut done = Vec::new();
    let cni_dirs = [Path::new("/usr/lib/cni"), Path::new("/opt/cni/bin")];
    for name in ["netpath", "netpath-cni"] {
        let src = bin_dir.join(name);
        if !src.is_file() {
            bail!(
                "{} is missing: build first (`cargo xtask build`), or drop --no-build",
                src.display()
            );
        }
        let mut targets = vec![layout.under(&layout.bin_dir()).join(name)];
        if name == "netpath-cni" {
            targets.extend(cni_dirs.iter().map(|d| layout.under(d).join(name)));
        }
        for dst in targets {
            copy_binary(&src, &dst)?;
            done.push(Done::Wrote(dst));
        }
    }
    done.push(write_config(
        &layout
            .under(Path::new("/etc/cni/net.d"))
            .join("netpath.conflist"),
        CONFLIST,
    )?);
    done.push(write_config(
        &layout
            .under(Path::new("/etc/systemd/system"))
            .join("netpath.service"),
        &unit(&layout.bin_dir()),
    )?);
    Ok(done)
}

fn create_parent(path: &Path) -> Result<()> {
    let dir = path.parent().expect("a file in a directory");
    fs::create_dir_all(dir).with_context(|| {
        format!(
            "cannot create {} (run as root, or pass --destdir)",
            dir.display()
        )
    })
}

/// Copies an executable into place atomically (temp file in the same directory, then
/// rename), mode 0755.
fn copy_binary(src: &Path, dst: &Path) -> Result<()> {
    create_parent(dst)?;
    let tmp = dst.with_file_name(format!(
        ".{}.tmp",
        dst.file_name().unwrap().to_string_lossy()
    ));
    let r = (|| -> io::Result<()> {
        fs::copy(src, &tmp)?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))?;
        fs::rename(&tmp, dst)
    })();
    if r.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    r.with_context(|| format!("cannot install {} as {}", src.display(), dst.display()))
}

/// Writes a configuration file unless one with other content is there; then writes
/// `<path>.example` instead.
fn write_config(path: &Path, content: &str) -> Result<Done> {
    create_parent(path)?;
    match fs::read_to_string(path) {
        Ok(existing) if existing == content => return Ok(Done::Unchanged(path.to_owned())),
        Ok(_) => {
            let example = path.with_file_name(format!(
                "{}.example",
                path.file_name().unwrap().to_string_lossy()
            ));
            fs::write(&example, content)
                .with_context(|| format!("cannot write {}", example.display()))?;
            return Ok(Done::Kept {
                existing: path.to_owned(),
                example,
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    fs::write(path, content).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(Done::Wrote(path.to_owned()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("netpath-xtask-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn installs_into_destdir_without_clobbering_configuration() {
        let tmp = TempDir::new("install");
        let bins = tmp.0.join("bins");
        fs::create_dir_all(&bins).unwrap();
        fs::write(bins.join("netpath"), b"daemon-v1").unwrap();
        fs::write(bins.join("netpath-cni"), b"plugin-v1").unwrap();
        let layout = Layout {
            root: tmp.0.join("root"),
            prefix: "/usr/local".into(),
        };
        let done = install_files(&bins, &layout).unwrap();
        let root = &layout.root;
        for (path, content) in [
            ("usr/local/bin/netpath", "daemon-v1"),
            ("usr/local/bin/netpath-cni", "plugin-v1"),
            ("usr/lib/cni/netpath-cni", "plugin-v1"),
            ("opt/cni/bin/netpath-cni", "plugin-v1"),
        ] {
            let p = root.join(path);
            assert_eq!(fs::read_to_string(&p).unwrap(), content, "{path}");
            let mode = fs::metadata(&p).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o755, "{path}");
        }
        let conflist = root.join("etc/cni/net.d/netpath.conflist");
        assert_eq!(fs::read_to_string(&conflist).unwrap(), CONFLIST);
        assert!(CONFLIST.contains("\"type\": \"netpath-cni\""));
        let unit_file = root.join("etc/systemd/system/netpath.service");
        let text = fs::read_to_string(&unit_file).unwrap();
        assert!(
            text.contains("ExecStart=/usr/local/bin/netpath daemon"),
            "{text}"
        );
        assert_eq!(done.len(), 6, "{done:?}");

        // Again, with new binaries and an edited conflist: binaries replaced, the
        // admin's conflist kept, the unit unchanged.
        fs::write(bins.join("netpath"), b"daemon-v2").unwrap();
        fs::write(&conflist, "{\"mine\": true}").unwrap();
        let done = install_files(&bins, &layout).unwrap();
        assert_eq!(
            fs::read_to_string(root.join("usr/local/bin/netpath")).unwrap(),
            "daemon-v2"
        );
        assert_eq!(fs::read_to_string(&conflist).unwrap(), "{\"mine\": true}");
        let example = root.join("etc/cni/net.d/netpath.conflist.example");
        assert_eq!(fs::read_to_string(&example).unwrap(), CONFLIST);
        assert!(done.contains(&Done::Kept {
            existing: conflist,
            example
        }));
        assert!(done.contains(&Done::Unchanged(unit_file)));
        // No temp files left behind.
        let leftovers: Vec<_> = fs::read_dir(root.join("usr/local/bin"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn missing_binaries_are_one_clear_error() {
        let tmp = TempDir::new("missing");
        let layout = Layout {
            root: tmp.0.join("root"),
            prefix: "/usr".into(),
        };
        let e = install_files(&tmp.0, &layout).unwrap_err();
        assert!(e.to_string().contains("cargo xtask build"), "{e}");
        assert!(!layout.root.join("usr/bin").exists());
    }
}
