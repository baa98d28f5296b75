//! Links: veth pairs, bridges, state, MTU, bridge ports.

use std::os::fd::AsRawFd;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_ECHO, NLM_F_EXCL};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoPortKind, InfoVeth, LinkAttribute,
    LinkFlags, LinkInfo, LinkMessage,
};

use crate::error::{KernelError, Result};
use crate::netlink::{Batch, Netlink, Replies};
use crate::netns::NetNs;

/// What podnet needs to know about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `veth`, `bridge`, `vxlan`, `tun`… (`None` for physical or loopback).
    pub kind: Option<String>,
    pub mac: Option<[u8; 6]>,
    pub mtu: u32,
    pub up: bool,
    /// Index of the bridge (or other controller) this link is a port of.
    pub master: Option<u32>,
    /// For a veth, the index of its peer (in the peer's own namespace).
    pub peer_index: Option<u32>,
}

impl Link {
    pub fn mac_string(&self) -> String {
        self.mac.map(|m| format_mac(&m)).unwrap_or_default()
    }

    pub(crate) fn from_message(msg: &LinkMessage) -> Option<Link> {
        let mut link = Link {
            index: msg.header.index,
            name: String::new(),
            kind: None,
            mac: None,
            mtu: 0,
            up: msg.header.flags.contains(LinkFlags::Up),
            master: None,
            peer_index: None,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(name) => link.name = name.clone(),
                LinkAttribute::Mtu(mtu) => link.mtu = *mtu,
                LinkAttribute::Address(bytes) if bytes.len() == 6 => {
                    let mut mac = [0u8; 6];
                    mac.copy_from_slice(bytes);
                    link.mac = Some(mac);
                }
                LinkAttribute::Controller(idx) => link.master = Some(*idx),
                LinkAttribute::Link(idx) => link.peer_index = Some(*idx),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        if let LinkInfo::Kind(kind) = info {
                            link.kind = Some(kind.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
        if link.name.is_empty() {
            None
        } else {
            Some(link)
        }
    }
}

pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    if parts.next().is_some() {
        None
    } else {
        Some(mac)
    }
}

fn by_name_request(name: &str) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.to_string()));
    msg
}

fn by_index(index: u32) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg
}

/// A veth pair as one `RTM_NEWLINK` can create it: both names, the MTU, the
/// bridge of this end, both ends up, the peer made directly in its
/// namespace. Each of these would otherwise be a request of its own.
#[derive(Debug, Clone, Copy)]
pub struct VethPair<'a> {
    pub name: &'a str,
    pub peer_name: &'a str,
    /// Where the peer is created (`None`: beside this end).
    pub peer_ns: Option<&'a NetNs>,
    pub mtu: Option<u32>,
    /// Index of the bridge this end becomes a port of.
    pub master: Option<u32>,
    /// This end is created up. The peer cannot be (the kernel refuses to
    /// open a veth end before the pair is complete): set it up afterwards.
    pub up: bool,
    /// TX and RX queues of each end (`None`: the kernel's default, one per CPU, which
    /// it then cuts down to one real queue under the RTNL lock, waiting for RCU twice).
    pub queues: Option<u32>,
    /// The peer's MAC address (`None`: a random one, as the kernel picks it).
    pub peer_mac: Option<[u8; 6]>,
}

fn up_flags(msg: &mut LinkMessage, up: bool) {
    msg.header.change_mask = LinkFlags::Up;
    if up {
        msg.header.flags = LinkFlags::Up;
    }
}

fn veth_message(pair: &VethPair) -> LinkMessage {
    let mut peer = by_name_request(pair.peer_name);
    if let Some(ns) = pair.peer_ns {
        peer.attributes.push(LinkAttribute::NetNsFd(ns.as_raw_fd()));
    }
    if let Some(mtu) = pair.mtu {
        peer.attributes.push(LinkAttribute::Mtu(mtu));
    }
    if let Some(mac) = pair.peer_mac {
        peer.attributes.push(LinkAttribute::Address(mac.to_vec()));
    }
    let mut msg = by_name_request(pair.name);
    if let Some(q) = pair.queues {
        for m in [&mut peer, &mut msg] {
            m.attributes.push(LinkAttribute::NumTxQueues(q));
            m.attributes.push(LinkAttribute::NumRxQueues(q));
        }
    }
    if let Some(mtu) = pair.mtu {
        msg.attributes.push(LinkAttribute::Mtu(mtu));
    }
    if let Some(master) = pair.master {
        msg.attributes.push(LinkAttribute::Controller(master));
    }
    up_flags(&mut msg, pair.up);
    msg.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
    ]));
    msg
}

impl Batch {
    /// Creates a veth pair (EEXIST if either name is taken). The kernel
    /// echoes the new local end (index, MAC, and its peer's index as
    /// `peer_index`): read it with [`Replies::link`].
    pub fn create_veth(&mut self, pair: &VethPair) -> usize {
        let peer_where = pair
            .peer_ns
            .map(|ns| format!(" (peer in {})", ns.label()))
            .unwrap_or_default();
        self.push(
            RouteNetlinkMessage::NewLink(veth_message(pair)),
            NLM_F_CREATE | NLM_F_EXCL | NLM_F_ECHO,
            format!(
                "create veth pair {} <-> {}{peer_where}",
                pair.name, pair.peer_name
            ),
            false,
        )
    }

    /// Reads the link called `name` (ENODEV if there is none).
    pub fn get_link_by_name(&mut self, name: &str) -> usize {
        self.push(
            RouteNetlinkMessage::GetLink(by_name_request(name)),
            0,
            format!("look up link {name}"),
            false,
        )
    }

    pub fn set_up(&mut self, index: u32) -> usize {
        let mut msg = by_index(index);
        up_flags(&mut msg, true);
        self.push(
            RouteNetlinkMessage::SetLink(msg),
            0,
            format!("set link #{index} up"),
            false,
        )
    }

    /// Sets the link called `name` up or down without knowing its index.
    pub fn set_state_by_name(&mut self, name: &str, up: bool) -> usize {
        let mut msg = by_name_request(name);
        up_flags(&mut msg, up);
        let state = if up { "up" } else { "down" };
        self.push(
            RouteNetlinkMessage::SetLink(msg),
            0,
            format!("set link {name} {state}"),
            false,
        )
    }

    /// Sets link `index` down and takes it off its bridge (if any) in one
    /// request: from then on it carries no traffic.
    pub fn set_down_and_detach(&mut self, index: u32) -> usize {
        let mut msg = by_index(index);
        up_flags(&mut msg, false);
        msg.attributes.push(LinkAttribute::Controller(0));
        self.push(
            RouteNetlinkMessage::SetLink(msg),
            0,
            format!("set link #{index} down and off its bridge"),
            false,
        )
    }

    /// Renames link `index` (the kernel refuses with EBUSY while it is up).
    pub fn rename(&mut self, index: u32, name: &str) -> usize {
        let mut msg = by_index(index);
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.push(
            RouteNetlinkMessage::SetLink(msg),
            0,
            format!("rename link #{index} to {name}"),
            false,
        )
    }

    /// Sets hairpin mode on the bridge port called `name`.
    pub fn set_hairpin_by_name(&mut self, name: &str, on: bool) -> usize {
        let mut msg = by_name_request(name);
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::PortKind(InfoPortKind::Bridge),
            LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::HairpinMode(
                on,
            )])),
        ]));
        let state = if on { "on" } else { "off" };
        self.push(
            RouteNetlinkMessage::NewLink(msg),
            0,
            format!("set hairpin {state} on bridge port {name}"),
            false,
        )
    }
}

impl Replies {
    /// The link a request of the batch got back (a get's answer or a
    /// create's echo), if any.
    pub fn link(&self, position: usize) -> Option<Link> {
        self.of(position).iter().find_map(|m| match m {
            RouteNetlinkMessage::NewLink(msg) => Link::from_message(msg),
            _ => None,
        })
    }
}

impl Netlink {
    /// The link called `name`, if there is one.
    pub fn link_by_name(&mut self, name: &str) -> Result<Option<Link>> {
        self.get_link(by_name_request(name), || format!("look up link {name}"))
    }

    /// The link called `name`, or a NotFound error.
    pub fn require_link(&mut self, name: &str) -> Result<Link> {
        self.link_by_name(name)?
            .ok_or_else(|| KernelError::NotFound {
                what: format!("link {name}"),
                netns: self.netns().to_string(),
            })
    }

    pub fn link_by_index(&mut self, index: u32) -> Result<Option<Link>> {
        self.get_link(by_index(index), || format!("look up link #{index}"))
    }

    fn get_link(
        &mut self,
        request: LinkMessage,
        action: impl FnOnce() -> String,
    ) -> Result<Option<Link>> {
        match self.get(RouteNetlinkMessage::GetLink(request), action) {
            Ok(Some(RouteNetlinkMessage::NewLink(msg))) => Ok(Link::from_message(&msg)),
            Ok(_) => Ok(None),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every link in the namespace.
    pub fn links(&mut self) -> Result<Vec<Link>> {
        let replies = self.dump(RouteNetlinkMessage::GetLink(LinkMessage::default()), || {
            "list links".into()
        })?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(msg) => Link::from_message(msg),
                _ => None,
            })
            .collect())
    }

    /// Makes sure a bridge called `name` exists and returns it. A link of
    /// another kind with that name is an error, not silently reused.
    pub fn ensure_bridge(&mut self, name: &str, mtu: Option<u32>) -> Result<Link> {
        self.ensure_bridge_with_mac(name, mtu, None)
    }

    /// [`Netlink::ensure_bridge`], creating a missing bridge with the MAC address `mac`.
    /// A bridge created without one has a kernel-assigned address (`addr_assign_type` 1)
    /// and takes the lowest MAC of its ports, so it changes as ports come and go; one
    /// created with an address keeps it (`addr_assign_type` 3). An existing bridge is
    /// returned as it is.
    pub fn ensure_bridge_with_mac(
        &mut self,
        name: &str,
        mtu: Option<u32>,
        mac: Option<[u8; 6]>,
    ) -> Result<Link> {
        if let Some(link) = self.link_by_name(name)? {
            return self.expect_kind(link, "bridge");
        }
        let mut msg = by_name_request(name);
        msg.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Bridge,
            )]));
        if let Some(mtu) = mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(mac) = mac {
            msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        match self.change(
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL,
            || format!("create bridge {name}"),
        ) {
            Ok(()) => {}
            // Another invocation created it between our look-up and create.
            Err(e) if e.is_exists() => {}
            Err(e) => return Err(e),
        }
        let link = self.require_link(name)?;
        self.expect_kind(link, "bridge")
    }

    fn expect_kind(&self, link: Link, kind: &str) -> Result<Link> {
        if link.kind.as_deref() == Some(kind) {
            Ok(link)
        } else {
            Err(KernelError::Conflict {
                what: format!("link {}", link.name),
                netns: self.netns().to_string(),
                why: format!(
                    "it is a {} device, not a {kind}; remove or rename it",
                    link.kind.as_deref().unwrap_or("physical")
                ),
            })
        }
    }

    /// Creates a veth pair: `name` here and `peer_name` in `peer_ns` (or here).
    /// Fails with EEXIST if `name` is taken.
    pub fn create_veth(
        &mut self,
        name: &str,
        peer_name: &str,
        peer_ns: Option<&NetNs>,
        mtu: Option<u32>,
    ) -> Result<()> {
        let mut peer = by_name_request(peer_name);
        if let Some(ns) = peer_ns {
            peer.attributes.push(LinkAttribute::NetNsFd(ns.as_raw_fd()));
        }
        if let Some(mtu) = mtu {
            peer.attributes.push(LinkAttribute::Mtu(mtu));
        }
        let mut msg = by_name_request(name);
        if let Some(mtu) = mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
        ]));
        let peer_where = peer_ns
            .map(|ns| ns.label().to_string())
            .unwrap_or_else(|| self.netns().to_string());
        self.change(
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL,
            || format!("create veth pair {name} <-> {peer_name} (peer in {peer_where})"),
        )
    }

    pub fn set_up(&mut self, index: u32) -> Result<()> {
        self.set_flags(index, true)
    }

    pub fn set_down(&mut self, index: u32) -> Result<()> {
        self.set_flags(index, false)
    }

    fn set_flags(&mut self, index: u32, up: bool) -> Result<()> {
        let mut msg = by_index(index);
        msg.header.change_mask = LinkFlags::Up;
        if up {
            msg.header.flags = LinkFlags::Up;
        }
        self.change(RouteNetlinkMessage::SetLink(msg), 0, || {
            format!("set link #{index} {}", if up { "up" } else { "down" })
        })
    }

    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> Result<()> {
        let mut msg = by_index(index);
        msg.attributes.push(LinkAttribute::Mtu(mtu));
        self.change(RouteNetlinkMessage::SetLink(msg), 0, || {
            format!("set MTU {mtu} on link #{index}")
        })
    }

    /// Sets link `index`'s MAC address. On a bridge this also fixes it (`addr_assign_type`
    /// 3): from then on the bridge no longer takes its lowest port's MAC.
    pub fn set_mac(&mut self, index: u32, mac: [u8; 6]) -> Result<()> {
        let mut msg = by_index(index);
        msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
        self.change(RouteNetlinkMessage::SetLink(msg), 0, || {
            format!("set MAC {} on link #{index}", format_mac(&mac))
        })
    }

    /// Makes link `index` a port of bridge `master`.
    pub fn set_master(&mut self, index: u32, master: u32) -> Result<()> {
        let mut msg = by_index(index);
        msg.attributes.push(LinkAttribute::Controller(master));
        self.change(RouteNetlinkMessage::SetLink(msg), 0, || {
            format!("attach link #{index} to bridge #{master}")
        })
    }

    /// Sets hairpin mode on a bridge port, so a pod can reach itself through a
    /// Service that picks it.
    pub fn set_hairpin(&mut self, index: u32, on: bool) -> Result<()> {
        let mut msg = by_index(index);
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::PortKind(InfoPortKind::Bridge),
            LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::HairpinMode(
                on,
            )])),
        ]));
        self.change(RouteNetlinkMessage::NewLink(msg), 0, || {
            format!(
                "set hairpin {} on bridge port #{index}",
                if on { "on" } else { "off" }
            )
        })
    }

    /// Whether hairpin mode is on for a bridge port.
    pub fn hairpin(&mut self, index: u32) -> Result<bool> {
        let request = RouteNetlinkMessage::GetLink(by_index(index));
        let reply = self.get(request, || {
            format!("read bridge port settings of link #{index}")
        })?;
        let Some(RouteNetlinkMessage::NewLink(msg)) = reply else {
            return Ok(false);
        };
        Ok(msg.attributes.iter().any(|attr| match attr {
            LinkAttribute::LinkInfo(infos) => infos.iter().any(|info| {
                matches!(info, LinkInfo::PortData(InfoPortData::BridgePort(opts))
                    if opts.contains(&InfoBridgePort::HairpinMode(true)))
            }),
            _ => false,
        }))
    }

    /// Moves a link into another namespace.
    pub fn move_to_netns(&mut self, index: u32, ns: &NetNs) -> Result<()> {
        let mut msg = by_index(index);
        msg.attributes.push(LinkAttribute::NetNsFd(ns.as_raw_fd()));
        self.change(RouteNetlinkMessage::SetLink(msg), 0, || {
            format!("move link #{index} to network namespace {}", ns.label())
        })
    }

    /// Deletes a link. For a veth, its peer goes too.
    pub fn delete_link(&mut self, index: u32) -> Result<()> {
        self.change(RouteNetlinkMessage::DelLink(by_index(index)), 0, || {
            format!("delete link #{index}")
        })
    }

    /// Deletes the link called `name` if there is one; returns whether it did.
    pub fn delete_link_by_name(&mut self, name: &str) -> Result<bool> {
        match self.link_by_name(name)? {
            Some(link) => match self.delete_link(link.index) {
                Ok(()) => Ok(true),
                Err(e) if e.is_not_found() => Ok(false),
                Err(e) => Err(e),
            },
            None => Ok(false),
        }
    }
}
