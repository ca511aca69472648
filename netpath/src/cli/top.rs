//! `netpath top`: the datapath at a glance, refreshed every second — each endpoint's
//! rates both ways, drops per second by reason, the most recently active translated
//! connections, the fullest tables and each program's cost per packet. Two snapshots of
//! `GET /v1/stats` (and one of `GET /v1/flows`) make a [`View`] ([`view`], plain logic);
//! the terminal shows it with ratatui, without colours (so it reads the same over SSH on
//! any terminal), or prints it as text frames (`--plain`, or when stdout is no terminal).

use std::{
    io::IsTerminal,
    time::{Duration, Instant},
};

use netpath::{
    client::Client,
    error::UserError,
    model::{Flow, StatsReport},
};
use ratatui::{
    Terminal,
    crossterm::{
        event::{self, Event, KeyCode, KeyEventKind, KeyModifiers},
        execute,
        terminal::{EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode},
    },
    layout::{Constraint, Layout},
    prelude::CrosstermBackend,
    style::{Modifier, Style},
    widgets::{Block, Borders, Paragraph, Row, Table},
};

/// Rows of each list at most.
const ROWS: usize = 10;

/// One endpoint's rates over the last interval.
#[derive(Clone, Debug, PartialEq)]
pub struct EndpointRate {
    pub id: String,
    pub network: String,
    pub rx_pps: f64,
    pub tx_pps: f64,
    pub rx_bps: f64,
    pub tx_bps: f64,
}

/// What one screen shows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct View {
    /// Busiest first (bytes per second both ways).
    pub endpoints: Vec<EndpointRate>,
    /// Drops per second, by reason, most first (none at zero).
    pub drops: Vec<(String, f64)>,
    /// Most recently active first.
    pub flows: Vec<Flow>,
    /// Fullest first: (map, entries, percent full).
    pub tables: Vec<(String, u64, f64)>,
    /// (program, runs per second, ns per run) over the interval, busiest first; empty
    /// while `kernel.bpf_stats_enabled` is 0.
    pub programs: Vec<(String, f64, u64)>,
}

/// The view of the interval `secs` long from `prev` to `now`, with `flows` as they are.
pub fn view(prev: &StatsReport, now: &StatsReport, mut flows: Vec<Flow>, secs: f64) -> View {
    let per_sec = |new: u64, old: u64| new.saturating_sub(old) as f64 / secs.max(1e-3);
    let mut endpoints: Vec<EndpointRate> = (now.endpoints.iter())
        .map(|e| {
            let before = prev
                .endpoints
                .iter()
                .find(|p| (p.ip, p.ifindex) == (e.ip, e.ifindex));
            let old = |f: fn(&netpath::model::EndpointTraffic) -> u64| before.map_or(f(e), f);
            EndpointRate {
                id: (e.id.clone())
                    .unwrap_or_else(|| e.ip.map_or(e.ifindex.to_string(), |ip| ip.to_string())),
                network: e.network.clone().unwrap_or_default(),
                rx_pps: per_sec(e.rx_packets, old(|t| t.rx_packets)),
                tx_pps: per_sec(e.tx_packets, old(|t| t.tx_packets)),
                rx_bps: per_sec(e.rx_bytes, old(|t| t.rx_bytes)),
                tx_bps: per_sec(e.tx_bytes, old(|t| t.tx_bytes)),
            }
        })
        .collect();
    endpoints.sort_by(|a, b| (b.rx_bps + b.tx_bps).total_cmp(&(a.rx_bps + a.tx_bps)));
    let mut drops: Vec<(String, f64)> = (now.drops.iter())
        .map(|d| {
            let old = prev.drops.iter().find(|p| p.reason == d.reason);
            (
                d.reason.clone(),
                per_sec(
                    d.count.packets,
                    old.map_or(d.count.packets, |o| o.count.packets),
                ),
            )
        })
        .filter(|(_, rate)| *rate > 0.0)
        .collect();
    drops.sort_by(|a, b| b.1.total_cmp(&a.1));
    flows.sort_by_key(|f| (f.idle_secs, std::cmp::Reverse(f.age_secs)));
    flows.truncate(ROWS);
    let mut tables: Vec<(String, u64, f64)> = (now.maps.iter())
        .map(|m| {
            let full = m.entries as f64 * 100.0 / f64::from(m.capacity.max(1));
            (m.map.clone(), m.entries, full)
        })
        .collect();
    tables.sort_by(|a, b| b.2.total_cmp(&a.2));
    tables.truncate(5);
    let mut programs: Vec<(String, f64, u64)> = (now.programs.iter())
        .filter_map(|p| {
            let old = prev.programs.iter().find(|o| o.program == p.program)?;
            let runs = p.run_count.saturating_sub(old.run_count);
            let ns = p.run_time_ns.saturating_sub(old.run_time_ns);
            (runs > 0).then(|| (p.program.clone(), per_sec(runs, 0), ns / runs))
        })
        .collect();
    programs.sort_by(|a, b| b.1.total_cmp(&a.1));
    View {
        endpoints,
        drops,
        flows,
        tables,
        programs,
    }
}

/// `n` with a unit prefix (k, M, G), as `top` shows rates.
fn si(n: f64) -> String {
    match n {
        n if n >= 1e9 => format!("{:.1}G", n / 1e9),
        n if n >= 1e6 => format!("{:.1}M", n / 1e6),
        n if n >= 1e3 => format!("{:.1}k", n / 1e3),
        n => format!("{n:.0}"),
    }
}

fn short(id: &str) -> String {
    id.chars().take(12).collect()
}

/// One part of the screen: its title, its column headers, its rows of cells.
type Section = (&'static str, Vec<&'static str>, Vec<Vec<String>>);

/// The view's sections as text.
fn sections(v: &View) -> Vec<Section> {
    let endpoints = (v.endpoints.iter().take(ROWS))
        .map(|e| {
            vec![
                short(&e.id),
                e.network.clone(),
                si(e.rx_pps),
                si(e.tx_pps),
                si(e.rx_bps * 8.0),
                si(e.tx_bps * 8.0),
            ]
        })
        .collect();
    let drops = (v.drops.iter().take(ROWS))
        .map(|(reason, rate)| vec![reason.clone(), si(*rate)])
        .collect();
    let flows = (v.flows.iter())
        .map(|f| {
            vec![
                format!("{:?}", f.kind).to_lowercase(),
                format!("{:?}", f.proto).to_lowercase(),
                format!("{} -> {}", f.original.src, f.original.dst),
                format!("{} -> {}", f.translated.src, f.translated.dst),
                f.state.clone(),
                format!("{}s", f.idle_secs),
            ]
        })
        .collect();
    let tables = (v.tables.iter())
        .map(|(map, entries, full)| vec![map.clone(), entries.to_string(), format!("{full:.1}%")])
        .collect();
    let programs = (v.programs.iter())
        .map(|(p, runs, ns)| vec![p.clone(), si(*runs), ns.to_string()])
        .collect();
    vec![
        (
            "endpoints (per second; rx: delivered by the fast path)",
            vec![
                "ENDPOINT", "NETWORK", "RX PKT", "TX PKT", "RX BIT", "TX BIT",
            ],
            endpoints,
        ),
        ("drops per second", vec!["REASON", "RATE"], drops),
        (
            "flows (most recently active)",
            vec!["KIND", "PROTO", "ORIGINAL", "TRANSLATED", "STATE", "IDLE"],
            flows,
        ),
        ("fullest tables", vec!["MAP", "ENTRIES", "FULL"], tables),
        (
            "program cost (sysctl kernel.bpf_stats_enabled=1)",
            vec!["PROGRAM", "RUNS/S", "NS/RUN"],
            programs,
        ),
    ]
}

/// The view as a text frame (`--plain`).
pub fn plain(v: &View) -> String {
    let mut out = String::new();
    for (title, headers, rows) in sections(v) {
        out.push_str(title);
        out.push('\n');
        let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: Vec<&str>| {
            let padded: Vec<String> = (cells.iter().zip(&widths))
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            format!("  {}\n", padded.join("   ").trim_end())
        };
        out.push_str(&line(headers.clone()));
        for row in &rows {
            out.push_str(&line(row.iter().map(String::as_str).collect()));
        }
    }
    out
}

/// Runs `netpath top`: a ratatui screen refreshed every `interval` until `q`, or text
/// frames (`plain`, or stdout no terminal); `iterations` frames at most.
pub async fn run(
    client: &Client,
    interval: Duration,
    iterations: Option<u64>,
    plain_frames: bool,
) -> anyhow::Result<()> {
    let sample = || async {
        let stats = client.stats().await.map_err(UserError::from)?;
        let flows = (client.flows(&Default::default()).await).map_err(UserError::from)?;
        anyhow::Ok((Instant::now(), stats, flows))
    };
    let mut prev = sample().await?;
    if plain_frames || !std::io::stdout().is_terminal() {
        let mut n = 0;
        while iterations.is_none_or(|max| n < max) {
            tokio::time::sleep(interval).await;
            let now = sample().await?;
            let secs = now.0.duration_since(prev.0).as_secs_f64();
            println!("{}", plain(&view(&prev.1, &now.1, now.2.clone(), secs)));
            prev = now;
            n += 1;
        }
        return Ok(());
    }
    enable_raw_mode()?;
    let mut stdout = std::io::stdout();
    execute!(stdout, EnterAlternateScreen)?;
    let mut terminal = Terminal::new(CrosstermBackend::new(stdout))?;
    let result = screen(&mut terminal, &mut prev, sample, interval, iterations).await;
    // The terminal is given back whatever happened.
    let _ = disable_raw_mode();
    let _ = execute!(terminal.backend_mut(), LeaveAlternateScreen);
    let _ = terminal.show_cursor();
    result
}

type Sample = (Instant, StatsReport, Vec<Flow>);

async fn screen<F, Fut>(
    terminal: &mut Terminal<CrosstermBackend<std::io::Stdout>>,
    prev: &mut Sample,
    sample: F,
    interval: Duration,
    iterations: Option<u64>,
) -> anyhow::Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Sample>>,
{
    let mut shown = View::default();
    let mut n = 0;
    let mut next = Instant::now();
    loop {
        terminal.draw(|f| draw(f, &shown))?;
        // Keys until the next refresh (`q`, Esc or Ctrl-C quit).
        let wait = next.saturating_duration_since(Instant::now());
        if event::poll(wait)?
            && let Event::Key(k) = event::read()?
            && k.kind == KeyEventKind::Press
            && (matches!(k.code, KeyCode::Char('q') | KeyCode::Esc)
                || (k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL)))
        {
            return Ok(());
        }
        if Instant::now() < next {
            continue;
        }
        let now = sample().await?;
        let secs = now.0.duration_since(prev.0).as_secs_f64();
        shown = view(&prev.1, &now.1, now.2.clone(), secs);
        *prev = now;
        next = Instant::now() + interval;
        n += 1;
        if iterations.is_some_and(|max| n > max) {
            return Ok(());
        }
    }
}

fn draw(f: &mut ratatui::Frame, v: &View) {
    let parts = sections(v);
    let heights: Vec<Constraint> = parts
        .iter()
        .map(|(_, _, rows)| Constraint::Length(rows.len().clamp(1, ROWS) as u16 + 3))
        .chain([Constraint::Length(1)])
        .collect();
    let areas = Layout::vertical(heights).split(f.area());
    let bold = Style::default().add_modifier(Modifier::BOLD);
    for ((title, headers, rows), area) in parts.into_iter().zip(areas.iter()) {
        let widths: Vec<Constraint> = headers.iter().map(|_| Constraint::Fill(1)).collect();
        let table = Table::new(rows.into_iter().map(Row::new), widths)
            .header(Row::new(headers).style(bold))
            .block(Block::default().borders(Borders::TOP).title(title));
        f.render_widget(table, *area);
    }
    if let Some(last) = areas.last() {
        f.render_widget(Paragraph::new("q: quit"), *last);
    }
}

#[cfg(test)]
mod tests {
    use netpath::model::{Count, EndpointTraffic, MapFill, ProgramCost, ReasonCount};

    use super::*;

    fn traffic(id: &str, ip: &str, rx: u64, tx: u64) -> EndpointTraffic {
        EndpointTraffic {
            id: Some(id.into()),
            network: Some("web".into()),
            ip: Some(ip.parse().unwrap()),
            ifindex: 1,
            tx_packets: tx,
            tx_bytes: tx * 100,
            rx_packets: rx,
            rx_bytes: rx * 100,
        }
    }

    fn spoofed(packets: u64) -> ReasonCount {
        ReasonCount {
            reason: "spoofed_ip".into(),
            count: Count { packets, bytes: 0 },
        }
    }

    fn tc_ingress(run_count: u64, run_time_ns: u64) -> ProgramCost {
        ProgramCost {
            program: "netpath_tc_ingress".into(),
            run_count,
            run_time_ns,
        }
    }

    #[test]
    fn rates_come_from_two_snapshots_busiest_first() {
        let prev = StatsReport {
            endpoints: vec![
                traffic("a", "10.0.0.2", 0, 0),
                traffic("b", "10.0.0.3", 0, 0),
            ],
            drops: vec![spoofed(10)],
            programs: vec![tc_ingress(100, 10_000)],
            ..StatsReport::default()
        };
        let now = StatsReport {
            endpoints: vec![
                traffic("a", "10.0.0.2", 20, 10),
                traffic("b", "10.0.0.3", 200, 0),
            ],
            drops: vec![spoofed(14)],
            maps: vec![
                MapFill {
                    map: "NETPATH_SNAT".into(),
                    entries: 10,
                    capacity: 100,
                },
                MapFill {
                    map: "NETPATH_FRAG".into(),
                    entries: 50,
                    capacity: 100,
                },
            ],
            programs: vec![tc_ingress(300, 50_000)],
            ..StatsReport::default()
        };
        let v = view(&prev, &now, Vec::new(), 2.0);
        assert_eq!(v.endpoints[0].id, "b", "busiest first");
        assert_eq!(
            (v.endpoints[0].rx_pps, v.endpoints[0].rx_bps),
            (100.0, 10_000.0)
        );
        assert_eq!((v.endpoints[1].rx_pps, v.endpoints[1].tx_pps), (10.0, 5.0));
        assert_eq!(v.drops, [("spoofed_ip".to_owned(), 2.0)]);
        assert_eq!(v.tables[0], ("NETPATH_FRAG".to_owned(), 50, 50.0));
        assert_eq!(v.programs, [("netpath_tc_ingress".to_owned(), 100.0, 200)]);
        let text = plain(&v);
        assert!(
            text.contains("drops per second\n  REASON       RATE\n  spoofed_ip   2\n"),
            "{text}"
        );
    }

    #[test]
    fn units_and_an_endpoint_new_since_the_last_snapshot() {
        assert_eq!(
            (si(999.0), si(1500.0), si(2.5e6), si(3e9)),
            ("999".into(), "1.5k".into(), "2.5M".into(), "3.0G".into())
        );
        let now = StatsReport {
            endpoints: vec![traffic("new", "10.0.0.9", 50, 50)],
            ..StatsReport::default()
        };
        // No earlier count: no rate yet (not its whole count at once).
        let v = view(&StatsReport::default(), &now, Vec::new(), 1.0);
        assert_eq!((v.endpoints[0].rx_pps, v.endpoints[0].tx_bps), (0.0, 0.0));
    }
}
