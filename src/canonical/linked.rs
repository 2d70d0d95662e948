//! One customer that several providers hold, read as one: each canonical field (and address part)
//! from the first provider, in the order of precedence, that stores it and holds a value, and every
//! field on which the providers that store it disagree, with each one's value. Pure: canonical answers
//! in, one merged object out.

use super::{AddressKind, AddressPart, Capabilities, Field, Member};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// One provider's canonical answer, and what it can store.
pub struct Holder<'a> {
    pub provider: &'a str,
    pub capabilities: &'a Capabilities,
    pub customer: &'a Map<String, Value>,
}

/// A field whose value differs between the providers that store it: each one's value.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Conflict {
    pub field: String,
    pub values: BTreeMap<String, Value>,
}

/// The merged fields, in canonical order, and the conflicts. `holders` come in the order of
/// precedence.
pub fn merge_linked(holders: &[Holder<'_>]) -> (Vec<(&'static str, Member)>, Vec<Conflict>) {
    let mut merged = Vec::new();
    let mut conflicts = Vec::new();
    for field in Field::ALL {
        let values: Vec<(&str, Value)> = holders
            .iter()
            .filter(|holder| holder.capabilities.field(field).is_some())
            .map(|holder| (holder.provider, member(holder.customer, field.name())))
            .collect();
        if let Some(value) = settle(field.name(), values, &mut conflicts) {
            merged.push((field.name(), Member::Json(value)));
        }
    }
    for kind in AddressKind::ALL {
        let stored: Vec<(&Holder<'_>, &'static [AddressPart])> = holders
            .iter()
            .filter_map(|holder| {
                let support = holder
                    .capabilities
                    .addresses
                    .iter()
                    .find(|a| a.kind == kind)?;
                Some((holder, support.parts))
            })
            .collect();
        if stored.is_empty() {
            continue;
        }
        let mut address = Vec::new();
        for part in AddressPart::ALL {
            let path = format!("{}.{}", kind.name(), part.name());
            let values: Vec<(&str, Value)> = stored
                .iter()
                .filter(|(_, parts)| parts.contains(&part))
                .map(|(holder, _)| {
                    let object = holder.customer.get(kind.name());
                    let value = object.map_or(Value::Null, |a| member_of(a, part.name()));
                    (holder.provider, value)
                })
                .collect();
            if let Some(value) = settle(&path, values, &mut conflicts) {
                address.push((part, value));
            }
        }
        let address = Member::address(|part| {
            let found = address.iter().find(|(p, _)| *p == part);
            found.map(|(_, value)| value.clone())
        });
        merged.push((kind.name(), address));
    }
    (merged, conflicts)
}

/// The value the first holder has (a `null` only when none has one), and a conflict when they differ;
/// `None` when no holder stores the field.
fn settle(path: &str, values: Vec<(&str, Value)>, conflicts: &mut Vec<Conflict>) -> Option<Value> {
    let (_, first) = values.first()?;
    if values.iter().any(|(_, value)| value != first) {
        conflicts.push(Conflict {
            field: path.to_owned(),
            values: values
                .iter()
                .map(|(provider, value)| ((*provider).to_owned(), value.clone()))
                .collect(),
        });
    }
    let chosen = values
        .iter()
        .map(|(_, value)| value)
        .find(|value| !value.is_null());
    Some(chosen.cloned().unwrap_or(Value::Null))
}

fn member(customer: &Map<String, Value>, name: &str) -> Value {
    customer.get(name).cloned().unwrap_or(Value::Null)
}

fn member_of(object: &Value, name: &str) -> Value {
    object.get(name).cloned().unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::{AddressPart, AddressSupport};
    use serde_json::json;

    static FLAT: Capabilities = Capabilities {
        fields: &[(Field::FirstName, true), (Field::Phone, true)],
        addresses: &[AddressSupport {
            kind: AddressKind::Billing,
            parts: &[AddressPart::City, AddressPart::Line2],
            removable: true,
        }],
    };
    static NESTED: Capabilities = Capabilities {
        fields: &[(Field::Phone, true), (Field::Email, false)],
        addresses: &[AddressSupport {
            kind: AddressKind::Billing,
            parts: &[AddressPart::City],
            removable: true,
        }],
    };

    fn as_json(members: &[(&'static str, Member)]) -> Value {
        Value::Object(
            members
                .iter()
                .map(|(name, member)| ((*name).to_owned(), member.to_value()))
                .collect(),
        )
    }

    fn object(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn the_first_holder_with_a_value_wins_and_disagreements_are_listed() {
        let a = object(json!({"first_name": "Ada", "phone": null,
            "billing_address": {"city": "Leeds", "line2": null}}));
        let b = object(json!({"phone": "+4420", "email": "a@b.co",
            "billing_address": {"city": "York"}}));
        let holders = [
            Holder {
                provider: "a",
                capabilities: &FLAT,
                customer: &a,
            },
            Holder {
                provider: "b",
                capabilities: &NESTED,
                customer: &b,
            },
        ];
        let (merged, conflicts) = merge_linked(&holders);
        assert_eq!(
            as_json(&merged),
            json!({"first_name": "Ada", "email": "a@b.co", "phone": "+4420",
                "billing_address": {"city": "Leeds", "line2": null}})
        );
        assert_eq!(
            conflicts,
            [
                Conflict {
                    field: "phone".into(),
                    values: [("a".into(), Value::Null), ("b".into(), json!("+4420"))].into(),
                },
                Conflict {
                    field: "billing_address.city".into(),
                    values: [("a".into(), json!("Leeds")), ("b".into(), json!("York"))].into(),
                },
            ]
        );
        // The other order of precedence: the other value, the same conflicts.
        let (merged, again) = merge_linked(&[
            Holder {
                provider: "b",
                capabilities: &NESTED,
                customer: &b,
            },
            Holder {
                provider: "a",
                capabilities: &FLAT,
                customer: &a,
            },
        ]);
        assert_eq!(as_json(&merged)["billing_address"]["city"], "York");
        assert_eq!(again.len(), 2);
    }

    #[test]
    fn agreeing_holders_have_no_conflict_and_no_address_is_null() {
        let a = object(json!({"first_name": "Ada", "phone": "+1", "billing_address": null}));
        let b = object(json!({"phone": "+1", "billing_address": null}));
        let (merged, conflicts) = merge_linked(&[
            Holder {
                provider: "a",
                capabilities: &FLAT,
                customer: &a,
            },
            Holder {
                provider: "b",
                capabilities: &NESTED,
                customer: &b,
            },
        ]);
        assert!(conflicts.is_empty(), "{conflicts:?}");
        let merged = as_json(&merged);
        assert_eq!(merged["billing_address"], Value::Null);
        assert!(merged.get("shipping_address").is_none(), "nobody stores it");
    }
}
