//! Every container's name and addresses, followed from the container index's changes
//! ([`crate::docindex::DocIndex::changes_since`]) one container at a time: what a create's name
//! check and an endpoint's address pick ask, answered without a walk of every document.
//!
//! Both walked every container (its document, its name, each endpoint's network id: separate
//! allocations, a cache miss each) on every `run -d`: 0.4–0.6 ms of berthd's CPU per start at
//! 1,000 containers (`perf record --call-graph dwarf`: `plan_endpoint_with`'s network-id
//! comparisons and `container_named`).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use berth_plan::ipam::AddressBook;
use berth_plan::model::{ContainerSpec, Id};

/// See the module documentation.
#[derive(Default)]
pub struct ContainerLookup {
    /// The container index's generation this reflects.
    pub(crate) generation: u64,
    members: HashMap<Id, Arc<ContainerSpec>>,
    /// (name, id): names are unique, but a conflict in the stored documents must not hide one.
    names: BTreeSet<(String, Id)>,
    /// Who holds which address on each network.
    pub book: AddressBook,
}

impl ContainerLookup {
    /// Empty, at the container index's `generation`.
    pub fn new(generation: u64) -> ContainerLookup {
        ContainerLookup {
            generation,
            ..Default::default()
        }
    }

    /// Records `c`, replacing what was known of it.
    pub fn insert(&mut self, c: Arc<ContainerSpec>) {
        self.remove(&c.id);
        self.names.insert((c.name.clone(), c.id.clone()));
        self.book.insert(&c);
        self.members.insert(c.id.clone(), c);
    }

    /// Forgets container `id`.
    pub fn remove(&mut self, id: &str) {
        if let Some(old) = self.members.remove(id) {
            self.names.remove(&(old.name.clone(), old.id.clone()));
            self.book.remove(id);
        }
    }

    /// The container named `name`, if any.
    pub fn named(&self, name: &str) -> Option<&Arc<ContainerSpec>> {
        self.names
            .range((name.to_string(), String::new())..)
            .next()
            .filter(|(n, _)| n == name)
            .and_then(|(_, id)| self.members.get(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: char, name: &str) -> Arc<ContainerSpec> {
        Arc::new(ContainerSpec::new(
            std::iter::repeat_n(id, 64).collect::<String>(),
            name,
            vec!["true".into()],
        ))
    }

    /// Names follow inserts, renames and removals; a prefix of a name is not the name.
    #[test]
    fn names_follow_each_change() {
        let mut l = ContainerLookup::default();
        l.insert(spec('a', "web"));
        l.insert(spec('b', "web2"));
        assert_eq!(l.named("web").map(|c| c.id.as_bytes()[0]), Some(b'a'));
        assert_eq!(l.named("we").map(|c| c.id.clone()), None);
        l.insert(spec('a', "api"));
        assert!(l.named("web").is_none());
        assert_eq!(l.named("api").map(|c| c.id.as_bytes()[0]), Some(b'a'));
        l.remove(&spec('b', "").id);
        assert!(l.named("web2").is_none());
        assert_eq!(l.members.len(), 1);
    }
}
