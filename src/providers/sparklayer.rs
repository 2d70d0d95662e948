//! SparkLayer: snake_case, addresses kept as a list whose entries the customer's default billing and
//! shipping ids point at. The list is replaced whole, so every address change is read-merge-write.

use super::{
    canonical_address, check_id_chars, field_errors, finish_canonical, id_path, into_object,
    is_id_char, map_field, string_at, take_value, Dialect, UpstreamFailure, UpstreamRequest,
};
use crate::canonical::{
    address_path, AddressChange, AddressKind, AddressPart, AddressSupport, Capabilities, Change,
    Customer, CustomerPatch, Field, FieldError,
};
use http::Method;
use serde_json::{Map, Value};

pub struct SparkLayer;

const FIELDS: [(Field, &str); 5] = [
    (Field::FirstName, "first_name"),
    (Field::LastName, "last_name"),
    (Field::CompanyName, "company_name"),
    (Field::Email, "email"),
    (Field::Status, "status"),
];

/// Canonical address parts and the address-entry keys they live in.
const ENTRY: [(AddressPart, &str); 6] = [
    (AddressPart::Line1, "address_line1"),
    (AddressPart::Line2, "address_line2"),
    (AddressPart::City, "city"),
    (AddressPart::State, "region_code"),
    (AddressPart::PostalCode, "postal_code"),
    (AddressPart::Country, "country_code"),
];

/// Entry keys SparkLayer requires after any change.
const REQUIRED_PARTS: [AddressPart; 3] =
    [AddressPart::Line1, AddressPart::City, AddressPart::Country];

static CAPABILITIES: Capabilities = Capabilities {
    fields: &[
        (Field::FirstName, true),
        (Field::LastName, true),
        (Field::CompanyName, true),
        (Field::Email, false),
        (Field::Status, false),
    ],
    addresses: &[
        AddressSupport {
            kind: AddressKind::Billing,
            parts: &AddressPart::ALL,
            removable: true,
        },
        AddressSupport {
            kind: AddressKind::Shipping,
            parts: &AddressPart::ALL,
            removable: true,
        },
    ],
};

/// Keys of the record that have canonical names (the rest go to `provider_fields.sparklayer`).
const MAPPED: &[&str] = &[
    "id",
    "first_name",
    "last_name",
    "company_name",
    "email",
    "status",
];

/// `provider_fields` may not write these: addresses change only through the canonical address fields.
const RESERVED: &[&str] = &[
    "id",
    "created_at",
    "updated_at",
    "first_name",
    "last_name",
    "company_name",
    "email",
    "status",
    "addresses",
    "default_billing_address_id",
    "default_shipping_address_id",
];

const ERROR_FIELDS: &[(&str, &str)] = &[
    ("default_billing_address_id", "billing_address"),
    ("default_shipping_address_id", "shipping_address"),
];

fn default_key(kind: AddressKind) -> &'static str {
    match kind {
        AddressKind::Billing => "default_billing_address_id",
        AddressKind::Shipping => "default_shipping_address_id",
    }
}

/// The external id of the entry patchbay creates when an address has none of its own.
fn own_external_id(kind: AddressKind) -> &'static str {
    match kind {
        AddressKind::Billing => "patchbay-billing",
        AddressKind::Shipping => "patchbay-shipping",
    }
}

fn other(kind: AddressKind) -> AddressKind {
    match kind {
        AddressKind::Billing => AddressKind::Shipping,
        AddressKind::Shipping => AddressKind::Billing,
    }
}

fn path(id: &str) -> String {
    id_path("/api/v1/customers/", id)
}

fn text<'a>(entry: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    entry
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// The entry a default id names: by `id` or by `external_id`, as SparkLayer accepts either.
fn find(entries: &[Map<String, Value>], reference: &str) -> Option<usize> {
    entries
        .iter()
        .position(|e| text(e, "id") == Some(reference) || text(e, "external_id") == Some(reference))
}

fn find_external(entries: &[Map<String, Value>], external_id: &str) -> Option<usize> {
    entries
        .iter()
        .position(|e| text(e, "external_id") == Some(external_id))
}

/// How a default should name an entry: its `ca_…` id once it has one, else its external id.
fn reference(entry: &Map<String, Value>) -> Option<String> {
    text(entry, "id")
        .or_else(|| text(entry, "external_id"))
        .map(str::to_owned)
}

fn set_parts(entry: &mut Map<String, Value>, parts: &[(AddressPart, Value)]) {
    for (part, value) in parts {
        let key = ENTRY.iter().find(|(p, _)| p == part).map(|(_, k)| *k);
        if let Some(key) = key {
            entry.insert(key.to_owned(), value.clone());
        }
    }
}

/// The address list and default ids being rewritten for one write.
struct AddressBook {
    entries: Vec<Map<String, Value>>,
    defaults: [Option<String>; 2],
}

impl AddressBook {
    fn from_record(record: Option<&Map<String, Value>>) -> AddressBook {
        let entries = record
            .and_then(|r| r.get("addresses"))
            .and_then(Value::as_array)
            .map(|list| list.iter().filter_map(|e| e.as_object().cloned()).collect())
            .unwrap_or_default();
        let default = |kind| {
            record
                .and_then(|r| r.get(default_key(kind)))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        AddressBook {
            entries,
            defaults: [
                default(AddressKind::Billing),
                default(AddressKind::Shipping),
            ],
        }
    }

    fn slot(kind: AddressKind) -> usize {
        match kind {
            AddressKind::Billing => 0,
            AddressKind::Shipping => 1,
        }
    }

    fn entry_of(&self, kind: AddressKind) -> Option<usize> {
        self.defaults[Self::slot(kind)]
            .as_deref()
            .and_then(|r| find(&self.entries, r))
    }

    fn remove(&mut self, kind: AddressKind) {
        if let Some(index) = self.entry_of(kind) {
            // The other address may still live in this entry: then only the default goes.
            if self.entry_of(other(kind)) != Some(index) {
                self.entries.remove(index);
            }
        }
        self.defaults[Self::slot(kind)] = None;
    }

    /// The entry that `kind`'s changes go into, creating or splitting one off when needed.
    fn entry_for_change(&mut self, kind: AddressKind) -> usize {
        let own = own_external_id(kind);
        let current = self.entry_of(kind);
        let shared = current.is_some() && current == self.entry_of(other(kind));
        match current {
            Some(index) if !shared => index,
            _ => {
                // Start from the shared entry's address (split) or from nothing (new address).
                // Every address key, empty ones as null: a new entry is sent whole, like any other.
                let mut fresh: Map<String, Value> = ENTRY
                    .iter()
                    .map(|(_, key)| {
                        let shared = current.and_then(|index| self.entries[index].get(*key));
                        ((*key).to_owned(), shared.cloned().unwrap_or(Value::Null))
                    })
                    .collect();
                let reusable = find_external(&self.entries, own).filter(|i| Some(*i) != current);
                match reusable {
                    Some(index) => {
                        let entry = &mut self.entries[index];
                        for (_, key) in ENTRY {
                            entry.insert(
                                key.to_owned(),
                                fresh.get(key).cloned().unwrap_or(Value::Null),
                            );
                        }
                        index
                    }
                    None => {
                        let external_id = if find_external(&self.entries, own).is_some() {
                            format!("{own}-{}", self.entries.len())
                        } else {
                            own.to_owned()
                        };
                        fresh.insert("external_id".into(), Value::String(external_id));
                        self.entries.push(fresh);
                        self.entries.len() - 1
                    }
                }
            }
        }
    }
}

impl Dialect for SparkLayer {
    fn name(&self) -> &'static str {
        "sparklayer"
    }

    fn capabilities(&self) -> &'static Capabilities {
        &CAPABILITIES
    }

    fn parse_id(&self, id: &str) -> Result<String, String> {
        check_id_chars(
            id,
            is_id_char,
            |c| is_id_char(c) || c == '.',
            128,
            "[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}",
        )
    }

    fn reserved_fields(&self) -> &'static [&'static str] {
        RESERVED
    }

    fn read(&self, id: &str) -> UpstreamRequest {
        UpstreamRequest {
            method: Method::GET,
            path: path(id),
            body: None,
        }
    }

    fn needs_current(&self, patch: &CustomerPatch) -> bool {
        !patch.addresses.is_empty()
    }

    fn write(
        &self,
        id: &str,
        patch: &CustomerPatch,
        current: Option<&Map<String, Value>>,
    ) -> Result<UpstreamRequest, Vec<FieldError>> {
        let mut body = patch.provider_fields.clone();
        for (field, key) in FIELDS {
            if let Some(change) = patch.fields.get(&field) {
                let value = match change {
                    Change::Set(value) => Value::String(value.clone()),
                    Change::Clear => Value::Null,
                };
                body.insert(key.into(), value);
            }
        }
        if patch.addresses.is_empty() {
            return Ok(UpstreamRequest {
                method: Method::PATCH,
                path: path(id),
                body: Some(Value::Object(body)),
            });
        }
        let mut book = AddressBook::from_record(current);
        let before = book.defaults.clone();
        let mut errors = Vec::new();
        for kind in AddressKind::ALL {
            match patch.addresses.get(&kind) {
                None => {}
                Some(AddressChange::Remove) => book.remove(kind),
                Some(AddressChange::Merge(parts)) => {
                    let index = book.entry_for_change(kind);
                    let values: Vec<(AddressPart, Value)> = parts
                        .iter()
                        .map(|(part, change)| {
                            let value = match change {
                                Change::Set(v) => Value::String(v.clone()),
                                Change::Clear => Value::Null,
                            };
                            (*part, value)
                        })
                        .collect();
                    let entry = &mut book.entries[index];
                    set_parts(entry, &values);
                    for part in REQUIRED_PARTS {
                        let key = ENTRY.iter().find(|(p, _)| *p == part).map(|(_, k)| *k);
                        if key.and_then(|k| text(entry, k)).is_none() {
                            errors.push(FieldError::new(
                                address_path(kind, part),
                                "SparkLayer requires it in every address",
                            ));
                        }
                    }
                    book.defaults[AddressBook::slot(kind)] = reference(entry);
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        for kind in AddressKind::ALL {
            let slot = AddressBook::slot(kind);
            if book.defaults[slot] != before[slot] {
                let value = book.defaults[slot]
                    .clone()
                    .map_or(Value::Null, Value::String);
                body.insert(default_key(kind).into(), value);
            }
        }
        let entries = book.entries.into_iter().map(Value::Object).collect();
        body.insert("addresses".into(), Value::Array(entries));
        Ok(UpstreamRequest {
            method: Method::PATCH,
            path: path(id),
            body: Some(Value::Object(body)),
        })
    }

    fn record(&self, body: Value) -> Option<Map<String, Value>> {
        into_object(body)
    }

    fn record_id(&self, record: &Map<String, Value>) -> Option<String> {
        record.get("id")?.as_str().map(str::to_owned)
    }

    fn to_canonical(&self, mut record: Map<String, Value>) -> Customer {
        let id = self.record_id(&record).unwrap_or_default();
        let mut customer = Customer::new(self.name(), &id);
        for (field, key) in FIELDS {
            customer.push(field.name(), take_value(&mut record, key));
        }
        let book = AddressBook::from_record(Some(&record));
        for kind in AddressKind::ALL {
            let entry = book.entry_of(kind).map(|i| &book.entries[i]);
            customer.push(kind.name(), canonical_address(entry, &ENTRY));
        }
        finish_canonical(
            customer,
            self.name(),
            record,
            ("created_at", "updated_at"),
            MAPPED,
        )
    }

    fn failure(
        &self,
        body: &Value,
        sent: Option<&Value>,
        current: Option<&Map<String, Value>>,
    ) -> UpstreamFailure {
        // `addresses.N.key` points into the list we sent; name the canonical address that entry is.
        let sent_book = sent.and_then(Value::as_object).map(|s| {
            let mut book = AddressBook::from_record(Some(s));
            let current_book = AddressBook::from_record(current);
            for slot in 0..2 {
                if !s.contains_key(default_key(AddressKind::ALL[slot])) {
                    book.defaults[slot] = current_book.defaults[slot].clone();
                }
            }
            book
        });
        let map = |property: &str| -> String {
            let mut pieces = property.splitn(3, '.');
            if let (Some("addresses"), Some(n), Some(key), Some(book)) = (
                pieces.next(),
                pieces.next(),
                pieces.next(),
                sent_book.as_ref(),
            ) {
                let index = n.parse::<usize>().ok();
                let part = ENTRY.iter().find(|(_, k)| *k == key).map(|(p, _)| *p);
                let kind = AddressKind::ALL
                    .into_iter()
                    .find(|kind| index.is_some() && book.entry_of(*kind) == index);
                if let (Some(kind), Some(part)) = (kind, part) {
                    return address_path(kind, part);
                }
            }
            map_field(property, ERROR_FIELDS)
        };
        UpstreamFailure {
            message: string_at(body, "/detail").or_else(|| string_at(body, "/title")),
            code: string_at(body, "/errors/0/code"),
            errors: field_errors(body.get("errors"), "property", map),
        }
    }
}
