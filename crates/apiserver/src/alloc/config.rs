//! The configuration of the allocators: the ranges, their validation, and the spaces cut
//! from them.

use std::net::Ipv4Addr;

use ipnet::{IpNet, Ipv4Net};
use podnet_api::net;

use super::space::Space;

/// The address and port ranges the allocators hand out from.
#[derive(Debug, Clone)]
pub struct AllocatorConfig {
    /// `--service-cidr`: ClusterIPs.
    pub service_cidr: IpNet,
    /// `--nodeport-range`: NodePorts and health-check node ports.
    pub nodeport_range: std::ops::RangeInclusive<u16>,
    /// `--cluster-cidr`: cut into one pod CIDR per node.
    pub cluster_cidr: IpNet,
    /// `--node-cidr-size`: the prefix length of a node's pod CIDR.
    pub node_cidr_size: u8,
    /// `--lb-pool`: LoadBalancer ingress IPs; without it LoadBalancer Services stay pending.
    pub lb_pool: Option<IpNet>,
}

impl Default for AllocatorConfig {
    /// podnet's defaults: services `10.96.0.0/12`, node ports 30000-32767, cluster
    /// `10.244.0.0/16` with a /24 per node, no load-balancer pool.
    fn default() -> Self {
        AllocatorConfig {
            service_cidr: IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(10, 96, 0, 0), 12)),
            nodeport_range: 30000..=32767,
            cluster_cidr: IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(10, 244, 0, 0), 16)),
            node_cidr_size: 24,
            lb_pool: None,
        }
    }
}

/// The largest service range (2^20 addresses, the limit Kubernetes sets too).
const MAX_SERVICE_PREFIX: u8 = 12;
/// The smallest service range: 8 addresses, 5 of them handed out dynamically.
const MIN_SERVICE_PREFIX: u8 = 29;
/// At most 2^16 node subnets (as kube-controller-manager).
const MAX_NODE_SUBNET_BITS: u8 = 16;

impl AllocatorConfig {
    /// Refuses invalid or overlapping ranges with a message saying what is wrong and what to
    /// pass instead.
    pub fn validate(&self) -> Result<(), String> {
        let service = match self.service_cidr {
            IpNet::V4(n) => n,
            IpNet::V6(n) => {
                return Err(format!(
                    "--service-cidr {n}: IPv6 service ranges are not supported; pass an IPv4 range such as 10.96.0.0/12"
                ));
            }
        };
        if service.prefix_len() > MIN_SERVICE_PREFIX {
            return Err(format!(
                "--service-cidr {service} is too small ({} addresses); pass a /{MIN_SERVICE_PREFIX} or larger, such as 10.96.0.0/12",
                net::size(&service)
            ));
        }
        if service.prefix_len() < MAX_SERVICE_PREFIX {
            return Err(format!(
                "--service-cidr {service} is too large ({} addresses, more than the 2^20 Kubernetes allows); pass a /{MAX_SERVICE_PREFIX} or smaller, such as 10.96.0.0/12",
                net::size(&service)
            ));
        }
        let cluster = match self.cluster_cidr {
            IpNet::V4(n) => n,
            IpNet::V6(n) => {
                return Err(format!(
                    "--cluster-cidr {n}: IPv6 cluster ranges are not supported; pass an IPv4 range such as 10.244.0.0/16"
                ));
            }
        };
        if net::overlaps(&service, &cluster) {
            return Err(format!(
                "--service-cidr {service} overlaps --cluster-cidr {cluster}: Service IPs and pod IPs must not share addresses; pass disjoint ranges such as --service-cidr 10.96.0.0/12 --cluster-cidr 10.244.0.0/16"
            ));
        }
        let size = self.node_cidr_size;
        let suggestion = (cluster.prefix_len() + 8)
            .min(24)
            .max(cluster.prefix_len() + 1);
        if size <= cluster.prefix_len() {
            return Err(format!(
                "--node-cidr-size {size} must be longer than the prefix of --cluster-cidr {cluster} (each node gets a part of the cluster range); pass e.g. --node-cidr-size {}",
                suggestion.min(30)
            ));
        }
        if size > 30 {
            return Err(format!(
                "--node-cidr-size {size} leaves no room for pods (an IPv4 node subnet is at most a /30); pass e.g. --node-cidr-size 24"
            ));
        }
        if size - cluster.prefix_len() > MAX_NODE_SUBNET_BITS {
            return Err(format!(
                "--node-cidr-size {size} cuts --cluster-cidr {cluster} into 2^{} node subnets, more than the 2^{MAX_NODE_SUBNET_BITS} allowed; pass --node-cidr-size {} or shorter",
                size - cluster.prefix_len(),
                cluster.prefix_len() + MAX_NODE_SUBNET_BITS
            ));
        }
        let (lo, hi) = (*self.nodeport_range.start(), *self.nodeport_range.end());
        if lo > hi {
            return Err(format!(
                "--nodeport-range {lo}-{hi} is empty; pass a range such as 30000-32767"
            ));
        }
        if lo == 0 {
            return Err(format!(
                "--nodeport-range {lo}-{hi} includes port 0; ports are 1-65535, pass a range such as 30000-32767"
            ));
        }
        if let Some(pool) = self.lb_pool {
            let pool = match pool {
                IpNet::V4(n) => n,
                IpNet::V6(n) => {
                    return Err(format!(
                        "--lb-pool {n}: IPv6 pools are not supported; pass an IPv4 range of addresses your network routes to the nodes, such as 192.168.1.240/28"
                    ));
                }
            };
            for (flag, range) in [("--service-cidr", service), ("--cluster-cidr", cluster)] {
                if net::overlaps(&pool, &range) {
                    return Err(format!(
                        "--lb-pool {pool} overlaps {flag} {range}: load-balancer IPs must be outside the service and cluster ranges; pass a pool of addresses your network routes to the nodes, such as 192.168.1.240/28"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The ranges of a valid configuration.
#[derive(Debug, Clone)]
pub(super) struct Spaces {
    pub(super) service_net: Ipv4Net,
    pub(super) service: Space,
    pub(super) node_ports: Space,
    pub(super) cluster: Ipv4Net,
    pub(super) pod_cidrs: Space,
    pub(super) lb: Option<(Ipv4Net, Space)>,
}

impl Spaces {
    pub(super) fn new(config: &AllocatorConfig) -> Result<Spaces, String> {
        config.validate()?;
        let (IpNet::V4(service_net), IpNet::V4(cluster)) =
            (config.service_cidr, config.cluster_cidr)
        else {
            return Err("IPv6 ranges are not supported".into());
        };
        let pod_cidrs = Space::pod_cidrs(&cluster, config.node_cidr_size).ok_or_else(|| {
            format!(
                "--node-cidr-size {} does not cut --cluster-cidr {cluster}",
                config.node_cidr_size
            )
        })?;
        let lb = match config.lb_pool {
            Some(IpNet::V4(pool)) => Some((pool, Space::lb_ips(&pool))),
            Some(IpNet::V6(_)) => return Err("IPv6 load-balancer pools are not supported".into()),
            None => None,
        };
        Ok(Spaces {
            service_net,
            service: Space::service_ips(&service_net),
            node_ports: Space::node_ports(&config.nodeport_range),
            cluster,
            pod_cidrs,
            lb,
        })
    }
}
