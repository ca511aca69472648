//! Published ports: Docker's `-p` specs leased in the state database and written to the
//! datapath's publish map, all of one command or none.

use std::net::{IpAddr, Ipv4Addr};

use netpath_common::nat::{NatTarget, NatTargetOf, PublishKey, PublishKeyOf};

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
            // (The datapath's view of the host's addresses, which publishes on every
            // address answer on, is kept current by the daemon as addresses change: see
            // `refresh_local_addrs`.)
            let one: Option<IpAddr> = match spec.host {
                HostIp::V4(ip) if !ip.is_unspecified() && !ip.is_loopback() => Some(ip.into()),
                HostIp::V6(ip) if !ip.is_unspecified() && !ip.is_loopback() => Some(ip.into()),
                _ => None,
            };
            if let Some(ip) = one
                && (if ip.is_ipv4() {
                    ep.ip.is_some()
                } else {
                    ep.ip6.is_some()
                })
                && !self.host_has_address(ip).await?
            {
                return Err(ServiceError::Invalid {
                    what: format!("{ip} is not an address of this host"),
                    hint: Some(
                        "publish on one of the host's addresses, 127.0.0.1 or [::1], or all \
                         (omit HOSTIP)"
                            .into(),
                    ),
                });
            }
            requests.extend(
                spec.requests(ep.ip.is_some(), ep.ip6.is_some())
                    .map_err(|ip| family_refused(&ep, ip))?,
            );
        }
        let lock = self.net_lock(&ep.network);
        let _guard = lock.lock().await;
        // Under the lock: a policy change waits for it.
        let network = self.get_network(&ep.network).await?;
        if network.policy.internal {
            return Err(ServiceError::Conflict {
                what: format!(
                    "network {} is internal: its endpoints publish no ports",
                    network.name
                ),
                hint: Some(format!(
                    "`netpath network update {} --internal=false` first, or publish from another network",
                    network.name
                )),
            });
        }
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
            let r = leases.iter().try_for_each(|l| dp.write(publish_write(l)));
            if r.is_err() {
                for l in &leases {
                    let _ = dp.write(unpublish_write(l));
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
                dp.write(unpublish_write(l))?;
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

    async fn host_has_address(&self, ip: IpAddr) -> Result<bool> {
        Ok(self.host.all_addresses().await?.contains(&ip))
    }
}

/// The map write that publishes lease `l` (IPv4 or IPv6, by its host address).
pub(super) fn publish_write(l: &PortLease) -> MapWrite {
    let (proto, port) = (l.proto.number(), l.host_port);
    match (l.host_ip, l.guest_ip) {
        (IpAddr::V6(host), IpAddr::V6(guest)) => MapWrite::Publish6 {
            key: PublishKeyOf::new(proto, host.octets(), port),
            target: NatTargetOf::new(guest.octets(), l.guest_port),
        },
        _ => MapWrite::Publish {
            key: publish_key(l),
            target: NatTarget::new(v4(l.guest_ip).octets(), l.guest_port),
        },
    }
}

/// The map write that stops publishing lease `l`.
pub(super) fn unpublish_write(l: &PortLease) -> MapWrite {
    match l.host_ip {
        IpAddr::V6(host) => MapWrite::Unpublish6(PublishKeyOf::new(
            l.proto.number(),
            host.octets(),
            l.host_port,
        )),
        IpAddr::V4(_) => MapWrite::Unpublish(publish_key(l)),
    }
}

/// The IPv4 publish key of lease `l`.
fn publish_key(l: &PortLease) -> PublishKey {
    PublishKeyOf::new(l.proto.number(), v4(l.host_ip).octets(), l.host_port)
}

/// The endpoint address a lease leads to, for marking the endpoint published.
pub(super) fn published_endpoint(l: &PortLease) -> IpAddr {
    l.guest_ip
}

/// An IPv4 lease's address (an IPv6 one, which never reaches here, as 0.0.0.0).
fn v4(ip: IpAddr) -> Ipv4Addr {
    match ip {
        IpAddr::V4(ip) => ip,
        IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
    }
}

/// Why a spec naming host address `ip` is refused for `ep`: it has no address of that
/// family (an IPv4-only or IPv6-only network's).
fn family_refused(ep: &Endpoint, ip: IpAddr) -> ServiceError {
    let (family, only, other) = match ip {
        IpAddr::V4(_) => ("IPv4", "IPv6", "an IPv6 host address ([::], [::1])"),
        IpAddr::V6(_) => ("IPv6", "IPv4", "an IPv4 host address"),
    };
    let shown = match ip {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
    };
    ServiceError::Invalid {
        what: format!(
            "endpoint {} has no {family} address (network {} is {only}-only): nothing to \
             publish on {shown}",
            ep.id, ep.network
        ),
        hint: Some(format!("publish on {other}, or omit HOSTIP")),
    }
}
