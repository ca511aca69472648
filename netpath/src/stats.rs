//! The datapath's counters as one [`StatsReport`]: what `GET /v1/stats` serves and
//! `netpath stats` prints — from the daemon, or straight from the pinned maps while the
//! daemon is down (the datapath outlives it).

use crate::{
    datapath::{self, ClassStat, Datapath, DatapathError, DropStat, EndpointStat, ForwardStat},
    model::{
        ClassCount, Endpoint, EndpointTraffic, HookDropCount, MapFill, ProgramCost, ReasonCount,
        StatsReport, WayCount,
    },
};

/// Reads every counter of `dp`; endpoints are named after the matching record of
/// `records` (by address).
pub fn report(dp: &Datapath, records: &[Endpoint]) -> Result<StatsReport, DatapathError> {
    let drops_by_hook: Vec<HookDropCount> = converted(dp.drops()?);
    Ok(StatsReport {
        classes: converted(dp.stats()?),
        endpoints: dp
            .endpoint_stats()?
            .into_iter()
            .map(|e| traffic(e, records))
            .collect(),
        forwards: converted(dp.forwards()?),
        drops: by_reason(&drops_by_hook),
        drops_by_hook,
        maps: converted(dp.map_fill()?),
        programs: converted(dp.program_costs()?),
    })
}

/// The drops per reason, summed over hooks, in the order the reasons first appear.
fn by_reason(drops: &[HookDropCount]) -> Vec<ReasonCount> {
    let mut out: Vec<ReasonCount> = Vec::new();
    for d in drops {
        match out.iter_mut().find(|r| r.reason == d.reason) {
            Some(r) => {
                r.packets += d.packets;
                r.bytes += d.bytes;
            }
            None => out.push(ReasonCount {
                reason: d.reason.clone(),
                packets: d.packets,
                bytes: d.bytes,
            }),
        }
    }
    out
}

/// The datapath's counters as the report's entries for them.
fn converted<S, T: From<S>>(stats: Vec<S>) -> Vec<T> {
    stats.into_iter().map(T::from).collect()
}

/// An endpoint's counters under the id and network of its record in `records` (the
/// one with its address), if there is one.
fn traffic(e: EndpointStat, records: &[Endpoint]) -> EndpointTraffic {
    let record = records.iter().find(|r| r.ip == e.ip);
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

impl From<ClassStat> for ClassCount {
    fn from(s: ClassStat) -> Self {
        ClassCount {
            hook: s.hook.into(),
            class: s.class.into(),
            packets: s.packets,
            bytes: s.bytes,
        }
    }
}

impl From<ForwardStat> for WayCount {
    fn from(f: ForwardStat) -> Self {
        WayCount {
            way: f.way.into(),
            packets: f.packets,
            bytes: f.bytes,
        }
    }
}

impl From<datapath::MapFill> for MapFill {
    fn from(m: datapath::MapFill) -> Self {
        MapFill {
            map: m.map.into(),
            entries: m.entries,
            capacity: m.capacity,
        }
    }
}

impl From<datapath::ProgramCost> for ProgramCost {
    fn from(p: datapath::ProgramCost) -> Self {
        ProgramCost {
            program: p.program.into(),
            run_count: p.run_count,
            run_time_ns: p.run_time_ns,
        }
    }
}

impl From<DropStat> for HookDropCount {
    fn from(d: DropStat) -> Self {
        HookDropCount {
            hook: d.hook.into(),
            reason: d.reason.into(),
            packets: d.packets,
            bytes: d.bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_by_reason_add_up_every_hook() {
        let row = |hook: &str, reason: &str, packets| HookDropCount {
            hook: hook.into(),
            reason: reason.into(),
            packets,
            bytes: packets * 60,
        };
        let rows = [
            row("tc_ingress", "spoofed_ip", 3),
            row("tc_ingress", "spoofed_mac", 0),
            row("uplink_egress", "spoofed_ip", 2),
        ];
        let sums = by_reason(&rows);
        let got: Vec<_> = sums
            .iter()
            .map(|r| (r.reason.as_str(), r.packets, r.bytes))
            .collect();
        assert_eq!(got, [("spoofed_ip", 5, 300), ("spoofed_mac", 0, 0)]);
    }
}
