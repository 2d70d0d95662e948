//! A linked customer's PATCH (four legs) against the slowest single-provider PATCH of the same
//! change, in one run: the gateway and its sandbox in this process, every provider call delayed by
//! the same latency (as a network would), requests one at a time, the five kinds in turn.
//!
//! `cargo bench --bench fanout` (`FANOUT_ROUNDS`, default 200; `FANOUT_LATENCY_MS`, default 20).

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use patchbay::config::Config;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

async fn send(client: &HttpClient, method: Method, url: &str, body: &str) -> (u16, Duration) {
    let request = Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/merge-patch+json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("a request");
    let started = Instant::now();
    let response = client.request(request).await.expect("an answer");
    let status = response.status().as_u16();
    response.into_body().collect().await.expect("a body");
    (status, started.elapsed())
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() - 1) as f64 * p).round() as usize]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds: usize = std::env::var("FANOUT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let latency: u64 = std::env::var("FANOUT_LATENCY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut config = Config::default();
    config.sandbox.enabled = true;
    config.server.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.server.admin_listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.server.workers = 1;
    for provider in config.providers.values_mut() {
        provider.rate_limit.windows = Vec::new();
    }
    let app = patchbay::app::start(config)
        .await
        .expect("the gateway starts");
    let sandbox = app.sandbox().expect("the sandbox runs").addr();
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let providers = patchbay::sandbox::DEMO_LINK.1;
    for (provider, _) in providers {
        let control = format!("http://{sandbox}/_control");
        let limits = format!("{control}/limits/{provider}");
        send(&client, Method::PUT, &limits, r#"{"windows": []}"#).await;
        let fault = format!(r#"{{"latency_ms": {latency}}}"#);
        send(
            &client,
            Method::PUT,
            &format!("{control}/faults/{provider}"),
            &fault,
        )
        .await;
    }
    let gateway = app.addr();
    // One change every provider stores: a read-merge-write at three of them, a plain write at one.
    let patch = |i: usize| format!(r#"{{"billing_address": {{"city": "City {i}"}}}}"#);
    let mut targets: Vec<(String, String)> = providers
        .iter()
        .map(|(provider, id)| (provider.to_string(), format!("/customers/{provider}:{id}")))
        .collect();
    targets.push(("fan-out (4 legs)".into(), "/customers/demo".into()));
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); targets.len()];
    // Warm: tokens fetched, connections open.
    for (_, path) in &targets {
        let url = format!("http://{gateway}{path}");
        let (status, _) = send(&client, Method::PATCH, &url, &patch(0)).await;
        assert_eq!(status, 200, "{path}");
    }
    for round in 0..rounds {
        // The order turns each round, so that no kind always follows another.
        for k in 0..targets.len() {
            let index = (round + k) % targets.len();
            let url = format!("http://{gateway}{}", targets[index].1);
            let (status, took) = send(&client, Method::PATCH, &url, &patch(round)).await;
            assert_eq!(status, 200, "{url}");
            samples[index].push(took);
        }
    }
    println!(
        "fan-out PATCH vs single-provider PATCHes: {rounds} rounds, {latency} ms per provider call"
    );
    println!("{:<18} {:>10} {:>10}", "target", "p50 ms", "p90 ms");
    let mut medians = Vec::new();
    for ((name, _), samples) in targets.iter().zip(&mut samples) {
        let (p50, p90) = (percentile(samples, 0.5), percentile(samples, 0.9));
        println!("{name:<18} {:>10.2} {:>10.2}", ms(p50), ms(p90));
        medians.push(p50);
    }
    let fanout = medians.pop().expect("the fan-out");
    let slowest = medians.into_iter().max().expect("single legs");
    println!(
        "fan-out p50 / slowest single-leg p50 = {:.2}",
        fanout.as_secs_f64() / slowest.as_secs_f64()
    );
}
