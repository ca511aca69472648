//! Host builds see an empty library: netpath's build script depends on this crate so that
//! cargo reruns it when the eBPF sources or `netpath-common` change. The programs are the
//! `netpath` binary target, built for `bpfel-unknown-none`.
#![no_std]
