//! The checks of one frame's output against the model's expectation.

use super::*;

pub(super) fn hex(f: &[u8]) -> String {
    let mut s = String::with_capacity(f.len() * 2);
    for b in f {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The expected output frame (checksum fields aside) and the checksum fields' offsets.
pub(super) fn expected_frame(input: &[u8], e: &Expected) -> Vec<u8> {
    if let Some(x6) = &e.nat6 {
        return expected_frame6(input, e, x6);
    }
    let mut x = input.to_vec();
    if let Some((dst, src)) = e.macs {
        x[..6].copy_from_slice(&dst);
        x[6..12].copy_from_slice(&src);
    }
    for rw in &e.rewrites {
        x[rw.addr_at..rw.addr_at + 4].copy_from_slice(&rw.addr);
        x[rw.port_at..rw.port_at + 2].copy_from_slice(&rw.port.to_be_bytes());
    }
    for (at, a) in &e.addr_only {
        x[*at..*at + a.len()].copy_from_slice(a);
    }
    if e.ttl_dec {
        // The TTL, or an IPv6 later fragment's hop limit (`frag`).
        x[if is_ipv6(input) { 21 } else { 22 }] -= 1;
    }
    x
}

#[derive(Default)]
pub(super) struct Tally {
    pub(super) rewritten: u64,
    pub(super) rewritten_valid: u64,
    pub(super) shot: u64,
    pub(super) redirected: u64,
    pub(super) refused: u64,
    pub(super) untouched: u64,
    pub(super) hairpinned: u64,
    /// IPv6 frames from dual-stack endpoints at tc ingress: dropped, redirected, passed.
    pub(super) ipv6: [u64; 3],
    /// IPv6 frames translated at the uplink, per `Path6`, and how many of them had valid
    /// input checksums.
    pub(super) nat6: [u64; Path6::ALL.len()],
    pub(super) nat6_valid: [u64; Path6::ALL.len()],
}

/// Checks the kernel's output against the model's expectation; Err describes the first
/// violated property.
pub(super) fn check(input: &[u8], verdict: u32, out: &[u8], e: &Expected) -> Result<(), String> {
    if let Some(x6) = &e.nat6 {
        return check6(input, verdict, out, e, x6);
    }
    if !e.addr_only.is_empty() && verdict == e.verdict && verdict != TC_ACT_SHOT {
        return check_addr_only(input, out, e);
    }
    if let Some(back) = &e.icmp_error {
        return check_icmp_error(input, verdict, out, back);
    }
    if verdict != e.verdict {
        return Err(format!("verdict {verdict:#x}, expected {:#x}", e.verdict));
    }
    if out.len() != input.len() {
        return Err(format!("length {} → {}", input.len(), out.len()));
    }
    let want = expected_frame(input, e);
    if e.rewrites.is_empty() || verdict == TC_ACT_SHOT {
        // Dropped frames are not checked byte for byte beyond this: a drop may come after
        // a partial rewrite in principle; the datapath never sends them.
        if verdict != TC_ACT_SHOT && out != want {
            return Err("frame must pass untouched (apart from a redirect's MACs)".into());
        }
        return Ok(());
    }
    let ip = uplink_ip(input).expect("rewrites only for NAT-eligible frames");
    let l4c = l4_csum_at(&ip);
    for (i, (o, w)) in out.iter().zip(&want).enumerate() {
        let csum = (24..26).contains(&i) || (l4c..l4c + 2).contains(&i);
        if !csum && o != w {
            return Err(format!("byte {i}: {o:#04x}, expected {w:#04x}"));
        }
    }
    let out_ip = uplink_ip(out).ok_or("output is no longer a NAT-eligible IPv4 packet")?;
    let in_udp_csum = be16(input, l4c);
    if ip.proto == UDP {
        let o = be16(out, l4c);
        if in_udp_csum == 0 && o != 0 {
            return Err(format!("UDP zero checksum became {o:#06x}"));
        }
        if in_udp_csum != 0 && o == 0 {
            return Err("UDP checksum became zero (\"no checksum\")".into());
        }
    }
    if ip_header_valid(input, &ip) && !ip_header_valid(out, &out_ip) {
        return Err(format!(
            "IPv4 header checksum of a valid input is invalid on output ({:#06x})",
            be16(out, 24)
        ));
    }
    if l4_valid(input, &ip) && !l4_valid(out, &out_ip) {
        return Err(format!(
            "L4 (proto {}) checksum of a valid input is invalid on output ({:#06x}, in {:#06x})",
            ip.proto,
            be16(out, l4c),
            in_udp_csum
        ));
    }
    Ok(())
}

/// An ICMP error translated back: only the outer destination, the quoted source and
/// the four checksums covering them change, to exactly the expected values, and every
/// checksum that was valid stays valid (the ICMP one over the whole quote).
pub(super) fn check_icmp_error(
    input: &[u8],
    verdict: u32,
    out: &[u8],
    b: &IcmpErrorBack,
) -> Result<(), String> {
    if verdict != TC_ACT_UNSPEC {
        return Err(format!("verdict {verdict:#x} for an ICMP error"));
    }
    if out.len() != input.len() {
        return Err(format!("length {} → {}", input.len(), out.len()));
    }
    let ip = uplink_ip(input).expect("ICMP errors are NAT-eligible");
    let mut want = input.to_vec();
    want[30..34].copy_from_slice(&b.addr);
    want[b.inner + 12..b.inner + 16].copy_from_slice(&b.addr);
    want[b.sport_at..b.sport_at + 2].copy_from_slice(&b.port.to_be_bytes());
    let csums = [Some(24), Some(ip.l4() + 2), Some(b.inner + 10), b.l4c_at];
    for (i, (o, w)) in out.iter().zip(&want).enumerate() {
        let csum = csums.iter().flatten().any(|c| (*c..*c + 2).contains(&i));
        if !csum && o != w {
            return Err(format!("ICMP error byte {i}: {o:#04x}, expected {w:#04x}"));
        }
    }
    let out_ip = uplink_ip(out).ok_or("output is no longer a valid IPv4 ICMP packet")?;
    if ip_header_valid(input, &ip) && !ip_header_valid(out, &out_ip) {
        return Err("outer IPv4 checksum of a valid input is invalid on output".into());
    }
    if l4_valid(input, &ip) && !l4_valid(out, &out_ip) {
        return Err("ICMP checksum of a valid input is invalid on output".into());
    }
    let inner_valid = |f: &[u8]| fold_not(sum_be(&f[b.inner..b.inner + 20], 0)) == 0;
    if inner_valid(input) && !inner_valid(out) {
        return Err("quoted IPv4 checksum of a valid input is invalid on output".into());
    }
    Ok(())
}

/// A translated IPv6 frame: the verdict, the bytes outside the checksum fields exactly,
/// and every checksum updated consistently — the one's-complement sum each covers
/// (pseudo-header included) is unchanged modulo 0xffff, valid or not — and no UDP
/// checksum zero.
pub(super) fn check6(
    input: &[u8],
    verdict: u32,
    out: &[u8],
    e: &Expected,
    x: &Expected6,
) -> Result<(), String> {
    if verdict != e.verdict {
        return Err(format!("verdict {verdict:#x}, expected {:#x}", e.verdict));
    }
    if out.len() != input.len() {
        return Err(format!("length {} → {}", input.len(), out.len()));
    }
    let want = expected_frame6(input, e, x);
    let ip = x.ip;
    let l4c = x.icmp_error.and_then(|b| b.l4c_at);
    let csums = [Some(ip.csum_at()), l4c];
    for (i, (o, w)) in out.iter().zip(&want).enumerate() {
        let csum = csums.iter().flatten().any(|c| (*c..*c + 2).contains(&i));
        if !csum && o != w {
            return Err(format!("IPv6 byte {i}: {o:#04x}, expected {w:#04x}"));
        }
    }
    let out_ip = Ip6 {
        src: addr6(out, 22),
        dst: addr6(out, 38),
        ..ip
    };
    let (s_in, s_out) = (l4_sum6(input, &ip), l4_sum6(out, &out_ip));
    if s_in % 0xffff != s_out % 0xffff {
        return Err(format!(
            "L4 (proto {}) checksum not updated with the rewrite ({:#06x} → {:#06x})",
            ip.proto,
            be16(input, ip.csum_at()),
            be16(out, ip.csum_at())
        ));
    }
    if ip.proto == UDP && be16(out, ip.csum_at()) == 0 {
        return Err("IPv6 UDP checksum became zero".into());
    }
    if let (Some(b), Some(at)) = (x.icmp_error, l4c) {
        // The quoted checksum covers the quoted source (pseudo-header) and the quoted L4
        // bytes (the part of them the error holds; the rest is the same before and after).
        let quoted = |f: &[u8]| {
            sum_be(
                &f[b.inner + 40..ip.end],
                sum_be(&f[b.inner + 8..b.inner + 24], 0),
            )
        };
        if quoted(input) % 0xffff != quoted(out) % 0xffff {
            return Err(format!(
                "quoted L4 checksum not updated ({:#06x} → {:#06x})",
                be16(input, at),
                be16(out, at)
            ));
        }
        if input[b.inner + 6] == UDP && be16(out, at) == 0 {
            return Err("quoted IPv6 UDP checksum became zero".into());
        }
    }
    Ok(())
}
