//! Defaults, and how netpath names and tags what it creates.

use std::{net::Ipv4Addr, path::PathBuf};

use ipnet::Ipv4Net;

/// The network `netpath daemon` creates when none is configured.
pub const DEFAULT_NETWORK: &str = "default";
/// The subnet of [`DEFAULT_NETWORK`].
pub const DEFAULT_SUBNET: Ipv4Net = match Ipv4Net::new(Ipv4Addr::new(10, 200, 0, 0), 16) {
    Ok(n) => n,
    Err(_) => panic!("valid default subnet"),
};
/// The gateway address of [`DEFAULT_NETWORK`], in [`DEFAULT_SUBNET`].
pub const DEFAULT_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);

/// Where the daemon keeps its state database and lock unless `--state-dir` says
/// otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/netpath";
/// The daemon's API socket (`--socket`; the CNI plugin's `"socket"` key).
pub const DEFAULT_SOCKET: &str = "/run/netpath/netpath.sock";
/// The bpffs directory the datapath's maps, programs and links are pinned under
/// (`--bpffs`).
pub const DEFAULT_BPFFS_DIR: &str = "/sys/fs/bpf/netpath";

/// Where the daemon keeps its state and objects.
#[derive(Clone, Debug)]
pub struct Paths {
    /// The state database and lock ([`DEFAULT_STATE_DIR`]); it also names the
    /// instance ([`Paths::instance`]).
    pub state_dir: PathBuf,
    /// The API socket ([`DEFAULT_SOCKET`]).
    pub socket: PathBuf,
    /// Where the datapath is pinned in bpffs ([`DEFAULT_BPFFS_DIR`]).
    pub bpffs: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            state_dir: DEFAULT_STATE_DIR.into(),
            socket: DEFAULT_SOCKET.into(),
            bpffs: DEFAULT_BPFFS_DIR.into(),
        }
    }
}

impl Paths {
    /// Short id of this daemon instance, derived from its state directory. It goes into
    /// the ifalias of every link the instance creates, so two daemons (or tests) with
    /// different state directories never touch each other's links.
    pub fn instance(&self) -> String {
        // FNV-1a: stable across runs and builds (unlike std's hasher).
        let mut h: u32 = 0x811c_9dc5;
        for b in self.state_dir.as_os_str().as_encoded_bytes() {
            h = (h ^ u32::from(*b)).wrapping_mul(0x0100_0193);
        }
        format!("{h:08x}")
    }
}

/// Prefix of every link netpath creates. Names are also tagged with an ifalias
/// ([`link_alias`]) so ownership never rests on the name alone.
pub const LINK_PREFIX: &str = "np-";
/// Prefix of the ifalias of every netpath link.
pub const ALIAS_PREFIX: &str = "netpath:";
pub use crate::types::IFNAME_MAX;

/// Name of the bridge of network `network`.
pub fn bridge_name(network: &str) -> String {
    format!("{LINK_PREFIX}{network}")
}

/// The ifalias netpath puts on a link it owns: `netpath:<instance>:<role>:<owner>`.
pub fn link_alias(instance: &str, role: &str, owner: &str) -> String {
    format!("{ALIAS_PREFIX}{instance}:{role}:{owner}")
}

/// True if a link with this alias was created by netpath instance `instance`. The
/// ifalias is the ownership mark: TAP names are the user's choice, so the `np-` name
/// prefix alone cannot tell.
pub fn is_owned_by(instance: &str, alias: Option<&str>) -> bool {
    let tag = format!("{ALIAS_PREFIX}{instance}:");
    alias.is_some_and(|a| a.starts_with(&tag))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_network_fits_ifname_limit() {
        assert!(bridge_name(DEFAULT_NETWORK).len() <= IFNAME_MAX);
        assert!(DEFAULT_SUBNET.contains(&DEFAULT_GATEWAY));
    }

    #[test]
    fn ownership_needs_the_instance_alias() {
        let alias = link_alias("0123abcd", "bridge", "default");
        assert!(is_owned_by("0123abcd", Some(&alias)));
        assert!(!is_owned_by("ffffffff", Some(&alias)));
        assert!(!is_owned_by("0123abcd", None));
        assert!(!is_owned_by("0123abcd", Some("someone else")));
    }

    #[test]
    fn instance_depends_on_state_dir_only() {
        let a = Paths::default();
        let b = Paths {
            bpffs: "/sys/fs/bpf/other".into(),
            ..Paths::default()
        };
        assert_eq!(a.instance(), b.instance());
        let c = Paths {
            state_dir: "/tmp/other".into(),
            ..b
        };
        assert_ne!(a.instance(), c.instance());
        assert_eq!(a.instance().len(), 8);
    }
}

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup` on a unified host,
/// `/sys/fs/cgroup/unified` on a hybrid one): its root is where the socket hooks attach.
pub fn cgroup2_root() -> Result<PathBuf, ConfigError> {
    let mountinfo =
        std::fs::read_to_string(MOUNTINFO).map_err(|source| ConfigError::ReadMountinfo {
            path: MOUNTINFO,
            source,
        })?;
    cgroup2_in_mountinfo(&mountinfo).ok_or(ConfigError::NoCgroup2)
}

const MOUNTINFO: &str = "/proc/self/mountinfo";

/// Why the host's configuration cannot be found out.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}")]
    ReadMountinfo {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no cgroup v2 hierarchy is mounted (needed for host-local access to published \
         ports); mount one: mount -t cgroup2 none /sys/fs/cgroup/unified"
    )]
    NoCgroup2,
}

/// The mount point of the first cgroup2 filesystem in a mountinfo text.
fn cgroup2_in_mountinfo(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        // "id parent major:minor root mountpoint options [optional...] - fstype source ..."
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        left.split_whitespace().nth(4).map(PathBuf::from)
    })
}

#[cfg(test)]
mod cgroup_tests {
    use super::*;

    #[test]
    fn finds_the_cgroup2_mount_in_unified_and_hybrid_layouts() {
        let hybrid = "30 24 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n\
                      31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw\n\
                      32 30 0:28 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        assert_eq!(
            cgroup2_in_mountinfo(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified = "35 24 0:30 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            cgroup2_in_mountinfo(unified),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(
            cgroup2_in_mountinfo("36 24 0:31 / /proc rw - proc proc rw\n"),
            None
        );
    }
}
