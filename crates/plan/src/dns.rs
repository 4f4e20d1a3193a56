//! Container DNS, the pure part: the name table berth's embedded resolver answers from, and the
//! whole per-query decision (parse → scope → answer, refuse or forward) over raw DNS messages.
//!
//! The daemon keeps a [`Table`] up to date per container change and swaps a copy in; its sockets
//! call [`handle`] for each message and only do I/O themselves (sending the answer, or relaying
//! the query to an upstream resolver when [`Action::Forward`] says so). Keeping the decision here
//! makes it testable without root and lets a property test feed it arbitrary bytes.
//!
//! Scoping: the asker is identified by the source address of its query (network subnets never
//! overlap, so an address names one endpoint of one container), or, for the resolver berth
//! opens inside a container's own namespace (macvlan and ipvlan networks, see
//! [`LOCAL_RESOLVER`]), by the listener the query came to. It may resolve the names of the
//! running containers that share a DNS-enabled network with it: container name, short id,
//! `--network-alias`/`--alias` names and `NAME.NETWORK`, case-insensitively, A and AAAA, and PTR
//! for each of their addresses. Anything else is forwarded, unless all of the asker's networks
//! are `--internal` (then REFUSED). Unknown askers are refused.
//!
//! The hot path allocates nothing: the name is lowercased into a stack buffer and looked up in
//! FNV-hashed maps; the answer is written into a buffer the caller reuses.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use crate::model::{ContainerSpec, Driver, EndpointSpec, NetworkSpec};
use crate::names;
use crate::network as planner;

/// TTL of every local answer: 0, so no cache anywhere keeps a record of a container that has
/// since gone or moved (answering again costs a few microseconds).
pub const TTL: u32 = 0;

/// Largest UDP answer without EDNS (RFC 1035).
pub const UDP_PLAIN_MAX: usize = 512;

/// Largest UDP answer berth writes even if the client advertises more (RFC 9715's advice is
/// ~1232; 4096 is the usual EDNS default). Above it the answer is truncated and the client
/// retries over TCP.
pub const UDP_EDNS_MAX: usize = 4096;

/// The UDP payload size berth advertises in its own OPT record (the DNS flag day value).
pub const EDNS_ADVERTISED: u16 = 1232;

/// Response codes berth sets itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Rcode {
    /// No error.
    NoError = 0,
    /// The query could not be parsed.
    FormErr = 1,
    /// Upstream resolution failed (timeouts, no upstream).
    ServFail = 2,
    /// The name does not exist.
    NxDomain = 3,
    /// Not a standard query.
    NotImp = 4,
    /// Refused: unknown asker, or forwarding is not allowed for it.
    Refused = 5,
}

/// Record types berth answers itself.
pub mod qtype {
    /// IPv4 address.
    pub const A: u16 = 1;
    /// Domain name pointer (reverse lookups).
    pub const PTR: u16 = 12;
    /// IPv6 address.
    pub const AAAA: u16 = 28;
    /// EDNS pseudo-record.
    pub const OPT: u16 = 41;
    /// Any type.
    pub const ANY: u16 = 255;
}

const CLASS_IN: u16 = 1;
const FLAG_QR: u16 = 0x8000;
const FLAG_AA: u16 = 0x0400;
const FLAG_TC: u16 = 0x0200;
const FLAG_RD: u16 = 0x0100;
const FLAG_RA: u16 = 0x0080;
const FLAG_CD: u16 = 0x0010;
const OPCODE_MASK: u16 = 0x7800;
const HEADER_LEN: usize = 12;
/// Longest name in wire form (RFC 1035 §2.3.4), hence longest dotted key: 253 bytes.
const MAX_WIRE_NAME: usize = 255;

// ------------------------------------------------------------------------------------- hashing

/// FNV-1a: much cheaper than SipHash for the short keys of this table. The keys (names,
/// addresses) are chosen by the administrator, not by whoever sends queries, so hash flooding
/// is not a concern: a query only looks up.
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type FnvMap<K, V> = HashMap<K, V, BuildHasherDefault<Fnv>>;

// --------------------------------------------------------------------------------------- table

/// Shards of a [`Sharded`] map: a change copies one shard (1/64 of the map) when a published
/// table still shares it, so an update costs about the same at 10 containers and at 1,000.
const SHARDS: usize = 64;

/// A hash map split into [`SHARDS`] shared shards, copied on write: cloning it clones 64
/// `Arc`s, and changing one key copies only that key's shard if a clone still holds it. The
/// daemon keeps one table it changes per container and publishes clones of it, so a start
/// no longer rebuilds (or copies) every container's names.
#[derive(Debug, Clone)]
struct Sharded<K, V> {
    shards: Vec<Arc<FnvMap<K, V>>>,
}

impl<K: Hash + Eq, V: PartialEq> PartialEq for Sharded<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.shards == other.shards
    }
}

impl<K, V> Default for Sharded<K, V> {
    fn default() -> Self {
        Sharded {
            shards: (0..SHARDS).map(|_| Arc::new(FnvMap::default())).collect(),
        }
    }
}

/// The shard of a key: its FNV hash mixed (MurmurHash3's 64-bit finalizer), so every byte of
/// the key moves it. FNV-1a's bits are not all alike: its last step multiplies by
/// `2^40 + 0x1b3`, which carries a byte's change upward by about nine bits per later byte, so
/// the last bytes of a key never reach the middle bits. Taken raw (bits 32–37, as before stop
/// 28), every container address of a /16 fell into ONE shard and names into four, and each
/// change copied a shard holding nearly the whole map (≈ 1.3 ms of a start at 1,000
/// containers). The mixed value is independent of the raw bits the shard's own map uses
/// (buckets, tags).
fn shard_of<Q: Hash + ?Sized>(key: &Q) -> usize {
    let mut h = Fnv::default();
    key.hash(&mut h);
    let mut x = h.finish();
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    (x % SHARDS as u64) as usize
}

impl<K: Hash + Eq + Clone, V: Clone> Sharded<K, V> {
    fn get<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.shards[shard_of(key)].get(key)
    }

    /// The value at `key`, made (default) if absent; its shard copied first if shared.
    fn entry(&mut self, key: K) -> &mut V
    where
        V: Default,
    {
        let shard = Arc::make_mut(&mut self.shards[shard_of(&key)]);
        shard.entry(key).or_default()
    }

    /// Changes the value at `key` with `f` (if there is one), and removes the key when `f`
    /// says the value is now empty. A shard is copied only when the key is in it.
    fn update<Q: Hash + Eq + ?Sized>(&mut self, key: &Q, f: impl FnOnce(&mut V) -> bool)
    where
        K: Borrow<Q>,
    {
        let i = shard_of(key);
        if !self.shards[i].contains_key(key) {
            return;
        }
        let shard = Arc::make_mut(&mut self.shards[i]);
        if let Some(v) = shard.get_mut(key) {
            if f(v) {
                shard.remove(key);
            }
        }
    }

    /// Sets `key` to `value`.
    fn insert(&mut self, key: K, value: V) {
        Arc::make_mut(&mut self.shards[shard_of(&key)]).insert(key, value);
    }

    fn remove<Q: Hash + Eq + ?Sized>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        let i = shard_of(key);
        if !self.shards[i].contains_key(key) {
            return None;
        }
        Arc::make_mut(&mut self.shards[i]).remove(key)
    }
}

/// The addresses one name has on one network: each answering container's run of them, in
/// container id order (the order the daemon lists containers in).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Addrs {
    v4: Vec<Ipv4Addr>,
    v6: Vec<Ipv6Addr>,
    /// Whose addresses they are, in order: (container id, how many v4, how many v6).
    runs: Vec<(Arc<str>, u32, u32)>,
}

impl Addrs {
    /// Adds `owner`'s addresses after those it has here already, in id order among owners.
    fn add(&mut self, owner: &Arc<str>, v4: &[Ipv4Addr], v6: &[Ipv6Addr]) {
        let at = match self.runs.binary_search_by(|r| (*r.0).cmp(owner)) {
            Ok(i) => i,
            Err(i) => {
                self.runs.insert(i, (owner.clone(), 0, 0));
                i
            }
        };
        let (mut o4, mut o6) = (0, 0);
        for r in &self.runs[..=at] {
            o4 += r.1 as usize;
            o6 += r.2 as usize;
        }
        self.v4.splice(o4..o4, v4.iter().copied());
        self.v6.splice(o6..o6, v6.iter().copied());
        let run = &mut self.runs[at];
        run.1 += v4.len() as u32;
        run.2 += v6.len() as u32;
    }

    /// Removes `owner`'s addresses; true when none are left.
    fn remove(&mut self, owner: &str) -> bool {
        if let Ok(i) = self.runs.binary_search_by(|r| (*r.0).cmp(owner)) {
            let (mut o4, mut o6) = (0, 0);
            for r in &self.runs[..i] {
                o4 += r.1 as usize;
                o6 += r.2 as usize;
            }
            let (_, n4, n6) = self.runs.remove(i);
            self.v4.drain(o4..o4 + n4 as usize);
            self.v6.drain(o6..o6 + n6 as usize);
        }
        self.runs.is_empty()
    }
}

/// Values several containers may claim (a PTR name, an asker) by key: the first in container
/// id order answers.
type Claims<T> = Vec<(Arc<str>, T)>;

fn claim<T>(claims: &mut Claims<T>, owner: &Arc<str>, value: T) {
    match claims.binary_search_by(|c| (*c.0).cmp(owner)) {
        // A container claims a key once: its first endpoint with the address.
        Ok(_) => {}
        Err(i) => claims.insert(i, (owner.clone(), value)),
    }
}

/// Drops `owner`'s claim; true when none is left.
fn unclaim<T>(claims: &mut Claims<T>, owner: &str) -> bool {
    claims.retain(|c| *c.0 != *owner);
    claims.is_empty()
}

/// The names of one DNS-enabled network.
#[derive(Debug, Clone, Default, PartialEq)]
struct NetNames {
    /// Lowercase dotted name (no trailing dot) → addresses.
    names: Sharded<Box<[u8]>, Addrs>,
    /// Container address → `NAME.NETWORK.` in wire form.
    ptr: Sharded<IpAddr, Claims<Box<[u8]>>>,
}

/// A container that may ask: which networks it sees names on, and where its other queries go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asker {
    /// The container's name (for logs).
    pub name: String,
    /// Indexes into the table's networks, in the container's endpoint order.
    nets: Vec<u32>,
    /// Whether its other queries are forwarded: it has an endpoint on a non-internal network.
    pub forward: bool,
    /// Its `--dns` servers (forwarded to instead of the host's resolvers when not empty).
    pub servers: Vec<IpAddr>,
    /// Its endpoints' legacy links (Docker's endpoint `Links`), in endpoint order.
    links: Vec<LinkAlias>,
}

/// One endpoint link `NAME:ALIAS` of an asker on a served network: `ALIAS` and
/// `ALIAS.NETWORK` answer what `NAME` answers on that network, for that asker only (moby's
/// `Sandbox.resolveName` with endpoint aliases).
#[derive(Debug, Clone, PartialEq, Eq)]
struct LinkAlias {
    /// Index into the table's networks.
    net: u32,
    /// Lowercase `ALIAS`.
    alias: Box<[u8]>,
    /// Lowercase `ALIAS.NETWORK`.
    dotted: Box<[u8]>,
    /// Lowercase `NAME`, looked up in that network's names at each query: a link may name a
    /// container that is not running (or does not exist) yet, and it never answers an address
    /// of a container that is gone.
    target: Box<[u8]>,
}

/// Everything berth's resolver answers from. A published table is never changed: the daemon
/// keeps its own, changes it per container ([`Table::insert`], [`Table::remove`]) and swaps
/// in a clone (cheap: the maps' shards are shared, see [`Sharded`]), so queries never wait on
/// a lock and never see half an update.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    /// The networks the table was made for (see [`Table::new`]).
    networks: Arc<[NetworkSpec]>,
    /// Container address → the container (first in id order).
    askers: Sharded<IpAddr, Claims<Arc<Member>>>,
    nets: Vec<NetNames>,
    net_ids: Vec<String>,
    listen: Vec<IpAddr>,
    /// Container id → the container, as an asker of its in-namespace resolver and with what
    /// it put in the table (so that it can be taken out).
    by_id: Sharded<String, Arc<Member>>,
    /// Containers whose resolver is [`LOCAL_RESOLVER`] in their own namespace, in id order.
    local: Vec<String>,
}

/// One stored container in a [`Table`]: how it asks, and the keys it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Member {
    asker: Asker,
    /// (network index, lowercase name) of the names it answers to (running containers).
    names: Vec<(u32, Box<[u8]>)>,
    /// (network index, address) of its PTR claims.
    ptrs: Vec<(u32, IpAddr)>,
    /// Its addresses (asker claims).
    addrs: Vec<IpAddr>,
}

/// The address of the resolver berth opens inside the network namespace of each container
/// that has no bridge-network resolver to ask (its networks are macvlan or ipvlan ones, whose
/// gateway is the LAN's router, not berth): Docker's address. 127.0.0.0/8 is local on `lo` in
/// every namespace, so no address has to be added, and nothing outside the namespace can reach
/// it.
pub const LOCAL_RESOLVER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);

/// Whether berth's resolver answers names on `net`: user-defined bridge networks with `dns`
/// (the default `bridge` network has none, like Docker's), and every macvlan and ipvlan network
/// (their containers ask [`LOCAL_RESOLVER`]; networks stored before berth served them say
/// `dns: false`, so the driver decides).
pub fn serves(net: &NetworkSpec) -> bool {
    !net.subnets.is_empty()
        && ((net.dns && net.driver.has_bridge())
            || matches!(net.driver, Driver::Macvlan | Driver::Ipvlan))
}

/// Whether berth's resolver listens on `net`'s gateways: served networks with a bridge of
/// berth's (a macvlan or ipvlan gateway is the LAN's router).
fn listens_on(net: &NetworkSpec) -> bool {
    // An overlay network's gateway is in its own namespace, not on the host: its containers
    // ask 127.0.0.11 in theirs, as on macvlan networks.
    serves(net) && net.driver.has_bridge() && net.driver != crate::model::Driver::Overlay
}

/// The names container `c` answers to on `net` through endpoint `ep` (lower case, each once):
/// its name, short id, `NAME.NETWORK` and its aliases there.
pub fn names_of(c: &ContainerSpec, ep: &EndpointSpec, net: &NetworkSpec) -> Vec<String> {
    let mut keys: Vec<String> = vec![
        c.name.to_ascii_lowercase(),
        names::short_id(&c.id).to_ascii_lowercase(),
        format!("{}.{}", c.name, net.name).to_ascii_lowercase(),
    ];
    keys.extend(ep.aliases.iter().map(|a| a.to_ascii_lowercase()));
    let mut seen: Vec<String> = Vec::new();
    for k in keys {
        let k = k.trim_end_matches('.').to_string();
        if !k.is_empty() && !seen.contains(&k) {
            seen.push(k);
        }
    }
    seen
}

/// The addresses berth's resolver listens on (port 53): the gateways of every served network.
pub fn listen_addrs(networks: &[NetworkSpec]) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = networks
        .iter()
        .filter(|n| listens_on(n))
        .flat_map(|n| n.subnets.iter().map(|s| s.gateway))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The nameserver to write into `container`'s resolv.conf: the gateway of the bridge network
/// that gives its default route when berth serves that network, else of its first served
/// bridge network (an `--internal` network gives no default route but still has names). IPv4
/// when the container has an IPv4 address there, else IPv6. Else [`LOCAL_RESOLVER`] when it is
/// on a macvlan or ipvlan network; `None`: the container is on no served network and gets the
/// host's nameservers.
///
/// A container on a bridge network and a macvlan network asks the bridge's gateway: that
/// resolver already answers the names of all of the container's networks (scoping is per
/// container, not per network), so one path serves it, as it did before it joined the macvlan
/// network, and no socket is opened inside its namespace. Should it leave its last bridge
/// network, its resolv.conf is rewritten to [`LOCAL_RESOLVER`], and the other way round.
pub fn embedded_server(container: &ContainerSpec, networks: &[NetworkSpec]) -> Option<IpAddr> {
    embedded_gateway(container, networks).or_else(|| {
        container
            .endpoints
            .iter()
            .any(|e| {
                networks
                    .iter()
                    .any(|n| n.id == e.network_id && serves(n) && !listens_on(n))
            })
            .then_some(IpAddr::V4(LOCAL_RESOLVER))
    })
}

/// Whether berth must open [`LOCAL_RESOLVER`] inside `container`'s namespace.
pub fn needs_local_resolver(container: &ContainerSpec, networks: &[NetworkSpec]) -> bool {
    embedded_server(container, networks) == Some(IpAddr::V4(LOCAL_RESOLVER))
}

/// The bridge-network gateway `container` asks, if any (see [`embedded_server`]).
fn embedded_gateway(container: &ContainerSpec, networks: &[NetworkSpec]) -> Option<IpAddr> {
    let served = |network_id: &str| {
        networks
            .iter()
            .find(|n| n.id == network_id)
            .filter(|n| listens_on(n))
    };
    let gw =
        planner::gateway_endpoint(container, networks).filter(|e| served(&e.network_id).is_some());
    let ep = gw.or_else(|| {
        container
            .endpoints
            .iter()
            .find(|e| served(&e.network_id).is_some())
    })?;
    let net = served(&ep.network_id)?;
    for want_v4 in [true, false] {
        if !ep.addrs.iter().any(|a| a.addr().is_ipv4() == want_v4) {
            continue;
        }
        if let Some(s) = net.subnets.iter().find(|s| s.gateway.is_ipv4() == want_v4) {
            return Some(s.gateway);
        }
    }
    None
}

fn push_wire_name(out: &mut Vec<u8>, dotted: &str) {
    for label in dotted.split('.').filter(|l| !l.is_empty()) {
        let bytes = &label.as_bytes()[..label.len().min(63)];
        // Lengths are ≤ 63 by the slice above.
        out.push(bytes.len() as u8);
        out.extend_from_slice(bytes);
    }
    out.push(0);
}

impl Table {
    /// Builds the table. `containers` pairs every stored container with whether it is running:
    /// only running containers are answered, but every stored one may ask (a container's first
    /// query can come before its state says `running`). Where containers share a name or an
    /// address, the answers list them in id order, whatever the order given.
    pub fn build<C: std::borrow::Borrow<ContainerSpec>>(
        networks: &[NetworkSpec],
        containers: &[(C, bool)],
    ) -> Table {
        let mut t = Table::new(networks);
        for (c, running) in containers {
            t.insert(c.borrow(), *running);
        }
        t
    }

    /// A table of `networks` without containers.
    pub fn new(networks: &[NetworkSpec]) -> Table {
        let mut t = Table {
            networks: networks.into(),
            listen: listen_addrs(networks),
            ..Table::default()
        };
        for n in networks.iter().filter(|n| serves(n)) {
            t.nets.push(NetNames::default());
            t.net_ids.push(n.id.clone());
        }
        t
    }

    /// The networks the table was made for.
    pub fn networks(&self) -> &[NetworkSpec] {
        &self.networks
    }

    /// Puts container `c` in the table (in place of what its id had), answered for when
    /// `running`. Costs what `c`'s own names cost, whatever the number of containers.
    pub fn insert(&mut self, c: &ContainerSpec, running: bool) {
        self.remove(&c.id);
        let owner: Arc<str> = c.id.as_str().into();
        let networks = self.networks.clone();
        let mut m = Member {
            asker: Asker {
                name: c.name.clone(),
                nets: Vec::new(),
                forward: false,
                servers: c.dns.clone(),
                links: Vec::new(),
            },
            names: Vec::new(),
            ptrs: Vec::new(),
            addrs: Vec::new(),
        };
        for ep in &c.endpoints {
            let Some(net) = networks.iter().find(|n| n.id == ep.network_id) else {
                continue;
            };
            m.asker.forward |= !net.internal;
            let Some(ni) = self.net_ids.iter().position(|id| *id == net.id) else {
                continue;
            };
            let ni = ni as u32;
            if !m.asker.nets.contains(&ni) {
                m.asker.nets.push(ni);
            }
            for l in &ep.links {
                // Checked when the endpoint was planned; a hand-edited store's bad link
                // is left out rather than failing every answer.
                let Ok((name, alias)) = crate::network::parse_link(l) else {
                    continue;
                };
                let lower = |s: &str| -> Box<[u8]> {
                    s.trim_end_matches('.')
                        .to_ascii_lowercase()
                        .into_bytes()
                        .into()
                };
                m.asker.links.push(LinkAlias {
                    net: ni,
                    alias: lower(&alias),
                    dotted: lower(&format!("{alias}.{}", net.name)),
                    target: lower(&name),
                });
            }
            if !running {
                continue;
            }
            let (mut v4, mut v6) = (Vec::new(), Vec::new());
            for a in &ep.addrs {
                match a.addr() {
                    IpAddr::V4(a) => v4.push(a),
                    IpAddr::V6(a) => v6.push(a),
                }
            }
            let table = &mut self.nets[ni as usize];
            for k in names_of(c, ep, net) {
                let key: Box<[u8]> = k.into_bytes().into();
                table.names.entry(key.clone()).add(&owner, &v4, &v6);
                if !m.names.contains(&(ni, key.clone())) {
                    m.names.push((ni, key));
                }
            }
            let mut wire = Vec::new();
            push_wire_name(&mut wire, &format!("{}.{}", c.name, net.name));
            let wire: Box<[u8]> = wire.into();
            for a in &ep.addrs {
                claim(table.ptr.entry(a.addr()), &owner, wire.clone());
                if !m.ptrs.contains(&(ni, a.addr())) {
                    m.ptrs.push((ni, a.addr()));
                }
            }
        }
        for ep in &c.endpoints {
            for a in &ep.addrs {
                if !m.addrs.contains(&a.addr()) {
                    m.addrs.push(a.addr());
                }
            }
        }
        if needs_local_resolver(c, &networks) {
            if let Err(i) = self.local.binary_search(&c.id) {
                self.local.insert(i, c.id.clone());
            }
        }
        let m = Arc::new(m);
        for a in &m.addrs {
            claim(self.askers.entry(*a), &owner, m.clone());
        }
        self.by_id.insert(c.id.clone(), m);
    }

    /// Takes container `id` out of the table (its names, addresses and asker); false if it
    /// was not in it.
    pub fn remove(&mut self, id: &str) -> bool {
        let Some(m) = self.by_id.remove(id) else {
            return false;
        };
        for (ni, key) in &m.names {
            self.nets[*ni as usize]
                .names
                .update(&**key, |a| a.remove(id));
        }
        for (ni, addr) in &m.ptrs {
            self.nets[*ni as usize].ptr.update(addr, |c| unclaim(c, id));
        }
        for addr in &m.addrs {
            self.askers.update(addr, |c| unclaim(c, id));
        }
        if let Ok(i) = self.local.binary_search_by(|l| l.as_str().cmp(id)) {
            self.local.remove(i);
        }
        true
    }

    /// Puts the other hosts' changed containers in (their stand-ins, answered for) or takes
    /// them out (`None`), as [`crate::remotes::RemoteCache::take_dns`] hands them out; ids
    /// for which `local` holds are skipped (this host's own containers, which its store
    /// answers: a stand-in never replaces one). Returns whether anything changed. Costs what
    /// those containers' own names cost, whatever the size of the cluster.
    pub fn apply_remote(
        &mut self,
        changes: &[(String, Option<ContainerSpec>)],
        local: impl Fn(&str) -> bool,
    ) -> bool {
        let mut changed = false;
        for (id, c) in changes {
            if local(id) {
                continue;
            }
            match c {
                Some(c) => {
                    self.insert(c, true);
                    changed = true;
                }
                None => changed |= self.remove(id),
            }
        }
        changed
    }

    /// The addresses to listen on (gateways of served networks).
    pub fn listen(&self) -> &[IpAddr] {
        &self.listen
    }

    /// Whether `addr` is one of berth's own listening addresses (never forward to those: a
    /// host resolv.conf naming one would make a loop).
    pub fn is_listen(&self, addr: IpAddr) -> bool {
        self.listen.contains(&addr)
    }

    /// The container that owns source address `src`, if any.
    pub fn asker(&self, src: IpAddr) -> Option<&Asker> {
        let (_, m) = self.askers.get(&canonical(src))?.first()?;
        Some(&m.asker)
    }

    /// The stored container with id `id`, as an asker of its in-namespace resolver.
    pub fn asker_by_id(&self, id: &str) -> Option<&Asker> {
        self.by_id.get(id).map(|m| &m.asker)
    }

    /// The containers whose resolver is [`LOCAL_RESOLVER`] in their own namespace (stored
    /// ones, running or not: the daemon opens it for those that run).
    pub fn local(&self) -> &[String] {
        &self.local
    }

    /// Number of served networks.
    pub fn network_count(&self) -> usize {
        self.nets.len()
    }

    /// The addresses of `name` (any case, trailing dot optional) as seen by the container at
    /// `src`: `None` when the name is not local for it. For tests and tools; the hot path is
    /// [`handle`].
    pub fn resolve(&self, src: IpAddr, name: &str) -> Option<(Vec<Ipv4Addr>, Vec<Ipv6Addr>)> {
        let asker = self.asker(src)?;
        let key = name.trim_end_matches('.').to_ascii_lowercase();
        self.lookup(asker, key.as_bytes())
            .map(|(v4, v6)| (v4.to_vec(), v6.to_vec()))
    }

    /// The addresses of lowercase `key` for `asker`, as moby's `Sandbox.ResolveName` finds
    /// them: first its links (the first whose alias is `key` and whose target is answered on
    /// the link's network), then the names of its networks in endpoint order (the first network
    /// with records of each family wins), skipping a network where `key` is one of its link
    /// aliases (an alias there means the link, even when the linked container is not running).
    fn lookup<'t>(&'t self, asker: &Asker, key: &[u8]) -> Option<(&'t [Ipv4Addr], &'t [Ipv6Addr])> {
        for l in &asker.links {
            if *l.alias != *key && *l.dotted != *key {
                continue;
            }
            if let Some(a) = self.nets[l.net as usize].names.get(&*l.target) {
                return Some((&a.v4, &a.v6));
            }
        }
        let mut found = false;
        let mut v4: &[Ipv4Addr] = &[];
        let mut v6: &[Ipv6Addr] = &[];
        for &ni in &asker.nets {
            if asker.links.iter().any(|l| l.net == ni && *l.alias == *key) {
                continue;
            }
            if let Some(a) = self.nets[ni as usize].names.get(key) {
                found = true;
                if v4.is_empty() {
                    v4 = &a.v4;
                }
                if v6.is_empty() {
                    v6 = &a.v6;
                }
            }
        }
        found.then_some((v4, v6))
    }
}

/// IPv4-mapped IPv6 sources (a dual-stack socket) are their IPv4 address.
fn canonical(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(a),
        v4 => v4,
    }
}

// ---------------------------------------------------------------------------------------- wire

/// How a message reached the resolver (decides the size limit of the answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP: 512 bytes, or the client's EDNS size (capped at [`UDP_EDNS_MAX`]).
    Udp,
    /// TCP: up to 65535 bytes.
    Tcp,
}

/// Where a forwarded query goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream<'t> {
    /// The host's resolvers (its resolv.conf), from berthd's namespace.
    Host,
    /// The container's own `--dns` servers.
    Servers(&'t [IpAddr]),
}

/// What to do with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action<'t> {
    /// `out` holds an answer from the table (NOERROR, possibly without records).
    Answered {
        /// The answer did not fit and was truncated (TC set): the client retries over TCP.
        truncated: bool,
    },
    /// `out` holds an error answer berth made itself (FORMERR, NOTIMP, REFUSED).
    Error(Rcode),
    /// Not a local name: relay the query unchanged to these upstreams.
    Forward(Upstream<'t>),
    /// Not worth an answer (too short to have an id, or itself a response): drop it.
    Drop,
}

/// A parsed question (only what the resolver needs).
struct Query {
    id: u16,
    flags: u16,
    /// End of the question section: `msg[12..qend]` is echoed in answers.
    qend: usize,
    qtype: u16,
    qclass: u16,
    /// Client's EDNS UDP payload size, when it sent an OPT record.
    edns: Option<u16>,
    /// Lowercase dotted name without the trailing dot.
    key: [u8; MAX_WIRE_NAME],
    key_len: usize,
    /// False when a label contains a dot (or other bytes that cannot match a local name).
    key_ok: bool,
}

enum ParseError {
    Drop,
    Reply(Rcode),
}

fn be16(msg: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*msg.get(at)?, *msg.get(at + 1)?]))
}

/// Skips a possibly compressed name in a resource record; returns the offset after it.
fn skip_name(msg: &[u8], mut at: usize) -> Option<usize> {
    // A name has at most 127 labels; bound the loop anyway.
    for _ in 0..128 {
        let len = *msg.get(at)?;
        match len & 0xC0 {
            0x00 if len == 0 => return Some(at + 1),
            0x00 => at += 1 + usize::from(len),
            0xC0 => return (at + 2 <= msg.len()).then_some(at + 2),
            _ => return None,
        }
    }
    None
}

fn parse(msg: &[u8]) -> Result<Query, ParseError> {
    if msg.len() < HEADER_LEN {
        return Err(ParseError::Drop);
    }
    let id = be16(msg, 0).ok_or(ParseError::Drop)?;
    let flags = be16(msg, 2).ok_or(ParseError::Drop)?;
    if flags & FLAG_QR != 0 {
        // Never answer a response: two resolvers could otherwise bounce messages forever.
        return Err(ParseError::Drop);
    }
    if flags & OPCODE_MASK != 0 {
        return Err(ParseError::Reply(Rcode::NotImp));
    }
    let form = || ParseError::Reply(Rcode::FormErr);
    let qd = be16(msg, 4).ok_or_else(form)?;
    let an = be16(msg, 6).ok_or_else(form)?;
    let ns = be16(msg, 8).ok_or_else(form)?;
    let ar = be16(msg, 10).ok_or_else(form)?;
    if qd != 1 {
        return Err(form());
    }
    let mut q = Query {
        id,
        flags,
        qend: 0,
        qtype: 0,
        qclass: 0,
        edns: None,
        key: [0; MAX_WIRE_NAME],
        key_len: 0,
        key_ok: true,
    };
    // The question name: plain labels only (no compression in a question), ≤ 255 bytes.
    let mut at = HEADER_LEN;
    loop {
        let len = usize::from(*msg.get(at).ok_or_else(form)?);
        if len == 0 {
            at += 1;
            break;
        }
        if len & 0xC0 != 0 {
            return Err(form());
        }
        let label = msg.get(at + 1..at + 1 + len).ok_or_else(form)?;
        if at + 1 + len - HEADER_LEN >= MAX_WIRE_NAME {
            return Err(form());
        }
        if q.key_len > 0 {
            q.key[q.key_len] = b'.';
            q.key_len += 1;
        }
        for &b in label {
            if b == b'.' {
                q.key_ok = false;
            }
            q.key[q.key_len] = b.to_ascii_lowercase();
            q.key_len += 1;
        }
        at += 1 + len;
    }
    q.qtype = be16(msg, at).ok_or_else(form)?;
    q.qclass = be16(msg, at + 2).ok_or_else(form)?;
    at += 4;
    q.qend = at;
    // Answer and authority records (unusual in a query) are skipped to reach the OPT record.
    for _ in 0..(u32::from(an) + u32::from(ns)) {
        at = skip_name(msg, at).ok_or_else(form)?;
        let rdlen = usize::from(be16(msg, at + 8).ok_or_else(form)?);
        at += 10 + rdlen;
        if at > msg.len() {
            return Err(form());
        }
    }
    for _ in 0..ar {
        let name_start = at;
        at = skip_name(msg, at).ok_or_else(form)?;
        let rtype = be16(msg, at).ok_or_else(form)?;
        let class = be16(msg, at + 2).ok_or_else(form)?;
        let rdlen = usize::from(be16(msg, at + 8).ok_or_else(form)?);
        at += 10 + rdlen;
        if at > msg.len() {
            return Err(form());
        }
        if rtype == qtype::OPT {
            // RFC 6891: one OPT, owned by the root name.
            if q.edns.is_some() || at - rdlen - 10 != name_start + 1 {
                return Err(form());
            }
            q.edns = Some(class);
        }
    }
    Ok(q)
}

impl Query {
    fn key(&self) -> &[u8] {
        &self.key[..self.key_len]
    }

    fn limit(&self, transport: Transport) -> usize {
        match transport {
            Transport::Tcp => usize::from(u16::MAX),
            Transport::Udp => match self.edns {
                Some(size) => usize::from(size).clamp(UDP_PLAIN_MAX, UDP_EDNS_MAX),
                None => UDP_PLAIN_MAX,
            },
        }
    }
}

/// Writes the header and the echoed question; answers follow.
fn begin(out: &mut Vec<u8>, msg: &[u8], q: &Query, rcode: Rcode, aa: bool) {
    out.clear();
    let mut flags = FLAG_QR | (q.flags & (OPCODE_MASK | FLAG_RD | FLAG_CD)) | FLAG_RA;
    if aa {
        flags |= FLAG_AA;
    }
    flags |= rcode as u16;
    out.extend_from_slice(&q.id.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&msg[HEADER_LEN..q.qend]);
}

/// Appends the OPT record (when the client sent one) and fixes the counts.
fn finish(out: &mut Vec<u8>, q: &Query, answers: u16) {
    out[6..8].copy_from_slice(&answers.to_be_bytes());
    if q.edns.is_some() {
        out.extend_from_slice(&[0, 0, 41]);
        out.extend_from_slice(&EDNS_ADVERTISED.to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        out[10..12].copy_from_slice(&1u16.to_be_bytes());
    }
}

fn push_rr(out: &mut Vec<u8>, rtype: u16, rdata: &[u8]) {
    // The owner is the question name: a compression pointer to offset 12.
    out.extend_from_slice(&[0xC0, 0x0C]);
    out.extend_from_slice(&rtype.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out.extend_from_slice(&TTL.to_be_bytes());
    out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    out.extend_from_slice(rdata);
}

/// Writes an error answer for `msg` (header, question when it parses, OPT when asked for).
/// Returns false when `msg` deserves no answer at all.
pub fn error_reply(msg: &[u8], rcode: Rcode, out: &mut Vec<u8>) -> bool {
    match parse(msg) {
        Ok(q) => {
            begin(out, msg, &q, rcode, false);
            finish(out, &q, 0);
            true
        }
        Err(ParseError::Drop) => false,
        Err(ParseError::Reply(_)) => {
            header_only(msg, rcode, out);
            true
        }
    }
}

/// An answer with no question section (for messages whose question cannot be parsed).
fn header_only(msg: &[u8], rcode: Rcode, out: &mut Vec<u8>) {
    out.clear();
    let flags = be16(msg, 2).unwrap_or(0);
    let flags = FLAG_QR | (flags & (OPCODE_MASK | FLAG_RD | FLAG_CD)) | FLAG_RA | rcode as u16;
    out.extend_from_slice(&msg[..2]);
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&[0; 8]);
}

/// Parses `d.c.b.a.in-addr.arpa` / the 32-nibble `ip6.arpa` form.
fn reverse_addr(key: &[u8]) -> Option<IpAddr> {
    if let Some(head) = key.strip_suffix(b".in-addr.arpa") {
        let mut octets = [0u8; 4];
        let mut n = 0;
        for part in head.split(|&b| b == b'.') {
            if n == 4 || part.is_empty() || part.len() > 3 || !part.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let v = part
                .iter()
                .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'));
            octets[3 - n] = u8::try_from(v).ok()?;
            n += 1;
        }
        return (n == 4).then(|| IpAddr::V4(Ipv4Addr::from(octets)));
    }
    if let Some(head) = key.strip_suffix(b".ip6.arpa") {
        if head.len() != 63 {
            return None;
        }
        let mut value: u128 = 0;
        for (i, part) in head.split(|&b| b == b'.').enumerate() {
            if i >= 32 || part.len() != 1 {
                return None;
            }
            let nib = char::from(part[0]).to_digit(16)?;
            value |= u128::from(nib) << (4 * i);
        }
        return Some(IpAddr::V6(Ipv6Addr::from(value)));
    }
    None
}

/// Handles one message from `src` against `table`: writes the answer into `out` (reused across
/// calls) or says where to forward it. `rotate` varies the order of multi-address answers
/// (pass a counter). Never panics, whatever the bytes.
pub fn handle<'t>(
    table: &'t Table,
    src: IpAddr,
    msg: &[u8],
    transport: Transport,
    rotate: usize,
    out: &mut Vec<u8>,
) -> Action<'t> {
    handle_as(table, table.asker(src), msg, transport, rotate, out)
}

/// [`handle`] for an asker already known (the in-namespace resolver knows whose namespace a
/// query came from; its source address is a loopback one). `None`: unknown asker, refused.
pub fn handle_as<'t>(
    table: &'t Table,
    asker: Option<&'t Asker>,
    msg: &[u8],
    transport: Transport,
    rotate: usize,
    out: &mut Vec<u8>,
) -> Action<'t> {
    let q = match parse(msg) {
        Ok(q) => q,
        Err(ParseError::Drop) => return Action::Drop,
        Err(ParseError::Reply(rcode)) => {
            header_only(msg, rcode, out);
            return Action::Error(rcode);
        }
    };
    let Some(asker) = asker else {
        begin(out, msg, &q, Rcode::Refused, false);
        finish(out, &q, 0);
        return Action::Error(Rcode::Refused);
    };
    if q.qclass == CLASS_IN && q.key_ok && q.key_len > 0 {
        if let Some(action) = answer_local(table, asker, msg, &q, transport, rotate, out) {
            return action;
        }
    }
    if !asker.forward {
        begin(out, msg, &q, Rcode::Refused, false);
        finish(out, &q, 0);
        return Action::Error(Rcode::Refused);
    }
    if asker.servers.is_empty() {
        Action::Forward(Upstream::Host)
    } else {
        Action::Forward(Upstream::Servers(&asker.servers))
    }
}

/// Answers from the table when the name is local for `asker`; `None` otherwise.
fn answer_local<'t>(
    table: &'t Table,
    asker: &Asker,
    msg: &[u8],
    q: &Query,
    transport: Transport,
    rotate: usize,
    out: &mut Vec<u8>,
) -> Option<Action<'t>> {
    let key = q.key();
    if key.ends_with(b".arpa") {
        let addr = reverse_addr(key)?;
        let name = asker
            .nets
            .iter()
            .find_map(|&ni| table.nets[ni as usize].ptr.get(&addr)?.first())
            .map(|(_, wire)| wire)?;
        begin(out, msg, q, Rcode::NoError, true);
        let mut n = 0;
        if matches!(q.qtype, qtype::PTR | qtype::ANY) {
            push_rr(out, qtype::PTR, name);
            n = 1;
        }
        return Some(seal(out, msg, q, n, transport));
    }
    let (v4, v6) = table.lookup(asker, key)?;
    let want4 = matches!(q.qtype, qtype::A | qtype::ANY);
    let want6 = matches!(q.qtype, qtype::AAAA | qtype::ANY);
    begin(out, msg, q, Rcode::NoError, true);
    let mut n: usize = 0;
    if want4 {
        for i in 0..v4.len() {
            push_rr(out, qtype::A, &v4[(i + rotate) % v4.len()].octets());
            n += 1;
        }
    }
    if want6 {
        for i in 0..v6.len() {
            push_rr(out, qtype::AAAA, &v6[(i + rotate) % v6.len()].octets());
            n += 1;
        }
    }
    Some(seal(
        out,
        msg,
        q,
        u16::try_from(n).unwrap_or(u16::MAX),
        transport,
    ))
}

/// Finishes an answer, truncating it (no records, TC set) when it exceeds the transport's limit.
fn seal<'t>(out: &mut Vec<u8>, msg: &[u8], q: &Query, n: u16, transport: Transport) -> Action<'t> {
    finish(out, q, n);
    if out.len() <= q.limit(transport) {
        return Action::Answered { truncated: false };
    }
    begin(out, msg, q, Rcode::NoError, true);
    let flags = be16(out, 2).unwrap_or(0) | FLAG_TC;
    out[2..4].copy_from_slice(&flags.to_be_bytes());
    finish(out, q, 0);
    Action::Answered { truncated: true }
}

/// The question section of a message (`None` when it has not exactly one well-formed
/// question). Lets the daemon check that an upstream's answer is for the query it relayed.
pub fn question(msg: &[u8]) -> Option<&[u8]> {
    if be16(msg, 4)? != 1 {
        return None;
    }
    let end = skip_name(msg, HEADER_LEN)? + 4;
    msg.get(HEADER_LEN..end)
}

/// Builds a standard query (RD set, one question, optional EDNS OPT with `edns` as the UDP
/// size). For tests and tools.
pub fn build_query(id: u16, name: &str, qtype: u16, edns: Option<u16>) -> Vec<u8> {
    let mut m = Vec::with_capacity(64);
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&FLAG_RD.to_be_bytes());
    m.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, u8::from(edns.is_some())]);
    push_wire_name(&mut m, name);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&CLASS_IN.to_be_bytes());
    if let Some(size) = edns {
        m.extend_from_slice(&[0, 0, 41]);
        m.extend_from_slice(&size.to_be_bytes());
        m.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    }
    m
}

/// A decoded answer (for tests and tools): rcode, flags and the answer records' data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decoded {
    /// Message id.
    pub id: u16,
    /// Response code.
    pub rcode: u8,
    /// Authoritative answer.
    pub aa: bool,
    /// Truncated.
    pub tc: bool,
    /// A/AAAA addresses in answer order.
    pub addrs: Vec<IpAddr>,
    /// PTR targets, dotted with a trailing dot.
    pub ptrs: Vec<String>,
    /// TTLs of the answer records.
    pub ttls: Vec<u32>,
    /// An OPT record was present.
    pub edns: bool,
}

/// Decodes an answer (lenient; `None` when it is not a well-formed response).
pub fn decode(msg: &[u8]) -> Option<Decoded> {
    let flags = be16(msg, 2)?;
    let mut d = Decoded {
        id: be16(msg, 0)?,
        rcode: (flags & 0xF) as u8,
        aa: flags & FLAG_AA != 0,
        tc: flags & FLAG_TC != 0,
        ..Decoded::default()
    };
    if flags & FLAG_QR == 0 {
        return None;
    }
    let qd = be16(msg, 4)?;
    let an = be16(msg, 6)?;
    let ns = be16(msg, 8)?;
    let ar = be16(msg, 10)?;
    let mut at = HEADER_LEN;
    for _ in 0..qd {
        at = skip_name(msg, at)? + 4;
    }
    for i in 0..(u32::from(an) + u32::from(ns) + u32::from(ar)) {
        at = skip_name(msg, at)?;
        let rtype = be16(msg, at)?;
        let ttl = u32::from(be16(msg, at + 4)?) << 16 | u32::from(be16(msg, at + 6)?);
        let rdlen = usize::from(be16(msg, at + 8)?);
        let rdata = msg.get(at + 10..at + 10 + rdlen)?;
        if i < u32::from(an) {
            d.ttls.push(ttl);
            match (rtype, rdata.len()) {
                (qtype::A, 4) => d.addrs.push(IpAddr::from(<[u8; 4]>::try_from(rdata).ok()?)),
                (qtype::AAAA, 16) => d
                    .addrs
                    .push(IpAddr::from(<[u8; 16]>::try_from(rdata).ok()?)),
                (qtype::PTR, _) => d.ptrs.push(read_name(msg, at + 10)?),
                _ => {}
            }
        }
        if rtype == qtype::OPT {
            d.edns = true;
        }
        at += 10 + rdlen;
    }
    Some(d)
}

/// Reads a (possibly compressed) name as dotted text with a trailing dot.
fn read_name(msg: &[u8], mut at: usize) -> Option<String> {
    let mut out = String::new();
    for _ in 0..128 {
        let len = *msg.get(at)?;
        match len & 0xC0 {
            0x00 if len == 0 => return Some(if out.is_empty() { ".".into() } else { out }),
            0x00 => {
                let label = msg.get(at + 1..at + 1 + usize::from(len))?;
                out.push_str(&String::from_utf8_lossy(label));
                out.push('.');
                at += 1 + usize::from(len);
            }
            0xC0 => at = usize::from(be16(msg, at)? & 0x3FFF),
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests fail loudly on purpose.
mod tests {
    use super::*;
    use crate::model::{EndpointSpec, NetworkMode, SubnetSpec};
    use std::collections::BTreeMap;

    /// The keys a table holds at 1,000 containers — consecutive addresses of two /22s, names
    /// in both byte forms the table stores — spread over every shard, none holding more than
    /// about twice its share: a change copies 1/64 of the map, not most of it. (Before stop
    /// 28 the addresses all fell into one shard and the names into four.)
    #[test]
    fn sharded_keys_spread_over_every_shard() {
        fn spread<K: Hash>(keys: impl Iterator<Item = K>) -> (usize, usize) {
            let mut count = [0usize; SHARDS];
            for k in keys {
                count[shard_of(&k)] += 1;
            }
            (
                count.iter().filter(|&&c| c > 0).count(),
                count.iter().copied().max().unwrap_or(0),
            )
        }
        let addrs = (0u32..1000).map(|i| {
            let base = if i < 500 {
                0x0a60_0002
            } else {
                0x0a64_0002 - 500
            };
            IpAddr::V4(Ipv4Addr::from(base + i))
        });
        let names = (0..1000).map(|i| format!("web-{i}").into_bytes().into_boxed_slice());
        let ids = (0u64..1000).map(|i| format!("{:064x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
        // 1,000 keys over 64 shards: 15.6 each on average.
        for (what, (used, max)) in [
            ("addresses", spread(addrs)),
            ("names", spread(names)),
            ("ids", spread(ids)),
        ] {
            assert_eq!(used, SHARDS, "{what}: only {used} shards used");
            assert!(max <= 32, "{what}: one shard holds {max} of 1,000 keys");
        }
    }

    fn net(id: &str, name: &str, subnet: &str, gw: &str, internal: bool) -> NetworkSpec {
        let mut subnets = vec![SubnetSpec {
            subnet: subnet.parse().unwrap(),
            gateway: gw.parse().unwrap(),
            ip_range: None,
            aux_addresses: Default::default(),
        }];
        if subnet.starts_with("10.3.") {
            subnets.push(SubnetSpec {
                subnet: "fd03::/64".parse().unwrap(),
                gateway: "fd03::1".parse().unwrap(),
                ip_range: None,
                aux_addresses: Default::default(),
            });
        }
        NetworkSpec {
            id: id.into(),
            name: name.into(),
            driver: crate::model::Driver::Bridge,
            created: "t".into(),
            enable_ipv6: subnets.len() > 1,
            subnets,
            internal,
            attachable: false,
            labels: BTreeMap::new(),
            options: BTreeMap::new(),
            adopted_addrs: Vec::new(),
            shim_src: None,
            overlay: None,
            owned_parent: None,
            bridge: format!("br-{id}"),
            icc: true,
            masquerade: !internal,
            mtu: 1500,
            dns: true,
            predefined: false,
            ipam_options: None,
            unused_ipam: Vec::new(),
        }
    }

    fn ctr(id_char: char, name: &str, eps: &[(&str, &[&str], &[&str])]) -> ContainerSpec {
        ContainerSpec {
            id: id_char.to_string().repeat(64),
            name: name.into(),
            hostname: name.into(),
            created: "t".into(),
            cmd: vec![],
            env: vec![],
            mode: NetworkMode::Networks,
            endpoints: eps
                .iter()
                .enumerate()
                .map(|(i, (net, addrs, aliases))| EndpointSpec {
                    id: format!("{id_char}{i}"),
                    network_id: (*net).into(),
                    host_ifname: format!("vb{i}"),
                    ifname: format!("eth{i}"),
                    mac: String::new(),
                    addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
                    static_ipv4: None,
                    static_ipv6: None,
                    aliases: aliases.iter().map(|s| s.to_string()).collect(),
                    gw_priority: 0,
                    driver_opts: Default::default(),
                    links: Vec::new(),
                    link_local_ips: Vec::new(),
                    reused_mac: false,
                })
                .collect(),
            dns: vec![],
            dns_search: vec![],
            dns_options: vec![],
            extra_hosts: vec![],
            rootfs: None,
            auto_remove: false,
            security: Default::default(),
            stdio: Default::default(),
            process: Default::default(),
            restart: Default::default(),
            legacy_links: Vec::new(),
        }
    }

    /// Three networks: a (10.1/24), b (10.2/24, internal), c (10.3/24 + fd03::/64).
    /// x: a; y: a+b (alias "db" on a); z: b; w: c (dual-stack, alias "db" too); v: a, stopped;
    /// u: a with alias "db" (so "db" on a has two addresses).
    fn world() -> (Vec<NetworkSpec>, Vec<(ContainerSpec, bool)>) {
        let nets = vec![
            net("a", "neta", "10.1.0.0/24", "10.1.0.1", false),
            net("b", "netb", "10.2.0.0/24", "10.2.0.1", true),
            net("c", "netc", "10.3.0.0/24", "10.3.0.1", false),
        ];
        let cs = vec![
            (ctr('1', "x", &[("a", &["10.1.0.2/24"], &[])]), true),
            (
                ctr(
                    '2',
                    "y",
                    &[
                        ("a", &["10.1.0.3/24"], &["DB"]),
                        ("b", &["10.2.0.3/24"], &[]),
                    ],
                ),
                true,
            ),
            (ctr('3', "z", &[("b", &["10.2.0.4/24"], &[])]), true),
            (
                ctr('4', "w", &[("c", &["10.3.0.2/24", "fd03::2/64"], &["db"])]),
                true,
            ),
            (ctr('5', "v", &[("a", &["10.1.0.9/24"], &[])]), false),
            (ctr('6', "u", &[("a", &["10.1.0.6/24"], &["db"])]), true),
        ];
        (nets, cs)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn ask(t: &Table, src: &str, name: &str, qt: u16) -> (Action<'static>, Decoded) {
        let mut out = Vec::new();
        let q = build_query(0x1234, name, qt, None);
        let a = detach(handle(t, ip(src), &q, Transport::Udp, 0, &mut out));
        let d = decode(&out).unwrap_or_default();
        (a, d)
    }

    #[test]
    fn names_and_aliases_case_insensitive() {
        let (n, c) = world();
        let t = Table::build(&n, &c);
        let (a, d) = ask(&t, "10.1.0.2", "Y", qtype::A);
        assert_eq!(a, Action::Answered { truncated: false });
        assert_eq!(d.addrs, vec![ip("10.1.0.3")]);
        assert!(d.aa);
        assert_eq!(d.ttls, vec![TTL]);
        assert_eq!(d.id, 0x1234);
        // Short id, NAME.NETWORK, trailing dot.
        assert_eq!(
            ask(&t, "10.1.0.2", "222222222222", qtype::A).1.addrs,
            vec![ip("10.1.0.3")]
        );
        assert_eq!(
            ask(&t, "10.1.0.2", "y.NETA.", qtype::A).1.addrs,
            vec![ip("10.1.0.3")]
        );
        // The alias "db" on a is y and u (w's "db" is on c, which x is not on).
        let mut got = ask(&t, "10.1.0.2", "db", qtype::A).1.addrs;
        got.sort();
        assert_eq!(got, vec![ip("10.1.0.3"), ip("10.1.0.6")]);
        assert_eq!(t.resolve(ip("10.1.0.2"), "DB.").unwrap().0.len(), 2);
    }

    /// Endpoint links (moby's endpoint aliases): the alias answers the linked container's
    /// address on the link's network only to the linking container, `ALIAS.NETWORK` too; a
    /// link to a container that is not running (or not there) answers nothing and shadows a
    /// container of that name on the link's network; the link never leaks to other askers.
    #[test]
    fn links_scoped_to_the_linking_container() {
        let (n, mut c) = world();
        // x links y as "bar" and v (stopped) as "u" (a running container's name) on a; w
        // links y as "far" on c, where y is not.
        c[0].0.endpoints[0].links = vec!["y:bar".into(), "v:u".into()];
        c[3].0.endpoints[0].links = vec!["y:far".into()];
        let t = Table::build(&n, &c);
        let x = "10.1.0.2";
        assert_eq!(ask(&t, x, "bar", qtype::A).1.addrs, vec![ip("10.1.0.3")]);
        assert_eq!(
            ask(&t, x, "BAR.neta.", qtype::A).1.addrs,
            vec![ip("10.1.0.3")]
        );
        // The link's name resolves as before (it is y's name on a).
        assert_eq!(ask(&t, x, "y", qtype::A).1.addrs, vec![ip("10.1.0.3")]);
        // Other askers on the same network: not theirs, forwarded like any unknown name.
        let (a, _) = ask(&t, "10.1.0.6", "bar", qtype::A);
        assert_eq!(a, Action::Forward(Upstream::Host));
        assert!(t.resolve(ip("10.1.0.3"), "bar").is_none());
        // "u" is x's link to the stopped v: it shadows the running container u on a.
        let (a, _) = ask(&t, x, "u", qtype::A);
        assert_eq!(a, Action::Forward(Upstream::Host));
        assert_eq!(
            ask(&t, "10.1.0.3", "u", qtype::A).1.addrs,
            vec![ip("10.1.0.6")]
        );
        // A link whose target is not on the link's network answers nothing.
        let (a, _) = ask(&t, "10.3.0.2", "far", qtype::A);
        assert_eq!(a, Action::Forward(Upstream::Host));
        // v runs: the link answers it at once (the table is rebuilt after every change).
        c[4].1 = true;
        let t = Table::build(&n, &c);
        assert_eq!(ask(&t, x, "u", qtype::A).1.addrs, vec![ip("10.1.0.9")]);
        // y stops: "bar" stops answering.
        c[1].1 = false;
        let t = Table::build(&n, &c);
        assert!(t.resolve(ip(x), "bar").is_none());
    }

    #[test]
    fn rotation() {
        let (n, c) = world();
        let t = Table::build(&n, &c);
        let mut out = Vec::new();
        let q = build_query(1, "db", qtype::A, None);
        let mut firsts = Vec::new();
        for r in 0..2 {
            handle(&t, ip("10.1.0.2"), &q, Transport::Udp, r, &mut out);
            firsts.push(decode(&out).unwrap().addrs[0]);
        }
        assert_ne!(firsts[0], firsts[1]);
    }

    /// The table changed one container at a time is the table built from scratch from the
    /// same containers, after every kind of change (start, stop, a changed spec, removal,
    /// a re-insert), whatever the order they came in.
    #[test]
    fn per_container_changes_match_a_full_build() {
        let (n, c) = world();
        let mut now: BTreeMap<String, (ContainerSpec, bool)> = BTreeMap::new();
        let mut t = Table::new(&n);
        let check = |t: &Table, now: &BTreeMap<String, (ContainerSpec, bool)>| {
            let all: Vec<(ContainerSpec, bool)> = now.values().cloned().collect();
            assert_eq!(*t, Table::build(&n, &all));
        };
        let put = |t: &mut Table, now: &mut BTreeMap<_, _>, ctr: &ContainerSpec, running| {
            t.insert(ctr, running);
            now.insert(ctr.id.clone(), (ctr.clone(), running));
            check(t, now);
        };
        // What x (on a) gets for "db".
        let db = |t: &Table| t.resolve(ip("10.1.0.2"), "db").unwrap().0;
        // Inserted in reverse id order.
        for (ctr, running) in c.iter().rev() {
            put(&mut t, &mut now, ctr, *running);
        }
        // u (alias "db" on a, beside y's) stops, then starts again.
        let u = c[5].0.clone();
        put(&mut t, &mut now, &u, false);
        assert_eq!(db(&t), vec!["10.1.0.3".parse::<Ipv4Addr>().unwrap()]);
        put(&mut t, &mut now, &u, true);
        // y gets another alias and loses "db".
        let mut y = c[1].0.clone();
        y.endpoints[0].aliases = vec!["cache".into()];
        put(&mut t, &mut now, &y, true);
        assert_eq!(db(&t), vec!["10.1.0.6".parse::<Ipv4Addr>().unwrap()]);
        // x is removed: no names, no asker, no PTR left of it.
        assert!(t.remove(&c[0].0.id));
        assert!(!t.remove(&c[0].0.id));
        now.remove(&c[0].0.id);
        check(&t, &now);
        assert!(t.resolve(ip("10.1.0.3"), "x").is_none());
        assert!(t.asker(ip("10.1.0.2")).is_none());
        // Removed all, the table is an empty one.
        for (ctr, _) in &c {
            t.remove(&ctr.id);
        }
        assert_eq!(t, Table::new(&n));
    }

    /// A clone handed out (the published table) keeps its answers while the original is
    /// changed: shards are copied on write, never changed under a reader.
    #[test]
    fn a_published_clone_does_not_change() {
        let (n, c) = world();
        let mut t = Table::build(&n, &c);
        let published = t.clone();
        let before = published.resolve(ip("10.1.0.2"), "db");
        t.remove(&c[5].0.id);
        t.remove(&c[1].0.id);
        let late = ctr('7', "late", &[("a", &["10.1.0.7/24"], &["db"])]);
        t.insert(&late, true);
        assert_eq!(published.resolve(ip("10.1.0.2"), "db"), before);
        assert!(published.resolve(ip("10.1.0.2"), "late").is_none());
        assert!(published.asker(ip("10.1.0.7")).is_none());
        assert_eq!(published, Table::build(&n, &c));
        assert_eq!(
            t.resolve(ip("10.1.0.2"), "db").unwrap().0,
            vec!["10.1.0.7".parse::<Ipv4Addr>().unwrap()]
        );
    }

    /// Containers sharing a name answer in id order, whatever order they were given in.
    #[test]
    fn shared_names_in_id_order() {
        let (n, c) = world();
        let mut rev = c.clone();
        rev.reverse();
        let t = Table::build(&n, &rev);
        assert_eq!(t, Table::build(&n, &c));
        assert_eq!(
            t.resolve(ip("10.1.0.2"), "db").unwrap().0,
            vec![
                "10.1.0.3".parse::<Ipv4Addr>().unwrap(),
                "10.1.0.6".parse().unwrap()
            ]
        );
    }

    #[test]
    fn scoping() {
        let (n, c) = world();
        let t = Table::build(&n, &c);
        // x (a only) does not see z (b only), nor w (c).
        assert_eq!(
            ask(&t, "10.1.0.2", "z", qtype::A).0,
            Action::Forward(Upstream::Host)
        );
        assert_eq!(
            ask(&t, "10.1.0.2", "w", qtype::A).0,
            Action::Forward(Upstream::Host)
        );
        // y (a+b) sees both x and z, each on the shared network.
        assert_eq!(
            ask(&t, "10.1.0.3", "z", qtype::A).1.addrs,
            vec![ip("10.2.0.4")]
        );
        assert_eq!(
            ask(&t, "10.2.0.3", "x", qtype::A).1.addrs,
            vec![ip("10.1.0.2")]
        );
        // z (b only, internal) sees y on b, and gets no forwarding.
        assert_eq!(
            ask(&t, "10.2.0.4", "y", qtype::A).1.addrs,
            vec![ip("10.2.0.3")]
        );
        let (a, d) = ask(&t, "10.2.0.4", "x", qtype::A);
        assert_eq!(a, Action::Error(Rcode::Refused));
        assert_eq!(d.rcode, Rcode::Refused as u8);
        assert_eq!(
            ask(&t, "10.2.0.4", "example.com", qtype::A).0,
            Action::Error(Rcode::Refused)
        );
        // Stopped containers are not answered, but may ask.
        assert_eq!(
            ask(&t, "10.1.0.2", "v", qtype::A).0,
            Action::Forward(Upstream::Host)
        );
        assert_eq!(
            ask(&t, "10.1.0.9", "x", qtype::A).1.addrs,
            vec![ip("10.1.0.2")]
        );
        // Unknown askers are refused.
        assert_eq!(
            ask(&t, "10.1.0.77", "x", qtype::A).0,
            Action::Error(Rcode::Refused)
        );
        assert_eq!(
            ask(&t, "192.0.2.1", "x", qtype::A).0,
            Action::Error(Rcode::Refused)
        );
    }

    #[test]
    fn aaaa_ptr_nodata() {
        let (n, c) = world();
        let t = Table::build(&n, &c);
        let (_, d) = ask(&t, "fd03::2", "w", qtype::AAAA);
        assert_eq!(d.addrs, vec![ip("fd03::2")]);
        let (_, d) = ask(&t, "10.3.0.2", "w", qtype::ANY);
        assert_eq!(d.addrs, vec![ip("10.3.0.2"), ip("fd03::2")]);
        // A known name without records of the type: NOERROR, no records, not forwarded.
        let (a, d) = ask(&t, "10.1.0.2", "y", qtype::AAAA);
        assert_eq!(a, Action::Answered { truncated: false });
        assert_eq!((d.rcode, d.addrs.len()), (0, 0));
        let (_, d) = ask(&t, "10.1.0.2", "y", 16);
        assert_eq!((d.rcode, d.addrs.len()), (0, 0));
        // PTR, v4 and v6, scoped.
        let (_, d) = ask(&t, "10.1.0.2", "3.0.1.10.in-addr.arpa", qtype::PTR);
        assert_eq!(d.ptrs, vec!["y.neta."]);
        let rev6 = "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.3.0.d.f.ip6.arpa";
        let (_, d) = ask(&t, "10.3.0.2", rev6, qtype::PTR);
        assert_eq!(d.ptrs, vec!["w.netc."]);
        assert_eq!(
            ask(&t, "10.1.0.2", rev6, qtype::PTR).0,
            Action::Forward(Upstream::Host)
        );
        assert_eq!(
            ask(&t, "10.1.0.2", "4.0.2.10.in-addr.arpa", qtype::PTR).0,
            Action::Forward(Upstream::Host)
        );
        assert_eq!(reverse_addr(b"1.2.3.in-addr.arpa"), None);
        assert_eq!(reverse_addr(b"256.2.3.4.in-addr.arpa"), None);
    }

    #[test]
    fn custom_dns_servers_and_listeners() {
        let (n, mut c) = world();
        c[0].0.dns = vec![ip("192.0.2.53")];
        let t = Table::build(&n, &c);
        let mut out = Vec::new();
        let q = build_query(7, "example.com", qtype::A, None);
        match handle(&t, ip("10.1.0.2"), &q, Transport::Udp, 0, &mut out) {
            Action::Forward(Upstream::Servers(s)) => assert_eq!(s, &[ip("192.0.2.53")]),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            t.listen(),
            &[
                ip("10.1.0.1"),
                ip("10.2.0.1"),
                ip("10.3.0.1"),
                ip("fd03::1")
            ]
        );
        assert!(t.is_listen(ip("10.2.0.1")));
        assert_eq!(t.network_count(), 3);
        // The default bridge network (dns false) is not served.
        let mut nets = n.clone();
        nets[0].dns = false;
        assert!(!Table::build(&nets, &c).is_listen(ip("10.1.0.1")));
    }

    #[test]
    fn embedded_server_choice() {
        let (n, c) = world();
        assert_eq!(embedded_server(&c[0].0, &n), Some(ip("10.1.0.1")));
        // z is only on an internal network: no default route, but names still resolve.
        assert_eq!(embedded_server(&c[2].0, &n), Some(ip("10.2.0.1")));
        let mut nets = n.clone();
        nets[0].dns = false;
        assert_eq!(embedded_server(&c[0].0, &nets), None);
        // y: gateway network a; with a not served, its next served network b.
        assert_eq!(embedded_server(&c[1].0, &nets), Some(ip("10.2.0.1")));
        let v6only = ctr('9', "s", &[("c", &["fd03::9/64"], &[])]);
        assert_eq!(embedded_server(&v6only, &n), Some(ip("fd03::1")));
    }

    /// A macvlan network m (192.168.1.0/24, gateway the LAN's router), an internal macvlan
    /// network i, and bridge a: p and q on m (q with alias "printer"), r on m and a, s on i,
    /// t on a only.
    fn lan_world() -> (Vec<NetworkSpec>, Vec<(ContainerSpec, bool)>) {
        let (mut nets, _) = world();
        let mut m = net("m", "lan", "192.168.1.0/24", "192.168.1.1", false);
        m.driver = Driver::Macvlan;
        m.bridge = String::new();
        // Networks stored before berth served macvlan names say `dns: false`.
        m.dns = false;
        let mut i = net("i", "isol", "192.168.9.0/24", "192.168.9.1", true);
        i.driver = Driver::Ipvlan;
        i.bridge = String::new();
        nets.push(m);
        nets.push(i);
        let cs = vec![
            (ctr('p', "p", &[("m", &["192.168.1.200/24"], &[])]), true),
            (
                ctr('q', "q", &[("m", &["192.168.1.201/24"], &["printer"])]),
                true,
            ),
            (
                ctr(
                    'r',
                    "r",
                    &[
                        ("m", &["192.168.1.202/24"], &[]),
                        ("a", &["10.1.0.50/24"], &[]),
                    ],
                ),
                true,
            ),
            (ctr('s', "s", &[("i", &["192.168.9.2/24"], &[])]), true),
            (ctr('t', "t", &[("a", &["10.1.0.51/24"], &[])]), true),
        ];
        (nets, cs)
    }

    fn ask_as(t: &Table, id: char, name: &str) -> (Action<'static>, Decoded) {
        let mut out = Vec::new();
        let q = build_query(0x1234, name, qtype::A, None);
        let asker = t.asker_by_id(&id.to_string().repeat(64));
        let a = detach(handle_as(t, asker, &q, Transport::Udp, 0, &mut out));
        (a, decode(&out).unwrap_or_default())
    }

    /// The action without the table's lifetime, for the assertion helpers (forward targets are
    /// compared by kind).
    fn detach(a: Action<'_>) -> Action<'static> {
        match a {
            Action::Answered { truncated } => Action::Answered { truncated },
            Action::Error(r) => Action::Error(r),
            Action::Forward(Upstream::Host) => Action::Forward(Upstream::Host),
            Action::Forward(Upstream::Servers(_)) => Action::Forward(Upstream::Servers(&[])),
            Action::Drop => Action::Drop,
        }
    }

    #[test]
    fn macvlan_resolver_choice() {
        let (n, c) = lan_world();
        let local = Some(IpAddr::V4(LOCAL_RESOLVER));
        // Only on macvlan/ipvlan networks (internal or not): the in-namespace resolver.
        assert_eq!(embedded_server(&c[0].0, &n), local);
        assert_eq!(embedded_server(&c[3].0, &n), local);
        assert!(needs_local_resolver(&c[0].0, &n) && needs_local_resolver(&c[3].0, &n));
        // On a bridge network too: that bridge's gateway, which knows both networks' names.
        assert_eq!(embedded_server(&c[2].0, &n), Some(ip("10.1.0.1")));
        assert!(!needs_local_resolver(&c[2].0, &n));
        // Bridge only: unchanged; no network at all: the host's resolvers.
        assert_eq!(embedded_server(&c[4].0, &n), Some(ip("10.1.0.1")));
        assert_eq!(embedded_server(&ctr('z', "none", &[]), &n), None);
        // The macvlan gateway (the LAN's router) is never a listening address.
        assert!(!listen_addrs(&n).contains(&ip("192.168.1.1")));
        assert!(listen_addrs(&n).contains(&ip("10.1.0.1")));
        let t = Table::build(&n, &c);
        let mut local_ids = t.local().to_vec();
        local_ids.sort();
        assert_eq!(
            local_ids,
            vec!["p".repeat(64), "q".repeat(64), "s".repeat(64)]
        );
        // The generated resolv.conf names it.
        let conf = crate::files::resolv_conf("nameserver 192.0.2.53\n", &c[0].0, local);
        assert!(conf.contains("nameserver 127.0.0.11\n"), "{conf}");
        assert!(!conf.contains("192.0.2.53"), "{conf}");
    }

    #[test]
    fn macvlan_names_scoped() {
        let (n, c) = lan_world();
        let t = Table::build(&n, &c);
        // p asks through its own namespace's resolver: macvlan names, by name and alias.
        let (a, d) = ask_as(&t, 'p', "q");
        assert_eq!(a, Action::Answered { truncated: false });
        assert_eq!(d.addrs, vec![ip("192.168.1.201")]);
        assert_eq!(
            ask_as(&t, 'p', "PRINTER").1.addrs,
            vec![ip("192.168.1.201")]
        );
        assert_eq!(ask_as(&t, 'p', "q.lan").1.addrs, vec![ip("192.168.1.201")]);
        // Who (a container id: its in-namespace resolver; an address: a gateway resolver)
        // asks for what, and gets which address (None: not local, forwarded).
        let fwd = Action::Forward(Upstream::Host);
        let cases: [(Result<char, &str>, &str, Option<&str>); 6] = [
            // Names of networks p is not on are not local (m is not internal).
            (Ok('p'), "t", None),
            (Ok('p'), "s", None),
            // r (macvlan + bridge) sees both, through the bridge gateway by its address.
            (Err("10.1.0.50"), "p", Some("192.168.1.200")),
            (Err("10.1.0.50"), "t", Some("10.1.0.51")),
            // t (bridge only) does not see macvlan names.
            (Err("10.1.0.51"), "p", None),
            (Err("10.1.0.51"), "t", Some("10.1.0.51")),
        ];
        for (who, name, want) in cases {
            let (a, d) = match who {
                Ok(id) => ask_as(&t, id, name),
                Err(src) => ask(&t, src, name, qtype::A),
            };
            match want {
                Some(addr) => assert_eq!(d.addrs, vec![ip(addr)], "{who:?} {name}"),
                None => assert_eq!(a, fwd, "{who:?} {name}"),
            }
        }
        // s on an internal ipvlan network: nothing is forwarded.
        let refused = Action::Error(Rcode::Refused);
        assert_eq!(ask_as(&t, 's', "example.com").0, refused);
        // A stopped container is not answered; an unknown asker is refused.
        let mut stopped = c.clone();
        stopped[1].1 = false;
        let t2 = Table::build(&n, &stopped);
        assert_eq!(ask_as(&t2, 'p', "q").0, fwd);
        assert_eq!(ask_as(&t, 'x', "q").0, refused);
    }

    #[test]
    fn truncation_and_edns() {
        let nets = vec![net("a", "neta", "10.1.0.0/24", "10.1.0.1", false)];
        let mut cs = vec![(ctr('0', "asker", &[("a", &["10.1.0.2/24"], &[])]), true)];
        for i in 0..60u8 {
            let addr = format!("10.1.0.{}/24", 10 + i);
            let mut c = ctr('f', &format!("m{i}"), &[("a", &[addr.as_str()], &["many"])]);
            // Not the asker's id (all zeros): ids are unique, as in the store.
            c.id = format!("{:064x}", u64::from(i) + 1);
            cs.push((c, true));
        }
        let t = Table::build(&nets, &cs);
        let mut out = Vec::new();
        // 60 × 16 bytes > 512: truncated over plain UDP.
        let q = build_query(9, "many", qtype::A, None);
        let a = handle(&t, ip("10.1.0.2"), &q, Transport::Udp, 0, &mut out);
        assert_eq!(a, Action::Answered { truncated: true });
        let d = decode(&out).unwrap();
        assert!(d.tc && d.addrs.is_empty() && out.len() <= UDP_PLAIN_MAX);
        // Fits in the client's EDNS size, and an OPT record comes back.
        let q = build_query(9, "many", qtype::A, Some(1400));
        let a = handle(&t, ip("10.1.0.2"), &q, Transport::Udp, 0, &mut out);
        assert_eq!(a, Action::Answered { truncated: false });
        let d = decode(&out).unwrap();
        assert_eq!((d.addrs.len(), d.edns, d.tc), (60, true, false));
        // TCP has no such limit.
        let q = build_query(9, "many", qtype::A, None);
        handle(&t, ip("10.1.0.2"), &q, Transport::Tcp, 0, &mut out);
        assert_eq!(decode(&out).unwrap().addrs.len(), 60);
    }

    #[test]
    fn malformed() {
        let (n, c) = world();
        let t = Table::build(&n, &c);
        let mut out = Vec::new();
        let src = ip("10.1.0.2");
        // Too short, or a response: dropped.
        assert_eq!(
            handle(&t, src, &[1, 2, 3], Transport::Udp, 0, &mut out),
            Action::Drop
        );
        let mut resp = build_query(1, "x", qtype::A, None);
        resp[2] |= 0x80;
        assert_eq!(
            handle(&t, src, &resp, Transport::Udp, 0, &mut out),
            Action::Drop
        );
        // Two questions, truncated names, pointers in the question: FORMERR.
        let mut two = build_query(1, "x", qtype::A, None);
        two[5] = 2;
        assert_eq!(
            handle(&t, src, &two, Transport::Udp, 0, &mut out),
            Action::Error(Rcode::FormErr)
        );
        assert_eq!(decode(&out).unwrap().rcode, Rcode::FormErr as u8);
        let q = build_query(1, "abc", qtype::A, None);
        assert_eq!(
            handle(&t, src, &q[..15], Transport::Udp, 0, &mut out),
            Action::Error(Rcode::FormErr)
        );
        let mut ptr = q[..12].to_vec();
        ptr.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1]);
        assert_eq!(
            handle(&t, src, &ptr, Transport::Udp, 0, &mut out),
            Action::Error(Rcode::FormErr)
        );
        // Not a query: NOTIMP.
        let mut upd = build_query(1, "x", qtype::A, None);
        upd[2] |= 5 << 3;
        assert_eq!(
            handle(&t, src, &upd, Transport::Udp, 0, &mut out),
            Action::Error(Rcode::NotImp)
        );
        // A label with a dot in it never matches "y.neta".
        let mut m = build_query(1, "", qtype::A, None);
        m.truncate(12);
        m.extend_from_slice(&[6, b'y', b'.', b'n', b'e', b't', b'a', 0, 0, 1, 0, 1]);
        assert_eq!(
            handle(&t, src, &m, Transport::Udp, 0, &mut out),
            Action::Forward(Upstream::Host)
        );
        // error_reply keeps id and question.
        assert!(error_reply(
            &build_query(77, "x", 1, Some(512)),
            Rcode::ServFail,
            &mut out
        ));
        let d = decode(&out).unwrap();
        assert_eq!((d.id, d.rcode, d.edns), (77, 2, true));
        assert!(!error_reply(&[0; 5], Rcode::ServFail, &mut out));
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        fn table() -> Table {
            let (n, c) = world();
            Table::build(&n, &c)
        }

        fn check(t: &Table, src: IpAddr, msg: &[u8], transport: Transport) {
            let mut out = Vec::new();
            match handle(t, src, msg, transport, 3, &mut out) {
                Action::Answered { .. } | Action::Error(_) => {
                    // Whatever came in, what goes out is a response with the same id that
                    // fits the transport.
                    let d = decode(&out).expect("a well-formed response");
                    assert_eq!(d.id.to_be_bytes(), [msg[0], msg[1]]);
                    if transport == Transport::Udp {
                        assert!(out.len() <= UDP_EDNS_MAX);
                    }
                }
                Action::Forward(_) | Action::Drop => {}
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(4000))]

            #[test]
            fn arbitrary_bytes_never_panic(msg in proptest::collection::vec(any::<u8>(), 0..700)) {
                let t = table();
                for src in ["10.1.0.2", "10.2.0.4", "fd03::2", "192.0.2.9"] {
                    check(&t, ip(src), &msg, Transport::Udp);
                    check(&t, ip(src), &msg, Transport::Tcp);
                }
            }

            #[test]
            fn mutated_queries_never_panic(
                name in "[a-zA-Z0-9.]{0,40}",
                qt in prop_oneof![Just(1u16), Just(28), Just(12), Just(255), any::<u16>()],
                edns in proptest::option::of(any::<u16>()),
                flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
                cut in any::<usize>(),
            ) {
                let t = table();
                let mut msg = build_query(0xabcd, &name, qt, edns);
                for (at, b) in flips {
                    let i = at % msg.len();
                    msg[i] = b;
                }
                let keep = msg.len() - cut % 3;
                msg.truncate(keep);
                check(&t, ip("10.1.0.3"), &msg, Transport::Udp);
            }
        }
    }
}
