//! `GET /containers/json?all=&filters=` (`berth ps -a -f KEY=VALUE`): which containers are
//! listed, as moby's `daemon/list.go` decides.
//!
//! Keys: `id` and `name` (moby matches them as regular expressions; berth takes the value
//! literally, with `^` and `$` anchors: `name=^web$`), `label` (`KEY` or `KEY=VALUE`, all must
//! match), `status` (one of Docker's states; lists stopped containers too), `exited` (an exit
//! code, of containers that ran), `network` (a network name, or a prefix of its id). Values of
//! one key are alternatives, except `label`; different keys must all match. The other keys
//! dockerd accepts are about images, volumes, health checks and swarm tasks, which berth does not
//! have: they are refused with a 400 that says so rather than ignored.

use std::collections::BTreeMap;

use crate::error::PlanError;
use crate::model::{ContainerSpec, ContainerState, Id, Status};

/// Docker's container states (`status=` values it accepts).
const STATES: [&str; 7] = [
    "created",
    "running",
    "paused",
    "restarting",
    "removing",
    "exited",
    "dead",
];

/// Keys dockerd accepts that berth cannot answer (no images, volumes, health checks, tasks,
/// isolation) or does not yet (`before`, `since`, `publish`, `expose`).
const UNSUPPORTED: [&str; 9] = [
    "ancestor",
    "before",
    "since",
    "health",
    "volume",
    "is-task",
    "isolation",
    "publish",
    "expose",
];

/// The containers to list, in the given order: running ones (and restarting, which Docker
/// counts as running) unless `all` or a `status` filter; `network_names` maps network ids to
/// names.
pub fn filter_containers<'a>(
    list: &[(&'a ContainerSpec, &ContainerState)],
    all: bool,
    filters: &BTreeMap<String, Vec<String>>,
    network_names: &BTreeMap<Id, String>,
) -> Result<Vec<&'a ContainerSpec>, PlanError> {
    let mut codes = Vec::new();
    for (key, values) in filters {
        match key.as_str() {
            "id" | "name" | "label" | "network" => {}
            "status" => {
                if let Some(v) = values.iter().find(|v| !STATES.contains(&v.as_str())) {
                    return Err(PlanError::Invalid(format!(
                        "invalid filter 'status={v}': invalid value for state ({v}): must be one of {}",
                        STATES.join(", ")
                    )));
                }
            }
            "exited" => {
                for v in values {
                    let code = v.parse::<i32>().map_err(|e| {
                        PlanError::Invalid(format!("invalid filter 'exited={v}': {e}"))
                    })?;
                    codes.push(code);
                }
            }
            k if UNSUPPORTED.contains(&k) => {
                return Err(PlanError::Invalid(format!(
                    "filter '{k}' is not supported by berth (no images, volumes, health checks \
                     or swarm tasks; use id, name, label, status, exited or network)"
                )))
            }
            _ => return Err(PlanError::Invalid(format!("invalid filter '{key}'"))),
        }
    }
    let all = all || filters.get("status").is_some_and(|v| !v.is_empty());
    let any = |key: &str, ok: &dyn Fn(&str) -> bool| {
        filters
            .get(key)
            .is_none_or(|vs| vs.is_empty() || vs.iter().any(|v| ok(v)))
    };
    Ok(list
        .iter()
        .filter(|(c, st)| {
            let running = matches!(st.status, Status::Running | Status::Restarting);
            (all || running)
                && any("id", &|v| loose_match(v, &c.id))
                && any("name", &|v| {
                    loose_match(v, &c.name) || loose_match(v, &format!("/{}", c.name))
                })
                && filters
                    .get("label")
                    .is_none_or(|ls| ls.iter().all(|l| label_matches(&c.process.labels, l)))
                && any("status", &|v| v == st.status.as_str())
                && (codes.is_empty()
                    || (st.status == Status::Exited
                        && !st.started_at.is_empty()
                        && codes.contains(&st.exit_code)))
                && any("network", &|v| {
                    c.endpoints.iter().any(|e| {
                        network_names.get(&e.network_id).map(String::as_str) == Some(v)
                            || e.network_id.starts_with(v)
                    })
                })
        })
        .map(|(c, _)| *c)
        .collect())
}

/// `KEY` (present) or `KEY=VALUE` (present with that value), moby's `MatchKVList`.
fn label_matches(labels: &BTreeMap<String, String>, filter: &str) -> bool {
    match filter.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|have| have == v),
        None => labels.contains_key(filter),
    }
}

/// A `name`/`id` filter value against `s`: exactly equal, or contained in it, with a leading
/// `^` anchoring it at the start and a trailing `$` at the end (the regular expressions people
/// give `docker ps --filter name=`); other characters are literal.
fn loose_match(pattern: &str, s: &str) -> bool {
    if pattern == s {
        return true;
    }
    let (start, p) = match pattern.strip_prefix('^') {
        Some(p) => (true, p),
        None => (false, pattern),
    };
    let (end, p) = match p.strip_suffix('$') {
        Some(p) => (true, p),
        None => (false, p),
    };
    match (start, end) {
        (true, true) => s == p,
        (true, false) => s.starts_with(p),
        (false, true) => s.ends_with(p),
        (false, false) => s.contains(p),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests fail loudly on purpose.
mod tests {
    use super::*;
    use crate::model::EndpointSpec;

    fn ctr(name: &str, id: char, labels: &[(&str, &str)], net: Option<&str>) -> ContainerSpec {
        let mut c = ContainerSpec::new(id.to_string().repeat(64), name, vec!["sleep".into()]);
        c.process.labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Some(n) = net {
            c.endpoints.push(EndpointSpec {
                id: "e".repeat(64),
                network_id: n.repeat(64),
                host_ifname: "veth0".into(),
                ifname: "eth0".into(),
                mac: String::new(),
                addrs: vec![],
                static_ipv4: None,
                static_ipv6: None,
                aliases: vec![],
                gw_priority: 0,
                driver_opts: BTreeMap::new(),
                links: Vec::new(),
                link_local_ips: Vec::new(),
                reused_mac: false,
            });
        }
        c
    }

    fn state(status: Status, code: i32) -> ContainerState {
        ContainerState {
            status,
            exit_code: code,
            started_at: if status == Status::Created {
                String::new()
            } else {
                "2026-01-01T00:00:00Z".into()
            },
            ..Default::default()
        }
    }

    fn names(
        list: &[(&ContainerSpec, &ContainerState)],
        all: bool,
        f: &[(&str, &str)],
    ) -> Result<Vec<String>, String> {
        let mut filters: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in f {
            filters
                .entry(k.to_string())
                .or_default()
                .push(v.to_string());
        }
        let nets = BTreeMap::from([("a".repeat(64), "web".to_string())]);
        filter_containers(list, all, &filters, &nets)
            .map(|v| v.iter().map(|c| c.name.clone()).collect())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn filters_as_dockerd() {
        let web = ctr("web", '1', &[("tier", "front"), ("team", "net")], Some("a"));
        let web2 = ctr("web2", '2', &[("tier", "back")], None);
        let job = ctr("job", '3', &[], None);
        let new = ctr("new", '4', &[("tier", "front")], None);
        let (up, down, fail, created) = (
            state(Status::Running, 0),
            state(Status::Exited, 0),
            state(Status::Exited, 3),
            state(Status::Created, 0),
        );
        let list = [(&web, &up), (&web2, &down), (&job, &fail), (&new, &created)];
        assert_eq!(names(&list, false, &[]).unwrap(), ["web"]);
        assert_eq!(
            names(&list, true, &[("label", "tier")]).unwrap(),
            ["web", "web2", "new"]
        );
        assert_eq!(
            names(&list, true, &[("label", "tier=front")]).unwrap(),
            ["web", "new"]
        );
        // Every label filter must match.
        assert_eq!(
            names(&list, true, &[("label", "tier=front"), ("label", "team")]).unwrap(),
            ["web"]
        );
        // Without -a only running ones.
        assert_eq!(names(&list, false, &[("label", "tier")]).unwrap(), ["web"]);
        assert_eq!(
            names(&list, true, &[("name", "web")]).unwrap(),
            ["web", "web2"]
        );
        assert_eq!(names(&list, true, &[("name", "^web$")]).unwrap(), ["web"]);
        assert_eq!(names(&list, true, &[("name", "/job")]).unwrap(), ["job"]);
        assert_eq!(names(&list, true, &[("id", "222")]).unwrap(), ["web2"]);
        // status lists stopped ones without -a; values are alternatives.
        assert_eq!(
            names(&list, false, &[("status", "exited"), ("status", "created")]).unwrap(),
            ["web2", "job", "new"]
        );
        assert_eq!(names(&list, true, &[("exited", "3")]).unwrap(), ["job"]);
        assert_eq!(names(&list, true, &[("exited", "0")]).unwrap(), ["web2"]);
        assert_eq!(names(&list, true, &[("network", "web")]).unwrap(), ["web"]);
        assert_eq!(names(&list, true, &[("network", "aaaa")]).unwrap(), ["web"]);
        assert!(names(&list, true, &[("network", "nope")])
            .unwrap()
            .is_empty());
    }

    #[test]
    fn bad_filters_are_refused() {
        let list: [(&ContainerSpec, &ContainerState); 0] = [];
        assert_eq!(
            names(&list, true, &[("colour", "red")]),
            Err("invalid filter 'colour'".into())
        );
        let e = names(&list, true, &[("status", "sleeping")]).unwrap_err();
        assert!(e.starts_with("invalid filter 'status=sleeping'"), "{e}");
        let e = names(&list, true, &[("exited", "x")]).unwrap_err();
        assert!(e.starts_with("invalid filter 'exited=x'"), "{e}");
        let e = names(&list, true, &[("ancestor", "alpine")]).unwrap_err();
        assert!(e.contains("not supported by berth"), "{e}");
    }
}
