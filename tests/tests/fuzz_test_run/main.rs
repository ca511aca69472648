//! Fuzzing the datapath through BPF_PROG_TEST_RUN (issue #5): a million random and
//! mutated frames through every loaded program — the XDP program, the endpoint tc
//! ingress (fast path), the uplink egress (reverse DNAT of published ports, masquerade
//! SNAT) and the uplink ingress (reverse SNAT, published-port DNAT) — with the maps set
//! up as the daemon would (endpoints, an uplink, masquerade subnets, published ports).
//!
//! Frames start as valid crafted frames (TCP SYN/ACK, UDP with and without checksum,
//! ICMP echo request/reply, ICMP errors quoting TCP/UDP, fragments (tracked through the
//! uplink's NAT in both families: [`frag`]), IP options,
//! VLAN tags, ARP, IPv6, garbage) addressed so that they hit the NAT tables (replies
//! to connections the fuzzer made earlier, connections to published ports, …), then
//! get bits flipped, bytes set, header fields changed, are truncated or extended, and
//! half of the mutated ones get their checksums recomputed so they reach the rewrites.
//!
//! Every frame is checked against a reference model of the datapath kept in this file
//! (its own parser, its own NAT state, its own RFC 1071 checksum): the verdict, the
//! output length, the output bytes outside the checksum fields, byte identity for
//! frames that must pass untouched, valid IPv4 and TCP/UDP/ICMP checksums on outputs of
//! inputs whose checksums were valid, UDP's zero checksum. At the end the kernel's NAT
//! maps must equal the model's and satisfy the invariants on their own: every SNAT
//! entry paired with its RNAT entry and back, NAT ports in the uplink's range, DNAT_CT
//! entries pointing at registered endpoints through a published port, counts in bounds.
//!
//! IPv6 (issue #15): the guard and fast path of endpoint ingress (`ipv6.rs`), and NAT66
//! and DNAT66 on the uplink (`nat6.rs`, frames from `gen6.rs`): 30% of the uplink
//! programs' frames (`SHARE6`) are IPv6 — connections from the dual-stack network's
//! masqueraded subnet, replies of those the fuzzer made, connections to IPv6 published
//! ports and their replies, ICMPv6 errors quoting translated packets — mutated as the
//! IPv4 ones are, checked byte for byte and by the sums their checksums cover (its own
//! 16-byte pseudo-header), the SNAT6/RNAT6/DNAT_CT6 maps against the model's like
//! IPv4's. Each IPv6 NAT path must be taken by valid frames (`Path6`, tallied).
//!
//! Hairpin (an endpoint reaching a port published on a host address, and the replies)
//! is modelled exactly too: the fuzz runs in a namespace of its own whose routes the
//! test sets (see `fuzz_namespace`), so which destinations are host addresses — what the
//! program asks the FIB — is known; the model never reads the kernel's maps into itself.
//!
//! The connection state is checked and emptied every 100,000 frames (an epoch, a few
//! seconds), so no connection idles long enough for its port to be reclaimed, which the
//! model, having no clock, does not predict.
//!
//! Seeded: `NETPATH_FUZZ_SEED` (decimal or 0x-hex) replays a run, `NETPATH_FUZZ_FRAMES`
//! changes the frame count. The first failure prints the seed, the frame's index and the
//! input, output and expected frames as hex.

mod check;
mod frag;
mod frames;
mod gen6;
mod ipv6;
mod maps;
mod model;
mod nat6;
mod netns;
mod packet;
mod tables;

use std::{
    collections::{HashMap, HashSet},
    fmt::Write as _,
    net::{Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

use aya::{
    maps::{HashMap as BpfHashMap, Map, MapData},
    programs::{TestRun, TestRunOptions},
};
use netpath::datapath::Datapath;
use netpath_common::{
    frag::{FRAG_REDIRECTED, FragKeyOf, FragValueOf},
    maps::{
        ENDPOINT_FLAG_IPV6, ENDPOINT_KIND_TAP, ENDPOINT_KIND_VETH, EndpointValue, FRAG_MAP,
        FRAG6_MAP, Hook,
    },
    nat::{
        Address, DNAT_CT_MAP, NAT_AGE_MAP, NAT_ENTRIES, NAT_FLAG_INBOUND, NAT_FLAG_SELF, NatAge,
        NatTarget, NatTargetOf, PORT_RETRIES, PortRange, PublishKey, PublishKeyOf, RNAT_MAP,
        SNAT_MAP, Tuple, TupleOf, Uplink, nat_port, tuple_hash,
    },
};
use netpath_tests::{NetNs, TempPins, require_root};
use rand::{Rng, SeedableRng, rngs::StdRng};

use self::{
    check::*, frag::*, frames::*, gen6::*, ipv6::*, maps::*, model::*, nat6::*, netns::*,
    packet::*, tables::*,
};

const DEFAULT_SEED: u64 = 0x6e70_6675_7a7a_0005;
const DEFAULT_FRAMES: u64 = 1_000_000;
/// The share of the uplink programs' frames that are IPv6 (NAT66, DNAT66).
const SHARE6: f64 = 0.3;

const TC_ACT_UNSPEC: u32 = u32::MAX;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;
const XDP_PASS: u32 = 2;

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;

const UPLINK_ADDR: [u8; 4] = [192, 0, 2, 2];
const NAT_FIRST: u16 = 40000;
const NAT_LAST: u16 = 40999;
const REMOTES: [[u8; 4]; 3] = [[192, 0, 2, 1], [198, 51, 100, 7], [203, 0, 113, 9]];
const FOREIGN: [u8; 4] = [172, 16, 0, 5];
/// Masqueraded subnets: (network, prefix length, network id).
const MASQ: [([u8; 4], u8, u16); 2] = [([10, 200, 0, 0], 16, 1), ([10, 201, 0, 0], 16, 2)];
const PORTS: [u16; 10] = [80, 443, 53, 8080, 9090, 5353, 22, 40000, 40500, 65535];

/// The IPv6 address of the fuzz's endpoint `i` (the dual-stack ones use it).
fn ip6_of(i: usize) -> [u8; 16] {
    let mut a = [0xfd, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    a[15] = 2 + i as u8;
    a
}

const SKB_IFINDEX: usize = 40;

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    let parsed = match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => v.parse(),
    };
    Some(parsed.unwrap_or_else(|e| panic!("{name}={v}: {e}")))
}

#[test]
fn fuzz_nat_and_fast_path_with_a_million_frames() {
    require_root!();
    let seed = env_u64("NETPATH_FUZZ_SEED").unwrap_or(DEFAULT_SEED);
    let frames = env_u64("NETPATH_FUZZ_FRAMES").unwrap_or(DEFAULT_FRAMES);
    println!("fuzz: seed {seed:#x} (NETPATH_FUZZ_SEED), {frames} frames (NETPATH_FUZZ_FRAMES)");
    let (ns, devs, local) = fuzz_namespace();
    println!("fuzz: host addresses and broadcasts in its namespace: {local:?}");
    ns.enter(|| fuzz(seed, frames, devs, local));
}

fn fuzz(seed: u64, frames: u64, devs: [Dev; 5], local: Vec<Route>) {
    let pins = TempPins::new();
    let mut dp = Datapath::open(&pins.path, false).expect("load datapath");
    let [uplink, other_dev, d0, d1, d2] = devs;
    let devs = [d0, d1, d2];
    let mut model = Model {
        uplink_ifindex: uplink.ifindex,
        local,
        ..Model::default()
    };
    let eps = [
        ([10, 200, 0, 2], 1, ENDPOINT_KIND_VETH),
        ([10, 200, 0, 3], 1, ENDPOINT_KIND_TAP),
        ([10, 201, 0, 5], 2, ENDPOINT_KIND_VETH),
    ];
    for (i, ((ip, net, kind), dev)) in eps.into_iter().zip(&devs).enumerate() {
        let e = EndpointValue {
            ip,
            ifindex: dev.ifindex,
            mac: [0x02, 0, 0, 0, 0, 0x10 + i as u8],
            host_mac: [0x02, 0xee, 0, 0, net as u8, i as u8],
            network_id: net,
            kind,
            // Network 1's endpoints are dual-stack: their IPv6 meets the guard and may
            // take the fast path between them; network 2's is dropped.
            flags: if net == 1 { ENDPOINT_FLAG_IPV6 } else { 0 },
        };
        let ip6 = (net == 1).then(|| ip6_of(i));
        dp.upsert_endpoint(e, ip6.map(Ipv6Addr::from))
            .expect("endpoint");
        model.endpoints.push((e, dev.ifindex));
        if let Some(ip6) = ip6 {
            model.endpoints6.push((ip6, e));
        }
    }
    dp.set_uplink(
        uplink.ifindex,
        Uplink {
            addr: UPLINK_ADDR,
            first_port: NAT_FIRST,
            last_port: NAT_LAST,
        },
    )
    .unwrap();
    for (net, len, id) in MASQ {
        dp.add_masq_subnet(ipnet::Ipv4Net::new(net.into(), len).unwrap(), id)
            .unwrap();
    }
    // The host's addresses as the daemon would list them (0.0.0.0 and :: publishes answer
    // there), and NAT66/DNAT66: the uplink's IPv6 address, IPv6 published ports.
    setup6(&mut dp, &mut model, uplink.ifindex);
    let (ep_a, ep_b, ep_c) = (eps[0].0, eps[1].0, eps[2].0);
    for (proto, host_ip, port, ep, ep_port) in [
        (TCP, [0; 4], 8080, ep_a, 80),
        (UDP, [0; 4], 8080, ep_b, 53),
        (TCP, UPLINK_ADDR, 9090, ep_a, 90),
        (UDP, UPLINK_ADDR, 5353, ep_c, 5353),
        (TCP, [127, 0, 0, 1], 9091, ep_b, 91),
    ] {
        let key = PublishKey {
            host_ip,
            port,
            proto,
            _pad: 0,
        };
        dp.publish(key, target(ep, ep_port)).unwrap();
        model.v4.publish.insert(key, target(ep, ep_port));
    }

    let mut g = Gen {
        rng: StdRng::seed_from_u64(seed),
    };
    let mut tally = Tally::default();
    let mut per_hook: HashMap<Hook, u64> = HashMap::new();
    let mut in_kernel = Duration::ZERO;
    let mut out = vec![0u8; 4096];
    let started = Instant::now();
    for n in 0..frames {
        if n > 0 && n % EPOCH == 0 {
            // Connections idle for 30 s may lose their NAT port (ICMP, unanswered UDP);
            // the model has no clock. Every epoch is far shorter than that, even on a
            // loaded machine: check the maps, then start the NAT state afresh.
            check_maps(&dp, &model);
            clear_nat_state(&dp, &mut model);
        }
        let hook = match g.rng.random_range(0..100) {
            0..15 => Hook::Xdp,
            15..40 => Hook::TcIngress,
            40..70 => Hook::UplinkEgress,
            _ => Hook::UplinkIngress,
        };
        // The device and a frame fit for it, so that it reaches the interesting paths.
        let (ifindex, mut frame) = match hook {
            Hook::UplinkEgress => {
                let ifindex = if g.chance(0.05) {
                    other_dev.ifindex
                } else {
                    uplink.ifindex
                };
                let f = if g.chance(SHARE6) {
                    g.egress6(&model)
                } else if !model.v4.dnat_keys.is_empty() && g.chance(0.25) {
                    // A reply of a connection to a published port.
                    let k = g.pick(&model.v4.dnat_keys);
                    let kind = if k.proto == TCP { 0 } else { 1 };
                    let l4 = if kind == 0 {
                        tcp_header(k.sport, k.dport, 0x12, &g.payload())
                    } else {
                        udp_header(k.sport, k.dport, &g.payload())
                    };
                    let spec = Ipv4Spec {
                        src: k.src,
                        dst: k.dst,
                        proto: k.proto,
                        frag: 0,
                        options: &[],
                    };
                    ipv4_frame([2, 0, 0, 0, 0, 0x10], &spec, &l4, g.chance(0.8))
                } else {
                    let src = if g.chance(0.9) {
                        g.masq_src(&model)
                    } else {
                        FOREIGN
                    };
                    let (sport, dst, dport) = (g.port(), g.pick(&REMOTES), g.port());
                    g.base([2, 0, 0, 0, 0, 0x10], src, sport, dst, dport, 8)
                };
                (ifindex, f)
            }
            Hook::UplinkIngress => {
                let f = if g.chance(SHARE6) {
                    g.ingress6(&model)
                } else if !model.v4.rnat_keys.is_empty() && g.chance(0.45) {
                    // A reply of a masqueraded connection.
                    let k = g.pick(&model.v4.rnat_keys);
                    g.base([2, 0, 0, 0, 0, 0x99], k.src, k.sport, k.dst, k.dport, 0)
                } else {
                    let src = if g.chance(0.7) {
                        g.pick(&REMOTES)
                    } else {
                        g.any_addr()
                    };
                    let dst = if g.chance(0.7) {
                        UPLINK_ADDR
                    } else {
                        g.any_addr()
                    };
                    let dport = g.pick(&[8080, 9090, 5353, 9091, 80, 40000, 40001]);
                    let sport = g.port();
                    g.base([2, 0, 0, 0, 0, 0x99], src, sport, dst, dport, 8)
                };
                (uplink.ifindex, f)
            }
            Hook::TcIngress => {
                let i = g.rng.random_range(0..4);
                let reply_of = (!model.v4.dnat_keys.is_empty() && g.chance(0.1))
                    .then(|| g.pick(&model.v4.dnat_keys))
                    .and_then(|k| Some((model.endpoint_by_ip(k.src)?.ifindex, k)));
                if let Some((ifindex, k)) = reply_of {
                    // An endpoint answering a connection to its published port (a
                    // hairpinned one, or from outside).
                    let e = model.endpoint_by_ifindex(ifindex).expect("endpoint");
                    let l4 = if k.proto == TCP {
                        tcp_header(k.sport, k.dport, 0x12, &g.payload())
                    } else {
                        udp_header(k.sport, k.dport, &g.payload())
                    };
                    let spec = Ipv4Spec {
                        src: k.src,
                        dst: k.dst,
                        proto: k.proto,
                        frag: 0,
                        options: &[],
                    };
                    (ifindex, ipv4_frame(e.mac, &spec, &l4, g.chance(0.8)))
                } else if i < 3 && g.chance(0.08) {
                    // An endpoint reaching a port published on a host address.
                    let (e, ifindex) = model.endpoints[i];
                    let dst = g.pick(&[UPLINK_ADDR, [127, 0, 0, 1]]);
                    let dport = g.pick(&[8080, 9090, 5353, 9091]);
                    let sport = g.port();
                    let proto = g.pick(&[TCP, UDP]);
                    let l4 = if proto == TCP {
                        tcp_header(sport, dport, 0x02, &g.payload())
                    } else {
                        udp_header(sport, dport, &g.payload())
                    };
                    let spec = Ipv4Spec {
                        src: e.ip,
                        dst,
                        proto,
                        frag: 0,
                        options: &[],
                    };
                    (ifindex, ipv4_frame(e.mac, &spec, &l4, g.chance(0.8)))
                } else if i == 3 {
                    let src = g.any_addr();
                    (
                        other_dev.ifindex,
                        g.base([2, 0, 0, 0, 0, 1], src, 1, ep_a, 2, 8),
                    )
                } else {
                    let (e, ifindex) = model.endpoints[i];
                    let mac = if g.chance(0.9) {
                        e.mac
                    } else {
                        [2, 0, 0, 0, 0, 0x66]
                    };
                    let src = if g.chance(0.9) {
                        e.ip
                    } else {
                        g.masq_src(&model)
                    };
                    let dst = match g.rng.random_range(0..4) {
                        0..2 => g.pick(&model.endpoints).0.ip,
                        2 => g.pick(&REMOTES),
                        _ => g.any_addr(),
                    };
                    let (sport, dport) = (g.port(), g.port());
                    let mut f = if g.chance(0.3) {
                        // IPv6: from its own addresses mostly, to the other endpoints'.
                        let own6 = model.ip6_of(&e).unwrap_or([0; 16]);
                        let src6 = match g.rng.random_range(0..10) {
                            0..5 => own6,
                            5..8 => link_local(e.mac),
                            8 => [0; 16],
                            _ => ip6_of(g.rng.random_range(0..3)),
                        };
                        let dst6 = match g.rng.random_range(0..4) {
                            0..2 => ip6_of(g.rng.random_range(0..3)),
                            2 => [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                            _ => [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9],
                        };
                        let other = ip6_of(g.rng.random_range(0..3));
                        g.base6(mac, src6, dst6, other)
                    } else {
                        g.base(mac, src, sport, dst, dport, 8)
                    };
                    // Half the frames to an endpoint are addressed to it on-link (as
                    // in bridge mode), the others to the gateway (routed).
                    let to = if be16(&f, 12) == 0x86dd {
                        (f.len() >= 54)
                            .then(|| model.endpoint_by_ip6(addr6(&f, 38)))
                            .flatten()
                    } else {
                        model.endpoint_by_ip(dst)
                    };
                    if let Some(to) = to
                        && g.chance(0.5)
                    {
                        f[..6].copy_from_slice(&to.mac);
                    }
                    (ifindex, f)
                }
            }
            Hook::Xdp => {
                let (src, dst) = (g.any_addr(), g.any_addr());
                let (sport, dport) = (g.port(), g.port());
                (0, g.base([2, 0, 0, 0, 0, 3], src, sport, dst, dport, 8))
            }
        };
        let uplink_hook = matches!(hook, Hook::UplinkEgress | Hook::UplinkIngress);
        if g.chance(0.6) {
            if uplink_hook && is_ipv6(&frame) {
                g.mutate6(&mut frame);
            } else {
                g.mutate(&mut frame);
            }
        }
        *per_hook.entry(hook).or_default() += 1;

        let mut ctx = [0u8; 48];
        ctx[SKB_IFINDEX..SKB_IFINDEX + 4].copy_from_slice(&ifindex.to_ne_bytes());
        let opts = TestRunOptions {
            data_in: Some(&frame),
            data_out: Some(&mut out),
            ctx_in: if hook == Hook::Xdp { None } else { Some(&ctx) },
            ..TestRunOptions::default()
        };
        let t0 = Instant::now();
        let r = match hook {
            Hook::Xdp => dp.xdp().test_run(opts),
            tc => dp.tc_prog(tc).test_run(opts),
        };
        in_kernel += t0.elapsed();
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                // The kernel refuses to build a packet from less than an Ethernet header,
                // and (for an skb) from an IPv4 ethertype without a full IPv4 header or
                // an IPv6 one without an IPv6 header. Nothing else may fail.
                let et = if frame.len() >= 14 {
                    be16(&frame, 12)
                } else {
                    0
                };
                let short = frame.len() < 14
                    || hook != Hook::Xdp
                        && (et == 0x0800 && frame.len() < 34 || et == 0x86dd && frame.len() < 54);
                if short {
                    tally.refused += 1;
                    continue;
                }
                fail(
                    seed,
                    n,
                    hook,
                    ifindex,
                    &frame,
                    &[],
                    None,
                    &format!("test_run failed: {e}"),
                );
            }
        };
        let output = &out[..r.data_size_out as usize];
        let (expected, fx) = match hook {
            Hook::Xdp => model.xdp(),
            Hook::TcIngress => model.tc_ingress(&frame, ifindex),
            Hook::UplinkEgress => model.uplink_egress_frags(&frame, ifindex),
            Hook::UplinkIngress => model.uplink_ingress_frags(&frame, ifindex),
        };
        if let Err(msg) = check(&frame, r.return_value, output, &expected) {
            let want = expected_frame(&frame, &expected);
            fail(seed, n, hook, ifindex, &frame, output, Some(&want), &msg);
        }
        if let Some(x6) = &expected.nat6 {
            let path = Path6::ALL.iter().position(|p| *p == x6.path).unwrap();
            tally.nat6[path] += 1;
            if fold_not(l4_sum6(&frame, &x6.ip)) == 0 {
                tally.nat6_valid[path] += 1;
            }
        }
        if hook == Hook::TcIngress && !expected.rewrites.is_empty() {
            tally.hairpinned += 1;
        }
        let dual = model
            .endpoint_by_ifindex(ifindex)
            .is_some_and(|e| e.flags & ENDPOINT_FLAG_IPV6 != 0);
        if hook == Hook::TcIngress && dual && frame.len() >= 14 && be16(&frame, 12) == 0x86dd {
            let slot = match r.return_value {
                TC_ACT_SHOT => 0,
                TC_ACT_REDIRECT => 1,
                _ => 2,
            };
            tally.ipv6[slot] += 1;
        }
        match r.return_value {
            TC_ACT_SHOT if hook != Hook::Xdp => tally.shot += 1,
            TC_ACT_REDIRECT if hook == Hook::TcIngress => tally.redirected += 1,
            _ if !expected.rewrites.is_empty() => {
                tally.rewritten += 1;
                if let Some(ip) = uplink_ip(&frame)
                    && ip_header_valid(&frame, &ip)
                    && l4_valid(&frame, &ip)
                {
                    tally.rewritten_valid += 1;
                }
            }
            _ => tally.untouched += 1,
        }
        model.apply(fx);
    }
    let elapsed = started.elapsed();
    println!(
        "fuzz: {frames} frames in {:.1?} ({:.1?} in BPF_PROG_TEST_RUN, {:.2} µs per run)",
        elapsed,
        in_kernel,
        in_kernel.as_secs_f64() * 1e6 / frames as f64
    );
    let mut hooks: Vec<_> = per_hook.into_iter().collect();
    hooks.sort_by_key(|(h, _)| *h as u32);
    for (h, c) in hooks {
        println!("  {:>15}: {c} frames", h.name());
    }
    println!(
        "  NAT-rewritten: {} ({} with valid input checksums, outputs verified), dropped: {}, \
         redirected: {}, passed untouched: {}, refused by the kernel (short): {}",
        tally.rewritten,
        tally.rewritten_valid,
        tally.shot,
        tally.redirected,
        tally.untouched,
        tally.refused
    );
    println!("  hairpinned: {}", tally.hairpinned);
    let [v6_shot, v6_redirected, v6_passed] = tally.ipv6;
    println!(
        "  IPv6 from dual-stack endpoints: dropped {v6_shot}, redirected {v6_redirected}, \
         passed {v6_passed}"
    );
    for (i, path) in Path6::ALL.iter().enumerate() {
        println!(
            "  IPv6 {}: {} ({} with a valid L4 checksum)",
            path.name(),
            tally.nat6[i],
            tally.nat6_valid[i]
        );
    }
    assert!(tally.hairpinned > 0, "no frame was hairpinned");
    assert!(
        tally.nat6_valid.iter().all(|n| *n > frames / 5000),
        "IPv6 NAT paths too rarely reached with valid frames: {:?}",
        tally.nat6_valid
    );
    assert!(
        tally.ipv6.iter().all(|n| *n > frames / 1000),
        "IPv6 verdicts too rarely reached: {:?}",
        tally.ipv6
    );
    assert!(
        tally.rewritten_valid > frames / 20,
        "too few valid frames reached a rewrite"
    );
    check_maps(&dp, &model);
}

#[expect(
    clippy::too_many_arguments,
    reason = "one call site; a struct of the same fields would only rename them"
)]
fn fail(
    seed: u64,
    n: u64,
    hook: Hook,
    ifindex: u32,
    input: &[u8],
    output: &[u8],
    expected: Option<&[u8]>,
    msg: &str,
) -> ! {
    eprintln!(
        "FUZZ FAILURE at frame {n} (seed {seed:#x}), {} on ifindex {ifindex}: {msg}",
        hook.name()
    );
    eprintln!("  input    ({:4} bytes): {}", input.len(), hex(input));
    eprintln!("  output   ({:4} bytes): {}", output.len(), hex(output));
    if let Some(x) = expected {
        eprintln!(
            "  expected ({:4} bytes): {} (checksum fields aside)",
            x.len(),
            hex(x)
        );
    }
    panic!("fuzz failure at frame {n} (seed {seed:#x}): {msg}");
}
