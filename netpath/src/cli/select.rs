//! Choosing what a listing shows: `--filter KEY=VALUE` (as `docker ps --filter`) and
//! `-q` (ids only), and what `netpath inspect` names.

use netpath::model::{Endpoint, EndpointKind, PortLease};

use super::print::{kind_name, state_name};

/// One `--filter KEY=VALUE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    pub key: String,
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
            ip: Ipv4Addr::new(10, 0, 0, 2),
            prefix_len: 24,
            mac: "02:00:00:00:00:01".parse().unwrap(),
            gateway: Ipv4Addr::new(10, 0, 0, 1),
            host_ifname: format!("np-{id}"),
            details: Default::default(),
        }
    }

    #[test]
    fn filters_parse_and_refuse_unknown_keys() {
        assert_eq!(
            endpoint_filter("network=web").unwrap(),
            Filter {
                key: "network".into(),
                value: "web".into()
            }
        );
        for (bad, why) in [
            ("network", "expected KEY=VALUE"),
            ("color=red", "unknown filter key \"color\""),
            ("network=", "needs a value"),
            ("kind=vm", "use veth or tap"),
            ("state=gone", "use ready or creating"),
        ] {
            let e = endpoint_filter(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert!(port_filter("kind=tap").is_err());
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
