//! The kernel settings the datapath relies on. netpath uses no iptables/nftables rules;
//! these are the only host-wide knobs it turns.
//!
//! * `net.ipv4.ip_forward = 1`: endpoints' traffic that the fast path hands to the
//!   kernel (to other networks, to the uplink for masquerade, replies coming back) is
//!   routed by the host. Docker and the CNI bridge plugin set the same.

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// A kernel setting that could not be turned.
#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    #[error("enabling IPv4 forwarding ({path})")]
    EnableForwarding {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
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
