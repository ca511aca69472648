//! BPF_PROG_TEST_RUN: crafted frames through the loaded XDP and tc programs; verdicts,
//! output bytes and per-CPU counters are checked exactly.

use std::panic::{AssertUnwindSafe, catch_unwind};

use aya::programs::{TestRun, TestRunOptions};
use aya_obj::{Object, ProgramSection};
use netpath::{
    datapath::{Datapath, Origin},
    ebpf::{OBJECT, TC_INGRESS_PROG, XDP_PROG},
};
use netpath_common::{
    maps::{Counter, Hook},
    packet::PacketClass,
};
use netpath_tests::{TempPins, frames, require_root};

const XDP_PASS: u32 = 2;
/// TC_ACT_UNSPEC (-1) as the u32 the kernel reports.
const TC_ACT_UNSPEC: u32 = u32::MAX;

#[test]
fn object_has_an_xdp_and_a_tc_program() {
    let obj = Object::parse(OBJECT).expect("parse embedded eBPF object");
    let section = |name: &str| {
        &obj.programs
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing from the object"))
            .section
    };
    assert!(matches!(section(XDP_PROG), ProgramSection::Xdp { .. }));
    assert!(matches!(
        section(TC_INGRESS_PROG),
        ProgramSection::SchedClassifier
    ));
}

#[test]
fn both_programs_pass_the_verifier() {
    require_root!();
    let pins = TempPins::new();
    let dp = Datapath::open(&pins.path, false).expect("load datapath");
    assert_eq!(dp.origin(), Origin::Loaded);
    let xdp = dp.xdp().info().expect("xdp info");
    let tc = dp.tc_ingress().info().expect("tc info");
    assert_eq!(xdp.name_as_str(), Some(&XDP_PROG[..XDP_PROG.len().min(15)]));
    assert_eq!(
        tc.name_as_str(),
        Some(&TC_INGRESS_PROG[..TC_INGRESS_PROG.len().min(15)])
    );
}

/// Every counter slot of `hook`, in `PacketClass::ALL` order.
fn counters(dp: &Datapath, hook: Hook) -> Vec<Counter> {
    PacketClass::ALL
        .iter()
        .map(|c| dp.counter(hook, *c).expect("read counter"))
        .collect()
}

/// Runs `frame` through the program of `hook`; asserts the verdict, that the output
/// bytes equal the input, and that exactly the `expect` class counter moved, by one
/// packet and the frame's length.
fn check(dp: &Datapath, hook: Hook, frame: &[u8], expect: PacketClass) {
    let before = counters(dp, hook);
    // The kernel builds an skb for tc test runs and refuses (EINVAL) an IPv4 ethertype
    // without a full IPv4 header; such a frame cannot reach a tc program. It must then
    // leave the counters alone.
    if hook != Hook::Xdp && expect == PacketClass::MalformedIpv4 && frame.len() < 14 + 20 {
        let opts = TestRunOptions {
            data_in: Some(frame),
            ..TestRunOptions::default()
        };
        let err = dp
            .tc_ingress()
            .test_run(opts)
            .expect_err("kernel runs tc on a short IP header");
        eprintln!("  kernel refused it for tc, as expected: {err}");
        assert_eq!(counters(dp, hook), before);
        return;
    }
    let mut out = vec![0u8; frame.len() + 64];
    let opts = TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        ..TestRunOptions::default()
    };
    let (result, verdict) = match hook {
        Hook::Xdp => (dp.xdp().test_run(opts), XDP_PASS),
        tc => (dp.tc_prog(tc).test_run(opts), TC_ACT_UNSPEC),
    };
    let result = result.unwrap_or_else(|e| panic!("{hook:?} test_run: {e}"));
    assert_eq!(
        result.return_value, verdict,
        "{hook:?} verdict for {expect:?}"
    );
    assert_eq!(
        &out[..result.data_size_out as usize],
        frame,
        "{hook:?} changed the frame"
    );
    let after = counters(dp, hook);
    for (i, class) in PacketClass::ALL.iter().enumerate() {
        let (b, a) = (before[i], after[i]);
        let expected = if *class == expect {
            Counter {
                packets: b.packets + 1,
                bytes: b.bytes + frame.len() as u64,
            }
        } else {
            b
        };
        assert_eq!(
            a, expected,
            "{hook:?} counter {class:?} for a {expect:?} frame"
        );
    }
}

fn cases() -> Vec<(&'static str, Vec<u8>, PacketClass)> {
    let tcp = frames::tcp(b"hello");
    vec![
        ("ipv4/tcp", tcp.clone(), PacketClass::Ipv4Tcp),
        ("ipv4/udp", frames::udp(&[7; 32]), PacketClass::Ipv4Udp),
        (
            "ipv4/icmp",
            frames::icmp_echo(&[1; 56]),
            PacketClass::Ipv4Icmp,
        ),
        (
            "ipv4 options + udp",
            frames::ipv4(17, &[0x94, 0x04, 0, 0], &[0x9c, 0x40, 0, 53, 0, 8, 0, 0]),
            PacketClass::Ipv4Udp,
        ),
        (
            "ipv4 other (gre)",
            frames::ipv4(47, &[], &[0; 8]),
            PacketClass::Ipv4Other,
        ),
        (
            "truncated ip header",
            tcp[..14 + 12].to_vec(),
            PacketClass::MalformedIpv4,
        ),
        (
            "ip total length beyond frame",
            tcp[..tcp.len() - 3].to_vec(),
            PacketClass::MalformedIpv4,
        ),
        (
            "truncated tcp header",
            frames::ipv4(6, &[], &[0; 12]),
            PacketClass::TruncatedL4,
        ),
        ("arp", frames::arp_request(), PacketClass::Arp),
        ("ipv6/udp", frames::ipv6_udp(), PacketClass::Ipv6Udp),
    ]
}

#[test]
fn crafted_frames_get_the_right_verdict_bytes_and_counters() {
    require_root!();
    let pins = TempPins::new();
    let dp = Datapath::open(&pins.path, false).expect("load datapath");
    for hook in Hook::ALL {
        for (name, frame, class) in cases() {
            eprintln!("{hook:?}: {name}");
            check(&dp, hook, &frame, class);
        }
    }
}

/// The kernel refuses to run a program on less than an Ethernet header, so a truncated
/// Ethernet frame can never reach the programs; their counters stay untouched. (The
/// classification of such frames is covered by netpath-common's host tests.)
#[test]
fn truncated_ethernet_is_refused_before_the_program() {
    require_root!();
    let pins = TempPins::new();
    let dp = Datapath::open(&pins.path, false).expect("load datapath");
    let frame = [0u8; 10];
    for hook in Hook::ALL {
        let before = counters(&dp, hook);
        let opts = TestRunOptions {
            data_in: Some(&frame),
            ..TestRunOptions::default()
        };
        let r = match hook {
            Hook::Xdp => dp.xdp().test_run(opts),
            tc => dp.tc_prog(tc).test_run(opts),
        };
        match r {
            Err(e) => eprintln!("{hook:?}: kernel refused a 10-byte frame: {e}"),
            Ok(r) => {
                // If a kernel ever runs it, the frame must be classified as truncated.
                let after = counters(&dp, hook);
                let i = PacketClass::TruncatedEthernet as usize;
                assert_eq!(after[i].packets, before[i].packets + 1, "{r:?}");
                continue;
            }
        }
        assert_eq!(counters(&dp, hook), before);
    }
}

/// The checks above can fail: a wrong expected class is caught.
#[test]
fn a_wrong_expectation_fails() {
    require_root!();
    let pins = TempPins::new();
    let dp = Datapath::open(&pins.path, false).expect("load datapath");
    let r = catch_unwind(AssertUnwindSafe(|| {
        check(&dp, Hook::Xdp, &frames::udp(b"x"), PacketClass::Ipv4Tcp)
    }));
    assert!(r.is_err(), "a UDP frame counted as TCP must fail the check");
}
