//! Address management: default subnet pools, subnet allocation and address allocation.
//!
//! Addresses are handled as `u128` offsets internally so that IPv4 and IPv6 share one
//! implementation. Nothing materialises a range: allocation walks upwards from the start of the
//! range and skips used addresses, so its cost is O(used addresses), even for a /16 or a /64.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::error::PlanError;
use crate::model::{ContainerSpec, Id, SubnetSpec};

/// Docker's default address pools: `(base, size of each subnet carved from it)`.
///
/// `172.17.0.0/16` … `172.31.0.0/16` as one /16 each, then `192.168.0.0/16` split into /20s.
pub fn default_pools() -> Vec<(IpNet, u8)> {
    let mut pools: Vec<(IpNet, u8)> = (17u8..=31)
        .filter_map(|b| Ipv4Net::new(Ipv4Addr::new(172, b, 0, 0), 16).ok())
        .map(|n| (IpNet::V4(n), 16))
        .collect();
    if let Ok(n) = Ipv4Net::new(Ipv4Addr::new(192, 168, 0, 0), 16) {
        pools.push((IpNet::V4(n), 20));
    }
    pools
}

/// Whether two prefixes share any address (either contains the other). Different families never
/// overlap.
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    match (a, b) {
        (IpNet::V4(_), IpNet::V4(_)) | (IpNet::V6(_), IpNet::V6(_)) => {
            a.contains(&b.network()) || b.contains(&a.network())
        }
        _ => false,
    }
}

/// The first subnet of the default pools that overlaps none of `used`.
///
/// `used` should hold the subnets of every existing network and the prefixes already routed on
/// the host. Default routes (`0.0.0.0/0`, `::/0`) overlap everything and say nothing about which
/// addresses are taken, so prefixes of length 0 are ignored.
pub fn allocate_subnet(used: &[IpNet]) -> Option<IpNet> {
    let used: Vec<&IpNet> = used.iter().filter(|n| n.prefix_len() > 0).collect();
    default_pools().into_iter().find_map(|(base, size)| {
        base.subnets(size)
            .ok()?
            .find(|cand| !used.iter().any(|u| overlaps(cand, u)))
    })
}

/// The ULA pool IPv6 subnets are taken from when a network enables IPv6 without giving one.
pub const ULA_POOL: &str = "fd00:b3e7::/48";

/// Picks a free /64 from [`ULA_POOL`] for a network, deterministically from its id: the first
/// four hex digits of the id choose the starting /64, and the search moves upwards (wrapping)
/// past any /64 that overlaps `used`. Prefixes of length 0 in `used` are ignored.
pub fn allocate_ula_subnet(network_id: &str, used: &[IpNet]) -> Option<IpNet> {
    let base: Ipv6Net = ULA_POOL.parse().ok()?;
    let used: Vec<&IpNet> = used.iter().filter(|n| n.prefix_len() > 0).collect();
    let start = network_id
        .get(..4)
        .and_then(|h| u16::from_str_radix(h, 16).ok())
        .unwrap_or(0);
    let base_bits = u128::from(base.network());
    (0..=u16::MAX).find_map(|i| {
        let idx = start.wrapping_add(i);
        let addr = Ipv6Addr::from(base_bits | (u128::from(idx) << 64));
        let cand = IpNet::V6(Ipv6Net::new(addr, 64).ok()?);
        (!used.iter().any(|u| overlaps(&cand, u))).then_some(cand)
    })
}

/// The gateway berth gives a subnet when none is requested: its first host address.
///
/// For a /32 or /128 (which planning refuses) the network address itself is returned rather than
/// an address outside the subnet.
pub fn gateway_for(subnet: &IpNet) -> IpAddr {
    let first = to_u128(subnet.network()).saturating_add(1);
    if first <= to_u128(subnet.broadcast()) {
        from_u128(first, subnet)
    } else {
        subnet.network()
    }
}

fn to_u128(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// Converts back in the family of `like`; IPv4 values are always < 2^32 here because they come
/// from an IPv4 subnet's bounds.
fn from_u128(v: u128, like: &IpNet) -> IpAddr {
    match like {
        IpNet::V4(_) => IpAddr::V4(Ipv4Addr::from(u32::try_from(v).unwrap_or(u32::MAX))),
        IpNet::V6(_) => IpAddr::V6(Ipv6Addr::from(v)),
    }
}

/// Addresses of `subnet` that are never given to a container: the network address, the gateway
/// and (IPv4) the broadcast address. (Auxiliary addresses are checked separately, so that a
/// request for one can say whose it is.)
fn reserved(subnet: &SubnetSpec) -> [Option<IpAddr>; 3] {
    let bcast = match subnet.subnet {
        IpNet::V4(_) => Some(subnet.subnet.broadcast()),
        IpNet::V6(_) => None,
    };
    [Some(subnet.subnet.network()), Some(subnet.gateway), bcast]
}

/// The name of the auxiliary address `addr` of `subnet`, if it is one.
fn aux_name(subnet: &SubnetSpec, addr: IpAddr) -> Option<&str> {
    subnet
        .aux_addresses
        .iter()
        .find(|(_, a)| **a == addr)
        .map(|(n, _)| n.as_str())
}

/// Allocates one address of `subnet` for an endpoint on network `net_name`.
///
/// * A `requested` address must be inside the subnet (it may lie outside the ip range, as with
///   Docker), must not be the network, gateway or broadcast address nor an auxiliary address,
///   and must not be in `used`.
/// * Otherwise the lowest free address of the ip range (or of the whole subnet when no range is
///   set) is returned, skipping the reserved and auxiliary addresses and everything in `used`.
///
/// `used` may hold addresses of both families and from outside the subnet; they are ignored.
pub fn allocate_address(
    net_name: &str,
    subnet: &SubnetSpec,
    used: &BTreeSet<IpAddr>,
    requested: Option<IpAddr>,
) -> Result<IpAddr, PlanError> {
    allocate_address_with(net_name, subnet, &|a| used.contains(a), requested)
}

/// [`allocate_address`] with the used addresses given as a test (`used(a)`: someone holds
/// `a`), so that an index kept by the caller ([`AddressBook`]) is asked instead of copied.
pub fn allocate_address_with(
    net_name: &str,
    subnet: &SubnetSpec,
    used: &dyn Fn(&IpAddr) -> bool,
    requested: Option<IpAddr>,
) -> Result<IpAddr, PlanError> {
    let reserved = reserved(subnet);
    if let Some(addr) = requested {
        if !subnet.subnet.contains(&addr) {
            return Err(PlanError::Invalid(format!(
                "address {addr} is outside subnet {} of network {net_name:?}",
                subnet.subnet
            )));
        }
        if addr == subnet.gateway {
            return Err(PlanError::Conflict(format!(
                "address {addr} is the gateway of network {net_name:?}; choose another address"
            )));
        }
        if reserved.contains(&Some(addr)) {
            return Err(PlanError::Invalid(format!(
                "address {addr} is the network or broadcast address of subnet {} of network {net_name:?}",
                subnet.subnet
            )));
        }
        if let Some(name) = aux_name(subnet, addr) {
            return Err(PlanError::Conflict(format!(
                "address {addr} is reserved as auxiliary address {name:?} of network {net_name:?}; choose another address"
            )));
        }
        if used(&addr) {
            return Err(PlanError::AddressInUse {
                addr,
                network: net_name.to_string(),
                by: None,
            });
        }
        return Ok(addr);
    }

    // The range to allocate from: the ip range clipped to the subnet (planning guarantees it is
    // inside, but a stored spec is input too).
    let range = subnet
        .ip_range
        .filter(|r| subnet.subnet.contains(r))
        .unwrap_or(subnet.subnet);
    let exhausted = || PlanError::AddressesExhausted {
        network: net_name.to_string(),
        range,
    };
    let start = to_u128(range.network());
    let end = to_u128(range.broadcast());
    let is_taken =
        |a: &IpAddr| used(a) || reserved.contains(&Some(*a)) || aux_name(subnet, *a).is_some();
    let mut cur = start;
    // Each step past `cur` is caused by one used, reserved or auxiliary address, so this loop
    // runs at most used.len() + aux_addresses.len() + 4 times.
    loop {
        let addr = from_u128(cur, &range);
        if !is_taken(&addr) {
            return Ok(addr);
        }
        if cur >= end {
            return Err(exhausted());
        }
        cur += 1;
    }
}

/// Who holds which address on each network, kept up to date one container at a time: what
/// the planner asks when it picks an endpoint's address ([`crate::network::plan_endpoint_in`]).
///
/// Collecting the holders from every container for each new endpoint touched each
/// container's document and each endpoint's network id (separate allocations, a cache miss
/// each): 0.4–0.6 ms of berthd's CPU per `run -d` at 1,000 containers (`perf record
/// --call-graph dwarf`, `plan_endpoint_with`). Here a lookup is two hash/tree finds.
#[derive(Debug, Default, Clone)]
pub struct AddressBook {
    /// Network id → address → the containers holding it (id → name): normally one; two
    /// would be a conflict in the stored documents, and each is still known.
    nets: HashMap<Id, BTreeMap<IpAddr, BTreeMap<Id, String>>>,
    /// Container id → what it holds (network id, address), to take it out again.
    held: HashMap<Id, Vec<(Id, IpAddr)>>,
}

impl AddressBook {
    /// The book of `containers`.
    pub fn of<'a>(containers: impl IntoIterator<Item = &'a ContainerSpec>) -> AddressBook {
        let mut book = AddressBook::default();
        for c in containers {
            book.insert(c);
        }
        book
    }

    /// Records `c`'s addresses (of every endpoint), replacing what it held before.
    pub fn insert(&mut self, c: &ContainerSpec) {
        self.remove(&c.id);
        let held: Vec<(Id, IpAddr)> = c
            .endpoints
            .iter()
            .flat_map(|e| e.addrs.iter().map(|a| (e.network_id.clone(), a.addr())))
            .collect();
        for (net, addr) in &held {
            self.nets
                .entry(net.clone())
                .or_default()
                .entry(*addr)
                .or_default()
                .insert(c.id.clone(), c.name.clone());
        }
        if !held.is_empty() {
            self.held.insert(c.id.clone(), held);
        }
    }

    /// Forgets container `id`'s addresses.
    pub fn remove(&mut self, id: &str) {
        let Some(held) = self.held.remove(id) else {
            return;
        };
        for (net, addr) in held {
            let Some(addrs) = self.nets.get_mut(&net) else {
                continue;
            };
            if let Some(holders) = addrs.get_mut(&addr) {
                holders.remove(id);
                if holders.is_empty() {
                    addrs.remove(&addr);
                }
            }
            if addrs.is_empty() {
                self.nets.remove(&net);
            }
        }
    }

    /// The holders of network `net`'s addresses: one look-up of the network for the many
    /// addresses an allocation asks about (hashing a 64-character id per address was most
    /// of an allocation's cost at 500 holders).
    pub fn on(&self, net: &str) -> NetHolders<'_> {
        NetHolders(self.nets.get(net))
    }
}

/// The holders of one network's addresses ([`AddressBook::on`]).
#[derive(Debug, Clone, Copy)]
pub struct NetHolders<'a>(Option<&'a BTreeMap<IpAddr, BTreeMap<Id, String>>>);

impl<'a> NetHolders<'a> {
    /// Whether anyone holds `addr`: the allocator's question, asked for each address it
    /// passes, so it reads only the network's tree (hot in the cache after the first
    /// probes), never the holders behind an address (one allocation each).
    pub fn is_held(&self, addr: IpAddr) -> bool {
        self.0.is_some_and(|m| m.contains_key(&addr))
    }

    /// The name of a container other than `except` that holds `addr`.
    pub fn holder(&self, addr: IpAddr, except: &str) -> Option<&'a str> {
        self.0?
            .get(&addr)?
            .iter()
            .find(|(id, _)| id.as_str() != except)
            .map(|(_, name)| name.as_str())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests fail loudly on purpose.
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn spec(subnet: &str, range: Option<&str>) -> SubnetSpec {
        let subnet = net(subnet);
        SubnetSpec {
            subnet,
            gateway: gateway_for(&subnet),
            ip_range: range.map(net),
            aux_addresses: Default::default(),
        }
    }

    #[test]
    fn pools_like_docker() {
        let p = default_pools();
        assert_eq!(p.len(), 16);
        assert_eq!(p[0], (net("172.17.0.0/16"), 16));
        assert_eq!(p[14], (net("172.31.0.0/16"), 16));
        assert_eq!(p[15], (net("192.168.0.0/16"), 20));
    }

    #[test]
    fn subnet_allocation() {
        assert_eq!(allocate_subnet(&[]), Some(net("172.17.0.0/16")));
        assert_eq!(
            allocate_subnet(&[net("172.17.0.0/16"), net("0.0.0.0/0"), net("::/0")]),
            Some(net("172.18.0.0/16"))
        );
        // A host route inside a pool subnet blocks it; one containing many blocks them all.
        assert_eq!(
            allocate_subnet(&[net("172.17.5.0/24"), net("172.16.0.0/12")]),
            Some(net("192.168.0.0/20"))
        );
        assert_eq!(
            allocate_subnet(&[net("172.16.0.0/12"), net("192.168.0.0/20")]),
            Some(net("192.168.16.0/20"))
        );
        assert_eq!(
            allocate_subnet(&[net("172.16.0.0/12"), net("192.168.0.0/16")]),
            None
        );
        // IPv6 entries do not block IPv4 pools.
        assert_eq!(
            allocate_subnet(&[net("fd00::/8")]),
            Some(net("172.17.0.0/16"))
        );
    }

    #[test]
    fn ula_allocation_is_deterministic() {
        let a = allocate_ula_subnet("00ff1234", &[]).unwrap();
        assert_eq!(a, net("fd00:b3e7:0:ff::/64"));
        let b = allocate_ula_subnet("00ff1234", &[a]).unwrap();
        assert_eq!(b, net("fd00:b3e7:0:100::/64"));
        let c = allocate_ula_subnet("ffff", &[]).unwrap();
        assert_eq!(c, net("fd00:b3e7:0:ffff::/64"));
        // Wraps around.
        let d = allocate_ula_subnet("ffff", &[c]).unwrap();
        assert_eq!(d, net("fd00:b3e7::/64"));
        assert!(allocate_ula_subnet("zz", &[net("fd00::/8")]).is_none());
    }

    #[test]
    fn gateway() {
        assert_eq!(gateway_for(&net("10.1.0.0/24")), ip("10.1.0.1"));
        assert_eq!(gateway_for(&net("fd00::/64")), ip("fd00::1"));
        assert_eq!(gateway_for(&net("10.1.0.0/32")), ip("10.1.0.0"));
        assert_eq!(
            gateway_for(&net("255.255.255.255/32")),
            ip("255.255.255.255")
        );
    }

    #[test]
    fn dynamic_addresses() {
        let s = spec("10.1.0.0/24", None);
        let mut used = BTreeSet::new();
        assert_eq!(
            allocate_address("web", &s, &used, None).unwrap(),
            ip("10.1.0.2")
        );
        used.insert(ip("10.1.0.2"));
        used.insert(ip("10.1.0.4"));
        used.insert(ip("fd00::3"));
        assert_eq!(
            allocate_address("web", &s, &used, None).unwrap(),
            ip("10.1.0.3")
        );
        used.insert(ip("10.1.0.3"));
        assert_eq!(
            allocate_address("web", &s, &used, None).unwrap(),
            ip("10.1.0.5")
        );
    }

    #[test]
    fn small_subnet_exhausts_without_broadcast() {
        let s = spec("10.1.0.0/30", None);
        let mut used = BTreeSet::new();
        assert_eq!(
            allocate_address("web", &s, &used, None).unwrap(),
            ip("10.1.0.2")
        );
        used.insert(ip("10.1.0.2"));
        let e = allocate_address("web", &s, &used, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"no free address left on network "web" (10.1.0.0/30)"#
        );
    }

    #[test]
    fn ip_range() {
        let s = spec("10.233.0.0/24", Some("10.233.0.128/25"));
        let used = BTreeSet::new();
        assert_eq!(
            allocate_address("n2", &s, &used, None).unwrap(),
            ip("10.233.0.128")
        );
        // Static addresses may lie outside the range, like Docker.
        assert_eq!(
            allocate_address("n2", &s, &used, Some(ip("10.233.0.11"))).unwrap(),
            ip("10.233.0.11")
        );
        // The range's end is the subnet's broadcast: never handed out.
        let s = spec("10.233.0.0/24", Some("10.233.0.254/31"));
        let mut used = BTreeSet::new();
        assert_eq!(
            allocate_address("n2", &s, &used, None).unwrap(),
            ip("10.233.0.254")
        );
        used.insert(ip("10.233.0.254"));
        assert!(matches!(
            allocate_address("n2", &s, &used, None),
            Err(PlanError::AddressesExhausted { .. })
        ));
    }

    #[test]
    fn requested_addresses() {
        let s = spec("10.1.0.0/24", None);
        let used: BTreeSet<IpAddr> = [ip("10.1.0.5")].into();
        let e = allocate_address("web", &s, &used, Some(ip("10.9.0.5"))).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"address 10.9.0.5 is outside subnet 10.1.0.0/24 of network "web""#
        );
        let e = allocate_address("web", &s, &used, Some(ip("10.1.0.5"))).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"address 10.1.0.5 is already in use on network "web""#
        );
        assert!(allocate_address("web", &s, &used, Some(ip("10.1.0.1"))).is_err());
        assert!(allocate_address("web", &s, &used, Some(ip("10.1.0.0"))).is_err());
        assert!(allocate_address("web", &s, &used, Some(ip("10.1.0.255"))).is_err());
        assert!(allocate_address("web", &s, &used, Some(ip("fd00::5"))).is_err());
        assert_eq!(
            allocate_address("web", &s, &used, Some(ip("10.1.0.254"))).unwrap(),
            ip("10.1.0.254")
        );
    }

    #[test]
    fn auxiliary_addresses_are_never_handed_out() {
        // A /29 has 10.1.0.2 ..= 10.1.0.6 for containers; two of them are auxiliary.
        let mut s = spec("10.1.0.0/29", None);
        s.aux_addresses.insert("router".into(), ip("10.1.0.3"));
        s.aux_addresses.insert("printer".into(), ip("10.1.0.5"));
        // Every address the allocator hands out until the subnet is full.
        let fill = |s: &SubnetSpec| {
            let mut used = BTreeSet::new();
            while let Ok(a) = allocate_address("tiny", s, &used, None) {
                used.insert(a);
            }
            used.into_iter().collect::<Vec<_>>()
        };
        assert_eq!(fill(&s), [ip("10.1.0.2"), ip("10.1.0.4"), ip("10.1.0.6")]);
        let e = allocate_address("tiny", &s, &BTreeSet::new(), Some(ip("10.1.0.5"))).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"address 10.1.0.5 is reserved as auxiliary address "printer" of network "tiny"; choose another address"#
        );
        assert_eq!(e.kind(), crate::error::ErrorKind::Conflict);
        // In an ip range too; and an auxiliary address outside the range changes nothing in it.
        let mut s = spec("10.1.0.0/24", Some("10.1.0.128/30"));
        s.aux_addresses.insert("a".into(), ip("10.1.0.129"));
        s.aux_addresses.insert("b".into(), ip("10.1.0.9"));
        assert_eq!(
            fill(&s),
            [ip("10.1.0.128"), ip("10.1.0.130"), ip("10.1.0.131")]
        );
    }

    #[test]
    fn large_subnets_are_cheap() {
        let s = spec("10.0.0.0/8", None);
        let used: BTreeSet<IpAddr> = (2u32..5000)
            .map(|i| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)))
            .collect();
        assert_eq!(
            allocate_address("big", &s, &used, None).unwrap(),
            ip("10.0.19.136")
        );
        let s6 = spec("fd00::/64", None);
        let used: BTreeSet<IpAddr> = [ip("fd00::2")].into();
        assert_eq!(
            allocate_address("v6", &s6, &used, None).unwrap(),
            ip("fd00::3")
        );
    }

    /// The book follows inserts, replacements and removals, and answers as a scan of the
    /// containers would.
    #[test]
    fn the_address_book_follows_each_container() {
        use crate::testutil::{container, net};
        let a = net('a', "a", "10.1.0.0/24");
        let b = net('b', "b", "10.2.0.0/24");
        let web = container('1', "web", &[(&a, "10.1.0.2/24"), (&b, "10.2.0.2/24")]);
        let db = container('2', "db", &[(&a, "10.1.0.3/24")]);
        let mut book = AddressBook::of([&web, &db]);
        assert_eq!(book.on(&a.id).holder(ip("10.1.0.2"), ""), Some("web"));
        assert_eq!(book.on(&b.id).holder(ip("10.2.0.2"), ""), Some("web"));
        assert_eq!(book.on(&a.id).holder(ip("10.1.0.3"), ""), Some("db"));
        assert_eq!(book.on(&a.id).holder(ip("10.1.0.2"), &web.id), None);
        assert_eq!(book.on(&b.id).holder(ip("10.1.0.3"), ""), None);
        assert_eq!(book.nets.get(&a.id).map_or(0, BTreeMap::len), 2);
        assert!(book.on(&a.id).is_held(ip("10.1.0.3")));
        assert!(!book.on(&a.id).is_held(ip("10.1.0.4")));
        assert!(!book.on("no such network").is_held(ip("10.1.0.3")));
        // Moved to another address: the old one is free.
        let web2 = container('1', "web", &[(&a, "10.1.0.9/24")]);
        book.insert(&web2);
        assert_eq!(book.on(&a.id).holder(ip("10.1.0.2"), ""), None);
        assert_eq!(book.on(&b.id).holder(ip("10.2.0.2"), ""), None);
        assert_eq!(book.on(&a.id).holder(ip("10.1.0.9"), ""), Some("web"));
        assert_eq!(book.nets.get(&b.id).map_or(0, BTreeMap::len), 0);
        // Two holders of one address (a conflict in the documents): each is known, and
        // removing one leaves the other.
        let twin = container('3', "twin", &[(&a, "10.1.0.3/24")]);
        book.insert(&twin);
        book.remove(&db.id);
        assert_eq!(book.on(&a.id).holder(ip("10.1.0.3"), ""), Some("twin"));
        book.remove(&twin.id);
        book.remove(&web.id);
        book.remove("nobody");
        assert_eq!(book.nets.get(&a.id).map_or(0, BTreeMap::len), 0);
        assert!(book.nets.is_empty() && book.held.is_empty());
        // The allocator asks the book: the lowest address nobody holds.
        let book = AddressBook::of([&db]);
        let s = spec("10.1.0.0/24", None);
        let used = |x: &IpAddr| book.on(&a.id).holder(*x, "").is_some();
        assert_eq!(
            allocate_address_with("a", &s, &used, None).unwrap(),
            ip("10.1.0.2")
        );
        assert!(allocate_address_with("a", &s, &used, Some(ip("10.1.0.3"))).is_err());
    }

    #[test]
    fn ipv6_top_of_space() {
        let s = spec("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffc/126", None);
        let mut used = BTreeSet::new();
        for _ in 0..2 {
            let a = allocate_address("v6", &s, &used, None).unwrap();
            used.insert(a);
        }
        assert!(used.contains(&ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")));
        assert!(allocate_address("v6", &s, &used, None).is_err());
    }
}
