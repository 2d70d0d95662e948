//! The canonical customer as patchbay answers it, and the order its members are written in: `id`,
//! `provider`, the fields, the addresses (each line1 … country), the timestamps, `provider_fields`.

use super::AddressPart;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;

/// A canonical customer: its members in the order a dialect adds them, which is the documented order
/// (the dialects start with [`Customer::new`] and end with their timestamps and `provider_fields`).
/// Names are the canonical ones, so answering builds no map and searches none.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Customer {
    members: Vec<(&'static str, Member)>,
}

/// One member's value: JSON, or an address held as its parts in canonical order (line1 … country),
/// which is how it is written, so building it takes no map and no owned names.
#[derive(Clone, Debug, PartialEq)]
pub enum Member {
    Json(Value),
    Address(Vec<(AddressPart, Value)>),
}

impl From<Value> for Member {
    fn from(value: Value) -> Member {
        Member::Json(value)
    }
}

impl Member {
    /// The address made of `parts` (taken in canonical order, whatever order they come in), or `null`
    /// when every part is empty.
    pub fn address(mut part: impl FnMut(AddressPart) -> Option<Value>) -> Member {
        let parts: Vec<(AddressPart, Value)> = AddressPart::ALL
            .into_iter()
            .filter_map(|name| part(name).map(|value| (name, value)))
            .collect();
        if parts.iter().all(|(_, value)| value.is_null()) {
            Member::Json(Value::Null)
        } else {
            Member::Address(parts)
        }
    }

    /// The member as a JSON value.
    pub fn to_value(&self) -> Value {
        match self {
            Member::Json(value) => value.clone(),
            Member::Address(parts) => Value::Object(
                parts
                    .iter()
                    .map(|(part, value)| (part.name().to_owned(), value.clone()))
                    .collect(),
            ),
        }
    }
}

impl Customer {
    /// `id` (`provider:id`) and `provider`, the first two members.
    pub fn new(provider: &'static str, id: &str) -> Customer {
        let mut members = Vec::with_capacity(16);
        let mut full = String::with_capacity(provider.len() + 1 + id.len());
        full.push_str(provider);
        full.push(':');
        full.push_str(id);
        members.push(("id", Member::Json(Value::String(full))));
        members.push(("provider", Member::Json(Value::String(provider.to_owned()))));
        Customer { members }
    }

    /// A linked customer's answer: `id`, the link's, first.
    pub fn linked(id: &str) -> Customer {
        let mut members = Vec::with_capacity(16);
        members.push(("id", Member::Json(Value::String(id.to_owned()))));
        Customer { members }
    }

    /// Adds the next member.
    pub fn push(&mut self, name: &'static str, value: impl Into<Member>) {
        self.members.push((name, value.into()));
    }

    /// The member names, in order.
    #[cfg(test)]
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.members.iter().map(|(name, _)| *name)
    }

    #[cfg(test)]
    pub fn get(&self, name: &str) -> Option<Value> {
        self.members
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.to_value())
    }

    /// The customer as a JSON value (members unordered, as JSON objects are).
    #[cfg(test)]
    pub fn to_value(&self) -> Value {
        Value::Object(
            self.members
                .iter()
                .map(|(name, value)| ((*name).to_owned(), value.to_value()))
                .collect(),
        )
    }
}

impl Serialize for Customer {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_map(Some(self.members.len()))?;
        for (name, value) in &self.members {
            out.serialize_entry(name, value)?;
        }
        out.end()
    }
}

impl Serialize for Member {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Member::Json(value) => value.serialize(serializer),
            Member::Address(parts) => {
                let mut out = serializer.serialize_map(Some(parts.len()))?;
                for (part, value) in parts {
                    out.serialize_entry(part.name(), value)?;
                }
                out.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn members_come_in_the_order_added_and_addresses_in_canonical_order() {
        let mut customer = Customer::new("x", "1");
        customer.push("first_name", json!("A"));
        customer.push("phone", Value::Null);
        let stored = json!({"country": "US", "line1": "1 Main", "postal_code": "1"});
        customer.push(
            "billing_address",
            Member::address(|part| stored.get(part.name()).cloned()),
        );
        customer.push(
            "shipping_address",
            Member::address(|part| (part == AddressPart::City).then_some(Value::Null)),
        );
        customer.push("created_at", json!("c"));
        customer.push("provider_fields", json!({"x": {"b": 1, "a": 2}}));
        let text = serde_json::to_string(&customer).unwrap();
        assert_eq!(
            text,
            r#"{"id":"x:1","provider":"x","first_name":"A","phone":null,"billing_address":{"line1":"1 Main","postal_code":"1","country":"US"},"shipping_address":null,"created_at":"c","provider_fields":{"x":{"a":2,"b":1}}}"#
        );
        // Same members, same values: only the order is the customer's own.
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, customer.to_value());
        assert_eq!(customer.get("phone"), Some(Value::Null));
    }
}
