//! The datapath's counters as one [`StatsReport`]: what `GET /v1/stats` serves and
//! `netpath stats` prints — from the daemon, or straight from the pinned maps while the
//! daemon is down (the datapath outlives it).

use crate::{
    datapath::{ClassStat, Datapath, DatapathError, DropStat, EndpointStat, ForwardStat},
    model::{ClassCount, Endpoint, EndpointTraffic, ReasonCount, StatsReport, WayCount},
};

/// Reads every counter of `dp`; endpoints are named after the matching record of
/// `records` (by address).
pub fn report(dp: &Datapath, records: &[Endpoint]) -> Result<StatsReport, DatapathError> {
    Ok(StatsReport {
        classes: converted(dp.stats()?),
        endpoints: dp
            .endpoint_stats()?
            .into_iter()
            .map(|e| traffic(e, records))
            .collect(),
        forwards: converted(dp.forwards()?),
        drops: converted(dp.drops()?),
    })
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

impl From<DropStat> for ReasonCount {
    fn from(d: DropStat) -> Self {
        ReasonCount {
            reason: d.reason.into(),
            packets: d.packets,
            bytes: d.bytes,
        }
    }
}
