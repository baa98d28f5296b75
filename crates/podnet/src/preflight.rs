//! What `podnet lab up` and `podnet agent` need of the machine, checked before they change
//! anything ([`podnet_kernel::preflight`] probes each kernel feature in a throw-away
//! namespace). Everything missing is said at once, one line each, with what provides it.

use std::path::Path;

use anyhow::{Result, bail};
use podnet_kernel::preflight::{self, Feature, Missing};
use podnet_overlay::BackendKind;

/// The features a node uses: pods' veth pairs and bridge, the backend's device, and
/// nftables for the service proxy (both modes) and the masquerade.
fn node_features(backend: BackendKind) -> Vec<(Feature, &'static str)> {
    let mut features = vec![
        (Feature::Veth, "pod networking (each pod's veth pair)"),
        (Feature::Bridge, "pod networking (the node's bridge cni0)"),
        (
            Feature::Nftables,
            "the service proxy and the masquerade of pod traffic",
        ),
    ];
    match backend {
        BackendKind::Vxlan => features.push((Feature::Vxlan, "the vxlan backend")),
        BackendKind::Udp => features.push((Feature::Tun, "the udp backend")),
        BackendKind::HostGw => {}
    }
    features
}

/// The checks of `podnet lab up`: privileges, the state directories, the kernel features
/// of the lab's backend, and etcd for `--store etcd`.
pub fn lab(backend: BackendKind, etcd: Option<&Path>) -> Result<()> {
    let who = "podnet lab up";
    let mut missing: Vec<Missing> = preflight::privileges(who).into_iter().collect();
    if missing.is_empty() {
        for dir in [
            preflight::netns_dir(),
            "/run/podnet".into(),
            "/var/lib/podnet".into(),
        ] {
            missing.extend(preflight::writable_dir(&dir, "the lab's state"));
        }
        let mut features = node_features(backend);
        features.push((Feature::Bridge, "the lab's underlay switch"));
        features.dedup_by_key(|(f, _)| *f);
        missing.extend(preflight::probe(&features));
    }
    if let Some(etcd) = etcd {
        missing.extend(preflight::executable(etcd, "--store etcd", "etcd-server"));
    }
    report(who, &missing)
}

/// The checks of `podnet agent`: privileges and its node's kernel features.
pub fn agent(backend: BackendKind) -> Result<()> {
    let who = "podnet agent";
    let missing: Vec<Missing> = match preflight::privileges(who) {
        Some(m) => vec![m],
        None => preflight::probe(&node_features(backend)),
    };
    report(who, &missing)
}

fn report(who: &str, missing: &[Missing]) -> Result<()> {
    if missing.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = missing.iter().map(|m| format!("  - {m}")).collect();
    bail!(
        "{who} cannot start on this machine; nothing was changed. Missing:\n{}",
        lines.join("\n")
    )
}
