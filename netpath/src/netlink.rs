//! Every rtnetlink operation netpath performs, in one place (no fork/exec of `ip`).
//!
//! A [`Netlink`] wraps one rtnetlink connection. Operations that create are idempotent
//! where the kernel lets us tell "already there" apart (EEXIST), and deletions treat
//! "already gone" (ENODEV) as success, so cleanup can always be re-run.

use std::net::IpAddr;

use futures::TryStreamExt;
use rtnetlink::{
    Handle, LinkBridge, LinkUnspec,
    packet_route::link::{LinkAttribute, LinkMessage},
};

#[derive(Debug, thiserror::Error)]
#[error("netlink {op} {target}: {source}")]
pub struct NetlinkError {
    pub op: &'static str,
    pub target: String,
    #[source]
    pub source: std::io::Error,
}

impl NetlinkError {
    /// The errno the kernel answered with, if it was a kernel error.
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
}

type Result<T, E = NetlinkError> = std::result::Result<T, E>;

/// A link as netpath sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub alias: Option<String>,
}

impl Link {
    fn from_message(msg: &LinkMessage) -> Link {
        let mut link = Link {
            index: msg.header.index,
            name: String::new(),
            alias: None,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => link.name = n.clone(),
                LinkAttribute::IfAlias(a) => link.alias = Some(a.clone()),
                _ => {}
            }
        }
        link
    }
}

fn io_error(e: rtnetlink::Error) -> std::io::Error {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.to_io(),
        other => std::io::Error::other(other.to_string()),
    }
}

/// One rtnetlink connection in the current network namespace.
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Opens a connection; its I/O task runs on the current tokio runtime.
    pub fn connect() -> Result<Netlink> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(|source| NetlinkError {
            op: "connect",
            target: "rtnetlink".into(),
            source,
        })?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    fn err(
        op: &'static str,
        target: impl ToString,
    ) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
        let target = target.to_string();
        move |e| NetlinkError {
            op,
            target,
            source: io_error(e),
        }
    }

    /// The link named `name`, or `None` if there is none.
    pub async fn link_by_name(&self, name: &str) -> Result<Option<Link>> {
        let mut stream = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute();
        match stream.try_next().await {
            Ok(msg) => Ok(msg.as_ref().map(Link::from_message)),
            Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -libc::ENODEV => Ok(None),
            Err(e) => Err(Self::err("get link", name)(e)),
        }
    }

    /// Every link in the namespace.
    pub async fn links(&self) -> Result<Vec<Link>> {
        self.handle
            .link()
            .get()
            .execute()
            .map_ok(|m| Link::from_message(&m))
            .try_collect()
            .await
            .map_err(Self::err("list links", "all"))
    }

    /// Creates bridge `name` (up, tagged with `alias`), or returns the existing one.
    pub async fn ensure_bridge(&self, name: &str, alias: &str, mtu: Option<u32>) -> Result<Link> {
        if let Some(link) = self.link_by_name(name).await? {
            return Ok(link);
        }
        let mut builder = LinkBridge::new(name);
        if let Some(mtu) = mtu {
            builder = builder.mtu(mtu);
        }
        match self.handle.link().add(builder.build()).execute().await {
            Ok(()) => {}
            // Lost a race with a concurrent creator: fine, it exists now.
            Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -libc::EEXIST => {}
            Err(e) => return Err(Self::err("create bridge", name)(e)),
        }
        let link = self.link_by_name(name).await?.ok_or_else(|| NetlinkError {
            op: "create bridge",
            target: name.into(),
            source: std::io::Error::from_raw_os_error(libc::ENODEV),
        })?;
        if let Err(e) = self.set_alias(link.index, alias).await {
            // Untagged, it would look foreign to every later run: don't leave it behind.
            let _ = self.delete_link(link.index).await;
            return Err(e);
        }
        Ok(Link {
            alias: Some(alias.to_owned()),
            ..link
        })
    }

    /// Sets the ifalias of link `index` (the kernel ignores IFLA_IFALIAS on creation,
    /// so tagging is a separate request).
    pub async fn set_alias(&self, index: u32, alias: &str) -> Result<()> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).alias(alias).build())
            .execute()
            .await
            .map_err(Self::err("set alias", index))
    }

    /// Sets link `index` up.
    pub async fn set_up(&self, index: u32) -> Result<()> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(Self::err("set up", index))
    }

    /// Adds `addr/prefix` to link `index`; already present is fine.
    pub async fn add_address(&self, index: u32, addr: IpAddr, prefix: u8) -> Result<()> {
        match self
            .handle
            .address()
            .add(index, addr, prefix)
            .execute()
            .await
        {
            Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -libc::EEXIST => Ok(()),
            r => r.map_err(Self::err(
                "add address",
                format!("{addr}/{prefix} on {index}"),
            )),
        }
    }

    /// Deletes link `index`; already gone is fine.
    pub async fn delete_link(&self, index: u32) -> Result<()> {
        match self.handle.link().del(index).execute().await {
            Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -libc::ENODEV => Ok(()),
            r => r.map_err(Self::err("delete link", index)),
        }
    }
}
