//! Defaults, and how netpath names and tags what it creates.

use std::{net::Ipv4Addr, path::PathBuf};

use ipnet::Ipv4Net;

pub const DEFAULT_STATE_DIR: &str = "/var/lib/netpath";
pub const DEFAULT_SOCKET: &str = "/run/netpath/netpath.sock";
pub const DEFAULT_BPFFS_DIR: &str = "/sys/fs/bpf/netpath";

/// Prefix of every link netpath creates. Names are also tagged with an ifalias
/// ([`link_alias`]) so ownership never rests on the name alone.
pub const LINK_PREFIX: &str = "np-";
/// Prefix of the ifalias of every netpath link.
pub const ALIAS_PREFIX: &str = "netpath:";
/// Linux limit for interface names (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

/// The network `netpath daemon` creates when none is configured.
pub const DEFAULT_NETWORK: &str = "default";
pub const DEFAULT_SUBNET: Ipv4Net = match Ipv4Net::new(Ipv4Addr::new(10, 200, 0, 0), 16) {
    Ok(n) => n,
    Err(_) => panic!("valid default subnet"),
};
pub const DEFAULT_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);

/// Where the daemon keeps its state and objects.
#[derive(Clone, Debug)]
pub struct Paths {
    pub state_dir: PathBuf,
    pub socket: PathBuf,
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
