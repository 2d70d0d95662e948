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

#[tokio::test(flavor = "multi_thread")]
async fn a_closed_stdout_does_not_stop_the_gateway() {
    // `patchbay | head -c 10`: the banner and the logs meet a closed pipe.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let errors = std::env::temp_dir().join(format!(
        "patchbay-test-stderr-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_patchbay"))
        .env("PATCHBAY_SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("PATCHBAY_SERVER__ADMIN_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&errors).unwrap())
        .spawn()
        .unwrap();
    let said = || std::fs::read_to_string(&errors).unwrap_or_default();
    drop(child.stdout.take());
    let url = format!("http://127.0.0.1:{port}/customers/sweetspot:cus_demo_alice");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            panic!("patchbay stopped: {exit}: {}", said());
        }
        let client = http_client();
        let attempt = tokio::time::timeout(
            Duration::from_secs(2),
            client.request(
                http::Request::get(&url)
                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                    .unwrap(),
            ),
        )
        .await;
        if let Ok(Ok(response)) = attempt {
            break response.status();
        }
        assert!(Instant::now() < deadline, "never answered: {}", said());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status, 200);
    assert!(child.try_wait().unwrap().is_none(), "still serving");
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&errors);
}

#[test]
fn a_port_in_use_is_named_with_the_setting_that_moves_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    for (setting, variable) in [
        ("server.admin_listen", "PATCHBAY_SERVER__ADMIN_LISTEN"),
        ("server.listen", "PATCHBAY_SERVER__LISTEN"),
    ] {
        let mut refused = GatewayProcess::spawn(&[("RUST_LOG", "info"), (variable, &port)]);
        assert_eq!(refused.exit_code(), Some(1));
        let output = refused.all_output();
        assert!(
            output.contains(&format!(
                "cannot listen on {port} ({setting}, or {variable}): "
            )) && output.contains("another process holds that port"),
            "{output}"
        );
    }
}

#[test]
fn the_banner_curls_carry_a_token_when_clients_are_configured() {
    let hash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    let clients = format!("[{{name=\"billing\",token_sha256=\"{hash}\"}}]");
    for (env, token) in [
        (vec![], false),
        (vec![("PATCHBAY_CLIENTS", clients.as_str())], true),
    ] {
        let gateway = GatewayProcess::spawn(&env);
        gateway.addr();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !gateway.all_output().contains("merge-patch+json") {
            assert!(Instant::now() < deadline, "{}", gateway.all_output());
            std::thread::sleep(Duration::from_millis(20));
        }
        let output = gateway.all_output();
        let curls: Vec<&str> = output.lines().filter(|l| l.contains("curl")).collect();
        assert_eq!(curls.len(), 2, "{output}");
        for curl in curls {
            assert_eq!(
                curl.contains("-H 'Authorization: Bearer <a client token>'"),
                token,
                "{output}"
            );
        }
    }
}

#[test]
fn memory_held_by_stalled_bodies_is_given_back() {
    use std::io::{Read, Write};
    let gateway = GatewayProcess::spawn(&[
        ("RUST_LOG", "info"),
        ("PATCHBAY_SERVER__BODY_TIMEOUT_MS", "400"),
    ]);
    let addr = gateway.addr();
    std::thread::sleep(Duration::from_millis(300));
    let idle = gateway.rss_kib();
    let head =
        "PATCH /customers/juice:6f7e1e7f-93d1-4fcc-b7a4-738f869615c8 HTTP/1.1\r\nHost: x\r\n\
                Content-Type: application/json\r\nContent-Length: 65000\r\n\r\n{\"first_name\":\"";
    let mut after_wave = Vec::new();
    // Four waves of twenty callers, each sending 60 KB of a 65 KB body and stalling: each wave is cut off
    // by the timeout, and what its buffers held is reused by the next instead of adding up.
    for _ in 0..4 {
        let mut stalled: Vec<std::net::TcpStream> = (0..20)
            .map(|_| {
                let mut stream = std::net::TcpStream::connect(addr.as_str()).unwrap();
                stream.write_all(head.as_bytes()).unwrap();
                stream.write_all(&[b'x'; 60_000]).unwrap();
                stream
            })
            .collect();
        for stream in &mut stalled {
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut answer = Vec::new();
            stream
                .read_to_end(&mut answer)
                .expect("closed by the gateway");
            assert!(
                answer.starts_with(b"HTTP/1.1 408"),
                "{}",
                String::from_utf8_lossy(&answer)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
        after_wave.push(gateway.rss_kib());
    }
    // Twenty stalled 60 KB bodies are 1.2 MB a wave: had they stayed, four waves would hold 4.8 MB.
    let (first, last) = (after_wave[0], after_wave[3]);
    assert!(
        last < first + 2048,
        "memory grows wave after wave: {after_wave:?} (idle {idle})"
    );
    assert!(
        last < idle + 4096,
        "far above idle: {after_wave:?} (idle {idle})"
    );
}
