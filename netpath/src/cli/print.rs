//! How the CLI prints: aligned tables (as `docker ps`), detail blocks, JSON, and the
//! counters of `netpath stats`.

use std::fmt;

use netpath::model::{
    Endpoint, EndpointKind, EndpointState, Flow, FlowKind, FlowProto, Mode, MonitorEvent, Network,
    PortLease, StatsReport,
};
use serde::Serialize;

/// Prints `v` as pretty JSON (every `--json`).
pub fn json(v: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Prints `items` as a [`table`].
fn print_table<T, const N: usize>(
    headers: [&str; N],
    items: &[T],
    row: impl Fn(&T) -> [String; N],
) {
    print!("{}", table(headers, items, row));
}

/// `items` as a table: one row each (its cells, from `row`) under `headers`, each
/// column as wide as its widest cell (the last one unpadded), three spaces apart.
fn table<T, const N: usize>(
    headers: [&str; N],
    items: &[T],
    row: impl Fn(&T) -> [String; N],
) -> String {
    let rows: Vec<[String; N]> = items.iter().map(row).collect();
    let mut widths = headers.map(|h| h.chars().count());
    for row in &rows {
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
    for row in &rows {
        out.push_str(&line(std::array::from_fn(|i| row[i].as_str())));
    }
    out
}

/// A network mode as the tables and `--mode` write it.
pub fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Bridge => "bridge",
        Mode::Routed => "routed",
    }
}

/// An endpoint state as the tables and `--filter state=` write it.
pub fn state_name(state: EndpointState) -> &'static str {
    match state {
        EndpointState::Creating => "creating",
        EndpointState::Ready => "ready",
    }
}

/// An endpoint kind as the tables and `--filter kind=` write it.
pub fn kind_name(kind: EndpointKind) -> &'static str {
    match kind {
        EndpointKind::Veth => "veth",
        EndpointKind::Tap => "tap",
    }
}

/// `network ls`: a row a network.
pub fn networks(networks: &[Network]) {
    let headers = [
        "NAME", "ID", "SUBNET", "GATEWAY", "MODE", "BRIDGE", "UPLINK", "MTU", "POLICY",
    ];
    print_table(headers, networks, |n| {
        [
            n.name.clone(),
            n.id.to_string(),
            both(n.subnet, n.subnet6),
            both(n.gateway, n.gateway6),
            mode_name(n.mode).into(),
            or_dash(&n.bridge),
            or_dash(&n.uplink),
            n.mtu.to_string(),
            n.policy.describe(),
        ]
    });
}

/// A dual-stack cell: the IPv4 value, then the IPv6 one if there is one.
/// A cell of both families' values: `v4,v6`, or the one there is (`-` for none).
fn both(v4: Option<impl fmt::Display>, v6: Option<impl fmt::Display>) -> String {
    match (v4, v6) {
        (Some(v4), Some(v6)) => format!("{v4},{v6}"),
        (Some(v4), None) => v4.to_string(),
        (None, Some(v6)) => v6.to_string(),
        (None, None) => "-".into(),
    }
}

/// `names` joined by commas, at most `most` of them: a reset of 10,000 TAPs says so in
/// one short line (`--json` lists them all).
pub fn some_names(names: &[String], most: usize) -> String {
    match names.len().checked_sub(most) {
        Some(more) if more > 0 => {
            format!(
                "{}, … and {more} more (--json lists them all)",
                names[..most].join(", ")
            )
        }
        _ => names.join(", "),
    }
}

/// An optional cell: its text, or `-`.
fn or_dash(cell: &Option<String>) -> String {
    cell.clone().unwrap_or_else(|| "-".into())
}

/// Where an endpoint is: its interface and namespace, the name an engine moved it from
/// (Docker), or a TAP's owner and queues.
fn place(e: &Endpoint) -> String {
    let e = &e.details;
    match (&e.netns, &e.ifname, &e.peer) {
        (Some(ns), Some(ifn), _) => format!("{ifn} in {}", ns.display()),
        (_, _, Some(peer)) => format!("{peer}, moved in by its engine"),
        _ => format!(
            "uid {} gid {} queues {}",
            e.uid.map_or("-".into(), |v| v.to_string()),
            e.gid.map_or("-".into(), |v| v.to_string()),
            e.queues.unwrap_or(1)
        ),
    }
}

/// `endpoint ls`, `tap ls`, `ls`: a row an endpoint.
pub fn endpoints(eps: &[Endpoint]) {
    let headers = [
        "ID", "NETWORK", "KIND", "STATE", "IP", "MAC", "GATEWAY", "HOST IF", "WHERE",
    ];
    print_table(headers, eps, |e| {
        [
            e.id.clone(),
            e.network.clone(),
            kind_name(e.kind).into(),
            state_name(e.state).into(),
            both(e.ip.map(|ip| format!("{ip}/{}", e.prefix_len)), e.ip6),
            e.mac.to_string(),
            both(e.gateway, e.gateway6),
            e.host_ifname.clone(),
            place(e),
        ]
    });
}

/// One endpoint, as `endpoint add` and `tap add` answer.
pub fn endpoint(e: &Endpoint, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return json(e);
    }
    let mut rows: Vec<(&str, String)> =
        vec![("id", e.id.clone()), ("state", state_name(e.state).into())];
    if let (Some(ip), Some(gw)) = (e.ip, e.gateway) {
        rows.push(("ip", format!("{ip}/{}", e.prefix_len)));
        rows.push(("gateway", gw.to_string()));
    }
    if let (Some(ip6), Some(gw6)) = (e.ip6, e.gateway6) {
        rows.push(("ip6", ip6.to_string()));
        rows.push(("gateway6", gw6.to_string()));
    }
    rows.push(("mac", e.mac.to_string()));
    rows.push(("host if", e.host_ifname.clone()));
    if let Some(ifn) = &e.details.ifname {
        rows.push(("ifname", ifn.clone()));
    }
    for (k, v) in rows {
        println!("{k:<9} {v}");
    }
    Ok(())
}

/// `port ls`, `port publish`: a row a lease.
pub fn ports(leases: &[PortLease]) {
    let headers = ["ID", "ENDPOINT", "PROTO", "HOST", "GUEST"];
    print_table(headers, leases, |l| {
        [
            l.id.clone(),
            l.endpoint.clone(),
            l.proto.to_string(),
            format!("{}:{}", l.host_ip, l.host_port),
            format!("{}:{}", l.guest_ip, l.guest_port),
        ]
    });
}

/// `netpath stats`: zero rows left out unless `all`.
pub fn stats(mut r: StatsReport, all: bool, as_json: bool) -> anyhow::Result<()> {
    if !all {
        r.classes.retain(|c| c.count.packets > 0);
        r.drops.retain(|d| d.count.packets > 0);
        r.drops_by_hook.retain(|d| d.count.packets > 0);
        r.programs.retain(|p| p.run_count > 0);
    }
    if as_json {
        return json(&r);
    }
    let n = |v: u64| v.to_string();
    section(
        "packets by hook and class",
        table(["HOOK", "CLASS", "PACKETS", "BYTES"], &r.classes, |c| {
            [
                c.hook.clone(),
                c.class.clone(),
                n(c.count.packets),
                n(c.count.bytes),
            ]
        }),
    );
    let headers = [
        "ID",
        "NETWORK",
        "IP",
        "TX PACKETS",
        "TX BYTES",
        "RX PACKETS",
        "RX BYTES",
        "IFINDEX",
    ];
    section(
        "endpoints (tx: sent by the endpoint; rx: delivered by the fast path)",
        table(headers, &r.endpoints, |e| {
            [
                or_dash(&e.id),
                or_dash(&e.network),
                e.ip.map_or_else(|| "-".into(), |ip| ip.to_string()),
                n(e.tx_packets),
                n(e.tx_bytes),
                n(e.rx_packets),
                n(e.rx_bytes),
                n(u64::from(e.ifindex)),
            ]
        }),
    );
    section(
        "fast-path forwards (past the kernel's path)",
        table(["WAY", "PACKETS", "BYTES"], &r.forwards, |f| {
            [f.way.clone(), n(f.count.packets), n(f.count.bytes)]
        }),
    );
    section(
        "drops",
        table(
            ["HOOK", "REASON", "PACKETS", "BYTES"],
            &r.drops_by_hook,
            |d| {
                [
                    d.hook.clone(),
                    d.reason.clone(),
                    n(d.count.packets),
                    n(d.count.bytes),
                ]
            },
        ),
    );
    section(
        "tables",
        table(["MAP", "ENTRIES", "CAPACITY", "FULL"], &r.maps, |m| {
            let full = m.entries as f64 * 100.0 / f64::from(m.capacity.max(1));
            [
                m.map.clone(),
                n(m.entries),
                n(u64::from(m.capacity)),
                format!("{full:.1}%"),
            ]
        }),
    );
    section(
        "program cost (while sysctl kernel.bpf_stats_enabled=1)",
        table(["PROGRAM", "RUNS", "NS/RUN"], &r.programs, |p| {
            let per_run = p.run_time_ns.checked_div(p.run_count).unwrap_or(0);
            [p.program.clone(), n(p.run_count), n(per_run)]
        }),
    );
    Ok(())
}

/// `netpath flows`: one row per connection, as `conntrack -L` shows them.
pub fn flows(flows: &[Flow], as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return json(&flows);
    }
    print!("{}", flows_table(flows));
    Ok(())
}

fn flows_table(flows: &[Flow]) -> String {
    let headers = [
        "KIND",
        "PROTO",
        "ENDPOINT",
        "ORIGINAL",
        "TRANSLATED",
        "STATE",
        "AGE",
        "IDLE",
        "EXPIRES",
    ];
    table(headers, flows, |f| {
        let kind = match f.kind {
            FlowKind::Masq => "masq",
            FlowKind::Publish => "publish",
            FlowKind::Hairpin => "hairpin",
        };
        let proto = match f.proto {
            FlowProto::Tcp => "tcp",
            FlowProto::Udp => "udp",
            FlowProto::Icmp => "icmp",
        };
        let id = f
            .endpoint
            .as_deref()
            .map_or("-", |id| &id[..id.len().min(12)]);
        [
            kind.to_owned(),
            proto.to_owned(),
            id.to_owned(),
            format!("{} -> {}", f.original.src, f.original.dst),
            format!("{} -> {}", f.translated.src, f.translated.dst),
            f.state.clone(),
            format!("{}s", f.age_secs),
            format!("{}s", f.idle_secs),
            format!("{}s", f.expires_in_secs),
        ]
    })
}

/// One event of `netpath monitor` as a line: its time (UTC, to the microsecond), what,
/// where, which endpoint, the packet.
pub fn event_line(event: &MonitorEvent) -> String {
    let (what, p) = match event {
        MonitorEvent::Drop(p) => ("drop", p),
        MonitorEvent::Trace(p) => ("trace", p),
        MonitorEvent::Lost { ring, behind } => {
            return format!(
                "lost  {} events (the datapath's ring was full: {ring}; this reader fell behind: {behind})",
                ring + behind
            );
        }
    };
    let secs = p.time_unix_ns / 1_000_000_000;
    let micros = (p.time_unix_ns % 1_000_000_000) / 1000;
    let (h, m, s) = (secs / 3600 % 24, secs / 60 % 60, secs % 60);
    let id = p
        .endpoint
        .as_deref()
        .map_or("-", |id| &id[..id.len().min(12)]);
    let why = p.reason.as_deref().unwrap_or("redirect");
    format!(
        "{h:02}:{m:02}:{s:02}.{micros:06}  {what:<5}  {:<14}  {why:<22}  {id:<12}  {:<6}  {} -> {}  {} B",
        p.hook, p.proto, p.src, p.dst, p.len
    )
}

/// One part of `netpath stats`: its title, then `text` indented under it.
fn section(title: &str, text: String) {
    println!("{title}");
    for line in text.lines() {
        println!("  {line}");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn long_name_lists_are_cut_with_a_count() {
        let names: Vec<String> = (0..10).map(|i| format!("t{i}")).collect();
        assert_eq!(some_names(&names[..2], 8), "t0, t1");
        assert_eq!(some_names(&names[..8], 8), "t0, t1, t2, t3, t4, t5, t6, t7");
        assert_eq!(
            some_names(&names, 8),
            "t0, t1, t2, t3, t4, t5, t6, t7, … and 2 more (--json lists them all)"
        );
    }

    use super::*;

    #[test]
    fn tables_align_to_the_widest_cell() {
        let t = table(
            ["ID", "NAME", "LAST"],
            &[["1", "a-long-name", "x"], ["22", "b", ""]],
            |r| r.map(String::from),
        );
        assert_eq!(t, "ID   NAME          LAST\n1    a-long-name   x\n22   b\n");
    }

    #[test]
    fn an_event_line_has_its_time_reason_endpoint_and_packet() {
        let drop = MonitorEvent::Drop(netpath::model::PacketEvent {
            // 2026-12-04 01:02:03.000456 UTC.
            time_unix_ns: 1_796_346_123_000_456_789,
            hook: "tc_ingress".into(),
            reason: Some("spoofed_ip".into()),
            endpoint: Some("0123456789abcdef".into()),
            ifindex: 7,
            proto: "udp".into(),
            src: "10.50.0.250:5000".into(),
            dst: "10.50.0.3:7100".into(),
            len: 142,
        });
        let line = event_line(&drop);
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            words,
            [
                "01:02:03.000456",
                "drop",
                "tc_ingress",
                "spoofed_ip",
                "0123456789ab",
                "udp",
                "10.50.0.250:5000",
                "->",
                "10.50.0.3:7100",
                "142",
                "B"
            ]
        );
        let lost = event_line(&MonitorEvent::Lost { ring: 3, behind: 4 });
        assert!(lost.starts_with("lost  7 events"), "{lost}");
    }

    #[test]
    fn a_flow_row_shows_both_tuples_and_its_times() {
        let flow = Flow {
            kind: FlowKind::Masq,
            proto: FlowProto::Tcp,
            endpoint: Some("0123456789abcdef".to_owned()),
            network: Some("web".to_owned()),
            direction: "outbound".to_owned(),
            original: netpath::model::FlowTuple {
                src: "10.50.0.2:41000".parse().unwrap(),
                dst: "198.51.100.1:80".parse().unwrap(),
            },
            translated: netpath::model::FlowTuple {
                src: "198.51.100.2:40001".parse().unwrap(),
                dst: "198.51.100.1:80".parse().unwrap(),
            },
            state: "established".to_owned(),
            age_secs: 12,
            idle_secs: 1,
            expires_in_secs: 86399,
        };
        let t = flows_table(&[flow]);
        let row = t.lines().nth(1).unwrap();
        assert_eq!(
            row.split("   ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect::<Vec<_>>(),
            [
                "masq",
                "tcp",
                "0123456789ab",
                "10.50.0.2:41000 -> 198.51.100.1:80",
                "198.51.100.2:40001 -> 198.51.100.1:80",
                "established",
                "12s",
                "1s",
                "86399s"
            ]
        );
    }
}
