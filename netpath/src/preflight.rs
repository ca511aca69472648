//! Checks run before touching the kernel, so the common failures become one clear line
//! instead of an errno deep inside a syscall.

use std::{ffi::CString, path::Path};

use crate::error::UserError;

/// Capability numbers from `linux/capability.h`.
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// `BPF_FS_MAGIC` from `linux/magic.h`.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// The effective capability set of this process (from `/proc/self/status`).
fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// True if this process may load BPF programs and configure networking.
pub fn has_privileges() -> bool {
    let caps = effective_caps();
    let has = |c: u32| caps & (1u64 << c) != 0;
    has(CAP_NET_ADMIN) && (has(CAP_BPF) || has(CAP_SYS_ADMIN))
}

/// Fails unless the process has CAP_NET_ADMIN and CAP_BPF (or CAP_SYS_ADMIN).
pub fn require_privileges(what: &str) -> Result<(), UserError> {
    if has_privileges() {
        return Ok(());
    }
    Err(UserError::new(format!(
        "{what} needs root (CAP_NET_ADMIN and CAP_BPF), and this process lacks them"
    ))
    .hint("run it with sudo, or grant the capabilities: setcap cap_net_admin,cap_bpf,cap_sys_admin+ep netpath"))
}

/// Fails unless `dir` is (or would be created) inside a mounted bpffs.
pub fn require_bpffs(dir: &Path) -> Result<(), UserError> {
    // The pin directory may not exist yet; check the nearest existing ancestor.
    let existing = dir
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    if fs_magic(existing) == Some(BPF_FS_MAGIC) {
        return Ok(());
    }
    Err(UserError::new(format!(
        "{} is not on a bpffs mount, so netpath cannot pin its datapath there",
        dir.display()
    ))
    .hint("mount it: mount -t bpf bpf /sys/fs/bpf (or pass --bpffs DIR inside a bpffs)"))
}

fn fs_magic(path: &Path) -> Option<i64> {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `c` is a valid NUL-terminated path and `st` points to writable memory of
    // the right type; statfs only writes into it on success.
    let rc = unsafe { libc::statfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statfs returned 0, so it filled `st`.
    #[expect(
        clippy::unnecessary_cast,
        reason = "f_type's width differs between libcs"
    )]
    Some(unsafe { st.assume_init() }.f_type as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tmp_is_not_bpffs() {
        let err = require_bpffs(Path::new("/tmp/netpath-not-bpffs/x")).unwrap_err();
        assert!(err.to_string().contains("not on a bpffs mount"), "{err}");
    }
}
