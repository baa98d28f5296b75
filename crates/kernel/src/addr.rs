//! Interface addresses.

use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::error::Result;
use crate::netlink::{Batch, Netlink};

fn family(ip: &IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn address_message(index: u32, addr: &IpNet) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.family = family(&addr.addr());
    msg.header.prefix_len = addr.prefix_len();
    msg.header.index = index;
    msg.attributes.push(AddressAttribute::Local(addr.addr()));
    msg.attributes.push(AddressAttribute::Address(addr.addr()));
    if let IpNet::V4(v4) = addr
        && v4.prefix_len() < 31
    {
        msg.attributes
            .push(AddressAttribute::Broadcast(v4.broadcast()));
    }
    msg
}

impl Batch {
    /// Adds `addr` to link `index`; already there counts as success.
    pub fn ensure_address(&mut self, index: u32, addr: IpNet) -> usize {
        self.push(
            RouteNetlinkMessage::NewAddress(address_message(index, &addr)),
            NLM_F_CREATE | NLM_F_EXCL,
            format!("add address {addr} to link #{index}"),
            true,
        )
    }
}

impl Netlink {
    /// Adds `addr` to link `index`; succeeds if it is already there.
    pub fn ensure_address(&mut self, index: u32, addr: IpNet) -> Result<()> {
        match self.change(
            RouteNetlinkMessage::NewAddress(address_message(index, &addr)),
            NLM_F_CREATE | NLM_F_EXCL,
            || format!("add address {addr} to link #{index}"),
        ) {
            Err(e) if e.is_exists() => Ok(()),
            other => other,
        }
    }

    pub fn delete_address(&mut self, index: u32, addr: IpNet) -> Result<()> {
        self.change(
            RouteNetlinkMessage::DelAddress(address_message(index, &addr)),
            0,
            || format!("delete address {addr} from link #{index}"),
        )
    }

    /// Addresses of link `index`, or of every link when `None`, as
    /// (link index, address/prefix).
    pub fn addresses(&mut self, index: Option<u32>) -> Result<Vec<(u32, IpNet)>> {
        let replies = self.dump(
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            || "list addresses".into(),
        )?;
        let mut out = Vec::new();
        for reply in replies {
            let RouteNetlinkMessage::NewAddress(msg) = reply else {
                continue;
            };
            if index.is_some_and(|i| i != msg.header.index) {
                continue;
            }
            let local = msg.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
            let address = msg.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            });
            if let Some(ip) = local.or(address)
                && let Ok(net) = IpNet::new(ip, msg.header.prefix_len)
            {
                out.push((msg.header.index, net));
            }
        }
        Ok(out)
    }
}
