//! The files the node's network set-up leaves for the CNI plugin and the container runtime:
//! flannel's `subnet.env` (the node's lease) and the CNI conflist. Both are written
//! atomically (a temporary file in the same directory, then a rename) and only when their
//! content changes, so a runtime never reads half a file.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use podnet_api::cni::config::PLUGIN_TYPE;
use podnet_api::subnet_env::SubnetEnv;
use serde::Serialize;

use super::NodeError;

/// The conflist's file name in the CNI config directory.
pub const CONFLIST_FILE: &str = "10-podnet.conflist";
/// The CNI network's name (also the IPAM's directory under its data dir).
pub const NETWORK_NAME: &str = "podnet";
/// The node's pod bridge.
pub const BRIDGE: &str = "cni0";
/// The CNI spec version of the conflist: 1.0.0, the newest that the CNI library of today's
/// runtimes reads (podman 4.3's and containerd 1.6's libcni refuse a 1.1.0 result and fail
/// the ADD). podnet-cni answers in the config's version, and reads 1.1.0 too.
pub const CNI_VERSION: &str = "1.0.0";

/// The `subnet.env` for a node whose pod subnet is `pod_cidr`: `FLANNEL_SUBNET` is the
/// subnet's first address (the bridge's gateway address) with its prefix; `FLANNEL_IPMASQ`
/// says whether the node masquerades pod traffic leaving the cluster (`--ip-masq`).
pub fn subnet_env(
    cluster_cidr: Ipv4Net,
    pod_cidr: Ipv4Net,
    mtu: u32,
    ip_masq: bool,
) -> Result<SubnetEnv, NodeError> {
    let pod_cidr = pod_cidr.trunc();
    if !cluster_cidr.contains(&pod_cidr) {
        return Err(NodeError::Invalid(format!(
            "the node's podCIDR {pod_cidr} is outside the cluster CIDR {cluster_cidr}: start the agent with the --cluster-cidr the apiserver allocates node subnets from"
        )));
    }
    let gateway = podnet_api::net::nth_host(&pod_cidr, 1)
        .filter(|_| pod_cidr.prefix_len() <= 30)
        .ok_or_else(|| {
            NodeError::Invalid(format!(
                "the node's podCIDR {pod_cidr} is too small for pods (it needs a gateway and addresses): give nodes at least a /30"
            ))
        })?;
    let subnet = Ipv4Net::new(gateway, pod_cidr.prefix_len())
        .map_err(|e| NodeError::Invalid(format!("the node's podCIDR {pod_cidr}: {e}")))?;
    Ok(SubnetEnv {
        network: Some(cluster_cidr.trunc()),
        subnet: Some(subnet),
        mtu: Some(mtu),
        ipmasq: Some(ip_masq),
    })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConfList<'a> {
    cni_version: &'a str,
    name: &'a str,
    plugins: [Plugin<'a>; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Plugin<'a> {
    #[serde(rename = "type")]
    plugin_type: &'a str,
    bridge: &'a str,
    is_gateway: bool,
    is_default_gateway: bool,
    ip_masq: bool,
    hairpin_mode: bool,
    /// What the runtime may pass in `runtimeConfig`: a pod's static address and MAC
    /// (`podman run --ip`, `--mac-address`, a CRI's `ips` annotations), which podnet-cni honours.
    capabilities: Capabilities,
    ipam: Ipam<'a>,
}

#[derive(Serialize)]
struct Capabilities {
    ips: bool,
    mac: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Ipam<'a> {
    #[serde(rename = "type")]
    ipam_type: &'a str,
    subnet_file: &'a str,
    data_dir: &'a str,
}

fn utf8<'a>(what: &str, path: &'a Path) -> Result<&'a str, NodeError> {
    path.to_str().ok_or_else(|| {
        NodeError::Invalid(format!(
            "{what} {} is not valid UTF-8 and cannot be written into the CNI config: choose another path",
            path.display()
        ))
    })
}

/// The CNI conflist (pretty JSON, newline-terminated): podnet-cni as bridge plugin and IPAM,
/// bridge `cni0` as the pods' default gateway, hairpin on, masquerading left to the node
/// (`FLANNEL_IPMASQ=true`), the node's subnet read from `subnet_file`, allocations kept in
/// `ipam_data_dir`.
pub fn conflist(subnet_file: &Path, ipam_data_dir: &Path) -> Result<String, NodeError> {
    let list = ConfList {
        cni_version: CNI_VERSION,
        name: NETWORK_NAME,
        plugins: [Plugin {
            plugin_type: PLUGIN_TYPE,
            bridge: BRIDGE,
            is_gateway: true,
            is_default_gateway: true,
            ip_masq: false,
            hairpin_mode: true,
            capabilities: Capabilities {
                ips: true,
                mac: true,
            },
            ipam: Ipam {
                ipam_type: PLUGIN_TYPE,
                subnet_file: utf8("--subnet-file", subnet_file)?,
                data_dir: utf8("the IPAM data directory", ipam_data_dir)?,
            },
        }],
    };
    let mut text = serde_json::to_string_pretty(&list)
        .map_err(|e| NodeError::Invalid(format!("rendering the CNI conflist: {e}")))?;
    text.push('\n');
    Ok(text)
}

/// Writes `contents` to `path` unless it already holds exactly that: to a temporary file in
/// the same directory (created if needed), synced, then renamed over `path`. Returns whether
/// it wrote.
pub fn write_if_changed(path: &Path, contents: &str) -> Result<bool, NodeError> {
    match fs::read(path) {
        Ok(current) if current == contents.as_bytes() => return Ok(false),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(NodeError::io("reading", path, e)),
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| NodeError::io("creating directory", dir, e))?;
    let file_name = path
        .file_name()
        .ok_or_else(|| NodeError::Invalid(format!("{} does not name a file", path.display())))?
        .to_string_lossy();
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = fs::File::create(&tmp).map_err(|e| NodeError::io("creating", &tmp, e))?;
        file.write_all(contents.as_bytes())
            .map_err(|e| NodeError::io("writing", &tmp, e))?;
        file.sync_all()
            .map_err(|e| NodeError::io("syncing", &tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| NodeError::io("renaming into place", path, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map(|()| true)
}

/// Where the node network's files go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFiles {
    /// flannel's `subnet.env` (the CNI plugin's `ipam.subnetFile`).
    pub subnet_file: PathBuf,
    /// The CNI config directory; the conflist is [`CONFLIST_FILE`] in it.
    pub cni_conf_dir: PathBuf,
    /// The agent's state directory; the IPAM keeps its allocations under `ipam/` in it.
    pub state_dir: PathBuf,
}

/// Which files a [`NodeFiles::ensure`] rewrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FilesWritten {
    pub subnet_env: bool,
    pub conflist: bool,
}

impl NodeFiles {
    pub fn conflist_path(&self) -> PathBuf {
        self.cni_conf_dir.join(CONFLIST_FILE)
    }

    pub fn ipam_data_dir(&self) -> PathBuf {
        self.state_dir.join("ipam")
    }

    /// Makes both files hold what they should: `subnet.env` first, so a runtime that finds
    /// the conflist also finds the lease.
    pub fn ensure(&self, env: &SubnetEnv) -> Result<FilesWritten, NodeError> {
        let subnet_env = write_if_changed(&self.subnet_file, &env.render())?;
        let conflist_text = conflist(&self.subnet_file, &self.ipam_data_dir())?;
        let conflist = write_if_changed(&self.conflist_path(), &conflist_text)?;
        Ok(FilesWritten {
            subnet_env,
            conflist,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn subnet_env_of_a_node() {
        let env = subnet_env(net("10.244.0.0/16"), net("10.244.1.0/24"), 1450, true).unwrap();
        assert_eq!(
            env.render(),
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
        );
        let err = subnet_env(net("10.244.0.0/16"), net("10.245.1.0/24"), 1500, true).unwrap_err();
        assert!(err.to_string().contains("--cluster-cidr"), "{err}");
        assert!(subnet_env(net("10.244.0.0/16"), net("10.244.1.0/31"), 1500, true).is_err());
    }

    #[test]
    fn conflist_is_what_podnet_cni_reads() {
        let text = conflist(
            Path::new("/run/flannel/subnet.env"),
            Path::new("/run/podnet/agent/n1/ipam"),
        )
        .unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"cniVersion":"1.0.0","name":"podnet","plugins":[{"type":"podnet-cni","bridge":"cni0","isGateway":true,"isDefaultGateway":true,"ipMasq":false,"hairpinMode":true,"capabilities":{"ips":true,"mac":true},"ipam":{"type":"podnet-cni","subnetFile":"/run/flannel/subnet.env","dataDir":"/run/podnet/agent/n1/ipam"}}]})
        );
        // The plugin's own parser accepts it, as a runtime hands it over (the list's name
        // and version copied into the plugin's config); the result will be a 1.0.0 one.
        let list = podnet_api::cni::config::NetConfList::parse(text.as_bytes()).unwrap();
        let plugin =
            podnet_api::cni::NetConf::parse(&list.plugin_config(0, None).unwrap()).unwrap();
        assert_eq!(plugin.cni_version, "1.0.0");
        assert_eq!(
            podnet_api::cni::CniResult::new(plugin.cni_version).to_value()["cniVersion"],
            "1.0.0"
        );
        let conf: podnet_api::cni::config::NetConf =
            serde_json::from_value(value["plugins"][0].clone()).unwrap();
        assert_eq!(conf.ip_masq, Some(false));
        assert!(conf.hairpin_mode && conf.is_default_gateway && conf.is_gateway);
        assert_eq!(
            conf.ipam.subnet_file.as_deref(),
            Some("/run/flannel/subnet.env")
        );
        assert_eq!(
            conf.ipam.data_dir.as_deref(),
            Some("/run/podnet/agent/n1/ipam")
        );
    }

    #[test]
    fn writes_atomically_and_only_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/dir/subnet.env");
        assert!(write_if_changed(&path, "a\n").unwrap());
        assert!(!write_if_changed(&path, "a\n").unwrap());
        assert!(write_if_changed(&path, "b\n").unwrap());
        assert_eq!(fs::read_to_string(&path).unwrap(), "b\n");
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("subnet.env")]);
    }
}
