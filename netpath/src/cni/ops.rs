//! The commands against the daemon: ADD, DEL and GC (CHECK is in `check`).

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

/// The network of `conf`, created on first use. An IPv6 address the runtime asks for
/// (`ip6`) needs the network dual-stack; that is checked before anything is created.
pub(super) async fn ensure_network(
    client: &Client,
    conf: &NetConf,
    ip6: Option<Ipv6Addr>,
) -> Result<Network> {
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
                        "netpath network {:?} does not exist and the network configuration has no \"subnet\" (or \"subnets\") to create it with",
                        conf.name
                    ),
                ));
            };
            can_lease_ipv6(&conf.name, "would have", req.subnet6, ip6)?;
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
    conf.network.held_to(&network)?;
    can_lease_ipv6(&network.name, "has", network.subnet6, ip6)?;
    Ok(network)
}

/// Fails if an IPv6 address is requested (`ip6`) from network `name`, which `has` (or
/// "would have", once created) `subnet6`, and that is none.
fn can_lease_ipv6(
    name: &str,
    has: &str,
    subnet6: Option<Ipv6Net>,
    ip6: Option<Ipv6Addr>,
) -> Result<()> {
    match (ip6, subnet6) {
        (Some(ip6), None) => Err(CniError::new(
            code::INVALID_CONFIG,
            format!(
                "requested address {ip6} is IPv6, but netpath network {name:?} {has} no IPv6 subnet"
            ),
        )
        .details(
            "an IPv6 address needs a dual-stack network, one made from \"subnets\" with an IPv4 and an IPv6 CIDR",
        )),
        _ => Ok(()),
    }
}

pub(super) async fn add(client: &Client, env: &Env, conf: &NetConf) -> Result<Value> {
    let netns = env.netns.clone().expect("validated: ADD has CNI_NETNS");
    if !netns.exists() {
        return Err(CniError::new(
            code::UNKNOWN_CONTAINER,
            format!("network namespace {} does not exist", netns.display()),
        ));
    }
    let (ip, ip6) = conf.requested_ips(env)?;
    let mac = conf.requested_mac(env)?;
    let specs = ports::specs(&conf.runtime.port_mappings)?;
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
        attached_as_requested(env, "IPv6 address", ip6, ep.ip6)?;
        attached_as_requested(env, "MAC", mac, Some(ep.mac))?;
        let has_ports = client
            .list_ports()
            .await
            .map_err(api)?
            .iter()
            .any(|l| l.endpoint == ep.id);
        if !has_ports {
            ports::publish(client, &ep, &specs).await?;
        }
        let network = client.get_network(&conf.name).await.map_err(api)?;
        return Ok(result(conf, &network, &ep, &netns));
    }
    let network = ensure_network(client, conf, ip6).await?;
    let ep = client
        .add_endpoint(&EndpointCreate {
            network: conf.name.clone(),
            netns: Some(netns.clone()),
            ip,
            ip6,
            ifname: Some(env.ifname.clone()),
            mac,
            container_id: Some(env.container_id.clone()),
            ..EndpointCreate::default()
        })
        .await
        .map_err(api)?;
    if let Err(e) = ports::publish(client, &ep, &specs).await {
        // All or nothing: the runtime treats a failed ADD as never done.
        let _ = client.remove_endpoint(&ep.id).await;
        return Err(e);
    }
    Ok(result(conf, &network, &ep, &netns))
}

/// Fails a repeated ADD whose requested `what` (an address, the MAC), if it asks for
/// one, is not the one the existing attachment has (`None`: it has none).
fn attached_as_requested<T: PartialEq + std::fmt::Display>(
    env: &Env,
    what: &str,
    requested: Option<T>,
    has: Option<T>,
) -> Result<()> {
    let Some(want) = requested else {
        return Ok(());
    };
    let has = match has {
        Some(h) if h == want => return Ok(()),
        Some(h) => h.to_string(),
        None => "none".to_owned(),
    };
    Err(CniError::new(
        code::INVALID_CONFIG,
        format!(
            "container {} ({}) is already attached with {what} {has}, not {want}",
            env.container_id, env.ifname
        ),
    )
    .details(format!("DEL the attachment first to change its {what}")))
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
