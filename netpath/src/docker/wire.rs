//! The JSON of every libnetwork remote-driver call (NetworkDriver and IpamDriver), with
//! the field names exactly as dockerd 20.10 sends and reads them
//! (moby/libnetwork `drivers/remote/api/api.go`, `ipams/remote/api/api.go`; Go structs
//! without json tags, so a key is the Go field name). Unknown keys are ignored, as Go
//! does; a missing required key or a wrong type is an error naming the key.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `NetworkDriver.CreateNetwork`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateNetwork {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    /// `com.docker.network.generic` (the `-o k=v`), `…enable_ipv6`, `…internal`.
    pub options: Option<Map<String, Value>>,
    #[serde(rename = "IPv4Data")]
    pub ipv4_data: Option<Vec<IpamData>>,
    #[serde(rename = "IPv6Data")]
    pub ipv6_data: Option<Vec<IpamData>>,
}

/// One pool of a network (`driverapi/ipamdata.go`): `Gateway` and the aux addresses are
/// CIDR strings with the pool's prefix length.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpamData {
    #[serde(default)]
    pub address_space: String,
    pub pool: String,
    pub gateway: Option<String>,
    pub aux_addresses: Option<BTreeMap<String, String>>,
}

/// `DeleteNetwork`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkRef {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
}

/// `EndpointOperInfo`, `DeleteEndpoint`, `Leave`, `RevokeExternalConnectivity`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointRef {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
}

/// `CreateEndpoint`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateEndpoint {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    pub interface: Option<EndpointInterface>,
    pub options: Option<Map<String, Value>>,
}

/// The addresses IPAM gave the endpoint (CIDR strings; `""` when none).
#[derive(Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointInterface {
    #[serde(default)]
    pub address: String,
    #[serde(rename = "AddressIPv6", default)]
    pub address_ipv6: String,
    #[serde(default)]
    pub mac_address: String,
}

/// `Join`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Join {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(default)]
    pub sandbox_key: String,
    pub options: Option<Map<String, Value>>,
}

/// `ProgramExternalConnectivity`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProgramExternal {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    pub options: Option<Map<String, Value>>,
}

/// One `-p` of `com.docker.network.portmap` (`types.PortBinding`): `Proto` 6 tcp, 17
/// udp, 132 sctp; a nil IP is `""`; `HostPort` 0 asks for any port.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct PortBinding {
    pub proto: u8,
    #[serde(rename = "IP", default)]
    pub ip: String,
    pub port: u16,
    #[serde(rename = "HostIP", default)]
    pub host_ip: String,
    #[serde(default)]
    pub host_port: u16,
    #[serde(default)]
    pub host_port_end: u16,
}

/// `IpamDriver.RequestPool`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RequestPool {
    #[serde(default)]
    pub address_space: String,
    #[serde(default)]
    pub pool: String,
    #[serde(default)]
    pub sub_pool: String,
    pub options: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub v6: bool,
}

/// `IpamDriver.ReleasePool`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReleasePool {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
}

/// `IpamDriver.RequestAddress`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RequestAddress {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    #[serde(default)]
    pub address: String,
    pub options: Option<BTreeMap<String, String>>,
}

/// `IpamDriver.ReleaseAddress`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReleaseAddress {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    pub address: String,
}

/// The option of `RequestAddress` that marks the network's gateway.
pub const REQUEST_ADDRESS_TYPE: &str = "RequestAddressType";
pub const GATEWAY_TYPE: &str = "com.docker.network.gateway";
/// Keys of the network and endpoint options.
pub const GENERIC: &str = "com.docker.network.generic";
pub const ENABLE_IPV6: &str = "com.docker.network.enable_ipv6";
pub const INTERNAL: &str = "com.docker.network.internal";
pub const PORTMAP: &str = "com.docker.network.portmap";
