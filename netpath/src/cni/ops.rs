//! The commands against the daemon: ADD, DEL, CHECK, GC, and the result.

use super::*;

/// Endpoints of `conf.name` that belong to the attachment (container id, ifname).
pub(super) async fn attachment(
    client: &Client,
    env: &Env,
    conf: &NetConf,
) -> Result<Vec<Endpoint>> {
    let all = client.list_endpoints(None).await.map_err(api)?;
    Ok(all
        .into_iter()
        .filter(|e| {
            e.network == conf.name
                && e.details.container_id.as_deref() == Some(env.container_id.as_str())
                && e.details.ifname.as_deref() == Some(env.ifname.as_str())
        })
        .collect())
}

/// The network of `conf`, created on first use.
pub(super) async fn ensure_network(client: &Client, conf: &NetConf) -> Result<Network> {
    let existing = match client.get_network(&conf.name).await {
        Ok(n) => Some(n),
        Err(ClientError::Api { status: 404, .. }) => None,
        Err(e) => return Err(api(e)),
    };
    let network = match existing {
        Some(n) => n,
        None => {
            let Some(req) = conf.network.create(&conf.name) else {
                return Err(CniError::new(
                    code::INVALID_CONFIG,
                    format!(
                        "netpath network {:?} does not exist and the network configuration has no \"subnet\" to create it with",
                        conf.name
                    ),
                ));
            };
            match client.create_network(&req).await {
                Ok(n) => n,
                // Another ADD may have created it meanwhile ("already exists", or a
                // conflict with the devices it is making): use it if it is there now.
                Err(e) => match client.get_network(&conf.name).await {
                    Ok(n) => n,
                    Err(_) => return Err(api(e)),
                },
            }
        }
    };
    same_settings(&network, &conf.network)?;
    Ok(network)
}

/// Fails unless the existing `network` has every setting of `conf` that is given.
fn same_settings(network: &Network, conf: &NetworkSettings) -> Result<()> {
    // What the network is, against what the configuration says it should be.
    let mismatch = |is: String, says: String| {
        CniError::new(
            code::INVALID_CONFIG,
            format!(
                "netpath network {:?} exists {is}, but the network configuration says {says}",
                network.name
            ),
        )
    };
    if let Some(s) = conf.subnet
        && s != network.subnet
    {
        return Err(
            mismatch(format!("with subnet {}", network.subnet), s.to_string()).details(
                "use another network name, or remove the network with `netpath network rm`",
            ),
        );
    }
    if let Some(m) = conf.mode
        && m != network.mode
    {
        return Err(mismatch(
            format!("in {:?} mode", network.mode),
            format!("{m:?}"),
        ));
    }
    let differs = |what: &str, has: String, says: String| {
        mismatch(format!("with {what} {has}"), says)
            .details("make the configuration match the network, or use another network name")
    };
    if let Some(g) = conf.gateway
        && g != network.gateway
    {
        return Err(differs(
            "gateway",
            network.gateway.to_string(),
            g.to_string(),
        ));
    }
    if let Some(m) = conf.mtu
        && m != network.mtu
    {
        return Err(differs("MTU", network.mtu.to_string(), m.to_string()));
    }
    if let Some(n) = &conf.no_masquerade
        && *n != network.no_masquerade
    {
        let show = |v: &[Ipv4Net]| {
            let s: Vec<String> = v.iter().map(|c| c.to_string()).collect();
            format!("[{}]", s.join(", "))
        };
        return Err(differs(
            "noMasquerade",
            show(&network.no_masquerade),
            show(n),
        ));
    }
    if let Some(u) = &conf.uplink
        && network.uplink.as_ref() != Some(u)
    {
        let has = network.uplink.clone().unwrap_or_else(|| "none".into());
        return Err(differs("uplink", has, u.clone()));
    }
    Ok(())
}

pub(super) async fn add(client: &Client, env: &Env, conf: &NetConf) -> Result<Value> {
    let netns = env.netns.clone().expect("validated: ADD has CNI_NETNS");
    if !netns.exists() {
        return Err(CniError::new(
            code::UNKNOWN_CONTAINER,
            format!("network namespace {} does not exist", netns.display()),
        ));
    }
    let ip = conf.requested_ip(env)?;
    let mac = conf.requested_mac(env)?;
    let mut specs = Vec::new();
    for m in &conf.runtime.port_mappings {
        specs.extend(m.spec()?);
    }
    if let Some(ep) = attachment(client, env, conf).await?.into_iter().next() {
        // A repeated ADD: answer with what exists.
        if ep.state != EndpointState::Ready {
            return Err(CniError::new(
                code::TRY_AGAIN_LATER,
                format!(
                    "the attachment of container {} ({}) is still being set up (endpoint {})",
                    env.container_id, env.ifname, ep.id
                ),
            ));
        }
        // The same ADD again is answered with what exists; an ADD asking for another
        // address or MAC is not the same request.
        attached_as_requested(env, "address", ip, ep.ip)?;
        attached_as_requested(env, "MAC", mac, ep.mac)?;
        let has_ports = client
            .list_ports()
            .await
            .map_err(api)?
            .iter()
            .any(|l| l.endpoint == ep.id);
        if !has_ports {
            publish(client, &ep, &specs).await?;
        }
        return Ok(result(conf, &ep, &netns));
    }
    ensure_network(client, conf).await?;
    let ep = client
        .add_endpoint(&EndpointCreate {
            network: conf.name.clone(),
            netns: Some(netns.clone()),
            pid: None,
            ip,
            ip6: None,
            ifname: Some(env.ifname.clone()),
            mac,
            container_id: Some(env.container_id.clone()),
        })
        .await
        .map_err(api)?;
    if let Err(e) = publish(client, &ep, &specs).await {
        // All or nothing: the runtime treats a failed ADD as never done.
        let _ = client.remove_endpoint(&ep.id).await;
        return Err(e);
    }
    Ok(result(conf, &ep, &netns))
}

/// Fails a repeated ADD whose requested `what` (its address, its MAC), if it asks for
/// one, is not the one the existing attachment has.
fn attached_as_requested<T: PartialEq + std::fmt::Display>(
    env: &Env,
    what: &str,
    requested: Option<T>,
    has: T,
) -> Result<()> {
    match requested {
        Some(want) if want != has => Err(CniError::new(
            code::INVALID_CONFIG,
            format!(
                "container {} ({}) is already attached with {what} {has}, not {want}",
                env.container_id, env.ifname
            ),
        )
        .details(format!("DEL the attachment first to change its {what}"))),
        _ => Ok(()),
    }
}

/// Publishes `specs` for `ep`, all or none (one request).
pub(super) async fn publish(client: &Client, ep: &Endpoint, specs: &[String]) -> Result<()> {
    if specs.is_empty() {
        return Ok(());
    }
    let r = client
        .publish_ports(&PortPublish {
            endpoint: ep.id.clone(),
            spec: None,
            specs: specs.to_vec(),
        })
        .await;
    if let Err(e) = r {
        let mut err = api(e);
        err.msg = format!("publishing ports {}: {}", specs.join(", "), err.msg);
        return Err(err);
    }
    Ok(())
}

/// The host side's MAC, read from sysfs (the plugin runs in the host's namespace).
pub(super) fn host_mac(ifname: &str) -> Option<String> {
    std::fs::read_to_string(Path::new("/sys/class/net").join(ifname).join("address"))
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// The ADD result for `ep`, in the format of `conf.cni_version`.
pub fn result(conf: &NetConf, ep: &Endpoint, netns: &Path) -> Value {
    let mut host = json!({"name": ep.host_ifname});
    if let Some(mac) = host_mac(&ep.host_ifname) {
        host["mac"] = json!(mac);
    }
    let container = json!({
        "name": ep.details.ifname.as_deref().unwrap_or("eth0"),
        "mac": ep.mac,
        "sandbox": netns,
    });
    let mut ip = json!({
        "address": format!("{}/{}", ep.ip, ep.prefix_len),
        "gateway": ep.gateway.to_string(),
        "interface": 1,
    });
    if !at_least(&conf.cni_version, "1.0.0") {
        ip["version"] = json!("4");
    }
    let mut r = json!({
        "cniVersion": conf.cni_version,
        "interfaces": [host, container],
        "ips": [ip],
        "routes": [{"dst": "0.0.0.0/0", "gw": ep.gateway.to_string()}],
    });
    r["dns"] = conf.dns.clone().unwrap_or_else(|| json!({}));
    r
}

pub(super) async fn del(client: &Client, env: &Env, conf: &NetConf) -> Result<()> {
    for ep in attachment(client, env, conf).await? {
        match client.remove_endpoint(&ep.id).await {
            Ok(_) | Err(ClientError::Api { status: 404, .. }) => {}
            Err(e) => return Err(api(e)),
        }
    }
    Ok(())
}

pub(super) async fn check(client: &Client, env: &Env, conf: &NetConf) -> Result<()> {
    let failed = |m: String| CniError::new(code::CHECK_FAILED, m);
    let eps = attachment(client, env, conf).await?;
    let Some(ep) = eps.first() else {
        return Err(CniError::new(
            code::UNKNOWN_CONTAINER,
            format!(
                "netpath has no attachment of container {} ({}) on network {:?}",
                env.container_id, env.ifname, conf.name
            ),
        ));
    };
    if ep.state != EndpointState::Ready {
        return Err(failed(format!("endpoint {} is not ready", ep.id)));
    }
    let network = client.get_network(&conf.name).await.map_err(api)?;
    if let Some(s) = conf.network.subnet
        && s != network.subnet
    {
        return Err(failed(format!(
            "network {:?} has subnet {}, the configuration says {s}",
            network.name, network.subnet
        )));
    }
    if !Path::new("/sys/class/net").join(&ep.host_ifname).exists() {
        return Err(failed(format!(
            "the host side {} of endpoint {} is missing",
            ep.host_ifname, ep.id
        )));
    }
    let netns = env.netns.clone().expect("validated: CHECK has CNI_NETNS");
    if !netns.exists() {
        return Err(failed(format!(
            "network namespace {} does not exist",
            netns.display()
        )));
    }
    let addrs = addresses_in(&netns, &env.ifname)
        .map_err(|e| failed(format!("cannot inspect {}: {e}", netns.display())))?;
    let Some(addrs) = addrs else {
        return Err(failed(format!(
            "interface {} is missing in {}",
            env.ifname,
            netns.display()
        )));
    };
    if !addrs.contains(&ep.ip) {
        return Err(failed(format!(
            "interface {} in {} does not have address {}",
            env.ifname,
            netns.display(),
            ep.ip
        )));
    }
    if let Some(prev) = &conf.prev_result {
        let want = format!("{}/{}", ep.ip, ep.prefix_len);
        let listed = prev
            .get("ips")
            .and_then(Value::as_array)
            .is_some_and(|ips| ips.iter().any(|i| i.get("address") == Some(&json!(want))));
        if !listed {
            return Err(failed(format!(
                "prevResult does not list the attachment's address {want}"
            )));
        }
    }
    Ok(())
}

/// The IPv4 addresses of `ifname` inside `netns`; `None` if there is no such interface.
pub(super) fn addresses_in(netns: &Path, ifname: &str) -> std::io::Result<Option<Vec<Ipv4Addr>>> {
    use std::os::fd::AsFd;
    let file = std::fs::File::open(netns)?;
    let ifname = ifname.to_owned();
    std::thread::spawn(move || -> std::io::Result<Option<Vec<Ipv4Addr>>> {
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(std::io::Error::from)?;
        let mut found = false;
        let mut addrs = Vec::new();
        for a in nix::ifaddrs::getifaddrs().map_err(std::io::Error::from)? {
            if a.interface_name != ifname {
                continue;
            }
            found = true;
            if let Some(sin) = a.address.as_ref().and_then(|s| s.as_sockaddr_in()) {
                addrs.push(sin.ip());
            }
        }
        Ok(found.then_some(addrs))
    })
    .join()
    .map_err(|_| std::io::Error::other("namespace inspection thread panicked"))?
}

pub(super) async fn gc(client: &Client, conf: &NetConf) -> Result<()> {
    let Some(valid) = &conf.valid_attachments else {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            "GC needs \"cni.dev/valid-attachments\" in the network configuration",
        ));
    };
    let keep: HashSet<(&str, &str)> = valid
        .iter()
        .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
        .collect();
    let all = client.list_endpoints(None).await.map_err(api)?;
    for ep in all.iter().filter(|e| e.network == conf.name) {
        let Some(cid) = ep.details.container_id.as_deref() else {
            continue; // not made by CNI
        };
        if keep.contains(&(cid, ep.details.ifname.as_deref().unwrap_or(""))) {
            continue;
        }
        match client.remove_endpoint(&ep.id).await {
            Ok(_) | Err(ClientError::Api { status: 404, .. }) => {}
            Err(e) => return Err(api(e)),
        }
    }
    Ok(())
}
