//! The order a canonical customer's members are written in: `id`, `provider`, the fields, the addresses
//! (each line1 … country), the timestamps, `provider_fields`. JSON objects are unordered and serde_json's
//! maps sort their keys, so answers are written through [`InCanonicalOrder`] to read as DESIGN shows them.

use super::{AddressKind, AddressPart, Field};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

/// A canonical customer (or any map of its shape) that serialises in canonical member order; members
/// the order does not name follow, sorted.
pub struct InCanonicalOrder<'a>(pub &'a Map<String, Value>);

fn customer_order() -> impl Iterator<Item = &'static str> + Clone {
    ["id", "provider"]
        .into_iter()
        .chain(Field::ALL.into_iter().map(Field::name))
        .chain(AddressKind::ALL.into_iter().map(AddressKind::name))
        .chain(["created_at", "updated_at", "provider_fields"])
}

fn address_order() -> impl Iterator<Item = &'static str> + Clone {
    AddressPart::ALL.into_iter().map(AddressPart::name)
}

/// `map`'s members, the named ones first in the given order, then the rest.
fn write_ordered<S: Serializer>(
    serializer: S,
    map: &Map<String, Value>,
    order: impl Iterator<Item = &'static str> + Clone,
    nested: impl Fn(&str) -> bool,
) -> Result<S::Ok, S::Error> {
    let mut out = serializer.serialize_map(Some(map.len()))?;
    let mut written = 0;
    for key in order.clone() {
        match map.get(key) {
            Some(Value::Object(inner)) if nested(key) => {
                out.serialize_entry(key, &Address(inner))?;
            }
            Some(value) => out.serialize_entry(key, value)?,
            None => continue,
        }
        written += 1;
    }
    if written < map.len() {
        for (key, value) in map {
            if !order.clone().any(|named| named == key) {
                out.serialize_entry(key, value)?;
            }
        }
    }
    out.end()
}

struct Address<'a>(&'a Map<String, Value>);

impl Serialize for Address<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        write_ordered(serializer, self.0, address_order(), |_| false)
    }
}

impl Serialize for InCanonicalOrder<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        write_ordered(serializer, self.0, customer_order(), |key| {
            AddressKind::from_name(key).is_some()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn members_come_in_canonical_order() {
        let Value::Object(customer) = json!({
            "updated_at": "u", "provider_fields": {"x": {"b": 1, "a": 2}}, "zzz": 0, "phone": null,
            "billing_address": {"country": "US", "line1": "1 Main", "postal_code": "1"},
            "provider": "x", "id": "x:1", "first_name": "A", "created_at": "c", "aaa": 0
        }) else {
            unreachable!()
        };
        let text = serde_json::to_string(&InCanonicalOrder(&customer)).unwrap();
        assert_eq!(
            text,
            r#"{"id":"x:1","provider":"x","first_name":"A","phone":null,"billing_address":{"line1":"1 Main","postal_code":"1","country":"US"},"created_at":"c","updated_at":"u","provider_fields":{"x":{"a":2,"b":1}},"aaa":0,"zzz":0}"#
        );
        // Same members, same values: only the order differs from the map's own.
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, Value::Object(customer));
    }
}
