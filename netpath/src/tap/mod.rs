//! TAP devices for microVMs, created through `/dev/net/tun` ioctls.
//!
//! rtnetlink cannot create TAPs (the kernel rejects tun creation over rtnetlink), so a
//! TAP is made the way `ip tuntap add` does it, without fork/exec: open `/dev/net/tun`
//! once per queue, `TUNSETIFF` each fd onto the same name, set the owner/group and
//! `TUNSETPERSIST` on the first fd, then close every fd. The device outlives the fds;
//! the VMM attaches its own queues later by name. Addresses, MTU, up/down and the
//! bridge port are configured over rtnetlink afterwards, like any other link.
//!
//! Kernel behaviour worth knowing (checked on 6.18):
//! * `TUNSETIFF` on a name that already exists *attaches* to that device (and, for the
//!   first queue, overwrites its feature flags) instead of failing. [`create_tap`]
//!   refuses existing names twice over: it checks `/sys/class/net/<name>` first, and
//!   passes `IFF_TUN_EXCL` on the first fd so a device created in between (or one in
//!   this thread's network namespace that the sysfs mount does not show) fails with
//!   `EBUSY` rather than being adopted.
//! * A name containing `%` is a template for the kernel (`tap%d` becomes `tap0`), so it
//!   is refused like the other invalid names.
//! * The flags given at creation (`IFF_VNET_HDR`, …) only last until the next process
//!   attaches a first queue: the kernel replaces them with that process's `TUNSETIFF`
//!   flags. The VMM's flags are the ones that count.
//! * Closing the last fd of a non-persistent TAP removes it before `close` returns —
//!   unless another thread is forking at that moment: the child shares the fd until its
//!   `exec` closes it, so the device (or, for a persistent TAP, the queue: a VMM would
//!   get EBUSY attaching a single-queue TAP) lingers for a moment. [`create_tap`] and
//!   [`delete_tap`] therefore wait (bounded) for the kernel to finish: the carrier of a
//!   TAP goes off (`carrier_down_count` grows) when its last queue detaches.
//! * A persistent multiqueue TAP with no fds attached has one tx and one rx queue,
//!   whatever the number of queues it was created with (the kernel cannot set the real
//!   queue count below one); queues appear as the VMM attaches them.

use std::{
    fs::{self, OpenOptions},
    io,
    os::{
        fd::{AsRawFd, OwnedFd},
        unix::fs::OpenOptionsExt,
    },
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

/// The clone device every TUN/TAP is made through.
const TUN_PATH: &str = "/dev/net/tun";

/// Where the kernel lists network devices (of the network namespace sysfs was mounted in).
const SYS_CLASS_NET: &str = "/sys/class/net";

/// Longest interface name in bytes (`IFNAMSIZ` - 1 for the NUL).
pub const MAX_NAME_LEN: usize = libc::IFNAMSIZ - 1;

/// How long to wait for the kernel to act on our last close of a TAP fd: the device
/// disappearing or its queues detaching (see `wait_gone`).
const GONE_TIMEOUT: Duration = Duration::from_secs(1);

/// Most queues a multiqueue TAP can have (`MAX_TAP_QUEUES` in `drivers/net/tun.c`).
pub const MAX_QUEUES: u16 = 256;

/// `TUN_FEATURES` in `drivers/net/tun.c`: the flags `TUNSETIFF` stores on the device.
const TUN_FEATURES: libc::c_int = libc::IFF_NO_PI
    | libc::IFF_ONE_QUEUE
    | libc::IFF_VNET_HDR
    | libc::IFF_MULTI_QUEUE
    | libc::IFF_NAPI
    | libc::IFF_NAPI_FRAGS
    | libc::IFF_NO_CARRIER;

/// What to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapSpec {
    /// The interface name: 1..=15 bytes, no `/`, `:`, `%`, whitespace or NUL, not `.`/`..`.
    pub name: String,
    /// The user allowed to attach to the TAP without CAP_NET_ADMIN (`TUNSETOWNER`).
    pub uid: Option<u32>,
    /// The group allowed to attach to the TAP without CAP_NET_ADMIN (`TUNSETGROUP`).
    pub gid: Option<u32>,
    /// Number of queues, 1..=256; more than one makes a multiqueue TAP (`IFF_MULTI_QUEUE`).
    pub queues: u16,
    /// Frames carry a `virtio_net_hdr` (`IFF_VNET_HDR`).
    pub vnet_hdr: bool,
}

impl TapSpec {
    /// A single-queue TAP without owner, group or vnet header.
    pub fn new(name: impl Into<String>) -> TapSpec {
        TapSpec {
            name: name.into(),
            uid: None,
            gid: None,
            queues: 1,
            vnet_hdr: false,
        }
    }

    /// The `TUNSETIFF` flags for this spec.
    fn flags(&self) -> libc::c_int {
        let mut flags = libc::IFF_TAP | libc::IFF_NO_PI;
        if self.queues > 1 {
            flags |= libc::IFF_MULTI_QUEUE;
        }
        if self.vnet_hdr {
            flags |= libc::IFF_VNET_HDR;
        }
        flags
    }
}

/// One step of creating or deleting a TAP, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TapOp {
    /// Looking for an existing device in `/sys/class/net`.
    CheckExisting,
    /// Reading `/sys/class/net/<name>/tun_flags`.
    ReadFlags,
    /// Opening `/dev/net/tun`.
    OpenTun,
    /// `TUNSETIFF`: creating the device or attaching a queue to it.
    SetIff,
    /// `TUNSETOWNER`.
    SetOwner,
    /// `TUNSETGROUP`.
    SetGroup,
    /// `TUNSETPERSIST 1`.
    SetPersist,
    /// `TUNSETPERSIST 0`.
    ClearPersist,
}

impl std::fmt::Display for TapOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TapOp::CheckExisting => "looking for an existing device",
            TapOp::ReadFlags => "reading tun_flags",
            TapOp::OpenTun => "opening /dev/net/tun",
            TapOp::SetIff => "TUNSETIFF",
            TapOp::SetOwner => "TUNSETOWNER",
            TapOp::SetGroup => "TUNSETGROUP",
            TapOp::SetPersist => "TUNSETPERSIST 1",
            TapOp::ClearPersist => "TUNSETPERSIST 0",
        })
    }
}

/// Why a TAP could not be created or deleted.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// The name is not a valid interface name; nothing was touched.
    #[error("invalid TAP name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    /// The queue count is outside 1..=256; nothing was touched.
    #[error("TAP {name}: {queues} queues requested, but a TAP has 1 to {MAX_QUEUES}")]
    InvalidQueues { name: String, queues: u16 },
    /// A network device with this name already exists; it was left alone.
    #[error("cannot create TAP {name}: a network device with that name already exists")]
    Exists { name: String },
    /// The device exists but is not a TAP (no `tun_flags`, or a TUN); it was left alone.
    #[error("{name} is not a TAP device, so it is not deleted as one")]
    NotTap { name: String },
    /// `/dev/net/tun` is missing (no tun driver, or no device node in this mount ns).
    #[error("TAP {name}: {path} is missing — load the tun driver (modprobe tun)", path = TUN_PATH)]
    TunUnavailable {
        name: String,
        #[source]
        source: io::Error,
    },
    /// The kernel said EPERM/EACCES.
    #[error("TAP {name}: {op} was refused — it needs CAP_NET_ADMIN (run as root)")]
    PermissionDenied {
        name: String,
        op: TapOp,
        #[source]
        source: io::Error,
    },
    /// The kernel said EBUSY: another process holds the (single-queue) TAP.
    #[error("TAP {name}: {op} failed because the device is busy (another process has it open)")]
    Busy {
        name: String,
        op: TapOp,
        #[source]
        source: io::Error,
    },
    /// The TAP is no longer persistent, but another process still has queues attached;
    /// the kernel removes it when the last of them is closed.
    #[error(
        "TAP {name} is no longer persistent, but another process still has it open; \
         it disappears when that process closes it"
    )]
    StillAttached { name: String },
    /// Any other failure.
    #[error("TAP {name}: {op} failed")]
    Io {
        name: String,
        op: TapOp,
        #[source]
        source: io::Error,
    },
}

impl TapError {
    /// Classifies a failed step by its errno (never by message text).
    fn from_io(name: &str, op: TapOp, source: io::Error) -> TapError {
        let name = name.to_owned();
        match source.raw_os_error() {
            Some(libc::EPERM | libc::EACCES) => TapError::PermissionDenied { name, op, source },
            Some(libc::EBUSY) => TapError::Busy { name, op, source },
            Some(libc::ENOENT | libc::ENODEV | libc::ENXIO) if op == TapOp::OpenTun => {
                TapError::TunUnavailable { name, source }
            }
            _ => TapError::Io { name, op, source },
        }
    }

    /// The interface name the error is about.
    pub fn name(&self) -> &str {
        match self {
            TapError::InvalidName { name, .. }
            | TapError::InvalidQueues { name, .. }
            | TapError::Exists { name }
            | TapError::NotTap { name }
            | TapError::TunUnavailable { name, .. }
            | TapError::PermissionDenied { name, .. }
            | TapError::Busy { name, .. }
            | TapError::StillAttached { name }
            | TapError::Io { name, .. } => name,
        }
    }

    /// The errno the kernel answered with, if a syscall failed.
    pub fn errno(&self) -> Option<i32> {
        match self {
            TapError::TunUnavailable { source, .. }
            | TapError::PermissionDenied { source, .. }
            | TapError::Busy { source, .. }
            | TapError::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// Checks an interface name the way the kernel's `dev_valid_name` does, plus `%` (which
/// the kernel would expand as a `%d` template into a different name).
pub fn validate_name(name: &str) -> Result<(), TapError> {
    crate::types::check_ifname(name).map_err(|reason| TapError::InvalidName {
        name: name.to_owned(),
        reason,
    })
}

fn sys_dir(name: &str) -> PathBuf {
    Path::new(SYS_CLASS_NET).join(name)
}

/// True if `/sys/class/net/<name>` exists (a device of any kind has that name).
fn device_exists(name: &str) -> Result<bool, TapError> {
    match fs::symlink_metadata(sys_dir(name)) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(TapError::from_io(name, TapOp::CheckExisting, e)),
    }
}

/// `/sys/class/net/<name>/tun_flags` (e.g. `0x1002`), or `None` if the device is not a
/// TUN/TAP or does not exist.
fn read_tun_flags(name: &str) -> Result<Option<libc::c_int>, TapError> {
    let text = match fs::read_to_string(sys_dir(name).join("tun_flags")) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(TapError::from_io(name, TapOp::ReadFlags, e)),
    };
    let hex = text.trim();
    let hex = hex.strip_prefix("0x").unwrap_or(hex);
    libc::c_int::from_str_radix(hex, 16)
        .map(Some)
        .map_err(|e| TapError::Io {
            name: name.to_owned(),
            op: TapOp::ReadFlags,
            source: io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unexpected tun_flags {:?}: {e}", text.trim()),
            ),
        })
}

/// Opens `/dev/net/tun` (O_RDWR | O_CLOEXEC): one fd is one queue once `TUNSETIFF` ran.
fn open_tun(name: &str) -> Result<OwnedFd, TapError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(TUN_PATH)
        .map(OwnedFd::from)
        .map_err(|e| TapError::from_io(name, TapOp::OpenTun, e))
}

/// `TUNSETIFF`: creates `name` with `flags`, or attaches this fd to the existing device.
/// Returns the name the kernel reports back.
fn tun_set_iff(fd: &OwnedFd, name: &str, flags: libc::c_int) -> io::Result<String> {
    // SAFETY: `ifreq` is a plain C struct (a name array and a union of integers,
    // sockaddrs and a pointer); all-zero bytes are a valid value of it.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    debug_assert!(name.len() <= MAX_NAME_LEN, "validated by the caller");
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    // ifr_flags is a C short; IFF_TUN_EXCL (0x8000) is its sign bit, which the kernel
    // tests through the same short, so the wrapping cast is what C does too.
    ifr.ifr_ifru.ifru_flags = flags as libc::c_short;
    // SAFETY: `fd` is an open /dev/net/tun fd; TUNSETIFF reads and writes one `ifreq`
    // through the pointer, which points to a live, initialised, exclusively borrowed
    // `ifreq` whose name is NUL-terminated (at most 15 bytes copied into 16 zeroed ones).
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &raw mut ifr) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let got: Vec<u8> = ifr
        .ifr_name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    Ok(String::from_utf8_lossy(&got).into_owned())
}

/// An integer-argument tun ioctl (`TUNSETPERSIST`, `TUNSETOWNER`, `TUNSETGROUP`).
fn tun_ioctl_int(fd: &OwnedFd, request: libc::Ioctl, arg: libc::c_ulong) -> io::Result<()> {
    // SAFETY: `fd` is an open /dev/net/tun fd and these requests take their argument by
    // value as an unsigned long; no memory is passed to the kernel.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), request, arg) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Creates a persistent TAP device as `spec` says, leaving no fd open.
///
/// Fails with [`TapError::Exists`] if any network device already has the name (an
/// existing TAP is never adopted). On any failure nothing is left behind: every step
/// that can fail runs before `TUNSETPERSIST 1`, so until then the device only lives as
/// long as our fds, and closing them removes it (the error path waits, up to a second,
/// until it is gone). Blocking: call it from `spawn_blocking` in async code.
///
/// The name checks go through `/sys/class/net`, which shows the network namespace sysfs
/// was mounted in: call it (and [`delete_tap`]) from a thread in that namespace, as the
/// daemon's are.
pub fn create_tap(spec: &TapSpec) -> Result<(), TapError> {
    let name = spec.name.as_str();
    validate_name(name)?;
    if spec.queues == 0 || spec.queues > MAX_QUEUES {
        return Err(TapError::InvalidQueues {
            name: name.to_owned(),
            queues: spec.queues,
        });
    }
    if device_exists(name)? {
        return Err(TapError::Exists {
            name: name.to_owned(),
        });
    }
    let flags = spec.flags();

    // Open every queue first, so a missing /dev/net/tun or an fd limit fails before
    // the device exists.
    let fds = (0..spec.queues)
        .map(|_| open_tun(name))
        .collect::<Result<Vec<_>, _>>()?;

    // The first TUNSETIFF creates the device. IFF_TUN_EXCL makes it fail with EBUSY
    // instead of attaching if the name was taken since the sysfs check (the kernel does
    // not store that flag on the device).
    match tun_set_iff(&fds[0], name, flags | libc::IFF_TUN_EXCL) {
        Ok(got) if got == name => {}
        Ok(got) => {
            // Cannot happen for a validated name; dropping `fds` removes `got`.
            return Err(TapError::Io {
                name: name.to_owned(),
                op: TapOp::SetIff,
                source: io::Error::other(format!("the kernel named the device {got:?}")),
            });
        }
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
            return Err(TapError::Exists {
                name: name.to_owned(),
            });
        }
        Err(e) => return Err(TapError::from_io(name, TapOp::SetIff, e)),
    }

    // From here the device exists but is not persistent: on any error, closing every
    // queue makes the kernel unregister it.
    let result = configure(&fds, spec, flags);
    // The carrier goes off when the last queue detaches; count on that to know when
    // our queues are really gone (read while they are still attached).
    let down_before = carrier_down_count(name);
    // On success the device is persistent, and closing the queues leaves it in place.
    drop(fds);
    match &result {
        // Wait (bounded) until none of our queues is attached any more, so that a VMM
        // attaching right after we return does not get EBUSY from a single-queue TAP
        // (or extra queues on a multiqueue one). See `wait_gone` for why it may take a
        // moment. Without carrier_down_count (Linux < 4.16) there is nothing to wait on.
        Ok(()) => {
            if let Some(before) = down_before {
                wait_for(|| carrier_down_count(name).is_none_or(|now| now > before));
            }
        }
        // Whatever happens, the device goes away; wait (bounded) so that the caller can
        // reuse the name right away.
        // (A failure to look is ignored: the original error is the one to report.)
        Err(_) => {
            let _ = wait_gone(name);
        }
    }
    result
}

/// The steps after the first `TUNSETIFF`, in an order where every fallible one comes
/// before `TUNSETPERSIST 1`: attach the other queues, set owner and group, persist.
fn configure(fds: &[OwnedFd], spec: &TapSpec, flags: libc::c_int) -> Result<(), TapError> {
    let name = spec.name.as_str();
    for fd in &fds[1..] {
        tun_set_iff(fd, name, flags).map_err(|e| TapError::from_io(name, TapOp::SetIff, e))?;
    }
    let first = &fds[0];
    if let Some(uid) = spec.uid {
        tun_ioctl_int(first, libc::TUNSETOWNER, uid.into())
            .map_err(|e| TapError::from_io(name, TapOp::SetOwner, e))?;
    }
    if let Some(gid) = spec.gid {
        tun_ioctl_int(first, libc::TUNSETGROUP, gid.into())
            .map_err(|e| TapError::from_io(name, TapOp::SetGroup, e))?;
    }
    tun_ioctl_int(first, libc::TUNSETPERSIST, 1)
        .map_err(|e| TapError::from_io(name, TapOp::SetPersist, e))
}

/// Waits until `/sys/class/net/<name>` is gone, for at most [`GONE_TIMEOUT`]; true if
/// it went.
///
/// Closing our last fd of a non-persistent TAP normally unregisters it before `close`
/// returns. But if another thread of this process is forking (e.g. spawning a
/// `Command`) at that moment, the child holds a copy of the fd table until its `exec`
/// closes the O_CLOEXEC fds, so the final close, and the device's removal, happen a
/// little later, in the child.
fn wait_gone(name: &str) -> Result<bool, TapError> {
    let mut failed = None;
    let gone = wait_for(|| match device_exists(name) {
        Ok(exists) => !exists,
        Err(e) => {
            failed = Some(e);
            true
        }
    });
    match failed {
        Some(e) => Err(e),
        None => Ok(gone),
    }
}

/// Polls `done` with a growing pause for at most [`GONE_TIMEOUT`]; true if it became true.
fn wait_for(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + GONE_TIMEOUT;
    let mut pause = Duration::from_micros(100);
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// `/sys/class/net/<name>/carrier_down_count`: how often the carrier went off. A TAP's
/// carrier goes off when its last queue detaches. `None` if unreadable.
fn carrier_down_count(name: &str) -> Option<u64> {
    fs::read_to_string(sys_dir(name).join("carrier_down_count"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Deletes the TAP `name` by attaching to it and clearing `TUNSETPERSIST`; the kernel
/// removes it when our fd closes. A device that does not exist is `Ok(())`.
///
/// Fails with [`TapError::NotTap`] (and leaves the device alone) if `name` is not a TAP,
/// with [`TapError::Busy`] if another process has a single-queue TAP open, and with
/// [`TapError::StillAttached`] if another process still has queues of a multiqueue TAP
/// open (the TAP is then no longer persistent and goes away when they are closed).
///
/// Blocking: it may wait up to a second for the kernel to finish removing the device
/// (see `wait_gone`); call it from `spawn_blocking` in async code.
pub fn delete_tap(name: &str) -> Result<(), TapError> {
    validate_name(name)?;
    let Some(tun_flags) = read_tun_flags(name)? else {
        return if device_exists(name)? {
            Err(TapError::NotTap {
                name: name.to_owned(),
            })
        } else {
            Ok(())
        };
    };
    if tun_flags & libc::IFF_TAP == 0 {
        return Err(TapError::NotTap {
            name: name.to_owned(),
        });
    }
    // Attach with the device's own flags: the multiqueue bit must match the device's
    // (else EINVAL), and the rest are stored back unchanged.
    let flags = libc::IFF_TAP | (tun_flags & TUN_FEATURES);
    let fd = open_tun(name)?;
    match tun_set_iff(&fd, name, flags) {
        Ok(_) => {}
        // Removed between the sysfs read and the attach: already gone is fine. (A
        // non-TAP device that took the name in between gives EINVAL, reported below.)
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => return Ok(()),
        Err(e) => return Err(TapError::from_io(name, TapOp::SetIff, e)),
    }
    tun_ioctl_int(&fd, libc::TUNSETPERSIST, 0)
        .map_err(|e| TapError::from_io(name, TapOp::ClearPersist, e))?;
    // Closing the last queue of a non-persistent TAP unregisters it.
    drop(fd);
    if !wait_gone(name)? {
        return Err(TapError::StillAttached {
            name: name.to_owned(),
        });
    }
    Ok(())
}
#[cfg(test)]
mod tests;
