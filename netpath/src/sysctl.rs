//! The kernel settings the datapath relies on. netpath uses no iptables/nftables rules;
//! these are the only host-wide knobs it turns.
//!
//! * `net.ipv4.ip_forward = 1`: endpoints' traffic that the fast path hands to the
//!   kernel (to other networks, to the uplink for masquerade, replies coming back) is
//!   routed by the host. Docker and the CNI bridge plugin set the same.

use anyhow::Context;

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// Turns on IPv4 forwarding (idempotent).
pub fn enable_forwarding() -> anyhow::Result<()> {
    if std::fs::read_to_string(IP_FORWARD).is_ok_and(|v| v.trim() == "1") {
        return Ok(());
    }
    std::fs::write(IP_FORWARD, "1")
        .with_context(|| format!("enabling IPv4 forwarding ({IP_FORWARD})"))
}
