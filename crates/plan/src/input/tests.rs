use super::testing::{hostile, MARKER};
use super::*;
use crate::files::{hostname_file, hosts_file, parse_resolv_conf, resolv_conf};
use crate::names::parse_extra_host;
use crate::testutil;
use proptest::prelude::*;
use std::net::IpAddr;

/// A sane container on one network, with one of each field set to something valid.
fn sane() -> (ContainerSpec, crate::model::NetworkSpec) {
    let n = testutil::net('a', "web", "10.1.0.0/24");
    let mut c = testutil::container('c', "api", &[(&n, "10.1.0.2/24")]);
    c.hostname = "api".into();
    c.cmd = vec!["sh".into(), "-c".into(), "echo a\necho b".into()];
    c.env = vec!["A=1".into(), "MULTI=line1\nline2".into(), "BARE".into()];
    c.dns = vec!["192.0.2.53".parse().expect("ip")];
    c.dns_search = vec!["svc.example".into()];
    c.dns_options = vec!["ndots:2".into()];
    c.extra_hosts = vec![("db".into(), "10.9.0.1".parse().expect("ip"))];
    c.process
        .labels
        .insert("com.example.team".into(), "a b".into());
    c.process.user = "1000:1000".into();
    c.process.working_dir = "/srv".into();
    c.endpoints[0].aliases = vec!["www".into()];
    (c, n)
}

#[test]
fn the_sane_container_passes() {
    let (c, _) = sane();
    validate_container_strings(&c).unwrap();
}

/// Puts one bad value into a sane spec.
type Spoiler = Box<dyn Fn(&mut ContainerSpec)>;

#[test]
fn each_field_is_named_when_refused() {
    let cases: Vec<(&str, Spoiler)> = vec![
        ("hostname", Box::new(|c| c.hostname = "a\n6.6.6.6 x".into())),
        (
            "--dns-search",
            Box::new(|c| c.dns_search = vec!["a\nnameserver 6.6.6.6".into()]),
        ),
        (
            "--dns-option",
            Box::new(|c| c.dns_options = vec!["ndots:1\r\n".into()]),
        ),
        (
            "--add-host",
            Box::new(|c| c.extra_hosts = vec![("a b".into(), "1.2.3.4".parse().unwrap())]),
        ),
        ("Cmd", Box::new(|c| c.cmd = vec![String::new()])),
        ("Cmd", Box::new(|c| c.cmd.push("a\0b".into()))),
        ("Env", Box::new(|c| c.env.push("=x".into()))),
        ("Env", Box::new(|c| c.env.push(String::new()))),
        ("Env", Box::new(|c| c.env.push("A\nB=1".into()))),
        ("Env", Box::new(|c| c.env.push("A=\0".into()))),
        (
            "Labels",
            Box::new(|c| {
                c.process.labels.insert("k\n".into(), "v".into());
            }),
        ),
        (
            "Labels",
            Box::new(|c| {
                c.process.labels.insert("k".into(), "v\u{1b}[2J".into());
            }),
        ),
        (
            "Labels",
            Box::new(|c| {
                c.process.labels.insert(String::new(), "v".into());
            }),
        ),
        ("User", Box::new(|c| c.process.user = "root\nx".into())),
        (
            "working directory",
            Box::new(|c| c.process.working_dir = "/a\0".into()),
        ),
        (
            "working directory",
            Box::new(|c| c.process.working_dir = "rel".into()),
        ),
        (
            "alias",
            Box::new(|c| c.endpoints[0].aliases = vec!["a\nb".into()]),
        ),
    ];
    for (field, spoil) in cases {
        let (mut c, _) = sane();
        spoil(&mut c);
        let e = validate_container_strings(&c).unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::InvalidArgument, "{e}");
        assert!(e.to_string().contains(field), "{field}: {e}");
    }
}

/// Which field of the spec a hostile value goes into.
#[derive(Debug, Clone, Copy)]
enum Field {
    Hostname,
    DnsSearch,
    DnsOption,
    ExtraHostName,
    ExtraHostRaw,
    EnvName,
    EnvValue,
    EnvRaw,
    LabelKey,
    LabelValue,
    CmdArg,
    Program,
    User,
    WorkingDir,
    Alias,
}

const FIELDS: [Field; 15] = [
    Field::Hostname,
    Field::DnsSearch,
    Field::DnsOption,
    Field::ExtraHostName,
    Field::ExtraHostRaw,
    Field::EnvName,
    Field::EnvValue,
    Field::EnvRaw,
    Field::LabelKey,
    Field::LabelValue,
    Field::CmdArg,
    Field::Program,
    Field::User,
    Field::WorkingDir,
    Field::Alias,
];

/// The spec with `v` put into `field`. `ExtraHostRaw` goes through `--add-host`'s parser; an
/// `Err` is its refusal.
fn spoil(field: Field, v: &str) -> Result<ContainerSpec, PlanError> {
    let (mut c, _) = sane();
    match field {
        Field::Hostname => c.hostname = v.into(),
        Field::DnsSearch => c.dns_search.push(v.into()),
        Field::DnsOption => c.dns_options.push(v.into()),
        Field::ExtraHostName => c
            .extra_hosts
            .push((v.into(), "10.9.0.2".parse().expect("ip"))),
        Field::ExtraHostRaw => c.extra_hosts.push(parse_extra_host(v)?),
        Field::EnvName => c.env.push(format!("{v}=1")),
        Field::EnvValue => c.env.push(format!("X={v}")),
        Field::EnvRaw => c.env.push(v.into()),
        Field::LabelKey => {
            c.process.labels.insert(v.into(), "v".into());
        }
        Field::LabelValue => {
            c.process.labels.insert("k".into(), v.into());
        }
        Field::CmdArg => c.cmd.push(v.into()),
        Field::Program => c.cmd[0] = v.into(),
        Field::User => c.process.user = v.into(),
        Field::WorkingDir => c.process.working_dir = format!("/{v}"),
        Field::Alias => c.endpoints[0].aliases.push(v.into()),
    }
    Ok(c)
}

/// What a refusal of `field` must name.
fn named(field: Field) -> &'static str {
    match field {
        Field::Hostname => "hostname",
        Field::DnsSearch => "--dns-search",
        Field::DnsOption => "--dns-option",
        Field::ExtraHostName | Field::ExtraHostRaw => "--add-host",
        Field::EnvName | Field::EnvValue | Field::EnvRaw => "(Env)",
        Field::LabelKey | Field::LabelValue => "(Labels)",
        Field::CmdArg | Field::Program => "(Cmd)",
        Field::User => "(User)",
        Field::WorkingDir => "working directory",
        Field::Alias => "alias",
    }
}

/// The generated files of an accepted spec hold exactly the expected lines: each typed field
/// in its place, and nothing else (no injected line, no stray control character).
fn check_files(c: &ContainerSpec, n: &crate::model::NetworkSpec) -> Result<(), TestCaseError> {
    let no_breaks = |what: &str, text: &str| -> Result<(), TestCaseError> {
        prop_assert!(
            !text.contains(['\r', '\0', '\u{b}', '\u{c}', '\u{85}', '\u{2028}', '\u{2029}']),
            "{what} holds a line-breaking character: {text:?}"
        );
        for line in text.lines() {
            let injected = line
                .strip_prefix(MARKER)
                .is_some_and(|rest| rest.starts_with([' ', '\t']));
            prop_assert!(!injected, "{what}: injected {line:?}");
        }
        Ok(())
    };

    let hostname = hostname_file(c);
    no_breaks("/etc/hostname", &hostname)?;
    prop_assert_eq!(hostname, format!("{}\n", c.hostname));

    let hosts = hosts_file(c, std::slice::from_ref(n), &[]);
    no_breaks("/etc/hosts", &hosts)?;
    let lines: Vec<&str> = hosts.lines().collect();
    let addrs = c.endpoints[0].addrs.len();
    prop_assert_eq!(lines.len(), 6 + c.extra_hosts.len() + addrs, "{}", hosts);
    for (i, (name, ip)) in c.extra_hosts.iter().enumerate() {
        prop_assert_eq!(lines[6 + i], format!("{ip}\t{name}"));
    }
    for line in &lines[6 + c.extra_hosts.len()..] {
        prop_assert_eq!(line.split('\t').nth(1), Some(c.hostname.as_str()));
    }
    for line in &lines {
        let (addr, names) = line.split_once('\t').unwrap_or(("", ""));
        prop_assert!(addr.parse::<IpAddr>().is_ok(), "{line:?}");
        prop_assert!(!names.contains('\t'), "{line:?}");
    }

    for embedded in [None, Some("10.1.0.1".parse().expect("ip"))] {
        let text = resolv_conf("nameserver 192.0.2.1\nsearch host.example\n", c, embedded);
        no_breaks("/etc/resolv.conf", &text)?;
        for line in text.lines() {
            prop_assert!(
                ["# ", "nameserver ", "search ", "options "]
                    .iter()
                    .any(|p| line.starts_with(p)),
                "unexpected line {line:?} in {text:?}"
            );
        }
        // Read back as a resolver reads it, it says exactly what was asked for.
        let back = parse_resolv_conf(&text);
        prop_assert_eq!(&back.search, &c.dns_search);
        let mut options = c.dns_options.clone();
        if embedded.is_some() && !options.iter().any(|o| o.starts_with("ndots:")) {
            options.push("ndots:0".into());
        }
        prop_assert_eq!(&back.options, &options);
        let servers: Vec<IpAddr> = embedded.into_iter().chain(c.dns.clone()).take(1).collect();
        prop_assert_eq!(&back.nameservers, &servers);
    }
    Ok(())
}

/// What the kernel and the other outputs need of an accepted spec: no NUL in any argument or
/// environment entry (`CString` is what `execve` takes), env names and labels on one line.
fn check_process(c: &ContainerSpec) -> Result<(), TestCaseError> {
    prop_assert!(c
        .cmd
        .iter()
        .all(|a| std::ffi::CString::new(a.as_str()).is_ok()));
    prop_assert!(!c.cmd[0].is_empty());
    for e in &c.env {
        prop_assert!(std::ffi::CString::new(e.as_str()).is_ok(), "{e:?}");
        let name = e.split('=').next().unwrap_or("");
        prop_assert!(
            !name.is_empty() && !name.chars().any(char::is_control),
            "{e:?}"
        );
    }
    for (k, v) in &c.process.labels {
        prop_assert!(!k.is_empty() && !k.contains('='));
        prop_assert!(
            !k.chars().chain(v.chars()).any(char::is_control),
            "{k:?}={v:?}"
        );
    }
    prop_assert!(!c.process.user.chars().any(char::is_control));
    prop_assert!(!c.process.working_dir.contains('\0'));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    /// Issue 8: a hostile value in any user-given string field of a container is either
    /// refused with a message naming the field, or written so that every generated file
    /// holds exactly the expected lines and no injected one.
    #[test]
    fn hostile_strings_are_refused_or_cannot_inject(
        field in prop::sample::select(FIELDS.to_vec()),
        v in hostile(),
    ) {
        let (_, n) = sane();
        let checked = spoil(field, &v).and_then(|c| validate_container_strings(&c).map(|()| c));
        match checked {
            Err(e) => {
                prop_assert_eq!(e.kind(), crate::error::ErrorKind::InvalidArgument);
                prop_assert!(e.to_string().contains(named(field)), "{:?}: {}", field, e);
            }
            Ok(c) => {
                check_files(&c, &n)?;
                check_process(&c)?;
            }
        }
    }
}
