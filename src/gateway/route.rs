//! Checks 1–3: the path names a customer of a known provider (404), that provider has credentials
//! (503), the method is GET or PATCH (405), and the id is one the provider could have (400). What passes
//! goes on as a [`Routed`] request: the caller's head and body, the provider, the id as sent upstream.

use super::call::{ProviderCustomer, Routed};
use super::error::BoxError;
use super::links::check_link_id;
use super::provider::ProviderRuntime;
use super::request::{customer_path, link_path, LinkPart};
use http::header::HOST;
use http::{Method, Request, Version};
use std::sync::Arc;
use tower::filter::Predicate;

/// Why a request names no customer this gateway can serve.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RouteError {
    #[error("an HTTP/1.1 request carries exactly one Host header; this one has {0}")]
    Host(usize),
    /// No such path; the text says which there are.
    #[error("{0}")]
    NotFound(String),
    #[error("unknown provider; use one of: {0}")]
    UnknownProvider(String),
    #[error("provider not configured: set providers.{provider}.{missing} (or enable the sandbox)")]
    NotConfigured {
        provider: &'static str,
        missing: String,
    },
    /// A method the path does not answer; `allow` is what it does (its `Allow` header).
    #[error("{method} is not supported here: use {allow}")]
    Method { method: Method, allow: &'static str },
    #[error("invalid {provider} id: {message}")]
    InvalidId {
        provider: &'static str,
        message: String,
    },
    #[error("invalid link id: {0}")]
    InvalidLinkId(String),
}

const NO_ROUTE: &str = "no such route: the API is GET and PATCH /customers/{provider}:{id} or \
     /customers/{link_id}, and GET, PUT and DELETE /links/{link_id}";

/// The routing check (a `tower::filter` predicate): the gateway's providers, in the order of the
/// route's error message.
#[derive(Clone)]
pub(crate) struct Route {
    providers: Arc<[Arc<ProviderRuntime>]>,
}

impl Route {
    pub fn new(providers: Arc<[Arc<ProviderRuntime>]>) -> Route {
        Route { providers }
    }

    fn route<B>(&self, request: Request<B>) -> Result<Routed<B>, RouteError> {
        let (head, body) = request.into_parts();
        one_host(&head)?;
        let target =
            customer_path(head.uri.path()).ok_or_else(|| RouteError::NotFound(NO_ROUTE.into()))?;
        let provider = self
            .providers
            .iter()
            .find(|p| p.name() == target.provider)
            .ok_or_else(|| {
                let names: Vec<&str> = self.providers.iter().map(|p| p.name()).collect();
                RouteError::UnknownProvider(names.join(", "))
            })?;
        let name = provider.name();
        tracing::Span::current().record("provider", name);
        if provider.upstream.is_none() {
            return Err(RouteError::NotConfigured {
                provider: name,
                missing: provider.missing.join(", "),
            });
        }
        if head.method != Method::GET && head.method != Method::PATCH {
            return Err(RouteError::Method {
                method: head.method,
                allow: "GET, PATCH",
            });
        }
        let id = target
            .id
            .and_then(|raw| provider.dialect.parse_id(&raw))
            .map_err(|message| RouteError::InvalidId {
                provider: name,
                message,
            })?;
        Ok(Routed {
            head,
            body,
            target: ProviderCustomer {
                provider: provider.clone(),
                id,
            },
        })
    }
}

impl<B> Predicate<Request<B>> for Route {
    type Request = Routed<B>;

    fn check(&mut self, request: Request<B>) -> Result<Routed<B>, BoxError> {
        Ok(self.route(request)?)
    }
}

/// An HTTP/1.1 request carries exactly one `Host` (400).
fn one_host(head: &http::request::Parts) -> Result<(), RouteError> {
    let hosts = head.headers.get_all(HOST).iter().count();
    match head.version == Version::HTTP_11 && hosts != 1 {
        true => Err(RouteError::Host(hosts)),
        false => Ok(()),
    }
}

/// What a link's request names: the link, or the customer it links.
pub(crate) struct LinkTarget {
    pub id: String,
    pub part: LinkPart,
}

/// The routing check of a link's paths (a `tower::filter` predicate): one Host (400), a link id
/// (400), a method the path answers (405).
#[derive(Clone, Copy, Default)]
pub(crate) struct LinkRoute;

impl LinkRoute {
    fn route<B>(request: Request<B>) -> Result<Routed<B, LinkTarget>, RouteError> {
        let (head, body) = request.into_parts();
        one_host(&head)?;
        let (part, id) =
            link_path(head.uri.path()).ok_or_else(|| RouteError::NotFound(NO_ROUTE.into()))?;
        let allow = match part {
            LinkPart::Link => "GET, PUT, DELETE",
            LinkPart::Customer => "GET, PATCH",
        };
        let method = &head.method;
        let allowed = match part {
            LinkPart::Link => [Method::GET, Method::PUT, Method::DELETE].contains(method),
            LinkPart::Customer => method == Method::GET || method == Method::PATCH,
        };
        if !allowed {
            let method = method.clone();
            return Err(RouteError::Method { method, allow });
        }
        let id = id
            .and_then(|id| check_link_id(&id).map(|()| id))
            .map_err(RouteError::InvalidLinkId)?;
        Ok(Routed {
            head,
            body,
            target: LinkTarget { id, part },
        })
    }
}

impl<B> Predicate<Request<B>> for LinkRoute {
    type Request = Routed<B, LinkTarget>;

    fn check(&mut self, request: Request<B>) -> Result<Routed<B, LinkTarget>, BoxError> {
        Ok(LinkRoute::route(request)?)
    }
}
