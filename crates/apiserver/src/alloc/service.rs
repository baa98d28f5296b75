//! Service allocations: ClusterIP, NodePorts, health-check node port, load-balancer IP.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};

use serde_json::{Value, json};

use super::config::Spaces;
use super::fields::*;
use super::space::{self, Kind, Requested, Strategy};
use super::{
    Allocated, Allocators, Held, child_mut, forbidden, invalid, map_mut, non_empty, quoted,
    render_list, str_list,
};
use crate::error::{ApiError, ApiResult};
use crate::meta;

impl Allocators {
    /// For a Service being created (`old = None`) or updated (`old = Some(stored)`): fills
    /// `spec.clusterIP`/`spec.clusterIPs` (with `ipFamilies: [IPv4]` and `ipFamilyPolicy:
    /// SingleStack` when absent), `spec.ports[].nodePort` for NodePort and LoadBalancer,
    /// `spec.healthCheckNodePort` for LoadBalancer with `externalTrafficPolicy: Local`, and
    /// `status.loadBalancer.ingress` from the load-balancer pool. An update keeps what the
    /// stored object holds (values the new object leaves out are copied from `old`, as
    /// Kubernetes does) and drops what the new type no longer uses, for
    /// [`Allocators::release_dropped`] to free after the write. Call it after the request's
    /// status has been reset to the stored one. On error everything this call took is given
    /// back, and `svc` may be partly filled (discard it).
    pub async fn allocate_service(
        &self,
        svc: &mut Value,
        old: Option<&Value>,
    ) -> ApiResult<Allocated> {
        let mut taken = Allocated::default();
        match self.allocate_service_into(svc, old, &mut taken).await {
            Ok(()) => Ok(taken),
            Err(e) => {
                self.rollback(taken).await;
                Err(e)
            }
        }
    }

    async fn allocate_service_into(
        &self,
        svc: &mut Value,
        old: Option<&Value>,
        out: &mut Allocated,
    ) -> ApiResult<()> {
        let sp = self.spaces()?;
        let owner = service_owner(svc);
        if let Some(old) = old {
            patch_allocated_values(svc, old);
            drop_type_dependent_fields(svc, old);
        }
        self.service_cluster_ip(sp, svc, old, &owner, out).await?;
        self.service_node_ports(sp, svc, old, &owner, out).await?;
        self.service_health_check_port(sp, svc, old, &owner, out)
            .await?;
        self.service_lb_ip(sp, svc, old, &owner, out).await?;
        Ok(())
    }

    async fn service_cluster_ip(
        &self,
        sp: &Spaces,
        svc: &mut Value,
        old: Option<&Value>,
        owner: &str,
        out: &mut Allocated,
    ) -> ApiResult<()> {
        if !needs_cluster_ip(svc) {
            return Ok(());
        }
        let name = meta::name(svc).to_owned();
        check_ip_families(svc, &name)?;
        let listed: Vec<String> = str_list(svc, "/spec/clusterIPs");
        if let Some(second) = listed.get(1) {
            return Err(invalid(
                "Service",
                &name,
                "spec.clusterIPs[1]",
                format!(
                    "Invalid value: {}: this cluster is single-stack IPv4 (--service-cidr {}); a Service has one cluster IP",
                    quoted(second),
                    sp.service_net
                ),
            ));
        }
        let field = non_empty(svc, "/spec/clusterIP").map(str::to_owned);
        let first = listed.first().filter(|s| !s.is_empty()).cloned();
        if let (Some(a), Some(b)) = (&field, &first)
            && a != b
        {
            return Err(invalid(
                "Service",
                &name,
                "spec.clusterIPs[0]",
                format!(
                    "Invalid value: {}: must match spec.clusterIP ({})",
                    quoted(b),
                    quoted(a)
                ),
            ));
        }
        let requested = field.or(first);
        let rendered = render_list(if listed.is_empty() {
            requested.iter().cloned().collect()
        } else {
            listed
        });
        // An update keeps the IP (and headless stays headless).
        if let Some(old_ip) = old
            .filter(|o| needs_cluster_ip(o))
            .and_then(|o| non_empty(o, "/spec/clusterIP"))
        {
            if requested.as_deref() == Some(old_ip) {
                set_cluster_ip(svc, old_ip);
                return Ok(());
            }
            return Err(invalid(
                "Service",
                &name,
                "spec.clusterIPs[0]",
                format!("Invalid value: {rendered}: may not change once set"),
            ));
        }
        let ip = match requested.as_deref() {
            Some("None") => {
                set_cluster_ip(svc, "None");
                return Ok(());
            }
            Some(text) => {
                let Ok(ip) = text.parse::<IpAddr>() else {
                    return Err(invalid(
                        "Service",
                        &name,
                        "spec.clusterIPs[0]",
                        format!(
                            "Invalid value: {}: must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                            quoted(text)
                        ),
                    ));
                };
                let item = match ip {
                    IpAddr::V4(v4) => Some(u64::from(u32::from(v4))),
                    IpAddr::V6(_) => None,
                }
                .filter(|item| sp.service.contains(*item));
                let Some(item) = item else {
                    return Err(invalid(
                        "Service",
                        &name,
                        "spec.clusterIPs",
                        format!(
                            "Invalid value: {rendered}: failed to allocate IP {text}: the provided IP ({text}) is not in the valid range. The range of valid IPs is {}",
                            sp.service_net
                        ),
                    ));
                };
                match space::take_requested(self.store(), &sp.service, item, owner).await? {
                    Requested::Taken(t) => out.push(t),
                    Requested::AlreadyOurs => {}
                    Requested::Busy => {
                        return Err(invalid(
                            "Service",
                            &name,
                            "spec.clusterIPs",
                            format!(
                                "Invalid value: {rendered}: failed to allocate IP {text}: provided IP is already allocated"
                            ),
                        ));
                    }
                }
                ip.to_string()
            }
            None => {
                match space::take_next(self.store(), &sp.service, owner, Strategy::Random).await? {
                    Some((item, t)) => {
                        out.push(t);
                        space::ipv4(item).to_string()
                    }
                    None => {
                        return Err(ApiError::internal(format!(
                            "Internal error occurred: failed to allocate a serviceIP: the service range {} has no free address; delete unused Services or restart the apiserver with a larger --service-cidr",
                            sp.service_net
                        )));
                    }
                }
            }
        };
        set_cluster_ip(svc, &ip);
        Ok(())
    }

    async fn service_node_ports(
        &self,
        sp: &Spaces,
        svc: &mut Value,
        old: Option<&Value>,
        owner: &str,
        out: &mut Allocated,
    ) -> ApiResult<()> {
        let name = meta::name(svc).to_owned();
        let mut ports: Vec<Value> = svc
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if !needs_node_ports(svc) {
            let ty = service_type(svc);
            if let Some(i) = ports.iter().position(|p| node_port_of(p).is_some()) {
                return Err(forbidden(
                    "Service",
                    &name,
                    &format!("spec.ports[{i}].nodePort"),
                    &format!("may not be used when `type` is '{ty}'"),
                ));
            }
            return Ok(());
        }
        let old_held: HashSet<i64> = old
            .filter(|o| needs_node_ports(o))
            .map(node_ports)
            .unwrap_or_default()
            .into_iter()
            .collect();
        let mut held_here: HashSet<i64> = HashSet::new();
        // Service port -> node port: the TCP and UDP entries of one port share a node port.
        let mut by_port: HashMap<i64, i64> = HashMap::new();
        for (i, port) in ports.iter().enumerate() {
            let Some(np) = node_port_of(port) else {
                continue;
            };
            if !held_here.contains(&np) && !old_held.contains(&np) {
                let field = format!("spec.ports[{i}].nodePort");
                self.take_requested_port(sp, np, &name, &field, owner, out)
                    .await?;
            }
            held_here.insert(np);
            if let Some(p) = port.get("port").and_then(Value::as_i64) {
                by_port.entry(p).or_insert(np);
            }
        }
        if !auto_node_ports(svc) {
            return Ok(());
        }
        let mut changed = false;
        for port in ports.iter_mut() {
            if node_port_of(port).is_some() {
                continue;
            }
            let service_port = port.get("port").and_then(Value::as_i64);
            let np = match service_port.and_then(|p| by_port.get(&p).copied()) {
                Some(np) => np,
                None => self.take_next_port(sp, owner, "nodePort", out).await?,
            };
            map_mut(port).insert("nodePort".into(), json!(np));
            changed = true;
            if let Some(p) = service_port {
                by_port.insert(p, np);
            }
        }
        if changed {
            map_mut(child_mut(svc, "spec")).insert("ports".into(), Value::Array(ports));
        }
        Ok(())
    }

    async fn take_requested_port(
        &self,
        sp: &Spaces,
        np: i64,
        name: &str,
        field: &str,
        owner: &str,
        out: &mut Allocated,
    ) -> ApiResult<()> {
        let item = u64::try_from(np)
            .ok()
            .filter(|item| sp.node_ports.contains(*item));
        let Some(item) = item else {
            let range = &self.config.nodeport_range;
            return Err(invalid(
                "Service",
                name,
                field,
                format!(
                    "Invalid value: {np}: provided port is not in the valid range. The range of valid ports is {}-{}",
                    range.start(),
                    range.end()
                ),
            ));
        };
        match space::take_requested(self.store(), &sp.node_ports, item, owner).await? {
            Requested::Taken(t) => out.push(t),
            Requested::AlreadyOurs => {}
            Requested::Busy => {
                return Err(invalid(
                    "Service",
                    name,
                    field,
                    format!("Invalid value: {np}: provided port is already allocated"),
                ));
            }
        }
        Ok(())
    }

    async fn take_next_port(
        &self,
        sp: &Spaces,
        owner: &str,
        what: &str,
        out: &mut Allocated,
    ) -> ApiResult<i64> {
        match space::take_next(self.store(), &sp.node_ports, owner, Strategy::Random).await? {
            Some((item, t)) => {
                out.push(t);
                Ok(i64::try_from(item).unwrap_or_default())
            }
            None => {
                let range = &self.config.nodeport_range;
                Err(ApiError::internal(format!(
                    "Internal error occurred: failed to allocate a {what}: the node port range {}-{} has no free port; delete unused NodePort or LoadBalancer Services or restart the apiserver with a larger --nodeport-range",
                    range.start(),
                    range.end()
                )))
            }
        }
    }

    async fn service_health_check_port(
        &self,
        sp: &Spaces,
        svc: &mut Value,
        old: Option<&Value>,
        owner: &str,
        out: &mut Allocated,
    ) -> ApiResult<()> {
        let name = meta::name(svc).to_owned();
        let requested = health_check_port(svc);
        if !needs_health_check(svc) {
            if let Some(hc) = requested {
                return Err(invalid(
                    "Service",
                    &name,
                    "spec.healthCheckNodePort",
                    format!(
                        "Invalid value: {hc}: may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'"
                    ),
                ));
            }
            return Ok(());
        }
        let old_hc = old
            .filter(|o| needs_health_check(o))
            .and_then(health_check_port);
        match requested {
            Some(hc) if Some(hc) == old_hc => {}
            Some(hc) => {
                self.take_requested_port(sp, hc, &name, "spec.healthCheckNodePort", owner, out)
                    .await?;
            }
            None => {
                let hc = self
                    .take_next_port(sp, owner, "healthCheckNodePort", out)
                    .await?;
                map_mut(child_mut(svc, "spec")).insert("healthCheckNodePort".into(), json!(hc));
            }
        }
        Ok(())
    }

    async fn service_lb_ip(
        &self,
        sp: &Spaces,
        svc: &mut Value,
        old: Option<&Value>,
        owner: &str,
        out: &mut Allocated,
    ) -> ApiResult<()> {
        if service_type(svc) != "LoadBalancer" {
            // The load balancer goes with the type.
            if let Some(lb) = svc
                .pointer_mut("/status/loadBalancer")
                .and_then(Value::as_object_mut)
            {
                lb.remove("ingress");
            }
            return Ok(());
        }
        let Some((pool_net, pool)) = &sp.lb else {
            // No pool: pending, as on a cluster without a cloud load balancer.
            return Ok(());
        };
        let old_lb = old.filter(|o| service_type(o) == "LoadBalancer");
        if let Some(old) = old_lb
            && !lb_ips(old, pool).is_empty()
        {
            if lb_ips(svc, pool).is_empty()
                && let Some(lb) = old.pointer("/status/loadBalancer").cloned()
            {
                map_mut(child_mut(svc, "status")).insert("loadBalancer".into(), lb);
            }
            return Ok(());
        }
        let name = meta::name(svc).to_owned();
        let ip = if let Some(text) = non_empty(svc, "/spec/loadBalancerIP").map(str::to_owned) {
            let item = text
                .parse::<Ipv4Addr>()
                .ok()
                .map(|ip| u64::from(u32::from(ip)))
                .filter(|item| pool.contains(*item));
            let Some(item) = item else {
                return Err(invalid(
                    "Service",
                    &name,
                    "spec.loadBalancerIP",
                    format!(
                        "Invalid value: {}: is not an address of the load-balancer pool {pool_net} (--lb-pool)",
                        quoted(&text)
                    ),
                ));
            };
            match space::take_requested(self.store(), pool, item, owner).await? {
                Requested::Taken(t) => out.push(t),
                Requested::AlreadyOurs => {}
                Requested::Busy => {
                    return Err(invalid(
                        "Service",
                        &name,
                        "spec.loadBalancerIP",
                        format!(
                            "Invalid value: {}: provided IP is already allocated",
                            quoted(&text)
                        ),
                    ));
                }
            }
            space::ipv4(item)
        } else {
            match space::take_next(self.store(), pool, owner, Strategy::Lowest).await? {
                Some((item, t)) => {
                    out.push(t);
                    space::ipv4(item)
                }
                None if old_lb.is_some() => {
                    // An update of a LoadBalancer that was already pending: it stays
                    // pending rather than failing the update.
                    tracing::warn!(
                        service = owner,
                        pool = %pool_net,
                        "the load-balancer pool is full; the Service stays pending"
                    );
                    return Ok(());
                }
                None => {
                    return Err(ApiError::internal(format!(
                        "Internal error occurred: failed to allocate a load-balancer IP: the load-balancer pool {pool_net} has no free address; delete unused LoadBalancer Services or restart the apiserver with a larger --lb-pool"
                    )));
                }
            }
        };
        map_mut(child_mut(svc, "status")).insert(
            "loadBalancer".into(),
            json!({"ingress": [{"ip": ip.to_string()}]}),
        );
        Ok(())
    }

    /// After an update committed: frees what `old` held and `new` no longer holds (e.g.
    /// nodePorts after NodePort -> ClusterIP).
    pub async fn release_dropped(&self, old: &Value, new: &Value) {
        let owner = service_owner(old);
        let kept: HashSet<String> = self.service_held(new).into_iter().map(|h| h.key).collect();
        for held in self.service_held(old) {
            if !kept.contains(&held.key) {
                space::release_key(self.store(), &held.key, &owner).await;
            }
        }
    }

    /// After a Service is deleted.
    pub async fn release_service(&self, svc: &Value) {
        let owner = service_owner(svc);
        for held in self.service_held(svc) {
            space::release_key(self.store(), &held.key, &owner).await;
        }
    }

    /// The allocation keys a Service holds.
    pub(super) fn service_held(&self, svc: &Value) -> Vec<Held> {
        let sp = self.spaces.as_ref().ok();
        let mut held: Vec<Held> = Vec::new();
        let mut add = |h: Held| {
            if !held.iter().any(|x| x.key == h.key) {
                held.push(h);
            }
        };
        if needs_cluster_ip(svc)
            && let Some(ip) =
                non_empty(svc, "/spec/clusterIP").and_then(|s| s.parse::<Ipv4Addr>().ok())
        {
            add(Held {
                key: Kind::ServiceIp.key(&space::ip_name(ip)),
                in_range: sp.is_some_and(|sp| sp.service.contains(u64::from(u32::from(ip)))),
                what: format!("cluster IP {ip}"),
            });
        }
        let mut ports = Vec::new();
        if needs_node_ports(svc) {
            ports.extend(node_ports(svc).into_iter().map(|p| (p, "node port")));
        }
        if needs_health_check(svc) {
            ports.extend(health_check_port(svc).map(|p| (p, "health-check node port")));
        }
        for (port, what) in ports {
            if let Ok(port) = u16::try_from(port) {
                add(Held {
                    key: Kind::NodePort.key(&port.to_string()),
                    in_range: sp.is_some_and(|sp| sp.node_ports.contains(u64::from(port))),
                    what: format!("{what} {port}"),
                });
            }
        }
        if service_type(svc) == "LoadBalancer" {
            for ip in ingress_ips(svc) {
                add(Held {
                    key: Kind::LbIp.key(&space::ip_name(ip)),
                    in_range: sp
                        .and_then(|sp| sp.lb.as_ref())
                        .is_some_and(|(_, pool)| pool.contains(u64::from(u32::from(ip)))),
                    what: format!("load-balancer IP {ip}"),
                });
            }
        }
        held
    }
}

/// `services/<namespace>/<name>`.
pub(super) fn service_owner(svc: &Value) -> String {
    format!("services/{}/{}", meta::namespace(svc), meta::name(svc))
}
