//! How the CLI prints: aligned tables (as `docker ps`), detail blocks, JSON, and the
//! counters of `netpath stats`.

use netpath::model::{
    Endpoint, EndpointKind, EndpointState, Mode, Network, PortLease, StatsReport,
};
use serde::Serialize;

pub fn json(v: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Prints rows under headers, each column as wide as its widest cell (the last one
/// unpadded), three spaces apart.
pub fn table<const N: usize>(headers: [&str; N], rows: &[[String; N]]) {
    print!("{}", render_table(headers, rows));
}

fn render_table<const N: usize>(headers: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = headers.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; N]| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            out.push_str(cell);
            if i + 1 < N {
                let pad = widths[i] - cell.chars().count() + 3;
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        format!("{}\n", out.trim_end())
    };
    let mut out = line(headers);
    for row in rows {
        out.push_str(&line(std::array::from_fn(|i| row[i].as_str())));
    }
    out
}

pub fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Bridge => "bridge",
        Mode::Routed => "routed",
    }
}

pub fn state_name(state: EndpointState) -> &'static str {
    match state {
        EndpointState::Creating => "creating",
        EndpointState::Ready => "ready",
    }
}

pub fn kind_name(kind: EndpointKind) -> &'static str {
    match kind {
        EndpointKind::Veth => "veth",
        EndpointKind::Tap => "tap",
    }
}

pub fn networks(networks: &[Network]) {
    let rows: Vec<[String; 8]> = networks
        .iter()
        .map(|n| {
            [
                n.name.clone(),
                n.id.to_string(),
                n.subnet.to_string(),
                n.gateway.to_string(),
                mode_name(n.mode).into(),
                n.bridge.clone().unwrap_or_else(|| "-".into()),
                n.uplink.clone().unwrap_or_else(|| "-".into()),
                n.mtu.to_string(),
            ]
        })
        .collect();
    table(
        [
            "NAME", "ID", "SUBNET", "GATEWAY", "MODE", "BRIDGE", "UPLINK", "MTU",
        ],
        &rows,
    );
}

/// Where an endpoint is: its interface and namespace, or a TAP's owner and queues.
fn place(e: &Endpoint) -> String {
    let e = &e.details;
    match (&e.netns, &e.ifname) {
        (Some(ns), Some(ifn)) => format!("{ifn} in {}", ns.display()),
        _ => format!(
            "uid {} gid {} queues {}",
            e.uid.map_or("-".into(), |v| v.to_string()),
            e.gid.map_or("-".into(), |v| v.to_string()),
            e.queues.unwrap_or(1)
        ),
    }
}

pub fn endpoints(eps: &[Endpoint]) {
    let rows: Vec<[String; 9]> = eps
        .iter()
        .map(|e| {
            [
                e.id.clone(),
                e.network.clone(),
                kind_name(e.kind).into(),
                state_name(e.state).into(),
                format!("{}/{}", e.ip, e.prefix_len),
                e.mac.to_string(),
                e.gateway.to_string(),
                e.host_ifname.clone(),
                place(e),
            ]
        })
        .collect();
    table(
        [
            "ID", "NETWORK", "KIND", "STATE", "IP", "MAC", "GATEWAY", "HOST IF", "WHERE",
        ],
        &rows,
    );
}

/// One endpoint, as `endpoint add` and `tap add` answer.
pub fn endpoint(e: &Endpoint, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return json(e);
    }
    let mut rows: Vec<(&str, String)> = vec![
        ("id", e.id.clone()),
        ("state", state_name(e.state).into()),
        ("ip", format!("{}/{}", e.ip, e.prefix_len)),
        ("mac", e.mac.to_string()),
        ("gateway", e.gateway.to_string()),
        ("host if", e.host_ifname.clone()),
    ];
    if let Some(ifn) = &e.details.ifname {
        rows.push(("ifname", ifn.clone()));
    }
    for (k, v) in rows {
        println!("{k:<9} {v}");
    }
    Ok(())
}

pub fn ports(leases: &[PortLease]) {
    let rows: Vec<[String; 5]> = leases
        .iter()
        .map(|l| {
            [
                l.id.clone(),
                l.endpoint.clone(),
                l.proto.to_string(),
                format!("{}:{}", l.host_ip, l.host_port),
                format!("{}:{}", l.guest_ip, l.guest_port),
            ]
        })
        .collect();
    table(["ID", "ENDPOINT", "PROTO", "HOST", "GUEST"], &rows);
}

/// `netpath stats`: zero rows left out unless `all`.
pub fn stats(mut r: StatsReport, all: bool, as_json: bool) -> anyhow::Result<()> {
    if !all {
        r.classes.retain(|c| c.packets > 0);
        r.drops.retain(|d| d.packets > 0);
    }
    if as_json {
        return json(&r);
    }
    let n = |v: u64| v.to_string();
    println!("packets by hook and class");
    let rows: Vec<[String; 4]> = r
        .classes
        .iter()
        .map(|c| [c.hook.clone(), c.class.clone(), n(c.packets), n(c.bytes)])
        .collect();
    indented(table_string(["HOOK", "CLASS", "PACKETS", "BYTES"], &rows));
    println!("endpoints (tx: sent by the endpoint; rx: delivered by the fast path)");
    let rows: Vec<[String; 8]> = r
        .endpoints
        .iter()
        .map(|e| {
            [
                e.id.clone().unwrap_or_else(|| "-".into()),
                e.network.clone().unwrap_or_else(|| "-".into()),
                e.ip.to_string(),
                n(e.tx_packets),
                n(e.tx_bytes),
                n(e.rx_packets),
                n(e.rx_bytes),
                n(u64::from(e.ifindex)),
            ]
        })
        .collect();
    indented(table_string(
        [
            "ID",
            "NETWORK",
            "IP",
            "TX PACKETS",
            "TX BYTES",
            "RX PACKETS",
            "RX BYTES",
            "IFINDEX",
        ],
        &rows,
    ));
    println!("fast-path forwards (past the kernel's path)");
    let rows: Vec<[String; 3]> = r
        .forwards
        .iter()
        .map(|f| [f.way.clone(), n(f.packets), n(f.bytes)])
        .collect();
    indented(table_string(["WAY", "PACKETS", "BYTES"], &rows));
    println!("drops");
    let rows: Vec<[String; 3]> = r
        .drops
        .iter()
        .map(|d| [d.reason.clone(), n(d.packets), n(d.bytes)])
        .collect();
    indented(table_string(["REASON", "PACKETS", "BYTES"], &rows));
    Ok(())
}

fn table_string<const N: usize>(headers: [&str; N], rows: &[[String; N]]) -> String {
    render_table(headers, rows)
}

fn indented(text: String) {
    for line in text.lines() {
        println!("  {line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_to_the_widest_cell() {
        let t = render_table(
            ["ID", "NAME", "LAST"],
            &[
                ["1".into(), "a-long-name".into(), "x".into()],
                ["22".into(), "b".into(), "".into()],
            ],
        );
        assert_eq!(t, "ID   NAME          LAST\n1    a-long-name   x\n22   b\n");
    }
}
