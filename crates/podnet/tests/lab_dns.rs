//! Cluster DNS on a real 3-node lab, one lab for every check: the kube-dns Service at
//! the service range's tenth address in front of the `podnet dns` pods; from a pod on
//! every node, glibc (`getent hosts`, through the pod's resolv.conf and search path)
//! finds `web`, `web.shop` and `web.shop.svc.cluster.local`, and an HTTP request by name
//! goes through the Service; `dig` (bind9-dnsutils) from a pod checks every record
//! type, headless Services with and without ready endpoints, ExternalName, NXDOMAIN vs
//! NODATA, names in other namespaces, and a Service created, changed and deleted
//! (answers follow within a second); pods with each dnsPolicy and their Service
//! variables; a DNS pod deleted (the other replica answers) and a DNS server answering
//! within a second of its start. Upstream forwarding is off (`--dns-upstream none`):
//! nothing leaves the lab (the forwarder is tested against a fake upstream in
//! crates/dns/tests/serve.rs). Needs root and dig.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Lab, PODNET, is_root, text, wait_for};

/// How long a change may take to show in answers.
const CHANGE_WITHIN: Duration = Duration::from_secs(1);

fn usable() -> bool {
    let dig = std::process::Command::new("dig").arg("-v").output().is_ok();
    if !(is_root() && dig) {
        eprintln!("skipped: needs root and dig (bind9-dnsutils)");
    }
    is_root() && dig
}

fn manifest(lab: &Lab) -> String {
    let mut m = String::from(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: other}\n",
    );
    // Two web pods (also the headless Service's, with hostnames) and a client per node.
    for i in 0..2 {
        m.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: web-{i}, namespace: shop, labels: {{app: web}}}}\nspec:\n  nodeName: {node}\n  hostname: web-{i}\n  subdomain: web-h\n  containers:\n  - name: web\n    image: podnet\n    command: [\"{PODNET}\", \"probe\", \"serve\", \"--tcp\", \"0.0.0.0:8080\"]\n    ports: [{{name: http, containerPort: 8080}}]\n    readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1}}\n",
            node = lab.node(i + 1)
        ));
    }
    for i in 1..=3 {
        m.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: client-{i}, namespace: shop}}\nspec:\n  nodeName: {node}\n  containers:\n  - {{name: c, image: podnet, command: [sleep, \"3600\"]}}\n",
            node = lab.node(i)
        ));
    }
    m.push_str(&format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: elsewhere, namespace: other}}\nspec:\n  nodeName: {n1}\n  containers:\n  - {{name: c, image: podnet, command: [sleep, \"3600\"]}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: hostdns, namespace: shop}}\nspec:\n  nodeName: {n1}\n  dnsPolicy: Default\n  containers:\n  - {{name: c, image: podnet, command: [sleep, \"3600\"]}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: nonedns, namespace: shop}}\nspec:\n  nodeName: {n1}\n  enableServiceLinks: false\n  dnsPolicy: None\n  dnsConfig: {{nameservers: [192.0.2.53], searches: [example.test], options: [{{name: ndots, value: \"2\"}}]}}\n  containers:\n  - {{name: c, image: podnet, command: [sleep, \"3600\"]}}\n",
        n1 = lab.node(1)
    ));
    m.push_str(
        "---\napiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec: {selector: {app: web}, ports: [{name: http, port: 80, targetPort: 8080}]}\n\
         ---\napiVersion: v1\nkind: Service\nmetadata: {name: web-h, namespace: shop}\nspec: {clusterIP: None, selector: {app: web}, ports: [{name: http, port: 80, targetPort: 8080}]}\n\
         ---\napiVersion: v1\nkind: Service\nmetadata: {name: empty-h, namespace: shop}\nspec: {clusterIP: None, selector: {app: nobody}, ports: [{name: http, port: 80}]}\n\
         ---\napiVersion: v1\nkind: Service\nmetadata: {name: ext, namespace: shop}\nspec: {type: ExternalName, externalName: web.shop.svc.cluster.local}\n",
    );
    m
}

/// `podnet exec` in a pod (its mount namespace: its resolv.conf).
fn exec(lab: &Lab, ns: &str, pod: &str, cmd: &[&str]) -> std::process::Output {
    let mut args = vec!["exec", "-n", ns, pod, "--"];
    args.extend_from_slice(cmd);
    lab.podnet(&args, "")
}

fn exec_ok(lab: &Lab, ns: &str, pod: &str, cmd: &[&str]) -> String {
    let out = exec(lab, ns, pod, cmd);
    assert!(
        out.status.success(),
        "{pod}: {}: {}",
        cmd.join(" "),
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// dig from client-1, each line's fields separated by one space.
fn dig(lab: &Lab, args: &[&str]) -> String {
    let mut cmd = vec!["dig", "+time=1", "+tries=2"];
    cmd.extend_from_slice(args);
    let out = exec(lab, "shop", "client-1", &cmd);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}

fn short(lab: &Lab, args: &[&str]) -> Vec<String> {
    let mut a = vec!["+short"];
    a.extend_from_slice(args);
    let mut v: Vec<String> = dig(lab, &a).lines().map(str::to_string).collect();
    v.sort();
    v
}

fn status(out: &str) -> &str {
    out.split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("?")
}

fn cluster_ip(lab: &Lab, ns: &str, svc: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&lab.ok(&["get", "svc", svc, "-n", ns, "-o", "json"])).unwrap();
    v["spec"]["clusterIP"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn cluster_dns_on_a_three_node_lab() {
    if !usable() {
        return;
    }
    let lab = Lab::new("dns", "172.31.90.0/24");
    lab.up(3, &["--dns-upstream", "none"]);
    // kube-dns as kubeadm makes it, its pods ready.
    assert_eq!(cluster_ip(&lab, "kube-system", "kube-dns"), "10.96.0.10");
    let svc = lab.ok(&["get", "svc", "-n", "kube-system"]);
    assert!(svc.contains("kube-dns   ClusterIP   10.96.0.10"), "{svc}");
    // Services first: a container's Service variables are those that exist when it
    // starts (as with kubelet).
    let m = manifest(&lab);
    let (pods, services) = m.split_at(m.find("---\napiVersion: v1\nkind: Service").unwrap());
    let (namespaces, pods) = pods.split_at(pods.find("---\napiVersion: v1\nkind: Pod").unwrap());
    lab.apply(&format!("{namespaces}{services}"));
    lab.apply(pods);
    let mut pods = vec![
        "web-0", "web-1", "client-1", "client-2", "client-3", "hostdns", "nonedns",
    ];
    let ips = {
        let mut all = std::collections::BTreeMap::new();
        for (ns, list) in [
            ("kube-system", vec!["kube-dns-0", "kube-dns-1"]),
            ("shop", std::mem::take(&mut pods)),
        ] {
            let out = wait_for(Duration::from_secs(60), "pods Ready", || {
                let mut ips = std::collections::BTreeMap::new();
                for p in &list {
                    let o = lab.podnet(&["get", "pod", p, "-n", ns, "-o", "json"], "");
                    let v: serde_json::Value =
                        serde_json::from_slice(&o.stdout).unwrap_or_default();
                    let ready = v["status"]["conditions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True");
                    match v["status"]["podIP"].as_str() {
                        Some(ip) if ready => {
                            ips.insert(p.to_string(), ip.to_string());
                        }
                        _ => return Err(format!("{ns}/{p} not ready")),
                    }
                }
                Ok(ips)
            })
            .0;
            all.extend(out);
        }
        all
    };
    let web_ip = cluster_ip(&lab, "shop", "web");

    // Pods' resolv.conf as kubelet writes it, per dnsPolicy.
    assert_eq!(
        exec_ok(&lab, "shop", "client-1", &["cat", "/etc/resolv.conf"]),
        "search shop.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
    );
    let node_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap();
    let hostdns = exec_ok(&lab, "shop", "hostdns", &["cat", "/etc/resolv.conf"]);
    for ns in node_resolv.lines().filter(|l| l.starts_with("nameserver")) {
        assert!(
            hostdns.contains(ns.trim()),
            "dnsPolicy Default: the node's: {hostdns}"
        );
    }
    assert_eq!(
        exec_ok(&lab, "shop", "nonedns", &["cat", "/etc/resolv.conf"]),
        "search example.test\nnameserver 192.0.2.53\noptions ndots:2\n"
    );
    assert_eq!(
        std::fs::read_to_string("/etc/resolv.conf").unwrap(),
        node_resolv,
        "the node's file is untouched"
    );
    // kubelet's hosts file, with the FQDN of a pod with a subdomain.
    let hosts = exec_ok(&lab, "shop", "web-0", &["cat", "/etc/hosts"]);
    assert!(
        hosts.contains(&format!(
            "{}\tweb-0.web-h.shop.svc.cluster.local\tweb-0\n",
            ips["web-0"]
        )),
        "{hosts}"
    );
    // The Service variables, as kubelet sets them (and none with enableServiceLinks off,
    // but the kubernetes Service's).
    let env = exec_ok(&lab, "shop", "client-2", &["env"]);
    for want in [
        "KUBERNETES_SERVICE_HOST=10.96.0.1",
        "KUBERNETES_SERVICE_PORT=443",
        "KUBERNETES_PORT=tcp://10.96.0.1:443",
        &format!("WEB_SERVICE_HOST={web_ip}"),
        "WEB_SERVICE_PORT=80",
        "WEB_SERVICE_PORT_HTTP=80",
        &format!("WEB_PORT_80_TCP=tcp://{web_ip}:80"),
        "WEB_PORT_80_TCP_PROTO=tcp",
        &format!("WEB_PORT_80_TCP_ADDR={web_ip}"),
    ] {
        assert!(env.lines().any(|l| l == want), "{want} in\n{env}");
    }
    assert!(
        !env.contains("WEB_H_SERVICE_HOST"),
        "headless: no variables"
    );
    let env = exec_ok(&lab, "shop", "nonedns", &["env"]);
    assert!(
        env.contains("KUBERNETES_SERVICE_HOST=") && !env.contains("WEB_SERVICE_HOST"),
        "{env}"
    );

    // glibc from a pod on every node, then HTTP by name through the Service.
    for i in 1..=3 {
        let pod = format!("client-{i}");
        for name in ["web", "web.shop", "web.shop.svc.cluster.local"] {
            let out = exec_ok(&lab, "shop", &pod, &["getent", "hosts", name]);
            assert!(
                out.starts_with(&format!("{web_ip} "))
                    && out.contains("web.shop.svc.cluster.local"),
                "{pod} {name}: {out}"
            );
        }
        let http = exec_ok(
            &lab,
            "shop",
            &pod,
            &["curl", "-s", "--http0.9", "--max-time", "3", "http://web/"],
        );
        assert!(
            http.starts_with("web-") && http.contains("got: GET / HTTP/1.1"),
            "{pod}: {http}"
        );
    }
    // Other namespaces: by qualified name only.
    let out = exec_ok(&lab, "other", "elsewhere", &["getent", "hosts", "web.shop"]);
    assert!(out.starts_with(&web_ip), "{out}");
    assert!(
        !exec(&lab, "other", "elsewhere", &["getent", "hosts", "web"])
            .status
            .success()
    );

    // Every record type, with a real dig.
    assert_eq!(
        short(&lab, &["web.shop.svc.cluster.local"]),
        vec![web_ip.clone()]
    );
    assert_eq!(short(&lab, &["+search", "web"]), vec![web_ip.clone()]);
    assert_eq!(
        short(&lab, &["SRV", "_http._tcp.web.shop.svc.cluster.local"]),
        ["0 100 80 web.shop.svc.cluster.local."]
    );
    let mut web_ips = vec![ips["web-0"].clone(), ips["web-1"].clone()];
    web_ips.sort();
    assert_eq!(short(&lab, &["web-h.shop.svc.cluster.local"]), web_ips);
    assert_eq!(
        short(&lab, &["web-1.web-h.shop.svc.cluster.local"]),
        [ips["web-1"].clone()]
    );
    assert_eq!(
        short(&lab, &["SRV", "_http._tcp.web-h.shop.svc.cluster.local"]),
        [
            "0 50 8080 web-0.web-h.shop.svc.cluster.local.",
            "0 50 8080 web-1.web-h.shop.svc.cluster.local."
        ]
    );
    assert_eq!(
        short(&lab, &["-x", &web_ip]),
        ["web.shop.svc.cluster.local."]
    );
    // An endpoint address: a PTR per Service it backs (CoreDNS's), the headless one by
    // its hostname.
    let ptr = short(&lab, &["-x", &ips["web-0"]]);
    assert!(
        ptr.contains(&"web-0.web-h.shop.svc.cluster.local.".to_string()),
        "{ptr:?}"
    );
    assert!(
        ptr.contains(&format!(
            "{}.web.shop.svc.cluster.local.",
            ips["web-0"].replace('.', "-")
        )),
        "{ptr:?}"
    );
    assert_eq!(
        short(&lab, &["TXT", "dns-version.cluster.local"]),
        ["\"1.1.0\""]
    );
    let pod_name = format!(
        "{}.shop.pod.cluster.local",
        ips["client-2"].replace('.', "-")
    );
    assert_eq!(short(&lab, &[&pod_name]), [ips["client-2"].clone()]);
    let ext = short(&lab, &["ext.shop.svc.cluster.local"]);
    assert!(
        ext.contains(&"web.shop.svc.cluster.local.".to_string()) && ext.contains(&web_ip),
        "{ext:?}"
    );
    assert_eq!(
        short(&lab, &["kube-dns.kube-system.svc.cluster.local"]),
        ["10.96.0.10"]
    );
    // NXDOMAIN vs NODATA, with the SOA, TTL 5.
    let nx = dig(&lab, &["nosuch.shop.svc.cluster.local"]);
    assert_eq!(status(&nx), "NXDOMAIN", "{nx}");
    assert!(
        nx.contains("cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local."),
        "{nx}"
    );
    let nodata = dig(&lab, &["AAAA", "web.shop.svc.cluster.local"]);
    assert!(
        status(&nodata) == "NOERROR" && nodata.contains("ANSWER: 0, AUTHORITY: 1"),
        "{nodata}"
    );
    assert_eq!(
        status(&dig(&lab, &["empty-h.shop.svc.cluster.local"])),
        "NXDOMAIN",
        "headless without ready endpoints"
    );
    assert_eq!(status(&dig(&lab, &["shop.svc.cluster.local"])), "NOERROR");
    assert_eq!(status(&dig(&lab, &["nons.svc.cluster.local"])), "NXDOMAIN");
    let a = dig(&lab, &["web.shop.svc.cluster.local"]);
    assert!(
        a.contains(&format!("web.shop.svc.cluster.local. 5 IN A {web_ip}"))
            && a.contains("flags: qr aa rd;"),
        "{a}"
    );
    // Over TCP too; outside the zone without upstreams: refused, nothing sent out.
    assert_eq!(
        short(&lab, &["+tcp", "web.shop.svc.cluster.local"]),
        vec![web_ip.clone()]
    );
    assert_eq!(status(&dig(&lab, &["example.com"])), "REFUSED");

    // A Service created, changed and deleted: answers follow within a second.
    let started = Instant::now();
    lab.apply("apiVersion: v1\nkind: Service\nmetadata: {name: late, namespace: shop}\nspec: {selector: {app: web}, ports: [{name: http, port: 80, targetPort: 8080}]}\n");
    let (_, took) = wait_for(
        CHANGE_WITHIN + Duration::from_secs(2),
        "late answered",
        || {
            let v = short(&lab, &["late.shop.svc.cluster.local"]);
            if v.len() == 1 {
                Ok(())
            } else {
                Err(format!("{v:?}"))
            }
        },
    );
    eprintln!(
        "created: answered {took:?} after apply returned ({:?} in all)",
        started.elapsed()
    );
    assert!(
        took <= CHANGE_WITHIN,
        "created Service answered after {took:?}"
    );
    lab.apply("apiVersion: v1\nkind: Service\nmetadata: {name: late, namespace: shop}\nspec: {selector: {app: web}, ports: [{name: http, port: 80, targetPort: 8080}, {name: admin, port: 81, targetPort: 8080}]}\n");
    let (_, took) = wait_for(
        CHANGE_WITHIN + Duration::from_secs(2),
        "new port's SRV",
        || {
            let v = short(&lab, &["SRV", "_admin._tcp.late.shop.svc.cluster.local"]);
            if v.len() == 1 {
                Ok(())
            } else {
                Err(format!("{v:?}"))
            }
        },
    );
    assert!(
        took <= CHANGE_WITHIN,
        "changed Service answered after {took:?}"
    );
    lab.ok(&["delete", "svc", "late", "-n", "shop"]);
    let (_, took) = wait_for(CHANGE_WITHIN + Duration::from_secs(2), "late gone", || {
        let out = dig(&lab, &["late.shop.svc.cluster.local"]);
        if status(&out) == "NXDOMAIN" {
            Ok(())
        } else {
            Err(out)
        }
    });
    assert!(
        took <= CHANGE_WITHIN,
        "deleted Service still answered after {took:?}"
    );

    // A DNS server started anew answers within a second of its start (watches listed).
    let script = format!(
        "{PODNET} dns --kubeconfig /var/lib/podnet/{lab}/agent-kubeconfig --listen 127.0.0.1:5300 --health none --upstream none >/dev/null 2>&1 & \
         pid=$!; start=$(date +%s%N); \
         until dig +short +time=1 +tries=1 -p 5300 @127.0.0.1 web.shop.svc.cluster.local | grep -q .; do sleep 0.02; done; \
         echo $(( ($(date +%s%N) - start) / 1000000 )); kill $pid",
        lab = lab.name
    );
    let ms: u64 = exec_ok(&lab, "shop", "client-3", &["sh", "-c", &script])
        .trim()
        .parse()
        .unwrap();
    eprintln!("a fresh podnet dns answered {ms} ms after its start");
    assert!(ms <= 1000, "answered {ms} ms after start");

    // A DNS pod deleted: the Service's other replica answers.
    lab.ok(&["delete", "pod", "kube-dns-0", "-n", "kube-system"]);
    for i in 1..=3 {
        let out = exec_ok(
            &lab,
            "shop",
            &format!("client-{i}"),
            &["getent", "hosts", "web"],
        );
        assert!(
            out.starts_with(&web_ip),
            "client-{i} after a DNS pod went: {out}"
        );
    }
}
