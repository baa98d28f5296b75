//! Ranges of allocatable items, and taking or giving back one item atomically through the
//! store: one key per allocated item, taken with create-if-absent, so every apiserver sharing
//! the store sees the same allocations and no item is handed out twice.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::time::{SystemTime, UNIX_EPOCH};

use ipnet::Ipv4Net;
use podnet_api::net;
use podnet_store::{Store, StoreError};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ApiResult};

/// Every allocation key lives under this prefix.
pub(crate) const ALLOCATIONS_PREFIX: &str = "/registry/allocations/";

/// How many consecutive taken items a random allocation probes before it lists the range to
/// find the free ones (a range that is that full makes probing slow).
const RANDOM_PROBES: u64 = 16;

/// What is allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    ServiceIp,
    NodePort,
    PodCidr,
    LbIp,
}

impl Kind {
    pub(crate) const ALL: [Kind; 4] = [Kind::ServiceIp, Kind::NodePort, Kind::PodCidr, Kind::LbIp];

    /// The key prefix of this kind's allocations.
    pub(crate) fn prefix(self) -> &'static str {
        match self {
            Kind::ServiceIp => "/registry/allocations/serviceips/",
            Kind::NodePort => "/registry/allocations/nodeports/",
            Kind::PodCidr => "/registry/allocations/podcidrs/",
            Kind::LbIp => "/registry/allocations/lbips/",
        }
    }

    /// The key of one item, named as [`Kind::item_name`] names it.
    pub(crate) fn key(self, item_name: &str) -> String {
        format!("{}{item_name}", self.prefix())
    }
}

/// The name of an IP item (service IP, load-balancer IP) in its key.
pub(crate) fn ip_name(ip: Ipv4Addr) -> String {
    ip.to_string()
}

/// The name of a pod CIDR in its key (`/` is a key separator): `10.244.3.0-24`.
pub(crate) fn cidr_name(net: &Ipv4Net) -> String {
    format!("{}-{}", net.network(), net.prefix_len())
}

/// How a dynamic allocation picks among the free items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Strategy {
    /// A random start, probing forward: concurrent allocators rarely collide (service IPs,
    /// node ports).
    Random,
    /// The lowest free item (pod CIDRs and load-balancer IPs, as kube-controller-manager and
    /// MetalLB hand them out).
    Lowest,
}

/// One range of items. Items are numbers: an IPv4 address as `u32`, a port, or the network
/// address of a pod CIDR block; the range is `first, first + step, ..., last`.
#[derive(Debug, Clone)]
pub(crate) struct Space {
    pub(crate) kind: Kind,
    first: u64,
    last: u64,
    step: u64,
    /// An item that may be requested but is never handed out dynamically (the `kubernetes`
    /// Service IP).
    reserved: Option<u64>,
    /// The prefix length of a pod CIDR block.
    block_len: u8,
}

impl Space {
    /// The service range: the network and broadcast addresses are never used (as in
    /// Kubernetes), the first address is reserved for the `kubernetes` Service.
    pub(crate) fn service_ips(range: &Ipv4Net) -> Space {
        let base = u64::from(u32::from(range.network()));
        let size = net::size(range);
        // An empty space (first > last) for networks too small to have a usable address.
        let (first, last) = if size >= 4 {
            (base + 2, base + size - 2)
        } else {
            (1, 0)
        };
        Space {
            kind: Kind::ServiceIp,
            first,
            last,
            step: 1,
            reserved: (size >= 4).then_some(base + 1),
            block_len: 32,
        }
    }

    pub(crate) fn node_ports(range: &std::ops::RangeInclusive<u16>) -> Space {
        Space {
            kind: Kind::NodePort,
            first: u64::from(*range.start()),
            last: u64::from(*range.end()),
            step: 1,
            reserved: None,
            block_len: 32,
        }
    }

    /// The `/block_len` blocks of the cluster range; `None` when `block_len` does not cut it.
    pub(crate) fn pod_cidrs(cluster: &Ipv4Net, block_len: u8) -> Option<Space> {
        if block_len < cluster.prefix_len() || block_len > 32 {
            return None;
        }
        let base = u64::from(u32::from(cluster.network()));
        let step = 1u64 << (32 - u32::from(block_len));
        let count = 1u64 << u32::from(block_len - cluster.prefix_len());
        Some(Space {
            kind: Kind::PodCidr,
            first: base,
            last: base + (count - 1) * step,
            step,
            reserved: None,
            block_len,
        })
    }

    /// A load-balancer pool: every address, but the network and broadcast addresses of a
    /// pool of 4 or more.
    pub(crate) fn lb_ips(pool: &Ipv4Net) -> Space {
        let base = u64::from(u32::from(pool.network()));
        let size = net::size(pool);
        let (first, last) = if size >= 4 {
            (base + 1, base + size - 2)
        } else {
            (base, base + size - 1)
        };
        Space {
            kind: Kind::LbIp,
            first,
            last,
            step: 1,
            reserved: None,
            block_len: 32,
        }
    }

    /// How many items dynamic allocation can hand out.
    pub(crate) fn count(&self) -> u64 {
        if self.last < self.first {
            0
        } else {
            (self.last - self.first) / self.step + 1
        }
    }

    fn nth(&self, i: u64) -> u64 {
        self.first + i * self.step
    }

    /// Whether `item` may be requested.
    pub(crate) fn contains(&self, item: u64) -> bool {
        self.reserved == Some(item)
            || (item >= self.first
                && item <= self.last
                && (item - self.first).is_multiple_of(self.step))
    }

    /// The item's name in its key.
    pub(crate) fn name(&self, item: u64) -> String {
        match self.kind {
            Kind::NodePort => item.to_string(),
            Kind::ServiceIp | Kind::LbIp => ip_name(ipv4(item)),
            Kind::PodCidr => format!("{}-{}", ipv4(item), self.block_len),
        }
    }

    /// The item named by a key's last segment, if it is one of this space's names.
    fn parse(&self, name: &str) -> Option<u64> {
        match self.kind {
            Kind::NodePort => name.parse::<u16>().ok().map(u64::from),
            Kind::ServiceIp | Kind::LbIp => name
                .parse::<Ipv4Addr>()
                .ok()
                .map(|ip| u64::from(u32::from(ip))),
            Kind::PodCidr => {
                let (addr, len) = name.split_once('-')?;
                (len.parse::<u8>().ok()? == self.block_len)
                    .then(|| addr.parse::<Ipv4Addr>().ok())
                    .flatten()
                    .map(|ip| u64::from(u32::from(ip)))
            }
        }
    }

    pub(crate) fn key(&self, item: u64) -> String {
        self.kind.key(&self.name(item))
    }
}

/// An item as a `u32` address. Items of IP spaces come from `u32`s, so nothing is cut.
pub(crate) fn ipv4(item: u64) -> Ipv4Addr {
    Ipv4Addr::from(u32::try_from(item).unwrap_or(u32::MAX))
}

/// The value of an allocation key: who holds it and since when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    /// `services/<namespace>/<name>` or `nodes/<name>`.
    pub(crate) owner: String,
    /// Unix seconds when it was taken.
    pub(crate) at: u64,
}

impl Record {
    pub(crate) fn now(owner: &str) -> Record {
        Record {
            owner: owner.to_owned(),
            at: unix_now(),
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        // A struct of a string and a number always serialises.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The record, or `None` when the value is not one (written by something else).
    pub(crate) fn decode(bytes: &[u8]) -> Option<Record> {
        serde_json::from_slice(bytes).ok()
    }
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// One key taken by an allocation, with its revision so giving it back deletes exactly it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Taken {
    pub(crate) key: String,
    pub(crate) revision: i64,
}

/// Takes `key` for `owner`; `None` if it is already taken.
pub(crate) async fn take_key(
    store: &dyn Store,
    key: &str,
    owner: &str,
) -> ApiResult<Option<Taken>> {
    match store.create(key, Record::now(owner).encode(), None).await {
        Ok(kv) => Ok(Some(Taken {
            key: kv.key,
            revision: kv.mod_revision,
        })),
        Err(StoreError::AlreadyExists { .. }) => Ok(None),
        Err(e) => Err(ApiError::store(&e)),
    }
}

/// The outcome of taking a requested item.
#[derive(Debug)]
pub(crate) enum Requested {
    /// Newly taken.
    Taken(Taken),
    /// Already held by the same owner (an object of the same name that is being replaced, a
    /// concurrent request for the same object, or an object whose release was lost): kept,
    /// not given back on rollback.
    AlreadyOurs,
    /// Held by someone else.
    Busy,
}

/// How many times [`take_requested`] looks again when the key changes under it.
const REQUEST_ATTEMPTS: usize = 8;

/// Takes a requested item for `owner`.
///
/// An item already recorded for `owner` may be held by a concurrent request for the same
/// object (two creates of one name, two updates of one object), which gives it back if its
/// write fails — while this request's write may succeed. So the record is rewritten here:
/// the key's revision moves, and that other request's rollback (a delete at the revision it
/// took the key at) leaves the key in place. If both writes fail the key stays recorded for
/// `owner` until the object of that name takes it again or a repair frees it: a leak, never
/// an item handed out twice.
pub(crate) async fn take_requested(
    store: &dyn Store,
    space: &Space,
    item: u64,
    owner: &str,
) -> ApiResult<Requested> {
    let key = space.key(item);
    for _ in 0..REQUEST_ATTEMPTS {
        if let Some(taken) = take_key(store, &key, owner).await? {
            return Ok(Requested::Taken(taken));
        }
        // Given back between the create and this read: try to take it again.
        let Some(current) = store.get(&key).await.map_err(|e| ApiError::store(&e))? else {
            continue;
        };
        match Record::decode(&current.value) {
            Some(rec) if rec.owner == owner => {}
            _ => return Ok(Requested::Busy),
        }
        match store
            .update(&key, Record::now(owner).encode(), current.mod_revision)
            .await
        {
            Ok(_) => return Ok(Requested::AlreadyOurs),
            Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => continue,
            Err(e) => return Err(ApiError::store(&e)),
        }
    }
    // The key kept changing under us; someone else holds it for now.
    Ok(Requested::Busy)
}

/// Takes any free item of `space` for `owner`; `None` when the range is full. Bounded: at most [`RANDOM_PROBES`]
/// probes, then one list of the range and one attempt per free item.
pub(crate) async fn take_next(
    store: &dyn Store,
    space: &Space,
    owner: &str,
    strategy: Strategy,
) -> ApiResult<Option<(u64, Taken)>> {
    let n = space.count();
    if n == 0 {
        return Ok(None);
    }
    let start = match strategy {
        Strategy::Random => rand::random_range(0..n),
        Strategy::Lowest => 0,
    };
    if strategy == Strategy::Random {
        let probes = n.min(RANDOM_PROBES);
        for i in 0..probes {
            let item = space.nth((start + i) % n);
            if let Some(taken) = take_key(store, &space.key(item), owner).await? {
                return Ok(Some((item, taken)));
            }
        }
        if probes == n {
            // Every item was tried.
            return Ok(None);
        }
    }
    // Find the free items from one list of the range.
    let listed = store
        .list(space.kind.prefix(), None)
        .await
        .map_err(|e| ApiError::store(&e))?;
    let used: HashSet<u64> = listed
        .items
        .iter()
        .filter_map(|kv| kv.key.strip_prefix(space.kind.prefix()))
        .filter_map(|name| space.parse(name))
        .filter(|item| space.contains(*item) && space.reserved != Some(*item))
        .collect();
    if used.len() as u64 >= n {
        return Ok(None);
    }
    for i in 0..n {
        let item = space.nth((start + i) % n);
        if used.contains(&item) {
            continue;
        }
        if let Some(taken) = take_key(store, &space.key(item), owner).await? {
            return Ok(Some((item, taken)));
        }
    }
    Ok(None)
}

/// Gives back `key` if `owner` holds it. Failures are logged: a key left behind is freed by
/// the next repair.
pub(crate) async fn release_key(store: &dyn Store, key: &str, owner: &str) -> bool {
    let current = match store.get(key).await {
        Ok(Some(kv)) => kv,
        Ok(None) => return false,
        Err(e) => {
            tracing::warn!(key, error = %e, "reading an allocation to release it failed; the next repair frees it");
            return false;
        }
    };
    match Record::decode(&current.value) {
        Some(rec) if rec.owner == owner => {}
        _ => return false,
    }
    delete_at(store, key, current.mod_revision).await
}

/// Deletes `key` if it is still at `revision`.
pub(crate) async fn delete_at(store: &dyn Store, key: &str, revision: i64) -> bool {
    match store.delete(key, Some(revision)).await {
        Ok(_) => true,
        Err(StoreError::NotFound { .. } | StoreError::Conflict { .. }) => false,
        Err(e) => {
            tracing::warn!(key, error = %e, "releasing an allocation failed; the next repair frees it");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn service_space_skips_network_broadcast_and_reserved() {
        let s = Space::service_ips(&n("10.96.0.0/29"));
        assert_eq!(s.count(), 5);
        assert_eq!(s.name(s.nth(0)), "10.96.0.2");
        assert_eq!(s.name(s.nth(4)), "10.96.0.6");
        let ip = |s: &str| u64::from(u32::from(s.parse::<Ipv4Addr>().unwrap()));
        assert!(s.contains(ip("10.96.0.1")));
        assert!(!s.contains(ip("10.96.0.0")));
        assert!(!s.contains(ip("10.96.0.7")));
        assert_eq!(s.reserved, Some(ip("10.96.0.1")));
    }

    #[test]
    fn pod_cidr_space_names_blocks() {
        let s = Space::pod_cidrs(&n("10.244.0.0/16"), 24).unwrap();
        assert_eq!(s.count(), 256);
        assert_eq!(s.name(s.nth(3)), "10.244.3.0-24");
        assert_eq!(s.parse("10.244.3.0-24"), Some(s.nth(3)));
        assert_eq!(s.parse("10.244.3.0-25"), None);
        assert!(!s.contains(s.nth(3) + 1));
        assert!(Space::pod_cidrs(&n("10.244.0.0/16"), 15).is_none());
    }

    #[test]
    fn lb_space() {
        assert_eq!(Space::lb_ips(&n("192.168.1.240/29")).count(), 6);
        assert_eq!(Space::lb_ips(&n("192.168.1.240/32")).count(), 1);
        assert_eq!(Space::lb_ips(&n("192.168.1.240/31")).count(), 2);
    }
}
