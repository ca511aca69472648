//! Checks of request fields, made before anything is leased or created: each returns
//! the error the user sees, naming the field and what would be accepted.

use std::path::PathBuf;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::{NETWORK_NAME_MAX, Result, ServiceError};
use crate::model::{Destination, NetworkPolicy};

/// Most `--no-masquerade` destinations one network may have.
pub const NO_MASQ_PER_NETWORK: usize = 64;

/// Most ports a network's host access may allow.
pub const HOST_ACCESS_PORTS_MAX: usize = 64;

/// Most queues a TAP may have (the kernel's `MAX_TAP_QUEUES`).
pub const TAP_QUEUES_MAX: u16 = 256;

pub fn ifname(what: &str, name: &str) -> Result<()> {
    crate::types::check_ifname(name)
        .map_err(|reason| ServiceError::invalid(format!("invalid {what} {name:?}: {reason}")))
}

/// The name a container end is left under in the host's namespace: a valid interface
/// name outside netpath's own (`np-…`), which a later endpoint's host end could take.
pub fn peer_name(name: &str) -> Result<()> {
    ifname("peer name", name)?;
    if name.starts_with(crate::config::LINK_PREFIX) {
        return Err(ServiceError::invalid(format!(
            "invalid peer name {name:?}: names starting with {:?} are netpath's own",
            crate::config::LINK_PREFIX
        )));
    }
    Ok(())
}

/// A CNI container id: "must start with an alphanumeric character, optionally followed
/// by any combination of one or more alphanumeric characters, underscore, dot or hyphen"
/// (CNI spec, `CNI_CONTAINERID`); at most 255 of them here.
pub fn container_id(id: &str) -> Result<()> {
    let ok = id.len() <= 255
        && id.starts_with(|c: char| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        return Ok(());
    }
    Err(ServiceError::invalid(format!(
        "invalid container id {id:?}: use 1 to 255 characters from a-z, A-Z, 0-9, '_', '.', '-', starting with a letter or digit"
    )))
}

pub fn network_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > NETWORK_NAME_MAX
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(ServiceError::invalid(format!(
            "invalid network name {name:?}: use 1 to {NETWORK_NAME_MAX} characters from a-z, 0-9, '-' and '_'"
        )));
    }
    Ok(())
}

pub fn mtu(mtu: u32) -> Result<()> {
    if !(68..=65535).contains(&mtu) {
        return Err(ServiceError::invalid(format!(
            "invalid MTU {mtu}: use 68 to 65535"
        )));
    }
    Ok(())
}

/// A network's subnet: its network address, with room for a gateway and an endpoint.
pub fn subnet(subnet: Ipv4Net) -> Result<()> {
    if subnet.prefix_len() > 30 || subnet.network() != subnet.addr() {
        return Err(ServiceError::invalid(format!(
            "invalid subnet {subnet}: give the network address with a prefix of /30 or shorter (e.g. {})",
            subnet.trunc()
        )));
    }
    Ok(())
}

/// `--no-masquerade` destinations, sorted and without repeats, of a network that has
/// IPv4 (`ipv4`) and IPv6 (`ipv6`) or not: a destination of a family needs a subnet of
/// that family, since only its traffic is masqueraded to destinations of the family.
pub fn no_masquerade(cidrs: &[IpNet], ipv4: bool, ipv6: bool) -> Result<()> {
    if cidrs.len() > NO_MASQ_PER_NETWORK {
        return Err(ServiceError::invalid(format!(
            "{} --no-masquerade destinations: at most {NO_MASQ_PER_NETWORK} per network",
            cidrs.len()
        )));
    }
    if let Some(c) = cidrs.iter().find(|c| c.network() != c.addr()) {
        return Err(ServiceError::invalid(format!(
            "invalid --no-masquerade {c}: give the network address (e.g. {})",
            c.trunc()
        )));
    }
    if let Some(c) = cidrs.iter().find(|c| !ipv6 && matches!(c, IpNet::V6(_))) {
        return Err(ServiceError::invalid(format!(
            "invalid --no-masquerade {c}: the network has no IPv6 subnet, so nothing of it is masqueraded to IPv6"
        )));
    }
    if let Some(c) = cidrs.iter().find(|c| !ipv4 && matches!(c, IpNet::V4(_))) {
        return Err(ServiceError::invalid(format!(
            "invalid --no-masquerade {c}: the network has no IPv4 subnet, so nothing of it is masqueraded to IPv4"
        )));
    }
    Ok(())
}

/// A network's IPv6 subnet: its network address, a prefix of /64 to /120 (room for a
/// gateway and endpoints; SLAAC-style /64s are the usual).
pub fn subnet6(subnet: Ipv6Net) -> Result<()> {
    if !(64..=120).contains(&subnet.prefix_len()) || subnet.network() != subnet.addr() {
        return Err(ServiceError::invalid(format!(
            "invalid subnet {subnet}: give the network address with a prefix of /64 to /120 (e.g. {}/64)",
            subnet.trunc().network()
        )));
    }
    Ok(())
}

/// The host route a new subnet (of either family) would collide with: one that
/// contains it or that it contains, on a device other than netpath's own bridges
/// (`ours`). Default routes collide with nothing.
pub fn overlapping_route<'r>(
    routes: &'r [(String, IpNet)],
    ours: &[String],
    subnet: IpNet,
) -> Option<&'r (String, IpNet)> {
    routes.iter().find(|(dev, dst)| {
        dst.prefix_len() > 0
            && !ours.contains(dev)
            && (dst.contains(&subnet) || subnet.contains(dst))
    })
}

/// The namespace of an endpoint: exactly one of a path or a process.
pub fn netns(path: Option<&PathBuf>, pid: Option<u32>) -> Result<PathBuf> {
    match (path, pid) {
        (Some(p), None) => Ok(p.clone()),
        (None, Some(pid)) => Ok(PathBuf::from(format!("/proc/{pid}/ns/net"))),
        _ => Err(ServiceError::invalid(
            "give exactly one of netns (a namespace path) or pid",
        )),
    }
}

pub fn tap_queues(queues: u16) -> Result<()> {
    if queues == 0 || queues > TAP_QUEUES_MAX {
        return Err(ServiceError::invalid(format!(
            "invalid queue count {queues}: use 1 to {TAP_QUEUES_MAX}"
        )));
    }
    Ok(())
}

/// A TAP's owner: `u32::MAX` is "no id" to the kernel (`(uid_t)-1`).
pub fn owner_ids(uid: Option<u32>, gid: Option<u32>) -> Result<()> {
    for (what, v) in [("uid", uid), ("gid", gid)] {
        if v == Some(u32::MAX) {
            return Err(ServiceError::invalid(format!(
                "invalid {what} {}: use 0 to {}",
                u32::MAX,
                u32::MAX - 1
            )));
        }
    }
    Ok(())
}

/// A network's policy (see `control::policy`), for a network with IPv4 (`ipv4`) and/or
/// IPv6 (`ipv6`): egress CIDRs are network addresses of a family the network has, a
/// prefix is not both denied and allowed, and there are at most
/// [`EGRESS_RULES_MAX`](super::policy::EGRESS_RULES_MAX) rules.
pub fn policy(policy: &NetworkPolicy, (ipv4, ipv6): (bool, bool)) -> Result<()> {
    let denied = policy.egress_deny.iter().filter_map(|d| match d {
        Destination::Cidr(c) => Some(("--egress-deny", *c)),
        Destination::Private => None,
    });
    let allowed = policy.egress_allow.iter().map(|c| ("--egress-allow", *c));
    let all: Vec<(&str, IpNet)> = denied.chain(allowed).collect();
    let count = policy.egress_deny.len() + policy.egress_allow.len();
    if count > super::policy::EGRESS_RULES_MAX {
        return Err(ServiceError::invalid(format!(
            "{count} egress rules: at most {} per network",
            super::policy::EGRESS_RULES_MAX
        )));
    }
    for (flag, c) in &all {
        if c.network() != c.addr() {
            return Err(ServiceError::invalid(format!(
                "invalid {flag} {c}: give the network address (e.g. {})",
                c.trunc()
            )));
        }
        let (has, family) = match c {
            IpNet::V4(_) => (ipv4, "IPv4"),
            IpNet::V6(_) => (ipv6, "IPv6"),
        };
        if !has {
            return Err(ServiceError::invalid(format!(
                "invalid {flag} {c}: the network has no {family} subnet, so its endpoints send nothing to {family} destinations"
            )));
        }
    }
    if let crate::model::HostAccess::Ports(ports) = &policy.host_access
        && ports.len() > HOST_ACCESS_PORTS_MAX
    {
        return Err(ServiceError::invalid(format!(
            "{} host access ports: at most {HOST_ACCESS_PORTS_MAX} per network",
            ports.len()
        )));
    }
    if let Some(c) = policy
        .egress_allow
        .iter()
        .find(|c| policy.egress_deny.contains(&Destination::Cidr(**c)))
    {
        return Err(ServiceError::Invalid {
            what: format!("{c} is both denied and allowed"),
            hint: Some(
                "give a prefix in one list only: an allow inside a denied prefix must be longer than it"
                    .into(),
            ),
        });
    }
    Ok(())
}
