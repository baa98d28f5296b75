//! IPv4 routes: via a gateway, out of a device, on-link, with a scope.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::Ipv4Net;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::error::Result;
use crate::netlink::{Batch, Netlink};

/// The main routing table.
pub const MAIN_TABLE: u8 = RouteHeader::RT_TABLE_MAIN;

/// Route protocol number marking routes podnet's agent installed, so it can
/// find and adopt them after a restart (see /etc/iproute2/rt_protos).
pub const PROTO_PODNET: u8 = 0x50;

/// An IPv4 unicast route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    pub oif: Option<u32>,
    pub onlink: bool,
    pub scope: Scope,
    pub table: u8,
    /// `RTPROT_*`: 3 boot (what `ip route add` uses), 2 kernel, or [`PROTO_PODNET`].
    pub protocol: u8,
    pub metric: Option<u32>,
    pub prefsrc: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Universe,
    Link,
    Host,
    Other(u8),
}

impl Route {
    /// A route to `dst` via `gateway`.
    pub fn via(dst: Ipv4Net, gateway: Ipv4Addr) -> Route {
        Route {
            dst,
            gateway: Some(gateway),
            oif: None,
            onlink: false,
            scope: Scope::Universe,
            table: MAIN_TABLE,
            protocol: 3,
            metric: None,
            prefsrc: None,
        }
    }

    /// A route to `dst` straight out of device `oif` (scope link).
    pub fn dev(dst: Ipv4Net, oif: u32) -> Route {
        Route {
            gateway: None,
            oif: Some(oif),
            scope: Scope::Link,
            ..Route::via(dst, Ipv4Addr::UNSPECIFIED)
        }
    }

    pub fn with_oif(mut self, oif: u32) -> Route {
        self.oif = Some(oif);
        self
    }

    pub fn with_onlink(mut self) -> Route {
        self.onlink = true;
        self
    }

    pub fn with_protocol(mut self, protocol: u8) -> Route {
        self.protocol = protocol;
        self
    }

    fn to_message(&self) -> RouteMessage {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        msg.header.destination_prefix_length = self.dst.prefix_len();
        msg.header.table = self.table;
        msg.header.protocol = RouteProtocol::from(self.protocol);
        msg.header.scope = match self.scope {
            Scope::Universe => RouteScope::Universe,
            Scope::Link => RouteScope::Link,
            Scope::Host => RouteScope::Host,
            Scope::Other(v) => RouteScope::from(v),
        };
        msg.header.kind = RouteType::Unicast;
        if self.onlink {
            msg.header.flags = RouteFlags::Onlink;
        }
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::Inet(
                self.dst.network(),
            )));
        if let Some(gw) = self.gateway {
            msg.attributes
                .push(RouteAttribute::Gateway(RouteAddress::Inet(gw)));
        }
        if let Some(oif) = self.oif {
            msg.attributes.push(RouteAttribute::Oif(oif));
        }
        if let Some(metric) = self.metric {
            msg.attributes.push(RouteAttribute::Priority(metric));
        }
        if let Some(src) = self.prefsrc {
            msg.attributes
                .push(RouteAttribute::PrefSource(RouteAddress::Inet(src)));
        }
        msg
    }

    fn from_message(msg: &RouteMessage) -> Option<Route> {
        if msg.header.address_family != AddressFamily::Inet || msg.header.kind != RouteType::Unicast
        {
            return None;
        }
        let mut dst_ip = Ipv4Addr::UNSPECIFIED;
        let mut route = Route {
            dst: Ipv4Net::default(),
            gateway: None,
            oif: None,
            onlink: msg.header.flags.contains(RouteFlags::Onlink),
            scope: match msg.header.scope {
                RouteScope::Universe => Scope::Universe,
                RouteScope::Link => Scope::Link,
                RouteScope::Host => Scope::Host,
                other => Scope::Other(u8::from(other)),
            },
            table: msg.header.table,
            protocol: u8::from(msg.header.protocol),
            metric: None,
            prefsrc: None,
        };
        for attr in &msg.attributes {
            match attr {
                RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst_ip = *ip,
                RouteAttribute::Gateway(RouteAddress::Inet(ip)) => route.gateway = Some(*ip),
                RouteAttribute::Oif(i) => route.oif = Some(*i),
                RouteAttribute::Priority(p) => route.metric = Some(*p),
                RouteAttribute::PrefSource(RouteAddress::Inet(ip)) => route.prefsrc = Some(*ip),
                RouteAttribute::Table(t) if *t <= u8::MAX as u32 => route.table = *t as u8,
                _ => {}
            }
        }
        route.dst = Ipv4Net::new(dst_ip, msg.header.destination_prefix_length).ok()?;
        Some(route)
    }
}

impl Batch {
    /// Adds or replaces the route to `route.dst`.
    pub fn replace_route(&mut self, route: &Route) -> usize {
        self.push(
            RouteNetlinkMessage::NewRoute(route.to_message()),
            NLM_F_CREATE | NLM_F_REPLACE,
            describe("replace", route),
            false,
        )
    }
}

impl Netlink {
    /// Adds a route; succeeds if an identical key (dst, table, metric) exists.
    pub fn ensure_route(&mut self, route: &Route) -> Result<()> {
        match self.change(
            RouteNetlinkMessage::NewRoute(route.to_message()),
            NLM_F_CREATE | NLM_F_EXCL,
            || describe("add", route),
        ) {
            Err(e) if e.is_exists() => Ok(()),
            other => other,
        }
    }

    /// Adds or replaces the route to `route.dst`.
    pub fn replace_route(&mut self, route: &Route) -> Result<()> {
        self.change(
            RouteNetlinkMessage::NewRoute(route.to_message()),
            NLM_F_CREATE | NLM_F_REPLACE,
            || describe("replace", route),
        )
    }

    pub fn delete_route(&mut self, route: &Route) -> Result<()> {
        self.change(RouteNetlinkMessage::DelRoute(route.to_message()), 0, || {
            describe("delete", route)
        })
    }

    /// IPv4 unicast routes of table `table`.
    pub fn routes(&mut self, table: u8) -> Result<Vec<Route>> {
        let mut request = RouteMessage::default();
        request.header.address_family = AddressFamily::Inet;
        let replies = self.dump(RouteNetlinkMessage::GetRoute(request), || {
            "list routes".into()
        })?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(msg) => Route::from_message(msg),
                _ => None,
            })
            .filter(|r| r.table == table)
            .collect())
    }
}

fn describe(verb: &str, route: &Route) -> String {
    let mut text = format!("{verb} route {}", route.dst);
    if let Some(gw) = route.gateway {
        text.push_str(&format!(" via {}", IpAddr::V4(gw)));
    }
    if let Some(oif) = route.oif {
        text.push_str(&format!(" dev #{oif}"));
    }
    if route.onlink {
        text.push_str(" onlink");
    }
    text
}
