//! The forwarding table: which node's public address owns a destination in the cluster
//! range. A flat array indexed by the node-subnet number within the cluster range (256
//! slots for a /16 cut into /24s), so a look-up is a subtraction, a shift and a load.
//! The forwarder threads take an `Arc` of the current table once per batch; a sync builds
//! a new table and swaps it in.

use std::net::{Ipv4Addr, SocketAddrV4};

use ipnet::Ipv4Net;

/// Where a packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr {
    pub addr: SocketAddrV4,
    /// The same address ready for sendmsg.
    pub sockaddr: SockAddr,
}

/// A `sockaddr_in`, comparable.
#[derive(Clone, Copy)]
pub struct SockAddr(pub libc::sockaddr_in);

impl SockAddr {
    pub fn new(addr: SocketAddrV4) -> SockAddr {
        SockAddr(libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: addr.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*addr.ip()).to_be(),
            },
            sin_zero: [0; 8],
        })
    }
}

impl PartialEq for SockAddr {
    fn eq(&self, other: &SockAddr) -> bool {
        self.0.sin_port == other.0.sin_port && self.0.sin_addr.s_addr == other.0.sin_addr.s_addr
    }
}
impl Eq for SockAddr {}

impl std::fmt::Debug for SockAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ip = Ipv4Addr::from(u32::from_be(self.0.sin_addr.s_addr));
        write!(f, "{ip}:{}", u16::from_be(self.0.sin_port))
    }
}

/// The outcome of a look-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// Another node's subnet.
    Peer(&'a PeerAddr),
    /// This node's own subnet (the kernel should have sent it to the bridge).
    Local,
    /// Inside the cluster range, but no node owns it.
    Unowned,
    /// Outside the cluster range.
    Outside,
}

#[derive(Debug, Clone)]
pub struct Table {
    cluster: u32,
    cluster_mask: u32,
    /// 32 − node prefix: shift from an address to its subnet number.
    shift: u32,
    local_slot: usize,
    slots: Vec<Option<PeerAddr>>,
    /// Public IPs of the peers, sorted: datagrams from anyone else are dropped.
    sources: Vec<u32>,
}

/// The widest flat array the table builds (a /8 cluster cut into /24s).
pub const MAX_SLOT_BITS: u8 = 16;

impl Table {
    /// An empty table for this node. `local` must be inside `cluster` and at most
    /// [`MAX_SLOT_BITS`] longer (checked by the backend's constructor).
    pub fn new(cluster: Ipv4Net, local: Ipv4Net) -> Table {
        let bits = local.prefix_len() - cluster.prefix_len();
        let shift = 32 - u32::from(local.prefix_len());
        let cluster_net = u32::from(cluster.network());
        Table {
            cluster: cluster_net,
            cluster_mask: u32::from(cluster.netmask()),
            shift,
            local_slot: ((u32::from(local.network()) - cluster_net) >> shift) as usize,
            slots: vec![None; 1usize << bits],
            sources: Vec::new(),
        }
    }

    /// The slot of `subnet`, if it is a node subnet of this table's size in the range.
    pub fn slot_of(&self, subnet: Ipv4Net) -> Option<usize> {
        let net = u32::from(subnet.network());
        let right_size = 32 - u32::from(subnet.prefix_len()) == self.shift;
        (right_size && net & self.cluster_mask == self.cluster)
            .then(|| ((net - self.cluster) >> self.shift) as usize)
    }

    pub fn is_local_slot(&self, slot: usize) -> bool {
        slot == self.local_slot
    }

    /// Sets the owner of `slot` (from [`Table::slot_of`]).
    pub fn insert(&mut self, slot: usize, addr: SocketAddrV4) {
        self.slots[slot] = Some(PeerAddr {
            addr,
            sockaddr: SockAddr::new(addr),
        });
        let ip = u32::from(*addr.ip());
        if let Err(at) = self.sources.binary_search(&ip) {
            self.sources.insert(at, ip);
        }
    }

    /// Where `dst` (host byte order) goes: one look-up per packet.
    #[inline]
    pub fn lookup(&self, dst: u32) -> Lookup<'_> {
        if dst & self.cluster_mask != self.cluster {
            return Lookup::Outside;
        }
        let slot = ((dst - self.cluster) >> self.shift) as usize;
        if slot == self.local_slot {
            return Lookup::Local;
        }
        match &self.slots[slot] {
            Some(peer) => Lookup::Peer(peer),
            None => Lookup::Unowned,
        }
    }

    /// Whether `dst` (host byte order) is in this node's own subnet.
    #[inline]
    pub fn is_local(&self, dst: u32) -> bool {
        dst & self.cluster_mask == self.cluster
            && ((dst - self.cluster) >> self.shift) as usize == self.local_slot
    }

    /// Whether a datagram from `ip` (host byte order) comes from a known peer.
    #[inline]
    pub fn is_peer_source(&self, ip: u32) -> bool {
        self.sources.binary_search(&ip).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn lookups_tell_peer_local_unowned_and_outside_apart() {
        let mut table = Table::new(net("10.244.0.0/16"), net("10.244.1.0/24"));
        let slot = table.slot_of(net("10.244.2.0/24")).unwrap();
        let peer: SocketAddrV4 = "172.31.50.12:8285".parse().unwrap();
        table.insert(slot, peer);
        let ip = |s: &str| u32::from(s.parse::<Ipv4Addr>().unwrap());
        assert!(matches!(table.lookup(ip("10.244.2.7")), Lookup::Peer(p) if p.addr == peer));
        assert_eq!(table.lookup(ip("10.244.1.9")), Lookup::Local);
        assert_eq!(table.lookup(ip("10.244.200.5")), Lookup::Unowned);
        assert_eq!(table.lookup(ip("10.245.0.1")), Lookup::Outside);
        assert!(table.is_peer_source(ip("172.31.50.12")));
        assert!(!table.is_peer_source(ip("172.31.50.13")));
        assert!(table.is_local(ip("10.244.1.200")));
        assert_eq!(table.slot_of(net("10.244.2.0/25")), None, "wrong size");
        assert_eq!(
            table.slot_of(net("10.245.2.0/24")),
            None,
            "outside the range"
        );
    }
}
