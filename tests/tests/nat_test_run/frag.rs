//! Fragments through the uplink's NAT by BPF_PROG_TEST_RUN, both families: a first
//! fragment is translated as a whole packet would be (its checksum updated for the
//! whole datagram: every expected fragment is cut from the translated whole datagram)
//! and recorded under the datagram's identity; later fragments get the same addresses;
//! a later fragment whose first was not seen is dropped where the NAT translates
//! (`fragment_unseen` counted) and passes untouched elsewhere.

use netpath::datapath::Datapath;
use netpath_common::{
    frag::{FRAG_REDIRECTED, FragKeyOf, FragValueOf},
    maps::{DropReason, Hook},
    nat::{Tuple, Tuple6},
    packet::IPPROTO_UDP,
};
use netpath_tests::{TestDev, frames, require_root};

use super::{
    EP, REMOTE, TC_ACT_REDIRECT, TC_ACT_SHOT, TC_ACT_UNSPEC, UPLINK,
    ipv6::{EP6, REMOTE6, UPLINK6, setup6},
    nat_port,
    publish::{key, register_ep, target},
    run_tc,
};

/// A payload of `n` bytes that is no one's pattern but its own.
fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + 3) as u8).collect()
}

/// Cuts of a 8 + 200-byte UDP datagram into three fragments.
const CUTS: [usize; 2] = [64, 136];

fn unseen(dp: &Datapath) -> u64 {
    dp.drop_counter(DropReason::FragmentUnseen).unwrap().packets
}

/// Runs every frame of `frags` through `hook`, expecting "continue" and `want`.
fn expect_each(dp: &Datapath, up: &TestDev, hook: Hook, frags: &[Vec<u8>], want: &[Vec<u8>]) {
    assert_eq!(frags.len(), want.len());
    for (i, (f, w)) in frags.iter().zip(want).enumerate() {
        let (v, out) = run_tc(dp, hook, up.ifindex, f);
        assert_eq!(v, TC_ACT_UNSPEC, "fragment {i}");
        assert_eq!(&out, w, "fragment {i}");
    }
}

/// Sends `request` out of the uplink, which opens its flow.
fn open_flow(dp: &Datapath, up: &TestDev, request: &[u8]) {
    let (v, _) = run_tc(dp, Hook::UplinkEgress, up.ifindex, request);
    assert_eq!(v, TC_ACT_UNSPEC);
}

/// Sends `frags` out of the uplink: the first takes a NAT port (`port_of` reads it), and
/// every fragment leaves as `translated(port)` cuts the translated datagram. Then
/// `lost`, a later fragment of a datagram whose first was never seen, is dropped and
/// counted.
fn send_fragmented(
    dp: &Datapath,
    up: &TestDev,
    frags: &[Vec<u8>],
    port_of: impl Fn(&Datapath) -> u16,
    translated: impl Fn(u16) -> Vec<Vec<u8>>,
    lost: &[u8],
) {
    let (v, out) = run_tc(dp, Hook::UplinkEgress, up.ifindex, &frags[0]);
    assert_eq!(v, TC_ACT_UNSPEC);
    let want = translated(port_of(dp));
    assert_eq!(out, want[0], "first fragment");
    expect_each(dp, up, Hook::UplinkEgress, &frags[1..], &want[1..]);
    let (v, _) = run_tc(dp, Hook::UplinkEgress, up.ifindex, lost);
    assert_eq!(
        (v, unseen(dp)),
        (TC_ACT_SHOT, 1),
        "a later fragment, first unseen"
    );
}

#[test]
fn a_fragmented_reply_to_a_masqueraded_flow_is_translated_whole() {
    require_root!();
    let (_p, dp, up) = setup6(40000, 40999);
    open_flow(
        &dp,
        &up,
        &frames::udp4(EP, 53000, REMOTE, 53, b"query", false),
    );
    let port = nat_port(&dp, &Tuple::new(IPPROTO_UDP, EP, 53000, REMOTE, 53));
    let answer = payload(200);
    let sent = frames::udp4(REMOTE, 53, UPLINK, port, &answer, false);
    let want = frames::udp4(REMOTE, 53, EP, 53000, &answer, false);
    let (frags, want) = (
        frames::fragments4(&sent, 0x5f01, &CUTS),
        frames::fragments4(&want, 0x5f01, &CUTS),
    );
    expect_each(&dp, &up, Hook::UplinkIngress, &frags, &want);
    let key = FragKeyOf::new(REMOTE, UPLINK, 0x5f01, IPPROTO_UDP);
    assert_eq!(dp.frag_entry(&key), Some(FragValueOf::new(REMOTE, EP, 0)));

    // Another datagram's later fragment, its first never seen: dropped, counted.
    let lost = frames::fragments4(&sent, 0x5f02, &CUTS);
    let (v, _) = run_tc(&dp, Hook::UplinkIngress, up.ifindex, &lost[1]);
    assert_eq!(v, TC_ACT_SHOT);
    assert_eq!(unseen(&dp), 1);
    // Its first arriving late does not make up for it, but its next one then passes.
    expect_each(
        &dp,
        &up,
        Hook::UplinkIngress,
        &lost[..1],
        &want[..1]
            .iter()
            .map(|w| with_id4(w, 0x5f02))
            .collect::<Vec<_>>(),
    );
    expect_each(
        &dp,
        &up,
        Hook::UplinkIngress,
        &lost[2..],
        &[with_id4(&want[2], 0x5f02)],
    );
    assert_eq!(unseen(&dp), 1);

    // Not to the uplink's address: the NAT has nothing to do with it, untouched.
    let other = [198, 51, 100, 9];
    let elsewhere = frames::fragments4(
        &frames::udp4(REMOTE, 53, other, 9, &answer, false),
        7,
        &CUTS,
    );
    expect_each(
        &dp,
        &up,
        Hook::UplinkIngress,
        &elsewhere[1..],
        &elsewhere[1..],
    );
    assert_eq!(unseen(&dp), 1);
    // To the uplink's address but no masqueraded flow's (host traffic): its first is
    // recorded as it is, and its later fragments pass untouched.
    let host = frames::fragments4(
        &frames::udp4(REMOTE, 53, UPLINK, 9, &answer, false),
        8,
        &CUTS,
    );
    expect_each(&dp, &up, Hook::UplinkIngress, &host, &host);
    let key = FragKeyOf::new(REMOTE, UPLINK, 8, IPPROTO_UDP);
    assert_eq!(
        dp.frag_entry(&key),
        Some(FragValueOf::new(REMOTE, UPLINK, 0))
    );
    assert_eq!(unseen(&dp), 1);
}

/// `frame` (IPv4) with identification `id`, header checksum recomputed.
fn with_id4(frame: &[u8], id: u16) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[18..20].copy_from_slice(&id.to_be_bytes());
    frames::with_ttl(f, frame[22])
}

#[test]
fn a_fragmented_send_from_a_masqueraded_source_leaves_translated_whole() {
    require_root!();
    let (_p, dp, up) = setup6(40000, 40999);
    let data = payload(200);
    let sent = frames::udp4(EP, 53001, REMOTE, 9000, &data, false);
    let orig = Tuple::new(IPPROTO_UDP, EP, 53001, REMOTE, 9000);
    send_fragmented(
        &dp,
        &up,
        &frames::fragments4(&sent, 0x5f03, &CUTS),
        |dp| nat_port(dp, &orig),
        |port| {
            let whole = frames::udp4(UPLINK, port, REMOTE, 9000, &data, false);
            frames::fragments4(&whole, 0x5f03, &CUTS)
        },
        &frames::fragments4(&sent, 0x5f04, &CUTS)[2],
    );
    let key = FragKeyOf::new(EP, REMOTE, 0x5f03, IPPROTO_UDP);
    assert_eq!(
        dp.frag_entry(&key),
        Some(FragValueOf::new(UPLINK, REMOTE, 0))
    );
    // From another source than a masqueraded one, first unseen: untouched.
    let host = frames::fragments4(
        &frames::udp4(UPLINK, 9, REMOTE, 9000, &data, false),
        9,
        &CUTS,
    );
    expect_each(&dp, &up, Hook::UplinkEgress, &host[1..], &host[1..]);
    assert_eq!(unseen(&dp), 1);
}

#[test]
fn a_fragmented_reply_to_a_nat66_flow_is_translated_whole() {
    require_root!();
    let (_p, dp, up) = setup6(40000, 40999);
    open_flow(&dp, &up, &frames::udp6(EP6, 53000, REMOTE6, 53, b"query"));
    let orig = Tuple6::new(IPPROTO_UDP, EP6, 53000, REMOTE6, 53);
    let port = dp.snat6_entry(&orig).expect("SNAT6 entry").port;
    let answer = payload(200);
    let sent = frames::udp6(REMOTE6, 53, UPLINK6, port, &answer);
    let want = frames::udp6(REMOTE6, 53, EP6, 53000, &answer);
    let (frags, want) = (
        frames::fragments6(&sent, 0x5f00_0001, &CUTS),
        frames::fragments6(&want, 0x5f00_0001, &CUTS),
    );
    expect_each(&dp, &up, Hook::UplinkIngress, &frags, &want);
    let key = FragKeyOf::new(REMOTE6, UPLINK6, 0x5f00_0001, IPPROTO_UDP);
    assert_eq!(
        dp.frag6_entry(&key),
        Some(FragValueOf::new(REMOTE6, EP6, 0))
    );
    let lost = frames::fragments6(&sent, 0x5f00_0002, &CUTS);
    let (v, _) = run_tc(&dp, Hook::UplinkIngress, up.ifindex, &lost[2]);
    assert_eq!((v, unseen(&dp)), (TC_ACT_SHOT, 1));
    // Host traffic to the uplink's IPv6 address: recorded as it is, passed untouched.
    let host = frames::fragments6(&frames::udp6(REMOTE6, 53, UPLINK6, 9, &answer), 3, &CUTS);
    expect_each(&dp, &up, Hook::UplinkIngress, &host, &host);
    assert_eq!(unseen(&dp), 1);
}

#[test]
fn a_fragmented_nat66_send_leaves_translated_whole() {
    require_root!();
    let (_p, dp, up) = setup6(40000, 40999);
    let data = payload(200);
    let sent = frames::udp6(EP6, 53001, REMOTE6, 9000, &data);
    let orig = Tuple6::new(IPPROTO_UDP, EP6, 53001, REMOTE6, 9000);
    send_fragmented(
        &dp,
        &up,
        &frames::fragments6(&sent, 0x5f00_0003, &CUTS),
        |dp| dp.snat6_entry(&orig).expect("SNAT6 entry").port,
        |port| {
            let whole = frames::udp6(UPLINK6, port, REMOTE6, 9000, &data);
            frames::fragments6(&whole, 0x5f00_0003, &CUTS)
        },
        &frames::fragments6(&sent, 0x5f00_0004, &CUTS)[1],
    );
    let key = FragKeyOf::new(EP6, REMOTE6, 0x5f00_0003, IPPROTO_UDP);
    assert_eq!(
        dp.frag6_entry(&key),
        Some(FragValueOf::new(UPLINK6, REMOTE6, 0))
    );
}

/// A fragmented request to a published UDP port: its first fragment is DNATed and handed
/// straight to the endpoint, and so are its later fragments (destination rewritten,
/// routed: the endpoint's MAC, TTL one lower); the endpoint's fragmented answer leaves
/// the uplink with the published address and port as its source.
#[test]
fn fragments_to_and_from_a_published_port_are_translated_whole() {
    require_root!();
    let (_p, mut dp, up) = setup6(40000, 40999);
    let ep_dev = TestDev::new("nt");
    register_ep(&mut dp, ep_dev.ifindex);
    dp.set_local_addrs(&[UPLINK.into()]).unwrap();
    dp.publish(key(IPPROTO_UDP, [0; 4], 5300), target(EP, 53))
        .unwrap();
    let request = payload(200);
    let sent = frames::udp4(REMOTE, 50000, UPLINK, 5300, &request, false);
    let frags = frames::fragments4(&sent, 0x5f05, &CUTS);
    let dnat = frames::udp4(REMOTE, 50000, EP, 53, &request, false);
    let routed = |f: Vec<u8>| frames::routed(f, frames::SRC_MAC, [2, 0xee, 0, 0, 0, 1]);
    let want: Vec<_> = frames::fragments4(&dnat, 0x5f05, &CUTS)
        .into_iter()
        .map(routed)
        .collect();
    for (i, (f, w)) in frags.iter().zip(&want).enumerate() {
        let (v, out) = run_tc(&dp, Hook::UplinkIngress, up.ifindex, f);
        assert_eq!((v, &out), (TC_ACT_REDIRECT, w), "fragment {i}");
    }
    let key4 = FragKeyOf::new(REMOTE, UPLINK, 0x5f05, IPPROTO_UDP);
    assert_eq!(
        dp.frag_entry(&key4),
        Some(FragValueOf::new(REMOTE, EP, FRAG_REDIRECTED))
    );
    // The answer, fragmented by the endpoint, leaves from the published address.
    let answer = payload(200);
    let reply = frames::udp4(EP, 53, REMOTE, 50000, &answer, false);
    let published = frames::udp4(UPLINK, 5300, REMOTE, 50000, &answer, false);
    expect_each(
        &dp,
        &up,
        Hook::UplinkEgress,
        &frames::fragments4(&reply, 0x5f06, &CUTS),
        &frames::fragments4(&published, 0x5f06, &CUTS),
    );
    assert_eq!(unseen(&dp), 0);
}
