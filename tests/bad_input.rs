//! Bad input gets a clear problem and changes nothing: every case below is answered with its status and a
//! problem+json body, and the sandbox's log shows that no request reached any provider.

mod common;

use bytes::Bytes;
use common::*;
use http::Method;
use serde_json::json;

/// Sends the request and checks status, problem shape, and that no provider saw anything.
async fn refused(
    h: &Harness,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
    status: u16,
) -> Answer {
    h.clear_log().await;
    let answer = h.send(method.clone(), &h.url(path), headers, body).await;
    assert_eq!(answer.status, status, "{method} {path}: {:?}", answer.raw);
    assert_eq!(
        answer.header("content-type"),
        Some("application/problem+json"),
        "{path}"
    );
    assert_eq!(answer.body["status"], status);
    assert!(
        answer.body["title"].is_string()
            && answer.body["detail"].is_string()
            && answer.body["type"].is_string()
    );
    let log = h.full_log().await;
    assert!(
        log.is_empty(),
        "{method} {path} reached a provider: {log:?}"
    );
    answer
}

const JSON: (&str, &str) = ("content-type", "application/merge-patch+json");

#[tokio::test(flavor = "multi_thread")]
async fn routes_methods_and_ids() {
    let h = Harness::start().await;
    let juice = format!("/customers/juice:{JUICE_ID}");
    refused(&h, Method::GET, "/nowhere", &[], "", 404).await;
    refused(&h, Method::GET, "/customers/nosuch:1", &[], "", 404).await;
    refused(&h, Method::GET, "/customers/juice", &[], "", 404).await;
    let answer = refused(&h, Method::DELETE, &juice, &[], "", 405).await;
    assert_eq!(answer.header("allow"), Some("GET, PATCH"));
    refused(&h, Method::PUT, &juice, &[JSON], "{}", 405).await;
    for bad in [
        "sweetspot:..%2F..%2Fadmin",
        "sweetspot:%00",
        "sparklayer:%00abc",
        "juice:not-a-uuid",
        "count:12345",
        "juice:6f7e1e7f93d14fccb7a4738f869615c8",
        "sweetspot:a%20b",
        "sparklayer:.hidden",
        "juice:%ff",
    ] {
        let answer = refused(&h, Method::GET, &format!("/customers/{bad}"), &[], "", 400).await;
        assert_eq!(answer.error_fields(), ["id"], "{bad}");
        refused(
            &h,
            Method::PATCH,
            &format!("/customers/{bad}"),
            &[JSON],
            "{}",
            400,
        )
        .await;
    }
    let long = "a".repeat(10_000);
    refused(
        &h,
        Method::GET,
        &format!("/customers/sweetspot:{long}"),
        &[],
        "",
        400,
    )
    .await;
    refused(
        &h,
        Method::GET,
        &format!("/customers/sparklayer:{long}"),
        &[],
        "",
        400,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_and_content_types() {
    let h = Harness::start().await;
    let path = format!("/customers/juice:{JUICE_ID}");
    refused(&h, Method::PATCH, &path, &[], r#"{"first_name":"A"}"#, 415).await;
    refused(
        &h,
        Method::PATCH,
        &path,
        &[("content-type", "text/plain")],
        r#"{"first_name":"A"}"#,
        415,
    )
    .await;
    refused(
        &h,
        Method::PATCH,
        &path,
        &[("content-type", "application/json; charset=utf-8")],
        "{",
        400,
    )
    .await;
    refused(&h, Method::PATCH, &path, &[JSON], "[1,2]", 400).await;
    refused(&h, Method::PATCH, &path, &[JSON], "\"x\"", 400).await;
    refused(&h, Method::PATCH, &path, &[JSON], "", 400).await;
    refused(
        &h,
        Method::PATCH,
        &path,
        &[JSON],
        r#"{"first_name":"A","first_name":"B"}"#,
        400,
    )
    .await;
    refused(
        &h,
        Method::PATCH,
        &path,
        &[JSON],
        b"{\"first_name\":\"\xff\"}".to_vec(),
        400,
    )
    .await;
    let big = json!({ "first_name": "x".repeat(70 * 1024) }).to_string();
    refused(&h, Method::PATCH, &path, &[JSON], big, 413).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn validation_reports_every_bad_field_at_once() {
    let h = Harness::start().await;
    let path = format!("/customers/count:{COUNT_ID}");
    let body = json!({
        "email": "not-an-email",
        "phone": "12345",
        "website": "ftp://x.example",
        "status": "paused",
        "company_name": 7,
        "billing_address": {"country": "ZZ", "planet": "Mars"},
        "shipping_address": "",
        "id": "count:x",
        "nickname": "x",
        "provider_fields": {"count": {"email": "x@y.example", "uuid": "z"}}
    });
    let answer = refused(&h, Method::PATCH, &path, &[JSON], body.to_string(), 422).await;
    assert_eq!(
        answer.error_fields(),
        [
            "billing_address.country",
            "billing_address.planet",
            "company_name",
            "email",
            "id",
            "nickname",
            "phone",
            "provider_fields.count.email",
            "provider_fields.count.uuid",
            "shipping_address",
            "status",
            "website"
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_and_wrongly_typed_fields() {
    let h = Harness::start().await;
    let path = format!("/customers/sweetspot:{SWEETSPOT_ID}");
    let answer = refused(
        &h,
        Method::PATCH,
        &path,
        &[JSON],
        r#"{"favourite_colour":"blue"}"#,
        422,
    )
    .await;
    assert_eq!(answer.error_fields(), ["favourite_colour"]);
    let answer = refused(
        &h,
        Method::PATCH,
        &path,
        &[JSON],
        r#"{"first_name":["A"],"billing_address":{"city":1}}"#,
        422,
    )
    .await;
    assert_eq!(
        answer.error_fields(),
        ["billing_address.city", "first_name"]
    );
    let answer = refused(
        &h,
        Method::PATCH,
        &path,
        &[JSON],
        r#"{"email":"a@b.example"}"#,
        422,
    )
    .await;
    assert_eq!(
        answer.error_fields(),
        ["email"],
        "Sweet Spot cannot store an email"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unconfigured_provider_answers_503_before_anything_else() {
    let mut config = test_config();
    config.sandbox.enabled = false;
    let h = Harness::with_config(config).await;
    let answer = h
        .send(
            Method::DELETE,
            &h.url("/customers/juice:not-a-uuid"),
            &[],
            "",
        )
        .await;
    assert_eq!(answer.status, 503, "{:?}", answer.body);
    assert!(answer.body["detail"]
        .as_str()
        .unwrap()
        .contains("providers.juice.api_key"));
}

/// Writes raw HTTP/1.1 bytes on a fresh connection and reads until the server closes it or answers.
async fn raw_exchange(addr: std::net::SocketAddr, head: String, chunks: Vec<Vec<u8>>) -> String {
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        stream.write_all(head.as_bytes()).unwrap();
        for chunk in chunks {
            // The server may answer and close before every chunk is sent: that is the point.
            if stream.write_all(&chunk).is_err() {
                break;
            }
        }
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_chunked_body_is_a_413_and_reaches_nobody() {
    let h = Harness::start().await;
    h.clear_log().await;
    let head = format!(
        "PATCH /customers/juice:{JUICE_ID} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Content-Type: application/merge-patch+json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    // 70 chunks of 1 KiB inside one JSON string: no Content-Length announces the size.
    let mut chunks = vec![b"400\r\n{\"first_name\":\"".to_vec()];
    chunks[0].extend(vec![b'x'; 1024 - 15]);
    chunks[0].extend(b"\r\n");
    for _ in 0..70 {
        let mut chunk = b"400\r\n".to_vec();
        chunk.extend(vec![b'x'; 1024]);
        chunk.extend(b"\r\n");
        chunks.push(chunk);
    }
    chunks.push(b"2\r\n\"}\r\n0\r\n\r\n".to_vec());
    let answer = raw_exchange(h.app.addr(), head, chunks).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert!(
        h.full_log().await.is_empty(),
        "nothing may reach a provider"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_small_chunked_patch_is_accepted() {
    let h = Harness::start().await;
    let head = format!(
        "PATCH /customers/juice:{JUICE_ID} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let body = br#"{"first_name":"Chunky"}"#;
    let chunks = vec![
        format!("{:x}\r\n", body.len()).into_bytes(),
        body.to_vec(),
        b"\r\n0\r\n\r\n".to_vec(),
    ];
    let answer = raw_exchange(h.app.addr(), head, chunks).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"first_name\":\"Chunky\""), "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn stalled_bodies_are_cut_off_while_others_are_served() {
    let mut config = test_config();
    config.server.body_timeout_ms = 400;
    let h = Harness::with_config(config).await;
    h.clear_log().await;
    // Twenty callers announce 100 bytes, send one, and stall without hanging up.
    let started = std::time::Instant::now();
    let head = format!(
        "PATCH /customers/juice:{JUICE_ID} HTTP/1.1\r\nHost: x\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
    );
    let stalled: Vec<_> = (0..20)
        .map(|_| {
            let addr = h.app.addr();
            let head = head.clone();
            tokio::task::spawn_blocking(move || {
                use std::io::{Read, Write};
                let mut stream = std::net::TcpStream::connect(addr).unwrap();
                stream
                    .set_read_timeout(Some(std::time::Duration::from_secs(10)))
                    .unwrap();
                stream.write_all(head.as_bytes()).unwrap();
                // Until the server closes the connection (or the read times out: a failure).
                let mut answer = Vec::new();
                let closed = stream.read_to_end(&mut answer).is_ok();
                (closed, String::from_utf8_lossy(&answer).into_owned())
            })
        })
        .collect();
    // Meanwhile another caller is served.
    assert_eq!(h.get(&format!("juice:{JUICE_ID}")).await.status, 200);
    for task in stalled {
        let (closed, answer) = task.await.unwrap();
        assert!(closed, "the connection was held open: {answer}");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("application/problem+json"), "{answer}");
        assert!(answer.contains("server.body_timeout_ms"), "{answer}");
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let log = h.full_log().await;
    assert_eq!(log.len(), 1, "only the GET reached a provider: {log:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_beyond_the_limit_are_closed_at_accept() {
    use std::io::Read;
    let mut config = test_config();
    config.server.max_connections = 3;
    let h = Harness::with_config(config).await;
    let addr = h.app.addr();
    let held: Vec<_> = (0..3)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    // Give the gateway time to accept the three.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut over = std::net::TcpStream::connect(addr).unwrap();
    over.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0; 16];
    // Closed without a byte of answer (EOF, or a reset), not left waiting for a request.
    match over.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the fourth connection was not closed: {other:?}"),
    }
    drop(held);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(h.get(&format!("juice:{JUICE_ID}")).await.status, 200);
}
