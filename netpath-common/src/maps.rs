//! BPF map keys and values, and the names the maps are pinned under.
//!
//! Rules for every type here (the kernel/user ABI):
//! `#[repr(C)]`, fixed-width integers and byte arrays only, explicit `_pad` fields,
//! no `bool`/`Option`/`usize`, and a compile-time size assertion.

use crate::packet::PacketClass;

/// Name of the per-CPU statistics array (also its pin file name).
pub const STATS_MAP: &str = "NETPATH_STATS";

/// Where a program runs; selects a block of [`StatIndex`] slots in the stats map.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hook {
    /// XDP program (driver or generic mode).
    Xdp = 0,
    /// tc (tcx) ingress classifier.
    TcIngress = 1,
}

impl Hook {
    pub const ALL: [Hook; 2] = [Hook::Xdp, Hook::TcIngress];

    pub const fn name(self) -> &'static str {
        match self {
            Hook::Xdp => "xdp",
            Hook::TcIngress => "tc_ingress",
        }
    }
}

/// Number of slots in the stats map: one per (hook, packet class).
pub const STATS_ENTRIES: u32 = Hook::ALL.len() as u32 * PacketClass::COUNT;

/// Index into the stats map for a packet of `class` seen at `hook`.
#[inline(always)]
pub const fn stat_index(hook: Hook, class: PacketClass) -> u32 {
    hook as u32 * PacketClass::COUNT + class as u32
}

/// One per-CPU counter slot: packets and bytes (whole frame length).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}
const _: () = assert!(core::mem::size_of::<Counter>() == 16);

impl Counter {
    /// Sums per-CPU values (userspace reads one value per possible CPU).
    pub fn sum<'a>(values: impl IntoIterator<Item = &'a Counter>) -> Counter {
        values
            .into_iter()
            .fold(Counter::default(), |acc, c| Counter {
                packets: acc.packets.wrapping_add(c.packets),
                bytes: acc.bytes.wrapping_add(c.bytes),
            })
    }
}

// SAFETY: `Counter` is `repr(C)`, made of `u64`s only, has no padding and every bit
// pattern is a valid value, which is what `aya::Pod` requires.
#[cfg(feature = "user")]
unsafe impl aya::Pod for Counter {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_indices_are_dense_and_unique() {
        let mut seen = [false; STATS_ENTRIES as usize];
        for hook in Hook::ALL {
            for class in PacketClass::ALL {
                let i = stat_index(hook, class) as usize;
                assert!(!seen[i], "duplicate index {i}");
                seen[i] = true;
            }
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn counter_sum_adds_every_cpu() {
        let v = [
            Counter {
                packets: 1,
                bytes: 60,
            },
            Counter {
                packets: 2,
                bytes: 100,
            },
        ];
        assert_eq!(
            Counter::sum(&v),
            Counter {
                packets: 3,
                bytes: 160
            }
        );
    }
}
