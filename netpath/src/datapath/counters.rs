//! Reading the datapath's counters, summed over CPUs.

use super::*;
use crate::model::{ClassCount, Count, HookDropCount, WayCount};

impl From<Counter> for Count {
    fn from(c: Counter) -> Self {
        Count {
            packets: c.packets,
            bytes: c.bytes,
        }
    }
}

/// One endpoint's counters, summed over CPUs.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct EndpointStat {
    /// `None` for an endpoint without IPv4 (see [`ENDPOINT_FLAG_NO_IPV4`]).
    pub ip: Option<std::net::Ipv4Addr>,
    pub ifindex: u32,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
}

/// Slot `slot` of a per-CPU counter array, summed over CPUs.
pub(super) fn counter_sum(
    map: &PerCpuArray<MapData, Counter>,
    name: &'static str,
    slot: u32,
) -> Result<Counter> {
    map.get(&slot, 0)
        .map(|v| Counter::sum(v.iter()))
        .map_err(DatapathError::reading(name))
}

/// The rows of a counter array with a slot per hook and `S` (a drop reason, a packet
/// class): `read` gives each slot's sum (`None` for a slot the pinned array lacks, which
/// is left out), `row` makes it a row.
fn per_hook<S: Copy, T>(
    slots: &[S],
    read: impl Fn(Hook, S) -> Result<Option<Counter>>,
    row: impl Fn(Hook, S, Counter) -> T,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for hook in Hook::ALL {
        for &slot in slots {
            if let Some(c) = read(hook, slot)? {
                out.push(row(hook, slot, c));
            }
        }
    }
    Ok(out)
}

impl Datapath {
    /// Every endpoint's counters.
    pub fn endpoint_stats(&self) -> Result<Vec<EndpointStat>> {
        let mut out = Vec::new();
        // The interface map has every endpoint, IPv6-only ones included.
        for entry in self.ifaces.iter() {
            let (_, v) = entry.map_err(DatapathError::reading(IFACES_MAP))?;
            let c = self
                .ep_stats
                .get(&v.ifindex, 0)
                .map(|vals| EndpointCounters::sum(vals.iter()))
                .unwrap_or_default();
            out.push(EndpointStat {
                ip: (v.flags & ENDPOINT_FLAG_NO_IPV4 == 0).then(|| v.ip.into()),
                ifindex: v.ifindex,
                tx_packets: c.tx_packets,
                tx_bytes: c.tx_bytes,
                rx_packets: c.rx_packets,
                rx_bytes: c.rx_bytes,
            });
        }
        out.sort_by_key(|e| (e.ip, e.ifindex));
        Ok(out)
    }

    /// Counters of the endpoint behind host-side device `ifindex`.
    pub fn endpoint_counters(&self, ifindex: u32) -> Result<EndpointCounters> {
        self.ep_stats
            .get(&ifindex, 0)
            .map(|vals| EndpointCounters::sum(vals.iter()))
            .map_err(DatapathError::reading(EP_STATS_MAP))
    }

    /// Drops by hook and reason, summed over CPUs: the slots the pinned counter array has
    /// (one pinned by an older build has fewer, until it is migrated).
    pub fn drops(&self) -> Result<Vec<HookDropCount>> {
        per_hook(
            &DropReason::ALL,
            |hook, reason| self.drop_counter_at(hook, reason),
            |hook, reason, c| HookDropCount {
                hook: hook.name().into(),
                reason: reason.name().into(),
                count: c.into(),
            },
        )
    }

    /// One drop reason's counter, summed over CPUs and hooks.
    pub fn drop_counter(&self, reason: DropReason) -> Result<Counter> {
        let mut sum = Counter::default();
        for hook in Hook::ALL {
            let c = self.drop_counter_at(hook, reason)?.unwrap_or_default();
            sum.packets += c.packets;
            sum.bytes += c.bytes;
        }
        Ok(sum)
    }

    /// One (hook, reason) slot, summed over CPUs; `None` if the pinned array has none.
    fn drop_counter_at(&self, hook: Hook, reason: DropReason) -> Result<Option<Counter>> {
        let slot = drop_index(hook, reason);
        (slot < self.drops.len())
            .then(|| counter_sum(&self.drops, DROPS_MAP, slot))
            .transpose()
    }

    /// The fast path's forwards, each way, summed over CPUs.
    pub fn forwards(&self) -> Result<Vec<WayCount>> {
        Forward::ALL
            .iter()
            .map(|w| {
                let c = counter_sum(&self.forwards, FORWARDS_MAP, *w as u32)?;
                Ok(WayCount {
                    way: w.name().into(),
                    count: c.into(),
                })
            })
            .collect()
    }

    /// Every registered endpoint.
    pub fn endpoints(&self) -> Result<Vec<(std::net::Ipv4Addr, EndpointValue)>> {
        self.endpoints
            .iter()
            .map(|r| r.map(|(k, v)| (std::net::Ipv4Addr::from(k.ip), v)))
            .collect::<Result<_, _>>()
            .map_err(DatapathError::reading(ENDPOINTS_MAP))
    }

    /// Per-(hook, class) packet and byte totals, summed over CPUs. (A datapath of an
    /// older layout, with fewer classes, shows those it has.)
    pub fn stats(&self) -> Result<Vec<ClassCount>> {
        per_hook(
            &PacketClass::ALL,
            |hook, class| self.counter_if_any(hook, class),
            |hook, class, c| ClassCount {
                hook: hook.name().into(),
                class: class.name().into(),
                count: c.into(),
            },
        )
    }

    /// One stats slot, summed over CPUs.
    pub fn counter(&self, hook: Hook, class: PacketClass) -> Result<Counter> {
        Ok(self.counter_if_any(hook, class)?.unwrap_or_default())
    }

    /// One stats slot, summed over CPUs; `None` if the pinned array has no such class (an
    /// older layout's, whose blocks per hook are shorter).
    fn counter_if_any(&self, hook: Hook, class: PacketClass) -> Result<Option<Counter>> {
        let per_hook = self.stats.len() / Hook::ALL.len() as u32;
        if class as u32 >= per_hook {
            return Ok(None);
        }
        // `stat_index`, with the pinned array's own block size.
        let index = hook as u32 * per_hook + class as u32;
        let values = self
            .stats
            .get(&index, 0)
            .map_err(DatapathError::reading(STATS_MAP))?;
        Ok(Some(Counter::sum(values.iter())))
    }
}
