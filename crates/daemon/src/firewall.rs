//! What berthd knows of berth's nftables table (`table inet berth`) between reconcile passes.
//!
//! Two owners of elements: networks own the sets (the reconcile loop diffs them against
//! [`Firewall::cache`], a handful per network), running containers own the published-port maps
//! ([`Firewall::update_ports`] diffs only the ports of the container that changed, so publishing
//! one more port costs the same with 10,000 ports published as with none). A full pass (start-up,
//! a notification that the table changed, the timer) reads the table back and repairs both.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use berth_plan::firewall::{self as fw, Elements, FirewallConfig};
use berth_plan::ports::{Proto, Published};

/// Published ports in force, by (protocol, host port): the container name and the port. The
/// conflict check of a new port looks here, O(1) whatever the number of ports.
pub type PortIndex = HashMap<(Proto, u16), Vec<(String, Published)>>;

/// Ports in force per container id: (container name, ports).
type PortsById = BTreeMap<String, (String, Vec<Published>)>;

/// The daemon's view of what its table holds.
pub struct Firewall {
    /// Elements as last applied (or observed at start): diffs are computed against this, so a
    /// change costs O(what changed), not a read of the whole table.
    applied: Mutex<Option<Elements>>,
    /// The static rules' configuration as last applied or read back.
    applied_cfg: Mutex<Option<FirewallConfig>>,
    /// Ports in force per container id (name, ports), and the same by host port.
    ports: Mutex<(PortsById, PortIndex)>,
    /// Bridge ports of exited containers whose anti-spoofing elements are still to be removed
    /// ([`Firewall::release_guard`]). Locked only under `applied`.
    released: Mutex<BTreeSet<String>>,
}

impl Firewall {
    /// A firewall that has not been initialized yet.
    pub fn new() -> Firewall {
        Firewall {
            applied: Mutex::new(None),
            applied_cfg: Mutex::new(None),
            ports: Mutex::new((BTreeMap::new(), HashMap::new())),
            released: Mutex::new(BTreeSet::new()),
        }
    }

    /// Runs `f` on the index of published ports (under its lock).
    pub fn with_port_index<T>(&self, f: impl FnOnce(&PortIndex) -> T) -> anyhow::Result<T> {
        let guard = self
            .ports
            .lock()
            .map_err(|_| anyhow::anyhow!("port index lock poisoned"))?;
        Ok(f(&guard.1))
    }

    /// Makes `ports` the published ports of container `id` (named `name`): one transaction
    /// holding only the difference to what that container had (empty `ports`: unpublish).
    /// Returns the ports it had before.
    ///
    /// The same transaction replaces the anti-spoofing elements of the bridge ports in
    /// `guard_ports` (the container's veths) with `guard` (empty: the container exits), so a
    /// start costs one transaction for both.
    pub fn update_ports(
        &self,
        id: &str,
        name: &str,
        ports: &[Published],
        guard_ports: &BTreeSet<String>,
        guard: &Elements,
    ) -> anyhow::Result<Vec<Published>> {
        let mut index = self
            .ports
            .lock()
            .map_err(|_| anyhow::anyhow!("port index lock poisoned"))?;
        let old = index.0.get(id).map(|(_, p)| p.clone()).unwrap_or_default();
        let old_name = index
            .0
            .get(id)
            .map(|(n, _)| n.clone())
            .unwrap_or_else(|| name.to_string());
        let remove = fw::port_elements(&old_name, &old);
        let mut add = fw::port_elements(name, ports);
        add.extend(guard);
        self.apply_delta(&remove, &add, guard_ports)?;
        // The index follows the kernel only once the transaction succeeded.
        let (by_id, by_port) = &mut *index;
        for p in &old {
            if let Some(v) = by_port.get_mut(&(p.proto, p.host_port)) {
                v.retain(|(_, q)| q != p);
                if v.is_empty() {
                    by_port.remove(&(p.proto, p.host_port));
                }
            }
        }
        for p in ports {
            by_port
                .entry((p.proto, p.host_port))
                .or_default()
                .push((name.to_string(), p.clone()));
        }
        if ports.is_empty() {
            by_id.remove(id);
        } else {
            by_id.insert(id.to_string(), (name.to_string(), ports.to_vec()));
        }
        Ok(old)
    }

    /// Start-up: makes the published-port maps hold exactly `all` (container id → name, ports),
    /// removing whatever else is there (ports of containers that died while berthd was down).
    pub fn replace_ports(&self, all: &[(String, String, Vec<Published>)]) -> anyhow::Result<()> {
        let mut desired_maps = Elements::default();
        for (_, name, ports) in all {
            desired_maps.extend(&fw::port_elements(name, ports));
        }
        let mut slot = self
            .applied
            .lock()
            .map_err(|_| anyhow::anyhow!("firewall state lock poisoned"))?;
        let current = slot.clone().unwrap_or_default();
        let maps = fw::map_names();
        let changes = fw::diff_changes(&current.only(&maps), &desired_maps.only(&maps));
        berth_kernel::nft::apply_changes(&changes)?;
        let mut applied = current.only(&fw::set_names());
        applied.extend(&current.only(&fw::guard_names()));
        applied.extend(&desired_maps.only(&maps));
        *slot = Some(applied);
        drop(slot);
        let mut index = self
            .ports
            .lock()
            .map_err(|_| anyhow::anyhow!("port index lock poisoned"))?;
        *index = (BTreeMap::new(), HashMap::new());
        for (id, name, ports) in all {
            for p in ports {
                index
                    .1
                    .entry((p.proto, p.host_port))
                    .or_default()
                    .push((name.clone(), p.clone()));
            }
            if !ports.is_empty() {
                index.0.insert(id.clone(), (name.clone(), ports.clone()));
            }
        }
        Ok(())
    }

    /// Removes `remove` and adds `add` in one transaction, touching nothing else. Elements to
    /// remove that the table does not hold are skipped, and a map key about to be added that
    /// holds another value is replaced, so a transaction never fails on stale state.
    /// The anti-spoofing elements in force for the bridge ports `guard_ports` are removed too
    /// (unless `add` holds them again).
    fn apply_delta(
        &self,
        remove: &Elements,
        add: &Elements,
        guard_ports: &BTreeSet<String>,
    ) -> anyhow::Result<()> {
        let mut slot = self
            .applied
            .lock()
            .map_err(|_| anyhow::anyhow!("firewall state lock poisoned"))?;
        let applied = slot.get_or_insert_with(Elements::default);
        let mut remove = remove.clone();
        if !guard_ports.is_empty() {
            remove.extend(&fw::guard_part(applied, Some(guard_ports)));
            // A restart before the removal of an exit: these ports are decided here.
            if let Ok(mut r) = self.released.lock() {
                r.retain(|p| !guard_ports.contains(p));
            }
        }
        let (current, desired) = fw::delta(applied, &remove, add);
        berth_kernel::nft::apply_changes(&fw::diff_changes(&current, &desired))?;
        applied.remove_all(&current);
        applied.extend(&desired);
        Ok(())
    }

    /// Marks the anti-spoofing elements of `ports` (an exited container's veths) for removal
    /// by [`Firewall::flush_released`], off the exit's path: a deletion's commit waits for the
    /// kernel (measured with `nft`: ~15 ms right at exit, while the container's namespace is
    /// torn down), and nobody needs to wait for it. The veths are gone by then, so the elements
    /// match nothing meanwhile; a restart first (same veth names) keeps them.
    pub fn release_guard(&self, ports: &BTreeSet<String>) {
        if let Ok(mut r) = self.released.lock() {
            r.extend(ports.iter().cloned());
        }
    }

    /// Whether [`Firewall::release_guard`] left something to remove.
    pub fn has_released(&self) -> bool {
        self.released.lock().map(|r| !r.is_empty()).unwrap_or(false)
    }

    /// Removes the anti-spoofing elements of the released ports, in one transaction. Blocks on
    /// the kernel's commit: call from a blocking context. On failure the cache is invalidated (the next pass
    /// reads the table back and removes them).
    pub fn flush_released(&self) -> anyhow::Result<()> {
        let mut slot = self
            .applied
            .lock()
            .map_err(|_| anyhow::anyhow!("firewall state lock poisoned"))?;
        let ports = match self.released.lock() {
            Ok(mut r) => std::mem::take(&mut *r),
            Err(_) => return Err(anyhow::anyhow!("firewall state lock poisoned")),
        };
        let Some(applied) = slot.as_mut() else {
            return Ok(());
        };
        let remove = fw::guard_part(applied, Some(&ports));
        let (current, desired) = fw::delta(applied, &remove, &Elements::default());
        if let Err(e) = berth_kernel::nft::apply_changes(&fw::diff_changes(&current, &desired)) {
            drop(slot);
            self.invalidate();
            return Err(e.into());
        }
        applied.remove_all(&current);
        Ok(())
    }

    /// What berth last applied (or read back): the static rules' configuration and the
    /// elements, or `None` when unknown (a failed transaction, or before the first pass): the
    /// next pass then reads the table back. Without the published-port maps: a pass that does
    /// not read the table back leaves them to [`Firewall::update_ports`], and with 10,000 ports
    /// published they are most of the elements, which a pass copied about three times.
    ///
    /// With `guard_ports` (a pass scoped to some containers or links: its
    /// `DesiredHost::guard_scope`), only those bridge ports' anti-spoofing elements: the pass
    /// decides no other port's, and copying all of them (three per container) made every
    /// scoped pass cost O(containers).
    pub fn cache_without_maps(
        &self,
        guard_ports: Option<&BTreeSet<String>>,
    ) -> Option<(FirewallConfig, Elements)> {
        let cfg = self.applied_cfg.lock().ok().and_then(|c| *c)?;
        let guard = self.applied.lock().ok()?;
        let el = guard.as_ref()?;
        let mut out = el.only(&fw::set_names());
        out.extend(&fw::guard_part(el, guard_ports));
        Some((cfg, out))
    }

    /// Whether the cache is known (else the next pass reads the table back).
    pub fn known(&self) -> bool {
        self.applied_cfg.lock().is_ok_and(|c| c.is_some())
            && self.applied.lock().is_ok_and(|e| e.is_some())
    }

    /// Records what a pass that left the maps alone left in the table: `elements` (no maps)
    /// and the maps as they are (moved, not copied). With `guard_ports` (a scoped pass, whose
    /// `elements` hold only those bridge ports' anti-spoofing elements, see
    /// [`Firewall::cache_without_maps`]), the other ports' elements stay as they are too.
    pub fn set_cache_keeping_maps(
        &self,
        cfg: FirewallConfig,
        mut elements: Elements,
        guard_ports: Option<&BTreeSet<String>>,
    ) {
        if let Ok(mut c) = self.applied_cfg.lock() {
            *c = Some(cfg);
        }
        if let Ok(mut e) = self.applied.lock() {
            if let Some(old) = e.as_mut() {
                for name in fw::map_names() {
                    if let Some(map) = old.0.remove(name) {
                        elements.0.insert(name.to_string(), map);
                    }
                }
                if let Some(ports) = guard_ports {
                    // The scope's elements as the pass left them, the others' as they were:
                    // the old sets are moved over and only the scope's part is replaced
                    // (O(scope)).
                    let mut kept = Elements::default();
                    for name in fw::guard_names() {
                        if let Some(set) = old.0.remove(name) {
                            kept.0.insert(name.to_string(), set);
                        }
                    }
                    fw::remove_guard_ports(&mut kept, ports);
                    for name in fw::guard_names() {
                        let set = kept.0.entry(name.to_string()).or_default();
                        if let Some(new) = elements.0.remove(name) {
                            set.extend(new);
                        }
                        elements.0.insert(name.to_string(), std::mem::take(set));
                    }
                }
            }
            *e = Some(elements);
        }
    }

    /// Records what a reconcile pass left in the table.
    pub fn set_cache(&self, cfg: FirewallConfig, elements: Elements) {
        if let Ok(mut c) = self.applied_cfg.lock() {
            *c = Some(cfg);
        }
        if let Ok(mut e) = self.applied.lock() {
            *e = Some(elements);
        }
    }

    /// Forgets what the table holds (after a failure): the next pass reads it back.
    pub fn invalidate(&self) {
        if let Ok(mut c) = self.applied_cfg.lock() {
            *c = None;
        }
    }
}

/// Base chains of other tables hooked on `forward` with policy drop: `(family, table, chain)`.
pub fn forward_drop_chains(ruleset: &serde_json::Value) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let Some(items) = ruleset.get("nftables").and_then(|v| v.as_array()) else {
        return out;
    };
    for item in items {
        let Some(chain) = item.get("chain") else {
            continue;
        };
        let s = |k: &str| {
            chain
                .get(k)
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string()
        };
        if s("hook") == "forward"
            && s("policy") == "drop"
            && !(s("family") == "inet" && s("table") == "berth")
        {
            out.push((s("family"), s("table"), s("name")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cache as berthd holds it with `n` running containers: the sets, each container's
    /// anti-spoofing elements (port `vbN`), a published port each.
    fn cache_of(n: usize) -> Elements {
        let mut e = Elements::default();
        e.insert(fw::SET_BRIDGES, "\"berth-a\"".into(), "network a".into());
        for i in 0..n {
            let port = format!("\"vb{i}\"");
            let why = format!("container c{i} on network a");
            e.insert(fw::SET_GUARDED, port.clone(), why.clone());
            e.insert(
                fw::SET_PORT_MAC,
                format!("{port} . 02:42:0a:00:00:02"),
                why.clone(),
            );
            e.insert(
                fw::SET_PORT_IP4,
                format!("{port} . 10.0.{}.{}", i / 200, i % 200 + 2),
                why,
            );
            e.insert(
                "publish4_any",
                format!("tcp . {} : 10.0.0.2 . 80", 20000 + i),
                String::new(),
            );
        }
        e
    }

    /// A pass scoped to one container gets that container's anti-spoofing elements and the
    /// sets, not every container's (O(scope), not O(containers)); what it leaves is merged
    /// back without touching the other containers' elements or the maps.
    #[test]
    fn a_scoped_pass_carries_and_replaces_only_its_ports_elements() {
        let f = Firewall::new();
        let cfg = FirewallConfig::default();
        let all = cache_of(1000);
        f.set_cache(cfg, all.clone());
        let scope: BTreeSet<String> = ["vb7".to_string()].into();
        let (_, part) = f.cache_without_maps(Some(&scope)).expect("cache known");
        assert_eq!(
            part.len(),
            1 + 3,
            "the bridges set and vb7's three elements"
        );
        assert!(fw::guard_names()
            .iter()
            .flat_map(|n| part.0.get(*n).into_iter().flatten())
            .all(|(k, _)| fw::element_port(k) == Some("vb7")));
        assert!(part.0.get("publish4_any").is_none_or(|m| m.is_empty()));
        // Unscoped (a pass over the whole host): everything but the maps, as before.
        let (_, whole) = f.cache_without_maps(None).expect("cache known");
        assert_eq!(whole.len(), 1 + 3 * 1000);

        // The pass changed vb7's address and added a network to the sets.
        let mut after = part.clone();
        fw::remove_guard_ports(&mut after, &scope);
        after.insert(
            fw::SET_GUARDED,
            "\"vb7\"".into(),
            "container c7 on network a".into(),
        );
        after.insert(fw::SET_PORT_IP4, "\"vb7\" . 10.0.9.9".into(), String::new());
        after.insert(fw::SET_BRIDGES, "\"berth-b\"".into(), "network b".into());
        f.set_cache_keeping_maps(cfg, after, Some(&scope));
        let (_, now) = f.cache_without_maps(None).expect("cache known");
        let mut want = all.only(&fw::set_names());
        want.insert(fw::SET_BRIDGES, "\"berth-b\"".into(), "network b".into());
        let mut others = fw::guard_part(&all, None);
        fw::remove_guard_ports(&mut others, &scope);
        want.extend(&others);
        want.insert(
            fw::SET_GUARDED,
            "\"vb7\"".into(),
            "container c7 on network a".into(),
        );
        want.insert(fw::SET_PORT_IP4, "\"vb7\" . 10.0.9.9".into(), String::new());
        assert_eq!(now, want);
        // The maps were kept (moved, not rebuilt).
        let maps = f.applied.lock().expect("lock").clone().expect("cache");
        assert_eq!(maps.0["publish4_any"].len(), 1000);
    }

    #[test]
    fn finds_foreign_forward_drop_policies_only() {
        let json = serde_json::json!({"nftables": [
            {"metainfo": {}},
            {"chain": {"family": "ip", "table": "filter", "name": "FORWARD", "hook": "forward", "policy": "drop"}},
            {"chain": {"family": "ip", "table": "filter", "name": "INPUT", "hook": "input", "policy": "drop"}},
            {"chain": {"family": "inet", "table": "berth", "name": "forward", "hook": "forward", "policy": "drop"}},
            {"chain": {"family": "inet", "table": "fw", "name": "fwd", "hook": "forward", "policy": "accept"}}
        ]});
        assert_eq!(
            forward_drop_chains(&json),
            vec![(
                "ip".to_string(),
                "filter".to_string(),
                "FORWARD".to_string()
            )]
        );
    }
}
