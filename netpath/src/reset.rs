//! `netpath reset`: removes everything this netpath instance created — attachments and
//! pins, tagged links (bridges, veths, TAPs), the state directory and the socket.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use serde::Serialize;

use crate::{
    config,
    config::Paths,
    daemon,
    datapath::{self, DatapathError},
    netlink::{Netlink, NetlinkError},
};

#[derive(Debug, Default, Serialize)]
pub struct ResetReport {
    pub links_removed: Vec<String>,
    pub pins_removed: usize,
    pub state_removed: bool,
}

/// Why `reset` stopped (what it removed before stays removed; running it again
/// finishes).
#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    #[error("the netpath daemon is running on this state directory")]
    DaemonRunning,
    #[error(transparent)]
    Pins(#[from] DatapathError),
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error("removing {}", path.display())]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl ResetError {
    /// What the user can do about it, when there is something to do.
    pub fn hint(&self) -> Option<String> {
        match self {
            ResetError::DaemonRunning => {
                Some("stop it (Ctrl-C or SIGTERM), then run netpath reset again".into())
            }
            _ => None,
        }
    }
}

pub async fn reset(paths: &Paths) -> Result<ResetReport, ResetError> {
    if daemon::daemon_running(&paths.state_dir) {
        return Err(ResetError::DaemonRunning);
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

fn remove_dir_all_if_exists(dir: &Path) -> Result<bool, ResetError> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(ResetError::Remove {
            path: dir.to_owned(),
            source,
        }),
    }
}

fn remove_file_if_exists(path: &Path) -> Result<(), ResetError> {
    match fs::remove_file(path) {
        Err(source) if source.kind() != io::ErrorKind::NotFound => Err(ResetError::Remove {
            path: path.to_owned(),
            source,
        }),
        _ => Ok(()),
    }
}
