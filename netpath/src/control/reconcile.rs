//! Bringing records and kernel back in step: at start-up ([`Service::reconcile`]), and
//! for records an operation left unfinished while the daemon runs
//! ([`Service::sweep_unfinished`]).
//!
//! The rules, each a unit-test case:
//! * a record still `Creating` belongs to no live operation: rolled back;
//! * a record whose host-side device is gone (its namespace died): released (by the
//!   periodic sweep too);
//! * a network whose devices are gone: plumbed again;
//! * a device tagged by this instance without a record: deleted;
//! * a device tagged by another instance, or untagged: left alone.

use super::{MapWrite, Result, Service, ServiceError, db, ports::published_endpoint};
use crate::{
    config,
    model::{Endpoint, EndpointState},
    telemetry::{self, ReconcileAction as Action},
};

/// Records a reconcile action: its summary `line` for the caller to print, and `n` of
/// its kind in the daemon's metrics.
fn act(actions: &mut Vec<String>, kind: Action, n: u64, line: String) {
    telemetry::reconciled(kind, n);
    actions.push(line);
}

/// How many sweeps in a row must find an endpoint's container end in the host's
/// namespace before it is taken for abandoned: 6 × the daemon's 5 s, half a minute.
pub const STRANDED_SWEEPS: u32 = 6;

impl Service {
    /// Rolls back endpoint records left `Creating` by an operation that cannot finish
    /// any more (a handler that panicked, say), and releases endpoints whose host-side
    /// device is gone (a container's namespace died, and its veth pair with it, while no
    /// engine said so: a crashed engine), or whose container end is in the host's
    /// namespace at [`STRANDED_SWEEPS`] sweeps in a row (libnetwork moves it out when it
    /// tears a container down, and did so without a Leave: a `docker rm -f` while
    /// netpath was down; the one legitimate stay there, from Join until the container
    /// starts, lasts seconds even with many containers starting at once). The daemon
    /// runs this every few seconds, so none of these waits for a restart. An operation in
    /// progress holds its network's lock from the record's creation until it is `Ready`
    /// or gone, so a record still `Creating` once that lock is taken belongs to no live
    /// operation. Returns a one-line summary per record released.
    pub async fn sweep_unfinished(&self) -> Result<Vec<String>> {
        let mut actions = Vec::new();
        let candidates = self.list_endpoints(None).await?;
        // One dump for all: the devices of `Ready` endpoints.
        let live: std::collections::HashSet<String> =
            if candidates.iter().any(|e| e.state == EndpointState::Ready) {
                (self.host.links().await?.into_iter().map(|l| l.name)).collect()
            } else {
                Default::default()
            };
        // Counted again from what this sweep finds: a count that breaks starts over.
        let before = std::mem::take(&mut *self.stranded());
        for ep in candidates {
            let ready = ep.state == EndpointState::Ready;
            let gone = ready && !live.contains(&ep.host_ifname);
            let on_host = ready && ep.details.peer.as_ref().is_some_and(|p| live.contains(p));
            let sweeps = before.get(&ep.id).copied().unwrap_or(0) + u32::from(on_host);
            let back = sweeps >= STRANDED_SWEEPS;
            if on_host && !back {
                self.stranded().insert(ep.id.clone(), sweeps);
                continue;
            }
            if ep.state != EndpointState::Creating && !gone && !back {
                continue;
            }
            let lock = self.net_lock(&ep.network);
            let _guard = lock.lock().await;
            // Re-read under the lock: finished, removed or re-made meanwhile.
            let Ok(now) = self.get_endpoint(&ep.id).await else {
                continue;
            };
            let why = match now.state {
                EndpointState::Creating => "creation never finished",
                EndpointState::Ready
                    if self.host.link_by_name(&now.host_ifname).await?.is_none() =>
                {
                    "its device is gone"
                }
                EndpointState::Ready if back => "its container end came back to the host",
                EndpointState::Ready => continue,
            };
            self.roll_back(&now).await?;
            let line = format!("released endpoint {} ({}): {why}", now.id, now.primary_ip());
            act(&mut actions, Action::ReleasedEndpoint, 1, line);
        }
        Ok(actions)
    }

    fn stranded(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, u32>> {
        self.stranded.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Removes an endpoint's devices and map entries, then its record and leases.
    pub(super) async fn roll_back(&self, ep: &Endpoint) -> Result<()> {
        self.unplumb_endpoint(ep).await?;
        let id = ep.id.clone();
        db(&self.store, move |s| s.release_endpoint(&id)).await?;
        Ok(())
    }

    /// Brings kernel state and records back in step after a restart or crash (the rules
    /// of this module). Returns a one-line summary per action.
    pub async fn reconcile(&self) -> Result<Vec<String>> {
        let mut actions = Vec::new();
        let networks = self.list_networks().await?;
        for n in &networks {
            if let Some(bridge) = &n.bridge
                && self.host.link_by_name(bridge).await?.is_none()
            {
                let line = format!("recreated the bridge of network {}", n.name);
                act(&mut actions, Action::RecreatedBridge, 1, line);
            }
            self.plumb_network(n).await?;
        }
        let mut known: Vec<String> = networks.iter().filter_map(|n| n.bridge.clone()).collect();
        for ep in self.list_endpoints(None).await? {
            // The host-side device alone says whether an endpoint lives: a veth pair dies
            // with its namespace, and a recorded namespace path may outlive it or not
            // (a `/proc/PID/ns/net` goes with that process, while the namespace may live
            // on, held by another).
            let link = self.host.link_by_name(&ep.host_ifname).await?;
            let Some(link) = link.filter(|_| ep.state != EndpointState::Creating) else {
                let why = if ep.state == EndpointState::Creating {
                    "creation never finished"
                } else {
                    "its device is gone"
                };
                self.roll_back(&ep).await?;
                let line = format!("released endpoint {} ({}): {why}", ep.id, ep.primary_ip());
                act(&mut actions, Action::ReleasedEndpoint, 1, line);
                continue;
            };
            let network = networks
                .iter()
                .find(|n| n.name == ep.network)
                .ok_or_else(|| {
                    ServiceError::Internal(format!("endpoint {} has no network", ep.id))
                })?;
            let bridge = self.bridge_link(network).await?;
            let gateway = super::endpoints::gateway_mac(bridge.as_ref(), &link);
            self.register(network, &ep, link.index, gateway)?;
            known.push(ep.host_ifname.clone());
        }
        // Endpoints with leases are marked as published (maps pinned by a version that
        // had no such mark, or entries re-created above).
        let leases = self.list_ports().await?;
        {
            let mut dp = self.datapath();
            for ip in leases.iter().map(published_endpoint) {
                dp.write(MapWrite::MarkPublished(ip))?;
            }
        }
        let links = self.host.links().await?;
        let swept = self.datapath().sweep_link_pins(&links)?;
        if swept > 0 {
            let line = format!("removed {swept} attachment pin(s) of deleted devices");
            act(&mut actions, Action::RemovedPin, swept as u64, line);
        }
        let our_tag = format!("{}{}:", config::ALIAS_PREFIX, self.instance);
        for link in links {
            let tagged = link
                .alias
                .as_deref()
                .is_some_and(|a| a.starts_with(&our_tag));
            if tagged && !known.contains(&link.name) {
                self.datapath().forget_links(&link.name, link.index)?;
                self.host.delete_link(link.index).await?;
                let line = format!("removed orphan device {}", link.name);
                act(&mut actions, Action::RemovedOrphan, 1, line);
            }
        }
        Ok(actions)
    }
}
