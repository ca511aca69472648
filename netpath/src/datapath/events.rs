//! The datapath's event side (`netpath_common::events`), as the daemon uses it: what the
//! programs report ([`EventControl::set`]), how many events the ring could not take,
//! and the ring itself ([`EventRing`]), each opened from its pin. A datapath of an older
//! object has none of these maps: [`Datapath::events`] gives `None`, and nothing is
//! reported.

use aya::maps::RingBuf;
use netpath_common::events::{Event, MonitorConfig};

use super::*;

/// What the programs report, and what they lost.
pub struct EventControl {
    monitor: Array<MapData, MonitorConfig>,
    lost: PerCpuArray<MapData, u64>,
}

/// The ring the programs write events into (one reader: the daemon).
pub struct EventRing(pub RingBuf<MapData>);

impl EventControl {
    /// Reports every drop (`drops`) and one forward in `trace_every` (0: none).
    pub fn set(&mut self, cfg: MonitorConfig) -> Result<()> {
        self.monitor
            .set(0, cfg, 0)
            .map_err(DatapathError::writing(MONITOR_MAP))
    }

    /// Events the ring could not take so far, all CPUs.
    pub fn lost(&self) -> Result<u64> {
        let per_cpu = self
            .lost
            .get(&0, 0)
            .map_err(DatapathError::reading(EVENTS_LOST_MAP))?;
        Ok(per_cpu.iter().sum())
    }
}

/// One event of the ring, as the programs wrote it (`None` for a record of another
/// size, which this build did not write).
pub fn decode(bytes: &[u8]) -> Option<Event> {
    if bytes.len() != std::mem::size_of::<Event>() {
        return None;
    }
    // SAFETY: `Event` is plain data (`aya::Pod`: any bit pattern is a value) and `bytes`
    // holds exactly its size; the read does not need alignment.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Event>()) })
}

impl Datapath {
    /// The event maps, opened anew from their pins; `None` if the datapath has none.
    pub fn events(&self) -> Result<Option<(EventControl, EventRing)>> {
        let Some(monitor) = open_typed_if_pinned(&self.pins, MONITOR_MAP)? else {
            return Ok(None);
        };
        let control = EventControl {
            monitor,
            lost: open_typed(&self.pins, EVENTS_LOST_MAP)?,
        };
        let ring = EventRing(open_typed(&self.pins, EVENTS_MAP)?);
        Ok(Some((control, ring)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_of_the_events_size_decodes_and_others_do_not() {
        let mut bytes = [0u8; 64];
        bytes[8..12].copy_from_slice(&7u32.to_ne_bytes());
        bytes[52] = netpath_common::events::EVENT_DROP;
        let e = decode(&bytes).unwrap();
        assert_eq!((e.ifindex, e.kind), (7, netpath_common::events::EVENT_DROP));
        assert_eq!(decode(&bytes[..63]), None);
    }
}
