//! Sweet Spot: camelCase, one flat address, `PUT` updates only the fields sent, `null` clears.

use super::credentials::{bearer, CredentialScheme, Outgoing};
use super::settings::{ProviderConfig, Secret};
use super::Provider;
use super::{
    change_wire, check_id_chars, finish_canonical, id_path, is_id_char, map_field, string_at,
    take_address, take_value, Dialect, Object, Record, UpstreamFailure, UpstreamRequest, Wire,
};
use crate::canonical::{
    AddressChange, AddressKind, AddressPart, AddressSupport, Capabilities, Customer, CustomerPatch,
    Field, FieldError,
};
use http::header::{HeaderValue, AUTHORIZATION};
use http::Method;
use serde_json::Value;

pub struct SweetSpot;

const FIELDS: [(Field, &str); 3] = [
    (Field::FirstName, "firstName"),
    (Field::LastName, "lastName"),
    (Field::Phone, "phone"),
];

const ADDRESS: [(AddressPart, &str); 6] = [
    (AddressPart::Line1, "address1"),
    (AddressPart::Line2, "address2"),
    (AddressPart::City, "city"),
    (AddressPart::State, "state"),
    (AddressPart::PostalCode, "zip"),
    (AddressPart::Country, "country"),
];

static CAPABILITIES: Capabilities = Capabilities {
    fields: &[
        (Field::FirstName, true),
        (Field::LastName, true),
        (Field::Phone, true),
    ],
    addresses: &[AddressSupport {
        kind: AddressKind::Billing,
        parts: &AddressPart::ALL,
        removable: true,
    }],
};

const RESERVED: &[&str] = &[
    "id",
    "createdAt",
    "updatedAt",
    "firstName",
    "lastName",
    "phone",
    "address1",
    "address2",
    "city",
    "state",
    "zip",
    "country",
];

/// Upstream error `param` names back to canonical paths.
const ERROR_FIELDS: &[(&str, &str)] = &[
    ("firstName", "first_name"),
    ("lastName", "last_name"),
    ("phone", "phone"),
    ("address1", "billing_address.line1"),
    ("address2", "billing_address.line2"),
    ("city", "billing_address.city"),
    ("state", "billing_address.state"),
    ("zip", "billing_address.postal_code"),
    ("country", "billing_address.country"),
];

fn path(id: &str) -> String {
    id_path("/v1/customers/", id)
}

impl Dialect for SweetSpot {
    fn name(&self) -> &'static str {
        "sweetspot"
    }

    fn capabilities(&self) -> &'static Capabilities {
        &CAPABILITIES
    }

    fn parse_id(&self, id: &str) -> Result<String, String> {
        check_id_chars(id, is_id_char, is_id_char, 64, "[A-Za-z0-9_-]{1,64}")
    }

    fn reserved_fields(&self) -> &'static [&'static str] {
        RESERVED
    }

    fn read(&self, id: &str) -> UpstreamRequest {
        UpstreamRequest::get(path(id))
    }

    fn needs_current(&self, _patch: &CustomerPatch) -> bool {
        false
    }

    fn write(
        &self,
        id: &str,
        patch: &CustomerPatch,
        _current: Option<&Record>,
    ) -> Result<UpstreamRequest, Vec<FieldError>> {
        let mut body = Object::from_map(&patch.provider_fields, FIELDS.len() + ADDRESS.len());
        for (field, key) in FIELDS {
            if let Some(change) = patch.fields.get(&field) {
                body.set(key, change_wire(change, Wire::Null));
            }
        }
        match patch.addresses.get(&AddressKind::Billing) {
            // The address is flat: removing it is clearing each of its six fields.
            Some(AddressChange::Remove) => {
                for (_, key) in ADDRESS {
                    body.set(key, Wire::Null);
                }
            }
            Some(AddressChange::Merge(parts)) => {
                for (part, key) in ADDRESS {
                    if let Some(change) = parts.get(&part) {
                        body.set(key, change_wire(change, Wire::Null));
                    }
                }
            }
            None => {}
        }
        Ok(UpstreamRequest::json(
            Method::PUT,
            path(id),
            body.to_bytes(),
        ))
    }

    fn record_id(&self, record: &Record) -> Option<String> {
        record.get("id")?.as_str().map(str::to_owned)
    }

    fn to_canonical(&self, mut record: Record) -> Customer {
        let id = self.record_id(&record).unwrap_or_default();
        let mut customer = Customer::new(self.name(), &id);
        for (field, key) in FIELDS {
            customer.push(field.name(), take_value(&mut record, key));
        }
        customer.push(
            AddressKind::Billing.name(),
            take_address(Some(&mut record), &ADDRESS),
        );
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
        let message = string_at(body, "/error/message");
        let errors = match string_at(body, "/error/param") {
            Some(param) => vec![FieldError::new(
                map_field(&param, ERROR_FIELDS),
                message
                    .clone()
                    .unwrap_or_else(|| "was refused by Sweet Spot".into()),
            )],
            None => Vec::new(),
        };
        UpstreamFailure {
            message,
            code: string_at(body, "/error/code"),
            errors,
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Settings and credentials: a bearer API key.

/// The key the sandbox's Sweet Spot accepts (`sk_test_…`, as its docs show test keys).
const DEMO_API_KEY: &str = "sk_test_sandbox_sweetspot";

impl Provider for SweetSpot {
    fn settings_keys(&self) -> &'static [&'static str] {
        &["api_key"]
    }

    fn defaults(&self) -> ProviderConfig {
        ProviderConfig::documented("https://api.thesweetspot.com", &[])
    }

    fn credentials(
        &self,
        settings: &ProviderConfig,
    ) -> Result<Box<dyn CredentialScheme>, Vec<&'static str>> {
        let api_key = settings.api_key.clone().ok_or(vec!["api_key"])?;
        Ok(Box::new(BearerKey {
            authorization: bearer(api_key.expose()),
            api_key,
        }))
    }

    fn use_demo_credentials(&self, settings: &mut ProviderConfig) {
        settings.api_key = Some(Secret::new(DEMO_API_KEY));
    }

    fn demo_credentials(&self) -> Vec<(&'static str, String)> {
        vec![("api_key", DEMO_API_KEY.into())]
    }
}

/// `Authorization: Bearer <key>` on every call.
struct BearerKey {
    api_key: Secret,
    /// Built once.
    authorization: HeaderValue,
}

impl CredentialScheme for BearerKey {
    fn credential_id(&self) -> &str {
        self.api_key.expose()
    }

    fn secrets(&self) -> Vec<&Secret> {
        vec![&self.api_key]
    }

    fn authorize(&self, call: Outgoing<'_>, _token: Option<&Secret>) {
        call.headers
            .insert(AUTHORIZATION, self.authorization.clone());
    }
}
