//! patchbay: one canonical customer API in front of Sweet Spot, COUNT, Juice and SparkLayer.
//!
//! # Layout
//! - [`canonical`]: the canonical model, patch parsing, validation, problems (pure)
//! - [`providers`]: one module per provider dialect (pure)
//! - [`gateway`]: the HTTP service: request checks, callers (auth, quotas, idempotency), read-merge-write,
//!   rescue (error → HTTP)
//! - [`upstream`]: hyper client, TLS, credentials and request signing
//! - [`sandbox`]: the provider emulators, the embedded default
//! - [`state`]: the run-time state store (memory, file, redis): rotated and shared tokens, idempotency records
//! - [`admin`]: the admin listener: probes, metrics and quotas
//! - [`metrics`]: the Prometheus metrics, recorded where things happen
//! - [`config`]: figment loading and validation
//! - [`app`]: the process: sandbox wiring, start-up, shutdown

pub mod admin;
pub mod app;
pub mod canonical;
pub mod config;
pub mod gateway;
pub mod metrics;
pub mod providers;
pub mod sandbox;
pub mod state;
pub mod upstream;
