//! Where each part of the picture goes. One layout for the page and for `podnet lab graph
//! -o svg`, computed here rather than in the browser, so that the static picture and the
//! live one are the same drawing.
//!
//! Services in rows along the top; below them one column per node (its header, then its
//! pods stacked), and a last column for pods not scheduled yet; the overlay links as arcs
//! under the node columns (or one bar across them when there are too many nodes for arcs
//! to stay readable).

use super::topology::Topology;

pub const MARGIN: f64 = 20.0;
pub const SERVICE_W: f64 = 250.0;
pub const SERVICE_H: f64 = 62.0;
pub const SERVICE_GAP: f64 = 16.0;
pub const COLUMN_W: f64 = 260.0;
pub const COLUMN_GAP: f64 = 24.0;
pub const NODE_HEADER_H: f64 = 66.0;
pub const POD_H: f64 = 40.0;
pub const POD_GAP: f64 = 8.0;
pub const POD_INSET: f64 = 12.0;
/// The space between the Services and the nodes, where the endpoint arrows run.
pub const ARROW_SPACE: f64 = 70.0;
/// Above this many nodes the overlay is one bar, not an arc per pair.
pub const MAX_ARC_NODES: usize = 6;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rect {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

impl Rect {
    pub fn cx(&self) -> f64 {
        self.x + self.w / 2.0
    }
    pub fn cy(&self) -> f64 {
        self.y + self.h / 2.0
    }
    pub fn bottom(&self) -> f64 {
        self.y + self.h
    }
}

/// The overlay's drawing under the node columns.
#[derive(Debug, Clone, PartialEq)]
pub enum LinkShape {
    /// An arc per link: its index in `Topology::links`, from and to x, and how deep it dips.
    Arcs(Vec<(usize, f64, f64, f64)>),
    /// One bar at this height across the columns of these x positions.
    Bar {
        y: f64,
        xs: Vec<f64>,
    },
    None,
}

/// Positions, index for index with the topology's lists.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub width: f64,
    pub height: f64,
    pub services: Vec<Rect>,
    pub nodes: Vec<Rect>,
    pub pods: Vec<Rect>,
    /// The column of pods without a node, when there are any.
    pub unscheduled: Option<Rect>,
    /// Where the overlay runs: the bottom of the node columns.
    pub links_top: f64,
    pub links: LinkShape,
}

fn service_rows(t: &Topology, width: f64) -> (Vec<Rect>, f64) {
    let per_row =
        (((width - 2.0 * MARGIN + SERVICE_GAP) / (SERVICE_W + SERVICE_GAP)) as usize).max(1);
    let rects: Vec<Rect> = (0..t.services.len())
        .map(|i| Rect {
            x: MARGIN + (i % per_row) as f64 * (SERVICE_W + SERVICE_GAP),
            y: MARGIN + (i / per_row) as f64 * (SERVICE_H + SERVICE_GAP),
            w: SERVICE_W,
            h: SERVICE_H,
        })
        .collect();
    let rows = t.services.len().div_ceil(per_row);
    let height = rows as f64 * (SERVICE_H + SERVICE_GAP);
    (rects, height)
}

/// The height of a column holding `pods` pods.
fn column_h(pods: usize) -> f64 {
    NODE_HEADER_H + pods as f64 * (POD_H + POD_GAP) + POD_INSET
}

/// The pods' rectangles, stacked in their columns (`columns[i]` is the column of node
/// `i`, the last one the unscheduled pods' when there is one).
fn pod_rects(t: &Topology, columns: &[Rect]) -> Vec<Rect> {
    let mut next = vec![0usize; columns.len()];
    t.pods
        .iter()
        .map(|p| {
            let col = match &p.node {
                Some(n) => t.nodes.iter().position(|x| &x.name == n),
                None => None,
            }
            // A pod on a node that is not (or no longer) a Node goes with the unscheduled.
            .unwrap_or(columns.len() - 1);
            let c = columns[col];
            let r = Rect {
                x: c.x + POD_INSET,
                y: c.y + NODE_HEADER_H + next[col] as f64 * (POD_H + POD_GAP),
                w: c.w - 2.0 * POD_INSET,
                h: POD_H,
            };
            next[col] += 1;
            r
        })
        .collect()
}

/// How many pods go in each column (nodes in order, then the unscheduled).
fn column_counts(t: &Topology) -> Vec<usize> {
    let mut counts = vec![0usize; t.nodes.len() + 1];
    for p in &t.pods {
        let col = p
            .node
            .as_ref()
            .and_then(|n| t.nodes.iter().position(|x| &x.name == n))
            .unwrap_or(t.nodes.len());
        counts[col] += 1;
    }
    counts
}

fn link_shape(t: &Topology, nodes: &[Rect], top: f64) -> (LinkShape, f64) {
    if t.links.is_empty() {
        return (LinkShape::None, 0.0);
    }
    let x_of = |name: &str| {
        t.nodes
            .iter()
            .position(|n| n.name == name)
            .map(|i| nodes[i].cx())
    };
    if t.nodes.len() > MAX_ARC_NODES {
        let xs = nodes.iter().map(Rect::cx).collect();
        return (LinkShape::Bar { y: top + 30.0, xs }, 60.0);
    }
    let mut arcs = Vec::new();
    let mut deepest: f64 = 0.0;
    for (i, l) in t.links.iter().enumerate() {
        let (Some(a), Some(b)) = (x_of(&l.from), x_of(&l.to)) else {
            continue;
        };
        let span = ((b - a).abs() / (COLUMN_W + COLUMN_GAP)).round();
        let depth = 24.0 + 22.0 * span;
        deepest = deepest.max(depth);
        arcs.push((i, a, b, depth));
    }
    (LinkShape::Arcs(arcs), deepest + 24.0)
}

/// The layout of `t`.
pub fn layout(t: &Topology) -> Layout {
    let counts = column_counts(t);
    let has_unscheduled = counts[t.nodes.len()] > 0;
    let n_columns = t.nodes.len() + usize::from(has_unscheduled);
    let columns_w = n_columns as f64 * (COLUMN_W + COLUMN_GAP) - COLUMN_GAP;
    let min_w = SERVICE_W * 3.0 + SERVICE_GAP * 2.0;
    let width = 2.0 * MARGIN + columns_w.max(min_w);
    let (services, services_h) = service_rows(t, width);
    let top = MARGIN
        + services_h
        + if t.services.is_empty() {
            0.0
        } else {
            ARROW_SPACE
        };
    let column_height = counts
        .iter()
        .copied()
        .map(column_h)
        .fold(column_h(0), f64::max);
    let mut columns: Vec<Rect> = (0..t.nodes.len() + 1)
        .map(|i| Rect {
            x: MARGIN + i as f64 * (COLUMN_W + COLUMN_GAP),
            y: top,
            w: COLUMN_W,
            h: column_height,
        })
        .collect();
    let pods = pod_rects(t, &columns);
    let unscheduled = columns.pop().filter(|_| has_unscheduled);
    let links_top = top + column_height;
    let (links, links_h) = link_shape(t, &columns, links_top);
    Layout {
        width,
        height: links_top + links_h + MARGIN,
        services,
        nodes: columns,
        pods,
        unscheduled,
        links_top,
        links,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::topology::tests::sample;
    use super::*;

    fn overlaps(a: &Rect, b: &Rect) -> bool {
        a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h
    }

    fn inside(inner: &Rect, outer: &Rect) -> bool {
        inner.x >= outer.x
            && inner.y >= outer.y
            && inner.x + inner.w <= outer.x + outer.w
            && inner.bottom() <= outer.bottom()
    }

    #[test]
    fn pods_sit_inside_their_nodes_column_and_nothing_overlaps() {
        let t = Topology::from_objects(&sample());
        let l = layout(&t);
        assert_eq!(l.nodes.len(), 2);
        assert_eq!(l.pods.len(), 3);
        let unscheduled = l.unscheduled.unwrap();
        for (p, r) in t.pods.iter().zip(&l.pods) {
            let column = match p.node.as_deref() {
                Some(n) => &l.nodes[t.nodes.iter().position(|x| x.name == n).unwrap()],
                None => &unscheduled,
            };
            assert!(inside(r, column), "{} at {r:?} not in {column:?}", p.name);
        }
        let mut all: Vec<Rect> = l.services.clone();
        all.extend(l.nodes.iter().copied());
        all.push(unscheduled);
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert!(!overlaps(a, b), "{a:?} overlaps {b:?}");
            }
            assert!(a.x + a.w <= l.width && a.bottom() <= l.height);
        }
        // The Services are above the nodes, with room for the arrows.
        assert!(l.services[0].bottom() + ARROW_SPACE <= l.nodes[0].y);
        assert!(matches!(&l.links, LinkShape::Arcs(a) if a.len() == 1));
        assert!(l.links_top < l.height);
    }

    #[test]
    fn many_services_wrap_into_rows_and_many_nodes_get_a_bar() {
        let mut objects = sample();
        for i in 0..10 {
            let name = format!("n{}", i + 10);
            let cidr = format!("10.244.{}.0/24", i + 10);
            objects.nodes.push(super::super::topology::tests::node(
                &name,
                "172.31.88.99",
                Some(&cidr),
                Some("vxlan"),
            ));
        }
        // More Services than fit in the width of twelve columns.
        for i in 0..20 {
            let name = format!("s{i}");
            let s = super::super::topology::tests::service("default", &name, "10.96.0.30", None);
            objects.services.push(s);
        }
        let t = Topology::from_objects(&objects);
        let l = layout(&t);
        assert!(l.services.iter().any(|s| s.y > l.services[0].y));
        assert!(l.services.iter().all(|s| s.x + s.w <= l.width));
        assert!(matches!(&l.links, LinkShape::Bar { xs, .. } if xs.len() == 12));
    }

    #[test]
    fn an_empty_cluster_is_a_small_empty_picture() {
        let l = layout(&Topology::default());
        assert!(l.nodes.is_empty() && l.pods.is_empty() && l.unscheduled.is_none());
        assert_eq!(l.links, LinkShape::None);
        assert!(l.width > 0.0 && l.height > 0.0);
    }
}
