//! VXLAN devices: creating one with explicit settings and reading its settings back, so a
//! reconciler can tell a device that is right from one that must be recreated.

use std::net::Ipv4Addr;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkInfo, LinkMessage,
};

use crate::error::Result;
use crate::link::{Link, format_mac};
use crate::netlink::Netlink;

/// The settings of a VXLAN device that decide where its packets go. The kernel cannot change
/// most of them on a live device, so a device whose settings differ is recreated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanSettings {
    /// VXLAN network identifier (1..=16777215).
    pub vni: u32,
    /// UDP destination port.
    pub port: u16,
    /// Source address of the encapsulated packets.
    pub local: Option<Ipv4Addr>,
    /// Index of the underlay link the packets leave by.
    pub underlay: Option<u32>,
    /// Whether the device learns remote MACs from received packets (off when the FDB is
    /// managed explicitly, as flannel does).
    pub learning: bool,
}

/// A VXLAN device to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanSpec {
    pub name: String,
    pub settings: VxlanSettings,
    /// The device's MAC; the kernel picks a random one when `None`.
    pub mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
}

/// A link as found, with its VXLAN settings when it is a VXLAN device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanLink {
    pub link: Link,
    /// `None` when the link is not a VXLAN device.
    pub settings: Option<VxlanSettings>,
}

impl VxlanSpec {
    fn to_message(&self) -> LinkMessage {
        let s = &self.settings;
        let mut data = vec![
            InfoVxlan::Id(s.vni),
            InfoVxlan::Port(s.port),
            InfoVxlan::Learning(s.learning),
        ];
        if let Some(local) = s.local {
            data.push(InfoVxlan::Local(local));
        }
        if let Some(underlay) = s.underlay {
            data.push(InfoVxlan::Link(underlay));
        }
        let mut msg = LinkMessage::default();
        msg.attributes
            .push(LinkAttribute::IfName(self.name.clone()));
        if let Some(mac) = self.mac {
            msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        if let Some(mtu) = self.mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Vxlan),
            LinkInfo::Data(InfoData::Vxlan(data)),
        ]));
        msg
    }

    fn describe(&self) -> String {
        let s = &self.settings;
        let mut text = format!(
            "create vxlan device {} (VNI {}, UDP port {}, learning {}",
            self.name,
            s.vni,
            s.port,
            if s.learning { "on" } else { "off" }
        );
        if let Some(local) = s.local {
            text.push_str(&format!(", local {local}"));
        }
        if let Some(underlay) = s.underlay {
            text.push_str(&format!(", underlay link #{underlay}"));
        }
        if let Some(mac) = self.mac {
            text.push_str(&format!(", MAC {}", format_mac(&mac)));
        }
        text.push(')');
        text
    }
}

/// Reads the VXLAN settings out of a link message; `None` if it is not a VXLAN device.
fn settings_of(msg: &LinkMessage) -> Option<VxlanSettings> {
    let infos = msg.attributes.iter().find_map(|attr| match attr {
        LinkAttribute::LinkInfo(infos) => Some(infos),
        _ => None,
    })?;
    if !infos.contains(&LinkInfo::Kind(InfoKind::Vxlan)) {
        return None;
    }
    // The kernel always dumps these, but start from its own defaults in case one is left out.
    let mut settings = VxlanSettings {
        vni: 0,
        port: 4789,
        local: None,
        underlay: None,
        learning: true,
    };
    let data = infos.iter().find_map(|info| match info {
        LinkInfo::Data(InfoData::Vxlan(data)) => Some(data),
        _ => None,
    });
    for attr in data.into_iter().flatten() {
        match attr {
            InfoVxlan::Id(vni) => settings.vni = *vni,
            InfoVxlan::Port(port) => settings.port = *port,
            InfoVxlan::Local(ip) => settings.local = Some(*ip),
            // The kernel reports link 0 for "no underlay link".
            InfoVxlan::Link(idx) if *idx != 0 => settings.underlay = Some(*idx),
            InfoVxlan::Learning(on) => settings.learning = *on,
            _ => {}
        }
    }
    Some(settings)
}

impl Netlink {
    /// Creates a VXLAN device; fails with EEXIST if the name is taken.
    pub fn create_vxlan(&mut self, spec: &VxlanSpec) -> Result<()> {
        self.change(
            RouteNetlinkMessage::NewLink(spec.to_message()),
            NLM_F_CREATE | NLM_F_EXCL,
            || spec.describe(),
        )
    }

    /// The link called `name` with its VXLAN settings, if there is such a link.
    pub fn vxlan_by_name(&mut self, name: &str) -> Result<Option<VxlanLink>> {
        let mut request = LinkMessage::default();
        request
            .attributes
            .push(LinkAttribute::IfName(name.to_string()));
        let reply = match self.get(RouteNetlinkMessage::GetLink(request), || {
            format!("read vxlan device {name}")
        }) {
            Ok(reply) => reply,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(RouteNetlinkMessage::NewLink(msg)) = reply else {
            return Ok(None);
        };
        Ok(Link::from_message(&msg).map(|link| VxlanLink {
            link,
            settings: settings_of(&msg),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_reads_back_as_its_settings() {
        let spec = VxlanSpec {
            name: "podnet.7".into(),
            settings: VxlanSettings {
                vni: 7,
                port: 8472,
                local: Some(Ipv4Addr::new(172, 31, 1, 11)),
                underlay: Some(3),
                learning: false,
            },
            mac: Some([0x0a, 1, 2, 3, 4, 5]),
            mtu: Some(1450),
        };
        let msg = spec.to_message();
        assert_eq!(settings_of(&msg), Some(spec.settings.clone()));
        let link = Link::from_message(&msg).unwrap_or_else(|| panic!("a named link"));
        assert_eq!(link.name, "podnet.7");
        assert_eq!(link.mac, spec.mac);
        assert_eq!(link.mtu, 1450);
        assert!(
            spec.describe()
                .contains("VNI 7, UDP port 8472, learning off")
        );
    }

    #[test]
    fn a_link_of_another_kind_has_no_vxlan_settings() {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName("cni0".into()));
        msg.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Bridge,
            )]));
        assert_eq!(settings_of(&msg), None);
    }
}
