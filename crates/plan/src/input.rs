//! Checks of the user-given strings of a container (issue 8, hostile input): each string that
//! berth writes into a generated file, hands to the kernel (`execve` arguments and
//! environment, paths) or prints is refused with a message naming its field, before anything
//! is stored, when it could change the meaning of what it lands in.
//!
//! Where each string of `POST /containers/create` ends up, and what guards it:
//! - `Hostname`, `HostConfig.DnsSearch`, `DnsOptions`, the names of `ExtraHosts`: one field of
//!   `/etc/hostname`, `/etc/hosts`, `/etc/resolv.conf` ([`crate::files`]):
//!   [`crate::names::validate_file_field`] (no whitespace, control character, `#` or `;`).
//! - `HostConfig.Dns`, `ExtraHosts` addresses, `IPAMConfig`, `MacAddress`, `PortBindings`:
//!   parsed into typed values (`IpAddr`, MAC bytes, port numbers) before use; the files are
//!   written from those, so no text of the request reaches them.
//! - The container name (`?name=`) and aliases: DNS records, nft comments, log lines:
//!   [`crate::names::validate_name`] and [`crate::network::validate_alias`].
//! - `Env`: the command's environment. Like dockerd, an entry with an empty name is refused;
//!   berth also refuses control characters in names (a name is one token of `env` output and
//!   of shell scripts) and NUL anywhere (`execve` cannot carry it). Values may hold newlines.
//! - `Cmd`: `execve` arguments: NUL refused, the program name must not be empty. Newlines are
//!   legitimate (`sh -c $'a\nb'`).
//! - `Labels`: printed by `ps`/`inspect` and matched by filters: no control characters in keys
//!   or values, no empty key.
//! - `User`: looked up in the container's `/etc/passwd` and `/etc/group`, lines of `:`-fields:
//!   no control characters. `WorkingDir`: a path: absolute, no NUL.
//! - `Domainname`, `Entrypoint` and other members berth does not model are ignored (never
//!   stored); endpoint `DriverOpts` are only stored and returned as JSON.

use crate::error::PlanError;
use crate::model::ContainerSpec;
use crate::names::validate_file_field;
use crate::network::validate_alias;

/// Longest hostname berth accepts (Linux's `HOST_NAME_MAX`).
pub const MAX_HOSTNAME_LEN: usize = 64;

/// Longest DNS search domain or resolver option (a DNS name is at most 253 characters).
pub const MAX_DNS_FIELD_LEN: usize = 253;

/// Checks every user-given string of a container spec (see the module's comment for where
/// each one goes). The first bad field is named in the message (`invalid hostname …`,
/// `invalid environment variable …`, `invalid label …`).
pub fn validate_container_strings(c: &ContainerSpec) -> Result<(), PlanError> {
    validate_file_field("hostname", &c.hostname, MAX_HOSTNAME_LEN)?;
    for d in &c.dns_search {
        validate_file_field("--dns-search", d, MAX_DNS_FIELD_LEN)?;
    }
    for o in &c.dns_options {
        validate_file_field("--dns-option", o, MAX_DNS_FIELD_LEN)?;
    }
    for (name, _) in &c.extra_hosts {
        validate_file_field("--add-host name", name, MAX_DNS_FIELD_LEN)?;
    }
    validate_cmd(&c.cmd)?;
    for e in &c.env {
        validate_env(e)?;
    }
    for (k, v) in &c.process.labels {
        validate_label(k, v)?;
    }
    validate_user(&c.process.user)?;
    validate_working_dir(&c.process.working_dir)?;
    for ep in &c.endpoints {
        for a in &ep.aliases {
            validate_alias(a)?;
        }
    }
    Ok(())
}

/// Checks a command (`Cmd`): a program name, and no NUL in any argument (`execve` takes
/// NUL-terminated strings: the argument would be cut, or the start fail with a 500).
pub fn validate_cmd(cmd: &[String]) -> Result<(), PlanError> {
    if cmd.first().is_some_and(String::is_empty) {
        return Err(PlanError::Invalid(
            "invalid command (Cmd): the program name is empty".into(),
        ));
    }
    if let Some((i, a)) = cmd.iter().enumerate().find(|(_, a)| a.contains('\0')) {
        return Err(PlanError::Invalid(format!(
            "invalid command (Cmd) argument {i} {a:?}: it contains a NUL byte, which no \
             program argument can carry"
        )));
    }
    Ok(())
}

/// Checks one `Env` entry, `NAME=VALUE` or a bare `NAME`: a non-empty name (dockerd's rule and
/// message), without control characters (or `=`, which ends it); no NUL in the value.
pub fn validate_env(entry: &str) -> Result<(), PlanError> {
    let bad = |reason: &str| {
        Err(PlanError::Invalid(format!(
            "invalid environment variable: {entry:?} (Env): {reason}"
        )))
    };
    let (name, value) = entry.split_once('=').unwrap_or((entry, ""));
    if name.is_empty() {
        return bad("its name is empty");
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return bad(&format!("its name contains the control character {c:?}"));
    }
    if value.contains('\0') {
        return bad("its value contains a NUL byte, which no environment can carry");
    }
    Ok(())
}

/// Checks one label: a non-empty key without `=` and no control character in key or value (a
/// newline would forge a line of `ps`/`inspect --format` output, and a label cannot be given
/// back on a command line with one).
pub fn validate_label(key: &str, value: &str) -> Result<(), PlanError> {
    let bad = |reason: String| {
        Err(PlanError::Invalid(format!(
            "invalid label {key:?}={value:?} (Labels): {reason}"
        )))
    };
    if key.is_empty() {
        return bad("its key is empty".into());
    }
    if key.contains('=') {
        return bad("its key contains '='".into());
    }
    if let Some(c) = key.chars().chain(value.chars()).find(|c| c.is_control()) {
        return bad(format!("it contains the control character {c:?}"));
    }
    Ok(())
}

/// Checks `User` (`NAME[:GROUP]` or `UID[:GID]`): no control characters, since it is matched
/// against lines of the container's `/etc/passwd` and `/etc/group`.
pub fn validate_user(user: &str) -> Result<(), PlanError> {
    if let Some(c) = user.chars().find(|c| c.is_control()) {
        return Err(PlanError::Invalid(format!(
            "invalid user {user:?} (User): control character {c:?} is not allowed"
        )));
    }
    Ok(())
}

/// Checks `WorkingDir`: empty (`/`) or an absolute path (dockerd's rule and words), without NUL.
pub fn validate_working_dir(dir: &str) -> Result<(), PlanError> {
    if dir.is_empty() {
        return Ok(());
    }
    if !dir.starts_with('/') {
        return Err(PlanError::Invalid(format!(
            "the working directory '{dir}' is invalid, it needs to be an absolute path"
        )));
    }
    if dir.contains('\0') {
        return Err(PlanError::Invalid(format!(
            "the working directory {dir:?} is invalid: it contains a NUL byte"
        )));
    }
    Ok(())
}

/// Generators of hostile strings for property tests, shared by this crate's tests and the
/// daemon's end-to-end ones (feature `testing`).
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    use proptest::prelude::*;

    /// Separators that end a line or a field somewhere: in a file, a terminal, a log, a C
    /// string.
    pub const BREAKS: [&str; 14] = [
        "\n", "\r", "\r\n", "\0", "\u{b}", "\u{c}", "\u{85}", "\u{2028}", "\u{2029}", " ", "\t",
        "#", ";", "\u{1b}[",
    ];

    /// The marker that leads every injected line: a test fails when a generated file has a
    /// line starting with it followed by whitespace.
    pub const MARKER: &str = "6.6.6.6";

    /// Strings an attacker would try: an injected line led by [`MARKER`] after one of
    /// [`BREAKS`], control characters, quotes and backslashes, unicode, the empty string, long
    /// ones (at most 300 bytes, so that a request body fits one command-line argument), and
    /// sane ones, so that acceptance is exercised too.
    pub fn hostile() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => ("[a-z0-9.-]{0,12}", prop::sample::select(BREAKS.to_vec()), "[a-z ]{0,8}")
                .prop_map(|(a, sep, b)| format!("{a}{sep}{MARKER} bank.example{b}")),
            3 => "[a-z0-9][a-z0-9._:-]{0,15}",
            2 => "[\\x00-\\x1f\\x7f#; \"'\\\\=:a]{0,6}",
            1 => "\\PC{0,24}",
            1 => ".{0,24}",
            1 => "[a-z]{60,70}",
            1 => "[a-z.]{240,300}",
            1 => Just(String::new()),
        ]
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests fail loudly on purpose.
mod tests;
