//! Fragments through the uplink hooks in the model, both families (the rules of
//! `netpath_common::frag`, written out again here): a first fragment whose L4 header is
//! whole takes the uplink's path as a whole packet would, and its datagram (source,
//! destination, identification, protocol) is recorded with the addresses it left with
//! when they changed or when the NAT translates on its path (egress on the uplink from a
//! masqueraded source, ingress to the uplink's address); a later fragment gets the
//! recorded addresses (IPv4: and the header checksum) and goes straight to the endpoint
//! if its first did; without a record it is dropped on such a path, untouched elsewhere.
//! IPv6: only a fragment header right after the fixed header is tracked.

use super::*;

/// A datagram as its fragments arrive: source, destination, identification, protocol.
pub(super) type FragKey<A> = (A, A, u32, u8);

/// A first fragment's record: its datagram and what its later fragments get.
pub(super) type Recorded<A> = Option<(FragKey<A>, FragRecord<A>)>;

/// What a datagram's later fragments get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct FragRecord<A> {
    pub(super) src: A,
    pub(super) dst: A,
    /// Its first fragment went straight to an endpoint.
    pub(super) redirected: bool,
}

/// A frame as the uplink's fragment tracking sees it.
enum Piece<A> {
    /// Not a tracked fragment.
    Whole,
    First(FragKey<A>),
    Later(FragKey<A>),
}

fn piece4(f: &[u8]) -> Piece<[u8; 4]> {
    let Some(ip) = parse_ip(f).filter(|ip| ip.fragment) else {
        return Piece::Whole;
    };
    let key = (ip.src, ip.dst, u32::from(be16(f, 18)), ip.proto);
    if be16(f, 20) & 0x1fff != 0 {
        Piece::Later(key)
    } else if ip.l4_fits() {
        Piece::First(key)
    } else {
        Piece::Whole
    }
}

fn piece6(f: &[u8]) -> Piece<[u8; 16]> {
    if f.len() < 62 || f[20] != 44 {
        return Piece::Whole;
    }
    let id = u32::from_be_bytes([f[58], f[59], f[60], f[61]]);
    match parse_ip6(f) {
        V6::Packet {
            src,
            dst,
            l4: None,
            fragment: true,
        } => Piece::Later((src, dst, id, f[54])),
        V6::Packet {
            src,
            dst,
            l4: Some((proto, 62)),
            fragment: true,
        } if proto == f[54] => Piece::First((src, dst, id, proto)),
        _ => Piece::Whole,
    }
}

/// A TCP/UDP/ICMP packet the uplink's NAT may rewrite: [`nat_ip`], or a first fragment
/// with its L4 header (classed as whole).
pub(super) fn uplink_ip(f: &[u8]) -> Option<Ip> {
    parse_ip(f).filter(|ip| {
        (!ip.fragment || be16(f, 20) & 0x1fff == 0)
            && matches!(ip.proto, TCP | UDP | ICMP)
            && ip.l4_fits()
    })
}

/// [`nat_ip6`], or a tracked first fragment with its L4 header (classed as whole).
pub(super) fn uplink_ip6(f: &[u8]) -> Option<Ip6> {
    if let Piece::First((src, dst, _, proto)) = piece6(f)
        && matches!(proto, TCP | UDP | ICMP6)
    {
        return Some(Ip6 {
            src,
            dst,
            proto,
            l4: 62,
            end: 54 + usize::from(be16(f, 18)),
        });
    }
    nat_ip6(f)
}

impl Model {
    /// Uplink egress, fragments included.
    pub(super) fn uplink_egress_frags(&self, f: &[u8], ifindex: u32) -> (Expected, Effects) {
        let on_uplink = ifindex == self.uplink_ifindex;
        let whole = || self.uplink_egress(f, ifindex);
        if is_ipv6(f) {
            let must = |k: &FragKey<[u8; 16]>| on_uplink && in_masq6(k.0);
            let (e, mut fx, rec) = self.fragments(piece6(f), &self.frags6, must, whole, f);
            fx.frag6 = rec;
            return (e, fx);
        }
        let must = |k: &FragKey<[u8; 4]>| on_uplink && in_masq(k.0);
        let (e, mut fx, rec) = self.fragments(piece4(f), &self.frags, must, whole, f);
        fx.frag = rec;
        (e, fx)
    }

    /// Uplink ingress (on uplink `ifindex`), fragments included.
    pub(super) fn uplink_ingress_frags(&self, f: &[u8], ifindex: u32) -> (Expected, Effects) {
        let on_uplink = ifindex == self.uplink_ifindex;
        let whole = || self.uplink_ingress(f);
        if is_ipv6(f) {
            let must = |k: &FragKey<[u8; 16]>| on_uplink && k.1 == UPLINK6;
            let (e, mut fx, rec) = self.fragments(piece6(f), &self.frags6, must, whole, f);
            fx.frag6 = rec;
            return (e, fx);
        }
        let must = |k: &FragKey<[u8; 4]>| on_uplink && k.1 == UPLINK_ADDR;
        let (e, mut fx, rec) = self.fragments(piece4(f), &self.frags, must, whole, f);
        fx.frag = rec;
        (e, fx)
    }

    /// The expectation for a frame that is `piece`, with the records `frags`.
    fn fragments<A: Addr>(
        &self,
        piece: Piece<A>,
        frags: &HashMap<FragKey<A>, FragRecord<A>>,
        must: impl Fn(&FragKey<A>) -> bool,
        whole: impl FnOnce() -> (Expected, Effects),
        f: &[u8],
    ) -> (Expected, Effects, Recorded<A>) {
        let key = match piece {
            Piece::Whole => {
                let (e, fx) = whole();
                return (e, fx, None);
            }
            Piece::First(key) => key,
            Piece::Later(key) => {
                let e = match frags.get(&key) {
                    Some(r) => self.later(f, &key, r),
                    None if must(&key) => Expected::pass(TC_ACT_SHOT),
                    None => Expected::pass(TC_ACT_UNSPEC),
                };
                return (e, Effects::default(), None);
            }
        };
        let (e, fx) = whole();
        if e.verdict == TC_ACT_SHOT {
            return (e, fx, None);
        }
        let (src, dst) = after::<A>(f, &e);
        let record = (must(&key) || (src, dst) != (key.0, key.1)).then_some((
            key,
            FragRecord {
                src,
                dst,
                redirected: e.verdict == TC_ACT_REDIRECT,
            },
        ));
        (e, fx, record)
    }

    /// A later fragment with record `r`: its addresses rewritten, and straight to the
    /// endpoint (its MAC, TTL or hop limit one lower) if its first was and may be.
    fn later<A: Addr>(&self, f: &[u8], key: &FragKey<A>, r: &FragRecord<A>) -> Expected {
        let v6 = is_ipv6(f);
        let (src_at, dst_at) = if v6 { (22, 38) } else { (26, 30) };
        let mut e = Expected::pass(TC_ACT_UNSPEC);
        if r.redirected {
            let dst = bytes(&r.dst);
            let to = match v6 {
                true => self.endpoint_by_ip6(dst.clone().try_into().unwrap()),
                false => self.endpoint_by_ip(dst.clone().try_into().unwrap()),
            };
            let hops = if v6 { f[21] } else { f[22] };
            if let Some(to) = to
                && hops > 1
                && f.len() <= 14 + 1500
            {
                e.verdict = TC_ACT_REDIRECT;
                e.macs = (f[..6] != to.mac).then_some((to.mac, to.host_mac));
                e.ttl_dec = true;
            }
        }
        e.addr_only = [(src_at, key.0, r.src), (dst_at, key.1, r.dst)]
            .into_iter()
            .filter(|(_, old, new)| old != new)
            .map(|(at, _, new)| (at, bytes(&new)))
            .collect();
        e
    }
}

/// An address of the model: its bytes, and one read back from a frame.
pub(super) trait Addr: Address + AsRef<[u8]> + for<'a> TryFrom<&'a [u8]> {}
impl Addr for [u8; 4] {}
impl Addr for [u8; 16] {}

fn bytes<A: Addr>(a: &A) -> Vec<u8> {
    a.as_ref().to_vec()
}

/// The addresses a frame expected as `e` leaves with.
fn after<A: Addr>(f: &[u8], e: &Expected) -> (A, A) {
    let out = match &e.nat6 {
        Some(x6) => expected_frame6(f, e, x6),
        None => expected_frame(f, e),
    };
    let at = |i: usize| A::try_from(&out[i..i + 4 * A::WORDS]).ok().unwrap();
    if is_ipv6(f) {
        return (at(22), at(38));
    }
    // An ICMP error translated back gets its quoted source as its destination
    // (`check_icmp_error` builds that frame itself).
    let dst = match &e.icmp_error {
        Some(back) => A::try_from(&back.addr[..]).ok().unwrap(),
        None => at(30),
    };
    (at(26), dst)
}

/// A later fragment's address rewrite: only the addresses (IPv4: and the header
/// checksum) change, as a redirect's MACs and TTL, and a valid header checksum stays valid.
pub(super) fn check_addr_only(input: &[u8], out: &[u8], e: &Expected) -> Result<(), String> {
    if out.len() != input.len() {
        return Err(format!("length {} → {}", input.len(), out.len()));
    }
    let want = expected_frame(input, e);
    let v6 = is_ipv6(input);
    for (i, (o, w)) in out.iter().zip(&want).enumerate() {
        if (v6 || !(24..26).contains(&i)) && o != w {
            return Err(format!("fragment byte {i}: {o:#04x}, expected {w:#04x}"));
        }
    }
    if let (false, Some(ip)) = (v6, parse_ip(input)) {
        let out_ip = parse_ip(out).ok_or("output not IPv4")?;
        if ip_header_valid(input, &ip) && !ip_header_valid(out, &out_ip) {
            return Err("IPv4 header checksum of a valid fragment is invalid on output".into());
        }
    }
    Ok(())
}

/// The kernel's fragment records of family `A` (map `name`), as the model holds them.
pub(super) fn read_frags<A>(dp: &Datapath, name: &str) -> HashMap<FragKey<A>, FragRecord<A>>
where
    A: Addr,
    FragKeyOf<A>: aya::Pod,
    FragValueOf<A>: aya::Pod,
{
    frag_map::<A>(dp, name)
        .iter()
        .map(|r| {
            let (k, v) = r.unwrap_or_else(|e| panic!("iterating {name}: {e}"));
            let redirected = v.flags & FRAG_REDIRECTED != 0;
            (
                (k.src, k.dst, k.id, k.proto),
                FragRecord {
                    src: v.src,
                    dst: v.dst,
                    redirected,
                },
            )
        })
        .collect()
}

/// Checks the kernel's fragment records against the model's.
pub(super) fn check_frags(dp: &Datapath, model: &Model) {
    let (v4, v6) = (model.frags.len(), model.frags6.len());
    println!("fragment records: {v4} IPv4, {v6} IPv6");
    same_frags(&read_frags(dp, FRAG_MAP), &model.frags, FRAG_MAP);
    same_frags(&read_frags(dp, FRAG6_MAP), &model.frags6, FRAG6_MAP);
}

/// The kernel's records `kernel` are the model's `model`; else the differences.
fn same_frags<A: Addr>(
    kernel: &HashMap<FragKey<A>, FragRecord<A>>,
    model: &HashMap<FragKey<A>, FragRecord<A>>,
    name: &str,
) {
    let only = |a: &HashMap<FragKey<A>, FragRecord<A>>, b: &HashMap<FragKey<A>, FragRecord<A>>| {
        a.iter()
            .filter(|(k, v)| b.get(*k) != Some(*v))
            .map(|(k, v)| format!("{k:?} → {v:?}"))
            .collect::<Vec<_>>()
    };
    let (k, m) = (only(kernel, model), only(model, kernel));
    assert!(
        k.is_empty() && m.is_empty(),
        "{name}: {} records only the kernel's, {} only the model's; kernel's: {:?}; model's: {:?}",
        k.len(),
        m.len(),
        &k[..k.len().min(5)],
        &m[..m.len().min(5)]
    );
}

/// Empties the kernel's fragment records and the model's.
pub(super) fn clear_frags(dp: &Datapath, model: &mut Model) {
    fn clear<A>(dp: &Datapath, name: &str)
    where
        A: Addr,
        FragKeyOf<A>: aya::Pod,
        FragValueOf<A>: aya::Pod,
    {
        let mut map = frag_map::<A>(dp, name);
        let keys: Vec<FragKeyOf<A>> = map.keys().filter_map(Result::ok).collect();
        for k in keys {
            let _ = map.remove(&k);
        }
    }
    clear::<[u8; 4]>(dp, FRAG_MAP);
    clear::<[u8; 16]>(dp, FRAG6_MAP);
    model.frags.clear();
    model.frags6.clear();
}

fn frag_map<A>(dp: &Datapath, name: &str) -> BpfHashMap<MapData, FragKeyOf<A>, FragValueOf<A>>
where
    A: Addr,
    FragKeyOf<A>: aya::Pod,
    FragValueOf<A>: aya::Pod,
{
    let data = MapData::from_pin(dp.pins().map(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    BpfHashMap::try_from(Map::from_map_data(data).unwrap_or_else(|e| panic!("{name}: {e}")))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}
