//! Raw Ethernet frames in and out of a device, from the calling thread's namespace
//! (enter one with [`crate::NetNs::enter`] or [`crate::NetNs::spawn`]): what a test
//! sends when a forged frame is the point, and what it sees arrive.

use std::time::{Duration, Instant};

/// An `AF_PACKET` socket bound to `ifname` (every protocol), closed on drop.
struct PacketSocket {
    fd: i32,
    index: i32,
}

impl PacketSocket {
    fn open(ifname: &str) -> PacketSocket {
        let name = std::ffi::CString::new(ifname).unwrap();
        // SAFETY: plain syscalls with valid, correctly sized arguments; the fd is owned
        // by the returned value, which closes it.
        unsafe {
            let all = (libc::ETH_P_ALL as u16).to_be() as i32;
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, all);
            assert!(fd >= 0, "AF_PACKET socket");
            let index = libc::if_nametoindex(name.as_ptr()) as i32;
            assert!(index > 0, "no device {ifname}");
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_protocol = all as u16;
            addr.sll_ifindex = index;
            let r = libc::bind(
                fd,
                std::ptr::from_ref(&addr).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            );
            assert_eq!(r, 0, "bind AF_PACKET to {ifname}");
            PacketSocket { fd, index }
        }
    }
}

impl Drop for PacketSocket {
    fn drop(&mut self) {
        // SAFETY: the fd is ours and open.
        unsafe { libc::close(self.fd) };
    }
}

/// Sends one raw Ethernet frame out of `ifname`.
pub fn send_raw(ifname: &str, frame: &[u8]) {
    let s = PacketSocket::open(ifname);
    // SAFETY: `addr` is a valid `sockaddr_ll` of the size passed; `frame` is readable
    // for its length.
    unsafe {
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = s.index;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&frame[..6]);
        let n = libc::sendto(
            s.fd,
            frame.as_ptr().cast(),
            frame.len(),
            0,
            std::ptr::from_ref(&addr).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        );
        assert_eq!(n, frame.len() as isize, "sendto");
    }
}

/// A capture of what arrives on a device, started before the traffic it is to see.
pub struct Capture(PacketSocket);

impl Capture {
    pub fn start(ifname: &str) -> Capture {
        Capture(PacketSocket::open(ifname))
    }

    /// A capture on `ifname` inside `ns`, started before this returns; its frames
    /// ([`Capture::frames`] with `quiet`) when the handle is joined.
    pub fn start_in(
        ns: &crate::NetNs,
        ifname: &'static str,
        quiet: Duration,
    ) -> std::thread::JoinHandle<Vec<Vec<u8>>> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let handle = ns.spawn(move || {
            let c = Capture::start(ifname);
            ready_tx.send(()).unwrap();
            c.frames(quiet)
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("capture started");
        handle
    }

    /// The frames received until `quiet` passes without one (at most 10,000 frames or
    /// ten seconds).
    pub fn frames(self, quiet: Duration) -> Vec<Vec<u8>> {
        let fd = self.0.fd;
        let tv = libc::timeval {
            tv_sec: quiet.as_secs() as libc::time_t,
            tv_usec: quiet.subsec_micros() as libc::suseconds_t,
        };
        // SAFETY: setting a receive timeout with a valid timeval of the size passed.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                std::ptr::from_ref(&tv).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        assert_eq!(r, 0, "SO_RCVTIMEO");
        let (mut out, started) = (Vec::new(), Instant::now());
        let mut buf = vec![0u8; 65536];
        while out.len() < 10_000 && started.elapsed() < Duration::from_secs(10) {
            // SAFETY: `buf` is writable for its length.
            let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n <= 0 {
                break;
            }
            out.push(buf[..n as usize].to_vec());
        }
        out
    }
}

/// A capture of a device's IPv6 ICMPv6 and UDP frames, both ways, on a thread of its
/// own (inside a namespace, or in the caller's) from [`Ipv6Capture::start`] until
/// [`Ipv6Capture::stop`]: what a test watches while a guest runs for a minute and
/// streams megabytes over TCP past it. A socket filter keeps the rest (TCP, IPv4) out in
/// the kernel, so the ICMPv6 is not lost to a full receive buffer.
pub struct Ipv6Capture {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<Vec<Vec<u8>>>,
}

/// The classic BPF filter of [`Ipv6Capture`]: EtherType IPv6 and next header ICMPv6 or
/// UDP (no extension headers: neighbour discovery and the tests' datagrams carry none).
const IPV6_ICMP_UDP: [libc::sock_filter; 7] = [
    bpf(0x28, 0, 0, 12),     // ldh [12]          EtherType
    bpf(0x15, 0, 4, 0x86dd), // jeq IPv6, else drop
    bpf(0x30, 0, 0, 20),     // ldb [20]          next header
    bpf(0x15, 1, 0, 58),     // jeq ICMPv6 → keep
    bpf(0x15, 0, 1, 17),     // jeq UDP → keep, else drop
    bpf(0x06, 0, 0, 0xffff), // keep (up to 64 KiB)
    bpf(0x06, 0, 0, 0),      // drop
];

const fn bpf(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

impl Ipv6Capture {
    /// Starts capturing on `ifname` in `ns` (`None`: the caller's namespace); the
    /// capture is running when this returns.
    pub fn start(ns: Option<&crate::NetNs>, ifname: &str) -> Ipv6Capture {
        use std::sync::{Arc, atomic::AtomicBool};
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (flag, ifname) = (stop.clone(), ifname.to_owned());
        let run = move || {
            let s = PacketSocket::open(&ifname);
            filter_and_wait(s.fd);
            ready_tx.send(()).unwrap();
            capture_until(&s, &flag)
        };
        let handle = match ns {
            Some(ns) => ns.spawn(run),
            None => std::thread::spawn(run),
        };
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("capture started");
        Ipv6Capture { stop, handle }
    }

    /// Stops the capture; what it saw.
    pub fn stop(self) -> Vec<Vec<u8>> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle.join().expect("capture thread panicked")
    }
}

/// Attaches [`IPV6_ICMP_UDP`] to `fd`, with a 4 MiB receive buffer and reads that
/// return after 100 ms without a frame.
fn filter_and_wait(fd: i32) {
    let prog = libc::sock_fprog {
        len: IPV6_ICMP_UDP.len() as u16,
        filter: IPV6_ICMP_UDP.as_ptr().cast_mut(),
    };
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 100_000,
    };
    let buf: libc::c_int = 4 << 20;
    // SAFETY: setsockopt with valid pointers to values of the sizes passed; the filter
    // program is copied by the kernel during the call.
    unsafe {
        for (opt, ptr, len) in [
            (
                libc::SO_ATTACH_FILTER,
                std::ptr::from_ref(&prog).cast::<libc::c_void>(),
                std::mem::size_of::<libc::sock_fprog>(),
            ),
            (
                libc::SO_RCVTIMEO,
                std::ptr::from_ref(&tv).cast(),
                std::mem::size_of::<libc::timeval>(),
            ),
            (
                libc::SO_RCVBUFFORCE,
                std::ptr::from_ref(&buf).cast(),
                std::mem::size_of::<libc::c_int>(),
            ),
        ] {
            let r = libc::setsockopt(fd, libc::SOL_SOCKET, opt, ptr, len as u32);
            assert_eq!(
                r,
                0,
                "setsockopt {opt}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// Frames from `s` until `stop` is set and a read finds none (at most 10,000 frames or
/// five minutes).
fn capture_until(s: &PacketSocket, stop: &std::sync::atomic::AtomicBool) -> Vec<Vec<u8>> {
    let (mut out, started) = (Vec::new(), Instant::now());
    let mut buf = vec![0u8; 65536];
    while out.len() < 10_000 && started.elapsed() < Duration::from_secs(300) {
        // SAFETY: `buf` is writable for its length.
        let n = unsafe { libc::recv(s.fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n > 0 {
            out.push(buf[..n as usize].to_vec());
        } else if stop.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
    }
    out
}
