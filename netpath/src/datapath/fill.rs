//! How full the datapath's tables are and what its programs cost, read from the kernel
//! when asked (`GET /metrics`, `netpath stats`): nothing is sampled in between.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use aya::{
    maps::{MapInfo, MapType},
    programs::ProgramInfo,
};

use super::*;

/// One table's fill: the entries it holds against the entries it can hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MapFill {
    pub map: &'static str,
    pub entries: u64,
    pub capacity: u32,
}

/// One program's cost as the kernel counts it: runs and time spent in them, both 0
/// while the kernel's BPF statistics are off (`sysctl kernel.bpf_stats_enabled`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ProgramCost {
    pub program: &'static str,
    pub run_count: u64,
    pub run_time_ns: u64,
}

/// Map types whose entries come and go (hash tables, LRUs, tries). An array always has
/// all its entries, so its fill says nothing.
fn holds_entries(t: MapType) -> bool {
    matches!(
        t,
        MapType::Hash
            | MapType::LruHash
            | MapType::PerCpuHash
            | MapType::LruPerCpuHash
            | MapType::LpmTrie
    )
}

impl Datapath {
    /// The fill of every pinned table of [`MAPS`] (arrays left out).
    pub fn map_fill(&self) -> Result<Vec<MapFill>> {
        let mut out = Vec::new();
        for map in MAPS {
            let path = self.pins.map(map);
            if !path.exists() {
                continue;
            }
            let open = |source| DatapathError::OpenMap {
                path: path.clone(),
                source,
            };
            let info = MapInfo::from_pin(&path).map_err(open)?;
            if !info.map_type().is_ok_and(holds_entries) {
                continue;
            }
            let fd = info.fd().map_err(open)?;
            let entries =
                count_keys(fd.as_fd(), info.key_size(), info.max_entries()).map_err(|source| {
                    DatapathError::ReadMap {
                        map,
                        source: MapError::SyscallError(aya::sys::SyscallError {
                            call: "bpf_map_get_next_key",
                            io_error: source,
                        }),
                    }
                })?;
            out.push(MapFill {
                map,
                entries,
                capacity: info.max_entries(),
            });
        }
        Ok(out)
    }

    /// Runs and run time of every pinned program.
    pub fn program_costs(&self) -> Result<Vec<ProgramCost>> {
        let mut out = Vec::new();
        for p in PROGRAMS {
            let pin = self.pins.prog(p.name);
            if !pin.exists() {
                // An older build's datapath runs without it.
                continue;
            }
            let info = ProgramInfo::from_pin(&pin).map_err(|source| DatapathError::Program {
                program: p.name,
                source,
            })?;
            out.push(ProgramCost {
                program: p.name,
                run_count: info.run_count(),
                run_time_ns: u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX),
            });
        }
        Ok(out)
    }
}

/// The attribute of `BPF_MAP_GET_NEXT_KEY` (`union bpf_attr`'s element-operation member:
/// the map's fd, then 8-byte-aligned pointers to the key and the next key).
#[repr(C)]
struct NextKeyAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    next_key: u64,
    flags: u64,
}

/// `BPF_MAP_GET_NEXT_KEY`.
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;

/// Counts the keys of map `fd`, whatever their type, by walking them with
/// `BPF_MAP_GET_NEXT_KEY` over raw key bytes: aya's key iterators need the key's Rust
/// type, and this counts every table through one path. On a map that changes meanwhile
/// the count is approximate: the kernel restarts a walk whose key was deleted under it
/// at the first key, so the walk stops at `capacity` keys whatever happens.
fn count_keys(fd: BorrowedFd<'_>, key_size: u32, capacity: u32) -> std::io::Result<u64> {
    let size = key_size as usize;
    let (mut key, mut next) = (vec![0u8; size], vec![0u8; size]);
    let mut n: u64 = 0;
    while n < u64::from(capacity) {
        let attr = NextKeyAttr {
            map_fd: fd.as_raw_fd() as u32,
            _pad: 0,
            // No key: the first one.
            key: if n == 0 { 0 } else { key.as_ptr() as u64 },
            next_key: next.as_mut_ptr() as u64,
            flags: 0,
        };
        // SAFETY: `attr` is a valid `bpf_attr` prefix for this command, its size passed
        // along; `key` and `next` are `key_size` bytes each and outlive the call, which
        // reads the one and writes the other.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_GET_NEXT_KEY,
                &attr as *const NextKeyAttr,
                std::mem::size_of::<NextKeyAttr>(),
            )
        };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENOENT) => Ok(n),
                _ => Err(e),
            };
        }
        n += 1;
        std::mem::swap(&mut key, &mut next);
    }
    Ok(n)
}
