//! Choosing what a listing shows: `--filter KEY=VALUE` (as `docker ps --filter`) and
//! `-q` (ids only), and what `netpath inspect` names.

use netpath::model::{Endpoint, EndpointKind, PortLease};

use super::print::{kind_name, state_name};

/// One `--filter KEY=VALUE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    /// What it looks at: one of [`ENDPOINT_KEYS`] or [`PORT_KEYS`].
    pub key: String,
    /// What that must be (for `id` and `endpoint`, a prefix of it).
    pub value: String,
}

/// Keys an endpoint listing takes.
pub const ENDPOINT_KEYS: &[&str] = &["network", "kind", "state", "id"];
/// Keys a port listing takes.
pub const PORT_KEYS: &[&str] = &["endpoint", "proto", "network"];

/// Parses `KEY=VALUE`, refusing keys not in `keys` (clap value parser).
pub fn parse(s: &str, keys: &[&str]) -> Result<Filter, String> {
    let Some((key, value)) = s.split_once('=') else {
        return Err(format!("expected KEY=VALUE (keys: {})", keys.join(", ")));
    };
    if !keys.contains(&key) {
        return Err(format!(
            "unknown filter key {key:?} (keys: {})",
            keys.join(", ")
        ));
    }
    if value.is_empty() {
        return Err(format!("filter {key}= needs a value"));
    }
    Ok(Filter {
        key: key.into(),
        value: value.into(),
    })
}

/// An endpoint listing's `--filter` (clap value parser): `kind` and `state` only with
/// a value some endpoint can have.
pub fn endpoint_filter(s: &str) -> Result<Filter, String> {
    let f = parse(s, ENDPOINT_KEYS)?;
    let allowed: &[&str] = match f.key.as_str() {
        "kind" => &["veth", "tap"],
        "state" => &["ready", "creating"],
        _ => return Ok(f),
    };
    if !allowed.contains(&f.value.as_str()) {
        return Err(format!(
            "{}={} matches nothing: use {}",
            f.key,
            f.value,
            allowed.join(" or ")
        ));
    }
    Ok(f)
}

/// A port listing's `--filter` (clap value parser).
pub fn port_filter(s: &str) -> Result<Filter, String> {
    parse(s, PORT_KEYS)
}

/// Whether endpoint `e` passes every filter (filters with one key are alternatives, as
/// in Docker: `--filter kind=veth --filter kind=tap` is both).
pub fn endpoint_matches(e: &Endpoint, filters: &[Filter], kind: Option<EndpointKind>) -> bool {
    if kind.is_some_and(|k| k != e.kind) {
        return false;
    }
    matches_all(filters, |f| match f.key.as_str() {
        "network" => e.network == f.value,
        "kind" => kind_name(e.kind) == f.value,
        "state" => state_name(e.state) == f.value,
        "id" => e.id.starts_with(&f.value),
        _ => false,
    })
}

/// Whether lease `l` passes every filter; `network_of` tells an endpoint's network.
pub fn port_matches(
    l: &PortLease,
    filters: &[Filter],
    network_of: impl Fn(&str) -> Option<String>,
) -> bool {
    matches_all(filters, |f| match f.key.as_str() {
        "endpoint" => l.endpoint.starts_with(&f.value),
        "proto" => l.proto.to_string() == f.value,
        "network" => network_of(&l.endpoint).as_deref() == Some(f.value.as_str()),
        _ => false,
    })
}

/// Whether, for every key of `filters`, one filter of that key is a `hit`.
fn matches_all(filters: &[Filter], hit: impl Fn(&Filter) -> bool) -> bool {
    let mut keys: Vec<&str> = filters.iter().map(|f| f.key.as_str()).collect();
    keys.dedup();
    keys.iter()
        .all(|k| filters.iter().filter(|f| f.key == *k).any(&hit))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use netpath::model::EndpointState;

    use super::*;

    fn ep(id: &str, network: &str, kind: EndpointKind) -> Endpoint {
        Endpoint {
            id: id.into(),
            network: network.into(),
            kind,
            state: EndpointState::Ready,
            ip: Some(Ipv4Addr::new(10, 0, 0, 2)),
            ip6: None,
            gateway6: None,
            prefix_len: 24,
            mac: "02:00:00:00:00:01".parse().unwrap(),
            gateway: Some(Ipv4Addr::new(10, 0, 0, 1)),
            host_ifname: format!("np-{id}"),
            details: Default::default(),
        }
    }

    #[test]
    fn filters_parse_and_refuse_unknown_keys() {
        type Parse = fn(&str) -> Result<Filter, String>;
        let (endpoint, port): (Parse, Parse) = (endpoint_filter, port_filter);
        // Each case: the parser, its input, and the filter it gives (key, value) or
        // what its refusal says.
        for (parse, input, want) in [
            (endpoint, "network=web", Ok(("network", "web"))),
            (endpoint, "kind=tap", Ok(("kind", "tap"))),
            (endpoint, "network", Err("expected KEY=VALUE")),
            (endpoint, "color=red", Err("unknown filter key \"color\"")),
            (endpoint, "network=", Err("needs a value")),
            (endpoint, "kind=vm", Err("use veth or tap")),
            (endpoint, "state=gone", Err("use ready or creating")),
            (port, "proto=udp", Ok(("proto", "udp"))),
            (port, "kind=tap", Err("unknown filter key \"kind\"")),
        ] {
            match (parse(input), want) {
                (Ok(f), Ok((key, value))) => {
                    assert_eq!((f.key.as_str(), f.value.as_str()), (key, value), "{input}")
                }
                (Err(e), Err(why)) => assert!(e.contains(why), "{input}: {e}"),
                (got, want) => panic!("{input}: {got:?}, expected {want:?}"),
            }
        }
    }

    #[test]
    fn same_keys_are_alternatives_different_keys_all_apply() {
        let a = ep("aaaa00000001", "web", EndpointKind::Veth);
        let b = ep("bbbb00000001", "db", EndpointKind::Tap);
        let f = |specs: &[&str]| -> Vec<Filter> {
            specs.iter().map(|s| endpoint_filter(s).unwrap()).collect()
        };
        let pick = |filters: &[Filter], kind| -> Vec<&str> {
            [&a, &b]
                .into_iter()
                .filter(|e| endpoint_matches(e, filters, kind))
                .map(|e| e.id.as_str())
                .collect()
        };
        assert_eq!(pick(&[], None), ["aaaa00000001", "bbbb00000001"]);
        assert_eq!(pick(&f(&["network=web"]), None), ["aaaa00000001"]);
        assert_eq!(
            pick(&f(&["network=web", "network=db"]), None),
            ["aaaa00000001", "bbbb00000001"]
        );
        assert!(pick(&f(&["network=web", "kind=tap"]), None).is_empty());
        assert_eq!(pick(&f(&["id=bbbb"]), None), ["bbbb00000001"]);
        // `tap ls` lists TAPs only, whatever the filters.
        assert_eq!(pick(&[], Some(EndpointKind::Tap)), ["bbbb00000001"]);
    }
}
