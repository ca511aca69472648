//! NAT66's maps (`NETPATH_*6`): the uplinks' IPv6 addresses, the masqueraded IPv6 subnets,
//! the IPv6 exemptions, and point reads of the IPv6 masquerade state. An older build's
//! object has none of them: [`Nat66::open`] gives `None` for a datapath without them,
//! and every write is then a no-op (that datapath does no NAT66).

use ipnet::Ipv6Net;

use super::{maps::absent_ok, *};

/// NAT66's maps, as the control plane writes and the tests read them.
pub(super) struct Nat66 {
    snat: HashMap<MapData, Tuple6, NatTarget6>,
    rnat: HashMap<MapData, Tuple6, NatTarget6>,
    uplinks: HashMap<MapData, u32, Uplink6>,
    masq_src: LpmTrie<MapData, [u8; 16], u32>,
    /// IPv6 destinations each network reaches unmasqueraded ([`no_masq_key6`]).
    no_masq: LpmTrie<MapData, [u8; 20], u8>,
}

impl Nat66 {
    /// The pinned NAT66 maps, `None` if the datapath has none (an older layout's).
    pub(super) fn open(pins: &Pins) -> Result<Option<Nat66>> {
        let Some(snat) = open_typed_if_pinned(pins, SNAT6_MAP)? else {
            return Ok(None);
        };
        Ok(Some(Nat66 {
            snat,
            rnat: open_typed(pins, RNAT6_MAP)?,
            uplinks: open_typed(pins, UPLINKS6_MAP)?,
            masq_src: open_typed(pins, MASQ_SRC6_MAP)?,
            no_masq: open_typed(pins, NO_MASQ6_MAP)?,
        }))
    }

    pub(super) fn no_masq_mut(&mut self) -> &mut LpmTrie<MapData, [u8; 20], u8> {
        &mut self.no_masq
    }
}

impl Datapath {
    /// Sets (or, with `None`, removes) the IPv6 address NAT66 gives connections leaving
    /// uplink `ifindex`.
    pub fn set_uplink6(&mut self, ifindex: u32, uplink: Option<Uplink6>) -> Result<()> {
        let Some(m) = self.nat66.as_mut() else {
            return Ok(());
        };
        match uplink {
            Some(u) => m
                .uplinks
                .insert(ifindex, u, 0)
                .map_err(DatapathError::writing(UPLINKS6_MAP)),
            None => absent_ok(UPLINKS6_MAP, m.uplinks.remove(&ifindex)),
        }
    }

    /// Masquerades traffic from IPv6 subnet `subnet` (network `network_id`).
    pub fn add_masq_subnet6(&mut self, subnet: Ipv6Net, network_id: u16) -> Result<()> {
        let Some(m) = self.nat66.as_mut() else {
            return Ok(());
        };
        m.masq_src
            .insert(&lpm6(subnet), u32::from(network_id), 0)
            .map_err(DatapathError::writing(MASQ_SRC6_MAP))
    }

    /// Stops masquerading IPv6 subnet `subnet`; absent is fine.
    pub fn remove_masq_subnet6(&mut self, subnet: Ipv6Net) -> Result<()> {
        let Some(m) = self.nat66.as_mut() else {
            return Ok(());
        };
        absent_ok(MASQ_SRC6_MAP, m.masq_src.remove(&lpm6(subnet)))
    }

    /// The NAT66 mapping of connection `orig`, if one exists.
    pub fn snat6_entry(&self, orig: &Tuple6) -> Option<NatTarget6> {
        self.nat66.as_ref()?.snat.get(orig, 0).ok()
    }

    /// Where NAT66 sends replies that look like `reply`, if anywhere.
    pub fn rnat6_entry(&self, reply: &Tuple6) -> Option<NatTarget6> {
        self.nat66.as_ref()?.rnat.get(reply, 0).ok()
    }

    /// The uplink `ifindex`'s NAT66 address and ports, if set.
    pub fn uplink6(&self, ifindex: u32) -> Option<Uplink6> {
        self.nat66.as_ref()?.uplinks.get(&ifindex, 0).ok()
    }
}

/// The LPM key of IPv6 subnet `subnet`.
fn lpm6(subnet: Ipv6Net) -> LpmKey<[u8; 16]> {
    LpmKey::new(u32::from(subnet.prefix_len()), subnet.network().octets())
}
