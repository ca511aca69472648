//! The kernel settings the datapath relies on. netpath uses no iptables/nftables rules;
//! these are the only host-wide knobs it turns.
//!
//! * `net.ipv4.ip_forward = 1`: endpoints' traffic that the fast path hands to the
//!   kernel (to other networks, to the uplink for masquerade, replies coming back) is
//!   routed by the host. Docker and the CNI bridge plugin set the same.
//! * `net.ipv6.conf.all.forwarding = 1`, once a dual-stack network exists. Forwarding
//!   makes an interface with `accept_ra = 1` (the default) ignore router advertisements,
//!   so a host that learns its IPv6 default route by SLAAC would lose it: the network's
//!   uplink gets `accept_ra = 2` (accept them even when forwarding) first, as Docker's
//!   documentation advises.
//! * On the bridge of an isolated network: `proxy_arp = 1`, `proxy_arp_pvlan = 1` and
//!   the neighbour table's `proxy_delay = 0` ([`set_private_vlan`]). Its ports are
//!   isolated, so an endpoint's ARP request reaches no other endpoint; the host answers
//!   it with the bridge's MAC instead (RFC 3069's private VLAN), so what an endpoint
//!   sends to a neighbour comes to the endpoint program, which refuses it — or, for the
//!   replies of a connection to a published port (hairpin), translates and delivers it.

use std::path::{Path, PathBuf};

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
const PROC_SYS: &str = "/proc/sys";

/// A kernel setting that could not be turned.
#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    #[error("enabling IPv4 forwarding ({path})")]
    EnableForwarding {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("enabling IPv6 forwarding ({})", path.display())]
    Ipv6Forwarding {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("setting proxy ARP on bridge {bridge} ({})", path.display())]
    PrivateVlan {
        bridge: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Turns the private-VLAN proxy ARP of `bridge` on or off (see the module docs).
pub fn set_private_vlan(bridge: &str, on: bool) -> Result<(), SysctlError> {
    set_private_vlan_in(Path::new(PROC_SYS), bridge, on)
}

/// [`set_private_vlan`] under the sysctl tree `root`.
fn set_private_vlan_in(root: &Path, bridge: &str, on: bool) -> Result<(), SysctlError> {
    let (flag, delay) = if on { ("1", "0") } else { ("0", "80") };
    for (key, value) in [
        (format!("net/ipv4/conf/{bridge}/proxy_arp"), flag),
        (format!("net/ipv4/conf/{bridge}/proxy_arp_pvlan"), flag),
        // In jiffies: the kernel's default, 80 (0.8 s at HZ=100), back when off.
        (format!("net/ipv4/neigh/{bridge}/proxy_delay"), delay),
    ] {
        let path = root.join(key);
        std::fs::write(&path, value).map_err(|source| SysctlError::PrivateVlan {
            bridge: bridge.to_owned(),
            path,
            source,
        })?;
    }
    Ok(())
}

/// Turns on IPv4 forwarding (idempotent).
pub fn enable_forwarding() -> Result<(), SysctlError> {
    if std::fs::read_to_string(IP_FORWARD).is_ok_and(|v| v.trim() == "1") {
        return Ok(());
    }
    std::fs::write(IP_FORWARD, "1").map_err(|source| SysctlError::EnableForwarding {
        path: IP_FORWARD,
        source,
    })
}

/// Turns on IPv6 forwarding (idempotent), `uplink`'s `accept_ra` first (see the module
/// docs). Returns what it changed, a line each.
pub fn enable_ipv6_forwarding(uplink: Option<&str>) -> Result<Vec<String>, SysctlError> {
    enable_ipv6_forwarding_in(Path::new(PROC_SYS), uplink)
}

/// [`enable_ipv6_forwarding`] under the sysctl tree `root`.
fn enable_ipv6_forwarding_in(
    root: &Path,
    uplink: Option<&str>,
) -> Result<Vec<String>, SysctlError> {
    let turn = |key: &str, from: Option<&str>, to: &str| -> Result<bool, SysctlError> {
        let path = root.join(key);
        let err = |source| SysctlError::Ipv6Forwarding {
            path: path.clone(),
            source,
        };
        let now = std::fs::read_to_string(&path).map_err(err)?;
        let now = now.trim();
        if now == to || from.is_some_and(|f| f != now) {
            return Ok(false);
        }
        std::fs::write(&path, to).map_err(err)?;
        Ok(true)
    };
    let mut changed = Vec::new();
    if let Some(up) = uplink
        && turn(&format!("net/ipv6/conf/{up}/accept_ra"), Some("1"), "2")?
    {
        changed.push(format!(
            "set net.ipv6.conf.{up}.accept_ra = 2: with IPv6 forwarding on it keeps taking router advertisements"
        ));
    }
    if turn("net/ipv6/conf/all/forwarding", None, "1")? {
        changed.push("turned IPv6 forwarding on (net.ipv6.conf.all.forwarding = 1)".into());
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sysctl tree with these keys and values.
    fn tree(keys: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (key, value) in keys {
            let path = dir.path().join(key);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, format!("{value}\n")).unwrap();
        }
        dir
    }

    fn value(dir: &tempfile::TempDir, key: &str) -> String {
        std::fs::read_to_string(dir.path().join(key))
            .unwrap()
            .trim()
            .to_owned()
    }

    #[test]
    fn an_uplink_taking_router_advertisements_keeps_taking_them() {
        // (uplink's accept_ra, forwarding before) → (accept_ra after, lines)
        for (ra, fwd, ra_after, lines) in [
            ("1", "0", "2", 2),
            ("0", "0", "0", 1),
            ("2", "0", "2", 1),
            ("1", "1", "2", 1),
            ("0", "1", "0", 0),
        ] {
            let dir = tree(&[
                ("net/ipv6/conf/eth0/accept_ra", ra),
                ("net/ipv6/conf/all/forwarding", fwd),
            ]);
            let changed = enable_ipv6_forwarding_in(dir.path(), Some("eth0")).unwrap();
            assert_eq!(value(&dir, "net/ipv6/conf/all/forwarding"), "1");
            assert_eq!(
                value(&dir, "net/ipv6/conf/eth0/accept_ra"),
                ra_after,
                "{ra} {fwd}"
            );
            assert_eq!(changed.len(), lines, "{ra} {fwd}: {changed:?}");
        }
    }

    #[test]
    fn a_private_vlan_turns_proxy_arp_on_without_delay_and_back_off() {
        let keys = [
            "net/ipv4/conf/np-web/proxy_arp",
            "net/ipv4/conf/np-web/proxy_arp_pvlan",
            "net/ipv4/neigh/np-web/proxy_delay",
        ];
        let dir = tree(&[(keys[0], "0"), (keys[1], "0"), (keys[2], "80")]);
        set_private_vlan_in(dir.path(), "np-web", true).unwrap();
        let values: Vec<String> = keys.iter().map(|k| value(&dir, k)).collect();
        assert_eq!(values, ["1", "1", "0"]);
        set_private_vlan_in(dir.path(), "np-web", false).unwrap();
        let values: Vec<String> = keys.iter().map(|k| value(&dir, k)).collect();
        assert_eq!(values, ["0", "0", "80"]);
        let err = set_private_vlan_in(dir.path(), "np-gone", true).unwrap_err();
        assert!(err.to_string().contains("np-gone/proxy_arp"), "{err}");
    }

    #[test]
    fn without_ipv6_it_says_which_setting_is_missing() {
        let dir = tree(&[]);
        let err = enable_ipv6_forwarding_in(dir.path(), None).unwrap_err();
        assert!(
            err.to_string().contains("net/ipv6/conf/all/forwarding"),
            "{err}"
        );
    }
}
