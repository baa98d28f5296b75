//! The topology as SVG: what the page shows (it loads this drawing and draws the flows over
//! it) and what `podnet lab graph -o svg` writes. Hand-written SVG with its own style sheet,
//! so a saved file looks the same in a browser, an image viewer or an issue.
//!
//! Every pod, Service and node is a `<g>` with `data-kind`, `data-name` (`namespace/name`
//! for pods and Services), `data-ip` and the centre it is drawn around (`data-cx`,
//! `data-cy`): the page finds them by these to place flows and to start traces.

use std::fmt::Write;

use super::layout::{self, Layout, LinkShape, Rect};
use super::topology::{NodeBox, PodBox, ServiceBox, Topology};

const STYLE: &str = "
.podnet-topology { font-family: 'DejaVu Sans', Verdana, sans-serif; }
.podnet-topology text { font-size: 12px; fill: #1f2933; }
.podnet-topology text.title { font-size: 13px; font-weight: bold; }
.podnet-topology text.sub { font-size: 11px; fill: #52606d; }
.podnet-topology .node-box { fill: #eef2f7; stroke: #9aa5b1; stroke-width: 1.5; }
.podnet-topology .node.not-ready .node-box { stroke: #d64545; stroke-dasharray: 6 3; }
.podnet-topology .unscheduled rect { fill: #fff8e6; stroke: #d9a404; stroke-dasharray: 5 4; }
.podnet-topology .pod rect { fill: #ffffff; stroke: #7b8794; }
.podnet-topology .pod .dot { fill: #2f9e44; }
.podnet-topology .pod.not-ready .dot { fill: #e8a200; }
.podnet-topology .pod.terminating rect { stroke-dasharray: 4 3; opacity: 0.7; }
.podnet-topology .pod.terminating .dot { fill: #9aa5b1; }
.podnet-topology .service rect { fill: #f3efff; stroke: #7048e8; stroke-width: 1.5; }
.podnet-topology .endpoint { fill: none; stroke: #7048e8; stroke-width: 1.3; opacity: 0.7; }
.podnet-topology .endpoint.not-ready { stroke-dasharray: 5 4; opacity: 0.45; }
.podnet-topology .link { fill: none; stroke: #1c7ed6; stroke-width: 2; }
.podnet-topology .link.unknown { stroke: #9aa5b1; stroke-dasharray: 6 4; }
.podnet-topology .link-label { font-size: 11px; fill: #1c7ed6; }
#arrow path { fill: #7048e8; }
";

/// Escapes text for an SVG attribute or element.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `s` cut to `max` characters with an ellipsis (the full text is in the element's title).
fn fit(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let cut: String = s.chars().take(max.saturating_sub(1)).collect();
    format!("{cut}…")
}

fn text(out: &mut String, x: f64, y: f64, class: &str, s: &str, max: usize) {
    let _ = writeln!(
        out,
        r#"<text x="{x:.1}" y="{y:.1}" class="{class}">{}</text>"#,
        escape(&fit(s, max))
    );
}

fn rect(out: &mut String, r: &Rect, class: &str, radius: f64) {
    let _ = writeln!(
        out,
        r#"<rect class="{class}" x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" rx="{radius}"/>"#,
        r.x, r.y, r.w, r.h
    );
}

/// The opening of an element the page can find: kind, name, address and centre.
fn open_group(
    out: &mut String,
    class: &str,
    kind: &str,
    name: &str,
    ip: Option<&str>,
    at: (f64, f64),
) {
    let _ = write!(
        out,
        r#"<g class="{class}" data-kind="{kind}" data-name="{}" data-cx="{:.1}" data-cy="{:.1}""#,
        escape(name),
        at.0,
        at.1
    );
    if let Some(ip) = ip {
        let _ = write!(out, r#" data-ip="{}""#, escape(ip));
    }
    out.push('>');
}

fn node(out: &mut String, n: &NodeBox, r: &Rect) {
    let class = if n.ready {
        "node ready"
    } else {
        "node not-ready"
    };
    open_group(
        out,
        class,
        "node",
        &n.name,
        n.ip.as_deref(),
        (r.cx(), r.y + 30.0),
    );
    let ready = if n.ready { "Ready" } else { "NotReady" };
    let ip = n.ip.as_deref().unwrap_or("no address");
    let subnet = n.pod_cidr.as_deref().unwrap_or("no pod subnet yet");
    let backend = n.backend.as_deref().unwrap_or("no backend yet");
    let _ = writeln!(
        out,
        "<title>node {}\n{ip} ({ready})\npods {subnet}\noverlay {backend}</title>",
        escape(&n.name)
    );
    rect(out, r, "node-box", 8.0);
    text(
        out,
        r.x + 12.0,
        r.y + 20.0,
        "title",
        &format!("node {}", n.name),
        30,
    );
    text(
        out,
        r.x + 12.0,
        r.y + 37.0,
        "sub",
        &format!("{ip} · {ready}"),
        36,
    );
    text(
        out,
        r.x + 12.0,
        r.y + 53.0,
        "sub",
        &format!("pods {subnet} · {backend}"),
        36,
    );
    out.push_str("</g>\n");
}

fn pod(out: &mut String, p: &PodBox, r: &Rect) {
    let state = match (p.status.as_str(), p.ready) {
        ("Terminating", _) => "terminating",
        (_, true) => "ready",
        (_, false) => "not-ready",
    };
    open_group(
        out,
        &format!("pod {state}"),
        "pod",
        &p.key(),
        p.ip.as_deref(),
        (r.cx(), r.cy()),
    );
    let ip = p.ip.as_deref().unwrap_or("no IP yet");
    let ready = if p.ready { "ready" } else { "not ready" };
    let _ = writeln!(
        out,
        "<title>pod {}\n{ip} · {} · {ready}\nports {}</title>",
        escape(&p.key()),
        escape(&p.status),
        escape(&p.ports.join(", "))
    );
    rect(out, r, "pod-box", 5.0);
    let _ = writeln!(
        out,
        r#"<circle class="dot" cx="{:.1}" cy="{:.1}" r="5"/>"#,
        r.x + 12.0,
        r.y + 14.0
    );
    text(out, r.x + 24.0, r.y + 18.0, "title", &p.name, 28);
    let sub = format!("{} · {ip} · {}", p.namespace, p.status);
    text(out, r.x + 24.0, r.y + 33.0, "sub", &sub, 35);
    out.push_str("</g>\n");
}

fn service(out: &mut String, s: &ServiceBox, r: &Rect) {
    let ports: Vec<String> = s.ports.iter().map(|p| p.label()).collect();
    open_group(
        out,
        "service",
        "service",
        &s.key(),
        s.cluster_ip.as_deref(),
        (r.cx(), r.cy()),
    );
    let ready = s.endpoints.iter().filter(|e| e.ready).count();
    let ip = s.cluster_ip.as_deref().unwrap_or("None");
    let _ = writeln!(
        out,
        "<title>service {} ({})\nClusterIP {ip}\n{}\n{} endpoints, {ready} ready</title>",
        escape(&s.key()),
        escape(&s.type_),
        escape(&ports.join(", ")),
        s.endpoints.len()
    );
    rect(out, r, "service-box", 8.0);
    text(
        out,
        r.x + 10.0,
        r.y + 18.0,
        "title",
        &format!("svc {}", s.name),
        32,
    );
    text(
        out,
        r.x + 10.0,
        r.y + 34.0,
        "sub",
        &format!("{} · {} {ip}", s.namespace, s.type_),
        38,
    );
    let eps = format!("{} · {ready}/{} ready", ports.join(" "), s.endpoints.len());
    text(out, r.x + 10.0, r.y + 50.0, "sub", &eps, 38);
    out.push_str("</g>\n");
}

/// An arrow from Service `s` to each endpoint that is a pod of the picture.
fn endpoint_arrows(out: &mut String, t: &Topology, l: &Layout, s: &ServiceBox, r: &Rect) {
    for e in &s.endpoints {
        let Some(i) = e
            .pod
            .as_ref()
            .and_then(|k| t.pods.iter().position(|p| &p.key() == k))
        else {
            continue;
        };
        let p = &l.pods[i];
        let (sx, sy) = (r.cx(), r.bottom());
        let (px, py) = (p.x - 2.0, p.cy());
        let class = if e.ready {
            "endpoint ready"
        } else {
            "endpoint not-ready"
        };
        let _ = writeln!(
            out,
            r#"<path class="{class}" data-service="{}" data-pod="{}" d="M{sx:.1},{sy:.1} C{sx:.1},{:.1} {:.1},{py:.1} {px:.1},{py:.1}" marker-end="url(#arrow)"/>"#,
            escape(&s.key()),
            escape(&t.pods[i].key()),
            sy + 60.0,
            px - 60.0,
        );
    }
}

fn links(out: &mut String, t: &Topology, l: &Layout) {
    let y = l.links_top;
    match &l.links {
        LinkShape::None => {}
        LinkShape::Arcs(arcs) => {
            for &(i, a, b, depth) in arcs {
                let link = &t.links[i];
                let class = if link.backend.is_some() {
                    "link"
                } else {
                    "link unknown"
                };
                let mid = (a + b) / 2.0;
                let _ = writeln!(
                    out,
                    r#"<path class="{class}" data-from="{}" data-to="{}" d="M{a:.1},{y:.1} Q{mid:.1},{:.1} {b:.1},{y:.1}"><title>{} ↔ {}: {}</title></path>"#,
                    escape(&link.from),
                    escape(&link.to),
                    y + 2.0 * depth,
                    escape(&link.from),
                    escape(&link.to),
                    escape(&link.label)
                );
                text(
                    out,
                    mid - 40.0,
                    y + depth + 14.0,
                    "link-label",
                    &link.label,
                    30,
                );
            }
        }
        LinkShape::Bar { y: bar, xs } => bar_links(out, t, y, *bar, xs),
    }
}

/// Many nodes: one bar, each column joined to it.
fn bar_links(out: &mut String, t: &Topology, top: f64, bar: f64, xs: &[f64]) {
    let (Some(first), Some(last)) = (xs.first(), xs.last()) else {
        return;
    };
    let known = t.links.iter().all(|l| l.backend.is_some());
    let class = if known { "link" } else { "link unknown" };
    let mut d = format!("M{first:.1},{bar:.1} L{last:.1},{bar:.1}");
    for x in xs {
        let _ = write!(d, " M{x:.1},{top:.1} L{x:.1},{bar:.1}");
    }
    let _ = writeln!(out, r#"<path class="{class}" d="{d}"/>"#);
    let label = match t.links.first() {
        Some(l) if known => format!("{} mesh: every node to every other", l.label),
        _ => "overlay: not every node has published its backend yet".to_string(),
    };
    text(out, first + 4.0, bar + 16.0, "link-label", &label, 80);
}

fn unscheduled(out: &mut String, r: &Rect) {
    out.push_str("<g class=\"column unscheduled\">\n");
    rect(out, r, "unscheduled-box", 8.0);
    text(out, r.x + 12.0, r.y + 20.0, "title", "not scheduled", 30);
    text(
        out,
        r.x + 12.0,
        r.y + 37.0,
        "sub",
        "pods without a node",
        36,
    );
    out.push_str("</g>\n");
}

/// The whole picture of `t`.
pub fn render(t: &Topology) -> String {
    let l = layout::layout(t);
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="podnet-topology" viewBox="0 0 {w:.0} {h:.0}" width="{w:.0}" height="{h:.0}">"#,
        w = l.width,
        h = l.height
    );
    out.push_str("<title>podnet: the cluster's nodes, pods and Services</title>\n");
    let _ = writeln!(out, "<style>{STYLE}</style>");
    out.push_str(r#"<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z"/></marker></defs>"#);
    out.push_str("\n<g class=\"nodes\">\n");
    t.nodes
        .iter()
        .zip(&l.nodes)
        .for_each(|(n, r)| node(&mut out, n, r));
    if let Some(r) = &l.unscheduled {
        unscheduled(&mut out, r);
    }
    out.push_str("</g>\n<g class=\"links\">\n");
    links(&mut out, t, &l);
    out.push_str("</g>\n<g class=\"endpoints\">\n");
    for (s, r) in t.services.iter().zip(&l.services) {
        endpoint_arrows(&mut out, t, &l, s, r);
    }
    out.push_str("</g>\n<g class=\"pods\">\n");
    t.pods
        .iter()
        .zip(&l.pods)
        .for_each(|(p, r)| pod(&mut out, p, r));
    out.push_str("</g>\n<g class=\"services\">\n");
    t.services
        .iter()
        .zip(&l.services)
        .for_each(|(s, r)| service(&mut out, s, r));
    out.push_str("</g>\n<g id=\"flows\"></g>\n</svg>\n");
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::topology::tests::{pod, sample};
    use super::super::topology::{Objects, Topology};
    use super::*;

    /// The elements with `data-kind="kind"`, by their data-name.
    fn named(svg: &str, kind: &str) -> Vec<String> {
        let needle = format!("data-kind=\"{kind}\" data-name=\"");
        svg.match_indices(&needle)
            .map(|(i, _)| {
                let rest = &svg[i + needle.len()..];
                rest[..rest.find('"').unwrap()].to_string()
            })
            .collect()
    }

    /// Every tag opened is closed, in order (a well-formed document, as far as the tags).
    fn balanced(svg: &str) -> bool {
        let mut stack: Vec<String> = Vec::new();
        let mut rest = svg;
        while let Some(i) = rest.find('<') {
            rest = &rest[i + 1..];
            let end = rest.find('>').unwrap();
            let tag = &rest[..end];
            let name: String = tag
                .trim_start_matches('/')
                .chars()
                .take_while(|c| c.is_alphanumeric())
                .collect();
            if tag.starts_with('/') {
                if stack.pop().as_deref() != Some(name.as_str()) {
                    return false;
                }
            } else if !tag.ends_with('/') {
                stack.push(name);
            }
            rest = &rest[end + 1..];
        }
        stack.is_empty()
    }

    #[test]
    fn every_node_pod_and_service_is_drawn_with_its_name_and_address() {
        let svg = render(&Topology::from_objects(&sample()));
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(balanced(&svg), "{svg}");
        assert_eq!(named(&svg, "node"), ["n1", "n2"]);
        assert_eq!(
            named(&svg, "pod"),
            ["shop/cart", "default/web-a", "default/web-b"]
        );
        assert_eq!(named(&svg, "service"), ["default/web"]);
        assert!(svg.contains(r#"data-ip="10.244.1.2""#));
        assert!(svg.contains(r#"data-ip="10.96.0.20""#));
        assert!(svg.contains("pods 10.244.1.0/24 · vxlan"));
        assert!(svg.contains("80/TCP→8080 node:30080"));
        assert!(svg.contains(">vxlan VNI 1</text>"));
        assert!(svg.contains("not scheduled"));
        assert!(svg.contains("<g id=\"flows\"></g>"));
    }

    #[test]
    fn endpoint_arrows_show_readiness_and_pods_their_state() {
        let svg = render(&Topology::from_objects(&sample()));
        assert!(svg.contains(
            r#"class="endpoint ready" data-service="default/web" data-pod="default/web-a""#
        ));
        assert!(svg.contains(
            r#"class="endpoint not-ready" data-service="default/web" data-pod="default/web-b""#
        ));
        assert!(svg.contains(r#"<g class="pod ready" data-kind="pod" data-name="default/web-a""#));
        assert!(
            svg.contains(r#"<g class="pod not-ready" data-kind="pod" data-name="default/web-b""#)
        );
    }

    #[test]
    fn names_are_escaped_and_long_ones_cut_with_the_full_name_in_the_title() {
        let mut objects = Objects::default();
        let long = "a-very-long-pod-name-that-does-not-fit-in-its-box";
        objects.pods.push(pod("default", long, None, None, false));
        objects.pods.push(pod("x<y>&\"'", "p", None, None, false));
        let svg = render(&Topology::from_objects(&objects));
        assert!(balanced(&svg), "{svg}");
        assert!(svg.contains("x&lt;y&gt;&amp;&quot;&#39;/p"));
        assert!(!svg.contains("x<y>"));
        assert!(svg.contains(&format!("<title>pod default/{long}")));
        assert!(svg.contains("a-very-long-pod-name-that-d…</text>"));
    }
}
