//! Node pod CIDRs, as kube-controller-manager's `--allocate-node-cidrs`.

use ipnet::Ipv4Net;
use serde_json::{Value, json};

use super::space::{self, Kind, Requested, Strategy};
use super::{
    Allocated, Allocators, Held, child_mut, invalid, map_mut, non_empty, quoted, render_list,
    str_list,
};
use crate::error::{ApiError, ApiResult};
use crate::meta;

impl Allocators {
    /// For a Node being created: fills `spec.podCIDR` and `spec.podCIDRs` with the lowest free
    /// `/node_cidr_size` of the cluster CIDR. A requested podCIDR is honoured if free and a
    /// block of the range, else 422. On error nothing is kept.
    pub async fn allocate_node_cidr(&self, node: &mut Value) -> ApiResult<Allocated> {
        let mut taken = Allocated::default();
        match self.allocate_node_cidr_into(node, &mut taken).await {
            Ok(()) => Ok(taken),
            Err(e) => {
                self.rollback(taken).await;
                Err(e)
            }
        }
    }

    async fn allocate_node_cidr_into(
        &self,
        node: &mut Value,
        out: &mut Allocated,
    ) -> ApiResult<()> {
        let sp = self.spaces()?;
        let name = meta::name(node).to_owned();
        let owner = node_owner(node);
        let size = self.config.node_cidr_size;
        let listed = str_list(node, "/spec/podCIDRs");
        if listed.len() > 1 {
            return Err(invalid(
                "Node",
                &name,
                "spec.podCIDRs",
                format!(
                    "Invalid value: {}: this cluster gives each node one IPv4 pod CIDR (a /{size} of --cluster-cidr {})",
                    render_list(listed.clone()),
                    sp.cluster
                ),
            ));
        }
        let requested = non_empty(node, "/spec/podCIDR")
            .map(str::to_owned)
            .or_else(|| listed.first().filter(|s| !s.is_empty()).cloned());
        let cidr = if let Some(text) = requested {
            let bad = |why: String| {
                invalid(
                    "Node",
                    &name,
                    "spec.podCIDR",
                    format!("Invalid value: {}: {why}", quoted(&text)),
                )
            };
            let cidr: Ipv4Net = text.parse().map_err(|_| {
                bad(format!(
                    "must be an IPv4 CIDR such as {}",
                    Ipv4Net::new(sp.cluster.network(), size).unwrap_or(sp.cluster)
                ))
            })?;
            if cidr.prefix_len() != size {
                return Err(bad(format!(
                    "must be a /{size}, the pod CIDR size of this cluster (--node-cidr-size)"
                )));
            }
            if cidr.addr() != cidr.network() {
                return Err(bad(format!("must be a network address: {}", cidr.trunc())));
            }
            if !sp.cluster.contains(&cidr) {
                return Err(bad(format!(
                    "is not inside the cluster CIDR {} (--cluster-cidr)",
                    sp.cluster
                )));
            }
            let item = u64::from(u32::from(cidr.network()));
            match space::take_requested(self.store(), &sp.pod_cidrs, item, &owner).await? {
                Requested::Taken(t) => out.push(t),
                Requested::AlreadyOurs => {}
                Requested::Busy => return Err(bad("is already allocated to another node".into())),
            }
            cidr
        } else {
            match space::take_next(self.store(), &sp.pod_cidrs, &owner, Strategy::Lowest).await? {
                Some((item, t)) => {
                    out.push(t);
                    Ipv4Net::new(space::ipv4(item), size).unwrap_or(sp.cluster)
                }
                None => {
                    return Err(ApiError::internal(format!(
                        "Internal error occurred: failed to allocate a pod CIDR for node {}: all {} /{size} subnets of the cluster range {} are in use; delete unused Nodes or restart the apiserver with a larger --cluster-cidr or a longer --node-cidr-size",
                        quoted(&name),
                        sp.pod_cidrs.count(),
                        sp.cluster
                    )));
                }
            }
        };
        let spec = map_mut(child_mut(node, "spec"));
        spec.insert("podCIDR".into(), json!(cidr.to_string()));
        spec.insert("podCIDRs".into(), json!([cidr.to_string()]));
        Ok(())
    }

    /// After a Node is deleted.
    pub async fn release_node(&self, node: &Value) {
        let owner = node_owner(node);
        for held in self.node_held(node) {
            space::release_key(self.store(), &held.key, &owner).await;
        }
    }

    /// The allocation key a Node holds.
    pub(super) fn node_held(&self, node: &Value) -> Vec<Held> {
        let Some(cidr) = non_empty(node, "/spec/podCIDR").and_then(|s| s.parse::<Ipv4Net>().ok())
        else {
            return Vec::new();
        };
        let in_range = self.spaces.as_ref().is_ok_and(|sp| {
            cidr.prefix_len() == self.config.node_cidr_size
                && cidr.addr() == cidr.network()
                && sp.pod_cidrs.contains(u64::from(u32::from(cidr.network())))
        });
        vec![Held {
            key: Kind::PodCidr.key(&space::cidr_name(&cidr)),
            in_range,
            what: format!("pod CIDR {cidr}"),
        }]
    }
}

/// `nodes/<name>`.
pub(super) fn node_owner(node: &Value) -> String {
    format!("nodes/{}", meta::name(node))
}
