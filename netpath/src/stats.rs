//! The datapath's counters as one [`StatsReport`]: what `GET /v1/stats` serves and
//! `netpath stats` prints — from the daemon, or straight from the pinned maps while the
//! daemon is down (the datapath outlives it).

use crate::{
    datapath::{Datapath, DatapathError},
    model::{ClassCount, Endpoint, EndpointTraffic, ReasonCount, StatsReport, WayCount},
};

/// Reads every counter of `dp`; endpoints are named after the matching record of
/// `records` (by address).
pub fn report(dp: &Datapath, records: &[Endpoint]) -> Result<StatsReport, DatapathError> {
    let classes = dp
        .stats()?
        .into_iter()
        .map(|s| ClassCount {
            hook: s.hook.into(),
            class: s.class.into(),
            packets: s.packets,
            bytes: s.bytes,
        })
        .collect();
    let endpoints = dp
        .endpoint_stats()?
        .into_iter()
        .map(|e| {
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
        })
        .collect();
    let forwards = dp
        .forwards()?
        .into_iter()
        .map(|f| WayCount {
            way: f.way.into(),
            packets: f.packets,
            bytes: f.bytes,
        })
        .collect();
    let drops = dp
        .drops()?
        .into_iter()
        .map(|d| ReasonCount {
            reason: d.reason.into(),
            packets: d.packets,
            bytes: d.bytes,
        })
        .collect();
    Ok(StatsReport {
        classes,
        endpoints,
        forwards,
        drops,
    })
}
