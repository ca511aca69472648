//! Reading a whole table at once with `BPF_MAP_LOOKUP_BATCH`: counting its entries
//! ([`Datapath::map_fill`]) and listing them ([`dump`], for `netpath flows`).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use aya::{
    Pod,
    maps::{MapFd, MapInfo},
};

use super::*;

/// A pinned table opened for reading: what the kernel says of it, and a descriptor.
pub(super) struct Table {
    pub name: &'static str,
    pub info: MapInfo,
    pub fd: MapFd,
}

impl Table {
    /// Opens pinned table `name`; `None` if it is not pinned (an older build's
    /// datapath, or a table of a family not in use).
    pub(super) fn open(pins: &Pins, name: &'static str) -> Result<Option<Table>> {
        let path = pins.map(name);
        if !path.exists() {
            return Ok(None);
        }
        let open = |source| DatapathError::OpenMap {
            path: path.clone(),
            source,
        };
        let info = MapInfo::from_pin(&path).map_err(open)?;
        let fd = info.fd().map_err(open)?;
        Ok(Some(Table { name, info, fd }))
    }

    /// A read of this table that failed in syscall command `call`.
    pub(super) fn read_error(&self, call: &'static str, io_error: std::io::Error) -> DatapathError {
        DatapathError::ReadMap {
            map: self.name,
            source: MapError::SyscallError(aya::sys::SyscallError { call, io_error }),
        }
    }
}

/// Every entry of pinned table `name` (keys `K`, values `V`, not per CPU), read in
/// batches; `None` if it is not pinned.
pub(super) fn dump<K: Pod, V: Pod>(pins: &Pins, name: &'static str) -> Result<Option<Vec<(K, V)>>> {
    let Some(table) = Table::open(pins, name)? else {
        return Ok(None);
    };
    let (key, value) = (table.info.key_size(), table.info.value_size());
    if key as usize != std::mem::size_of::<K>() || value as usize != std::mem::size_of::<V>() {
        return Err(DatapathError::Layout {
            detail: format!("{name} holds {key}-byte keys and {value}-byte values"),
        });
    }
    let mut out = Vec::new();
    let walked = walk(
        table.fd.as_fd(),
        key,
        value,
        table.info.max_entries(),
        |k, v| {
            // SAFETY: `K` and `V` are `Pod` (any bytes are a value) of exactly these sizes
            // (checked above); the reads are unaligned-safe.
            let entry = unsafe {
                (
                    std::ptr::read_unaligned(k.as_ptr().cast::<K>()),
                    std::ptr::read_unaligned(v.as_ptr().cast::<V>()),
                )
            };
            out.push(entry);
        },
    );
    let read = |e| table.read_error("bpf_map_lookup_batch", e);
    match walked.map_err(read)? {
        Some(_) => Ok(Some(out)),
        None => Err(read(std::io::Error::from_raw_os_error(libc::EINVAL))),
    }
}

/// The attribute of `BPF_MAP_LOOKUP_BATCH` (`union bpf_attr`'s batch member).
#[repr(C)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// `BPF_MAP_LOOKUP_BATCH`.
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// Entries read per batch call.
const BATCH: u32 = 4096;

/// Walks the entries of map `fd` (keys `key_size`, values `value_size` bytes, not per
/// CPU) with `BPF_MAP_LOOKUP_BATCH`, `BATCH` entries a call — a hash table of 100,000
/// entries in 25 calls where a key-by-key walk makes 200,000 — handing each key and
/// value to `each`; returns how many there were. `None` if the map type has no batch
/// lookup (an LPM trie), for the caller to walk it key by key. At most `capacity`
/// entries: a table that keeps changing cannot make the walk run away.
pub(super) fn walk(
    fd: BorrowedFd<'_>,
    key_size: u32,
    value_size: u32,
    capacity: u32,
    mut each: impl FnMut(&[u8], &[u8]),
) -> std::io::Result<Option<u64>> {
    let mut keys = vec![0u8; (key_size * BATCH) as usize];
    let mut values = vec![0u8; (value_size * BATCH) as usize];
    // The position of the walk, as the kernel hands it back (a bucket number for hash
    // tables: 4 bytes; room for 8).
    let (mut at, mut next) = ([0u8; 8], [0u8; 8]);
    let (mut n, mut first): (u64, bool) = (0, true);
    loop {
        let mut attr = BatchAttr {
            // None: from the start.
            in_batch: if first { 0 } else { at.as_ptr() as u64 },
            out_batch: next.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: BATCH,
            map_fd: fd.as_raw_fd() as u32,
            elem_flags: 0,
            flags: 0,
        };
        // SAFETY: `attr` is a valid `bpf_attr` prefix for this command, its size passed
        // along; the buffers hold `BATCH` keys and values and the positions 8 bytes, all
        // outliving the call, which writes them and `attr.count`.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &mut attr as *mut BatchAttr,
                std::mem::size_of::<BatchAttr>(),
            )
        };
        let got = u64::from(attr.count);
        let (k, v) = (key_size as usize, value_size as usize);
        for i in 0..(got as usize).min(BATCH as usize) {
            each(&keys[i * k..(i + 1) * k], &values[i * v..(i + 1) * v]);
        }
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                // The end: the last entries came with it.
                Some(libc::ENOENT) => Ok(Some(n + got)),
                // No batch lookup for this type (`ENOTSUPP` is the kernel's 524).
                Some(libc::EINVAL | libc::EOPNOTSUPP | 524) if first => Ok(None),
                _ => Err(e),
            };
        }
        n += got;
        at = next;
        first = false;
        // A table that keeps changing cannot make the count run away.
        if n >= u64::from(capacity) {
            return Ok(Some(u64::from(capacity)));
        }
    }
}
