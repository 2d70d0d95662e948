//! patchbay: one canonical customer API in front of Sweet Spot, COUNT, Juice and SparkLayer.
//!
//! # Layout
//! - [`canonical`]: the canonical model, patch parsing, validation, problems (pure)
//! - [`providers`]: one module per provider dialect (pure)
//! - `gateway`: the HTTP service: routing, read-merge-write, rescue (error → HTTP)
//! - `upstream`: hyper client, TLS, credentials and request signing
//! - `sandbox`: the provider emulators, the embedded default
//! - `config`: figment loading and validation

pub mod canonical;
pub mod config;
pub mod providers;
