//! Links: one customer that several providers hold, under one id of the caller's choosing
//! (`[A-Za-z0-9_.-]{1,128}`: no colon, so it never collides with `{provider}:{id}`), kept in the state
//! store (`memory`, `file`, `redis`): links survive restarts and replicas share them.

use super::provider::ProviderRuntime;
use crate::canonical::FieldError;
use crate::state::{StateError, Store};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;

/// The longest link id.
const MAX_ID: usize = 128;

/// Why a link id cannot be one, when it cannot: `[A-Za-z0-9_.-]{1,128}`, not starting with a dot
/// (`.` and `..` are path segments that clients rewrite before sending).
pub(crate) fn check_link_id(id: &str) -> Result<(), String> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-');
    let fits = id.len() <= MAX_ID && id.bytes().all(allowed);
    match fits && id.bytes().next().is_some_and(|first| first != b'.') {
        true => Ok(()),
        false => Err(format!(
            "must be 1 to {MAX_ID} of A-Z a-z 0-9 _ . - (no colon), not starting with a dot"
        )),
    }
}

/// One provider's customer in a link.
#[derive(Clone)]
pub(crate) struct Leg {
    pub provider: Arc<ProviderRuntime>,
    /// As the provider is sent it (checked as the provider's ids are).
    pub id: String,
}

/// A link: its id and its legs, in the link's own order.
pub(crate) struct Link {
    pub id: String,
    pub legs: Vec<Leg>,
}

impl Link {
    pub fn providers(&self) -> Vec<&'static str> {
        self.legs.iter().map(|leg| leg.provider.name()).collect()
    }

    /// `{"sweetspot": "cus_…", …}`, in the link's order (as a JSON text: maps here are sorted).
    pub fn to_json(&self) -> String {
        let members: Vec<String> = self
            .legs
            .iter()
            .map(|leg| {
                format!(
                    "{}:{}",
                    Value::from(leg.provider.name()),
                    Value::from(&*leg.id)
                )
            })
            .collect();
        format!("{{{}}}", members.join(","))
    }
}

/// A link as the store keeps it.
#[derive(Serialize, Deserialize)]
struct Stored {
    legs: Vec<(String, String)>,
}

/// Where links are kept, and the providers they may name.
pub(crate) struct Links {
    store: Arc<Store>,
    providers: Arc<[Arc<ProviderRuntime>]>,
}

/// Why a link request cannot be answered.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LinkError {
    #[error("no link {0}: create it with PUT /links/{0}")]
    NotFound(String),
    #[error("the link is invalid")]
    Invalid(Vec<FieldError>),
}

impl Links {
    pub fn new(store: Arc<Store>, providers: Arc<[Arc<ProviderRuntime>]>) -> Links {
        Links { store, providers }
    }

    fn key(id: &str) -> String {
        format!("links.{id}")
    }

    /// The link `id`: its stored legs whose provider this gateway still has (one it no longer has is
    /// left out, with a warning).
    pub async fn get(&self, id: &str) -> Result<Option<Link>, StateError> {
        let key = Links::key(id);
        let Some(text) = self.store.get(&key).await? else {
            return Ok(None);
        };
        let stored: Stored =
            serde_json::from_str(&text).map_err(|error| self.store.corrupt(&key, error))?;
        let legs = stored
            .legs
            .into_iter()
            .filter_map(|(name, id)| {
                let provider = self.providers.iter().find(|p| p.name() == name);
                if provider.is_none() {
                    tracing::warn!(
                        link = key,
                        provider = name,
                        "a linked provider is not known: left out"
                    );
                }
                Some(Leg {
                    provider: provider?.clone(),
                    id,
                })
            })
            .collect();
        Ok(Some(Link {
            id: id.to_owned(),
            legs,
        }))
    }

    /// Keeps `link`, replacing any of that id: whether it is new.
    pub async fn put(&self, link: &Link) -> Result<bool, StateError> {
        let key = Links::key(&link.id);
        let existed = self.store.get(&key).await?.is_some();
        let stored = Stored {
            legs: link
                .legs
                .iter()
                .map(|leg| (leg.provider.name().to_owned(), leg.id.clone()))
                .collect(),
        };
        let text = serde_json::to_string(&stored).expect("links serialise");
        self.store.put(&key, text).await?;
        Ok(!existed)
    }

    /// Removes the link `id`: whether there was one.
    pub async fn delete(&self, id: &str) -> Result<bool, StateError> {
        self.store.delete(&Links::key(id)).await
    }

    /// The link a `PUT /links/{id}` body describes, `{"<provider>": "<id>", …}` in its order: every
    /// provider known and configured, every id one that provider could have; every bad member at once.
    pub fn link_of(&self, id: &str, body: &[u8]) -> Result<Link, LinkError> {
        let members = serde_json::from_slice::<Ordered>(body)
            .map(|ordered| ordered.0)
            .unwrap_or_default();
        let mut errors = Vec::new();
        let mut legs = Vec::new();
        for (name, value) in members {
            let Some(provider) = self.providers.iter().find(|p| p.name() == name) else {
                let known: Vec<&str> = self.providers.iter().map(|p| p.name()).collect();
                let message = format!("unknown provider; use one of: {}", known.join(", "));
                errors.push(FieldError::new(name, message));
                continue;
            };
            if provider.upstream.is_none() {
                let message = format!(
                    "provider not configured: set providers.{name}.{}",
                    provider.missing.join(", ")
                );
                errors.push(FieldError::new(name, message));
                continue;
            }
            let Value::String(raw) = value else {
                errors.push(FieldError::new(
                    name,
                    "must be the provider's customer id, a string",
                ));
                continue;
            };
            match provider.dialect.parse_id(&raw) {
                Ok(id) => legs.push(Leg {
                    provider: provider.clone(),
                    id,
                }),
                Err(message) => errors.push(FieldError::new(name, message)),
            }
        }
        if legs.is_empty() && errors.is_empty() {
            let message = "name at least one provider's customer: {\"<provider>\": \"<id>\", …}";
            errors.push(FieldError::new("", message));
        }
        match errors.is_empty() {
            true => Ok(Link {
                id: id.to_owned(),
                legs,
            }),
            false => Err(LinkError::Invalid(errors)),
        }
    }
}

/// A JSON object's members in the order they were written (maps here are sorted by key).
struct Ordered(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Ordered, D::Error> {
        struct Members;
        impl<'de> Visitor<'de> for Members {
            type Value = Ordered;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, Value>()? {
                    members.push(member);
                }
                Ok(Ordered(members))
            }
        }
        deserializer.deserialize_map(Members)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_ids_never_hold_a_colon() {
        for ok in ["acme", "cust-42.v2", "A_b", &"x".repeat(128)] {
            assert!(check_link_id(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "juice:1",
            "a b",
            "ä",
            "a/b",
            ".",
            "..",
            ".hidden",
            &"x".repeat(129),
        ] {
            assert!(check_link_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn members_keep_their_order() {
        let ordered: Ordered = serde_json::from_str(r#"{"juice": "a", "count": "b"}"#).unwrap();
        let names: Vec<&str> = ordered.0.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["juice", "count"]);
    }
}
