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
