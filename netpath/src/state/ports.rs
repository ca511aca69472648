//! Port leases: all of one request or none, with conflicts named; release; list.

use super::*;

impl Store {
    /// Leases host ports for endpoint `endpoint_id`, all or none. A port conflicts with
    /// a lease of the same protocol and port whose address is the same or either is
    /// 0.0.0.0, and with a host socket bound to it (`host_busy` says, see
    /// [`crate::hostports::busy`]); a
    /// [`HostPort::FirstFree`] or [`HostPort::Ephemeral`] request takes the lowest port of
    /// its range (`ephemeral` for the latter) that conflicts with neither.
    pub fn lease_ports(
        &self,
        endpoint_id: &str,
        requests: &[PortRequest],
        ephemeral: (u16, u16),
        host_busy: &(dyn Fn(Proto, Ipv4Addr, u16) -> bool + Sync),
    ) -> Result<Vec<PortLease>> {
        self.write_with(Flush::CrashOnly, |t| {
            let ep = read_endpoint(&t.endpoints, endpoint_id)?;
            let mut out = Vec::new();
            for r in requests {
                let (proto, host_ip) = (r.proto, r.host_ip);
                let port = match r.host {
                    HostPort::Exact(p) => {
                        let lease = PortLease::lease_id(proto, host_ip, p);
                        if let Some(holder) = port_holder(&t.port_leases, proto, host_ip, p)? {
                            return Err(StateError::PortInUse {
                                lease,
                                holder: holder.id,
                                endpoint: holder.endpoint,
                            });
                        }
                        if host_busy(proto, host_ip, p) {
                            return Err(StateError::HostPortInUse {
                                lease,
                                proto,
                                port: p,
                            });
                        }
                        p
                    }
                    HostPort::FirstFree(_) | HostPort::Ephemeral => {
                        let (first, last) = match r.host {
                            HostPort::FirstFree(range) => (range.first, range.last),
                            _ => ephemeral,
                        };
                        let mut found = None;
                        for p in first..=last {
                            if port_holder(&t.port_leases, proto, host_ip, p)?.is_none()
                                && !host_busy(proto, host_ip, p)
                            {
                                found = Some(p);
                                break;
                            }
                        }
                        found.ok_or(StateError::PortsExhausted { first, last })?
                    }
                };
                let lease = PortLease {
                    id: PortLease::lease_id(proto, host_ip, port),
                    endpoint: ep.id.clone(),
                    proto,
                    host_ip,
                    host_port: port,
                    guest_ip: ep.ip,
                    guest_port: r.guest_port,
                };
                t.port_leases.insert(
                    (proto.number(), port, u32::from(host_ip)),
                    encode(&lease).as_slice(),
                )?;
                out.push(lease);
            }
            Ok(out)
        })
    }

    /// Releases port leases: the one with id `lease_id` if given, else every lease of
    /// `endpoint_id`. Returns what was released.
    pub fn release_ports(
        &self,
        endpoint_id: Option<&str>,
        lease_id: Option<&str>,
    ) -> Result<Vec<PortLease>> {
        self.write_with(Flush::CrashOnly, |t| {
            let mut gone = Vec::new();
            t.port_leases.retain(|_, v| {
                let Ok(l) = serde_json::from_slice::<PortLease>(v) else {
                    return true;
                };
                let hit = lease_id.is_none_or(|id| l.id == id)
                    && endpoint_id.is_none_or(|e| l.endpoint == e);
                if hit {
                    gone.push(l);
                }
                !hit
            })?;
            Ok(gone)
        })
    }

    /// Every port lease, by protocol, port and address.
    pub fn list_ports(&self) -> Result<Vec<PortLease>> {
        let txn = self.db.begin_read()?;
        let key = |(proto, port, ip)| format!("{proto}/{ip}:{port}");
        decode_all(&txn.open_table(PORT_LEASES)?, PORTS_NAME, key)
    }
}
