//! COUNT: camelCase with nested address objects that are replaced whole, and `customer` and `email`
//! required on every write, so most writes are read-merge-write.

use super::{
    change_wire, field_errors, finish_canonical, id_path, into_object, map_field, parse_uuid,
    string_at, take_address, take_value, Dialect, Object, Record, RecordAt, UpstreamFailure,
    UpstreamRequest, Wire,
};
use crate::canonical::{
    AddressChange, AddressKind, AddressPart, AddressSupport, Capabilities, Change, Customer,
    CustomerPatch, Field, FieldError,
};
use http::Method;
use serde_json::Value;

pub struct Count;

const FIELDS: [(Field, &str); 5] = [
    (Field::CompanyName, "customer"),
    (Field::Email, "email"),
    (Field::Phone, "mainPhone"),
    (Field::Website, "website"),
    (Field::Status, "status"),
];

/// COUNT's address shape has no second line.
const ADDRESS: [(AddressPart, &str); 5] = [
    (AddressPart::Line1, "street"),
    (AddressPart::City, "city"),
    (AddressPart::State, "state"),
    (AddressPart::PostalCode, "zipCode"),
    (AddressPart::Country, "country"),
];

const ADDRESS_PARTS: [AddressPart; 5] = [
    AddressPart::Line1,
    AddressPart::City,
    AddressPart::State,
    AddressPart::PostalCode,
    AddressPart::Country,
];

const ADDRESS_KEYS: [(AddressKind, &str); 2] = [
    (AddressKind::Billing, "billingAddress"),
    (AddressKind::Shipping, "shippingAddress"),
];

static CAPABILITIES: Capabilities = Capabilities {
    fields: &[
        (Field::CompanyName, false),
        (Field::Email, false),
        (Field::Phone, true),
        (Field::Website, true),
        (Field::Status, false),
    ],
    addresses: &[
        AddressSupport {
            kind: AddressKind::Billing,
            parts: &ADDRESS_PARTS,
            removable: true,
        },
        AddressSupport {
            kind: AddressKind::Shipping,
            parts: &ADDRESS_PARTS,
            removable: true,
        },
    ],
};

const RESERVED: &[&str] = &[
    "uuid",
    "createdAt",
    "updatedAt",
    "customer",
    "email",
    "mainPhone",
    "website",
    "status",
    "billingAddress",
    "shippingAddress",
];

const ERROR_FIELDS: &[(&str, &str)] = &[
    ("customer", "company_name"),
    ("mainPhone", "phone"),
    ("billingAddress", "billing_address"),
    ("shippingAddress", "shipping_address"),
    ("street", "line1"),
    ("zipCode", "postal_code"),
];

/// Fields COUNT requires on every write, taken from the patch or else from the current record.
const REQUIRED: [(Field, &str); 2] = [(Field::CompanyName, "customer"), (Field::Email, "email")];

fn path(id: &str) -> String {
    id_path("/customers/", id)
}

impl Dialect for Count {
    fn name(&self) -> &'static str {
        "count"
    }

    fn capabilities(&self) -> &'static Capabilities {
        &CAPABILITIES
    }

    fn parse_id(&self, id: &str) -> Result<String, String> {
        parse_uuid(id)
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
        let merges_an_address = patch
            .addresses
            .values()
            .any(|change| matches!(change, AddressChange::Merge(_)));
        let has_required = REQUIRED
            .iter()
            .all(|(field, _)| matches!(patch.fields.get(field), Some(Change::Set(_))));
        merges_an_address || !has_required
    }

    /// Every COUNT write carries `customer` and `email`, and a read-merge-write copies them from the record
    /// it read: a write that changes them in between would be silently reverted.
    fn serialise_write(&self, _patch: &CustomerPatch) -> bool {
        true
    }

    fn write(
        &self,
        id: &str,
        patch: &CustomerPatch,
        current: Option<&Record>,
    ) -> Result<UpstreamRequest, Vec<FieldError>> {
        let mut body = Object::from_map(&patch.provider_fields, FIELDS.len() + ADDRESS_KEYS.len());
        for (field, key) in FIELDS {
            if let Some(change) = patch.fields.get(&field) {
                body.set(key, change_wire(change, Wire::Null));
            }
        }
        let mut errors = Vec::new();
        for (field, key) in REQUIRED {
            if body.get(key).is_some() {
                continue;
            }
            match current.and_then(|c| c.get(key)).and_then(Value::as_str) {
                Some(value) if !value.is_empty() => body.set(key, Wire::Str(value)),
                _ => errors.push(FieldError::new(
                    field.name(),
                    "COUNT requires it on every write and the current record has none",
                )),
            }
        }
        for (kind, key) in ADDRESS_KEYS {
            let merged = match patch.addresses.get(&kind) {
                None => continue,
                Some(AddressChange::Remove) => Wire::Null,
                Some(AddressChange::Merge(parts)) => {
                    // An address sent replaces the stored one: send every sub-field, merged.
                    let stored = current.and_then(|c| c.get(key)).and_then(Value::as_object);
                    let mut address = Object::with_capacity(ADDRESS.len());
                    for (part, upstream) in ADDRESS {
                        let value = match parts.get(&part) {
                            Some(change) => change_wire(change, Wire::Null),
                            None => Wire::stored(stored.and_then(|s| s.get(upstream))),
                        };
                        address.set(upstream, value);
                    }
                    if address.values().all(Wire::is_null) {
                        Wire::Null
                    } else {
                        Wire::Object(address)
                    }
                }
            };
            body.set(key, merged);
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(UpstreamRequest {
            method: Method::PUT,
            path: path(id),
            body: Some(body.to_bytes()),
        })
    }

    fn record_at(&self) -> RecordAt {
        RecordAt::Data
    }

    fn record_id(&self, record: &Record) -> Option<String> {
        record.get("uuid")?.as_str().map(str::to_owned)
    }

    fn to_canonical(&self, mut record: Record) -> Customer {
        let id = self.record_id(&record).unwrap_or_default();
        let mut customer = Customer::new(self.name(), &id);
        for (field, key) in FIELDS {
            customer.push(field.name(), take_value(&mut record, key));
        }
        for (kind, key) in ADDRESS_KEYS {
            let mut stored = record.remove(key).and_then(into_object);
            customer.push(kind.name(), take_address(stored.as_mut(), &ADDRESS));
        }
        finish_canonical(
            customer,
            self.name(),
            record,
            ("createdAt", "updatedAt"),
            RESERVED,
        )
    }

    fn failure(
        &self,
        body: &Value,
        _sent: Option<&[u8]>,
        _current: Option<&Record>,
    ) -> UpstreamFailure {
        UpstreamFailure {
            message: string_at(body, "/message"),
            code: string_at(body, "/code"),
            errors: field_errors(body.get("errors"), "field", |f| map_field(f, ERROR_FIELDS)),
        }
    }
}
