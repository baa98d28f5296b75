//! The topology in Graphviz's DOT language (`podnet lab graph -o dot`), for those who lay
//! it out with `dot -Tpng` or paste it into a tool: a cluster per node holding its pods,
//! the Services with an edge to each endpoint (dashed when not ready), and the overlay
//! links between the nodes.

use std::fmt::Write;

use super::topology::{NodeBox, PodBox, ServiceBox, Topology};

/// A DOT quoted string.
pub fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn pod_id(key: &str) -> String {
    quote(&format!("pod/{key}"))
}

fn node_id(name: &str) -> String {
    quote(&format!("node/{name}"))
}

fn pod_line(out: &mut String, p: &PodBox) {
    let color = match (p.status.as_str(), p.ready) {
        ("Terminating", _) => "#dddddd",
        (_, true) => "#d3f9d8",
        (_, false) => "#fff3bf",
    };
    let label = format!(
        "{}\n{} · {}",
        p.key(),
        p.ip.as_deref().unwrap_or("no IP yet"),
        p.status
    );
    let _ = writeln!(
        out,
        "    {} [label={}, fillcolor=\"{color}\"];",
        pod_id(&p.key()),
        quote(&label)
    );
}

fn node_cluster(out: &mut String, t: &Topology, i: usize, n: &NodeBox) {
    let label = format!(
        "node {}\n{}\npods {} · {}",
        n.name,
        n.ip.as_deref().unwrap_or("no address"),
        n.pod_cidr.as_deref().unwrap_or("no pod subnet yet"),
        n.backend.as_deref().unwrap_or("no backend yet")
    );
    let _ = writeln!(out, "  subgraph cluster_{i} {{");
    let _ = writeln!(
        out,
        "    label={}; style=\"rounded\"; color=\"#9aa5b1\";",
        quote(&n.name)
    );
    let _ = writeln!(
        out,
        "    {} [label={}, shape=box3d, fillcolor=\"#eef2f7\"];",
        node_id(&n.name),
        quote(&label)
    );
    t.pods_on(Some(&n.name)).for_each(|p| pod_line(out, p));
    out.push_str("  }\n");
}

fn service_lines(out: &mut String, t: &Topology, s: &ServiceBox) {
    let ports: Vec<String> = s.ports.iter().map(|p| p.label()).collect();
    let label = format!(
        "svc {}\n{} {}\n{}",
        s.key(),
        s.type_,
        s.cluster_ip.as_deref().unwrap_or("None"),
        ports.join(" ")
    );
    let id = quote(&format!("svc/{}", s.key()));
    let _ = writeln!(
        out,
        "  {id} [label={}, shape=component, fillcolor=\"#f3efff\"];",
        quote(&label)
    );
    for e in &s.endpoints {
        let Some(pod) = e
            .pod
            .as_ref()
            .filter(|k| t.pods.iter().any(|p| &p.key() == *k))
        else {
            continue;
        };
        let style = if e.ready { "solid" } else { "dashed" };
        let _ = writeln!(
            out,
            "  {id} -> {} [style={style}, color=\"#7048e8\"];",
            pod_id(pod)
        );
    }
}

/// The whole graph of `t`.
pub fn render(t: &Topology) -> String {
    let mut out = String::from("digraph podnet {\n");
    out.push_str("  graph [rankdir=TB, fontname=\"sans-serif\", compound=true];\n");
    out.push_str(
        "  node [shape=box, style=\"rounded,filled\", fontname=\"sans-serif\", fontsize=11];\n",
    );
    out.push_str("  edge [fontname=\"sans-serif\", fontsize=10];\n");
    for (i, n) in t.nodes.iter().enumerate() {
        node_cluster(&mut out, t, i, n);
    }
    let orphans: Vec<&PodBox> = t
        .pods
        .iter()
        .filter(|p| {
            p.node
                .as_ref()
                .is_none_or(|n| !t.nodes.iter().any(|x| &x.name == n))
        })
        .collect();
    if !orphans.is_empty() {
        out.push_str(
            "  subgraph cluster_unscheduled {\n    label=\"not scheduled\"; style=\"dashed\";\n",
        );
        orphans.into_iter().for_each(|p| pod_line(&mut out, p));
        out.push_str("  }\n");
    }
    for s in &t.services {
        service_lines(&mut out, t, s);
    }
    for l in &t.links {
        let style = if l.backend.is_some() {
            "bold"
        } else {
            "dashed"
        };
        let _ = writeln!(
            out,
            "  {} -> {} [dir=both, style={style}, color=\"#1c7ed6\", label={}, constraint=false];",
            node_id(&l.from),
            node_id(&l.to),
            quote(&l.label)
        );
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::topology::tests::{pod, sample};
    use super::super::topology::{Objects, Topology};
    use super::*;

    #[test]
    fn nodes_are_clusters_of_their_pods_with_services_and_links_as_edges() {
        let dot = render(&Topology::from_objects(&sample()));
        assert!(dot.starts_with("digraph podnet {\n") && dot.ends_with("}\n"));
        assert_eq!(dot.matches('{').count(), dot.matches('}').count());
        let cluster_n1 = &dot[dot.find("subgraph cluster_0").unwrap()..];
        let cluster_n1 = &cluster_n1[..cluster_n1.find("  }\n").unwrap()];
        assert!(cluster_n1.contains(
            "\"node/n1\" [label=\"node n1\\n172.31.88.11\\npods 10.244.1.0/24 · vxlan\""
        ));
        assert!(cluster_n1.contains("\"pod/default/web-a\" [label=\"default/web-a\\n10.244.1.2 · Running\", fillcolor=\"#d3f9d8\"]"));
        assert!(!cluster_n1.contains("web-b"));
        assert!(dot.contains("subgraph cluster_unscheduled"));
        assert!(dot.contains("\"pod/shop/cart\""));
        assert!(dot.contains("\"svc/default/web\" -> \"pod/default/web-a\" [style=solid"));
        assert!(dot.contains("\"svc/default/web\" -> \"pod/default/web-b\" [style=dashed"));
        assert!(dot.contains("\"node/n1\" -> \"node/n2\" [dir=both, style=bold, color=\"#1c7ed6\", label=\"vxlan VNI 1\""));
    }

    #[test]
    fn quotes_and_backslashes_in_names_stay_inside_their_string() {
        let mut objects = Objects::default();
        objects.pods.push(pod("a\"b", "c\\d", None, None, false));
        let dot = render(&Topology::from_objects(&objects));
        assert!(dot.contains(r#""pod/a\"b/c\\d""#), "{dot}");
    }
}
