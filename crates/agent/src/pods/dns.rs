//! The pod's name resolution files, as kubelet writes them: `/etc/resolv.conf` from the
//! pod's `dnsPolicy` and `dnsConfig` (kubelet's `pkg/kubelet/network/dns`: ClusterFirst
//! names the cluster DNS with the search path `<ns>.svc.<zone> svc.<zone> <zone>` and
//! `ndots:5`; Default copies the node's; None takes only `dnsConfig`; a host-network pod
//! is ClusterFirst only with ClusterFirstWithHostNet), laid out as containerd writes it;
//! and kubelet's managed `/etc/hosts` (localhost, the pod's address with its hostname
//! and, with a `subdomain`, its FQDN, then `hostAliases`). Pure: the runtime writes the
//! files and bind-mounts them in the pod's mount namespace.

use std::net::IpAddr;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::Pod;

/// kubelet's limits (validation.MaxDNSNameservers, MaxDNSSearchPaths and the search
/// line length).
const MAX_NAMESERVERS: usize = 3;
const MAX_SEARCHES: usize = 32;
const MAX_SEARCH_CHARS: usize = 2048;

/// What the node's kubelet would be started with (`--cluster-dns`, `--cluster-domain`,
/// `--resolv-conf`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodDns {
    /// The cluster DNS Service's address(es); empty: ClusterFirst falls back to the
    /// node's resolvers, as kubelet does without `--cluster-dns`.
    pub cluster_dns: Vec<IpAddr>,
    pub cluster_domain: String,
    /// The node's resolv.conf (what `dnsPolicy: Default` pods get).
    pub resolv_conf: PathBuf,
}

impl Default for PodDns {
    fn default() -> PodDns {
        PodDns {
            cluster_dns: Vec::new(),
            cluster_domain: "cluster.local".into(),
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
        }
    }
}

/// A resolv.conf, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolv {
    pub nameservers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

impl Resolv {
    /// Reads resolv.conf text as kubelet's parser does (the last `search` line wins,
    /// options add up).
    pub fn parse(text: &str) -> Resolv {
        let mut r = Resolv::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut fields = line.split_whitespace();
            match fields.next() {
                Some("nameserver") => r.nameservers.extend(fields.next().map(str::to_string)),
                Some("search") => {
                    r.searches = fields
                        .map(|s| s.trim_end_matches('.').to_string())
                        .collect()
                }
                Some("options") => r.options.extend(fields.map(str::to_string)),
                _ => {}
            }
        }
        r
    }

    /// The file, as containerd writes it from the CRI's DNSConfig.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if !self.searches.is_empty() {
            out.push_str(&format!("search {}\n", self.searches.join(" ")));
        }
        if !self.nameservers.is_empty() {
            out.push_str(&format!(
                "nameserver {}\n",
                self.nameservers.join("\nnameserver ")
            ));
        }
        if !self.options.is_empty() {
            out.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        out
    }
}

fn omit_duplicates(items: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for i in items {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

/// Pod options override the same option from the base (`ndots:2` over `ndots:5`).
fn merge_options(base: Vec<String>, pod: &[(String, Option<String>)]) -> Vec<String> {
    let name = |o: &str| o.split(':').next().unwrap_or(o).to_string();
    let mut out: Vec<String> = Vec::new();
    let pod_opts: Vec<String> = pod
        .iter()
        .map(|(n, v)| match v {
            Some(v) => format!("{n}:{v}"),
            None => n.clone(),
        })
        .collect();
    for o in base.into_iter().chain(pod_opts) {
        if let Some(i) = out.iter().position(|e| name(e) == name(&o)) {
            out[i] = o;
        } else {
            out.push(o);
        }
    }
    out
}

/// The pod's resolv.conf, from the node's (`host`).
pub fn resolv_conf(pod: &Pod, dns: &PodDns, host: &Resolv) -> Resolv {
    let spec = pod.spec.as_ref();
    let policy = spec
        .and_then(|s| s.dns_policy.as_deref())
        .unwrap_or("ClusterFirst");
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let cluster_first = match policy {
        "ClusterFirstWithHostNet" => true,
        "ClusterFirst" => !host_network,
        _ => false,
    };
    let mut r = match policy {
        "None" => Resolv::default(),
        _ if cluster_first && !dns.cluster_dns.is_empty() => {
            let domain = &dns.cluster_domain;
            let mut searches = vec![
                format!("{ns}.svc.{domain}"),
                format!("svc.{domain}"),
                domain.clone(),
            ];
            searches.extend(host.searches.iter().cloned());
            Resolv {
                nameservers: dns.cluster_dns.iter().map(IpAddr::to_string).collect(),
                searches: omit_duplicates(searches),
                options: vec!["ndots:5".into()],
            }
        }
        // Default, or ClusterFirst without a cluster DNS: the node's.
        _ => host.clone(),
    };
    if let Some(cfg) = spec.and_then(|s| s.dns_config.as_ref()) {
        r.nameservers
            .extend(cfg.nameservers.iter().flatten().cloned());
        r.nameservers = omit_duplicates(std::mem::take(&mut r.nameservers));
        r.searches.extend(cfg.searches.iter().flatten().cloned());
        r.searches = omit_duplicates(std::mem::take(&mut r.searches));
        let opts: Vec<(String, Option<String>)> = cfg
            .options
            .iter()
            .flatten()
            .filter_map(|o| Some((o.name.clone()?, o.value.clone())))
            .collect();
        r.options = merge_options(std::mem::take(&mut r.options), &opts);
    }
    r.nameservers.truncate(MAX_NAMESERVERS);
    r.searches.truncate(MAX_SEARCHES);
    while r.searches.join(" ").len() > MAX_SEARCH_CHARS {
        r.searches.pop();
    }
    r
}

/// The pod's hostname and, with a `subdomain`, its FQDN.
pub fn hostname_and_fqdn(pod: &Pod, hostname: &str, dns: &PodDns) -> (String, Option<String>) {
    let spec = pod.spec.as_ref();
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let fqdn = spec
        .and_then(|s| s.subdomain.as_deref())
        .filter(|s| !s.is_empty())
        .map(|sub| format!("{hostname}.{sub}.{ns}.svc.{}", dns.cluster_domain));
    (hostname.to_string(), fqdn)
}

/// kubelet's managed /etc/hosts (`pod_ip` once the network is up).
pub fn hosts_file(pod: &Pod, hostname: &str, pod_ip: Option<&str>, dns: &PodDns) -> String {
    let mut out = String::from(
        "# Kubernetes-managed hosts file.\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\n\
         fe00::1\tip6-allnodes\n\
         fe00::2\tip6-allrouters\n",
    );
    if let Some(ip) = pod_ip {
        let (host, fqdn) = hostname_and_fqdn(pod, hostname, dns);
        match fqdn {
            Some(f) => out.push_str(&format!("{ip}\t{f}\t{host}\n")),
            None => out.push_str(&format!("{ip}\t{host}\n")),
        }
    }
    let aliases = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_aliases.as_ref())
        .filter(|a| !a.is_empty());
    if let Some(aliases) = aliases {
        out.push_str("\n# Entries added by HostAliases.\n");
        for a in aliases {
            let names = a.hostnames.clone().unwrap_or_default().join("\t");
            out.push_str(&format!("{}\t{names}\n", a.ip));
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    fn dns() -> PodDns {
        PodDns {
            cluster_dns: vec!["10.96.0.10".parse().unwrap()],
            ..PodDns::default()
        }
    }

    fn host() -> Resolv {
        Resolv::parse("search corp.example\nnameserver 192.0.2.53\noptions edns0 ndots:1\n")
    }

    #[test]
    fn cluster_first_is_kubelets() {
        let p = pod(
            serde_json::json!({"metadata": {"namespace": "shop", "name": "a"}, "spec": {"containers": []}}),
        );
        assert_eq!(
            resolv_conf(&p, &dns(), &host()).render(),
            "search shop.svc.cluster.local svc.cluster.local cluster.local corp.example\nnameserver 10.96.0.10\noptions ndots:5\n"
        );
        // Without a cluster DNS: the node's.
        let none = PodDns::default();
        assert_eq!(resolv_conf(&p, &none, &host()), host());
    }

    #[test]
    fn policies() {
        let with = |policy: &str, host_net: bool| {
            pod(
                serde_json::json!({"metadata": {"namespace": "n", "name": "a"},
                "spec": {"containers": [], "dnsPolicy": policy, "hostNetwork": host_net}}),
            )
        };
        assert_eq!(
            resolv_conf(&with("Default", false), &dns(), &host()),
            host()
        );
        assert_eq!(
            resolv_conf(&with("ClusterFirst", true), &dns(), &host()),
            host()
        );
        assert_eq!(
            resolv_conf(&with("ClusterFirstWithHostNet", true), &dns(), &host()).nameservers,
            ["10.96.0.10"]
        );
        let p = pod(
            serde_json::json!({"metadata": {"namespace": "n", "name": "a"},
            "spec": {"containers": [], "dnsPolicy": "None", "dnsConfig": {
                "nameservers": ["192.0.2.1"], "searches": ["a.example"],
                "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}}}),
        );
        assert_eq!(
            resolv_conf(&p, &dns(), &host()).render(),
            "search a.example\nnameserver 192.0.2.1\noptions ndots:2 edns0\n"
        );
        // dnsConfig on top of ClusterFirst: appended, options merged.
        let p = pod(
            serde_json::json!({"metadata": {"namespace": "n", "name": "a"},
            "spec": {"containers": [], "dnsConfig": {"nameservers": ["192.0.2.1"],
                "options": [{"name": "ndots", "value": "1"}, {"name": "timeout", "value": "2"}]}}}),
        );
        let r = resolv_conf(&p, &dns(), &Resolv::default());
        assert_eq!(r.nameservers, ["10.96.0.10", "192.0.2.1"]);
        assert_eq!(r.options, ["ndots:1", "timeout:2"]);
    }

    #[test]
    fn hosts_as_kubelet_writes_it() {
        let p = pod(
            serde_json::json!({"metadata": {"namespace": "n", "name": "web-0"},
            "spec": {"containers": [], "hostname": "web-0", "subdomain": "web",
                "hostAliases": [{"ip": "192.0.2.9", "hostnames": ["foo", "bar"]}]}}),
        );
        let h = hosts_file(&p, "web-0", Some("10.244.1.5"), &dns());
        assert!(h.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"));
        assert!(
            h.contains("10.244.1.5\tweb-0.web.n.svc.cluster.local\tweb-0\n"),
            "{h}"
        );
        assert!(
            h.ends_with("\n# Entries added by HostAliases.\n192.0.2.9\tfoo\tbar\n"),
            "{h}"
        );
    }
}
