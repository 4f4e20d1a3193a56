//! `-u/--user`: Docker's `UID[:GID]` / `NAME[:GROUP]`, resolved as moby's `GetExecUser` does
//! against the container's `/etc/passwd` and `/etc/group` (the host's when it has no rootfs).

/// What a user spec resolves to (libcontainer's `ExecUser`, as moby's `GetExecUser` fills it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecUser {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// The user's home directory from passwd (`/` when the user has no entry): the command's
    /// `HOME` unless the container's environment sets one.
    pub home: String,
    /// Supplementary groups: the groups of the group file that list the user by name as a
    /// member, when the user was found in passwd and no group was given explicitly.
    pub sgids: Vec<u32>,
}

impl ExecUser {
    /// The groups to `setgroups(2)`: the primary group, then the supplementary ones (moby's
    /// `AdditionalGids`).
    pub fn groups(&self) -> Vec<u32> {
        let mut g = vec![self.gid];
        g.extend(self.sgids.iter().filter(|x| **x != self.gid));
        g
    }
}

/// A passwd line's name, uid, gid and home.
fn passwd_entries(passwd: &str) -> impl Iterator<Item = (&str, u32, u32, &str)> {
    passwd.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        Some((
            *f.first()?,
            f.get(2)?.parse::<u32>().ok()?,
            f.get(3)?.parse::<u32>().ok()?,
            f.get(5).copied().unwrap_or(""),
        ))
    })
}

/// A group line's name, gid and members.
fn group_entries(group: &str) -> impl Iterator<Item = (&str, u32, Vec<&str>)> {
    group.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        let members = f
            .get(3)
            .map(|m| m.split(',').filter(|x| !x.is_empty()).collect())
            .unwrap_or_default();
        Some((*f.first()?, f.get(2)?.parse::<u32>().ok()?, members))
    })
}

/// Resolves `spec` against the text of a passwd and a group file, as libcontainer's
/// `GetExecUser`: a numeric user is always a uid (used as is with group 0 when passwd has no
/// such entry), a name must be in passwd; an explicit group (number or name) wins over the
/// user's primary group, else a user found in passwd gets the groups that list it as
/// supplementary groups; `home` comes from passwd.
pub fn resolve(spec: &str, passwd: &str, group: &str) -> Result<ExecUser, String> {
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, g),
        None => (spec, ""),
    };
    let numeric = user.parse::<u32>().ok();
    let found = passwd_entries(passwd).find(|(name, uid, _, _)| match numeric {
        Some(n) => *uid == n,
        None if user.is_empty() => *uid == 0,
        None => *name == user,
    });
    let mut out = ExecUser {
        uid: 0,
        gid: 0,
        home: "/".into(),
        sgids: Vec::new(),
    };
    let matched = match (found, numeric) {
        (Some((name, uid, gid, home)), _) => {
            out.uid = uid;
            out.gid = gid;
            out.home = if home.is_empty() {
                "/".into()
            } else {
                home.into()
            };
            Some(name)
        }
        (None, Some(uid)) => {
            out.uid = uid;
            None
        }
        (None, None) if user.is_empty() => None,
        (None, None) => {
            return Err(format!(
                "unable to find user {user}: no matching entries in passwd file"
            ))
        }
    };
    if !grp.is_empty() {
        let gid_arg = grp.parse::<u32>().ok();
        let explicit = group_entries(group).find_map(|(name, gid, _)| match gid_arg {
            Some(n) => (gid == n).then_some(gid),
            None => (name == grp).then_some(gid),
        });
        out.gid = match (explicit, gid_arg) {
            (Some(gid), _) | (None, Some(gid)) => gid,
            (None, None) => {
                return Err(format!(
                    "unable to find group {grp}: no matching entries in group file"
                ))
            }
        };
    } else if let Some(name) = matched {
        out.sgids = group_entries(group)
            .filter(|(_, _, members)| members.contains(&name))
            .map(|(_, gid, _)| gid)
            .collect();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                          nobody:x:65534:65534::/nonexistent:/bin/false\n\
                          app:x:1000:1000:App:/home/app:/bin/sh\n\
                          100:x:4242:4242::/home/numeric:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nstaff:x:50:app,other\naudio:x:29:app\n\
                         app:x:1000:\nnogroup:x:65534:\nwheel:x:10:root\n";

    fn ids(u: &ExecUser) -> (u32, u32, &str, &[u32]) {
        (u.uid, u.gid, u.home.as_str(), u.sgids.as_slice())
    }

    #[test]
    fn numbers_names_and_groups_as_docker() {
        let r = |s| resolve(s, PASSWD, GROUP).expect(s);
        assert_eq!(ids(&r("65534")), (65534, 65534, "/nonexistent", &[][..]));
        assert_eq!(ids(&r("nobody")), (65534, 65534, "/nonexistent", &[][..]));
        // Not in passwd: as is, group 0, home /.
        assert_eq!(ids(&r("1234")), (1234, 0, "/", &[][..]));
        assert_eq!(ids(&r("1234:77")), (1234, 77, "/", &[][..]));
        assert_eq!(
            ids(&r("nobody:staff")),
            (65534, 50, "/nonexistent", &[][..])
        );
        // A number is always a uid, never the name of an entry.
        assert_eq!(ids(&r("100")), (100, 0, "/", &[][..]));
        assert!(resolve("ghost", PASSWD, GROUP)
            .expect_err("refused")
            .contains("unable to find user ghost"));
        assert!(resolve("0:ghosts", PASSWD, GROUP)
            .expect_err("refused")
            .contains("unable to find group ghosts"));
    }

    #[test]
    fn supplementary_groups_and_home_from_the_files() {
        let app = resolve("app", PASSWD, GROUP).expect("app");
        assert_eq!(ids(&app), (1000, 1000, "/home/app", &[50, 29][..]));
        assert_eq!(app.groups(), [1000, 50, 29]);
        // By uid too: the entry's name is what group lists.
        assert_eq!(
            resolve("1000", PASSWD, GROUP).expect("1000").sgids,
            [50, 29]
        );
        // An explicit group: no supplementary groups.
        let g = resolve("app:audio", PASSWD, GROUP).expect("app:audio");
        assert_eq!(ids(&g), (1000, 29, "/home/app", &[][..]));
        assert_eq!(g.groups(), [29]);
        let root = resolve("", PASSWD, GROUP).expect("root");
        assert_eq!(ids(&root), (0, 0, "/root", &[10][..]));
        // No files at all (a bare --rootfs).
        assert_eq!(
            ids(&resolve("", "", "").expect("none")),
            (0, 0, "/", &[][..])
        );
        assert_eq!(
            ids(&resolve("5:6", "", "").expect("5:6")),
            (5, 6, "/", &[][..])
        );
    }
}
