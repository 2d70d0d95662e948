//! State that survives: COUNT's rotating refresh token and the access tokens, kept in the state store
//! (file or Redis) by real `patchbay` processes in front of the test's sandbox, restarted, killed with
//! SIGKILL, and run as replicas sharing a real `redis-server`.

mod common;

use common::{GatewayProcess, Harness, RedisServer, COUNT_ID, SPARKLAYER_ID};
use http::StatusCode;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{provider_env, Env};

/// COUNT (and any `extra` settings) on a process with the sandbox off, two serving runtimes.
fn count_env(harness: &Harness, extra: &[(&str, &str)]) -> Env {
    let mut env: Env = [
        ("PATCHBAY_SANDBOX__ENABLED", "false"),
        ("PATCHBAY_SERVER__WORKERS", "2"),
        ("RUST_LOG", "info"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    env.extend(provider_env(harness, "count"));
    for (name, value) in extra {
        env.retain(|(k, _)| k != name);
        env.push((name.to_string(), value.to_string()));
    }
    env
}

fn spawn(env: &Env) -> GatewayProcess {
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    GatewayProcess::spawn(&pairs)
}

fn without(env: &Env, name: &str) -> Env {
    env.iter().filter(|(k, _)| k != name).cloned().collect()
}

async fn get(addr: &str, customer: &str) -> common::Answer {
    common::get(&format!("http://{addr}/customers/{customer}")).await
}

async fn count_works(addr: &str) {
    let answer = get(addr, &format!("count:{COUNT_ID}")).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
}

/// The token calls `provider` has received since the log was last cleared.
async fn token_calls(harness: &Harness, provider: &str) -> usize {
    let token_path = match provider {
        "count" => "refresh-user-access-token",
        _ => "auth/token",
    };
    harness
        .log(provider)
        .await
        .iter()
        .filter(|entry| {
            entry["path"]
                .as_str()
                .is_some_and(|p| p.ends_with(token_path))
        })
        .count()
}

/// A scratch directory (a `state.dir`, a CA's files), removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        Scratch(scratch(name))
    }

    /// COUNT on a process keeping its state in this directory.
    fn count_env(&self, harness: &Harness) -> Env {
        let dir = self.0.display().to_string();
        count_env(
            harness,
            &[
                ("PATCHBAY_STATE__BACKEND", "file"),
                ("PATCHBAY_STATE__DIR", &dir),
            ],
        )
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "patchbay-test-{name}-{}",
        uuid::Uuid::new_v4().simple()
    ));
    dir
}

/// The file the file store keeps COUNT's tokens in.
fn count_tokens_file(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.to_string_lossy().contains("tokens.count."))
        .expect("the store holds COUNT's tokens")
}

async fn sandbox() -> Harness {
    let harness = Harness::start().await;
    harness.lift_limits().await;
    harness
}

/// Refresh once (COUNT spends the configured refresh token), restart, expire again: the second
/// process must refresh with the rotated token it never saw, so it must come from the store.
async fn restart_after_rotation_keeps_count_working(state: &[(&str, &str)]) {
    let harness = sandbox().await;
    let env = count_env(&harness, state);
    let first = spawn(&env);
    let addr = first.addr();
    count_works(&addr).await;
    harness.expire_tokens().await;
    harness.clear_log().await;
    count_works(&addr).await;
    assert_eq!(
        token_calls(&harness, "count").await,
        1,
        "one refresh, rotating the token"
    );
    drop(first); // SIGKILL

    let second = spawn(&env);
    let addr = second.addr();
    count_works(&addr).await;
    assert_eq!(
        token_calls(&harness, "count").await,
        1,
        "the stored access token is used: no refresh"
    );
    harness.expire_tokens().await;
    count_works(&addr).await;
    assert_eq!(token_calls(&harness, "count").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_a_rotation_keeps_count_working_with_the_file_store() {
    let dir = Scratch::new("restart-file");
    let dir_text = dir.0.display().to_string();
    restart_after_rotation_keeps_count_working(&[
        ("PATCHBAY_STATE__BACKEND", "file"),
        ("PATCHBAY_STATE__DIR", &dir_text),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_a_rotation_keeps_count_working_with_the_redis_store() {
    let redis = RedisServer::start();
    restart_after_rotation_keeps_count_working(&[
        ("PATCHBAY_STATE__BACKEND", "redis"),
        ("PATCHBAY_STATE__REDIS_URL", &redis.url()),
    ])
    .await;
}

/// SIGKILL the moment the call made with the new access token reaches COUNT: the rotated refresh token
/// must be on disk by then. Every COUNT answer is slowed by 700 ms, so storing it after that call instead
/// of before would leave a window of 700 ms in which the kill lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_right_after_a_rotation_loses_nothing() {
    let harness = sandbox().await;
    let dir = Scratch::new("kill");
    let env = dir.count_env(&harness);
    let first = spawn(&env);
    let addr = first.addr();
    count_works(&addr).await;
    harness.expire_tokens().await;
    harness.clear_log().await;
    harness
        .fault("count", json!({ "latency_ms": 700, "times": 3 }))
        .await;
    let call = tokio::spawn({
        let addr = addr.clone();
        async move { get(&addr, &format!("count:{COUNT_ID}")).await.status }
    });
    // The refused call, the refresh, then the call again with the new token.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let log = harness.log("count").await;
        if log.len() >= 3 {
            assert!(log[1]["path"]
                .as_str()
                .unwrap()
                .ends_with("refresh-user-access-token"));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no retried call: {log:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    drop(first);
    let _ = call.await;
    harness.clear_fault("count").await;

    let second = spawn(&env);
    count_works(&second.addr()).await;
}

/// A re-authorisation: the operator configures a new refresh token. Stored tokens of the old lineage
/// are no longer used; once the new lineage is stored, it wins again over the configuration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_configured_refresh_token_starts_a_new_lineage() {
    let harness = sandbox().await;
    let dir = Scratch::new("lineage");
    let env = dir.count_env(&harness);
    let first = spawn(&env);
    let addr = first.addr();
    harness.expire_tokens().await;
    count_works(&addr).await;
    drop(first);
    // The only refresh token COUNT still honours is the rotated one: configure it, as an operator
    // pasting a new one would, and no access token.
    let stored: Value =
        serde_json::from_str(&std::fs::read_to_string(count_tokens_file(&dir.0)).unwrap()).unwrap();
    let rotated = stored["refresh"].as_str().unwrap().to_owned();
    let mut changed = without(&env, "PATCHBAY_PROVIDERS__COUNT__ACCESS_TOKEN");
    changed.retain(|(k, _)| k != "PATCHBAY_PROVIDERS__COUNT__REFRESH_TOKEN");
    changed.push(("PATCHBAY_PROVIDERS__COUNT__REFRESH_TOKEN".into(), rotated));

    harness.clear_log().await;
    let second = spawn(&changed);
    count_works(&second.addr()).await;
    assert_eq!(
        token_calls(&harness, "count").await,
        1,
        "the configured refresh token is used, not the stored access token of the old lineage"
    );
    drop(second);
    let third = spawn(&changed);
    count_works(&third.addr()).await;
    assert_eq!(
        token_calls(&harness, "count").await,
        1,
        "the new lineage is stored: its access token is used"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_file_that_does_not_parse_stops_start_up_naming_it() {
    let harness = sandbox().await;
    let dir = Scratch::new("corrupt");
    let env = dir.count_env(&harness);
    let first = spawn(&env);
    harness.expire_tokens().await;
    count_works(&first.addr()).await;
    drop(first);
    let file = count_tokens_file(&dir.0);
    std::fs::write(&file, "{\"lineage\": truncated").unwrap();
    harness.clear_log().await;

    let mut second = spawn(&env);
    assert_ne!(second.exit_code(), Some(0));
    let output = second.all_output();
    assert!(
        output.contains(&file.display().to_string()) && output.contains("does not parse"),
        "{output}"
    );
    assert!(!output.contains("panicked"), "{output}");
    assert!(
        harness.log("count").await.is_empty(),
        "nothing reached COUNT"
    );

    // A second process on a directory in use is refused too.
    std::fs::remove_file(&file).unwrap();
    let _holder = spawn(&env);
    _holder.addr();
    let mut other = spawn(&env);
    assert_ne!(other.exit_code(), Some(0));
    assert!(other
        .all_output()
        .contains("in use by another running patchbay"));
}

/// Redis gone when a refresh is due: the call is a 503 naming the store, and COUNT sees no refresh (a
/// refresh without the store would start a lineage the other replicas never learn of).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_store_refuses_a_refresh_instead_of_forking_the_lineage() {
    let harness = sandbox().await;
    let mut redis = RedisServer::start();
    let env = count_env(
        &harness,
        &[
            ("PATCHBAY_STATE__BACKEND", "redis"),
            ("PATCHBAY_STATE__REDIS_URL", &redis.url()),
        ],
    );
    let gateway = spawn(&env);
    let addr = gateway.addr();
    count_works(&addr).await;
    redis.kill();
    harness.expire_tokens().await;
    harness.clear_log().await;
    let answer = get(&addr, &format!("count:{COUNT_ID}")).await;
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        answer.body
    );
    assert_eq!(
        answer.header("content-type"),
        Some("application/problem+json")
    );
    let detail = answer.body["detail"].as_str().unwrap();
    assert!(detail.contains("state store redis unavailable"), "{detail}");
    assert_eq!(
        token_calls(&harness, "count").await,
        0,
        "no refresh without the store"
    );
}

/// TLS to Redis, with a private CA: the rate limit's log and the state store both live in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_carries_quotas_and_state_with_a_private_ca() {
    let dir = Scratch::new("tls");
    let (redis, ca) = RedisServer::start_tls(&dir.0);
    let harness = sandbox().await;
    let ca_text = ca.display().to_string();
    let url = redis.url();
    assert!(url.starts_with("rediss://"));
    let env = count_env(
        &harness,
        &[
            ("PATCHBAY_RATE_LIMIT__BACKEND", "redis"),
            ("PATCHBAY_RATE_LIMIT__REDIS_URL", &url),
            ("PATCHBAY_RATE_LIMIT__REDIS_CA_FILE", &ca_text),
            (
                "PATCHBAY_RATE_LIMIT__FINGERPRINT_KEY",
                "a-shared-test-secret",
            ),
            ("PATCHBAY_STATE__BACKEND", "redis"),
            (
                "PATCHBAY_PROVIDERS__COUNT__RATE_LIMIT__WINDOWS",
                "[{limit=50,seconds=60}]",
            ),
        ],
    );
    let gateway = spawn(&env);
    let addr = gateway.addr();
    harness.expire_tokens().await;
    count_works(&addr).await;
    let mut connection = redis.client().get_connection().unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*patchbay*")
        .query(&mut connection)
        .unwrap();
    assert!(keys.iter().any(|k| k.ends_with(":log")), "{keys:?}");
    assert!(
        keys.iter()
            .any(|k| k.starts_with("patchbay:state:tokens.count.")),
        "{keys:?}"
    );
    drop(gateway);

    // Without the CA, the server's certificate is not trusted: no store, so the limited call is refused.
    let untrusting = without(&env, "PATCHBAY_RATE_LIMIT__REDIS_CA_FILE");
    let gateway = spawn(&untrusting);
    let answer = get(&gateway.addr(), &format!("count:{COUNT_ID}")).await;
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        answer.body
    );
}

/// Three replicas sharing Redis under steady COUNT and SparkLayer traffic while COUNT's access tokens
/// are expired every 2.5 s: no caller sees a failure, COUNT sees at most one refresh per expiry and
/// SparkLayer one token exchange for all three; restarting all three keeps both working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: ~20 s of traffic through three processes"]
async fn three_replicas_refresh_once_per_expiry() {
    three_replicas_through_expiries(false).await;
}

/// The same, with a provider that revokes the previous access token when it issues a new one: the
/// replicas that did not refresh are answered 401 without `token_expired`, take the token the store
/// holds now, and still no caller sees a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: ~20 s of traffic through three processes"]
async fn three_replicas_recover_when_a_rotation_revokes_the_old_token() {
    three_replicas_through_expiries(true).await;
}

async fn three_replicas_through_expiries(revoke_on_rotation: bool) {
    let harness = sandbox().await;
    if revoke_on_rotation {
        harness.revoke_on_rotation().await;
    }
    let redis = RedisServer::start();
    let mut env = count_env(
        &harness,
        &[
            ("PATCHBAY_STATE__BACKEND", "redis"),
            ("PATCHBAY_STATE__REDIS_URL", &redis.url()),
            ("PATCHBAY_SERVER__WORKERS", "1"),
        ],
    );
    env.extend(provider_env(&harness, "sparklayer"));
    harness.clear_log().await;
    let replicas: Vec<GatewayProcess> = (0..3).map(|_| spawn(&env)).collect();
    let addrs: Vec<String> = replicas.iter().map(|r| r.addr()).collect();

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut callers = Vec::new();
    for addr in &addrs {
        for customer in [
            format!("count:{COUNT_ID}"),
            format!("sparklayer:{SPARKLAYER_ID}"),
        ] {
            let (addr, stop) = (addr.clone(), stop.clone());
            callers.push(tokio::spawn(async move {
                let (mut ok, mut failed) = (0, Vec::new());
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let answer = get(&addr, &customer).await;
                    match answer.status {
                        StatusCode::OK => ok += 1,
                        _ => failed.push((answer.status, answer.body)),
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                (ok, failed)
            }));
        }
    }
    let expiries = 6;
    for _ in 0..expiries {
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        harness.expire_tokens().await;
    }
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut total, mut failures) = (0, Vec::new());
    for caller in callers {
        let (ok, failed) = caller.await.unwrap();
        total += ok;
        failures.extend(failed);
    }
    assert!(
        failures.is_empty(),
        "{} of {} caller requests failed; the first: {:?}",
        failures.len(),
        total + failures.len(),
        failures.first()
    );
    assert!(total > 300, "steady traffic: {total} requests");
    let count_refreshes = token_calls(&harness, "count").await;
    assert!(
        (1..=expiries).contains(&count_refreshes),
        "{count_refreshes} COUNT refreshes for {expiries} expiries"
    );
    let exchanges = token_calls(&harness, "sparklayer").await;
    assert!(
        (1..=expiries + 1).contains(&exchanges),
        "{exchanges} SparkLayer token exchanges for 3 replicas and {expiries} expiries"
    );

    drop(replicas);
    harness.clear_log().await;
    let replicas: Vec<GatewayProcess> = (0..3).map(|_| spawn(&env)).collect();
    for replica in &replicas {
        count_works(&replica.addr()).await;
        let answer = get(&replica.addr(), &format!("sparklayer:{SPARKLAYER_ID}")).await;
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    }
    assert_eq!(
        token_calls(&harness, "count").await,
        0,
        "the stored tokens are used"
    );
    assert_eq!(token_calls(&harness, "sparklayer").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotating_provider_on_the_memory_store_is_warned_about_at_start() {
    let harness = sandbox().await;
    let warning = "a restart after a refresh loses it";
    let memory = spawn(&count_env(&harness, &[]));
    memory.addr();
    assert!(
        memory.all_output().contains(warning),
        "{}",
        memory.all_output()
    );
    let dir = Scratch::new("warn");
    let file = spawn(&dir.count_env(&harness));
    file.addr();
    assert!(
        !file.all_output().contains(warning),
        "{}",
        file.all_output()
    );
}
