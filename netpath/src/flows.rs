//! The translated connections as `GET /v1/flows` serves and `netpath flows` lists them:
//! what the datapath's maps hold ([`Tracked`]) named after the endpoint records, sorted
//! into masquerade, publish and hairpin, with age, idle time and expiry in seconds.
//! Connections past their timeout are left out: the programs may give their NAT ports
//! to new connections, and an LRU table drops them when it needs room.

use std::net::IpAddr;

use netpath_common::{
    ipv6::IPPROTO_ICMPV6,
    nat::{CT_CLOSING, CT_ESTABLISHED, ct_left},
    packet::{IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP},
};

use crate::{
    datapath::{Tracked, Translation},
    model::{Endpoint, Flow, FlowFilter, FlowKind, FlowProto, FlowTuple},
};

/// The flows of `tracked` that `filter` selects (its `endpoint` an exact id), at
/// datapath time `now`, their endpoints named after `records`.
pub fn list(tracked: &[Tracked], records: &[Endpoint], filter: &FlowFilter, now: u32) -> Vec<Flow> {
    let mut flows: Vec<Flow> = (tracked.iter())
        .filter_map(|t| flow(t, records, now))
        .filter(|f| filter.kind.is_none_or(|k| f.kind == k))
        .filter(|f| filter.proto.is_none_or(|p| f.proto == p))
        .filter(|f| (filter.endpoint.as_ref()).is_none_or(|id| f.endpoint.as_ref() == Some(id)))
        .collect();
    flows.sort_by(|a, b| {
        (a.kind as u8, &a.endpoint, a.original.src, a.original.dst).cmp(&(
            b.kind as u8,
            &b.endpoint,
            b.original.src,
            b.original.dst,
        ))
    });
    flows
}

/// The record with address `ip`, either family.
fn record_of(records: &[Endpoint], ip: IpAddr) -> Option<&Endpoint> {
    records.iter().find(|r| match ip {
        IpAddr::V4(v4) => r.ip == Some(v4),
        IpAddr::V6(v6) => r.ip6 == Some(v6),
    })
}

/// `now - then` in datapath time; 0 for a `then` a moment after `now` (an entry touched
/// while the maps were read).
fn elapsed(then: u32, now: u32) -> u32 {
    let d = now.wrapping_sub(then);
    if d > i32::MAX as u32 { 0 } else { d }
}

/// Datapath time (units of 2^30 ns) in whole seconds.
fn secs(units: u32) -> u64 {
    u64::from(units) * (1 << 30) / 1_000_000_000
}

/// One tracked connection as a [`Flow`]; `None` once it has timed out (or for a
/// protocol the NAT does not track).
fn flow(t: &Tracked, records: &[Endpoint], now: u32) -> Option<Flow> {
    let proto = match t.proto {
        IPPROTO_TCP => FlowProto::Tcp,
        IPPROTO_UDP => FlowProto::Udp,
        IPPROTO_ICMP | IPPROTO_ICMPV6 => FlowProto::Icmp,
        _ => return None,
    };
    let idle = elapsed(t.seen, now);
    let left = ct_left(t.proto, t.state, now.wrapping_sub(idle), now)?;
    let record = record_of(records, t.endpoint);
    let (kind, direction) = match t.translation {
        Translation::Masquerade => (FlowKind::Masq, "outbound"),
        // A client that is an endpoint (or the endpoint itself) came through a host
        // address: hairpin.
        Translation::Publish if record_of(records, t.original.0.ip()).is_some() => {
            (FlowKind::Hairpin, "inbound")
        }
        Translation::Publish => (FlowKind::Publish, "inbound"),
    };
    let state = match t.state {
        CT_ESTABLISHED => "established",
        CT_CLOSING => "closing",
        _ => "new",
    };
    Some(Flow {
        kind,
        proto,
        endpoint: record.map(|r| r.id.clone()),
        network: record.map(|r| r.network.clone()),
        direction: direction.to_owned(),
        original: FlowTuple {
            src: t.original.0,
            dst: t.original.1,
        },
        translated: FlowTuple {
            src: t.translated.0,
            dst: t.translated.1,
        },
        state: state.to_owned(),
        age_secs: secs(elapsed(t.created, now)),
        idle_secs: secs(idle),
        expires_in_secs: secs(left),
    })
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use netpath_common::nat::CT_NEW;

    use super::*;
    use crate::model::test_endpoint as endpoint;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn tracked(translation: Translation, proto: u8, from: &str, to: &str) -> Tracked {
        Tracked {
            translation,
            proto,
            original: (sa(from), sa(to)),
            translated: (sa("198.51.100.2:40001"), sa(to)),
            endpoint: sa(from).ip(),
            state: CT_NEW,
            seen: 1000,
            created: 990,
        }
    }

    #[test]
    fn flows_are_named_kinded_and_timed() {
        let records = [endpoint("aaa", "10.50.0.2"), endpoint("bbb", "10.50.0.3")];
        let masq = tracked(
            Translation::Masquerade,
            IPPROTO_UDP,
            "10.50.0.2:5000",
            "198.51.100.1:53",
        );
        let mut publish = tracked(
            Translation::Publish,
            IPPROTO_TCP,
            "198.51.100.1:50000",
            "198.51.100.2:8080",
        );
        publish.endpoint = "10.50.0.3".parse().unwrap();
        publish.state = CT_ESTABLISHED;
        let mut hairpin = publish;
        hairpin.original.0 = sa("10.50.0.2:45000");
        let all = list(
            &[masq, publish, hairpin],
            &records,
            &FlowFilter::default(),
            1010,
        );
        let kinds: Vec<_> = all
            .iter()
            .map(|f| (f.kind, f.endpoint.as_deref()))
            .collect();
        assert_eq!(
            kinds,
            [
                (FlowKind::Masq, Some("aaa")),
                (FlowKind::Publish, Some("bbb")),
                (FlowKind::Hairpin, Some("bbb"))
            ]
        );
        let m = &all[0];
        assert_eq!(
            (m.direction.as_str(), m.state.as_str()),
            ("outbound", "new")
        );
        // 20 and 10 units of 2^30 ns; UDP unanswered: 30 units, 20 left.
        assert_eq!((m.age_secs, m.idle_secs, m.expires_in_secs), (21, 10, 21));
        assert_eq!(all[1].state, "established");
        assert_eq!(all[1].network.as_deref(), Some("web"));
    }

    #[test]
    fn timed_out_flows_are_left_out() {
        let masq = tracked(
            Translation::Masquerade,
            IPPROTO_UDP,
            "10.50.0.2:5000",
            "198.51.100.1:53",
        );
        let at = |now| list(&[masq], &[], &FlowFilter::default(), now).len();
        assert_eq!(at(1030), 1, "30 units idle: the last moment");
        assert_eq!(at(1031), 0, "past UDP's 30");
        // Seen a moment after the clock was read: idle 0, not 4 billion.
        assert_eq!(at(999), 1);
    }

    #[test]
    fn filters_select_by_kind_protocol_and_endpoint() {
        let records = [endpoint("aaa", "10.50.0.2")];
        let masq = tracked(
            Translation::Masquerade,
            IPPROTO_UDP,
            "10.50.0.2:5000",
            "198.51.100.1:53",
        );
        let icmp = tracked(
            Translation::Masquerade,
            IPPROTO_ICMP,
            "10.50.0.2:7",
            "198.51.100.1:7",
        );
        let other = tracked(
            Translation::Masquerade,
            IPPROTO_TCP,
            "10.50.0.9:5000",
            "198.51.100.1:80",
        );
        let flows = [masq, icmp, other];
        let n = |filter: FlowFilter| list(&flows, &records, &filter, 1000).len();
        assert_eq!(n(FlowFilter::default()), 3);
        let proto = |p| FlowFilter {
            proto: Some(p),
            ..FlowFilter::default()
        };
        assert_eq!(n(proto(FlowProto::Icmp)), 1);
        assert_eq!(n(proto(FlowProto::Tcp)), 1);
        let of = FlowFilter {
            endpoint: Some("aaa".to_owned()),
            ..FlowFilter::default()
        };
        assert_eq!(n(of), 2);
        let kind = FlowFilter {
            kind: Some(FlowKind::Publish),
            ..FlowFilter::default()
        };
        assert_eq!(n(kind), 0);
    }
}
