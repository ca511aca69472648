//! Why a state operation failed, with what the user can do about it.

use super::*;

/// Why an address cannot be leased (or used as a gateway).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvalidIpReason {
    OutsideSubnet,
    NetworkAddress,
    BroadcastAddress,
    Gateway,
}

impl fmt::Display for InvalidIpReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InvalidIpReason::OutsideSubnet => "it is outside the subnet",
            InvalidIpReason::NetworkAddress => "it is the network address",
            InvalidIpReason::BroadcastAddress => "it is the broadcast address",
            InvalidIpReason::Gateway => "it is the gateway",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot open the state database {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: Box<redb::DatabaseError>,
    },
    #[error(
        "the state database {} has schema version {found}, but this netpath supports version {supported}",
        path.display()
    )]
    UnsupportedSchema {
        path: PathBuf,
        found: u64,
        supported: u64,
    },
    #[error("state database operation failed")]
    Db(#[source] Box<redb::Error>),
    #[error("corrupt {table} record {key:?} in the state database")]
    Corrupt {
        table: &'static str,
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("network \"{name}\" already exists")]
    NetworkExists { name: String },
    #[error("network \"{name}\" does not exist")]
    NetworkNotFound { name: String },
    #[error("subnet {subnet} overlaps network \"{other}\" ({other_subnet})")]
    SubnetOverlap {
        subnet: IpNet,
        other: String,
        other_subnet: IpNet,
    },
    #[error("subnet {subnet} cannot be used: {reason}")]
    InvalidSubnet { subnet: IpNet, reason: String },
    #[error("gateway {gateway} cannot be used in subnet {subnet}: {reason}")]
    InvalidGateway {
        gateway: IpAddr,
        subnet: IpNet,
        reason: InvalidIpReason,
    },
    #[error("no free network id: all {} are in use", u16::MAX)]
    NetworkIdsExhausted,
    #[error(
        "network \"{name}\" still has {endpoints} {}",
        if *endpoints == 1 { "endpoint" } else { "endpoints" }
    )]
    NetworkInUse { name: String, endpoints: usize },
    #[error("endpoint {id} does not exist")]
    EndpointNotFound { id: String },
    #[error("endpoint id prefix {prefix:?} matches several endpoints")]
    AmbiguousEndpointId { prefix: String },
    #[error("endpoint {id} already exists")]
    EndpointExists { id: String },
    #[error("invalid endpoint id {id:?}: expected {ENDPOINT_ID_LEN} lowercase hex digits")]
    InvalidEndpointId { id: String },
    #[error("host interface {ifname} is already used by endpoint {endpoint}")]
    HostIfnameInUse { ifname: String, endpoint: String },
    #[error("{ip} cannot be leased in network \"{network}\" ({subnet}): {reason}")]
    InvalidIp {
        network: String,
        subnet: IpNet,
        ip: IpAddr,
        reason: InvalidIpReason,
    },
    #[error("{ip} is already leased to endpoint {endpoint} in network \"{network}\"")]
    IpInUse {
        network: String,
        ip: IpAddr,
        endpoint: String,
    },
    #[error("network \"{network}\" has no IPv6 subnet: it cannot lease {ip}")]
    NoIpv6 { network: String, ip: Ipv6Addr },
    #[error("network \"{network}\" has no IPv4 subnet (it is IPv6-only): it cannot lease {ip}")]
    NoIpv4 { network: String, ip: Ipv4Addr },
    #[error("port {lease} is taken: endpoint {endpoint} has {holder} published")]
    PortInUse {
        /// The lease asked for.
        lease: String,
        /// The lease that holds it (the same, or one on 0.0.0.0 or a given address).
        holder: String,
        endpoint: String,
    },
    #[error("port {lease} is taken by a host socket")]
    HostPortInUse {
        lease: String,
        proto: Proto,
        port: u16,
    },
    #[error("no free host port left in {first}-{last}")]
    PortsExhausted { first: u16, last: u16 },
    #[error("endpoint {endpoint} has no {family} address to publish an {family} port to")]
    EndpointWithoutFamily {
        endpoint: String,
        family: &'static str,
    },
    #[error("network \"{network}\" ({subnet}) has no free address left")]
    SubnetExhausted { network: String, subnet: IpNet },
    #[error(
        "network \"{network}\" has {max} endpoints, as many as a Linux bridge takes ports: no room for another"
    )]
    BridgeFull { network: String, max: usize },
}

impl StateError {
    /// What the user can do about this error, when there is something to do.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            StateError::Open { source, .. } => match source.as_ref() {
                redb::DatabaseError::DatabaseAlreadyOpen => {
                    "another netpath daemon is using this state directory; stop it or pass \
                     another --state-dir"
                        .into()
                }
                _ => "check that the state directory exists and is writable".into(),
            },
            StateError::UnsupportedSchema { .. } => {
                "run the netpath version that wrote it, or `netpath reset` to start over".into()
            }
            StateError::NetworkExists { .. } => {
                "choose another name, or remove the existing network first".into()
            }
            StateError::SubnetOverlap { .. } => "choose a subnet that overlaps no network".into(),
            StateError::NetworkInUse { .. } => {
                "remove its endpoints first, or force the removal".into()
            }
            StateError::IpInUse { .. } => "omit the address to get a free one".into(),
            StateError::AmbiguousEndpointId { .. } => {
                "give more of the id (`netpath ls` lists them)".into()
            }
            StateError::NoIpv6 { .. } => {
                "omit the IPv6 address, or use a network created with an IPv6 --subnet".into()
            }
            StateError::NoIpv4 { .. } => {
                "omit the IPv4 address, or use a network created with an IPv4 --subnet".into()
            }
            StateError::InvalidIp { .. } => {
                "pick a host address of the subnet other than the gateway, or omit it".into()
            }
            StateError::SubnetExhausted { .. } => {
                "remove unused endpoints, or use a network with a larger subnet".into()
            }
            StateError::BridgeFull { .. } => {
                "put more endpoints in a routed network (`network create --mode routed`), which has no bridge and no such limit, or remove unused endpoints".into()
            }
            _ => return None,
        })
    }
}

macro_rules! db_error_from {
    ($($t:ty),*) => {$(
        impl From<$t> for StateError {
            fn from(e: $t) -> Self {
                StateError::Db(Box::new(e.into()))
            }
        }
    )*};
}
db_error_from!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);
