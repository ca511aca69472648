//! The IpamDriver (`docker network create --ipam-driver netpath`): pools are the
//! `--subnet` given (netpath picks none itself), addresses are handed out lowest first
//! (the gateway first of all). Pool ids are `netpath/<cidr>`, so they are derived from
//! the pool. Saved in the daemon's state directory ([`Saved`]), so a restart forgets
//! nothing.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{driver::Refusal, saved::Saved, wire};

/// The address spaces netpath answers to `GetDefaultAddressSpaces`.
pub const LOCAL_SPACE: &str = "netpath-local";
pub const GLOBAL_SPACE: &str = "netpath-global";

/// The pools, by pool id.
pub type Pools = BTreeMap<String, Pool>;

pub struct Ipam {
    pools: Saved<Pools>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    pub net: IpNet,
    pub used: BTreeSet<IpAddr>,
}

/// The pool `id`, or why not.
fn pool<'a>(pools: &'a mut Pools, id: &str) -> Result<&'a mut Pool, Refusal> {
    pools.get_mut(id).ok_or_else(|| format!("no pool {id:?}"))
}

fn pool_id(net: &IpNet) -> String {
    format!("netpath/{net}")
}

impl Ipam {
    pub fn new(pools: Saved<Pools>) -> Ipam {
        Ipam { pools }
    }

    /// Every pool with its leases, by pool id.
    pub fn snapshot(&self) -> Pools {
        self.pools.get()
    }

    pub fn capabilities() -> Value {
        json!({"RequiresMACAddress": false, "RequiresRequestReplay": false})
    }

    pub fn default_spaces() -> Value {
        json!({"LocalDefaultAddressSpace": LOCAL_SPACE, "GlobalDefaultAddressSpace": GLOBAL_SPACE})
    }

    pub fn request_pool(&self, req: wire::RequestPool) -> Result<Value, Refusal> {
        if req.pool.is_empty() {
            return Err("netpath IPAM needs the pool: give --subnet".into());
        }
        if !req.sub_pool.is_empty() {
            return Err(format!(
                "--ip-range {} is not supported by netpath IPAM",
                req.sub_pool
            ));
        }
        let net: IpNet = req
            .pool
            .parse()
            .map_err(|_| format!("pool {:?} is not a CIDR", req.pool))?;
        if net.trunc() != net {
            return Err(format!(
                "pool {net} has host bits set (did you mean {})",
                net.trunc()
            ));
        }
        if req.v6 != matches!(net, IpNet::V6(_)) {
            return Err(format!(
                "pool {net} is not of the family V6={} asks for",
                req.v6
            ));
        }
        self.pools.update(|pools| {
            if let Some((id, _)) = pools
                .iter()
                .find(|(_, p)| p.net.contains(&net.network()) || net.contains(&p.net.network()))
            {
                return Err(format!("pool {net} overlaps pool {id}"));
            }
            let id = pool_id(&net);
            let pool = Pool {
                net,
                used: BTreeSet::new(),
            };
            pools.insert(id.clone(), pool);
            Ok(json!({"PoolID": id, "Pool": net.to_string(), "Data": {}}))
        })
    }

    pub fn release_pool(&self, req: wire::ReleasePool) -> Result<Value, Refusal> {
        self.pools.update(|pools| {
            pools
                .remove(&req.pool_id)
                .ok_or_else(|| format!("no pool {:?}", req.pool_id))?;
            Ok(json!({}))
        })
    }

    pub fn request_address(&self, req: wire::RequestAddress) -> Result<Value, Refusal> {
        self.pools.update(|pools| Self::lease(pools, req))
    }

    fn lease(pools: &mut Pools, req: wire::RequestAddress) -> Result<Value, Refusal> {
        let pool = pool(pools, &req.pool_id)?;
        let addr = if req.address.is_empty() {
            pool.net
                .hosts()
                .find(|a| *a != pool.net.network() && !pool.used.contains(a))
                .ok_or_else(|| format!("pool {} has no free address", pool.net))?
        } else {
            let a: IpAddr = req
                .address
                .parse()
                .map_err(|_| format!("address {:?} is not an address", req.address))?;
            if !pool.net.contains(&a) || a == pool.net.network() {
                return Err(format!("address {a} is not a host of pool {}", pool.net));
            }
            if pool.used.contains(&a) {
                return Err(format!("address {a} is already in use"));
            }
            a
        };
        pool.used.insert(addr);
        Ok(json!({"Address": format!("{addr}/{}", pool.net.prefix_len()), "Data": {}}))
    }

    pub fn release_address(&self, req: wire::ReleaseAddress) -> Result<Value, Refusal> {
        self.pools.update(|pools| Self::release(pools, req))
    }

    fn release(pools: &mut Pools, req: wire::ReleaseAddress) -> Result<Value, Refusal> {
        let pool = pool(pools, &req.pool_id)?;
        let a: IpAddr = req
            .address
            .split_once('/')
            .map_or(req.address.as_str(), |(a, _)| a)
            .parse()
            .map_err(|_| format!("address {:?} is not an address", req.address))?;
        if !pool.used.remove(&a) {
            return Err(format!("address {a} is not leased from pool {}", pool.net));
        }
        Ok(json!({}))
    }
}
