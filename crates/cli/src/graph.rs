//! `berth topology`: the topology document as a graph (nodes, edges) and its renderings — a
//! text tree, Graphviz DOT, a Mermaid flowchart, and SVG laid out and drawn by the `layout-rs`
//! library from the same graph. Everything here is pure.

use std::fmt::Write as _;

use berth_api::types::{TopoLink, Topology};

/// What a node stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A network.
    Network,
    /// A bridge, a macvlan/ipvlan parent, a host shim.
    Device,
    /// The host side of a veth.
    Veth,
    /// A container.
    Container,
    /// A link of berth's nothing wants.
    Orphan,
}

/// A node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Unique key (`net:web`, `dev:berth-…`, `veth:vb…`, `ctr:api`).
    pub key: String,
    /// What it is.
    pub kind: Kind,
    /// Its label, line by line.
    pub lines: Vec<String>,
    /// The kernel differs from the intent here.
    pub drift: bool,
}

/// An edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    /// Key of the source node.
    pub from: String,
    /// Key of the target node.
    pub to: String,
    /// Its label.
    pub label: String,
}

/// The topology as a graph.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Graph {
    /// Nodes, in document order.
    pub nodes: Vec<Node>,
    /// Edges.
    pub edges: Vec<Edge>,
}

/// Whether a link's state is a difference from the intent.
fn drifted(l: &TopoLink) -> bool {
    !matches!(l.state.as_str(), "ok" | "not observed" | "")
}

/// Whether a network is drawn: all but the predefined `host` and `none` networks, which are
/// drawn only when a container uses them (they have no device and no endpoints).
fn shown(t: &Topology, n: &berth_api::types::TopoNetwork) -> bool {
    match n.driver.as_str() {
        "host" => t.containers.iter().any(|c| c.mode == "host"),
        "null" => t.containers.iter().any(|c| c.mode == "none"),
        _ => true,
    }
}

/// `name (state: detail)` for a link that differs, else its name and addresses.
fn link_lines(l: &TopoLink) -> Vec<String> {
    let mut v = vec![format!("{} {}", l.kind, l.name)];
    if !l.addrs.is_empty() {
        v.push(l.addrs.join(" "));
    }
    if drifted(l) {
        v.push(format!("{}: {}", l.state.to_uppercase(), l.detail));
    }
    v
}

impl Graph {
    fn add(&mut self, key: String, kind: Kind, lines: Vec<String>, drift: bool) {
        if !self.nodes.iter().any(|n| n.key == key) {
            self.nodes.push(Node {
                key,
                kind,
                lines,
                drift,
            });
        }
    }

    fn edge(&mut self, from: &str, to: &str, label: String) {
        self.edges.push(Edge {
            from: from.to_string(),
            to: to.to_string(),
            label,
        });
    }

    /// The index of the node `key`.
    fn index(&self, key: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.key == key)
    }
}

/// Builds the graph: network → device → veth → container (a macvlan container hangs off its
/// parent directly), containers sharing a namespace off their owner, orphans alone.
pub fn build(t: &Topology) -> Graph {
    let mut g = Graph::default();
    for c in &t.containers {
        let mut lines = vec![format!("container {}", c.name), c.status.clone()];
        let names: Vec<&str> = t
            .networks
            .iter()
            .flat_map(|n| n.endpoints.iter())
            .filter(|e| e.container == c.name)
            .flat_map(|e| e.dns_names.iter().map(String::as_str))
            .filter(|n| *n != c.name && !n.contains('.') && *n != c.id)
            .collect();
        if !names.is_empty() {
            lines.push(format!("also: {}", names.join(", ")));
        }
        if !c.ports.is_empty() {
            lines.push(c.ports.join(" "));
        }
        g.add(format!("ctr:{}", c.name), Kind::Container, lines, false);
    }
    for n in t.networks.iter().filter(|n| shown(t, n)) {
        let nk = format!("net:{}", n.name);
        let mut lines = vec![format!("network {} ({})", n.name, n.driver)];
        if !n.subnets.is_empty() {
            lines.push(n.subnets.join(" "));
        }
        let mut flags = Vec::new();
        if n.internal {
            flags.push("internal");
        }
        if !n.icc {
            flags.push("icc off");
        }
        if n.allow_direct {
            flags.push("allow_direct");
        }
        if !flags.is_empty() {
            lines.push(flags.join(", "));
        }
        g.add(nk.clone(), Kind::Network, lines, false);
        let dk = n.device.as_ref().map(|d| {
            let dk = format!("dev:{}", d.name);
            g.add(dk.clone(), Kind::Device, link_lines(d), drifted(d));
            g.edge(&nk, &dk, String::new());
            dk
        });
        if let (Some(s), Some(dk)) = (&n.shim, &dk) {
            let sk = format!("dev:{}", s.name);
            g.add(sk.clone(), Kind::Device, link_lines(s), drifted(s));
            g.edge(dk, &sk, "host shim".into());
        }
        for e in &n.endpoints {
            let ck = format!("ctr:{}", e.container);
            let mut label = format!("{} {}", e.ifname, e.addrs.join(" "));
            if !matches!(e.state.as_str(), "ok" | "not observed" | "") {
                label.push_str(&format!(" ({}: {})", e.state.to_uppercase(), e.detail));
            }
            match (&e.veth, &dk) {
                (Some(v), _) => {
                    let vk = format!("veth:{}", v.name);
                    g.add(vk.clone(), Kind::Veth, link_lines(v), drifted(v));
                    if let Some(dk) = &dk {
                        g.edge(dk, &vk, String::new());
                    }
                    g.edge(&vk, &ck, label);
                }
                (None, Some(dk)) => g.edge(dk, &ck, format!("{} {label}", n.driver)),
                (None, None) => g.edge(&nk, &ck, label),
            }
        }
    }
    for c in &t.containers {
        if let Some(owner) = c.mode.strip_prefix("container:") {
            g.edge(
                &format!("ctr:{owner}"),
                &format!("ctr:{}", c.name),
                "shares its namespace".into(),
            );
        } else if c.mode == "host" || c.mode == "none" {
            let net = if c.mode == "host" { "host" } else { "none" };
            if g.index(&format!("net:{net}")).is_some() {
                g.edge(
                    &format!("net:{net}"),
                    &format!("ctr:{}", c.name),
                    c.mode.clone(),
                );
            }
        }
    }
    for o in &t.orphans {
        g.add(
            format!("orphan:{}", o.name),
            Kind::Orphan,
            link_lines(o),
            true,
        );
    }
    g
}

/// The text tree (the default output).
pub fn text(t: &Topology) -> String {
    let mut s = String::new();
    for n in t.networks.iter().filter(|n| shown(t, n)) {
        let mut head = format!("network {} ({})", n.name, n.driver);
        for (sub, gw) in n.subnets.iter().zip(&n.gateways) {
            let _ = write!(head, " {sub} gw {gw}");
        }
        if n.internal {
            head.push_str(" internal");
        }
        if !n.icc {
            head.push_str(" icc=false");
        }
        if n.allow_direct {
            head.push_str(" allow_direct");
        }
        let _ = writeln!(s, "{head}");
        let indent = match &n.device {
            Some(d) => {
                let _ = writeln!(s, "└─ {}", link_text(d));
                if let Some(sh) = &n.shim {
                    let _ = writeln!(s, "   ├─ {} (host shim)", link_text(sh));
                }
                "   "
            }
            None => "",
        };
        for (i, e) in n.endpoints.iter().enumerate() {
            let branch = if i + 1 == n.endpoints.len() {
                "└─"
            } else {
                "├─"
            };
            let via = e
                .veth
                .as_ref()
                .map(|v| format!("{} → ", link_text(v)))
                .unwrap_or_else(|| format!("{} ", n.driver));
            let mut line = format!(
                "{indent}{branch} {via}{} {} {}",
                e.container,
                e.ifname,
                e.addrs.join(" ")
            );
            if !matches!(e.state.as_str(), "ok" | "") {
                let _ = write!(line, "  [{}: {}]", e.state.to_uppercase(), e.detail);
            }
            if !e.dns_names.is_empty() {
                let _ = write!(line, "  names: {}", e.dns_names.join(", "));
            }
            let _ = writeln!(s, "{line}");
        }
    }
    if !t.containers.is_empty() {
        let _ = writeln!(s, "\ncontainers:");
        for c in &t.containers {
            let _ = writeln!(
                s,
                "  {} ({}, {}){}",
                c.name,
                c.status,
                c.mode,
                if c.ports.is_empty() {
                    String::new()
                } else {
                    format!("  ports: {}", c.ports.join(", "))
                }
            );
        }
    }
    if !t.orphans.is_empty() {
        let _ = writeln!(s, "\nberth's links nothing wants:");
        for o in &t.orphans {
            let _ = writeln!(s, "  {}", link_text(o));
        }
    }
    if t.in_sync {
        let _ = writeln!(s, "\nin sync: the kernel has what berth wants");
    } else {
        let _ = writeln!(s, "\ndrift (a reconcile pass would):");
        for d in &t.drift {
            let _ = writeln!(s, "  - {d}");
        }
    }
    s
}

fn link_text(l: &TopoLink) -> String {
    let mut s = format!("{} {}", l.kind, l.name);
    if !l.addrs.is_empty() {
        let _ = write!(s, " {}", l.addrs.join(" "));
    }
    if drifted(l) {
        let _ = write!(s, "  [{}: {}]", l.state.to_uppercase(), l.detail);
    }
    s
}

/// A DOT string literal.
fn dot_quote(s: &str) -> String {
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

/// Graphviz DOT (`dot -Tsvg`).
pub fn dot(g: &Graph) -> String {
    let mut s = String::from(
        "digraph berth {\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];\n",
    );
    for n in &g.nodes {
        let shape = match n.kind {
            Kind::Network => "folder",
            Kind::Device => "box3d",
            Kind::Veth => "cds",
            Kind::Container => "component",
            Kind::Orphan => "octagon",
        };
        let color = if n.drift {
            ", color=red, fontcolor=red"
        } else {
            ""
        };
        let _ = writeln!(
            s,
            "  {} [label={}, shape={shape}{color}];",
            dot_quote(&n.key),
            dot_quote(&n.lines.join("\n"))
        );
    }
    for e in &g.edges {
        let label = if e.label.is_empty() {
            String::new()
        } else {
            format!(" [label={}]", dot_quote(&e.label))
        };
        let _ = writeln!(
            s,
            "  {} -> {}{label};",
            dot_quote(&e.from),
            dot_quote(&e.to)
        );
    }
    s.push_str("}\n");
    s
}

/// Mermaid text: `"` and the characters Mermaid treats as markup become entities.
fn mermaid_text(s: &str) -> String {
    s.replace('"', "#quot;")
        .replace('<', "#lt;")
        .replace('>', "#gt;")
        .replace('|', "#124;")
}

/// A Mermaid flowchart.
pub fn mermaid(g: &Graph) -> String {
    let mut s = String::from("flowchart LR\n");
    for (i, n) in g.nodes.iter().enumerate() {
        let label = n
            .lines
            .iter()
            .map(|l| mermaid_text(l))
            .collect::<Vec<_>>()
            .join("<br/>");
        let (open, close) = match n.kind {
            Kind::Network => ("[(", ")]"),
            Kind::Device => ("[[", "]]"),
            Kind::Veth => ("([", "])"),
            Kind::Container => ("[", "]"),
            Kind::Orphan => ("{{", "}}"),
        };
        let _ = writeln!(s, "  n{i}{open}\"{label}\"{close}");
    }
    for e in &g.edges {
        let (Some(a), Some(b)) = (g.index(&e.from), g.index(&e.to)) else {
            continue;
        };
        if e.label.is_empty() {
            let _ = writeln!(s, "  n{a} --> n{b}");
        } else {
            let _ = writeln!(s, "  n{a} -->|\"{}\"| n{b}", mermaid_text(&e.label));
        }
    }
    let drift: Vec<String> = g
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.drift)
        .map(|(i, _)| format!("n{i}"))
        .collect();
    if !drift.is_empty() {
        s.push_str("  classDef drift stroke:#d00,stroke-width:2px,color:#d00\n");
        let _ = writeln!(s, "  class {} drift", drift.join(","));
    }
    s
}

/// SVG, laid out and drawn by `layout-rs` from the graph (never string-built here). The
/// library asserts on graphs it cannot handle; that becomes an error instead of a panic.
pub fn svg(g: &Graph) -> Result<String, String> {
    use layout::backends::svg::SVGWriter;
    use layout::core::base::Orientation;
    use layout::core::color::Color;
    use layout::core::style::StyleAttr;
    use layout::std_shapes::render::get_shape_size;
    use layout::std_shapes::shapes::{Arrow, Element, ShapeKind};
    use layout::topo::layout::VisualGraph;

    const FONT: usize = 14;
    let g = g.clone();
    let run = move || {
        let dir = Orientation::LeftToRight;
        let mut vg = VisualGraph::new(dir);
        let mut handles = Vec::new();
        let mut nodes = g.nodes.clone();
        if nodes.is_empty() {
            nodes.push(Node {
                key: "empty".into(),
                kind: Kind::Network,
                lines: vec!["no networks".into()],
                drift: false,
            });
        }
        for n in &nodes {
            let shape = ShapeKind::new_box(&n.lines.join("\n"));
            let fill = match n.kind {
                Kind::Network => "lightblue",
                Kind::Device => "lightyellow",
                Kind::Veth => "white",
                Kind::Container => "palegreen",
                Kind::Orphan => "mistyrose",
            };
            let line = if n.drift { "red" } else { "black" };
            let look = StyleAttr::new(
                Color::fast(line),
                if n.drift { 3 } else { 1 },
                Some(Color::fast(fill)),
                if n.kind == Kind::Container { 8 } else { 0 },
                FONT,
            );
            let sz = get_shape_size(dir.flip(), &shape, FONT, false);
            handles.push(vg.add_node(Element::create(shape, look, dir.flip(), sz)));
        }
        for e in &g.edges {
            let pos = |k: &str| nodes.iter().position(|n| n.key == k);
            if let (Some(a), Some(b)) = (pos(&e.from), pos(&e.to)) {
                vg.add_edge(Arrow::simple(&e.label), handles[a], handles[b]);
            }
        }
        let mut w = SVGWriter::new();
        vg.do_it(false, false, false, &mut w);
        w.finalize()
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).map_err(|_| {
        "the SVG layout library could not lay this graph out; use --format dot".to_string()
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
