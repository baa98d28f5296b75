//! The node's pod addresses: used and free in its subnet, read at each scrape from the CNI
//! plugin's data directory (host-local's layout, as podnet-cni's `ipam` module keeps it: one
//! file per allocated address, named by the address). Only the names are read, without the
//! plugin's lock, so a scrape never holds up a pod being wired.

use std::net::Ipv4Addr;
use std::path::Path;

use ipnet::Ipv4Net;
use podnet_api::cni::Pool;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;

/// Addresses of the pool allocated in `dir`, and the pool's size. A missing directory is
/// an IPAM that has handed nothing out yet.
pub fn usage(dir: &Path, pool: &Pool) -> std::io::Result<(u64, u64)> {
    let capacity = u64::from(pool.capacity());
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, capacity)),
        Err(e) => return Err(e),
    };
    let mut used = 0u64;
    for entry in entries {
        let name = entry?.file_name();
        let ip = name.to_str().and_then(|n| n.parse::<Ipv4Addr>().ok());
        if ip.is_some_and(|ip| pool.is_allocatable(ip)) {
            used += 1;
        }
    }
    Ok((used, capacity))
}

/// Encodes the used and free addresses of `subnet` (nothing before the node has one);
/// whether the directory could be read.
pub fn encode(
    encoder: &mut DescriptorEncoder,
    dir: &Path,
    subnet: Option<Ipv4Net>,
) -> Result<bool, std::fmt::Error> {
    let Some(subnet) = subnet else {
        return Ok(true);
    };
    let Ok(pool) = Pool::new(subnet, None, None, None) else {
        return Ok(false);
    };
    let (used, capacity) = match usage(dir, &pool) {
        Ok(u) => u,
        Err(e) => {
            tracing::debug!(dir = %dir.display(), error = %e, "metrics: cannot read the IPAM's directory");
            return Ok(false);
        }
    };
    let subnet = subnet.to_string();
    for (name, help, n) in [
        (
            "podnet_ipam_addresses_used",
            "Pod addresses of the node's subnet allocated by the CNI plugin.",
            used,
        ),
        (
            "podnet_ipam_addresses_free",
            "Pod addresses of the node's subnet still free (the gateway is not counted).",
            capacity.saturating_sub(used),
        ),
    ] {
        let gauge = ConstGauge::new(n as i64);
        let mut metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
        gauge.encode(metric.encode_family(&[("subnet", subnet.as_str())])?)?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_records_of_the_pool_only() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "10.244.1.2",
            "10.244.1.3",
            "10.244.1.1",
            "10.244.9.9",
            "lock",
            "last_reserved_ip.0",
            "attachment-abc@eth0",
        ] {
            std::fs::write(dir.path().join(name), "x").unwrap();
        }
        let pool = Pool::new("10.244.1.0/24".parse().unwrap(), None, None, None).unwrap();
        // .1 is the gateway, .9.9 is another subnet's.
        assert_eq!(usage(dir.path(), &pool).unwrap(), (2, 253));
        let missing = dir.path().join("none");
        assert_eq!(usage(&missing, &pool).unwrap(), (0, 253));
    }
}
