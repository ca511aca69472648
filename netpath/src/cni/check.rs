//! CHECK: the attachment is what ADD set up — the endpoint is ready, its host device
//! exists, the container interface has each of its addresses (both families on a
//! dual-stack network), and `prevResult`, if given, lists them.

use super::*;

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
    if let Some((is, says)) = conf.network.subnet_mismatch(&network) {
        return Err(failed(format!(
            "network {:?} exists {is}, the configuration says {says}",
            network.name
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
    let assigned = assigned(&network, ep);
    if let Some(missing) = assigned.iter().find(|a| !addrs.contains(&a.ip)) {
        return Err(failed(format!(
            "interface {} in {} does not have address {}",
            env.ifname,
            netns.display(),
            missing.ip
        )));
    }
    if let Some(prev) = &conf.prev_result {
        let listed: Vec<&Value> = prev
            .get("ips")
            .and_then(Value::as_array)
            .map(|ips| ips.iter().filter_map(|i| i.get("address")).collect())
            .unwrap_or_default();
        if let Some(unlisted) = assigned
            .iter()
            .map(Assigned::cidr)
            .find(|want| !listed.iter().any(|a| a.as_str() == Some(want.as_str())))
        {
            return Err(failed(format!(
                "prevResult does not list the attachment's address {unlisted}"
            )));
        }
    }
    Ok(())
}

/// The addresses of `ifname` inside `netns`, of both families; `None` if there is no
/// such interface.
pub(super) fn addresses_in(netns: &Path, ifname: &str) -> std::io::Result<Option<Vec<IpAddr>>> {
    use std::os::fd::AsFd;
    let file = std::fs::File::open(netns)?;
    let ifname = ifname.to_owned();
    std::thread::spawn(move || -> std::io::Result<Option<Vec<IpAddr>>> {
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(std::io::Error::from)?;
        let mut found = false;
        let mut addrs = Vec::new();
        for a in nix::ifaddrs::getifaddrs().map_err(std::io::Error::from)? {
            if a.interface_name != ifname {
                continue;
            }
            found = true;
            let Some(address) = a.address.as_ref() else {
                continue;
            };
            if let Some(sin) = address.as_sockaddr_in() {
                addrs.push(sin.ip().into());
            } else if let Some(sin6) = address.as_sockaddr_in6() {
                addrs.push(sin6.ip().into());
            }
        }
        Ok(found.then_some(addrs))
    })
    .join()
    .map_err(|_| std::io::Error::other("namespace inspection thread panicked"))?
}
