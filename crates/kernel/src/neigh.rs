//! Neighbour (ARP) entries and bridge/vxlan forwarding database entries.

use std::net::Ipv4Addr;

use netlink_packet_core::{NLM_F_APPEND, NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::error::Result;
use crate::link::format_mac;
use crate::netlink::Netlink;

/// A permanent neighbour or FDB entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    pub ifindex: u32,
    /// For an ARP entry the IP; for an FDB entry the remote (VTEP) IP, if any.
    pub ip: Option<Ipv4Addr>,
    pub mac: [u8; 6],
    pub permanent: bool,
}

fn arp_message(ifindex: u32, ip: Ipv4Addr, mac: Option<[u8; 6]>) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.ifindex = ifindex;
    msg.header.state = NeighbourState::Permanent;
    msg.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
    if let Some(mac) = mac {
        msg.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    }
    msg
}

fn fdb_message(ifindex: u32, mac: [u8; 6], dst: Option<Ipv4Addr>) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Bridge;
    msg.header.ifindex = ifindex;
    msg.header.state = NeighbourState::Permanent;
    msg.header.flags = NeighbourFlags::Own;
    msg.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    if let Some(dst) = dst {
        msg.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(dst)));
    }
    msg
}

fn parse(msg: &NeighbourMessage) -> Option<Neighbour> {
    let mut ip = None;
    let mut mac = None;
    for attr in &msg.attributes {
        match attr {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(addr)) => ip = Some(*addr),
            // In AF_BRIDGE (FDB) replies the destination arrives as raw bytes.
            NeighbourAttribute::Destination(NeighbourAddress::Other(bytes)) if bytes.len() == 4 => {
                ip = Some(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]));
            }
            NeighbourAttribute::LinkLayerAddress(bytes) if bytes.len() == 6 => {
                let mut m = [0u8; 6];
                m.copy_from_slice(bytes);
                mac = Some(m);
            }
            _ => {}
        }
    }
    Some(Neighbour {
        ifindex: msg.header.ifindex,
        ip,
        mac: mac?,
        permanent: msg.header.state == NeighbourState::Permanent,
    })
}

impl Netlink {
    /// Sets a permanent ARP entry `ip -> mac` on link `ifindex`.
    pub fn replace_neighbour(&mut self, ifindex: u32, ip: Ipv4Addr, mac: [u8; 6]) -> Result<()> {
        self.change(
            RouteNetlinkMessage::NewNeighbour(arp_message(ifindex, ip, Some(mac))),
            NLM_F_CREATE | NLM_F_REPLACE,
            || {
                format!(
                    "set neighbour {ip} -> {} on link #{ifindex}",
                    format_mac(&mac)
                )
            },
        )
    }

    pub fn delete_neighbour(&mut self, ifindex: u32, ip: Ipv4Addr) -> Result<()> {
        self.change(
            RouteNetlinkMessage::DelNeighbour(arp_message(ifindex, ip, None)),
            0,
            || format!("delete neighbour {ip} on link #{ifindex}"),
        )
    }

    /// IPv4 neighbour entries of link `ifindex`.
    pub fn neighbours(&mut self, ifindex: u32) -> Result<Vec<Neighbour>> {
        let mut request = NeighbourMessage::default();
        request.header.family = AddressFamily::Inet;
        self.list_neighbours(request, ifindex, "list neighbours")
    }

    /// Sets the FDB entry `mac -> dst` on link `ifindex`, replacing other
    /// destinations of that MAC.
    pub fn replace_fdb(&mut self, ifindex: u32, mac: [u8; 6], dst: Option<Ipv4Addr>) -> Result<()> {
        self.change(
            RouteNetlinkMessage::NewNeighbour(fdb_message(ifindex, mac, dst)),
            NLM_F_CREATE | NLM_F_REPLACE,
            || {
                format!(
                    "set fdb entry {} -> {dst:?} on link #{ifindex}",
                    format_mac(&mac)
                )
            },
        )
    }

    /// Adds one more destination for `mac` (what `bridge fdb append` does; the
    /// all-zero MAC with several destinations floods to each).
    pub fn append_fdb(&mut self, ifindex: u32, mac: [u8; 6], dst: Ipv4Addr) -> Result<()> {
        self.change(
            RouteNetlinkMessage::NewNeighbour(fdb_message(ifindex, mac, Some(dst))),
            NLM_F_CREATE | NLM_F_APPEND,
            || {
                format!(
                    "append fdb entry {} -> {dst} on link #{ifindex}",
                    format_mac(&mac)
                )
            },
        )
    }

    pub fn delete_fdb(&mut self, ifindex: u32, mac: [u8; 6], dst: Option<Ipv4Addr>) -> Result<()> {
        self.change(
            RouteNetlinkMessage::DelNeighbour(fdb_message(ifindex, mac, dst)),
            0,
            || {
                format!(
                    "delete fdb entry {} -> {dst:?} on link #{ifindex}",
                    format_mac(&mac)
                )
            },
        )
    }

    /// FDB entries of link `ifindex`.
    pub fn fdb_entries(&mut self, ifindex: u32) -> Result<Vec<Neighbour>> {
        let mut request = NeighbourMessage::default();
        request.header.family = AddressFamily::Bridge;
        self.list_neighbours(request, ifindex, "list fdb entries")
    }

    fn list_neighbours(
        &mut self,
        request: NeighbourMessage,
        ifindex: u32,
        what: &str,
    ) -> Result<Vec<Neighbour>> {
        let replies = self.dump(RouteNetlinkMessage::GetNeighbour(request), || {
            format!("{what} of link #{ifindex}")
        })?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewNeighbour(msg) if msg.header.ifindex == ifindex => {
                    parse(msg)
                }
                _ => None,
            })
            .collect())
    }
}
