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
        endpoints: dp
            .endpoint_stats()?
            .into_iter()
            .map(|e| traffic(e, records))
            .collect(),
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

/// An endpoint's counters under the id and network of its record in `records` (the
/// one with its IPv4 address; for an endpoint without, the one whose host-side device it
/// is), if there is one.
fn traffic(e: EndpointStat, records: &[Endpoint]) -> EndpointTraffic {
    let record = match e.ip {
        Some(ip) => records.iter().find(|r| r.ip == Some(ip)),
        None => records.iter().find(|r| {
            r.ip.is_none() && nix::net::if_::if_nametoindex(r.host_ifname.as_str()) == Ok(e.ifindex)
        }),
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
