//! The operator's surface: the admin listener's probes, the drain on SIGTERM, `check-config`, JSON logs
//! and the log filter, over real sockets and real processes.

mod common;

use common::{get, send, GatewayProcess, Harness, COUNT_ID, SWEETSPOT_ID};
use http::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

#[tokio::test]
async fn the_admin_listener_answers_probes_and_quotas_on_its_own_port() {
    let h = Harness::start().await;
    let api = h.app.addr().to_string();
    let live = get(&h.admin_url("/livez")).await;
    assert_eq!(
        (live.status, &live.body),
        (
            StatusCode::OK,
            &json!({"status": "live", "service": "patchbay", "listen": api})
        )
    );
    let ready = get(&h.admin_url("/readyz")).await;
    assert_eq!(
        (ready.status, &ready.body),
        (
            StatusCode::OK,
            &json!({"status": "ready", "service": "patchbay", "listen": api})
        )
    );
    let quotas = get(&h.admin_url("/quotas")).await;
    assert_eq!(quotas.status, StatusCode::OK);
    assert!(quotas.body["quotas"].is_array());
    // Not on the canonical API's port.
    assert_eq!(get(&h.url("/quotas")).await.status, StatusCode::NOT_FOUND);
    assert_eq!(get(&h.url("/readyz")).await.status, StatusCode::NOT_FOUND);
    let unknown = get(&h.admin_url("/metricz")).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(
        unknown.header("content-type"),
        Some("application/problem+json")
    );
    // Every GET path answers HEAD alike, and any other method with the same `Allow`.
    for path in ["/livez", "/readyz", "/metrics", "/quotas"] {
        let head = h.send(Method::HEAD, &h.admin_url(path), &[], "").await;
        assert_eq!(head.status, StatusCode::OK, "HEAD {path}");
        let post = h.send(Method::POST, &h.admin_url(path), &[], "").await;
        assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED, "{path}");
        assert_eq!(post.header("allow"), Some("GET, HEAD"), "{path}");
        assert_eq!(post.body["status"], 405, "{path}");
    }
    let head = h.send(Method::HEAD, &h.url("/openapi.json"), &[], "").await;
    assert_eq!(head.status, StatusCode::OK);

    // Draining: not ready, still live.
    h.app.health().start_drain();
    let draining = get(&h.admin_url("/readyz")).await;
    assert_eq!(draining.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(draining.body["detail"]
        .as_str()
        .unwrap()
        .contains("draining"));
    assert_eq!(get(&h.admin_url("/livez")).await.status, StatusCode::OK);
}

#[tokio::test]
async fn readiness_is_off_while_a_configured_redis_does_not_answer() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let mut config = common::test_config();
    config.rate_limit.backend = patchbay::config::Backend::Redis;
    config.rate_limit.redis_url = Some(patchbay::config::Secret::new(format!(
        "redis://127.0.0.1:{port}/"
    )));
    config.rate_limit.fingerprint_key = Some(patchbay::config::Secret::new("test-key"));
    let h = Harness::with_config(config).await;
    let ready = get(&h.admin_url("/readyz")).await;
    assert_eq!(
        ready.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        ready.body
    );
    let detail = ready.body["detail"].as_str().unwrap();
    assert!(detail.contains("rate-limit store unreachable"), "{detail}");
    assert_eq!(get(&h.admin_url("/livez")).await.status, StatusCode::OK);
}

fn sandbox_addr(process: &GatewayProcess) -> String {
    process.addr_after("sandbox emulators listening")
}

async fn slow_down(sandbox: &str, provider: &str, ms: u64) {
    let url = format!("http://{sandbox}/_control/faults/{provider}");
    let body = json!({ "latency_ms": ms, "times": 1 }).to_string();
    let headers = [("content-type", "application/json")];
    let answer = send(&common::http_client(), Method::PUT, &url, &headers, body).await;
    assert!(answer.status.is_success(), "{:?}", answer.body);
}

/// SIGTERM with a request waiting on a slow provider: readiness goes off at once, new connections are
/// taken for the drain delay and refused after it, the waiting request is answered, the exit code is 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_exits_0() {
    let mut gateway = GatewayProcess::spawn(&[
        ("RUST_LOG", "info"),
        ("PATCHBAY_SERVER__WORKERS", "2"),
        ("PATCHBAY_SERVER__DRAIN_DELAY_MS", "800"),
    ]);
    let (addr, admin) = (gateway.addr(), gateway.admin_addr());
    slow_down(&sandbox_addr(&gateway), "sweetspot", 1_800).await;
    let waiting = tokio::spawn({
        let url = format!("http://{addr}/customers/sweetspot:{SWEETSPOT_ID}");
        async move { get(&url).await.status }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    gateway.signal("TERM");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ready = get(&format!("http://{admin}/readyz")).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    // Within the drain delay a new caller is still served.
    let during = get(&format!("http://{addr}/customers/count:{COUNT_ID}")).await;
    assert_eq!(during.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(900)).await;
    let after = tokio::net::TcpStream::connect(&addr).await;
    assert!(after.is_err(), "no new connections after the drain delay");
    assert_eq!(
        waiting.await.unwrap(),
        StatusCode::OK,
        "the waiting request was answered"
    );
    assert_eq!(gateway.exit_code(), Some(0), "{}", gateway.all_output());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_grace_requests_are_cut_and_the_exit_code_says_so() {
    let mut gateway = GatewayProcess::spawn(&[
        ("RUST_LOG", "info"),
        ("PATCHBAY_SERVER__SHUTDOWN_GRACE_MS", "300"),
    ]);
    let addr = gateway.addr();
    slow_down(&sandbox_addr(&gateway), "sweetspot", 3_000).await;
    let waiting = tokio::spawn(async move {
        let url = format!("http://{addr}/customers/sweetspot:{SWEETSPOT_ID}");
        let request = http::Request::get(url)
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        common::http_client().request(request).await.is_err()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    gateway.signal("TERM");
    assert_eq!(gateway.exit_code(), Some(1), "{}", gateway.all_output());
    assert!(
        started.elapsed() < Duration::from_millis(2_500),
        "it did not wait for the provider"
    );
    assert!(gateway.all_output().contains("cut short"));
    assert!(waiting.await.unwrap(), "the cut request got no answer");
}

#[test]
fn check_config_lists_every_problem_and_exits_2_or_0() {
    let mut bad = GatewayProcess::spawn_with(
        &["check-config"],
        &[
            ("PATCHBAY_SERVER__LISTEN", "nonsense"),
            ("PATCHBAY_SERVER__UPSTREAM_TIMEOUT_MS", "ten seconds"),
            ("PATCHBAY_SERVER__WORKERS", "5000"),
            ("PATCHBAY_STATE__BACKEND", "file"),
        ],
    );
    assert_eq!(bad.exit_code(), Some(2));
    let output = bad.all_output();
    // Each type error names the setting and its variable, and hides none of the other problems.
    for line in [
        "  - server.listen (from PATCHBAY_SERVER__LISTEN): \"nonsense\" is not an address and port, such as 127.0.0.1:8080",
        "  - server.upstream_timeout_ms (from PATCHBAY_SERVER__UPSTREAM_TIMEOUT_MS): \"ten seconds\" is not a whole number of milliseconds",
        "  - server.workers: at most 256 serving runtimes (0: one per core), not 5000",
        "  - state.dir: required when state.backend = \"file\" (a directory patchbay may create)",
    ] {
        assert!(output.lines().any(|l| l == line), "{line}\nmissing from:\n{output}");
    }
    assert!(
        !output.contains("src/") && !output.contains("default."),
        "{output}"
    );
    assert!(!output.contains("patchbay ready"));
    let mut good = GatewayProcess::spawn_with(&["check-config"], &[]);
    assert_eq!(good.exit_code(), Some(0));
    assert!(good.all_output().contains("configuration OK"));
    let mut version = GatewayProcess::spawn_with(&["--version"], &[]);
    assert_eq!(version.exit_code(), Some(0));
    assert!(version
        .all_output()
        .contains(&format!("patchbay {}", env!("CARGO_PKG_VERSION"))));
}

#[test]
fn json_logs_make_every_line_json_and_a_bad_filter_stops_start_up() {
    let gateway = GatewayProcess::spawn(&[("PATCHBAY_LOG__FORMAT", "json"), ("RUST_LOG", "info")]);
    // The banner is the last thing start-up prints (JSON has no `addr=` for addr() to read).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gateway.all_output().contains("curl -s") {
        assert!(Instant::now() < deadline, "{}", gateway.all_output());
        std::thread::sleep(Duration::from_millis(20));
    }
    for line in gateway.all_output().lines() {
        let event: Value =
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        for key in ["timestamp", "level", "target", "message"] {
            assert!(event.get(key).is_some(), "{key} missing: {line}");
        }
    }
    assert!(!gateway.all_output().contains('\u{1b}'), "no ANSI escapes");

    let mut bad = GatewayProcess::spawn(&[("RUST_LOG", "info,patchbay=loud")]);
    assert_eq!(bad.exit_code(), Some(2));
    assert!(
        bad.all_output().contains("RUST_LOG"),
        "{}",
        bad.all_output()
    );
}

/// The metrics of one process after known traffic: each series counts what happened, and labels name
/// only providers, methods, statuses and fixed words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_happened_with_bounded_labels() {
    let gateway = GatewayProcess::spawn(&[("RUST_LOG", "info")]);
    let (addr, admin) = (gateway.addr(), gateway.admin_addr());
    let customer = |c: &str| format!("http://{addr}/customers/{c}");
    assert_eq!(
        get(&customer(&format!("juice:{}", common::JUICE_ID)))
            .await
            .status,
        200
    );
    let spark = get(&customer(&format!("sparklayer:{}", common::SPARKLAYER_ID))).await;
    assert_eq!(spark.status, 200);
    assert_eq!(get(&customer("evil:1")).await.status, 404);
    // Two writes to one COUNT customer at once: the second waits for the first's read-merge-write.
    slow_down(&sandbox_addr(&gateway), "count", 400).await;
    let patch = |phone: &'static str| {
        let url = customer(&format!("count:{COUNT_ID}"));
        async move {
            let body = json!({ "phone": phone }).to_string();
            let headers = [("content-type", "application/merge-patch+json")];
            send(&common::http_client(), Method::PATCH, &url, &headers, body)
                .await
                .status
        }
    };
    let (first, second) = tokio::join!(patch("+15550001111"), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        patch("+15550002222").await
    });
    assert_eq!((first, second), (StatusCode::OK, StatusCode::OK));

    let scraped = get(&format!("http://{admin}/metrics")).await;
    assert_eq!(scraped.status, StatusCode::OK);
    assert!(scraped
        .header("content-type")
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let text = String::from_utf8(scraped.raw.to_vec()).unwrap();
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    };
    assert_eq!(
        value(
            r#"patchbay_http_requests_total{provider="juice",client="none",method="GET",status="200"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            r#"patchbay_http_requests_total{provider="none",client="none",method="GET",status="404"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            r#"patchbay_http_requests_total{provider="count",client="none",method="PATCH",status="200"}"#
        ),
        2.0
    );
    assert_eq!(
        value(r#"patchbay_http_request_duration_seconds_count{provider="juice",method="GET"}"#),
        1.0
    );
    assert_eq!(
        value(r#"patchbay_upstream_requests_total{provider="juice",status="200"}"#),
        1.0
    );
    assert!(value(r#"patchbay_upstream_request_duration_seconds_count{provider="count"}"#) >= 4.0);
    assert_eq!(
        value(r#"patchbay_rate_limit_decisions_total{provider="juice",decision="admitted"}"#),
        1.0
    );
    assert_eq!(
        value(r#"patchbay_rate_limit_remaining{provider="juice",window="min"}"#),
        9.0
    );
    assert_eq!(
        value(r#"patchbay_rate_limit_remaining{provider="juice",window="day"}"#),
        999.0
    );
    assert_eq!(
        value(r#"patchbay_token_refreshes_total{provider="sparklayer",outcome="obtained"}"#),
        1.0
    );
    assert_eq!(
        value(r#"patchbay_read_merge_write_waits_total{provider="count"}"#),
        1.0
    );
    assert!(
        !text.contains(COUNT_ID) && !text.contains("evil"),
        "no ids in labels"
    );
}

#[test]
fn healthcheck_says_whether_the_admin_listener_is_ready() {
    let gateway = GatewayProcess::spawn(&[("RUST_LOG", "info")]);
    let admin = gateway.admin_addr();
    let mut ready = GatewayProcess::spawn_with(
        &["healthcheck"],
        &[("PATCHBAY_SERVER__ADMIN_LISTEN", &admin)],
    );
    assert_eq!(ready.exit_code(), Some(0), "{}", ready.all_output());
    let addr = gateway.addr();
    let healthcheck = |listen: &str, admin: &str| {
        let mut check = GatewayProcess::spawn_with(
            &["healthcheck"],
            &[
                ("PATCHBAY_SERVER__ADMIN_LISTEN", admin),
                ("PATCHBAY_SERVER__LISTEN", listen),
            ],
        );
        (check.exit_code(), check.all_output())
    };
    assert_eq!(healthcheck(&addr, &admin).0, Some(0), "its own gateway");
    // Another gateway's admin listener answers ready, but not for this configuration's API.
    let (code, output) = healthcheck("127.0.0.1:1", &admin);
    assert_eq!(code, Some(1), "{output}");
    assert!(
        output.contains(&format!(
            "belongs to the patchbay listening on {addr}, not on 127.0.0.1:1 (server.listen)"
        )),
        "{output}"
    );
    // Something that is not patchbay answers 200 on the admin port.
    let stranger = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let stranger_addr = stranger.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut stream in stranger.incoming().map_while(Result::ok) {
            let _ = stream.read(&mut [0; 1024]);
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        }
    });
    let (code, output) = healthcheck("127.0.0.1:0", &stranger_addr);
    assert_eq!(code, Some(1), "{output}");
    assert!(
        output.contains("is not a patchbay admin listener"),
        "{output}"
    );
    drop(gateway);
    let mut gone = GatewayProcess::spawn_with(
        &["healthcheck"],
        &[("PATCHBAY_SERVER__ADMIN_LISTEN", &admin)],
    );
    assert_eq!(gone.exit_code(), Some(1));
    assert!(
        gone.all_output().contains("not ready"),
        "{}",
        gone.all_output()
    );
}

/// One access line per request at info: method, route, provider, status, latency, request id and the
/// upstream calls it made (a COUNT write reads first: two).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_access_line_per_request_with_its_upstream_calls() {
    let gateway = GatewayProcess::spawn(&[("RUST_LOG", "info"), ("PATCHBAY_LOG__FORMAT", "json")]);
    let addr = gateway.addr();
    let url = format!("http://{addr}/customers/count:{COUNT_ID}");
    let client = common::http_client();
    let read = send(
        &client,
        Method::GET,
        &url,
        &[("x-request-id", "read-1")],
        "",
    )
    .await;
    assert_eq!(read.status, 200);
    let headers = [
        ("x-request-id", "write-1"),
        ("content-type", "application/merge-patch+json"),
    ];
    let write = send(
        &client,
        Method::PATCH,
        &url,
        &headers,
        r#"{"phone":"+15550009999"}"#,
    )
    .await;
    assert_eq!(write.status, 200);
    let missing = format!("http://{addr}/nowhere");
    assert_eq!(
        send(
            &client,
            Method::GET,
            &missing,
            &[("x-request-id", "lost-1")],
            ""
        )
        .await
        .status,
        404
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let lines = loop {
        let lines: Vec<Value> = gateway
            .all_output()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|event| event["target"] == "patchbay::access")
            .collect();
        if lines.len() >= 3 || Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(lines.len(), 3, "{lines:?}");
    let by_id = |id: &str| {
        lines
            .iter()
            .find(|l| l["request_id"] == id)
            .unwrap()
            .clone()
    };
    let read = by_id("read-1");
    assert_eq!(
        (
            &read["method"],
            &read["route"],
            &read["provider"],
            &read["status"],
            &read["upstream_calls"]
        ),
        (
            &json!("GET"),
            &json!("/customers/{provider}:{id}"),
            &json!("count"),
            &json!(200),
            &json!(1)
        )
    );
    assert!(read["latency_us"].as_u64().unwrap() > 0);
    let write = by_id("write-1");
    assert_eq!(
        (&write["method"], &write["upstream_calls"]),
        (&json!("PATCH"), &json!(2))
    );
    let lost = by_id("lost-1");
    assert_eq!(
        (&lost["route"], &lost["status"], &lost["upstream_calls"]),
        (&json!("unknown"), &json!(404), &json!(0))
    );
    // Lines are written together, at most 50 ms late; the last ones before the process exits.
    let last = send(
        &client,
        Method::GET,
        &url,
        &[("x-request-id", "last-1")],
        "",
    )
    .await;
    assert_eq!(last.status, 200);
    let mut gateway = gateway;
    gateway.signal("TERM");
    assert_eq!(gateway.exit_code(), Some(0));
    let output = gateway.all_output();
    let access = output.find(r#""request_id":"last-1""#);
    let exiting = output.find("every open request finished");
    assert!(
        access.is_some() && access < exiting,
        "the last access line, before the exit line:\n{output}"
    );
}
