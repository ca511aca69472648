use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use rand::{Rng, SeedableRng, rngs::StdRng};

mod dual_stack;

use ipnet::{Ipv4Net, Ipv6Net};

use super::*;
use crate::model::{EndpointDetails, Mode};

const _: () = {
    const fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Store>();
    assert_send_sync::<StateError>();
};

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "netpath-state-test-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn db(&self) -> PathBuf {
        self.0.join("state.redb")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An endpoint's IPv4 address (every endpoint here has one).
fn v4(ep: &Endpoint) -> Ipv4Addr {
    ep.ip.expect("an IPv4 address")
}

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn create(store: &Store, name: &str, subnet: &str) -> Result<Network> {
    let subnet = net(subnet);
    let gateway = Ipv4Addr::from(u32::from(subnet.network()) + 1);
    create_gw(store, name, &subnet.to_string(), gateway)
}

fn create_gw(store: &Store, name: &str, subnet: &str, gateway: Ipv4Addr) -> Result<Network> {
    store.create_network(bridge_network(name, net(subnet), gateway, None))
}

/// A bridge network as the control plane resolves one (the store picks the id).
fn bridge_network(
    name: &str,
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
    v6: Option<(Ipv6Net, Ipv6Addr)>,
) -> Network {
    Network {
        id: 0,
        name: name.into(),
        subnet: Some(subnet),
        gateway: Some(gateway),
        subnet6: v6.map(|(s, _)| s),
        gateway6: v6.map(|(_, g)| g),
        mode: Mode::Bridge,
        uplink: Some("eth0".into()),
        mtu: 1500,
        bridge: Some(format!("np-{name}")),
        no_masquerade: Vec::new(),
        policy: Default::default(),
    }
}

/// A store in a fresh temporary directory (which goes when the `TempDir` drops).
fn fresh() -> (TempDir, Store) {
    let dir = TempDir::new();
    let store = Store::open(&dir.db()).unwrap();
    (dir, store)
}

fn new_ep(store: &Store, network: &str, ip: Option<Ipv4Addr>) -> NewEndpoint {
    let id = store.new_endpoint_id().unwrap();
    NewEndpoint {
        host_ifname: format!("np-{id}"),
        id,
        network: network.into(),
        kind: EndpointKind::Veth,
        ip,
        ip6: None,
        mac: "02:00:00:00:00:01".parse().unwrap(),
        details: EndpointDetails {
            ifname: Some("eth0".into()),
            netns: Some("/run/netns/x".into()),
            ..EndpointDetails::default()
        },
    }
}

fn reserve(store: &Store, network: &str, ip: Option<Ipv4Addr>) -> Result<Endpoint> {
    store.reserve_endpoint(new_ep(store, network, ip))
}

/// Every lease in the database, as (network id, ip) → endpoint id.
fn all_leases(store: &Store) -> BTreeMap<(u16, u32), String> {
    let txn = store.db.begin_read().unwrap();
    let t = txn.open_table(IP_LEASES).unwrap();
    t.iter()
        .unwrap()
        .map(|r| {
            let (k, v) = r.unwrap();
            (k.value(), v.value().to_owned())
        })
        .collect()
}

#[test]
fn concurrent_reservations_never_share_an_ip() {
    let dir = TempDir::new();
    let store = Arc::new(Store::open(&dir.db()).unwrap());
    create(&store, "n", "10.9.0.0/24").unwrap();
    let results: Vec<(Vec<Endpoint>, usize)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let store = Arc::clone(&store);
                s.spawn(move || {
                    let mut got = Vec::new();
                    let mut exhausted = 0;
                    for _ in 0..50 {
                        match reserve(&store, "n", None) {
                            Ok(ep) => got.push(ep),
                            Err(StateError::SubnetExhausted { network, subnet }) => {
                                assert_eq!(network, "n");
                                assert_eq!(subnet, IpNet::from(net("10.9.0.0/24")));
                                exhausted += 1;
                            }
                            Err(e) => panic!("unexpected error: {e}"),
                        }
                    }
                    (got, exhausted)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let eps: Vec<Endpoint> = results.iter().flat_map(|(g, _)| g.clone()).collect();
    let exhausted: usize = results.iter().map(|(_, e)| e).sum();
    let usable = 256 - 3;
    assert_eq!(eps.len(), usable);
    assert_eq!(exhausted, 8 * 50 - usable);
    let ips: HashSet<Ipv4Addr> = eps.iter().map(v4).collect();
    assert_eq!(ips.len(), usable, "an IP was handed out twice");
    for a in [ip("10.9.0.0"), ip("10.9.0.1"), ip("10.9.0.255")] {
        assert!(!ips.contains(&a));
    }
    assert_eq!(all_leases(&store).len(), usable);
    assert_eq!(store.list_endpoints(Some("n")).unwrap().len(), usable);
    // Once exhausted, a specific request is refused as in use.
    assert!(matches!(
        reserve(&store, "n", Some(ip("10.9.0.7"))),
        Err(StateError::IpInUse { .. })
    ));
}

#[test]
fn state_persists_across_reopen() {
    let dir = TempDir::new();
    let (network, ready, creating) = {
        let store = Store::open(&dir.db()).unwrap();
        let network = create(&store, "a", "10.1.0.0/24").unwrap();
        let e1 = reserve(&store, "a", None).unwrap();
        let ready = store.mark_ready(&e1.id).unwrap();
        let creating = reserve(&store, "a", None).unwrap();
        (network, ready, creating)
    };
    let store = Store::open(&dir.db()).unwrap();
    assert_eq!(store.list_networks().unwrap(), vec![network.clone()]);
    assert_eq!(store.get_network("a").unwrap(), network);
    assert_eq!(
        store.get_endpoint(&ready.id).unwrap().state,
        EndpointState::Ready
    );
    assert_eq!(store.get_endpoint(&creating.id).unwrap(), creating);
    let mut expected = vec![ready.clone(), creating.clone()];
    expected.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(store.list_endpoints(None).unwrap(), expected);
    assert_eq!(store.list_endpoints(Some("a")).unwrap(), expected);
    // Leases survived: the next address follows the two taken ones.
    assert_eq!(reserve(&store, "a", None).unwrap().ip, Some(ip("10.1.0.4")));
}

#[test]
fn second_open_of_same_file_is_refused() {
    let dir = TempDir::new();
    let _store = Store::open(&dir.db()).unwrap();
    let err = Store::open(&dir.db()).unwrap_err();
    assert!(matches!(err, StateError::Open { .. }), "{err}");
    assert!(err.hint().unwrap().contains("another netpath daemon"));
    let missing = dir.0.join("no/such/dir/state.redb");
    assert!(matches!(
        Store::open(&missing),
        Err(StateError::Open { .. })
    ));
}

#[test]
fn subnet_overlap_is_detected_both_ways() {
    let (_dir, store) = fresh();
    create(&store, "a", "10.1.0.0/16").unwrap();
    for (name, subnet) in [
        ("inner", "10.1.2.0/24"),
        ("outer", "10.0.0.0/8"),
        ("same", "10.1.0.0/16"),
        ("last", "10.1.255.252/30"),
    ] {
        let err = create(&store, name, subnet).unwrap_err();
        match &err {
            StateError::SubnetOverlap {
                subnet: s,
                other,
                other_subnet,
            } => {
                assert_eq!(*s, IpNet::from(net(subnet)));
                assert_eq!(other, "a");
                assert_eq!(*other_subnet, IpNet::from(net("10.1.0.0/16")));
            }
            e => panic!("{name}: unexpected {e}"),
        }
        assert_eq!(
            err.to_string(),
            format!("subnet {subnet} overlaps network \"a\" (10.1.0.0/16)")
        );
    }
    // Adjacent subnets do not overlap.
    create(&store, "b", "10.2.0.0/16").unwrap();
    create(&store, "c", "10.0.255.0/24").unwrap();
    let err = create(&store, "a", "192.168.0.0/24").unwrap_err();
    assert!(matches!(&err, StateError::NetworkExists { name } if name == "a"));
    assert_eq!(err.to_string(), "network \"a\" already exists");
    let names: Vec<String> = store
        .list_networks()
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(names, ["a", "b", "c"]);
}

#[test]
fn subnet_and_gateway_are_validated() {
    let (_dir, store) = fresh();
    assert!(matches!(
        create(&store, "x", "10.1.0.0/31"),
        Err(StateError::InvalidSubnet { .. })
    ));
    assert!(matches!(
        create_gw(&store, "x", "10.1.0.5/24", ip("10.1.0.1")),
        Err(StateError::InvalidSubnet { .. })
    ));
    for (gw, reason) in [
        ("10.1.0.0", InvalidIpReason::NetworkAddress),
        ("10.1.0.255", InvalidIpReason::BroadcastAddress),
        ("10.2.0.1", InvalidIpReason::OutsideSubnet),
    ] {
        match create_gw(&store, "x", "10.1.0.0/24", ip(gw)) {
            Err(StateError::InvalidGateway { reason: r, .. }) => assert_eq!(r, reason),
            other => panic!("{gw}: {other:?}"),
        }
    }
    assert!(store.list_networks().unwrap().is_empty());
}

#[test]
fn network_ids_are_smallest_free() {
    let (_dir, store) = fresh();
    assert_eq!(create(&store, "a", "10.1.0.0/24").unwrap().id, 1);
    assert_eq!(create(&store, "b", "10.2.0.0/24").unwrap().id, 2);
    assert_eq!(create(&store, "c", "10.3.0.0/24").unwrap().id, 3);
    store.remove_network("b", false).unwrap();
    assert_eq!(create(&store, "d", "10.4.0.0/24").unwrap().id, 2);
    assert_eq!(create(&store, "e", "10.5.0.0/24").unwrap().id, 4);
    store.remove_network("a", false).unwrap();
    assert_eq!(create(&store, "f", "10.6.0.0/24").unwrap().id, 1);
}

#[test]
fn invalid_and_taken_ips_are_refused() {
    let (_dir, store) = fresh();
    create(&store, "n", "10.1.0.0/24").unwrap();
    for (a, reason) in [
        ("10.1.0.0", InvalidIpReason::NetworkAddress),
        ("10.1.0.1", InvalidIpReason::Gateway),
        ("10.1.0.255", InvalidIpReason::BroadcastAddress),
        ("10.1.1.5", InvalidIpReason::OutsideSubnet),
        ("192.168.0.1", InvalidIpReason::OutsideSubnet),
    ] {
        match reserve(&store, "n", Some(ip(a))) {
            Err(StateError::InvalidIp {
                network,
                subnet,
                ip: got,
                reason: r,
            }) => {
                assert_eq!(network, "n");
                assert_eq!(subnet, IpNet::from(net("10.1.0.0/24")));
                assert_eq!(got, ip(a));
                assert_eq!(r, reason);
            }
            other => panic!("{a}: {other:?}"),
        }
    }
    let err = reserve(&store, "n", Some(ip("10.1.0.0"))).unwrap_err();
    assert_eq!(
        err.to_string(),
        "10.1.0.0 cannot be leased in network \"n\" (10.1.0.0/24): it is the network address"
    );
    let first = reserve(&store, "n", Some(ip("10.1.0.77"))).unwrap();
    assert_eq!(first.ip, Some(ip("10.1.0.77")));
    assert_eq!(first.state, EndpointState::Creating);
    assert_eq!(first.prefix_len, 24);
    assert_eq!(first.gateway, Some(ip("10.1.0.1")));
    let err = reserve(&store, "n", Some(ip("10.1.0.77"))).unwrap_err();
    assert!(
        matches!(&err, StateError::IpInUse { ip: a, endpoint, .. } if *a == ip("10.1.0.77") && *endpoint == first.id)
    );
    assert_eq!(
        err.to_string(),
        format!(
            "10.1.0.77 is already leased to endpoint {} in network \"n\"",
            first.id
        )
    );
    // Failed reservations wrote nothing.
    assert_eq!(store.list_endpoints(None).unwrap(), vec![first.clone()]);
    assert_eq!(all_leases(&store).len(), 1);

    // Other refusals.
    assert!(matches!(
        reserve(&store, "nope", None),
        Err(StateError::NetworkNotFound { .. })
    ));
    let mut dup = new_ep(&store, "n", None);
    dup.id = first.id.clone();
    assert!(matches!(
        store.reserve_endpoint(dup),
        Err(StateError::EndpointExists { .. })
    ));
    let mut dup = new_ep(&store, "n", None);
    dup.host_ifname = first.host_ifname.clone();
    assert!(matches!(
        store.reserve_endpoint(dup),
        Err(StateError::HostIfnameInUse { endpoint, .. }) if endpoint == first.id
    ));
    for bad in [
        "",
        "ABCDEF012345",
        "abcdef01234",
        "abcdef0123456",
        "abcdefg12345",
    ] {
        let mut e = new_ep(&store, "n", None);
        e.id = bad.into();
        assert!(matches!(
            store.reserve_endpoint(e),
            Err(StateError::InvalidEndpointId { .. })
        ));
    }
    assert_eq!(all_leases(&store).len(), 1);
}

#[test]
fn tap_gets_a_host_route_prefix() {
    let (_dir, store) = fresh();
    create(&store, "n", "10.1.0.0/24").unwrap();
    let mut e = new_ep(&store, "n", None);
    e.kind = EndpointKind::Tap;
    e.host_ifname = "np-tap0".into();
    e.details = EndpointDetails {
        uid: Some(1000),
        gid: Some(1000),
        queues: Some(4),
        ..EndpointDetails::default()
    };
    let ep = store.reserve_endpoint(e).unwrap();
    assert_eq!(ep.prefix_len, 32);
    assert_eq!(ep.ip, Some(ip("10.1.0.2")));
    assert_eq!(ep.details.queues, Some(4));
    assert_eq!(store.get_endpoint(&ep.id).unwrap(), ep);
}

#[test]
fn slash_29_has_five_usable_addresses() {
    let (_dir, store) = fresh();
    // Default gateway (.1) and one in the middle of the range.
    create(&store, "low", "10.1.0.0/29").unwrap();
    create_gw(&store, "mid", "10.2.0.0/29", ip("10.2.0.4")).unwrap();
    for (name, expected) in [
        (
            "low",
            ["10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.5", "10.1.0.6"],
        ),
        (
            "mid",
            ["10.2.0.1", "10.2.0.2", "10.2.0.3", "10.2.0.5", "10.2.0.6"],
        ),
    ] {
        let got: Vec<Ipv4Addr> = (0..5)
            .map(|_| v4(&reserve(&store, name, None).unwrap()))
            .collect();
        let expected: Vec<Ipv4Addr> = expected.iter().map(|a| ip(a)).collect();
        assert_eq!(got, expected);
        let err = reserve(&store, name, None).unwrap_err();
        assert!(matches!(&err, StateError::SubnetExhausted { network, .. } if network == name));
    }
    assert_eq!(
        reserve(&store, "low", None).unwrap_err().to_string(),
        "network \"low\" (10.1.0.0/29) has no free address left"
    );
}

#[test]
fn remove_network_with_and_without_force() {
    let (_dir, store) = fresh();
    let a = create(&store, "a", "10.1.0.0/24").unwrap();
    create(&store, "b", "10.2.0.0/24").unwrap();
    let e1 = reserve(&store, "a", None).unwrap();
    let e2 = reserve(&store, "a", None).unwrap();
    let other = reserve(&store, "b", None).unwrap();

    let err = store.remove_network("a", false).unwrap_err();
    assert!(matches!(&err, StateError::NetworkInUse { name, endpoints: 2 } if name == "a"));
    assert_eq!(err.to_string(), "network \"a\" still has 2 endpoints");
    assert_eq!(store.list_endpoints(Some("a")).unwrap().len(), 2);

    let (removed, eps) = store.remove_network("a", true).unwrap();
    assert_eq!(removed, a);
    let mut expected = vec![e1, e2];
    expected.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(eps, expected);
    assert!(matches!(
        store.get_network("a"),
        Err(StateError::NetworkNotFound { .. })
    ));
    assert!(matches!(
        store.get_endpoint(&expected[0].id),
        Err(StateError::EndpointNotFound { .. })
    ));
    assert!(matches!(
        store.list_endpoints(Some("a")),
        Err(StateError::NetworkNotFound { .. })
    ));
    assert_eq!(store.list_endpoints(None).unwrap(), vec![other.clone()]);
    assert_eq!(all_leases(&store).len(), 1);
    assert!(matches!(
        store.remove_network("a", true),
        Err(StateError::NetworkNotFound { .. })
    ));

    // The id, subnet, addresses and host devices are free again.
    let again = create(&store, "a2", "10.1.0.0/24").unwrap();
    assert_eq!(again.id, a.id);
    let mut e = new_ep(&store, "a2", None);
    e.host_ifname = expected[0].host_ifname.clone();
    assert_eq!(store.reserve_endpoint(e).unwrap().ip, Some(ip("10.1.0.2")));

    // An empty network goes without force.
    store.release_endpoint(&other.id).unwrap();
    let (b, eps) = store.remove_network("b", false).unwrap();
    assert_eq!(b.name, "b");
    assert!(eps.is_empty());
}

#[test]
fn release_frees_the_ip() {
    let (_dir, store) = fresh();
    create(&store, "n", "10.1.0.0/24").unwrap();
    let eps: Vec<Endpoint> = (0..3)
        .map(|_| reserve(&store, "n", None).unwrap())
        .collect();
    assert_eq!(eps[1].ip, Some(ip("10.1.0.3")));
    let released = store.release_endpoint(&eps[1].id).unwrap();
    assert_eq!(released, eps[1]);
    assert!(matches!(
        store.release_endpoint(&eps[1].id),
        Err(StateError::EndpointNotFound { .. })
    ));
    assert!(matches!(
        store.mark_ready(&eps[1].id),
        Err(StateError::EndpointNotFound { .. })
    ));
    let next = reserve(&store, "n", None).unwrap();
    assert_eq!(next.ip, Some(ip("10.1.0.3")));
    assert_eq!(reserve(&store, "n", None).unwrap().ip, Some(ip("10.1.0.5")));
    // A released requested address can be requested again.
    store.release_endpoint(&eps[0].id).unwrap();
    assert_eq!(
        reserve(&store, "n", Some(ip("10.1.0.2"))).unwrap().ip,
        Some(ip("10.1.0.2"))
    );
}

/// The ephemeral port range of the lease tests: three ports, soon exhausted.
const EPHEMERAL: (u16, u16) = (20000, 20002);

/// A host without sockets of its own: no host port is busy.
fn no_sockets(_: Proto, _: IpAddr, _: u16) -> bool {
    false
}

fn req(proto: Proto, host_ip: &str, host: HostPort, guest_port: u16) -> PortRequest {
    PortRequest {
        proto,
        host_ips: host_ip.split(',').map(|a| a.parse().unwrap()).collect(),
        host,
        guest_port,
    }
}

#[test]
fn port_leases_are_all_or_none() {
    let (_dir, store) = fresh();
    create(&store, "n", "10.1.0.0/24").unwrap();
    let a = reserve(&store, "n", None).unwrap();
    let b = reserve(&store, "n", None).unwrap();
    let taken = store
        .lease_ports(
            &a.id,
            &[req(Proto::Tcp, "0.0.0.0", HostPort::Exact(8080), 80)],
            EPHEMERAL,
            &no_sockets,
        )
        .unwrap();
    assert_eq!(taken[0].id, "tcp/0.0.0.0:8080");
    // B asks for 8081 and 8080 (A's, on every address): none of it is leased, and the
    // error names A's lease.
    let err = store
        .lease_ports(
            &b.id,
            &[
                req(Proto::Tcp, "0.0.0.0", HostPort::Exact(8081), 81),
                req(Proto::Tcp, "127.0.0.1", HostPort::Exact(8080), 80),
            ],
            EPHEMERAL,
            &no_sockets,
        )
        .unwrap_err();
    match &err {
        StateError::PortInUse {
            lease,
            holder,
            endpoint,
        } => {
            assert_eq!(lease, "tcp/127.0.0.1:8080");
            assert_eq!(holder, "tcp/0.0.0.0:8080");
            assert_eq!(endpoint, &a.id);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(store.list_ports().unwrap(), taken);
    // A host socket on 8082 makes a host range skip it, an exact request fail.
    let busy = |_: Proto, _: IpAddr, p: u16| p == 8082;
    let range = HostPort::FirstFree(crate::portspec::Ports {
        first: 8080,
        last: 8084,
    });
    let got = store
        .lease_ports(
            &b.id,
            &[
                req(Proto::Tcp, "0.0.0.0", range, 90),
                req(Proto::Tcp, "0.0.0.0", range, 91),
                req(Proto::Udp, "0.0.0.0", range, 92),
            ],
            EPHEMERAL,
            &busy,
        )
        .unwrap();
    let ports: Vec<u16> = got.iter().map(|l| l.host_port).collect();
    // 8080 is A's; 8082 is the host's; TCP and UDP are independent.
    assert_eq!(ports, [8081, 8083, 8080]);
    assert!(matches!(
        store.lease_ports(
            &b.id,
            &[req(Proto::Tcp, "0.0.0.0", HostPort::Exact(8082), 1)],
            EPHEMERAL,
            &busy
        ),
        Err(StateError::HostPortInUse { port: 8082, .. })
    ));
    // Ephemeral ports: the lowest free, then exhaustion with nothing leased.
    let e = store
        .lease_ports(
            &b.id,
            &[req(Proto::Udp, "0.0.0.0", HostPort::Ephemeral, 53)],
            EPHEMERAL,
            &no_sockets,
        )
        .unwrap();
    assert_eq!(e[0].host_port, 20000);
    let before = store.list_ports().unwrap();
    let many: Vec<PortRequest> = (0..3)
        .map(|i| req(Proto::Udp, "0.0.0.0", HostPort::Ephemeral, 60 + i))
        .collect();
    assert!(matches!(
        store.lease_ports(&b.id, &many, EPHEMERAL, &no_sockets),
        Err(StateError::PortsExhausted {
            first: 20000,
            last: 20002
        })
    ));
    assert_eq!(store.list_ports().unwrap(), before);
}

#[test]
fn endpoints_are_found_by_unique_prefix() {
    let (_dir, store) = fresh();
    create(&store, "n", "10.1.0.0/24").unwrap();
    let with_id = |id: &str| {
        let mut new = new_ep(&store, "n", None);
        new.id = id.into();
        new.host_ifname = format!("np-{id}");
        store.reserve_endpoint(new).unwrap()
    };
    let a = with_id("aaaa00000001");
    let b = with_id("aaaa00000002");
    let c = with_id("bbbb00000001");
    assert_eq!(store.find_endpoint_by_prefix(&a.id).unwrap(), a);
    assert_eq!(store.find_endpoint_by_prefix("aaaa00000002").unwrap(), b);
    assert_eq!(store.find_endpoint_by_prefix("b").unwrap(), c);
    assert!(matches!(
        store.find_endpoint_by_prefix("aaaa"),
        Err(StateError::AmbiguousEndpointId { .. })
    ));
    for missing in ["", "c", "aaaa00000003", "bbbb000000011"] {
        assert!(
            matches!(
                store.find_endpoint_by_prefix(missing),
                Err(StateError::EndpointNotFound { .. })
            ),
            "{missing:?}"
        );
    }
}

#[test]
fn clear_wipes_everything_but_keeps_working() {
    let (dir, store) = fresh();
    create(&store, "n", "10.1.0.0/24").unwrap();
    reserve(&store, "n", None).unwrap();
    store.clear().unwrap();
    assert!(store.list_networks().unwrap().is_empty());
    assert!(store.list_endpoints(None).unwrap().is_empty());
    assert!(all_leases(&store).is_empty());
    let n = create(&store, "n", "10.1.0.0/24").unwrap();
    assert_eq!(n.id, 1);
    assert_eq!(reserve(&store, "n", None).unwrap().ip, Some(ip("10.1.0.2")));
    drop(store);
    let store = Store::open(&dir.db()).unwrap();
    assert_eq!(store.list_networks().unwrap(), vec![n]);
}

#[test]
fn unsupported_schema_is_refused() {
    let dir = TempDir::new();
    {
        let store = Store::open(&dir.db()).unwrap();
        let txn = store.db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(SCHEMA_VERSION_KEY, SCHEMA_VERSION + 1)
            .unwrap();
        txn.commit().unwrap();
    }
    match Store::open(&dir.db()) {
        Err(StateError::UnsupportedSchema {
            found, supported, ..
        }) => {
            assert_eq!(found, SCHEMA_VERSION + 1);
            assert_eq!(supported, SCHEMA_VERSION);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn free_ip_search_scales_to_a_busy_slash_16() {
    let (_dir, store) = fresh();
    // Routed: a bridge network holds no more than a bridge's ports.
    let mut big = bridge_network("big", net("10.200.0.0/16"), ip("10.200.0.1"), None);
    big.mode = Mode::Routed;
    let n = store.create_network(big).unwrap();
    // 20000 leases (10.200.0.2 …) written directly in one transaction, with a gap.
    let base = u32::from(ip("10.200.0.2"));
    let gap = base + 15_000;
    {
        let txn = store.db.begin_write().unwrap();
        {
            let mut t = txn.open_table(IP_LEASES).unwrap();
            for a in base..base + 20_000 {
                if a != gap {
                    t.insert((n.id, a), "000000000000").unwrap();
                }
            }
        }
        txn.commit().unwrap();
    }
    let start = Instant::now();
    assert_eq!(
        reserve(&store, "big", None).unwrap().ip,
        Some(Ipv4Addr::from(gap))
    );
    assert_eq!(
        reserve(&store, "big", None).unwrap().ip,
        Some(Ipv4Addr::from(base + 20_000))
    );
    // Generous bound: a per-address lookup loop is far slower, a scan is milliseconds.
    assert!(start.elapsed().as_secs() < 5, "took {:?}", start.elapsed());
}

/// Interleaved reserve/release/mark_ready on two networks (and reopening), compared
/// with a plain in-memory model. Seed: NETPATH_STATE_SEED, else random (printed).
#[test]
fn randomized_against_model() {
    let seed = std::env::var("NETPATH_STATE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    println!("seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = TempDir::new();
    let mut store = Store::open(&dir.db()).unwrap();
    let nets = [
        create(&store, "a", "10.1.0.0/27").unwrap(),
        create_gw(&store, "b", "10.2.0.0/28", ip("10.2.0.9")).unwrap(),
    ];
    // Model: per network, ip → endpoint id; endpoints by id.
    let mut leases: [BTreeMap<u32, String>; 2] = Default::default();
    let mut endpoints: BTreeMap<String, Endpoint> = BTreeMap::new();

    for step in 0..600 {
        let n = rng.random_range(0..2usize);
        let network = &nets[n];
        let subnet = network.subnet.expect("an IPv4 network");
        let (lo, hi) = (u32::from(subnet.network()), u32::from(subnet.broadcast()));
        let gateway = network.gateway.expect("an IPv4 network");
        let usable = |a: u32| a > lo && a < hi && a != u32::from(gateway);
        match rng.random_range(0..10) {
            0..=3 => {
                let expected = (lo + 1..hi).find(|a| usable(*a) && !leases[n].contains_key(a));
                match reserve(&store, &network.name, None) {
                    Ok(ep) => {
                        assert_eq!(Some(u32::from(v4(&ep))), expected, "step {step}");
                        leases[n].insert(u32::from(v4(&ep)), ep.id.clone());
                        endpoints.insert(ep.id.clone(), ep);
                    }
                    Err(StateError::SubnetExhausted { .. }) => {
                        assert_eq!(expected, None, "step {step}")
                    }
                    Err(e) => panic!("step {step}: {e}"),
                }
            }
            4..=5 => {
                let a = rng.random_range(lo.saturating_sub(2)..=hi + 2);
                match reserve(&store, &network.name, Some(Ipv4Addr::from(a))) {
                    Ok(ep) => {
                        assert!(usable(a) && !leases[n].contains_key(&a), "step {step}");
                        assert_eq!(u32::from(v4(&ep)), a);
                        leases[n].insert(a, ep.id.clone());
                        endpoints.insert(ep.id.clone(), ep);
                    }
                    Err(StateError::InvalidIp { .. }) => assert!(!usable(a), "step {step}"),
                    Err(StateError::IpInUse { endpoint, .. }) => {
                        assert_eq!(leases[n].get(&a), Some(&endpoint), "step {step}")
                    }
                    Err(e) => panic!("step {step}: {e}"),
                }
            }
            6..=7 => {
                if endpoints.is_empty() || rng.random_bool(0.1) {
                    assert!(matches!(
                        store.release_endpoint("ffffffffffff"),
                        Err(StateError::EndpointNotFound { .. })
                    ));
                    continue;
                }
                let i = rng.random_range(0..endpoints.len());
                let id = endpoints.keys().nth(i).unwrap().clone();
                let model = endpoints.remove(&id).unwrap();
                let m = nets.iter().position(|x| x.name == model.network).unwrap();
                assert_eq!(leases[m].remove(&u32::from(v4(&model))), Some(id.clone()));
                assert_eq!(store.release_endpoint(&id).unwrap(), model, "step {step}");
            }
            8 => {
                if let Some(id) = endpoints.keys().next().cloned() {
                    let ep = endpoints.get_mut(&id).unwrap();
                    ep.state = EndpointState::Ready;
                    assert_eq!(store.mark_ready(&id).unwrap(), *ep, "step {step}");
                }
            }
            _ => {
                if rng.random_bool(0.2) {
                    drop(store);
                    store = Store::open(&dir.db()).unwrap();
                }
                let all: Vec<Endpoint> = endpoints.values().cloned().collect();
                assert_eq!(store.list_endpoints(None).unwrap(), all, "step {step}");
                for (m, network) in nets.iter().enumerate() {
                    let ids: BTreeSet<&String> = leases[m].values().collect();
                    let listed = store.list_endpoints(Some(&network.name)).unwrap();
                    assert_eq!(listed.iter().map(|e| &e.id).collect::<BTreeSet<_>>(), ids);
                }
            }
        }
    }
    // Final full comparison, leases included.
    let expected: BTreeMap<(u16, u32), String> = leases
        .iter()
        .enumerate()
        .flat_map(|(m, l)| {
            let nid = nets[m].id;
            l.iter().map(move |(a, id)| ((nid, *a), id.clone()))
        })
        .collect();
    assert_eq!(all_leases(&store), expected);
    assert_eq!(
        store.list_endpoints(None).unwrap(),
        endpoints.values().cloned().collect::<Vec<_>>()
    );
}

#[test]
fn a_bridge_network_holds_as_many_endpoints_as_a_bridge_takes_ports() {
    let (_dir, store) = fresh();
    create(&store, "br", "10.20.0.0/16").unwrap();
    let mut routed = bridge_network("rt", net("10.21.0.0/16"), ip("10.21.0.1"), None);
    routed.mode = Mode::Routed;
    store.create_network(routed).unwrap();
    for i in 0..BRIDGE_MAX_PORTS {
        reserve(&store, "br", None).unwrap_or_else(|e| panic!("endpoint {i}: {e}"));
    }
    let before = store.list_endpoints(Some("br")).unwrap();
    match reserve(&store, "br", None) {
        Err(StateError::BridgeFull { network, max }) => {
            assert_eq!((network.as_str(), max), ("br", 1023));
        }
        other => panic!("the 1,024th endpoint: {other:?}"),
    }
    assert_eq!(
        store.list_endpoints(Some("br")).unwrap(),
        before,
        "nothing changed"
    );
    // A released port is free again; a routed network goes past the bridge's limit.
    store.release_endpoint(&before[0].id).unwrap();
    reserve(&store, "br", None).unwrap();
    for _ in 0..=BRIDGE_MAX_PORTS {
        reserve(&store, "rt", None).unwrap();
    }
}

#[test]
fn the_free_address_search_never_skips_a_freed_address_or_a_reused_network_id() {
    let (_dir, store) = fresh();
    create(&store, "a", "10.30.0.0/24").unwrap();
    let eps: Vec<Endpoint> = (0..5)
        .map(|_| reserve(&store, "a", None).unwrap())
        .collect();
    assert_eq!(v4(&eps[4]), ip("10.30.0.6"));
    // Freed below where the search had got to: given again, then the next one up.
    store.release_endpoint(&eps[1].id).unwrap();
    assert_eq!(
        reserve(&store, "a", None).unwrap().ip,
        Some(ip("10.30.0.3"))
    );
    assert_eq!(
        reserve(&store, "a", None).unwrap().ip,
        Some(ip("10.30.0.7"))
    );
    // A new network that gets the removed one's id starts from its subnet's start.
    store.remove_network("a", true).unwrap();
    let b = create(&store, "b", "10.30.0.0/24").unwrap();
    assert_eq!(b.id, 1);
    assert_eq!(
        reserve(&store, "b", None).unwrap().ip,
        Some(ip("10.30.0.2"))
    );
}
