//! The pin layout under one bpffs directory, and pinning, opening and removing pins.

use super::*;

/// The pin layout under one bpffs directory.
#[derive(Clone, Debug)]
pub struct Pins {
    root: PathBuf,
}

impl Pins {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Pins { root: root.into() }
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn map(&self, name: &str) -> PathBuf {
        self.root.join("maps").join(name)
    }
    pub fn prog(&self, name: &str) -> PathBuf {
        self.root.join("progs").join(name)
    }
    pub fn links_dir(&self) -> PathBuf {
        self.root.join("links")
    }
    /// Directory of the socket hooks' cgroup links (not per device, so apart from
    /// `links/`, which reconciliation sweeps by device).
    pub fn cgroup_links_dir(&self) -> PathBuf {
        self.root.join("cgroup")
    }
    /// Pin of the attachment of `hook` to the device (`ifname`, `ifindex`). The index
    /// makes a pin name unique per device instance: a recreated device with the same
    /// name gets a new index, so a stale pin is never mistaken for a live attachment.
    pub fn link(&self, hook: Hook, ifname: &str, ifindex: u32) -> PathBuf {
        // bpffs refuses names containing '.'; ':' cannot occur in interface names, so
        // the name splits back unambiguously.
        self.links_dir()
            .join(format!("{}:{ifindex}:{ifname}", hook.name()))
    }
    /// True if a datapath (programs and maps) is pinned here.
    pub fn complete(&self) -> bool {
        PROGRAMS.iter().all(|p| self.prog(p.name).exists())
            && MAPS.iter().all(|m| self.map(m).exists())
    }
}

pub(super) fn open_pinned_link(path: &Path) -> Result<Option<PinnedLink>> {
    match PinnedLink::from_pin(path) {
        Ok(link) => Ok(Some(link)),
        Err(LinkError::SyscallError(e)) if e.io_error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(DatapathError::OpenLink {
            path: path.to_owned(),
            source,
        }),
    }
}

pub(super) fn pin_link(link: FdLink, path: &Path) -> Result<()> {
    remove_file_if_exists(path)?;
    link.pin(path)
        .map(drop)
        .map_err(|source| DatapathError::Pin {
            path: path.to_owned(),
            source,
        })
}

pub(super) fn remove_file_if_exists(path: &Path) -> Result<()> {
    remove_if_exists(path, |p| fs::remove_file(p))
}

pub(super) fn remove_dir_if_exists(path: &Path) -> Result<()> {
    remove_if_exists(path, |p| fs::remove_dir(p))
}

/// `remove(path)`, where a path already gone is fine.
fn remove_if_exists(path: &Path, remove: fn(&Path) -> io::Result<()>) -> Result<()> {
    match remove(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(DatapathError::Remove {
            path: path.to_owned(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Removes every pin under `root` (links first, so attachments are released before the
/// programs and maps) and the directory itself. Returns the number of pins removed.
/// A missing directory is not an error.
pub fn remove_pins(root: &Path) -> Result<usize> {
    let pins = Pins::new(root);
    let mut removed = 0;
    for dir in [
        pins.links_dir(),
        pins.cgroup_links_dir(),
        root.join("progs"),
        root.join("maps"),
        root.join("migrating"),
    ] {
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => return Err(DatapathError::Remove { path: dir, source }),
        };
        for entry in entries {
            let path = entry
                .map_err(|source| DatapathError::Remove {
                    path: dir.clone(),
                    source,
                })?
                .path();
            remove_file_if_exists(&path)?;
            removed += 1;
        }
        remove_dir_if_exists(&dir)?;
    }
    remove_dir_if_exists(root)?;
    Ok(removed)
}
