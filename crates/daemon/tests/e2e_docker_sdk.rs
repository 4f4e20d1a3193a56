//! End-to-end: the Docker SDK for Python's own network integration tests (docker-py 7.2.0,
//! vendored unmodified under `tests/docker_py/`) pass against berthd.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{show, stdout, World};

/// The upstream tests that do not run against berthd, each with the reason (docs/API.md).
const DESELECTED: &[(&str, &str)] = &[
    (
        "test_create_network_attachable",
        "needs a swarm (init_swarm, overlay)",
    ),
    (
        "test_create_network_ingress",
        "needs a swarm (init_swarm, ingress)",
    ),
    (
        "test_create_inspect_network_with_scope",
        "needs a swarm (init_swarm, scope=swarm)",
    ),
];

/// How many upstream tests must pass (33 collected, less the deselected ones).
const EXPECTED_PASSED: usize = 30;

/// The Python with `docker==7.2.0` and `pytest` (`.ci/run` makes `target/sdk-venv`), or
/// `BERTH_SDK_PYTHON`.
fn sdk_python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BERTH_SDK_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/sdk-venv/bin/python");
    p.exists().then_some(p)
}

/// Proves: docker-py 7.2.0's `api_network_test.py` and `models_networks_test.py`, run unmodified
/// with `DOCKER_HOST` at berthd, pass (network create/inspect/list/prune, IPAM, labels, IPv6,
/// containers created with `EndpointsConfig` and connected/disconnected with aliases, static
/// IPv4/IPv6, link-local addresses, links, MAC and driver options), except the deselected ones listed above. `--noconftest`
/// leaves out the session fixture that pulls `alpine:3.10`: berth has no images (the command
/// runs from the host).
#[test]
fn docker_sdk_network_tests_pass() {
    require_root!();
    let Some(python) = sdk_python() else {
        assert!(
            std::env::var_os("BERTH_CI").is_none(),
            "no Python with the docker SDK (.ci/run makes target/sdk-venv)"
        );
        eprintln!("skipped: no target/sdk-venv (pip install docker==7.2.0 pytest paramiko)");
        return;
    };
    let w = World::new();
    // The tests run `top` in the containers they exec into (`test_create_with_links`,
    // `test_connect_with_links`): the test image's busybox `top` runs without a terminal,
    // the host's procps `top` exits at once ("failed tty get"). Standing in for the image,
    // berthd (and so its containers) sees a `top` that runs the host's in batch mode.
    let real_top = w.dir.join("top.real");
    std::fs::copy("/usr/bin/top", &real_top).expect("copy /usr/bin/top");
    let shim = w.dir.join("top");
    std::fs::write(
        &shim,
        format!("#!/bin/sh\nexec {} -b -d 3600 \"$@\"\n", real_top.display()),
    )
    .expect("write the top shim");
    std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755))
        .expect("chmod the top shim");
    w.restart_daemon_with_bind(&shim, "/usr/bin/top");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/docker_py");
    let mut cmd = Command::new(&python);
    cmd.current_dir(&dir)
        .args([
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "--noconftest",
            "-rA",
        ])
        .args(["-o", "addopts="])
        .env("DOCKER_HOST", w.host_url())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_CERT_PATH")
        .env_remove("DOCKER_TEST_API_VERSION");
    for (name, _) in DESELECTED {
        cmd.arg("--deselect").arg(format!(
            "tests/integration/api_network_test.py::TestNetworks::{name}"
        ));
    }
    cmd.args([
        "tests/integration/api_network_test.py",
        "tests/integration/models_networks_test.py",
    ]);
    let o = common::run_timeout(cmd, Duration::from_secs(120));
    let out = stdout(&o);
    assert!(
        o.status.success(),
        "pytest failed: {}\nberthd log:\n{}",
        show(&o),
        w.log_text()
    );
    let passed = out.lines().filter(|l| l.starts_with("PASSED ")).count();
    assert_eq!(passed, EXPECTED_PASSED, "{out}");
    let summary = out.lines().last().unwrap_or_default();
    assert!(
        summary.contains(&format!("{EXPECTED_PASSED} passed"))
            && summary.contains(&format!("{} deselected", DESELECTED.len()))
            && !summary.contains("skipped"),
        "{summary}"
    );
}
