//! Whether a daemon's records, the kernel's devices and the datapath's maps agree
//! exactly — the invariant every robustness test and the bench's soak check after
//! crashes, hang-ups and cancelled requests.

use std::{
    collections::{BTreeSet, HashMap},
    os::unix::fs::MetadataExt as _,
    path::PathBuf,
};

use netpath::model::{Endpoint, EndpointKind, EndpointState, Network, PortLease, StatsReport};

/// What the daemon says (through its API or CLI), read at one moment.
pub struct Snapshot {
    pub networks: Vec<Network>,
    pub endpoints: Vec<Endpoint>,
    pub ports: Vec<PortLease>,
    pub stats: StatsReport,
}

/// The host's links, as (name, ifalias).
pub fn host_links_with_alias() -> Result<Vec<(String, Option<String>)>, String> {
    let out = std::process::Command::new("ip")
        .args(["-j", "-d", "link", "show"])
        .output()
        .map_err(|e| format!("ip link: {e}"))?;
    let links: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("ip -j link: {e}"))?;
    Ok(links
        .as_array()
        .ok_or("ip -j link: not a list")?
        .iter()
        .map(|l| {
            (
                l["ifname"].as_str().unwrap_or_default().to_owned(),
                l["ifalias"].as_str().map(str::to_owned),
            )
        })
        .collect())
}

/// The interfaces (but `lo`) inside the namespace at `path`.
fn interfaces_in(path: &std::path::Path) -> Result<BTreeSet<String>, String> {
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net={}", path.display()))
        .args(["ip", "-j", "link", "show"])
        .output()
        .map_err(|e| format!("nsenter: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ip link in {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("ip -j link: {e}"))?;
    Ok(v.as_array()
        .ok_or("ip -j link: not a list")?
        .iter()
        .map(|l| l["ifname"].as_str().unwrap_or_default().to_owned())
        .filter(|n| n != "lo")
        .collect())
}

/// Checks, for the daemon whose links carry ifalias prefix `tag`: every record is
/// `ready`, no IP twice; the host links with the tag are exactly the records' devices
/// and the networks' bridges; the datapath's endpoint map holds exactly the records'
/// addresses; every published port belongs to a record; inside each namespace of
/// `namespaces`, the interfaces are exactly its records' (matched by the namespace's
/// identity, its nsfs inode). `Err` says what differs.
pub fn check(snap: &Snapshot, tag: &str, namespaces: &[PathBuf]) -> Result<(), String> {
    let mut ips = BTreeSet::new();
    for e in &snap.endpoints {
        if e.state != EndpointState::Ready {
            return Err(format!("record not ready: {e:?}"));
        }
        if !ips.insert(e.ip) {
            return Err(format!("IP {:?} leased twice", e.ip));
        }
    }
    let mut want: BTreeSet<String> = snap
        .endpoints
        .iter()
        .map(|e| e.host_ifname.clone())
        .collect();
    want.extend(snap.networks.iter().filter_map(|n| n.bridge.clone()));
    let tagged: BTreeSet<String> = host_links_with_alias()?
        .into_iter()
        .filter(|(_, alias)| alias.as_deref().is_some_and(|a| a.starts_with(tag)))
        .map(|(name, _)| name)
        .collect();
    if tagged != want {
        return Err(format!(
            "tagged links {tagged:?} differ from the records' devices {want:?}"
        ));
    }
    let mapped: BTreeSet<_> = snap.stats.endpoints.iter().map(|e| e.ip).collect();
    if mapped != ips {
        return Err(format!(
            "datapath endpoints {mapped:?} differ from the records' {ips:?}"
        ));
    }
    let ids: BTreeSet<&str> = snap.endpoints.iter().map(|e| e.id.as_str()).collect();
    if let Some(l) = snap
        .ports
        .iter()
        .find(|l| !ids.contains(l.endpoint.as_str()))
    {
        return Err(format!("port lease of no endpoint: {l:?}"));
    }
    let mut by_ns: HashMap<u64, BTreeSet<String>> = HashMap::new();
    for e in snap
        .endpoints
        .iter()
        .filter(|e| e.kind == EndpointKind::Veth)
    {
        let ino = e
            .details
            .netns_inode
            .ok_or_else(|| format!("record without netns_inode: {e:?}"))?;
        by_ns
            .entry(ino)
            .or_default()
            .insert(e.details.ifname.clone().unwrap_or_default());
    }
    for path in namespaces {
        let ino = std::fs::metadata(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .ino();
        let got = interfaces_in(path)?;
        let want = by_ns.get(&ino).cloned().unwrap_or_default();
        if got != want {
            return Err(format!(
                "interfaces {got:?} in {} differ from the records' {want:?}",
                path.display()
            ));
        }
    }
    Ok(())
}
