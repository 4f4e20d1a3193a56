//! Measures setup_endpoint / teardown_endpoint: 50 endpoints, each in its own container
//! namespace, on one bridge. Prints the medians (timing is not asserted). Needs root.
//!
//! `cargo test -p berth-kernel --test endpoint_timing -- --nocapture`

mod common;

use std::time::{Duration, Instant};

use berth_kernel::link::Kernel;
use berth_plan::model::BridgePlan;
use common::{endpoint, TestNs};

const N: usize = 50;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_endpoints() {
    require_root!();
    let h = TestNs::new("h");
    let k = Kernel::new_in(&h.path).await.expect("kernel");
    k.ensure_bridge(&BridgePlan {
        name: "bkbr0".into(),
        mtu: 1500,
        addrs: vec![
            "10.90.0.1/24".parse().expect("net"),
            "fd90::1/64".parse().expect("net"),
        ],
    })
    .await
    .expect("bridge");
    let containers: Vec<TestNs> = (0..N).map(|i| TestNs::new(&format!("c{i}"))).collect();
    let plans: Vec<_> = containers
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let v4 = format!("10.90.0.{}/24", i + 2);
            let v6 = format!("fd90::{:x}/64", i + 2);
            endpoint(
                &format!("bkv{i}"),
                "bkbr0",
                c,
                &[&v4, &v6],
                &["10.90.0.1", "fd90::1"],
                i % 2 == 0,
            )
        })
        .collect();

    let mut setup = Vec::with_capacity(N);
    for p in &plans {
        let t = Instant::now();
        k.setup_endpoint(p).await.expect("setup");
        setup.push(t.elapsed());
    }
    let links = k.list_links().await.expect("links");
    assert_eq!(
        links.iter().filter(|l| l.name.starts_with("bkv")).count(),
        N
    );

    let mut teardown = Vec::with_capacity(N);
    for p in &plans {
        let t = Instant::now();
        k.teardown_endpoint(&p.host_ifname).await.expect("teardown");
        teardown.push(t.elapsed());
    }
    let links = k.list_links().await.expect("links");
    assert_eq!(
        links.iter().filter(|l| l.name.starts_with("bkv")).count(),
        0
    );

    println!(
        "{N} endpoints: setup_endpoint median {} µs (max {} µs), teardown_endpoint median {} µs (max {} µs)",
        median(setup.clone()).as_micros(),
        setup.iter().max().map(|d| d.as_micros()).unwrap_or(0),
        median(teardown.clone()).as_micros(),
        teardown.iter().max().map(|d| d.as_micros()).unwrap_or(0),
    );
}
