//! The datapath's counters as one [`StatsReport`]: what `GET /v1/stats` serves and
//! `netpath stats` prints — from the daemon, or straight from the pinned maps while the
//! daemon is down (the datapath outlives it).

use crate::{
    datapath::{Datapath, DatapathError, EndpointStat},
    model::{Endpoint, EndpointTraffic, HookDropCount, ReasonCount, StatsReport},
};

/// Reads every counter of `dp`; endpoints are named after the matching record of
/// `records` (by address).
pub fn report(dp: &Datapath, records: &[Endpoint]) -> Result<StatsReport, DatapathError> {
    let drops_by_hook = dp.drops()?;
    Ok(StatsReport {
        classes: dp.stats()?,
        endpoints: {
            let index = Records::new(records);
            (dp.endpoint_stats()?.into_iter())
                .map(|e| traffic(e, &index))
                .collect()
        },
        forwards: dp.forwards()?,
        drops: by_reason(&drops_by_hook),
        drops_by_hook,
        maps: dp.map_fill()?,
        programs: dp.program_costs()?,
    })
}

/// The drops per reason, summed over hooks, in the order the reasons first appear.
fn by_reason(drops: &[HookDropCount]) -> Vec<ReasonCount> {
    let mut out: Vec<ReasonCount> = Vec::new();
    for d in drops {
        match out.iter_mut().find(|r| r.reason == d.reason) {
            Some(r) => r.count += d.count,
            None => out.push(ReasonCount {
                reason: d.reason.clone(),
                count: d.count,
            }),
        }
    }
    out
}

/// The records, by what the datapath's counters name an endpoint by: its IPv4 address,
/// or for one without (an IPv6-only network's) its host-side device's ifindex, looked
/// up once per record.
struct Records<'a> {
    by_ip: std::collections::HashMap<std::net::Ipv4Addr, &'a Endpoint>,
    by_ifindex: std::collections::HashMap<u32, &'a Endpoint>,
}

impl<'a> Records<'a> {
    fn new(records: &'a [Endpoint]) -> Records<'a> {
        let by_ip = (records.iter()).filter_map(|r| Some((r.ip?, r))).collect();
        let by_ifindex = (records.iter().filter(|r| r.ip.is_none()))
            .filter_map(|r| {
                Some((
                    nix::net::if_::if_nametoindex(r.host_ifname.as_str()).ok()?,
                    r,
                ))
            })
            .collect();
        Records { by_ip, by_ifindex }
    }
}

/// An endpoint's counters under the id and network of its record, if there is one.
fn traffic(e: EndpointStat, records: &Records<'_>) -> EndpointTraffic {
    let record = match e.ip {
        Some(ip) => records.by_ip.get(&ip),
        None => records.by_ifindex.get(&e.ifindex),
    };
    EndpointTraffic {
        id: record.map(|r| r.id.clone()),
        network: record.map(|r| r.network.clone()),
        ip: e.ip,
        ifindex: e.ifindex,
        tx_packets: e.tx_packets,
        tx_bytes: e.tx_bytes,
        rx_packets: e.rx_packets,
        rx_bytes: e.rx_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Count;

    #[test]
    fn counters_are_named_by_ipv4_address_or_for_an_ipv6_only_endpoint_by_device() {
        let four = crate::model::test_endpoint("aaaaaaaaaaaa", "10.50.0.2");
        // IPv6-only, its host side the loopback device (ifindex 1 in every namespace).
        let six = Endpoint {
            ip: None,
            gateway: None,
            ip6: Some("fd50::2".parse().unwrap()),
            host_ifname: "lo".into(),
            ..crate::model::test_endpoint("bbbbbbbbbbbb", "10.50.0.3")
        };
        let records = [four, six];
        let index = Records::new(&records);
        let stat = |ip: Option<&str>, ifindex| EndpointStat {
            ip: ip.map(|a| a.parse().unwrap()),
            ifindex,
            tx_packets: 1,
            tx_bytes: 60,
            rx_packets: 0,
            rx_bytes: 0,
        };
        let id = |e| traffic(e, &index).id;
        assert_eq!(
            id(stat(Some("10.50.0.2"), 7)).as_deref(),
            Some("aaaaaaaaaaaa")
        );
        assert_eq!(id(stat(None, 1)).as_deref(), Some("bbbbbbbbbbbb"));
        // An entry no record explains stays nameless.
        assert_eq!(id(stat(Some("10.50.0.9"), 8)), None);
        assert_eq!(id(stat(None, 999_999)), None);
    }

    #[test]
    fn drops_by_reason_add_up_every_hook() {
        let row = |hook: &str, reason: &str, packets| HookDropCount {
            hook: hook.into(),
            reason: reason.into(),
            count: Count {
                packets,
                bytes: packets * 60,
            },
        };
        let rows = [
            row("tc_ingress", "spoofed_ip", 3),
            row("tc_ingress", "spoofed_mac", 0),
            row("uplink_egress", "spoofed_ip", 2),
        ];
        let sums = by_reason(&rows);
        let got: Vec<_> = sums
            .iter()
            .map(|r| (r.reason.as_str(), r.count.packets, r.count.bytes))
            .collect();
        assert_eq!(got, [("spoofed_ip", 5, 300), ("spoofed_mac", 0, 0)]);
    }
}
