//! What the CLI's commands do beyond one API call: listings (`-q`, `--filter`),
//! removing several endpoints, `inspect`, and `stats` while the daemon is down.

use netpath::{
    client::{Client, ClientError},
    config::Paths,
    datapath::{Datapath, Pins},
    error::{UserError, one_line},
    model::{Endpoint, EndpointKind, StatsReport},
    preflight,
    state::Store,
};
use serde::Serialize;

use super::{
    args::EndpointListing,
    print,
    select::{self, Filter},
};

/// What a listing prints: a table, JSON, or only the ids (`-q`).
#[derive(clap::Args, Clone, Copy)]
pub struct Output {
    /// Print as JSON.
    #[arg(long, conflicts_with = "quiet")]
    pub json: bool,
    /// Print only the ids (names, for networks), one per line.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Prints a listing as `out` asks: JSON, ids only, or a table.
pub fn list<T: Serialize>(
    items: &[T],
    out: Output,
    id: impl Fn(&T) -> &str,
    table: impl FnOnce(&[T]),
) -> anyhow::Result<()> {
    if out.json {
        print::json(&items)
    } else if out.quiet {
        for item in items {
            println!("{}", id(item));
        }
        Ok(())
    } else {
        table(items);
        Ok(())
    }
}

/// `endpoint ls` and `tap ls`: the endpoints `listing` selects (and of `kind`, if
/// given), printed as it asks.
pub async fn list_endpoints(
    client: &Client,
    listing: &EndpointListing,
    kind: Option<EndpointKind>,
) -> anyhow::Result<()> {
    let eps = endpoints(client, &listing.filter, kind).await?;
    list(&eps, listing.out, |e| &e.id, print::endpoints)
}

/// Removes endpoints `ids` one after another (each is one request, which completes
/// whatever happens to this client), printing `done` for each; with `kind`, an endpoint of
/// another kind is refused before anything is removed. Goes on past a failure, as
/// `docker rm` does, and fails at the end if any failed.
pub async fn remove_endpoints(
    client: &Client,
    ids: &[String],
    kind: Option<EndpointKind>,
    done: impl Fn(&Endpoint) -> String,
) -> anyhow::Result<()> {
    if let Some(kind) = kind {
        for id in ids {
            let e = client.get_endpoint(id).await.map_err(UserError::from)?;
            if e.kind != kind {
                return Err(UserError::new(format!(
                    "endpoint {} is a {}, not a {}; nothing was removed",
                    e.id,
                    describe(e.kind),
                    describe(kind)
                ))
                .hint(format!("remove it with `netpath endpoint rm {}`", e.id))
                .into());
            }
        }
    }
    let done = &done;
    each(ids, "endpoints", |id| async move {
        let e = client.remove_endpoint(id).await?;
        println!("{}", done(&e));
        Ok(())
    })
    .await
}

fn describe(kind: EndpointKind) -> &'static str {
    match kind {
        EndpointKind::Veth => "container endpoint (veth)",
        EndpointKind::Tap => "microVM TAP",
    }
}

/// Runs `op` for each of `names`, on past failures (each reported on its own line);
/// fails at the end if any failed. One name: its error as is.
pub async fn each<'a, F, Fut>(names: &'a [String], what: &str, op: F) -> anyhow::Result<()>
where
    F: Fn(&'a str) -> Fut,
    Fut: std::future::Future<Output = Result<(), ClientError>>,
{
    let mut failed = Vec::new();
    for name in names {
        if let Err(e) = op(name).await {
            let e = UserError::from(e);
            if names.len() == 1 {
                return Err(e.into());
            }
            eprintln!("netpath: {name}: {}", one_line(&e));
            failed.push(name.as_str());
        }
    }
    if failed.is_empty() {
        return Ok(());
    }
    Err(UserError::new(format!(
        "{} of {} {what} not removed: {}",
        failed.len(),
        names.len(),
        failed.join(", ")
    ))
    .into())
}

/// `netpath inspect`: each of `what` as JSON — a lease id, a network name, or an
/// endpoint id or prefix, in that order.
pub async fn inspect(client: &Client, what: &[String]) -> anyhow::Result<()> {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    let mut ports = None;
    for w in what {
        if w.contains('/') {
            let leases = match &ports {
                Some(l) => l,
                None => ports.insert(client.list_ports().await.map_err(UserError::from)?),
            };
            match leases.iter().find(|l| &l.id == w) {
                Some(l) => found.push(serde_json::to_value(l)?),
                None => missing.push(w.as_str()),
            }
            continue;
        }
        if let Ok(n) = client.get_network(w).await {
            found.push(serde_json::to_value(n)?);
            continue;
        }
        match client.get_endpoint(w).await {
            Ok(e) => found.push(serde_json::to_value(e)?),
            Err(ClientError::Api { status: 404, .. }) => missing.push(w.as_str()),
            Err(e) => return Err(UserError::from(e).into()),
        }
    }
    print::json(&found)?;
    if missing.is_empty() {
        return Ok(());
    }
    Err(UserError::new(format!(
        "no network, endpoint or published port {}",
        missing.join(", ")
    ))
    .hint("`netpath ls` and `netpath port ls` list them")
    .into())
}

/// Endpoints passing `filters` (and of `kind`, if given).
pub async fn endpoints(
    client: &Client,
    filters: &[Filter],
    kind: Option<EndpointKind>,
) -> anyhow::Result<Vec<Endpoint>> {
    let mut eps = client.list_endpoints(None).await.map_err(UserError::from)?;
    eps.retain(|e| select::endpoint_matches(e, filters, kind));
    Ok(eps)
}

/// The counters straight from the pinned maps, for when the daemon is down (endpoints
/// named from the state database, which is free then).
pub fn offline_stats(paths: &Paths) -> anyhow::Result<StatsReport> {
    preflight::require_privileges("netpath stats")?;
    if !Pins::new(&paths.bpffs).complete() {
        return Err(UserError::new(format!(
            "the netpath daemon is not running (no answer on {}) and no datapath is pinned under {}",
            paths.socket.display(),
            paths.bpffs.display()
        ))
        .hint("start it with `netpath daemon` (or pass the --socket and --bpffs it uses)")
        .into());
    }
    let dp = Datapath::open(&paths.bpffs, false)?;
    let db = paths.state_dir.join("state.redb");
    let records = if db.exists() {
        Store::open(&db)
            .and_then(|s| s.list_endpoints(None))
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    Ok(netpath::stats::report(&dp, &records)?)
}
