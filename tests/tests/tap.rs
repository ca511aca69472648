//! TAP devices through /dev/net/tun ioctls (`netpath::tap`), checked against sysfs and
//! `ip -d link show` (root).
//!
//! Every TAP is named with `unique("tp")` and removed by a [`Tap`] guard on drop, also
//! when an assertion fails.

use std::{
    fs,
    os::fd::{AsRawFd, OwnedFd},
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use netpath::tap::{TapError, TapSpec, create_tap, delete_tap};
use netpath_tests::{NetNs, require_root, run, unique};

const IFF_TAP: u32 = 0x0002;
const IFF_MULTI_QUEUE: u32 = 0x0100;
const IFF_PERSIST: u32 = 0x0800;
const IFF_NO_PI: u32 = 0x1000;
const IFF_VNET_HDR: u32 = 0x4000;

/// Removes the device `name` on drop, whatever it is (TAP via `delete_tap`, anything
/// left over via `ip link del`).
struct Tap(String);

impl Tap {
    fn name(&self) -> &str {
        &self.0
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        if exists(&self.0) {
            let _ = delete_tap(&self.0);
        }
        if exists(&self.0) {
            let _ = Command::new("ip").args(["link", "del", &self.0]).output();
        }
    }
}

fn exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Polls `cond` for up to 5 s. A device whose last fd was closed may outlive the close
/// for a moment when another test thread is forking (the child shares the fd until its
/// exec), so "gone after close" is checked with this, not at once.
fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn attr(name: &str, attr: &str) -> String {
    let path = Path::new("/sys/class/net").join(name).join(attr);
    fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .trim()
        .to_owned()
}

fn tun_flags(name: &str) -> u32 {
    let text = attr(name, "tun_flags");
    u32::from_str_radix(text.trim_start_matches("0x"), 16).expect("tun_flags is hex")
}

/// The entries of /sys/class/net/NAME/queues starting with `prefix` ("tx-" or "rx-").
fn queues(name: &str, prefix: &str) -> Vec<String> {
    let mut q: Vec<String> = fs::read_dir(Path::new("/sys/class/net").join(name).join("queues"))
        .expect("queues dir")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.starts_with(prefix))
        .collect();
    q.sort();
    q
}

fn ip_details(name: &str) -> String {
    String::from_utf8_lossy(&run(&["ip", "-d", "link", "show", "dev", name]).stdout).into_owned()
}

/// Attaches one queue of the existing TAP `name` the way a VMM does (TUNSETIFF on a
/// fresh /dev/net/tun fd); the queue stays attached until the fd is dropped.
fn attach_queue(name: &str, flags: libc::c_int) -> OwnedFd {
    let fd: OwnedFd = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .expect("open /dev/net/tun")
        .into();
    // SAFETY: `ifreq` is a plain C struct; all-zero bytes are a valid value of it.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes().take(15)) {
        *dst = src as libc::c_char;
    }
    ifr.ifr_ifru.ifru_flags = flags as libc::c_short;
    // SAFETY: `fd` is an open /dev/net/tun fd and the pointer is to a live, exclusively
    // borrowed `ifreq` with a NUL-terminated name, which TUNSETIFF reads and writes.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &raw mut ifr) };
    assert!(
        rc == 0,
        "attaching a queue to {name}: {}",
        std::io::Error::last_os_error()
    );
    fd
}

#[test]
fn single_queue_tap_with_owner_and_group() {
    require_root!();
    let tap = Tap(unique("tp"));
    let spec = TapSpec {
        name: tap.name().to_owned(),
        uid: Some(1234),
        gid: Some(2345),
        queues: 1,
        vnet_hdr: false,
    };
    create_tap(&spec).expect("create_tap");

    assert_eq!(attr(tap.name(), "owner"), "1234");
    assert_eq!(attr(tap.name(), "group"), "2345");
    let flags = tun_flags(tap.name());
    assert_eq!(flags & IFF_TAP, IFF_TAP, "tun_flags {flags:#x}: IFF_TAP");
    assert_eq!(
        flags & IFF_NO_PI,
        IFF_NO_PI,
        "tun_flags {flags:#x}: IFF_NO_PI"
    );
    assert_eq!(
        flags & IFF_PERSIST,
        IFF_PERSIST,
        "tun_flags {flags:#x}: persist"
    );
    assert_eq!(
        flags & IFF_MULTI_QUEUE,
        0,
        "tun_flags {flags:#x}: single queue"
    );
    assert_eq!(flags & IFF_VNET_HDR, 0, "tun_flags {flags:#x}: no vnet hdr");
    let details = ip_details(tap.name());
    assert!(details.contains("tun type tap"), "{details}");
    assert!(details.contains("pi off"), "{details}");
    assert!(details.contains("persist on"), "{details}");
    assert!(details.contains("user 1234 group 2345"), "{details}");

    delete_tap(tap.name()).expect("delete_tap");
    assert!(
        !exists(tap.name()),
        "{} still exists after delete_tap",
        tap.name()
    );
    // Deleting what is already gone is fine.
    delete_tap(tap.name()).expect("delete_tap of an absent TAP");
}

#[test]
fn vnet_hdr_flag() {
    require_root!();
    let tap = Tap(unique("tp"));
    let spec = TapSpec {
        vnet_hdr: true,
        ..TapSpec::new(tap.name())
    };
    create_tap(&spec).expect("create_tap");
    let flags = tun_flags(tap.name());
    assert_eq!(flags & IFF_VNET_HDR, IFF_VNET_HDR, "tun_flags {flags:#x}");
    assert!(ip_details(tap.name()).contains("vnet_hdr on"));
    delete_tap(tap.name()).expect("delete_tap");
    assert!(!exists(tap.name()));
}

#[test]
fn multi_queue_tap() {
    require_root!();
    let tap = Tap(unique("tp"));
    let spec = TapSpec {
        queues: 4,
        ..TapSpec::new(tap.name())
    };
    create_tap(&spec).expect("create_tap");

    let flags = tun_flags(tap.name());
    assert_eq!(
        flags & IFF_MULTI_QUEUE,
        IFF_MULTI_QUEUE,
        "tun_flags {flags:#x}"
    );
    assert_eq!(flags & (IFF_TAP | IFF_NO_PI), IFF_TAP | IFF_NO_PI);
    assert!(ip_details(tap.name()).contains("multi_queue"));
    // While create_tap held its 4 fds the device had tx-0..tx-3; once they are closed the
    // kernel shrinks the real queue count as each detaches, but never below 1 (it cannot
    // set 0 real queues). So a persistent multiqueue TAP with nothing attached exposes
    // exactly tx-0 and rx-0, and queues reappear as a VMM attaches them.
    // (Polled: create_tap's fds may outlive its return for a moment in a child that
    // another test thread is forking.)
    eventually(
        "a persistent mq TAP with no fds to have 1 tx and 1 rx queue",
        || queues(tap.name(), "tx-") == ["tx-0"] && queues(tap.name(), "rx-") == ["rx-0"],
    );

    // Attaching queues the way a VMM does grows them again, up to what is attached.
    let mq = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_MULTI_QUEUE;
    let held: Vec<OwnedFd> = (0..4).map(|_| attach_queue(tap.name(), mq)).collect();
    assert_eq!(queues(tap.name(), "tx-"), ["tx-0", "tx-1", "tx-2", "tx-3"]);
    drop(held);
    eventually("the attached queues to detach", || {
        queues(tap.name(), "tx-") == ["tx-0"]
    });

    delete_tap(tap.name()).expect("delete_tap reads tun_flags and attaches multiqueue");
    assert!(!exists(tap.name()));
}

#[test]
fn existing_name_is_refused_and_left_alone() {
    require_root!();
    // An existing persistent TAP with an owner: TUNSETIFF would attach to it and
    // overwrite its flags; create_tap must refuse instead.
    let tap = Tap(unique("tp"));
    let first = TapSpec {
        uid: Some(1234),
        ..TapSpec::new(tap.name())
    };
    create_tap(&first).expect("create_tap");
    let before = (tun_flags(tap.name()), attr(tap.name(), "owner"));
    let ifindex = attr(tap.name(), "ifindex");
    let second = TapSpec {
        name: tap.name().to_owned(),
        uid: Some(4321),
        gid: Some(4321),
        queues: 1,
        vnet_hdr: true,
    };
    match create_tap(&second) {
        Err(TapError::Exists { name }) => assert_eq!(name, tap.name()),
        other => panic!("expected Exists, got {other:?}"),
    }
    assert_eq!((tun_flags(tap.name()), attr(tap.name(), "owner")), before);
    assert_eq!(attr(tap.name(), "group"), "-1");
    assert_eq!(attr(tap.name(), "ifindex"), ifindex);

    // A device of another kind with that name: also refused, and still there.
    // (A bridge: this kernel has no dummy driver.)
    let bridge = Tap(unique("tp"));
    run(&["ip", "link", "add", bridge.name(), "type", "bridge"]);
    match create_tap(&TapSpec::new(bridge.name())) {
        Err(TapError::Exists { name }) => assert_eq!(name, bridge.name()),
        other => panic!("expected Exists, got {other:?}"),
    }
    assert!(ip_details(bridge.name()).contains("bridge forward_delay"));
    assert!(
        !Path::new("/sys/class/net")
            .join(bridge.name())
            .join("tun_flags")
            .exists()
    );
    // And delete_tap does not delete a non-TAP.
    match delete_tap(bridge.name()) {
        Err(TapError::NotTap { name }) => assert_eq!(name, bridge.name()),
        other => panic!("expected NotTap, got {other:?}"),
    }
    assert!(exists(bridge.name()));
}

#[test]
fn existing_name_invisible_to_sysfs_is_refused_by_tun_excl() {
    require_root!();
    // /sys/class/net shows the network namespace sysfs was mounted in, not the calling
    // thread's. A thread that entered another namespace sees a device there only through
    // the kernel: TUNSETIFF with IFF_TUN_EXCL must refuse it (EBUSY → Exists) rather than
    // attach to it.
    let ns = NetNs::new("tpns");
    let name = unique("tp");
    ns.exec(&[
        "ip", "tuntap", "add", "dev", &name, "mode", "tap", "user", "1234",
    ]);
    assert!(
        !exists(&name),
        "{name} must not be visible in the host's sysfs"
    );
    let result = ns.enter(|| create_tap(&TapSpec::new(name.as_str())));
    match result {
        Err(TapError::Exists { name: n }) => assert_eq!(n, name),
        other => panic!("expected Exists, got {other:?}"),
    }
    let details =
        String::from_utf8_lossy(&ns.exec(&["ip", "-d", "link", "show", &name]).stdout).into_owned();
    assert!(details.contains("user 1234"), "{details}");
    assert!(!details.contains("vnet_hdr on"), "{details}");
    // The namespace (and the TAP in it) goes away with `ns`.
}

#[test]
fn invalid_names_fail_before_touching_the_system() {
    // No root needed: validation happens before any syscall.
    let base = unique("tp");
    let long = format!("{base}{}", "x".repeat(16 - base.len()));
    assert_eq!(long.len(), 16);
    let names = [
        String::new(),
        long.clone(),
        format!("{base}/a"),
        format!("{base} a"),
        format!("{base}\ta"),
        format!("{base}:1"),
        format!("{base}%d"),
        ".".to_owned(),
        "..".to_owned(),
    ];
    for name in &names {
        let spec = TapSpec {
            uid: Some(1234),
            ..TapSpec::new(name.as_str())
        };
        match create_tap(&spec) {
            Err(TapError::InvalidName { name: n, .. }) => assert_eq!(&n, name),
            other => panic!("create_tap({name:?}): expected InvalidName, got {other:?}"),
        }
        match delete_tap(name) {
            Err(TapError::InvalidName { name: n, .. }) => assert_eq!(&n, name),
            other => panic!("delete_tap({name:?}): expected InvalidName, got {other:?}"),
        }
    }
    // Nothing named after `base` appeared: not the 15-byte truncation of `long`, not a
    // `%d` expansion, not anything else.
    let leaked: Vec<String> = fs::read_dir("/sys/class/net")
        .expect("/sys/class/net")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.starts_with(&base))
        .collect();
    assert!(leaked.is_empty(), "devices appeared: {leaked:?}");
}

#[test]
fn failure_after_the_device_exists_leaves_nothing() {
    require_root!();
    // uid u32::MAX is INVALID_UID: TUNSETOWNER fails with EINVAL after TUNSETIFF has
    // created the device (and attached the queues); the device must be gone.
    for (queues, uid, gid) in [(1, Some(u32::MAX), None), (4, Some(1234), Some(u32::MAX))] {
        let tap = Tap(unique("tp"));
        let spec = TapSpec {
            queues,
            uid,
            gid,
            ..TapSpec::new(tap.name())
        };
        let err = create_tap(&spec).expect_err("an invalid uid/gid must fail");
        let op = if gid.is_some() {
            netpath::tap::TapOp::SetGroup
        } else {
            netpath::tap::TapOp::SetOwner
        };
        match &err {
            TapError::Io { name, op: o, .. } => {
                assert_eq!(name, tap.name());
                assert_eq!(*o, op);
            }
            other => panic!("expected Io, got {other:?}"),
        }
        assert_eq!(err.errno(), Some(libc::EINVAL), "{err}");
        assert!(!exists(tap.name()), "{} was left behind", tap.name());
    }
}

#[test]
fn delete_of_a_tap_in_use() {
    require_root!();
    // Single queue, held by another fd (a running VMM): TUNSETIFF gets EBUSY; the TAP
    // stays, still persistent.
    let tap = Tap(unique("tp"));
    create_tap(&TapSpec::new(tap.name())).expect("create_tap");
    let held = attach_queue(tap.name(), libc::IFF_TAP | libc::IFF_NO_PI);
    match delete_tap(tap.name()) {
        Err(e @ TapError::Busy { .. }) => assert_eq!(e.errno(), Some(libc::EBUSY)),
        other => panic!("expected Busy, got {other:?}"),
    }
    assert!(exists(tap.name()));
    assert_ne!(tun_flags(tap.name()) & IFF_PERSIST, 0);
    drop(held);
    assert!(
        exists(tap.name()),
        "still persistent after the holder closed"
    );
    // Retried while Busy: `held` may outlive its drop for a moment in a forked child.
    eventually(
        "delete_tap to succeed once the holder closed",
        || match delete_tap(tap.name()) {
            Ok(()) => true,
            Err(TapError::Busy { .. }) => false,
            Err(e) => panic!("delete_tap: {e}"),
        },
    );
    assert!(!exists(tap.name()));

    // Multiqueue, one queue held: delete_tap can attach another queue and clear persist,
    // but the device lives until the holder closes its queue.
    let mq = Tap(unique("tp"));
    create_tap(&TapSpec {
        queues: 2,
        ..TapSpec::new(mq.name())
    })
    .expect("create_tap");
    let held = attach_queue(
        mq.name(),
        libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_MULTI_QUEUE,
    );
    match delete_tap(mq.name()) {
        Err(TapError::StillAttached { name }) => assert_eq!(name, mq.name()),
        other => panic!("expected StillAttached, got {other:?}"),
    }
    assert!(exists(mq.name()));
    assert_eq!(tun_flags(mq.name()) & IFF_PERSIST, 0, "persist was cleared");
    drop(held);
    eventually("the TAP to go once the last queue closed", || {
        !exists(mq.name())
    });
}

#[test]
fn sixteen_taps_in_parallel() {
    require_root!();
    let taps: Vec<Tap> = (0..16).map(|_| Tap(unique("tp"))).collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = taps
            .iter()
            .enumerate()
            .map(|(i, tap)| {
                s.spawn(move || {
                    let spec = TapSpec {
                        name: tap.name().to_owned(),
                        uid: Some(10_000 + i as u32),
                        gid: Some(20_000 + i as u32),
                        queues: if i % 2 == 0 { 1 } else { 2 },
                        vnet_hdr: i % 3 == 0,
                    };
                    create_tap(&spec)
                })
            })
            .collect();
        for (h, tap) in handles.into_iter().zip(&taps) {
            h.join()
                .expect("creator thread panicked")
                .unwrap_or_else(|e| panic!("create_tap({}): {e}", tap.name()));
        }
    });
    for (i, tap) in taps.iter().enumerate() {
        assert!(exists(tap.name()), "{} missing", tap.name());
        assert_eq!(attr(tap.name(), "owner"), (10_000 + i).to_string());
        assert_eq!(attr(tap.name(), "group"), (20_000 + i).to_string());
        let flags = tun_flags(tap.name());
        assert_eq!(flags & IFF_TAP, IFF_TAP);
        assert_eq!(flags & IFF_MULTI_QUEUE != 0, i % 2 == 1, "{flags:#x}");
        assert_eq!(flags & IFF_VNET_HDR != 0, i % 3 == 0, "{flags:#x}");
    }
    std::thread::scope(|s| {
        for tap in &taps {
            s.spawn(move || delete_tap(tap.name()).unwrap_or_else(|e| panic!("delete_tap: {e}")));
        }
    });
    for tap in &taps {
        assert!(!exists(tap.name()), "{} still exists", tap.name());
    }
}

/// A VMM that opens its TAP and talks at once: ARP requests for the gateway, one per
/// millisecond, are answered within a bounded wait in bridge and routed mode (the kernel
/// processes the TAP's carrier-on asynchronously — link watch — so the very first frames
/// can fall in the ~ms before the bridge port forwards and the TAP's queue is active; a
/// guest that lost its first second of frames here was the report). Prints how
/// many requests went unanswered.
#[test]
fn a_guest_is_answered_right_after_its_vmm_opens_the_tap() {
    require_root!();
    let d = netpath_tests::Daemon::start();
    for (mode, subnet) in [("bridge", "10.225.0.0/24"), ("routed", "10.226.0.0/24")] {
        let net = unique("ta");
        d.ok(&[
            "network", "create", &net, "--subnet", subnet, "--mode", mode,
        ]);
        let name = unique("tq");
        let ep: serde_json::Value =
            serde_json::from_str(&d.ok(&["tap", "add", &net, "--name", &name, "--json"])).unwrap();
        let mac: netpath::types::MacAddr = ep["mac"].as_str().unwrap().parse().unwrap();
        let mac = mac.octets();
        let ip: std::net::Ipv4Addr = ep["ip"].as_str().unwrap().parse().unwrap();
        let gw: std::net::Ipv4Addr = ep["gateway"].as_str().unwrap().parse().unwrap();
        let fd = attach_queue(&name, (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR) as libc::c_int);
        let file = fs::File::from(fd);
        let (sent, waited) = arp_until_answered(&file, mac, ip, gw, Duration::from_secs(1));
        eprintln!(
            "{mode}: gateway answered after {sent} request(s), {:.2} ms after the open",
            waited.as_secs_f64() * 1e3
        );
        drop(file);
        d.ok(&["tap", "rm", ep["id"].as_str().unwrap()]);
    }
}

/// Writes ARP who-has `gw` from (`mac`, `ip`) into the TAP every millisecond until an ARP
/// reply comes back (panics after `within`); returns (requests sent, time waited).
fn arp_until_answered(
    tap: &fs::File,
    mac: [u8; 6],
    ip: std::net::Ipv4Addr,
    gw: std::net::Ipv4Addr,
    within: Duration,
) -> (usize, Duration) {
    use std::io::{Read, Write};
    // SAFETY: setting O_NONBLOCK on an fd we own.
    unsafe {
        let fl = libc::fcntl(tap.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(tap.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
    // virtio-net header (10 bytes, no offloads), then the frame.
    let mut frame = vec![0u8; 10];
    frame.extend_from_slice(&[0xff; 6]);
    frame.extend_from_slice(&mac);
    frame.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    frame.extend_from_slice(&mac);
    frame.extend_from_slice(&ip.octets());
    frame.extend_from_slice(&[0; 6]);
    frame.extend_from_slice(&gw.octets());
    frame.resize(10 + 60, 0);
    let start = Instant::now();
    let (mut tap_w, mut tap_r) = (tap, tap);
    let mut sent = 0;
    let mut buf = [0u8; 2048];
    while start.elapsed() < within {
        tap_w.write_all(&frame).expect("write to the TAP");
        sent += 1;
        let tick = Instant::now();
        while tick.elapsed() < Duration::from_millis(1) {
            match tap_r.read(&mut buf) {
                Ok(n) if n >= 10 + 42 => {
                    let f = &buf[10..n];
                    // An ARP reply from the gateway's address.
                    if f[12..14] == [0x08, 0x06] && f[20..22] == [0, 2] && f[28..32] == gw.octets()
                    {
                        return (sent, start.elapsed());
                    }
                }
                _ => std::thread::sleep(Duration::from_micros(50)),
            }
        }
    }
    panic!("no ARP reply from the gateway {gw} within {within:?} ({sent} requests)");
}
