//! The other hosts' published overlay endpoints as one host keeps them (the etcd watch's
//! copy), and what its DNS table must take from them.
//!
//! Each receiver of an endpoint event used to build its whole DNS table again (every local
//! container and every other host's endpoint) because other hosts' containers were in it:
//! O(the cluster's endpoints) of CPU per event on every host. The cache here remembers which
//! containers' records changed since the table last took them ([`RemoteCache::take_dns`]),
//! so an event costs the table exactly that container's names, aliases and PTR records
//! ([`crate::dns::Table::apply_remote`]), whatever the size of the cluster.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::model::{ContainerSpec, EndpointSpec};
use crate::overlay::RemoteEndpoint;

/// The published endpoints (every host's, by store key) and which other hosts' containers
/// changed since the DNS table last took them.
#[derive(Debug, Clone)]
pub struct RemoteCache {
    /// This host's node name: its own endpoints are cached (node listings count them) but
    /// never go into the DNS table as stand-ins (its own store answers them).
    node: String,
    by_key: BTreeMap<String, RemoteEndpoint>,
    /// Container id → the keys of its endpoints (one per network and host), to build its
    /// stand-in without a scan of every endpoint.
    by_container: HashMap<String, BTreeSet<String>>,
    /// Containers of other hosts whose records changed since [`RemoteCache::take_dns`];
    /// `None`: everything (a fresh list replaced the cache, or it was never taken).
    dirty: Option<BTreeSet<String>>,
}

/// What the DNS table must do about the other hosts' containers (see
/// [`RemoteCache::take_dns`]).
#[derive(Debug, Clone, PartialEq)]
pub enum RemoteDns {
    /// The table must be built again with these stand-ins (every other host's container).
    All(Vec<ContainerSpec>),
    /// Only these containers changed: each one's stand-in now (`None`: it has no endpoint on
    /// another host any more), by container id.
    Changed(Vec<(String, Option<ContainerSpec>)>),
}

impl RemoteCache {
    /// An empty cache for host `node`.
    pub fn new(node: impl Into<String>) -> RemoteCache {
        RemoteCache {
            node: node.into(),
            by_key: BTreeMap::new(),
            by_container: HashMap::new(),
            dirty: None,
        }
    }

    /// Replaces everything with a fresh list (by store key); the DNS table is built again.
    pub fn replace(&mut self, all: BTreeMap<String, RemoteEndpoint>) {
        self.by_container.clear();
        for (k, e) in &all {
            self.by_container
                .entry(e.container_id.clone())
                .or_default()
                .insert(k.clone());
        }
        self.by_key = all;
        self.dirty = None;
    }

    /// Applies one watch event: `value` is the endpoint now at `key` (`None`: deleted).
    /// Returns what the key held before and what it holds now.
    pub fn apply(
        &mut self,
        key: &str,
        value: Option<RemoteEndpoint>,
    ) -> (Option<RemoteEndpoint>, Option<RemoteEndpoint>) {
        let before = match &value {
            Some(e) => self.by_key.insert(key.to_string(), e.clone()),
            None => self.by_key.remove(key),
        };
        if let Some(b) = &before {
            if let Some(keys) = self.by_container.get_mut(&b.container_id) {
                keys.remove(key);
                if keys.is_empty() {
                    self.by_container.remove(&b.container_id);
                }
            }
            self.touch(b);
        }
        if let Some(e) = &value {
            self.by_container
                .entry(e.container_id.clone())
                .or_default()
                .insert(key.to_string());
            self.touch(e);
        }
        (before, value)
    }

    /// Marks `e`'s container for the DNS table (another host's only).
    fn touch(&mut self, e: &RemoteEndpoint) {
        if e.node == self.node {
            return;
        }
        if let Some(d) = &mut self.dirty {
            d.insert(e.container_id.clone());
        }
    }

    /// Every cached endpoint, in key order.
    pub fn endpoints(&self) -> impl Iterator<Item = &RemoteEndpoint> + '_ {
        self.by_key.values()
    }

    /// What the DNS table has not taken yet, and from now on it has: the changed containers'
    /// stand-ins, or all of them when the table must start over. Each call hands out a
    /// change once; a caller that cannot use [`RemoteDns::Changed`] (it builds its table from
    /// scratch anyway) takes [`RemoteCache::stand_ins`] instead, which is at least as new.
    pub fn take_dns(&mut self) -> RemoteDns {
        match self.dirty.replace(BTreeSet::new()) {
            None => RemoteDns::All(self.stand_ins()),
            Some(ids) => RemoteDns::Changed(
                ids.into_iter()
                    .map(|id| {
                        let c = self.stand_in(&id);
                        (id, c)
                    })
                    .collect(),
            ),
        }
    }

    /// Every other host's container as a stand-in for the DNS table, in container id order.
    pub fn stand_ins(&self) -> Vec<ContainerSpec> {
        let ids: BTreeSet<&String> = self.by_container.keys().collect();
        ids.into_iter().filter_map(|id| self.stand_in(id)).collect()
    }

    /// Container `id` of other hosts as a stand-in (see [`stand_in`]).
    fn stand_in(&self, id: &str) -> Option<ContainerSpec> {
        let eps: Vec<&RemoteEndpoint> = self
            .by_container
            .get(id)?
            .iter()
            .filter_map(|k| self.by_key.get(k))
            .filter(|e| e.node != self.node)
            .collect();
        stand_in(&eps)
    }
}

/// Another host's container as the DNS table takes it: its name, and per published endpoint
/// (in the order given: store key order) the network, address(es) and aliases. `None` without
/// endpoints. The name is the first endpoint's (a host publishes all of a container's
/// endpoints in one transaction, so they agree).
pub fn stand_in(eps: &[&RemoteEndpoint]) -> Option<ContainerSpec> {
    let first = eps.first()?;
    let mut c = ContainerSpec::new(first.container_id.clone(), &first.name, vec![]);
    for r in eps {
        c.endpoints.push(EndpointSpec {
            id: format!("{}-{}", r.container_id, r.network_id),
            network_id: r.network_id.clone(),
            host_ifname: String::new(),
            ifname: "eth0".into(),
            mac: r.mac.clone(),
            // A and AAAA: every address the endpoint has, as a host route.
            addrs: r.ips().map(ipnet::IpNet::from).collect(),
            static_ipv4: None,
            static_ipv6: None,
            aliases: r.aliases.clone(),
            gw_priority: 0,
            driver_opts: Default::default(),
            links: Vec::new(),
            link_local_ips: Vec::new(),
            reused_mac: false,
        });
    }
    Some(c)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly on purpose.
mod tests {
    use std::collections::BTreeSet;
    use std::net::IpAddr;

    use proptest::prelude::*;

    use super::*;
    use crate::dns::Table;
    use crate::model::{Driver, NetworkSpec};
    use crate::testutil;

    const SELF: &str = "h0";
    const NODES: [&str; 3] = ["h0", "h1", "h2"];
    /// Remote container ids: `a` is also a local container's (this host's own endpoint).
    const IDS: [char; 5] = ['a', 'b', 'c', 'd', 'e'];
    const NAMES: [&str; 4] = ["x", "y", "X", "web"];

    fn overlay(id: char, name: &str, subnet: &str) -> NetworkSpec {
        let mut n = testutil::net(id, name, subnet);
        n.driver = Driver::Overlay;
        n
    }

    /// `ov1`, `ov2` (this host has both) and the id of a network it does not have.
    fn nets() -> Vec<NetworkSpec> {
        vec![
            overlay('1', "ov1", "10.1.0.0/24"),
            overlay('2', "ov2", "10.2.0.0/24"),
        ]
    }

    fn net_id(i: usize) -> String {
        std::iter::repeat_n(['1', '2', '3'][i], 64).collect()
    }

    fn cid(i: usize) -> String {
        std::iter::repeat_n(IDS[i], 64).collect()
    }

    /// This host's containers: `a` on both networks, and an asker `l` on `ov1` only.
    fn locals() -> Vec<ContainerSpec> {
        let n = nets();
        vec![
            testutil::container(
                'a',
                "a",
                &[(&n[0], "10.1.0.100/24"), (&n[1], "10.2.0.100/24")],
            ),
            testutil::container('f', "l", &[(&n[0], "10.1.0.200/24")]),
        ]
    }

    fn key(net: usize, node: usize, c: usize) -> String {
        format!("endpoints/{}/{}/{}", net_id(net), NODES[node], cid(c))
    }

    #[allow(clippy::too_many_arguments)]
    fn ep(
        net: usize,
        node: usize,
        c: usize,
        name: &str,
        host: u8,
        v6: bool,
        aliases: &[&str],
    ) -> RemoteEndpoint {
        let ip: IpAddr = format!("10.{}.0.{host}", net + 1).parse().unwrap();
        RemoteEndpoint {
            network_id: net_id(net),
            node: NODES[node].into(),
            vtep: format!("192.168.0.{}", node + 1).parse().unwrap(),
            ip,
            ip6: v6.then(|| format!("fd0{}::{host}", net + 1).parse().unwrap()),
            mac: format!("02:42:0a:0{}:00:{host:02x}", net + 1),
            name: name.into(),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            container_id: cid(c),
        }
    }

    /// The table built from scratch: this host's containers, then every other host's
    /// container from `published` (grouped by container id here, independently of the cache).
    fn scratch(published: &BTreeMap<String, RemoteEndpoint>) -> Table {
        let locals = locals();
        let mut t = Table::new(&nets());
        for c in &locals {
            t.insert(c, true);
        }
        let mut by_id: BTreeMap<&str, Vec<&RemoteEndpoint>> = BTreeMap::new();
        for e in published.values().filter(|e| e.node != SELF) {
            by_id.entry(&e.container_id).or_default().push(e);
        }
        for (id, eps) in by_id {
            if locals.iter().any(|l| l.id == id) {
                continue;
            }
            t.insert(&stand_in(&eps).unwrap(), true);
        }
        t
    }

    /// What the daemon does at a refresh: the table follows the cache's changes, or is built
    /// again when the cache says so.
    fn follow(t: &mut Table, cache: &mut RemoteCache) {
        let local: BTreeSet<String> = locals().into_iter().map(|c| c.id).collect();
        match cache.take_dns() {
            RemoteDns::All(all) => {
                *t = Table::new(&nets());
                for c in &locals() {
                    t.insert(c, true);
                }
                for c in all.iter().filter(|c| !local.contains(&c.id)) {
                    t.insert(c, true);
                }
            }
            RemoteDns::Changed(changes) => {
                t.apply_remote(&changes, |id| local.contains(id));
            }
        }
    }

    fn asker() -> IpAddr {
        "10.1.0.200".parse().unwrap()
    }

    fn resolves(t: &Table, name: &str) -> Option<Vec<String>> {
        t.resolve(asker(), name).map(|(v4, v6)| {
            v4.iter()
                .map(|a| a.to_string())
                .chain(v6.iter().map(|a| a.to_string()))
                .collect()
        })
    }

    /// A cache and table that followed `events`, checked against the scratch table after each.
    fn run(events: &[(String, Option<RemoteEndpoint>)]) -> (RemoteCache, Table) {
        let mut cache = RemoteCache::new(SELF);
        let mut t = Table::default();
        let mut published = BTreeMap::new();
        follow(&mut t, &mut cache);
        for (k, v) in events {
            match v {
                Some(e) => published.insert(k.clone(), e.clone()),
                None => published.remove(k),
            };
            cache.apply(k, v.clone());
            follow(&mut t, &mut cache);
            assert_eq!(t, scratch(&published), "after {k} = {v:?}");
        }
        (cache, t)
    }

    #[test]
    fn add_rename_alias_remove() {
        let k = key(0, 1, 1);
        let (_, t) = run(&[(k.clone(), Some(ep(0, 1, 1, "x", 5, true, &["al"])))]);
        assert_eq!(
            resolves(&t, "x"),
            Some(vec!["10.1.0.5".into(), "fd01::5".into()])
        );
        assert_eq!(resolves(&t, "al").map(|a| a.len()), Some(2));
        assert_eq!(resolves(&t, "x.ov1").map(|a| a.len()), Some(2));
        assert!(resolves(&t, "bbbbbbbbbbbb").is_some(), "short id");
        // Renamed, alias dropped: the old names go at once.
        let (_, t) = run(&[
            (k.clone(), Some(ep(0, 1, 1, "x", 5, false, &["al"]))),
            (k.clone(), Some(ep(0, 1, 1, "y", 5, false, &[]))),
        ]);
        assert_eq!(resolves(&t, "x"), None);
        assert_eq!(resolves(&t, "al"), None);
        assert_eq!(resolves(&t, "y"), Some(vec!["10.1.0.5".into()]));
        // Withdrawn: nothing of it is left.
        let (_, t) = run(&[
            (k.clone(), Some(ep(0, 1, 1, "x", 5, false, &["al"]))),
            (k, None),
        ]);
        assert_eq!(resolves(&t, "x"), None);
        assert_eq!(resolves(&t, "bbbbbbbbbbbb"), None);
        assert_eq!(t, scratch(&BTreeMap::new()));
    }

    #[test]
    fn same_name_on_two_hosts_and_networks() {
        let (a, b) = (key(0, 1, 1), key(1, 2, 2));
        let (_, t) = run(&[
            (a.clone(), Some(ep(0, 1, 1, "web", 5, false, &[]))),
            (b.clone(), Some(ep(1, 2, 2, "web", 6, false, &[]))),
        ]);
        // The asker is on ov1 only: h1's.
        assert_eq!(resolves(&t, "web"), Some(vec!["10.1.0.5".into()]));
        let (_, t) = run(&[
            (a.clone(), Some(ep(0, 1, 1, "web", 5, false, &[]))),
            (b, Some(ep(1, 2, 2, "web", 6, false, &[]))),
            (a, None),
        ]);
        assert_eq!(resolves(&t, "web"), None);
        // Container `a` (on ov2 too) still sees h2's.
        let (v4, _) = t.resolve("10.2.0.100".parse().unwrap(), "web").unwrap();
        assert_eq!(v4, vec!["10.2.0.6".parse::<std::net::Ipv4Addr>().unwrap()]);
    }

    #[test]
    fn a_container_on_two_networks_answers_on_both() {
        let (_, t) = run(&[
            (key(0, 1, 1), Some(ep(0, 1, 1, "x", 5, false, &[]))),
            (key(1, 1, 1), Some(ep(1, 1, 1, "x", 7, false, &[]))),
        ]);
        assert_eq!(resolves(&t, "x.ov1"), Some(vec!["10.1.0.5".into()]));
        let (v4, _) = t.resolve("10.2.0.100".parse().unwrap(), "x.ov2").unwrap();
        assert_eq!(v4, vec!["10.2.0.7".parse::<std::net::Ipv4Addr>().unwrap()]);
    }

    #[test]
    fn a_lease_gone_takes_all_its_records() {
        let mut events: Vec<_> = (1..5)
            .map(|c| {
                (
                    key(0, 1, c),
                    Some(ep(0, 1, c, NAMES[c % 4], 10 + c as u8, true, &["al"])),
                )
            })
            .collect();
        events.push((key(0, 2, 4), Some(ep(0, 2, 4, "keep", 30, false, &[]))));
        // The lease of h1 expires: etcd deletes each of its keys.
        events.extend((1..5).map(|c| (key(0, 1, c), None)));
        let (cache, t) = run(&events);
        for name in ["x", "y", "web", "al"] {
            assert_eq!(resolves(&t, name), None, "{name}");
        }
        assert_eq!(resolves(&t, "keep"), Some(vec!["10.1.0.30".into()]));
        assert_eq!(cache.endpoints().count(), 1);
    }

    #[test]
    fn own_endpoints_never_replace_local_containers() {
        // This host's own endpoint of `a`, then another host's claiming the same id.
        let (_, t) = run(&[
            (key(0, 0, 0), Some(ep(0, 0, 0, "a", 100, false, &[]))),
            (key(0, 1, 0), Some(ep(0, 1, 0, "impostor", 9, false, &[]))),
            (key(0, 1, 0), None),
        ]);
        assert_eq!(resolves(&t, "a"), Some(vec!["10.1.0.100".into()]));
        assert_eq!(resolves(&t, "impostor"), None);
    }

    #[derive(Debug, Clone)]
    enum Ev {
        Put {
            net: usize,
            node: usize,
            c: usize,
            name: usize,
            host: u8,
            v6: bool,
            alias: bool,
        },
        Del {
            net: usize,
            node: usize,
            c: usize,
        },
        /// A host's lease expired: every key of it deleted.
        Expire {
            node: usize,
        },
        /// The sync started over: the cache listed afresh.
        Relist,
        /// A DNS refresh (changes pile up between two).
        Refresh,
    }

    fn ev() -> impl Strategy<Value = Ev> {
        prop_oneof![
            6 => (0..3usize, 0..3usize, 0..5usize, 0..4usize, 2..6u8, any::<bool>(), any::<bool>())
                .prop_map(|(net, node, c, name, host, v6, alias)| Ev::Put {
                    net, node, c, name, host, v6, alias
                }),
            3 => (0..3usize, 0..3usize, 0..5usize).prop_map(|(net, node, c)| Ev::Del { net, node, c }),
            1 => (0..3usize).prop_map(|node| Ev::Expire { node }),
            1 => Just(Ev::Relist),
            3 => Just(Ev::Refresh),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever the sequence of events, the table that followed them is the table built
        /// from scratch from what is published.
        #[test]
        fn following_equals_building_from_scratch(evs in prop::collection::vec(ev(), 0..80)) {
            let mut cache = RemoteCache::new(SELF);
            let mut published: BTreeMap<String, RemoteEndpoint> = BTreeMap::new();
            let mut t = Table::default();
            for e in evs {
                match e {
                    Ev::Put { net, node, c, name, host, v6, alias } => {
                        let k = key(net, node, c);
                        let aliases: &[&str] = if alias { &["al", "x"] } else { &[] };
                        let v = ep(net, node, c, NAMES[name], host, v6, aliases);
                        published.insert(k.clone(), v.clone());
                        cache.apply(&k, Some(v));
                    }
                    Ev::Del { net, node, c } => {
                        let k = key(net, node, c);
                        published.remove(&k);
                        cache.apply(&k, None);
                    }
                    Ev::Expire { node } => {
                        let gone: Vec<String> = published
                            .iter()
                            .filter(|(_, e)| e.node == NODES[node])
                            .map(|(k, _)| k.clone())
                            .collect();
                        for k in gone {
                            published.remove(&k);
                            cache.apply(&k, None);
                        }
                    }
                    Ev::Relist => cache.replace(published.clone()),
                    Ev::Refresh => {
                        follow(&mut t, &mut cache);
                        prop_assert_eq!(&t, &scratch(&published));
                    }
                }
                let cached: Vec<&RemoteEndpoint> = cache.endpoints().collect();
                let want: Vec<&RemoteEndpoint> = published.values().collect();
                prop_assert_eq!(cached, want);
            }
            follow(&mut t, &mut cache);
            prop_assert_eq!(&t, &scratch(&published));
        }
    }
}
