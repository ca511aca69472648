//! The endpoint map, filled by the control plane: endpoint IPv4 → where it lives.

use aya_ebpf::{macros::map, maps::HashMap};
use netpath_common::maps::{EndpointKey, EndpointValue, MAX_ENDPOINTS};

#[map(name = "NETPATH_ENDPOINTS")]
pub static NETPATH_ENDPOINTS: HashMap<EndpointKey, EndpointValue> =
    HashMap::with_max_entries(MAX_ENDPOINTS, 0);
