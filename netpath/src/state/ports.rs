//! Port leases: all of one request or none, with conflicts named; release; list.

use super::*;

impl Store {
    /// Leases host ports for endpoint `endpoint_id`, all or none: for each request one
    /// lease per host address it names, all on the same host port. A port conflicts
    /// with a lease of the same protocol, family and port whose address is the same or
    /// either is that family's every-address, and with a host socket bound to it
    /// (`host_busy` says, see [`crate::hostports::busy`]); a [`HostPort::FirstFree`] or
    /// [`HostPort::Ephemeral`] request takes the lowest port of its range (`ephemeral`
    /// for the latter) that conflicts with neither on any of its addresses. An IPv6
    /// lease leads to the endpoint's IPv6 address.
    pub fn lease_ports(
        &self,
        endpoint_id: &str,
        requests: &[PortRequest],
        ephemeral: (u16, u16),
        host_busy: &(dyn Fn(Proto, IpAddr, u16) -> bool + Sync),
    ) -> Result<Vec<PortLease>> {
        self.write_with(Flush::CrashOnly, |t| {
            let ep = read_endpoint(&t.endpoints, endpoint_id)?;
            let mut out = Vec::new();
            for r in requests {
                let proto = r.proto;
                // The first conflict of port `p` on any of the request's addresses.
                let conflict = |t: &Tables<'_>, p: u16| -> Result<Option<StateError>> {
                    for &host_ip in &r.host_ips {
                        let lease = PortLease::lease_id(proto, host_ip, p);
                        if let Some(holder) = port_holder(t, proto, host_ip, p)? {
                            return Ok(Some(StateError::PortInUse {
                                lease,
                                holder: holder.id,
                                endpoint: holder.endpoint,
                            }));
                        }
                        if host_busy(proto, host_ip, p) {
                            return Ok(Some(StateError::HostPortInUse {
                                lease,
                                proto,
                                port: p,
                            }));
                        }
                    }
                    Ok(None)
                };
                let port = match r.host {
                    HostPort::Exact(p) => match conflict(t, p)? {
                        Some(e) => return Err(e),
                        None => p,
                    },
                    HostPort::FirstFree(_) | HostPort::Ephemeral => {
                        let (first, last) = match r.host {
                            HostPort::FirstFree(range) => (range.first, range.last),
                            _ => ephemeral,
                        };
                        let mut found = None;
                        for p in first..=last {
                            if conflict(t, p)?.is_none() {
                                found = Some(p);
                                break;
                            }
                        }
                        found.ok_or(StateError::PortsExhausted { first, last })?
                    }
                };
                for &host_ip in &r.host_ips {
                    let without = |family| StateError::EndpointWithoutFamily {
                        endpoint: ep.id.clone(),
                        family,
                    };
                    let guest_ip = match host_ip {
                        IpAddr::V4(_) => IpAddr::V4(ep.ip.ok_or_else(|| without("IPv4"))?),
                        IpAddr::V6(_) => IpAddr::V6(ep.ip6.ok_or_else(|| without("IPv6"))?),
                    };
                    let lease = PortLease {
                        id: PortLease::lease_id(proto, host_ip, port),
                        endpoint: ep.id.clone(),
                        proto,
                        host_ip,
                        host_port: port,
                        guest_ip,
                        guest_port: r.guest_port,
                    };
                    let value = encode(&lease);
                    let n = proto.number();
                    match host_ip {
                        IpAddr::V4(ip) => {
                            t.port_leases
                                .insert((n, port, u32::from(ip)), value.as_slice())?;
                        }
                        IpAddr::V6(ip) => {
                            t.port6_leases
                                .insert((n, port, u128::from(ip)), value.as_slice())?;
                        }
                    }
                    out.push(lease);
                }
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
            let mut keep = |v: &[u8]| {
                let Ok(l) = serde_json::from_slice::<PortLease>(v) else {
                    return true;
                };
                let hit = lease_id.is_none_or(|id| l.id == id)
                    && endpoint_id.is_none_or(|e| l.endpoint == e);
                if hit {
                    gone.push(l);
                }
                !hit
            };
            t.port_leases.retain(|_, v| keep(v))?;
            t.port6_leases.retain(|_, v| keep(v))?;
            Ok(gone)
        })
    }

    /// Every port lease, by protocol, port and address: the IPv4 ones, then the IPv6
    /// ones.
    pub fn list_ports(&self) -> Result<Vec<PortLease>> {
        let txn = self.db.begin_read()?;
        let key = |(proto, port, ip): (u8, u16, u32)| format!("{proto}/{ip}:{port}");
        let mut all: Vec<PortLease> = decode_all(&txn.open_table(PORT_LEASES)?, PORTS_NAME, key)?;
        let key6 = |(proto, port, ip): (u8, u16, u128)| format!("{proto}/{ip}:{port}");
        let v6: Vec<PortLease> = decode_all(&txn.open_table(PORT6_LEASES)?, PORTS_NAME, key6)?;
        all.extend(v6);
        Ok(all)
    }
}
