//! What observing costs, measured inside `footprint` (at its 1,000 endpoints and 10,000
//! published ports): the time of a `GET /metrics` scrape and the daemon's RSS growth
//! over the scrapes, then — with 100,000 masqueraded connections written into the
//! pinned NAT tables — the time of a scrape and of `GET /v1/flows` (every entry listed),
//! and the RSS growth over those. The connections are
//! written straight into `NETPATH_SNAT` and `NETPATH_NAT_AGE` (as the programs would,
//! each with a fresh clock, so none has timed out) and removed afterwards.

use std::{
    io::{Read, Write},
    net::Ipv4Addr,
    os::unix::net::UnixStream,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use aya::maps::{HashMap, Map, MapData};
use netpath_common::{
    nat::{CT_ESTABLISHED, NAT_AGE_MAP, NatAge, NatTarget, SNAT_MAP, Tuple},
    packet::IPPROTO_TCP,
};

use super::{Ctx, RunResult, footprint::rss_kib};

/// Masqueraded connections written for the measurement.
pub const NAT_ENTRIES: usize = 100_000;
/// Scrapes (and flow listings) per figure: the median is kept.
const REPEAT: usize = 5;

/// `GET path` on the API socket: how long until the whole answer was read, and the
/// answer.
fn timed_get(socket: &Path, path: &str) -> Result<(Duration, Vec<u8>)> {
    let start = Instant::now();
    let mut s = UnixStream::connect(socket).with_context(|| format!("{}", socket.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: netpath\r\n\r\n")?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)?;
    let took = start.elapsed();
    if !answer.starts_with(b"HTTP/1.0 200") && !answer.starts_with(b"HTTP/1.1 200") {
        let head = String::from_utf8_lossy(&answer[..answer.len().min(200)]).into_owned();
        bail!("GET {path}: {head}");
    }
    Ok((took, answer))
}

/// The median time of `REPEAT` requests of `path`, in milliseconds, and the answer's size.
fn median_ms(socket: &Path, path: &str) -> Result<(f64, usize)> {
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..REPEAT {
        let (t, answer) = timed_get(socket, path)?;
        times.push(t.as_secs_f64() * 1e3);
        size = answer.len();
    }
    times.sort_by(f64::total_cmp);
    Ok((times[REPEAT / 2], size))
}

fn open<K: aya::Pod, V: aya::Pod>(bpffs: &Path, name: &str) -> Result<HashMap<MapData, K, V>> {
    let data = MapData::from_pin(bpffs.join("maps").join(name))
        .with_context(|| format!("the pinned map {name}"))?;
    Ok(HashMap::try_from(Map::from_map_data(data)?)?)
}

/// The `i`-th fake connection: from one of 250 sources of `subnet` to a remote, its
/// translation to `uplink` and a port (with its remote, unique to it), and its reply
/// tuple.
fn connection(i: usize, subnet: ipnet::Ipv4Net, uplink: Ipv4Addr) -> (Tuple, NatTarget, Tuple) {
    let src = crate::ctx::host(subnet, 2 + (i % 250) as u32).octets();
    let remote = [198, 18, 0, 1 + (i / 60_000) as u8];
    // Unique per connection: (source, port) pairs never repeat.
    let sport = 10_000 + (i / 250) as u16;
    let nat_port = 1024 + (i % 60_000) as u16;
    let orig = Tuple::new(IPPROTO_TCP, src, sport, remote, 443);
    let to = NatTarget::new(uplink.octets(), nat_port);
    let reply = Tuple::new(IPPROTO_TCP, remote, 443, uplink.octets(), nat_port);
    (orig, to, reply)
}

/// Measures and records the figures into `r`; the daemon's endpoints are in place.
pub fn measure(ctx: &mut Ctx, r: &mut RunResult, subnet: ipnet::Ipv4Net) -> Result<()> {
    let socket = ctx.daemon_paths().socket.clone();
    let pid = ctx.daemon()?.pid().context("the daemon has no pid")?;
    let rss_before = rss_kib(pid)?;
    ctx.detail("timing /metrics at 1,000 endpoints");
    let (scrape, size) = median_ms(&socket, "/metrics")?;
    r.set("scrape_endpoints_ms", scrape);
    let rss_scraped = rss_kib(pid)?;
    r.set("rss_scrape_growth_mib", (rss_scraped - rss_before) / 1024.0);
    r.notes
        .push(format!("/metrics at 1,000 endpoints: {size} bytes"));

    ctx.detail(&format!("writing {NAT_ENTRIES} masqueraded connections"));
    let mut snat = open::<Tuple, NatTarget>(&ctx.bpffs, SNAT_MAP)?;
    let mut ages = open::<Tuple, NatAge>(&ctx.bpffs, NAT_AGE_MAP)?;
    let now = netpath::datapath::nat_now();
    let uplink = Ipv4Addr::new(198, 18, 255, 2);
    let written = (0..NAT_ENTRIES).map(|i| connection(i, subnet, uplink));
    for (orig, to, reply) in written.clone() {
        snat.insert(orig, to, 0).context("writing NETPATH_SNAT")?;
        ages.insert(reply, NatAge::new(now, CT_ESTABLISHED), 0)
            .context("writing NETPATH_NAT_AGE")?;
    }
    let result = (|| -> Result<()> {
        // The scrape counts them exactly (batched lookups, not one call per key).
        let (_, text) = timed_get(&socket, "/metrics")?;
        let want =
            format!("netpath_nat_entries{{family=\"ipv4\",kind=\"masquerade\"}} {NAT_ENTRIES}");
        if !String::from_utf8_lossy(&text).lines().any(|l| l == want) {
            bail!("/metrics does not count the {NAT_ENTRIES} connections written: no {want:?}");
        }
        ctx.detail("timing /metrics and /v1/flows at 100,000 connections");
        let (scrape, _) = median_ms(&socket, "/metrics")?;
        r.set("scrape_nat_ms", scrape);
        let (flows, size) = median_ms(&socket, "/v1/flows")?;
        r.set("flows_nat_ms", flows);
        r.notes.push(format!(
            "/v1/flows with {NAT_ENTRIES} connections: {:.1} MiB of JSON",
            size as f64 / (1024.0 * 1024.0)
        ));
        let rss_after = rss_kib(pid)?;
        r.set("rss_flows_growth_mib", (rss_after - rss_scraped) / 1024.0);
        Ok(())
    })();
    for (orig, _, reply) in written {
        let _ = snat.remove(&orig);
        let _ = ages.remove(&reply);
    }
    result
}
