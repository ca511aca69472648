//! Everything the kernel and userspace halves of netpath must agree on.
//!
//! * [`maps`]: every BPF map key and value (`#[repr(C)]`, fixed width, explicit padding,
//!   size-asserted), and the pin names of the maps.
//! * [`packet`]: the pure packet logic (header parsing and classification), written once
//!   against the [`packet::Frame`] trait so the eBPF programs and host tests run the very
//!   same code.
//! * [`frag`]: fragment tracking for the NAT (which fragments are first or later, the
//!   fragment maps' keys and values, what becomes of a later fragment).
//! * [`sockaddr`]: v4-mapped IPv6 addresses as the socket-address hooks see them.
//!
//! This crate is `no_std` so it links into the eBPF objects; the `user` feature adds the
//! `aya::Pod` impls userspace needs to read and write the maps.
#![no_std]

/// An enum whose variants are the slots of a counter array, numbered from 0 in the order
/// given, with `COUNT`, `ALL` (in slot order) and `name()` (the stable label `netpath
/// stats` and the API print) generated from the one list, so that they cannot drift apart
/// when a variant is added.
macro_rules! counter_slots {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $label:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            pub const COUNT: u32 = [$($label),+].len() as u32;
            pub const ALL: [$name; Self::COUNT as usize] = [$($name::$variant),+];

            /// Stable name used in `netpath stats` and the API.
            pub const fn name(self) -> &'static str {
                match self {
                    $( $name::$variant => $label, )+
                }
            }
        }
    };
}

/// A BPF map key or value, under the rules of the kernel/user ABI ([`maps`]): `#[repr(C)]`,
/// fields of fixed-width integers and byte arrays only ([`Plain`]), every padding byte an
/// explicit `_pad` field (the size must be the sum of the fields' sizes) and the size
/// stated, all checked at compile time. Plain data: `Clone, Copy, Debug, PartialEq, Eq`
/// (further derives may be given); with the `user` feature, also `aya::Pod`, which those
/// rules make sound.
macro_rules! map_type {
    (
        $(#[$meta:meta])*
        pub struct $name:ident: $size:literal bytes {
            $( $(#[$fmeta:meta])* pub $field:ident: $ty:ty ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )+
        }

        const _: () = {
            const fn plain<T: $crate::Plain>() {}
            $( plain::<$ty>(); )+
            assert!(core::mem::size_of::<$name>() == $size);
            assert!(
                core::mem::size_of::<$name>() == 0 $( + core::mem::size_of::<$ty>() )+,
                "implicit padding: make it an explicit `_pad` field"
            );
        };

        // SAFETY: `repr(C)`, made only of `Plain` fields (integers and byte arrays, of
        // which any bit pattern is a value) with no padding between or after them
        // (asserted above), so any bit pattern of the whole is a valid value: what
        // `aya::Pod` requires.
        #[cfg(feature = "user")]
        unsafe impl aya::Pod for $name {}
    };
}

/// [`map_type!`] for a type generic over an address family: `pub struct Name<A: Bound> for (
/// [u8; 4] => 16, [u8; 16] => 40) { … }` declares the generic struct once and checks each
/// listed instance as `map_type!` checks a plain one (fixed-width fields, no implicit
/// padding, the stated size), with `aya::Pod` for each under the `user` feature. The
/// field types name the parameter (`pub src: A`).
macro_rules! map_type_per_family {
    (
        $(#[$meta:meta])*
        pub struct $name:ident<$a:ident: $bound:path> for ($( $inst:ty => $size:literal ),+)
        $body:tt
    ) => {
        map_type_per_family!(@def [$(#[$meta])*] $name $a $bound $body);
        $( map_type_per_family!(@inst $name $a $inst, $size $body); )+
    };
    (@def [$(#[$meta:meta])*] $name:ident $a:ident $bound:path {
        $( $(#[$fmeta:meta])* pub $field:ident: $ty:ty ),+ $(,)?
    }) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub struct $name<$a: $bound> {
            $( $(#[$fmeta])* pub $field: $ty, )+
        }
    };
    (@inst $name:ident $a:ident $inst:ty, $size:literal {
        $( $(#[$fmeta:meta])* pub $field:ident: $ty:ty ),+ $(,)?
    }) => {
        const _: () = {
            // The field types name the parameter: here, this instance's address.
            type $a = $inst;
            const fn plain<T: $crate::Plain>() {}
            $( plain::<$ty>(); )+
            assert!(core::mem::size_of::<$name<$inst>>() == $size);
            assert!(
                core::mem::size_of::<$name<$inst>>() == 0 $( + core::mem::size_of::<$ty>() )+,
                "implicit padding: make it an explicit `_pad` field"
            );
        };

        // SAFETY: as for `map_type!`: `repr(C)`, `Plain` fields only, no padding
        // (asserted above for this very instance).
        #[cfg(feature = "user")]
        unsafe impl aya::Pod for $name<$inst> {}
    };
}

/// What a [`map_type!`] field may be: a type of which every bit pattern is a valid value
/// and which has no padding of its own.
///
/// # Safety
///
/// Implement only for such types.
unsafe trait Plain {}
// SAFETY: integers: any bit pattern is a value, no padding.
unsafe impl Plain for u8 {}
// SAFETY: as for `u8`.
unsafe impl Plain for u16 {}
// SAFETY: as for `u8`.
unsafe impl Plain for u32 {}
// SAFETY: as for `u8`.
unsafe impl Plain for u64 {}
// SAFETY: an array has no padding between its elements, and any bit pattern of each
// element is a value.
unsafe impl<T: Plain, const N: usize> Plain for [T; N] {}

pub mod events;
pub mod forward;
pub mod frag;
pub mod ipv6;
pub mod maps;
pub mod nat;
pub mod packet;
pub mod policy;
pub mod sockaddr;

#[cfg(test)]
mod tests {
    use crate::{
        maps::{DropReason, Forward},
        packet::PacketClass,
    };

    /// `ALL` lists every slot once, in slot order, and names are unique: what the
    /// programs index with and `netpath stats` reads back.
    #[test]
    fn counter_slots_are_numbered_in_order_with_unique_names() {
        fn check<T: Copy + Into<u32>>(all: &[T], name: impl Fn(T) -> &'static str) {
            for (i, v) in all.iter().enumerate() {
                assert_eq!((*v).into(), i as u32);
            }
            let mut names: [&str; 32] = [""; 32];
            for (i, v) in all.iter().enumerate() {
                names[i] = name(*v);
                assert!(!names[..i].contains(&names[i]), "{} twice", names[i]);
            }
        }
        check(&PacketClass::ALL.map(|c| c as u32), |i| {
            PacketClass::ALL[i as usize].name()
        });
        check(&DropReason::ALL.map(|r| r as u32), |i| {
            DropReason::ALL[i as usize].name()
        });
        check(&Forward::ALL.map(|f| f as u32), |i| {
            Forward::ALL[i as usize].name()
        });
        // The slot counts size pinned arrays: a change here is a layout change (bump
        // `maps::LAYOUT` and record it in `netpath::datapath::layout::CHANGES`).
        assert_eq!(
            (PacketClass::COUNT, DropReason::COUNT, Forward::COUNT),
            (16, 18, 3)
        );
        assert_eq!(crate::maps::LAYOUT, 8);
    }
}
