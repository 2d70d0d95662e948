//! The binary as an operator runs it: one serving runtime per core sharing the port, which must still
//! refuse a port someone else holds, and answer on every runtime.

mod common;

use common::*;
use http::Method;
use std::time::{Duration, Instant};

#[test]
fn a_second_patchbay_on_the_same_port_is_refused_not_sharing_it() {
    // The first one shares its port between its own runtimes (SO_REUSEPORT), which the kernel would
    // also let a second process of the same user join, silently splitting the traffic.
    let first = GatewayProcess::spawn(&[("RUST_LOG", "info"), ("PATCHBAY_SERVER__WORKERS", "2")]);
    let addr = first.addr();
    let second = GatewayProcess::spawn(&[
        ("RUST_LOG", "info"),
        ("PATCHBAY_SERVER__LISTEN", addr.as_str()),
        ("PATCHBAY_SERVER__WORKERS", "2"),
    ]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !second.all_output().contains("cannot listen on") {
        assert!(
            !second.all_output().contains("patchbay ready"),
            "a second patchbay started on {addr}: {}",
            second.all_output()
        );
        assert!(
            Instant::now() < deadline,
            "not refused: {}",
            second.all_output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_runtime_serves_when_several_share_the_port() {
    let gateway = GatewayProcess::spawn(&[("RUST_LOG", "info"), ("PATCHBAY_SERVER__WORKERS", "3")]);
    let url = format!(
        "http://{}/customers/sweetspot:cus_demo_alice",
        gateway.addr()
    );
    // Many fresh connections: the kernel spreads them over the three listeners.
    let tasks: Vec<_> = (0..60)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                send(&http_client(), Method::GET, &url, &[], "")
                    .await
                    .status
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
}

#[test]
fn the_sandbox_never_silently_replaces_a_real_credential() {
    // The out-of-the-box configuration runs the sandbox; a real key set beside it would be ignored.
    let mut refused = GatewayProcess::spawn(&[
        ("RUST_LOG", "info"),
        (
            "PATCHBAY_PROVIDERS__JUICE__API_KEY",
            "live_do_not_ignore_me",
        ),
        (
            "PATCHBAY_PROVIDERS__COUNT__BASE_URL",
            "https://count.example",
        ),
    ]);
    assert_ne!(refused.exit_code(), Some(0));
    let output = refused.all_output();
    assert!(!output.contains("patchbay ready"), "{output}");
    for setting in ["providers.juice.api_key", "providers.count.base_url"] {
        assert!(
            output.contains(&format!("{setting} is set, but the sandbox is on")),
            "{setting} not named: {output}"
        );
    }
    assert!(output.contains("sandbox.enabled = false"), "{output}");
    assert!(
        !output.contains("live_do_not_ignore_me"),
        "a secret in the output: {output}"
    );
    // Choosing, either way, starts.
    let real = GatewayProcess::spawn(&[
        ("RUST_LOG", "info"),
        ("PATCHBAY_SANDBOX__ENABLED", "false"),
        (
            "PATCHBAY_PROVIDERS__JUICE__API_KEY",
            "live_do_not_ignore_me",
        ),
    ]);
    real.addr();
    let sandbox = GatewayProcess::spawn(&[("RUST_LOG", "info")]);
    sandbox.addr();
}
