//! How full the datapath's tables are and what its programs cost, read from the kernel
//! when asked (`GET /metrics`, `netpath stats`): nothing is sampled in between.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use aya::{maps::MapType, programs::ProgramInfo};

use super::*;
use crate::model::{MapFill, ProgramCost};

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
    /// The fill of every pinned table of [`MAPS`] (arrays left out), in that order.
    /// The tables are counted side by side on a few threads: the kernel's batched walk
    /// costs ~0.4 µs per entry (a full NAT table, 100,000 connections, ~37 ms), and a
    /// connection has an entry in two of them.
    pub fn map_fill(&self) -> Result<Vec<MapFill>> {
        let next = std::sync::atomic::AtomicUsize::new(0);
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
        let mut found: Vec<(usize, MapFill)> = std::thread::scope(|s| {
            let walk = || -> Result<Vec<(usize, MapFill)>> {
                let mut mine = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(map) = MAPS.get(i) else {
                        return Ok(mine);
                    };
                    if let Some(fill) = self.fill_of(map)? {
                        mine.push((i, fill));
                    }
                }
            };
            let handles: Vec<_> = (0..workers).map(|_| s.spawn(walk)).collect();
            let mut all = Vec::new();
            for h in handles {
                // A worker's panic is this thread's.
                all.extend(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))?);
            }
            Ok::<_, DatapathError>(all)
        })?;
        found.sort_by_key(|(i, _)| *i);
        Ok(found.into_iter().map(|(_, fill)| fill).collect())
    }

    /// The fill of table `map`; `None` if it is not pinned or is an array.
    fn fill_of(&self, map: &'static str) -> Result<Option<MapFill>> {
        let Some(table) = batch::Table::open(&self.pins, map)? else {
            return Ok(None);
        };
        let info = &table.info;
        if !info.map_type().is_ok_and(holds_entries) {
            return Ok(None);
        }
        let (key, value, capacity) = (info.key_size(), info.value_size(), info.max_entries());
        // Per-CPU values are as many as the CPUs: those tables (a slot per endpoint) are
        // walked key by key.
        let per_cpu = matches!(
            info.map_type(),
            Ok(MapType::PerCpuHash | MapType::LruPerCpuHash)
        );
        let batched = match per_cpu {
            true => None,
            false => batch::walk(table.fd.as_fd(), key, value, capacity, |_, _| ())
                .map_err(|e| table.read_error("bpf_map_lookup_batch", e))?,
        };
        let entries = match batched {
            Some(n) => n,
            None => count_keys(table.fd.as_fd(), key, capacity)
                .map_err(|e| table.read_error("bpf_map_get_next_key", e))?,
        };
        Ok(Some(MapFill {
            map: map.into(),
            entries,
            capacity,
        }))
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
                program: p.name.into(),
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
