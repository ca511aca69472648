//! Unit tests of the control plane over the recording fakes (no root, no kernel).
//!
//! * [`rollback`]: every multi-step operation failed at each of its steps in turn — the
//!   exact undo calls, and kernel and records as they were before;
//! * [`reconcile`]: the rules of `control::reconcile`;
//! * [`validation`]: every refused request field, with nothing changed.

mod ipv6_only;
mod nat66;
mod policy;
mod reconcile;
mod rollback;
mod validation;

use std::{
    net::Ipv4Addr,
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard},
};

use super::{
    Service, ServiceError,
    fake::{Kernel, NETNS, World},
};
use crate::model::{
    Endpoint, EndpointCreate, Mode, Network, NetworkCreate, PortLease, PortPublish, TapCreate,
};

/// A service over a fresh fake world and a state database in a temporary directory.
pub struct Rig {
    pub svc: Service,
    pub world: Arc<Mutex<World>>,
    _dir: tempfile::TempDir,
}

/// The records of the state database, compared whole.
#[derive(Debug, PartialEq, Eq)]
pub struct Records {
    pub networks: Vec<Network>,
    pub endpoints: Vec<Endpoint>,
    pub ports: Vec<PortLease>,
}

impl Rig {
    pub fn new() -> Rig {
        let (svc, world, dir) = super::fake::service();
        Rig {
            svc,
            world,
            _dir: dir,
        }
    }

    pub fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn kernel(&self) -> Kernel {
        self.world().kernel.clone()
    }

    pub async fn records(&self) -> Records {
        Records {
            networks: self.svc.list_networks().await.expect("networks"),
            endpoints: self.svc.list_endpoints(None).await.expect("endpoints"),
            ports: self.svc.list_ports().await.expect("ports"),
        }
    }

    /// Position of the next recorded call.
    pub fn mark(&self) -> usize {
        self.world().calls.len()
    }

    pub fn calls_since(&self, mark: usize) -> Vec<String> {
        self.world().calls[mark..].to_vec()
    }

    /// Makes the call at position `at` fail.
    pub fn fail_at(&self, at: usize) {
        self.world().fail_at = Some(at);
    }

    pub async fn network(&self, name: &str, mode: Mode) -> Network {
        self.svc
            .create_network(net_req(name, mode))
            .await
            .expect("create network")
    }

    pub async fn veth(&self, network: &str) -> Endpoint {
        self.svc
            .add_endpoint(veth_req(network))
            .await
            .expect("add endpoint")
    }

    pub async fn tap(&self, network: &str, name: &str) -> Endpoint {
        self.svc
            .add_tap(tap_req(network, name))
            .await
            .expect("add tap")
    }
}

/// A network on 10.77.0.0/24 with uplink `eth0`.
pub fn net_req(name: &str, mode: Mode) -> NetworkCreate {
    NetworkCreate {
        name: name.into(),
        subnet: Some("10.77.0.0/24".parse().expect("subnet")),
        mode,
        gateway: None,
        subnet6: None,
        gateway6: None,
        uplink: Some(super::fake::UPLINK.into()),
        mtu: None,
        no_masquerade: Vec::new(),
        policy: Default::default(),
        profile: None,
    }
}

pub fn veth_req(network: &str) -> EndpointCreate {
    EndpointCreate {
        network: network.into(),
        netns: Some(PathBuf::from(NETNS)),
        pid: None,
        ifname: None,
        ip: None,
        ip6: None,
        mac: None,
        container_id: None,
        peer: None,
    }
}

pub fn tap_req(network: &str, name: &str) -> TapCreate {
    TapCreate {
        network: network.into(),
        name: name.into(),
        ip: None,
        ip6: None,
        mac: None,
        uid: Some(1000),
        gid: Some(1000),
        queues: None,
    }
}

pub fn publish_req(endpoint: &str, specs: &[&str]) -> PortPublish {
    PortPublish {
        endpoint: endpoint.into(),
        spec: None,
        specs: specs.iter().map(|s| s.to_string()).collect(),
    }
}

/// The error's message, for asserting on.
pub fn message(e: &ServiceError) -> String {
    e.to_string()
}

/// The calls that set up the masquerade of network `web` (id 1, 10.77.0.0/24) on the
/// fake uplink (ifindex 2): the first of a network's creation, and of its reconcile.
pub const MASQ_CALLS: [&str; 5] = [
    "attach_tc uplink-egress 2",
    "attach_tc uplink-ingress 2",
    "set_uplink 2",
    "add_masq_subnet 10.77.0.0/24",
    "set_no_masquerade 1 []",
];

pub const GW: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
