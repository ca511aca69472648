//! Published ports: Docker's `-p` specs leased in the state database and written to the
//! datapath's publish map, all of one command or none.

use std::net::{Ipv4Addr, Ipv6Addr};

use netpath_common::nat::{NatTarget, PublishKey};

use super::{MapWrite, Result, Service, ServiceError, db};
use crate::{
    model::{Endpoint, PortLease, PortPublish},
    portspec::{HostIp, PortSpec, PortSpecError},
    state::StateError,
};

impl Service {
    /// Publishes ports of an endpoint (Docker's `-p` syntax, every spec of one command):
    /// leases the host ports in the state database in one transaction, then puts them in
    /// the datapath's publish map — all or none.
    pub async fn publish_ports(&self, req: PortPublish) -> Result<Vec<PortLease>> {
        let specs = req.specs();
        if specs.is_empty() {
            return Err(ServiceError::invalid(
                "no port to publish: give at least one spec, e.g. 8080:80",
            ));
        }
        let ep = self.get_endpoint(&req.endpoint).await?;
        let mut requests = Vec::new();
        for spec in specs {
            let spec: PortSpec = spec
                .parse()
                .map_err(|e: PortSpecError| ServiceError::invalid(e.to_string()))?;
            // (The datapath's view of the host's addresses, which 0.0.0.0 publishes answer
            // on, is kept current by the daemon as addresses change: see
            // `refresh_local_addrs`.)
            if let HostIp::V4(ip) = spec.host
                && !ip.is_unspecified()
                && !ip.is_loopback()
                && !self.host_has_address(ip).await?
            {
                return Err(ServiceError::Invalid {
                    what: format!("{ip} is not an address of this host"),
                    hint: Some(
                        "publish on one of the host's addresses, 127.0.0.1, or all (omit HOSTIP)"
                            .into(),
                    ),
                });
            }
            requests.extend(spec.requests().map_err(|ip| ipv6_refused(&ep, ip))?);
        }
        let lock = self.net_lock(&ep.network);
        let _guard = lock.lock().await;
        let (id, ephemeral, host) = (ep.id.clone(), self.ephemeral_ports, self.host.clone());
        let leases = db(&self.store, move |s| {
            s.lease_ports(&id, &requests, ephemeral, &|proto, ip, port| {
                host.port_busy(proto, ip, port)
            })
        })
        .await
        .map_err(|e| match e {
            // Say which process holds it.
            ServiceError::State(StateError::HostPortInUse { lease, proto, port }) => {
                ServiceError::Conflict {
                    what: format!(
                        "port {lease} is taken on the host by {}",
                        self.host.port_owner(proto, port)
                    ),
                    hint: Some("pick another host port, or stop the process using it".into()),
                }
            }
            e => e,
        })?;
        // Map writes under the datapath lock, no await inside; on failure undo them.
        let published = {
            let mut dp = self.datapath();
            let r = leases.iter().try_for_each(|l| {
                let (key, target) = (publish_key(l), publish_target(l));
                dp.write(MapWrite::Publish { key, target })
            });
            if r.is_err() {
                for l in &leases {
                    let _ = dp.write(MapWrite::Unpublish(publish_key(l)));
                }
            }
            r
        };
        if let Err(e) = published {
            // Release exactly the leases just taken (older ones of this endpoint stay).
            let (id, ids): (String, Vec<String>) =
                (ep.id.clone(), leases.iter().map(|l| l.id.clone()).collect());
            let _ = db(&self.store, move |s| {
                ids.iter()
                    .try_for_each(|lid| s.release_ports(Some(&id), Some(lid)).map(drop))
            })
            .await;
            return Err(e.into());
        }
        Ok(leases)
    }

    /// Unpublishes ports: the lease `lease` (`tcp/0.0.0.0:8080`), every port of endpoint
    /// `endpoint` (an id or unique prefix), or the lease only if it is that endpoint's.
    pub async fn unpublish_ports(
        &self,
        endpoint: Option<&str>,
        lease: Option<&str>,
    ) -> Result<Vec<PortLease>> {
        let ep = match endpoint {
            Some(e) => Some(self.get_endpoint(e).await?),
            None => None,
        };
        let lease = match lease {
            Some(l) => {
                let ports = self.list_ports().await?;
                let Some(found) = ports.into_iter().find(|p| p.id == l) else {
                    return Err(ServiceError::NotFound {
                        what: format!("no port is published as {l}"),
                        hint: Some("`netpath port ls` lists the published ports".into()),
                    });
                };
                if let Some(ep) = &ep
                    && found.endpoint != ep.id
                {
                    return Err(ServiceError::invalid(format!(
                        "port {l} is published for endpoint {}, not {}",
                        found.endpoint, ep.id
                    )));
                }
                Some(found)
            }
            None => None,
        };
        let network = match (&ep, &lease) {
            (Some(ep), _) => ep.network.clone(),
            (None, Some(l)) => self.get_endpoint(&l.endpoint).await?.network,
            (None, None) => {
                return Err(ServiceError::invalid(
                    "say what to unpublish: an endpoint, a port lease id (tcp/0.0.0.0:8080), or both",
                ));
            }
        };
        let lock = self.net_lock(&network);
        let _guard = lock.lock().await;
        // The map entries go first: should that fail, the leases stay recorded and a
        // retry finishes the job.
        let (id, lease_id) = (ep.map(|e| e.id), lease.map(|l| l.id));
        let going: Vec<PortLease> = self
            .list_ports()
            .await?
            .into_iter()
            .filter(|l| id.as_ref().is_none_or(|e| *e == l.endpoint))
            .filter(|l| lease_id.as_ref().is_none_or(|i| *i == l.id))
            .collect();
        {
            let mut dp = self.datapath();
            for l in &going {
                dp.write(MapWrite::Unpublish(publish_key(l)))?;
            }
        }
        db(&self.store, move |s| {
            s.release_ports(id.as_deref(), lease_id.as_deref())
        })
        .await
    }

    pub async fn list_ports(&self) -> Result<Vec<PortLease>> {
        db(&self.store, |s| s.list_ports()).await
    }

    async fn host_has_address(&self, ip: Ipv4Addr) -> Result<bool> {
        Ok(self.host.all_ipv4_addresses().await?.contains(&ip))
    }
}

pub(super) fn publish_key(l: &PortLease) -> PublishKey {
    PublishKey {
        host_ip: l.host_ip.octets(),
        port: l.host_port,
        proto: l.proto.number(),
        _pad: 0,
    }
}

pub(super) fn publish_target(l: &PortLease) -> NatTarget {
    NatTarget {
        addr: l.guest_ip.octets(),
        port: l.guest_port,
        flags: 0,
        _pad: 0,
    }
}

/// Why a spec naming the IPv6 host address `ip` is refused for `ep`: it has no IPv6 (an
/// IPv4-only network's), or the datapath cannot publish on IPv6 yet.
fn ipv6_refused(ep: &Endpoint, ip: Ipv6Addr) -> ServiceError {
    if ep.ip6.is_none() {
        return ServiceError::Invalid {
            what: format!(
                "endpoint {} has no IPv6 address (network {} is IPv4-only): nothing to \
                 publish on [{ip}]",
                ep.id, ep.network
            ),
            hint: Some("publish on an IPv4 host address, or omit HOSTIP".into()),
        };
    }
    ServiceError::Invalid {
        what: format!("publishing on an IPv6 host address ([{ip}]) is not supported yet"),
        hint: Some("publish on an IPv4 host address, or omit HOSTIP (IPv4 for now)".into()),
    }
}
