//! Everything the kernel and userspace halves of netpath must agree on.
//!
//! * [`maps`]: every BPF map key and value (`#[repr(C)]`, fixed width, explicit padding,
//!   size-asserted), and the pin names of the maps.
//! * [`packet`]: the pure packet logic (header parsing and classification), written once
//!   against the [`packet::Frame`] trait so the eBPF programs and host tests run the very
//!   same code.
//!
//! This crate is `no_std` so it links into the eBPF objects; the `user` feature adds the
//! `aya::Pod` impls userspace needs to read and write the maps.
#![no_std]

pub mod forward;
pub mod maps;
pub mod nat;
pub mod packet;
