//! `netpath reset`: removes everything this netpath instance created — attachments and
//! pins, tagged links (bridges, veths, TAPs), the state directory and the socket.

use std::{fs, io, path::Path};

use anyhow::Context;
use serde::Serialize;

use crate::{config, config::Paths, daemon, datapath, error::UserError, netlink::Netlink};

#[derive(Debug, Default, Serialize)]
pub struct ResetReport {
    pub links_removed: Vec<String>,
    pub pins_removed: usize,
    pub state_removed: bool,
}

pub async fn reset(paths: &Paths) -> anyhow::Result<ResetReport> {
    if daemon::daemon_running(&paths.state_dir) {
        return Err(
            UserError::new("the netpath daemon is running on this state directory")
                .hint("stop it (Ctrl-C or SIGTERM), then run netpath reset again")
                .into(),
        );
    }
    let mut report = ResetReport {
        // Pins first: dropping the last reference to each bpf_link detaches it.
        pins_removed: datapath::remove_pins(&paths.bpffs)?,
        ..Default::default()
    };
    let instance = paths.instance();
    let nl = Netlink::connect()?;
    for link in nl.links().await? {
        if config::is_owned_by(&instance, link.alias.as_deref()) {
            nl.delete_link(link.index).await?;
            report.links_removed.push(link.name);
        }
    }
    report.state_removed = remove_dir_all_if_exists(&paths.state_dir)?;
    remove_file_if_exists(&paths.socket)?;
    Ok(report)
}

fn remove_dir_all_if_exists(dir: &Path) -> anyhow::Result<bool> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("removing {}", dir.display())),
    }
}

fn remove_file_if_exists(path: &Path) -> anyhow::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}
