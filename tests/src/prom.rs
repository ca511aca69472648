//! Reading netpath's metrics as Prometheus does: the text exposition parsed into series,
//! `promtool check metrics`, and a private Prometheus server (Debian's 2.42) that
//! scrapes a daemon.
//!
//! [`Prometheus`] keeps its config and its TSDB under a temp dir of its own, listens on
//! loopback only, and is killed (and its dir removed) on drop.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::unique;

const PROMETHEUS: &str = "/usr/bin/prometheus";
const PROMTOOL: &str = "/usr/bin/promtool";

/// One sample of an exposition: a metric name, its labels, its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The samples of a text exposition (format 0.0.4). Label values netpath writes hold no
/// escaped quotes or commas, which this parser relies on.
pub fn parse(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let labels = (labels.split("\",").filter(|p| !p.is_empty()))
            .map(|pair| {
                let (k, v) = pair
                    .split_once("=\"")
                    .unwrap_or_else(|| panic!("bad label {pair:?} in {line:?}"));
                (k.to_owned(), v.trim_end_matches('"').to_owned())
            })
            .collect();
        let value = value
            .parse()
            .unwrap_or_else(|e| panic!("bad value in {line:?}: {e}"));
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    samples
}

/// The sum of the samples named `name` whose labels include all of `labels` (0 if none).
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    (samples.iter())
        .filter(|s| s.name == name)
        .filter(|s| (labels.iter()).all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(v)))
        .map(|s| s.value)
        .sum()
}

/// Whether any sample named `name` has all of `labels`.
pub fn has(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> bool {
    (samples.iter()).any(|s| {
        s.name == name
            && (labels.iter()).all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(v))
    })
}

/// `promtool check metrics` on `text`: what it printed if it found problems.
pub fn promtool_check(text: &str) -> Result<(), String> {
    let mut child = Command::new(PROMTOOL)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{PROMTOOL}: {e} (`cargo xtask setup` installs it)"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(format!("promtool ({}): {said}", out.status))
    }
}

/// `GET path` over TCP (HTTP/1.0, so no chunked answer) to `addr`; (status, headers,
/// body).
pub fn http_get(addr: &str, path: &str) -> Result<(u16, String, String), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)
        .map_err(|e| format!("read {addr}{path}: {e}"))?;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no header end in {answer:?}"))?;
    let status = (head.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    Ok((status, head.to_owned(), body.to_owned()))
}

/// Percent-encodes a URL query value.
fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A private Prometheus server scraping one target every second.
pub struct Prometheus {
    child: Child,
    dir: PathBuf,
    /// `127.0.0.1:PORT` of its web API.
    pub addr: String,
}

impl Prometheus {
    /// Starts a server with job `job` scraping `target` (`host:port`, path `/metrics`)
    /// every second; returns once its API answers (bounded: 60 s).
    pub fn start(job: &str, target: &str) -> Prometheus {
        let dir = std::env::temp_dir().join(unique("prom"));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: {job}\n    static_configs:\n      \
                 - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        // A free loopback port (released just before Prometheus binds it).
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{PROMETHEUS}: {e} (`cargo xtask setup` installs it)"));
        let p = Prometheus { child, dir, addr };
        let start = Instant::now();
        while !matches!(http_get(&p.addr, "/-/ready"), Ok((200, _, _))) {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "prometheus not ready after 60 s:\n{}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        p
    }

    /// What the server logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// The value of the first series an instant query `q` returns, if any.
    pub fn query(&self, q: &str) -> Result<Option<f64>, String> {
        let (status, _, body) =
            http_get(&self.addr, &format!("/api/v1/query?query={}", encode(q)))?;
        if status != 200 {
            return Err(format!("{q}: {status} {body}"));
        }
        let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| format!("{q}: {e}"))?;
        Ok(v["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|s| s.parse().ok()))
    }

    /// Waits (bounded by `within`) until query `q` returns `want`; panics with the last
    /// answer and the server's log otherwise.
    pub fn wait_for(&self, q: &str, want: f64, within: Duration) {
        let start = Instant::now();
        loop {
            let got = self.query(q);
            if got == Ok(Some(want)) {
                return;
            }
            assert!(
                start.elapsed() < within,
                "{q}: {got:?}, not {want} after {within:?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
