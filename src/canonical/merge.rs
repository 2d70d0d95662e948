//! The meaning of a patch on the canonical side: `merge(before, patch)` is what a GET must show after the
//! PATCH. The property tests hold every dialect (and its emulator) to it.

use super::patch::Capabilities;
use super::{AddressChange, Change, CustomerPatch};
use serde_json::{Map, Value};

/// Applies `patch` to the canonical customer `before`. Top-level fields and addresses only; an address with
/// every sub-field empty reads as `null`, as the dialects present it. `provider_fields` are left alone.
pub fn merge(
    before: &Map<String, Value>,
    patch: &CustomerPatch,
    caps: &Capabilities,
) -> Map<String, Value> {
    let mut after = before.clone();
    for (field, change) in &patch.fields {
        after.insert(field.name().to_owned(), change_value(change));
    }
    for (kind, change) in &patch.addresses {
        let merged = match change {
            AddressChange::Remove => Value::Null,
            AddressChange::Merge(parts) => {
                let mut address = match before.get(kind.name()) {
                    Some(Value::Object(existing)) => existing.clone(),
                    _ => caps
                        .address(*kind)
                        .map(|support| {
                            support
                                .parts
                                .iter()
                                .map(|p| (p.name().to_owned(), Value::Null))
                                .collect()
                        })
                        .unwrap_or_default(),
                };
                for (part, change) in parts {
                    address.insert(part.name().to_owned(), change_value(change));
                }
                if address.values().all(Value::is_null) {
                    Value::Null
                } else {
                    Value::Object(address)
                }
            }
        };
        after.insert(kind.name().to_owned(), merged);
    }
    after
}

fn change_value(change: &Change) -> Value {
    match change {
        Change::Set(value) => Value::String(value.clone()),
        Change::Clear => Value::Null,
    }
}
