//! The canonical customer as patchbay answers it, and the order its members are written in: `id`,
//! `provider`, the fields, the addresses (each line1 … country), the timestamps, `provider_fields`.

use super::{AddressKind, AddressPart};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

/// A canonical customer: its members in the order a dialect adds them, which is the documented order
/// (the dialects start with [`Customer::new`] and end with their timestamps and `provider_fields`).
/// Names are the canonical ones, so answering builds no map and searches none.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Customer {
    members: Vec<(&'static str, Value)>,
}

impl Customer {
    /// `id` (`provider:id`) and `provider`, the first two members.
    pub fn new(provider: &'static str, id: &str) -> Customer {
        let mut members = Vec::with_capacity(16);
        let mut full = String::with_capacity(provider.len() + 1 + id.len());
        full.push_str(provider);
        full.push(':');
        full.push_str(id);
        members.push(("id", Value::String(full)));
        members.push(("provider", Value::String(provider.to_owned())));
        Customer { members }
    }

    /// Adds the next member.
    pub fn push(&mut self, name: &'static str, value: Value) {
        self.members.push((name, value));
    }

    /// The member names, in order.
    #[cfg(test)]
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.members.iter().map(|(name, _)| *name)
    }

    #[cfg(test)]
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.members
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
    }

    /// The customer as a JSON value (members unordered, as JSON objects are).
    #[cfg(test)]
    pub fn to_value(&self) -> Value {
        Value::Object(
            self.members
                .iter()
                .map(|(name, value)| ((*name).to_owned(), value.clone()))
                .collect(),
        )
    }
}

impl Serialize for Customer {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_map(Some(self.members.len()))?;
        for (name, value) in &self.members {
            match value {
                Value::Object(address) if AddressKind::from_name(name).is_some() => {
                    out.serialize_entry(name, &InAddressOrder(address))?;
                }
                _ => out.serialize_entry(name, value)?,
            }
        }
        out.end()
    }
}

/// An address written line1, line2, city, state, postal_code, country (serde_json's maps sort their
/// keys), then any other member.
struct InAddressOrder<'a>(&'a Map<String, Value>);

impl Serialize for InAddressOrder<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_map(Some(self.0.len()))?;
        let mut written = 0;
        for part in AddressPart::ALL {
            if let Some(value) = self.0.get(part.name()) {
                out.serialize_entry(part.name(), value)?;
                written += 1;
            }
        }
        if written < self.0.len() {
            for (key, value) in self.0 {
                if AddressPart::from_name(key).is_none() {
                    out.serialize_entry(key, value)?;
                }
            }
        }
        out.end()
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
        customer.push(
            "billing_address",
            json!({"country": "US", "line1": "1 Main", "zip": "?", "postal_code": "1"}),
        );
        customer.push("created_at", json!("c"));
        customer.push("provider_fields", json!({"x": {"b": 1, "a": 2}}));
        let text = serde_json::to_string(&customer).unwrap();
        assert_eq!(
            text,
            r#"{"id":"x:1","provider":"x","first_name":"A","phone":null,"billing_address":{"line1":"1 Main","postal_code":"1","country":"US","zip":"?"},"created_at":"c","provider_fields":{"x":{"a":2,"b":1}}}"#
        );
        // Same members, same values: only the order is the customer's own.
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, customer.to_value());
        assert_eq!(customer.get("phone"), Some(&Value::Null));
    }
}
