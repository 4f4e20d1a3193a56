use super::*;
use berth_api::types::{TopoContainer, TopoEndpoint, TopoNetwork};

fn link(name: &str, kind: &str, state: &str, detail: &str, addrs: &[&str]) -> TopoLink {
    TopoLink {
        name: name.into(),
        kind: kind.into(),
        state: state.into(),
        detail: detail.into(),
        addrs: addrs.iter().map(|s| s.to_string()).collect(),
        master: String::new(),
        up: true,
    }
}

/// web (bridge) with api (ok) and db (veth missing), lan (macvlan) with printer, side
/// sharing api's namespace, an orphan veth.
fn topo() -> Topology {
    let ep = |c: &str, addr: &str, veth: Option<TopoLink>, names: &[&str]| TopoEndpoint {
        container: c.into(),
        ifname: "eth0".into(),
        addrs: vec![addr.into()],
        observed_addrs: vec![addr.into()],
        veth,
        state: "ok".into(),
        detail: String::new(),
        dns_names: names.iter().map(|s| s.to_string()).collect(),
    };
    let ctr = |n: &str, mode: &str, ports: &[&str]| TopoContainer {
        name: n.into(),
        id: "0123456789ab".into(),
        mode: mode.into(),
        status: "running".into(),
        ports: ports.iter().map(|s| s.to_string()).collect(),
    };
    Topology {
        in_sync: false,
        networks: vec![
            TopoNetwork {
                name: "web".into(),
                id: "aaaaaaaaaaaa".into(),
                driver: "bridge".into(),
                subnets: vec!["10.1.0.0/24".into()],
                gateways: vec!["10.1.0.1".into()],
                icc: true,
                device: Some(link(
                    "berth-aaaaaaaaa",
                    "bridge",
                    "ok",
                    "",
                    &["10.1.0.1/24"],
                )),
                endpoints: vec![
                    ep(
                        "api",
                        "10.1.0.2/24",
                        Some(link("vb111111111111", "veth", "ok", "", &[])),
                        &["api", "www", "api.web"],
                    ),
                    ep(
                        "db",
                        "10.1.0.3/24",
                        Some(link(
                            "vb222222222222",
                            "veth",
                            "missing",
                            "veth vb222222222222 missing in the kernel",
                            &[],
                        )),
                        &["db"],
                    ),
                ],
                ..TopoNetwork::default()
            },
            TopoNetwork {
                name: "lan".into(),
                id: "bbbbbbbbbbbb".into(),
                driver: "macvlan".into(),
                subnets: vec!["192.168.1.0/24".into()],
                gateways: vec!["192.168.1.1".into()],
                icc: true,
                device: Some(link("eth9", "parent", "ok", "the LAN's interface", &[])),
                endpoints: vec![ep("printer", "192.168.1.200/24", None, &[])],
                ..TopoNetwork::default()
            },
        ],
        containers: vec![
            ctr("api", "networks", &["0.0.0.0:8080->80/tcp"]),
            ctr("db", "networks", &[]),
            ctr("printer", "networks", &[]),
            ctr("side", "container:api", &[]),
        ],
        orphans: vec![link(
            "vb333333333333",
            "veth",
            "not wanted",
            "veth vb333333333333 is berth's but nothing wants it",
            &[],
        )],
        drift: vec![
            "CreateEndpoint veth vb222222222222 of container db on network web: missing".into(),
        ],
    }
}

fn edge<'g>(g: &'g Graph, from: &str, to: &str) -> &'g Edge {
    g.edges
        .iter()
        .find(|e| e.from == from && e.to == to)
        .unwrap_or_else(|| panic!("no edge {from} -> {to} in {:#?}", g.edges))
}

#[test]
fn the_graph_follows_the_kernel_objects() {
    let g = build(&topo());
    assert!(edge(&g, "net:web", "dev:berth-aaaaaaaaa").label.is_empty());
    edge(&g, "dev:berth-aaaaaaaaa", "veth:vb111111111111");
    assert_eq!(
        edge(&g, "veth:vb111111111111", "ctr:api").label,
        "eth0 10.1.0.2/24"
    );
    // The macvlan container hangs off its parent.
    assert_eq!(
        edge(&g, "dev:eth9", "ctr:printer").label,
        "macvlan eth0 192.168.1.200/24"
    );
    assert_eq!(
        edge(&g, "ctr:api", "ctr:side").label,
        "shares its namespace"
    );
    let node = |k: &str| g.nodes.iter().find(|n| n.key == k).unwrap();
    assert!(node("veth:vb222222222222").drift);
    assert!(node("veth:vb222222222222").lines[1].starts_with("MISSING: veth vb222222222222"));
    assert!(!node("veth:vb111111111111").drift);
    assert!(node("orphan:vb333333333333").drift);
    let api = node("ctr:api");
    assert_eq!(
        api.lines,
        vec![
            "container api",
            "running",
            "also: www",
            "0.0.0.0:8080->80/tcp"
        ]
    );
}

#[test]
fn text_dot_and_mermaid() {
    let t = topo();
    let s = text(&t);
    assert!(s.contains(
        "network web (bridge) 10.1.0.0/24 gw 10.1.0.1\n└─ bridge berth-aaaaaaaaa 10.1.0.1/24\n"
    ));
    assert!(
        s.contains("   ├─ veth vb111111111111 → api eth0 10.1.0.2/24  names: api, www, api.web")
    );
    assert!(s.contains(
        "   └─ veth vb222222222222  [MISSING: veth vb222222222222 missing in the kernel] → db eth0"
    ));
    assert!(s.contains("└─ parent eth9\n   └─ macvlan printer eth0 192.168.1.200/24"));
    assert!(s.contains("veth vb333333333333  [NOT WANTED:"));
    assert!(s.contains("drift (a reconcile pass would):\n  - CreateEndpoint"));
    let g = build(&t);
    let d = dot(&g);
    assert!(d.starts_with("digraph berth {"));
    assert!(d.contains("\"veth:vb111111111111\" -> \"ctr:api\" [label=\"eth0 10.1.0.2/24\"];"));
    assert!(d.contains("color=red"));
    assert!(d.contains("label=\"network web (bridge)\\n10.1.0.0/24\""));
    assert_eq!(dot_quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
    let m = mermaid(&g);
    assert!(m.starts_with("flowchart LR\n"));
    assert!(m.contains("-->|\"eth0 10.1.0.2/24\"|"));
    assert!(m.contains("0.0.0.0:8080-#gt;80/tcp"), "{m}");
    assert!(m.contains("class "));
    assert!(m.contains(" drift\n"));
}

/// The SVG comes from the layout library; a real renderer (usvg to parse, resvg to rasterize)
/// must read it, find every node's text, and draw the drift in red.
#[test]
fn the_svg_renders_with_a_real_renderer() {
    let svg_text = svg(&build(&topo())).unwrap();
    let mut opt = resvg::usvg::Options::default();
    opt.fontdb_mut().load_system_fonts();
    // layout-rs asks for "Times, serif"; serve it any installed face (fontdb's serif default
    // is "Times New Roman").
    let family = opt
        .fontdb
        .faces()
        .find_map(|f| f.families.first().map(|(name, _)| name.clone()))
        .expect(
            "no system fonts: install fonts-dejavu-core (the SVG test checks the rendered text)",
        );
    opt.fontdb_mut().set_serif_family(family);
    let tree = resvg::usvg::Tree::from_str(&svg_text, &opt).expect("a valid SVG document");
    // Every label's text is in the document as text.
    let mut texts = Vec::new();
    collect_text(tree.root(), &mut texts);
    let all = texts.join("\n");
    for want in [
        "network web (bridge)",
        "bridge berth-aaaaaaaaa",
        "veth vb111111111111",
        "container api",
        "0.0.0.0:8080->80/tcp",
        "MISSING: veth vb222222222222 missing in the kernel",
        "parent eth9",
        "eth0 10.1.0.2/24",
    ] {
        assert!(all.contains(want), "{want:?} not in the SVG's text: {all}");
    }
    // Rasterized: a real image with ink, and red where drift is.
    let size = tree.size().to_int_size();
    assert!(size.width() > 200 && size.height() > 100, "{size:?}");
    let mut pixmap = resvg::tiny_skia::Pixmap::new(size.width(), size.height()).unwrap();
    pixmap.fill(resvg::tiny_skia::Color::WHITE);
    resvg::render(
        &tree,
        resvg::tiny_skia::Transform::default(),
        &mut pixmap.as_mut(),
    );
    let px = pixmap.pixels();
    let dark = px
        .iter()
        .filter(|p| p.red() < 80 && p.green() < 80 && p.blue() < 80)
        .count();
    let red = px
        .iter()
        .filter(|p| p.red() > 200 && p.green() < 60 && p.blue() < 60)
        .count();
    assert!(dark > 1000, "too little ink: {dark} dark pixels");
    assert!(
        red > 50,
        "the drifted nodes are not drawn in red: {red} red pixels"
    );
    let png = pixmap.encode_png().unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
}

fn collect_text(g: &resvg::usvg::Group, out: &mut Vec<String>) {
    for n in g.children() {
        match n {
            resvg::usvg::Node::Group(g) => collect_text(g, out),
            resvg::usvg::Node::Text(t) => {
                out.push(t.chunks().iter().map(|c| c.text()).collect::<String>())
            }
            _ => {}
        }
    }
}

#[test]
fn an_empty_host_still_renders() {
    let t = Topology {
        in_sync: true,
        ..Topology::default()
    };
    let s = svg(&build(&t)).unwrap();
    assert!(s.contains("no networks"));
    assert!(text(&t).contains("in sync"));
}
