//! `GET /v1/events[?type=drop|trace&endpoint=ID&trace_every=N]`: the datapath's events
//! as they happen, one JSON object per line ([`MonitorEvent`]), until the client goes
//! (which ends the watch: the programs stop reporting what only it wanted). Once a
//! second at most, a `lost` line says how many events this stream did not get: ones the
//! ring had no room for, and ones this reader fell behind on.

use std::{convert::Infallible, time::Duration};

use tokio::sync::broadcast::error::RecvError;

use super::*;
use crate::{
    model::{EventFilter, EventType, MonitorEvent},
    monitor::{Names, Watch, describe, selected},
};

/// How often the lost counts are looked at (and the endpoint names refreshed).
const TICK: Duration = Duration::from_secs(1);

/// `CLOCK_MONOTONIC` or `CLOCK_REALTIME` now, in nanoseconds.
fn clock_ns(id: nix::time::ClockId) -> u64 {
    // Both clocks are always there on Linux; reading them cannot fail.
    let t = nix::time::clock_gettime(id).expect("clock_gettime");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// The endpoints, each with its host-side device's ifindex, to name events by.
async fn names<B: Backend>(b: &B) -> Names {
    let records = b.list_endpoints(None).await.unwrap_or_default();
    Names::new(records, |ifname| nix::net::if_::if_nametoindex(ifname).ok())
}

/// One watcher's stream.
struct Feed<B> {
    backend: Arc<B>,
    watch: Watch,
    kind: Option<EventType>,
    endpoint: Option<String>,
    names: Names,
    /// The ring's lost count at the last `lost` line (or the start).
    ring_lost: u64,
    /// Events this reader fell behind on since the last `lost` line.
    behind: u64,
    tick: tokio::time::Interval,
    /// Unix time minus monotonic time: turns the events' clock into Unix time.
    realtime_offset: u64,
}

impl<B: Backend> Feed<B> {
    /// The next line to send; `None` once the daemon stops reading the ring.
    async fn next_line(&mut self) -> Option<String> {
        loop {
            tokio::select! {
                r = self.watch.events.recv() => match r {
                    Ok(e) => {
                        let unix = e.ts_ns.wrapping_add(self.realtime_offset);
                        let event = describe(&e, &self.names, unix);
                        if selected(&event, self.kind, self.endpoint.as_deref()) {
                            return Some(line(&event));
                        }
                    }
                    Err(RecvError::Lagged(n)) => self.behind += n,
                    Err(RecvError::Closed) => return None,
                },
                _ = self.tick.tick() => {
                    self.names = names(&*self.backend).await;
                    let lost = self.backend.events_lost();
                    let ring = lost.saturating_sub(self.ring_lost);
                    if ring > 0 || self.behind > 0 {
                        self.ring_lost = lost;
                        let behind = std::mem::take(&mut self.behind);
                        return Some(line(&MonitorEvent::Lost { ring, behind }));
                    }
                }
            }
        }
    }
}

fn line(event: &MonitorEvent) -> String {
    // Plain data: serializing cannot fail.
    let mut s = serde_json::to_string(event).unwrap_or_default();
    s.push('\n');
    s
}

pub(super) async fn events<B: Backend>(
    State(backend): State<Arc<B>>,
    QueryParams(q): QueryParams<EventFilter>,
) -> Result<Response, ApiError> {
    let endpoint = match &q.endpoint {
        Some(id) => Some(backend.get_endpoint(id).await?.id),
        None => None,
    };
    let (watch, ring_lost) = backend.watch(&q)?;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let realtime_offset = clock_ns(nix::time::ClockId::CLOCK_REALTIME)
        .wrapping_sub(clock_ns(nix::time::ClockId::CLOCK_MONOTONIC));
    let feed = Feed {
        names: names(&*backend).await,
        backend,
        watch,
        kind: q.kind,
        endpoint,
        ring_lost,
        behind: 0,
        tick,
        realtime_offset,
    };
    let lines = futures::stream::unfold(feed, |mut feed| async move {
        let line = feed.next_line().await?;
        Some((Ok::<_, Infallible>(Bytes::from(line)), feed))
    });
    let content_type = [(header::CONTENT_TYPE, "application/x-ndjson")];
    Ok((content_type, axum::body::Body::from_stream(lines)).into_response())
}
