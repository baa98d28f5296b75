//! What the node reports about itself: OS image, kernel, architecture, CPUs, memory, its
//! InternalIP and the MTU of the interface carrying it.

use std::fs;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};
use podnet_kernel::Netlink;

use super::NodeError;

/// The node's description, as kubelet fills `status.nodeInfo`, `capacity` and the labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemInfo {
    /// `PRETTY_NAME` of os-release (`Linux` when there is none).
    pub os_image: String,
    /// The running kernel's release (`uname -r`).
    pub kernel_version: String,
    /// Always `linux`.
    pub operating_system: String,
    /// Kubernetes' (Go's) name for the architecture: `amd64`, `arm64`…
    pub architecture: String,
    /// `/etc/machine-id` (empty when unreadable).
    pub machine_id: String,
    /// `/sys/class/dmi/id/product_uuid` (empty when unreadable).
    pub system_uuid: String,
    /// `/proc/sys/kernel/random/boot_id`.
    pub boot_id: String,
    /// CPUs this process may use.
    pub cpus: u32,
    /// `MemTotal` of `/proc/meminfo`, in KiB.
    pub memory_kib: u64,
}

impl SystemInfo {
    /// Reads the machine's description. Never fails: what cannot be read is left empty (or
    /// at a safe default) and logged.
    pub fn detect() -> SystemInfo {
        let os_image = ["/etc/os-release", "/usr/lib/os-release"]
            .iter()
            .find_map(|p| fs::read_to_string(p).ok())
            .and_then(|text| os_release_pretty_name(&text))
            .unwrap_or_else(|| "Linux".to_string());
        let memory_kib = fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| meminfo_total_kib(&text))
            .unwrap_or_else(|| {
                tracing::warn!("cannot read MemTotal from /proc/meminfo; reporting 0 memory");
                0
            });
        let cpus = std::thread::available_parallelism()
            .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
            .unwrap_or(1);
        SystemInfo {
            os_image,
            kernel_version: read_trimmed("/proc/sys/kernel/osrelease"),
            operating_system: "linux".to_string(),
            architecture: kube_arch(std::env::consts::ARCH).to_string(),
            machine_id: read_trimmed("/etc/machine-id"),
            system_uuid: read_trimmed("/sys/class/dmi/id/product_uuid"),
            boot_id: read_trimmed("/proc/sys/kernel/random/boot_id"),
            cpus,
            memory_kib,
        }
    }
}

fn read_trimmed(path: &str) -> String {
    match fs::read_to_string(path) {
        Ok(text) => text.trim().to_string(),
        Err(e) => {
            tracing::debug!(path, error = %e, "not reported in nodeInfo");
            String::new()
        }
    }
}

/// `PRETTY_NAME` of an os-release file, unquoted.
pub fn os_release_pretty_name(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let value = line.trim().strip_prefix("PRETTY_NAME=")?;
        let value = value.trim();
        let unquoted = ['"', '\'']
            .iter()
            .find_map(|q| value.strip_prefix(*q).and_then(|v| v.strip_suffix(*q)))
            .unwrap_or(value);
        Some(unquoted.to_string()).filter(|v| !v.is_empty())
    })
}

/// `MemTotal` of a `/proc/meminfo` text, in KiB.
pub fn meminfo_total_kib(text: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix("MemTotal:")?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Kubernetes' architecture name (Go's `GOARCH`) for Rust's `std::env::consts::ARCH`.
pub fn kube_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// The node IP to use when none is given: the first IPv4 address of the namespace's
/// interfaces that is global (not loopback, link-local or unspecified) and not inside the
/// cluster's pod range (a bridge's gateway address is not the node's address).
pub fn first_global_ipv4(
    netlink: &mut Netlink,
    cluster_cidr: &Ipv4Net,
) -> Result<Option<Ipv4Addr>, NodeError> {
    let mut addresses = netlink.addresses(None)?;
    addresses.sort_by_key(|(index, _)| *index);
    Ok(addresses.into_iter().find_map(|(_, net)| match net {
        IpNet::V4(v4) => {
            let ip = v4.addr();
            let global = !ip.is_loopback()
                && !ip.is_link_local()
                && !ip.is_unspecified()
                && !ip.is_multicast()
                && !cluster_cidr.contains(&ip);
            global.then_some(ip)
        }
        IpNet::V6(_) => None,
    }))
}

/// The MTU of the interface that has address `ip`, if any interface has it.
pub fn mtu_of_address(netlink: &mut Netlink, ip: Ipv4Addr) -> Result<Option<u32>, NodeError> {
    let addresses = netlink.addresses(None)?;
    let Some((index, _)) = addresses
        .into_iter()
        .find(|(_, net)| net.addr() == IpAddr::V4(ip))
    else {
        return Ok(None);
    };
    Ok(netlink.link_by_index(index)?.map(|link| link.mtu))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretty_name() {
        let text =
            "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\nID=debian\n";
        assert_eq!(
            os_release_pretty_name(text).as_deref(),
            Some("Debian GNU/Linux 13 (trixie)")
        );
        assert_eq!(
            os_release_pretty_name("PRETTY_NAME='Alpine Linux v3.20'").as_deref(),
            Some("Alpine Linux v3.20")
        );
        assert_eq!(
            os_release_pretty_name("PRETTY_NAME=Plain").as_deref(),
            Some("Plain")
        );
        assert_eq!(os_release_pretty_name("ID=x\nPRETTY_NAME=\"\"\n"), None);
        assert_eq!(os_release_pretty_name(""), None);
    }

    #[test]
    fn meminfo() {
        let text = "MemTotal:       16318412 kB\nMemFree:         1234 kB\n";
        assert_eq!(meminfo_total_kib(text), Some(16318412));
        assert_eq!(meminfo_total_kib("MemFree: 1 kB"), None);
    }

    #[test]
    fn arch_names() {
        assert_eq!(kube_arch("x86_64"), "amd64");
        assert_eq!(kube_arch("aarch64"), "arm64");
        assert_eq!(kube_arch("s390x"), "s390x");
        assert_eq!(kube_arch("riscv64"), "riscv64");
    }

    #[test]
    fn detect_reads_this_machine() {
        let info = SystemInfo::detect();
        assert_eq!(info.operating_system, "linux");
        assert!(!info.kernel_version.is_empty());
        assert!(info.cpus >= 1);
        assert!(info.memory_kib > 0);
    }
}
