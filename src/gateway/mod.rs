//! The canonical API over HTTP: `GET` and `PATCH /customers/{provider}:{id}`.
//!
//! The request path is a tower stack assembled in one function, [`stack()`]: the checks in order, the
//! first that fails answering, nothing reaching a provider before the last service. Errors are small
//! typed errors until the rescue turns them into `application/problem+json`. A [`Gateway`] is built
//! once from the configuration (`build`) and shared by every serving runtime; [`serve`] runs one
//! runtime's listener with its own stack and connections; `operations` is what the process and the
//! admin listener ask of it.
//!
//! The request path's vocabulary (`call`), its errors (`error`) and one provider's shared parts
//! (`provider`) import no layer: the layers import them, and the stack imports the layers.

pub mod access;
mod body;
mod build;
mod call;
mod callers;
mod client_quota;
mod content;
mod customer;
mod customer_lock;
mod detach;
pub mod document;
mod error;
mod fanout;
mod idempotency;
mod limit;
mod links;
mod locks;
mod metrics;
mod operations;
mod provider;
pub mod rate_limit;
mod records;
mod request;
mod rescue;
mod route;
mod serve;
mod split;
mod stack;
#[cfg(test)]
mod tests;
mod validate;

pub use build::Gateway;
pub use error::BoxError;
pub(crate) use operations::NotReady;
pub(crate) use rescue::rescue;
pub(crate) use route::RouteError;
pub use serve::serve;
pub use stack::stack;
