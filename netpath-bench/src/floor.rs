//! The floor of any tc fast path between two containers: each veth host end carries the
//! smallest program that can do the job, four instructions —
//! `return bpf_redirect_peer(<the other host end>, 0)` — attached like netpath attaches
//! its endpoint program (cls_bpf under clsact, direct action). No parsing, no maps, no
//! checks: the two namespaces are joined by a wire made of two veths and two redirects.
//! What netpath costs beyond this is its own logic; what this costs beyond a direct veth
//! pair is the second veth hop and the tc redirect themselves.

use std::{
    any::Any,
    ffi::CString,
    fs,
    os::fd::{FromRawFd as _, OwnedFd},
    path::Path,
};

use anyhow::{Context as _, Result, bail};

use super::{
    Ctx,
    ctx::{host, host6},
    proc::{self, ip},
    topo::{Link, Ns, Pair, veth},
};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
/// Helper number of `bpf_redirect_peer` (`enum bpf_func_id`, uapi/linux/bpf.h).
const BPF_FUNC_REDIRECT_PEER: i32 = 155;

/// The head of `union bpf_attr` for `BPF_PROG_LOAD`; the kernel zero-fills the rest.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
}

/// `union bpf_attr` for `BPF_OBJ_PIN`.
#[repr(C)]
#[derive(Default)]
struct ObjPinAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

/// One eBPF instruction, encoded: opcode, dst/src registers, offset, immediate.
fn insn(code: u8, dst: u8, imm: i32) -> u64 {
    u64::from(code) | (u64::from(dst) << 8) | (u64::from(imm as u32) << 32)
}

/// Loads `r1 = target; r2 = 0; call bpf_redirect_peer; exit` as a tc program.
fn load_redirect_peer(target: u32) -> Result<OwnedFd> {
    let prog = [
        insn(0xb7, 1, target as i32),          // mov r1, target
        insn(0xb7, 2, 0),                      // mov r2, 0
        insn(0x85, 0, BPF_FUNC_REDIRECT_PEER), // call
        insn(0x95, 0, 0),                      // exit (r0: the helper's verdict)
    ];
    let license = c"GPL";
    let mut log = vec![0u8; 4096];
    let mut name = [0u8; 16];
    name[..11].copy_from_slice(b"bench_floor");
    let attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_SCHED_CLS,
        insn_cnt: prog.len() as u32,
        insns: prog.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        prog_name: name,
        ..Default::default()
    };
    // SAFETY: bpf(2) with a valid attr of the size passed; the pointers in it (program,
    // license, log buffer) outlive the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &attr as *const ProgLoadAttr,
            size_of::<ProgLoadAttr>(),
        )
    };
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        let log = String::from_utf8_lossy(&log);
        bail!(
            "cannot load the floor program: {err}: {}",
            log.trim_end_matches('\0')
        );
    }
    // SAFETY: a fresh descriptor the kernel just returned, owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn pin(fd: &OwnedFd, path: &Path) -> Result<()> {
    use std::os::fd::AsRawFd as _;
    let c = CString::new(path.as_os_str().as_encoded_bytes())?;
    let attr = ObjPinAttr {
        pathname: c.as_ptr() as u64,
        bpf_fd: fd.as_raw_fd() as u32,
        file_flags: 0,
    };
    // SAFETY: bpf(2) with a valid attr; `c` outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_PIN,
            &attr as *const ObjPinAttr,
            size_of::<ObjPinAttr>(),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot pin the floor program at {}", path.display()));
    }
    Ok(())
}

/// Attaches `fd` to `dev`'s tc ingress the way netpath attaches its endpoint program.
/// `tc` takes programs by pin: pinned under the bench's bpffs directory, unpinned as soon
/// as the filter holds it (deleting the device then removes the last reference).
fn attach(ctx: &Ctx, dev: &str, fd: &OwnedFd) -> Result<()> {
    fs::create_dir_all(&ctx.bpffs)
        .with_context(|| format!("cannot create {}", ctx.bpffs.display()))?;
    let path = ctx.bpffs.join(format!("floor-{dev}"));
    pin(fd, &path)?;
    let path_s = path.display().to_string();
    let r = (|| {
        proc::run_ok(
            std::process::Command::new("tc").args(["qdisc", "add", "dev", dev, "clsact"]),
            None,
            proc::CMD_TIMEOUT,
        )?;
        proc::run_ok(
            std::process::Command::new("tc").args([
                "filter",
                "add",
                "dev",
                dev,
                "ingress",
                "bpf",
                "da",
                "object-pinned",
                &path_s,
            ]),
            None,
            proc::CMD_TIMEOUT,
        )
    })();
    let _ = fs::remove_file(&path);
    r.map(drop)
}

/// Two namespaces joined by two veths whose host ends redirect into each other with the
/// floor program.
pub fn redirect_peer_wire(ctx: &mut Ctx) -> Result<Pair> {
    let (a, b) = (Ns::create(ctx, "a")?, Ns::create(ctx, "b")?);
    let (net, net6) = (ctx.subnets.in_netns_24(3), ctx.subnets.in_netns_64(3));
    let (a_ip, b_ip) = (host(net, 0), host(net, 1));
    let (a_ip6, b_ip6) = (host6(net6, 0), host6(net6, 1));
    let mut ends = Vec::new();
    for (ns, addr, addr6) in [(&a, a_ip, a_ip6), (&b, b_ip, b_ip6)] {
        let (h, c) = (ctx.name("h"), ctx.name("c"));
        veth(&h, None, &c, ns)?;
        let h = Link(h);
        ns.add_addr(&c, addr.into(), 24)?;
        // On-link: the redirect joins the two ends as one wire, neighbour discovery
        // included.
        ns.add_addr(&c, addr6.into(), 64)?;
        ns.ip(&["link", "set", &c, "up"])?;
        ip(&["link", "set", &h.0, "up"])?;
        ends.push(h);
    }
    let ifindex = |dev: &str| -> Result<u32> {
        let s = fs::read_to_string(format!("/sys/class/net/{dev}/ifindex"))
            .with_context(|| format!("no ifindex for {dev}"))?;
        Ok(s.trim().parse()?)
    };
    for (from, to) in [(&ends[0].0, &ends[1].0), (&ends[1].0, &ends[0].0)] {
        let prog = load_redirect_peer(ifindex(to)?)?;
        attach(ctx, from, &prog)?;
    }
    let prog_devs = ends.iter().map(|l| l.0.clone()).collect();
    let infra: Vec<Box<dyn Any>> = ends.into_iter().map(|l| Box::new(l) as _).collect();
    Ok(Pair::new(infra, a, b, a_ip, b_ip)
        .with_v6(Some(a_ip6), Some(b_ip6))
        .with_prog_devs(prog_devs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_are_encoded_as_the_kernel_reads_them() {
        // mov r1, 7: opcode 0xb7, dst 1 in the low nibble of byte 1, imm in the top half.
        assert_eq!(insn(0xb7, 1, 7).to_le_bytes(), [0xb7, 1, 0, 0, 7, 0, 0, 0]);
        assert_eq!(
            insn(0x85, 0, BPF_FUNC_REDIRECT_PEER).to_le_bytes(),
            [0x85, 0, 0, 0, 155, 0, 0, 0]
        );
        assert_eq!(insn(0xb7, 2, -1).to_le_bytes()[4..], [0xff; 4]);
    }
}
