//! Address claims in the store: every allocated address of an endpoint is a key
//! `ipam/<network id>/<address>` written with a compare "absent" in the same transaction as
//! the container document that uses it. Two allocators that picked the same address (two
//! requests, or — with etcd behind the store — two hosts) cannot both commit: the loser's
//! transaction fails and nothing of it is written. berthd's mutation lock orders requests on
//! one host; the claim is what makes the allocation correct without it.

use std::net::IpAddr;

use berth_plan::model::{ContainerSpec, EndpointSpec};
use berth_store::{Compare, Op, Store, TxnOutcome};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ApiResult};

/// Prefix of the claims.
pub const PREFIX: &str = "ipam/";

/// What a claim records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Claim {
    /// The endpoint holding the address.
    pub endpoint: String,
    /// Its container.
    pub container: String,
}

/// The claim key of one address of `ep`.
pub fn key(ep: &EndpointSpec, addr: &ipnet::IpNet) -> String {
    format!("{PREFIX}{}/{}", ep.network_id, addr.addr())
}

/// Compares and puts that claim every address of `eps` for container `c`.
pub fn claim(c: &ContainerSpec, eps: &[&EndpointSpec]) -> (Vec<Compare>, Vec<Op>) {
    let mut cmp = Vec::new();
    let mut ops = Vec::new();
    for ep in eps {
        if ep.reused_mac {
            // The announcement this endpoint makes tells the neighbours; the next holder of
            // the address (with the derived MAC) need not announce again.
            ops.extend(
                ep.addrs
                    .iter()
                    .filter(|a| a.addr().is_ipv4())
                    .map(|a| Op::Delete(mac_key(ep, a))),
            );
        }
        for a in &ep.addrs {
            let k = key(ep, a);
            cmp.push(Compare::Absent(k.clone()));
            ops.push(Op::put_json(
                k,
                &Claim {
                    endpoint: ep.id.clone(),
                    container: c.id.clone(),
                },
            ));
        }
    }
    (cmp, ops)
}

/// Deletes of the claims of `eps`, and a release record ([`MAC_PREFIX`]) for each IPv4
/// address of an endpoint whose MAC is not the one derived from that address.
pub fn release(eps: &[&EndpointSpec]) -> Vec<Op> {
    let mut ops: Vec<Op> = eps
        .iter()
        .flat_map(|ep| ep.addrs.iter().map(|a| Op::Delete(key(ep, a))))
        .collect();
    for ep in eps {
        for a in &ep.addrs {
            if let IpAddr::V4(v4) = a.addr() {
                if !berth_plan::names::is_derived_mac(&ep.mac, v4) {
                    ops.push(Op::Put(mac_key(ep, a), ep.mac.clone().into_bytes()));
                }
            }
        }
    }
    ops
}

/// Prefix of the release records: `ipam-mac/<network id>/<IPv4 address>` holds the MAC of the
/// address's last holder when that was not the MAC derived from the address (`02:42:` + the
/// address, which any holder without a `--mac-address` has). Neighbours may still have that
/// MAC cached, so the next holder must announce itself (`EndpointSpec::reused_mac`); for an
/// address without a record they already have the right MAC, and the announcement, a
/// broadcast to every port of the bridge, is left out. Removed when the address is claimed
/// again and when the network goes.
pub const MAC_PREFIX: &str = "ipam-mac/";

/// The release record key of address `addr` of `ep`'s network.
fn mac_key(ep: &EndpointSpec, addr: &ipnet::IpNet) -> String {
    format!("{MAC_PREFIX}{}/{}", ep.network_id, addr.addr())
}

/// Sets `reused_mac` on each of `eps` whose IPv4 address has a release record (its previous
/// holder had another MAC). Read before the claim, under berthd's mutation lock: a record
/// cannot appear for an address while it is free to claim.
pub fn mark_reused(store: &dyn Store, eps: &mut [EndpointSpec]) -> ApiResult<()> {
    for ep in eps {
        for a in &ep.addrs {
            if a.addr().is_ipv4() && store.get(&mac_key(ep, a))?.is_some() {
                ep.reused_mac = true;
            }
        }
    }
    Ok(())
}

/// Deletes of every release record of network `network_id` (the network is being removed).
pub fn forget_network(store: &dyn Store, network_id: &str) -> ApiResult<Vec<Op>> {
    Ok(store
        .list(&format!("{MAC_PREFIX}{network_id}/"))?
        .into_iter()
        .map(|(k, _)| Op::Delete(k))
        .collect())
}

/// Commits `ops` (which must include `claim`'s puts) only if every claimed address is free;
/// a lost race is a 409 naming the address.
pub fn commit(store: &dyn Store, cmp: Vec<Compare>, ops: Vec<Op>) -> ApiResult<()> {
    outcome(&cmp, store.txn(cmp.clone(), ops)?)
}

/// [`commit`] with its durability deferred ([`Store::txn_deferred`]): the caller syncs the
/// store before it answers.
pub fn commit_deferred(store: &dyn Store, cmp: Vec<Compare>, ops: Vec<Op>) -> ApiResult<()> {
    outcome(&cmp, store.txn_deferred(cmp.clone(), ops)?)
}

/// A claim's transaction outcome as the API's answer.
fn outcome(cmp: &[Compare], txn: TxnOutcome) -> ApiResult<()> {
    match txn {
        TxnOutcome::Committed(_) => Ok(()),
        TxnOutcome::Failed { failed, .. } => {
            let what = cmp
                .get(failed)
                .map(|c| c.key().trim_start_matches(PREFIX).to_string())
                .unwrap_or_default();
            Err(ApiError::conflict(format!(
                "address {what} was allocated by another request at the same time; try again"
            )))
        }
    }
}

/// Start-up: the claims are exactly the addresses of the stored endpoints (claims written by
/// an older berth or left by a hand-edited store are made consistent in one transaction).
pub fn repair(store: &dyn Store, containers: &[ContainerSpec]) -> ApiResult<usize> {
    let mut want = std::collections::BTreeMap::new();
    for c in containers {
        for ep in &c.endpoints {
            for a in &ep.addrs {
                want.insert(
                    key(ep, a),
                    Claim {
                        endpoint: ep.id.clone(),
                        container: c.id.clone(),
                    },
                );
            }
        }
    }
    let have: std::collections::BTreeMap<String, Vec<u8>> =
        store.list(PREFIX)?.into_iter().collect();
    let mut ops = Vec::new();
    for k in have.keys() {
        if !want.contains_key(k) {
            ops.push(Op::Delete(k.clone()));
        }
    }
    for (k, claim) in &want {
        let same = have
            .get(k)
            .and_then(|v| serde_json::from_slice::<Claim>(v).ok())
            .is_some_and(|c| c == *claim);
        if !same {
            ops.push(Op::put_json(k.clone(), claim));
        }
    }
    let n = ops.len();
    if n > 0 {
        store.apply(ops)?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::keys;
    use berth_store::RedbStore;

    fn ep(net: &str, id: &str, addr: &str) -> EndpointSpec {
        EndpointSpec {
            id: id.into(),
            network_id: net.into(),
            host_ifname: format!("vb{id}"),
            ifname: "eth0".into(),
            mac: String::new(),
            addrs: vec![addr.parse().expect("addr")],
            static_ipv4: None,
            static_ipv6: None,
            aliases: vec![],
            gw_priority: 0,
            driver_opts: Default::default(),
            links: Vec::new(),
            link_local_ips: Vec::new(),
            reused_mac: false,
        }
    }

    fn container(id: &str, eps: Vec<EndpointSpec>) -> ContainerSpec {
        let mut c = ContainerSpec::new(id, id, vec![]);
        c.endpoints = eps;
        c
    }

    #[test]
    fn a_claimed_address_cannot_be_claimed_twice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RedbStore::open(&dir.path().join("s.redb")).expect("open");
        let a = container("a", vec![ep("n", "e1", "10.0.0.2/24")]);
        let b = container("b", vec![ep("n", "e2", "10.0.0.2/24")]);
        let (cmp, mut ops) = claim(&a, &a.endpoints.iter().collect::<Vec<_>>());
        ops.push(Op::put_json(keys::container("a"), &a));
        commit(&store, cmp, ops).expect("first claim");
        let (cmp, mut ops) = claim(&b, &b.endpoints.iter().collect::<Vec<_>>());
        ops.push(Op::put_json(keys::container("b"), &b));
        let err = commit(&store, cmp, ops).expect_err("second claim must lose");
        assert_eq!(err.status, axum::http::StatusCode::CONFLICT);
        assert!(err.message.contains("10.0.0.2"), "{}", err.message);
        // Nothing of the loser was written.
        assert!(store.get(&keys::container("b")).expect("get").is_none());
        // Released, it can be claimed.
        store
            .apply(release(&a.endpoints.iter().collect::<Vec<_>>()))
            .expect("release");
        let (cmp, ops) = claim(&b, &b.endpoints.iter().collect::<Vec<_>>());
        commit(&store, cmp, ops).expect("claim after release");
    }

    #[test]
    fn repair_makes_claims_match_endpoints() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RedbStore::open(&dir.path().join("s.redb")).expect("open");
        store
            .apply(vec![Op::Put(format!("{PREFIX}n/10.0.0.9"), b"{}".to_vec())])
            .expect("stale");
        let a = container("a", vec![ep("n", "e1", "10.0.0.2/24")]);
        assert_eq!(repair(&store, std::slice::from_ref(&a)).expect("repair"), 2);
        let keys: Vec<String> = store
            .list(PREFIX)
            .expect("list")
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, vec![format!("{PREFIX}n/10.0.0.2")]);
        assert_eq!(repair(&store, &[a]).expect("repair"), 0);
    }

    /// An address released by a holder with a MAC of its own leaves a record; the next holder
    /// is marked (it must announce itself), its claim removes the record; a holder with the
    /// derived MAC leaves none; the network's removal takes what is left.
    #[test]
    fn a_holder_with_its_own_mac_leaves_a_record_for_the_next() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RedbStore::open(&dir.path().join("s.redb")).expect("open");
        let mut own = ep("n", "e1", "10.0.0.2/24");
        own.mac = "02:00:00:00:00:aa".into();
        let mut derived = ep("n", "e2", "10.0.0.3/24");
        derived.mac = "02:42:0A:00:00:03".into();
        let a = container("a", vec![own, derived]);
        let (cmp, ops) = claim(&a, &a.endpoints.iter().collect::<Vec<_>>());
        commit(&store, cmp, ops).expect("claim");
        store
            .apply(release(&a.endpoints.iter().collect::<Vec<_>>()))
            .expect("release");
        let records: Vec<(String, Vec<u8>)> = store.list(MAC_PREFIX).expect("list");
        assert_eq!(
            records,
            vec![(
                format!("{MAC_PREFIX}n/10.0.0.2"),
                b"02:00:00:00:00:aa".to_vec()
            )]
        );

        let mut next = vec![
            ep("n", "e3", "10.0.0.2/24"),
            ep("n", "e4", "10.0.0.3/24"),
            ep("m", "e5", "10.0.0.2/24"),
        ];
        mark_reused(&store, &mut next).expect("mark");
        let marked: Vec<bool> = next.iter().map(|e| e.reused_mac).collect();
        assert_eq!(marked, vec![true, false, false]);
        let b = container("b", next);
        let (cmp, ops) = claim(&b, &b.endpoints.iter().collect::<Vec<_>>());
        commit(&store, cmp, ops).expect("claim again");
        assert!(store.list(MAC_PREFIX).expect("list").is_empty());

        // Left behind by another holder, then the network goes.
        let mut c = ep("n", "e6", "10.0.0.4/24");
        c.mac = "02:00:00:00:00:bb".into();
        store.apply(release(&[&c])).expect("release");
        store
            .apply(forget_network(&store, "m").expect("forget other"))
            .expect("apply");
        assert_eq!(store.list(MAC_PREFIX).expect("list").len(), 1);
        store
            .apply(forget_network(&store, "n").expect("forget"))
            .expect("apply");
        assert!(store.list(MAC_PREFIX).expect("list").is_empty());
    }
}
