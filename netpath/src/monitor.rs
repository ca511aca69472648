//! Live events for `netpath monitor` (`GET /v1/events`): the daemon reads the datapath's
//! ring buffer on a task of its own and hands every event to each watcher through a
//! bounded broadcast channel. What the programs report follows who watches: drops while
//! anyone wants them, forwards at the finest rate any watcher asked for, nothing once
//! the last one leaves ([`Hub::watch`] / dropping the [`Watch`]).
//!
//! Nothing here can slow the datapath: the programs never wait for the ring (a full one
//! loses the event, counted per CPU), and a watcher that reads too slowly misses events
//! (its channel keeps the newest [`BACKLOG`]), which its stream reports as lost too.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use netpath_common::{
    events::{EVENT_DROP, Event, MonitorConfig, POLL_MS},
    ipv6::IPPROTO_ICMPV6,
    maps::{DropReason, Hook},
    packet::{IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP},
};
use tokio::{io::unix::AsyncFd, sync::broadcast};

use crate::{
    datapath::{DatapathError, EventControl, EventRing, decode_event},
    model::{Endpoint, EventType, MonitorEvent, PacketEvent},
};

/// Events a watcher may fall behind by before it misses some.
pub const BACKLOG: usize = 4096;

/// What one watcher asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wants {
    pub drops: bool,
    /// One forward in this many (0: none).
    pub trace_every: u32,
}

/// What the programs must report for `watchers`: drops if any wants them, forwards at
/// the finest rate asked for.
pub fn config_for(watchers: impl IntoIterator<Item = Wants>) -> MonitorConfig {
    let mut cfg = MonitorConfig {
        drops: 0,
        trace_every: 0,
    };
    for w in watchers {
        cfg.drops |= u32::from(w.drops);
        if w.trace_every != 0 && (cfg.trace_every == 0 || w.trace_every < cfg.trace_every) {
            cfg.trace_every = w.trace_every;
        }
    }
    cfg
}

struct Watchers {
    control: EventControl,
    next: u64,
    now: Vec<(u64, Wants)>,
}

/// The daemon's side of the event ring.
pub struct Hub {
    tx: broadcast::Sender<Event>,
    watchers: Mutex<Watchers>,
}

/// One watcher's events; while it lives the programs report what it asked for.
pub struct Watch {
    pub events: broadcast::Receiver<Event>,
    id: u64,
    hub: Arc<Hub>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.hub.leave(self.id);
    }
}

impl Hub {
    /// Starts reading `ring` on a task of the current runtime; the programs report
    /// nothing until someone watches.
    pub fn start(mut control: EventControl, ring: EventRing) -> Result<Arc<Hub>, DatapathError> {
        control.set(config_for([]))?;
        let (tx, _) = broadcast::channel(BACKLOG);
        let hub = Arc::new(Hub {
            tx: tx.clone(),
            watchers: Mutex::new(Watchers {
                control,
                next: 0,
                now: Vec::new(),
            }),
        });
        // SAFETY: the ring owns its map's file descriptor, open until the ring is
        // dropped, which only the `AsyncFd` (owning the ring) does; `as_raw_fd` always
        // gives that same descriptor.
        match unsafe { AsyncFd::register_with_interest(ring.0, tokio::io::Interest::READABLE) } {
            Ok(fd) => {
                tokio::spawn(read_ring(fd, tx));
            }
            Err(e) => {
                eprintln!("netpath daemon: the event ring cannot be polled: {e}; no live events")
            }
        }
        Ok(hub)
    }

    /// Adds a watcher that wants `wants`.
    pub fn watch(self: &Arc<Self>, wants: Wants) -> Result<Watch, DatapathError> {
        let events = self.tx.subscribe();
        let mut w = self.lock();
        let id = w.next;
        w.next += 1;
        w.now.push((id, wants));
        let cfg = config_for(w.now.iter().map(|(_, wants)| *wants));
        w.control.set(cfg)?;
        Ok(Watch {
            events,
            id,
            hub: self.clone(),
        })
    }

    fn leave(&self, id: u64) {
        let mut w = self.lock();
        w.now.retain(|(i, _)| *i != id);
        let cfg = config_for(w.now.iter().map(|(_, wants)| *wants));
        if let Err(e) = w.control.set(cfg) {
            eprintln!("netpath daemon: cannot update what the datapath reports: {e}");
        }
    }

    /// Events the ring could not take so far.
    pub fn lost(&self) -> u64 {
        self.lock().control.lost().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Watchers> {
        // Each update is a whole map write: a panic cannot leave it half done.
        self.watchers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Hands every event of the ring to the watchers, as long as the daemon runs.
async fn read_ring(
    mut fd: AsyncFd<aya::maps::RingBuf<aya::maps::MapData>>,
    tx: broadcast::Sender<Event>,
) {
    loop {
        // The programs wake this task only once the ring fills up (`WAKEUP_BYTES`): it
        // also drains the ring every `POLL_MS` while someone watches (every second
        // otherwise, which is also how soon it notices a new watcher).
        let poll = match tx.receiver_count() {
            0 => Duration::from_secs(1),
            _ => Duration::from_millis(POLL_MS),
        };
        tokio::select! {
            ready = fd.readable_mut() => match ready {
                Ok(mut ready) => {
                    drain(ready.get_inner_mut(), &tx);
                    ready.clear_ready();
                }
                Err(e) => {
                    eprintln!("netpath daemon: the event ring failed: {e}; no more live events");
                    return;
                }
            },
            () = tokio::time::sleep(poll) => drain(fd.get_mut(), &tx),
        }
    }
}

/// Hands every event in `ring` to the watchers.
fn drain(ring: &mut aya::maps::RingBuf<aya::maps::MapData>, tx: &broadcast::Sender<Event>) {
    while let Some(item) = ring.next() {
        if let Some(e) = decode_event(&item) {
            // No watcher: nobody to tell.
            let _ = tx.send(e);
        }
    }
}

/// Which endpoint an event is of: the one behind the device it happened on, else the
/// one whose address it carries.
pub struct Names {
    by_ifindex: Vec<(u32, usize)>,
    records: Vec<Endpoint>,
}

impl Names {
    /// `records`, with `ifindex_of` telling each one's host-side device.
    pub fn new(records: Vec<Endpoint>, ifindex_of: impl Fn(&str) -> Option<u32>) -> Names {
        let by_ifindex = (records.iter().enumerate())
            .filter_map(|(i, r)| Some((ifindex_of(&r.host_ifname)?, i)))
            .collect();
        Names {
            by_ifindex,
            records,
        }
    }

    fn of(&self, e: &Event, src: Option<IpAddr>, dst: Option<IpAddr>) -> Option<&Endpoint> {
        if let Some((_, i)) = self
            .by_ifindex
            .iter()
            .find(|(ifindex, _)| *ifindex == e.ifindex)
        {
            return Some(&self.records[*i]);
        }
        let has = |r: &Endpoint, ip: IpAddr| match ip {
            IpAddr::V4(v4) => r.ip == Some(v4),
            IpAddr::V6(v6) => r.ip6 == Some(v6),
        };
        (self.records.iter()).find(|r| [src, dst].into_iter().flatten().any(|ip| has(r, ip)))
    }
}

/// An event as `GET /v1/events` shows it, at Unix time `unix_ns`.
pub fn describe(e: &Event, names: &Names, unix_ns: u64) -> MonitorEvent {
    let ip = |b: [u8; 16]| -> Option<IpAddr> {
        match e.family {
            4 => Some(Ipv4Addr::new(b[0], b[1], b[2], b[3]).into()),
            6 => Some(Ipv6Addr::from(b).into()),
            _ => None,
        }
    };
    let (src, dst) = (ip(e.src), ip(e.dst));
    let with_port = |addr: Option<IpAddr>, port: u16| match addr {
        Some(a) if matches!(e.proto, IPPROTO_TCP | IPPROTO_UDP) => {
            SocketAddr::new(a, port).to_string()
        }
        Some(a) => a.to_string(),
        None => "-".to_owned(),
    };
    let proto = match e.proto {
        _ if e.family == 0 => "-".to_owned(),
        IPPROTO_TCP => "tcp".to_owned(),
        IPPROTO_UDP => "udp".to_owned(),
        IPPROTO_ICMP => "icmp".to_owned(),
        IPPROTO_ICMPV6 => "icmpv6".to_owned(),
        p => p.to_string(),
    };
    let hook = Hook::ALL
        .get(usize::from(e.hook))
        .map_or("unknown", |h| h.name());
    let record = names.of(e, src, dst);
    let packet = PacketEvent {
        time_unix_ns: unix_ns,
        hook: hook.to_owned(),
        reason: None,
        endpoint: record.map(|r| r.id.clone()),
        ifindex: e.ifindex,
        proto,
        src: with_port(src, e.sport),
        dst: with_port(dst, e.dport),
        len: e.len,
    };
    if e.kind == EVENT_DROP {
        let reason = DropReason::ALL
            .get(usize::from(e.code))
            .map_or("unknown", |r| r.name());
        MonitorEvent::Drop(PacketEvent {
            reason: Some(reason.to_owned()),
            ..packet
        })
    } else {
        MonitorEvent::Trace(packet)
    }
}

/// Whether a watcher of `kind` events (any if `None`) of `endpoint` (any if `None`)
/// wants `event`.
pub fn selected(event: &MonitorEvent, kind: Option<EventType>, endpoint: Option<&str>) -> bool {
    let (k, p) = match event {
        MonitorEvent::Drop(p) => (EventType::Drop, p),
        MonitorEvent::Trace(p) => (EventType::Trace, p),
        MonitorEvent::Lost { .. } => return true,
    };
    kind.is_none_or(|want| want == k) && endpoint.is_none_or(|id| p.endpoint.as_deref() == Some(id))
}

#[cfg(test)]
mod tests {
    use netpath_common::events::EVENT_TRACE;

    use super::*;
    use crate::model::test_endpoint;

    fn event(kind: u8, code: u8, ifindex: u32) -> Event {
        let mut src = [0; 16];
        src[..4].copy_from_slice(&[10, 50, 0, 250]);
        let mut dst = [0; 16];
        dst[..4].copy_from_slice(&[10, 50, 0, 3]);
        Event {
            ts_ns: 0,
            ifindex,
            len: 142,
            src,
            dst,
            sport: 5000,
            dport: 7100,
            kind,
            hook: Hook::TcIngress as u8,
            code,
            family: 4,
            proto: IPPROTO_UDP,
            _pad: [0; 7],
        }
    }

    #[test]
    fn the_finest_rate_and_any_drop_watcher_decide() {
        let w = |drops, trace_every| Wants { drops, trace_every };
        assert_eq!(
            config_for([]),
            MonitorConfig {
                drops: 0,
                trace_every: 0
            }
        );
        let cfg = config_for([w(false, 100), w(true, 0), w(false, 10)]);
        assert_eq!(
            cfg,
            MonitorConfig {
                drops: 1,
                trace_every: 10
            }
        );
    }

    #[test]
    fn a_drop_is_named_after_the_device_it_happened_on() {
        let names = Names::new(
            vec![
                test_endpoint("aaa", "10.50.0.2"),
                test_endpoint("bbb", "10.50.0.3"),
            ],
            |ifname| (ifname == "np-aaa").then_some(7),
        );
        let spoofed = DropReason::SpoofedIp as u8;
        let d = describe(&event(EVENT_DROP, spoofed, 7), &names, 1);
        let MonitorEvent::Drop(p) = &d else {
            panic!("{d:?}")
        };
        assert_eq!(p.reason.as_deref(), Some("spoofed_ip"));
        assert_eq!(
            p.endpoint.as_deref(),
            Some("aaa"),
            "by device, not by address"
        );
        assert_eq!(
            (p.src.as_str(), p.dst.as_str()),
            ("10.50.0.250:5000", "10.50.0.3:7100")
        );
        assert_eq!(
            (p.hook.as_str(), p.proto.as_str(), p.len),
            ("tc_ingress", "udp", 142)
        );
        // On a device of no endpoint (an uplink): by the address it carries.
        let t = describe(&event(EVENT_TRACE, 7, 99), &names, 1);
        let MonitorEvent::Trace(p) = &t else {
            panic!("{t:?}")
        };
        assert_eq!(p.endpoint.as_deref(), Some("bbb"));
        assert!(selected(&t, Some(EventType::Trace), Some("bbb")));
        assert!(!selected(&t, Some(EventType::Drop), None));
        assert!(!selected(&d, None, Some("bbb")));
    }
}
