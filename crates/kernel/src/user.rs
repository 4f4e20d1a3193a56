//! `-u/--user`: Docker's `UID[:GID]` / `NAME[:GROUP]`, resolved as moby's `GetExecUser` does
//! against the container's `/etc/passwd` and `/etc/group` (the host's when it has no rootfs).

/// The ids a user spec resolves to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecUser {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
}

/// Resolves `spec` against the text of a passwd and a group file. A numeric user not in
/// passwd is used as is, with group 0 (as Docker); a name must be there. The group, if given,
/// wins over the user's primary group.
pub fn resolve(spec: &str, passwd: &str, group: &str) -> Result<ExecUser, String> {
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let entries = passwd.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        Some((
            *f.first()?,
            f.get(2)?.parse::<u32>().ok()?,
            f.get(3)?.parse::<u32>().ok()?,
        ))
    });
    let mut out = ExecUser { uid: 0, gid: 0 };
    if !user.is_empty() {
        let numeric = user.parse::<u32>().ok();
        let found = entries
            .into_iter()
            .find(|(name, uid, _)| *name == user || Some(*uid) == numeric);
        out = match (found, numeric) {
            (Some((_, uid, gid)), _) => ExecUser { uid, gid },
            (None, Some(uid)) => ExecUser { uid, gid: 0 },
            (None, None) => {
                return Err(format!(
                    "unable to find user {user}: no matching entries in passwd file"
                ))
            }
        };
    }
    if let Some(g) = grp.filter(|g| !g.is_empty()) {
        out.gid = match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group
                .lines()
                .find_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    (*f.first()? == g).then(|| f.get(2)?.parse::<u32>().ok())?
                })
                .ok_or_else(|| {
                    format!("unable to find group {g}: no matching entries in group file")
                })?,
        };
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n";
    const GROUP: &str = "root:x:0:\nstaff:x:50:\nnogroup:x:65534:\n";

    #[test]
    fn numbers_names_and_groups_as_docker() {
        let r = |s| resolve(s, PASSWD, GROUP);
        assert_eq!(
            r("65534"),
            Ok(ExecUser {
                uid: 65534,
                gid: 65534
            })
        );
        assert_eq!(
            r("nobody"),
            Ok(ExecUser {
                uid: 65534,
                gid: 65534
            })
        );
        assert_eq!(r("1234"), Ok(ExecUser { uid: 1234, gid: 0 }));
        assert_eq!(r("1234:77"), Ok(ExecUser { uid: 1234, gid: 77 }));
        assert_eq!(
            r("nobody:staff"),
            Ok(ExecUser {
                uid: 65534,
                gid: 50
            })
        );
        assert!(r("ghost")
            .expect_err("refused")
            .contains("unable to find user ghost"));
        assert!(r("0:ghosts")
            .expect_err("refused")
            .contains("unable to find group ghosts"));
    }
}
