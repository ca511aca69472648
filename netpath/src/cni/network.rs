//! The netpath network a configuration names: its settings (`subnet` or `subnets`,
//! `gateway` or `gateways`, `mode`, `uplink`, `mtu`, `noMasquerade`, `policy`,
//! `profile`), the request that creates it, and how an existing network is held to them.

use std::{fmt::Display, str::FromStr};

use ipnet::IpNet;

use super::{
    conf::{Object, decoded, invalid, member, string},
    *,
};
use crate::{
    model::{NetworkPolicy, Profile},
    types::{Dual, PerFamily, TwoOfOneFamily},
};

/// The settings of the netpath network a configuration names: ADD creates the network
/// with them on first use, and an existing network must have each one that is given.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NetworkSettings {
    /// The network's IPv4 CIDR (`subnet`, or the IPv4 entry of `subnets`); this or
    /// `subnet6` is needed to create it.
    pub subnet: Option<Ipv4Net>,
    /// The IPv6 entry of `subnets`: the network is dual-stack (IPv6-only without
    /// `subnet`).
    pub subnet6: Option<Ipv6Net>,
    /// The IPv4 gateway (`gateway`, or the IPv4 entry of `gateways`; netpath picks one
    /// when absent).
    pub gateway: Option<Ipv4Addr>,
    /// The IPv6 entry of `gateways`.
    pub gateway6: Option<Ipv6Addr>,
    /// `mode`: `"bridge"` or `"routed"` (netpath's default when absent).
    pub mode: Option<Mode>,
    /// `uplink`: the host interface the network reaches the outside through.
    pub uplink: Option<String>,
    /// `noMasquerade`: destinations reached unmasqueraded (other nodes' pod CIDRs).
    pub no_masquerade: Option<Vec<IpNet>>,
    /// `mtu` of the network's devices.
    pub mtu: Option<u32>,
    /// `policy`: the network's policy, as the API writes it (`{"isolate": true,
    /// "egress_deny": ["private"], "host_access": "53/udp"}`); and `profile`
    /// (`"untrusted"`), added to it. Either given, the network's policy must be the
    /// two's sum.
    pub policy: Option<NetworkPolicy>,
    pub profile: Option<Profile>,
}

/// A setting given once per address family: `single` is the IPv4 value alone (the
/// configuration key of IPv4-only netpath), `list` one value per family.
struct PerFamilyKey {
    single: &'static str,
    list: &'static str,
    /// What a value is, singular and plural ("CIDR", "CIDRs").
    what: &'static str,
    whats: &'static str,
    /// A value of each family, for the messages.
    v4_example: &'static str,
    v6_example: &'static str,
}

const SUBNETS: PerFamilyKey = PerFamilyKey {
    single: "subnet",
    list: "subnets",
    what: "CIDR",
    whats: "CIDRs",
    v4_example: "10.88.0.0/16",
    v6_example: "fd88::/64",
};

const GATEWAYS: PerFamilyKey = PerFamilyKey {
    single: "gateway",
    list: "gateways",
    what: "address",
    whats: "addresses",
    v4_example: "10.88.0.1",
    v6_example: "fd88::1",
};

impl PerFamilyKey {
    /// The key's values in `obj`, by family: `single` (IPv4 only) or `list` (at most
    /// one per family), not both.
    fn parse<T: Dual + FromStr>(&self, obj: &Object) -> Result<PerFamily<T>> {
        let PerFamilyKey {
            single,
            list,
            what,
            whats,
            v4_example,
            v6_example,
        } = self;
        let one = string(obj, single)?;
        let many = decoded::<Vec<String>>(obj, list)?;
        let values: Vec<T> = match (one, many) {
            (Some(_), Some(_)) => {
                return Err(invalid(format!(
                    "the network configuration has both \"{single}\" and \"{list}\": give one of them (\"{list}\" takes one {what} per address family)"
                )));
            }
            (Some(s), None) => {
                let v: T = s.parse().map_err(|_| {
                    invalid(format!(
                        "invalid {single} {s:?}: expected an IPv4 {what} such as {v4_example}"
                    ))
                })?;
                if v.split().is_err() {
                    return Err(invalid(format!(
                        "invalid {single} {s:?}: \"{single}\" takes the IPv4 {what}; list one {what} per family in \"{list}\" instead (e.g. [\"{v4_example}\", \"{v6_example}\"])"
                    )));
                }
                vec![v]
            }
            (None, Some(all)) => all
                .iter()
                .map(|s| {
                    s.parse().map_err(|_| {
                        invalid(format!(
                            "invalid \"{list}\" entry {s:?}: expected an IPv4 or IPv6 {what} such as {v4_example} or {v6_example}"
                        ))
                    })
                })
                .collect::<Result<_>>()?,
            (None, None) => Vec::new(),
        };
        crate::types::by_family(&values).map_err(
            |TwoOfOneFamily {
                 family,
                 first,
                 second,
             }| {
                invalid(format!(
                    "\"{list}\" has two {family} {whats} ({first}, {second}): give at most one per address family"
                ))
            },
        )
    }
}

impl NetworkSettings {
    /// The network settings of a configuration's members.
    pub(super) fn parse(obj: &Object) -> Result<NetworkSettings> {
        let (subnet, subnet6) = SUBNETS.parse::<IpNet>(obj)?;
        let (gateway, gateway6) = GATEWAYS.parse::<IpAddr>(obj)?;
        let mode = match string(obj, "mode")?.as_deref() {
            None => None,
            Some("bridge") => Some(Mode::Bridge),
            Some("routed") => Some(Mode::Routed),
            Some(m) => {
                return Err(invalid(format!(
                    "invalid mode {m:?}: expected \"bridge\" or \"routed\""
                )));
            }
        };
        let uplink = string(obj, "uplink")?;
        if let Some(u) = &uplink {
            validate_ifname(u)
                .map_err(|_| invalid(format!("invalid uplink interface name {u:?}")))?;
        }
        let mtu =
            match member(obj, "mtu") {
                None => None,
                Some(m) => Some(m.as_u64().and_then(|m| u32::try_from(m).ok()).ok_or_else(
                    || decode_err("\"mtu\"", format!("expected a number, found {m}")),
                )?),
            };
        let no_masquerade = match decoded::<Vec<String>>(obj, "noMasquerade")? {
            None => None,
            Some(cidrs) => {
                let mut out = Vec::new();
                for c in cidrs {
                    out.push(c.parse::<IpNet>().map_err(|_| {
                        invalid(format!(
                            "invalid noMasquerade entry {c:?}: expected a CIDR such as 10.244.0.0/16 or fd44::/48"
                        ))
                    })?);
                }
                out.sort();
                out.dedup();
                Some(out)
            }
        };
        Ok(NetworkSettings {
            subnet,
            subnet6,
            gateway,
            gateway6,
            mode,
            uplink,
            no_masquerade,
            mtu,
            policy: decoded(obj, "policy")?,
            profile: decoded(obj, "profile")?,
        })
    }

    /// The request that creates network `name` with these settings; `None` without a
    /// subnet (of either family).
    pub(super) fn create(&self, name: &str) -> Option<NetworkCreate> {
        if self.subnet.is_none() && self.subnet6.is_none() {
            return None;
        }
        Some(NetworkCreate {
            name: name.to_owned(),
            subnet: self.subnet,
            mode: self.mode.unwrap_or_default(),
            gateway: self.gateway,
            subnet6: self.subnet6,
            gateway6: self.gateway6,
            uplink: self.uplink.clone(),
            mtu: self.mtu,
            no_masquerade: self.no_masquerade.clone().unwrap_or_default(),
            policy: self.policy.clone().unwrap_or_default(),
            profile: self.profile,
        })
    }

    /// How `network`'s subnets differ from the ones given, if they do: (what the
    /// network has, what the configuration says).
    pub(super) fn subnet_mismatch(&self, network: &Network) -> Option<(String, String)> {
        match (self.subnet, network.subnet) {
            (Some(s), Some(has)) if s != has => {
                return Some((format!("with subnet {has}"), s.to_string()));
            }
            (Some(s), None) => return Some(("without an IPv4 subnet".into(), s.to_string())),
            _ => {}
        }
        match (self.subnet6, network.subnet6) {
            (Some(s), Some(has)) if s != has => {
                Some((format!("with IPv6 subnet {has}"), s.to_string()))
            }
            (Some(s), None) => Some(("without an IPv6 subnet".into(), s.to_string())),
            _ => None,
        }
    }

    /// Fails unless the existing `network` has every setting given here.
    pub(super) fn held_to(&self, network: &Network) -> Result<()> {
        // What the network is, against what the configuration says it should be.
        let mismatch = |is: String, says: String| {
            CniError::new(
                code::INVALID_CONFIG,
                format!(
                    "netpath network {:?} exists {is}, but the network configuration says {says}",
                    network.name
                ),
            )
        };
        if let Some((is, says)) = self.subnet_mismatch(network) {
            return Err(mismatch(is, says).details(
                "use another network name, or remove the network with `netpath network rm`",
            ));
        }
        if let Some(m) = self.mode
            && m != network.mode
        {
            return Err(mismatch(
                format!("in {:?} mode", network.mode),
                format!("{m:?}"),
            ));
        }
        let differs = |what: &str, has: String, says: String| {
            mismatch(format!("with {what} {has}"), says)
                .details("make the configuration match the network, or use another network name")
        };
        // A setting given here that the network has otherwise (`None`: not at all).
        fn given_differs<T: PartialEq + Display>(
            given: Option<T>,
            has: Option<T>,
        ) -> Option<(String, String)> {
            let given = given?;
            (has.as_ref() != Some(&given)).then(|| {
                let has = has.map_or_else(|| "none".to_owned(), |h| h.to_string());
                (has, given.to_string())
            })
        }
        let settings = [
            ("gateway", given_differs(self.gateway, network.gateway)),
            (
                "IPv6 gateway",
                given_differs(self.gateway6, network.gateway6),
            ),
            ("MTU", given_differs(self.mtu, Some(network.mtu))),
            (
                "uplink",
                given_differs(self.uplink.as_ref(), network.uplink.as_ref()),
            ),
            (
                "noMasquerade",
                given_differs(
                    self.no_masquerade.as_deref().map(Cidrs),
                    Some(Cidrs(&network.no_masquerade)),
                ),
            ),
        ];
        for (what, differ) in settings {
            if let Some((has, says)) = differ {
                return Err(differs(what, has, says));
            }
        }
        if self.policy.is_some() || self.profile.is_some() {
            let given = self.policy.clone().unwrap_or_default();
            let says = self.profile.map_or(given.clone(), |p| p.apply(given));
            if says != network.policy {
                return Err(differs(
                    "policy",
                    network.policy.describe(),
                    says.describe(),
                ));
            }
        }
        Ok(())
    }
}

/// A list of CIDRs as the messages show it: `[10.244.0.0/16, 10.245.0.0/16]`.
#[derive(PartialEq)]
struct Cidrs<'a>(&'a [IpNet]);

impl Display for Cidrs<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s: Vec<String> = self.0.iter().map(|c| c.to_string()).collect();
        write!(f, "[{}]", s.join(", "))
    }
}
