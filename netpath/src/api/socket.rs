//! The unix sockets the daemon serves on (the API's, the Docker plugin's): binding one
//! (a stale one replaced, another daemon's refused, the file `0660` from the first
//! moment it can be reached), who may connect (its group, `--socket-group`), and
//! serving a router on it until shutdown.

use std::{
    future::Future,
    io,
    os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
};

/// The group that may use the API socket besides root.
pub const DEFAULT_SOCKET_GROUP: &str = "netpath";

/// Who may connect to a socket besides root: the members of one group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketGroup {
    pub name: String,
    pub gid: u32,
}

impl SocketGroup {
    /// The group of `--socket-group NAME`, or without it [`DEFAULT_SOCKET_GROUP`] if this
    /// host has that group (`None`, root only, if not); `lookup` gives a group's id.
    pub fn resolve(
        asked: Option<&str>,
        lookup: impl Fn(&str) -> Option<u32>,
    ) -> Result<Option<SocketGroup>, SocketError> {
        let name = asked.unwrap_or(DEFAULT_SOCKET_GROUP);
        match (lookup(name), asked) {
            (Some(gid), _) => Ok(Some(SocketGroup {
                name: name.to_owned(),
                gid,
            })),
            (None, None) => Ok(None),
            (None, Some(_)) => Err(SocketError::NoSuchGroup {
                group: name.to_owned(),
            }),
        }
    }

    /// A group's id from the host's group database (`getgrnam`).
    pub fn lookup(name: &str) -> Option<u32> {
        nix::unistd::Group::from_name(name)
            .ok()
            .flatten()
            .map(|g| g.gid.as_raw())
    }
}

/// Why the API socket could not be set up or served.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("cannot create the socket directory {}", dir.display())]
    CreateDir {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} exists and is not a socket; remove it or pass another --socket", path.display())]
    NotASocket { path: PathBuf },
    #[error(
        "another daemon is listening on {} — stop it first, or pass another --socket",
        path.display()
    )]
    InUse { path: PathBuf },
    #[error("cannot remove the stale socket {}", path.display())]
    RemoveStale {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot check whether {} is in use", path.display())]
    Probe {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot inspect {}", path.display())]
    Inspect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot bind the API socket {}", path.display())]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot set the permissions of {}", path.display())]
    Permissions {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("group {group} does not exist on this host")]
    NoSuchGroup { group: String },
    #[error("serving the API on {}", path.display())]
    Serve {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Serves `app` (the API's [`router`], or the Docker plugin's) on `listener`, bound to
/// `socket` with [`bind`] (so a caller can bind, announce readiness, then serve), until
/// `shutdown`; then
/// removes the socket if it is still the one bound: a successor may have replaced it
/// already. The API and the Docker plugin both serve this way.
pub async fn serve_app(
    app: axum::Router,
    listener: tokio::net::UnixListener,
    socket: &Path,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), SocketError> {
    let bound = std::fs::symlink_metadata(socket)
        .map(|m| (m.dev(), m.ino()))
        .ok();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| SocketError::Serve {
            path: socket.to_owned(),
            source,
        });
    if let Ok(m) = std::fs::symlink_metadata(socket)
        && bound == Some((m.dev(), m.ino()))
    {
        let _ = std::fs::remove_file(socket);
    }
    served
}

/// Binds a socket: creates its directory, replaces a stale socket file (one nothing
/// answers on), refuses if another daemon answers, and opens it to its owner (the
/// daemon's user, root) and `group` alone (the daemon's group without one), `0660`. It is bound under a temporary name, given
/// its owner and mode, and only then renamed into place: no client ever finds it open
/// to more than that.
pub async fn bind(
    socket: &Path,
    group: Option<&SocketGroup>,
) -> Result<tokio::net::UnixListener, SocketError> {
    let path = || socket.to_owned();
    if let Some(dir) = socket.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| SocketError::CreateDir {
            dir: dir.to_owned(),
            source,
        })?;
    }
    match std::fs::symlink_metadata(socket) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(SocketError::NotASocket { path: path() });
        }
        Ok(_) => match tokio::net::UnixStream::connect(socket).await {
            Ok(_) => return Err(SocketError::InUse { path: path() }),
            Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                // A stale socket from a daemon that died: nothing answers on it.
                match std::fs::remove_file(socket) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(source) => {
                        return Err(SocketError::RemoveStale {
                            path: path(),
                            source,
                        });
                    }
                }
            }
            Err(source) => {
                return Err(SocketError::Probe {
                    path: path(),
                    source,
                });
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(SocketError::Inspect {
                path: path(),
                source,
            });
        }
    }
    let mut staging = socket.as_os_str().to_owned();
    staging.push(format!(".{}.tmp", std::process::id()));
    let staging = PathBuf::from(staging);
    let _ = std::fs::remove_file(&staging);
    let listener =
        tokio::net::UnixListener::bind(&staging).map_err(|source| SocketError::Bind {
            path: path(),
            source,
        })?;
    let restricted = (|| {
        // The owner stays the daemon's user (root), the group its own unless given.
        if let Some(g) = group {
            nix::unistd::chown(&staging, None, Some(nix::unistd::Gid::from_raw(g.gid)))?;
        }
        std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o660))?;
        std::fs::rename(&staging, socket)
    })();
    if let Err(source) = restricted {
        let _ = std::fs::remove_file(&staging);
        return Err(SocketError::Permissions {
            path: path(),
            source,
        });
    }
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host whose groups are `netpath` (gid 990) and `vmm` (gid 991), or `vmm` alone.
    fn host(with_netpath: bool) -> impl Fn(&str) -> Option<u32> {
        move |name| match name {
            "netpath" if with_netpath => Some(990),
            "vmm" => Some(991),
            _ => None,
        }
    }

    #[test]
    fn the_socket_group_is_the_one_asked_else_netpath_if_there_else_none() {
        let group = |name: &str, gid| {
            Some(SocketGroup {
                name: name.into(),
                gid,
            })
        };
        assert_eq!(
            SocketGroup::resolve(None, host(true)).unwrap(),
            group("netpath", 990)
        );
        assert_eq!(SocketGroup::resolve(None, host(false)).unwrap(), None);
        assert_eq!(
            SocketGroup::resolve(Some("vmm"), host(true)).unwrap(),
            group("vmm", 991)
        );
        let err = SocketGroup::resolve(Some("nope"), host(true)).unwrap_err();
        assert_eq!(err.to_string(), "group nope does not exist on this host");
        // Asked for by name, `netpath` must exist too.
        assert!(SocketGroup::resolve(Some("netpath"), host(false)).is_err());
    }
}
