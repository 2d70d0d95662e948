//! Juice: snake_case, one nested billing address that must be sent complete, and `""` (not `null`) clears.

use super::credentials::{bearer, sensitive, CredentialScheme, Outgoing};
use super::settings::{AuthScheme, ProviderConfig, Secret};
use super::Provider;
use super::{
    change_wire, field_errors, finish_canonical, id_path, into_object, map_field, parse_uuid,
    string_at, take_address, take_value, Dialect, Object, Record, RecordAt, UpstreamFailure,
    UpstreamRequest, Wire,
};
use crate::canonical::{
    AddressChange, AddressKind, AddressPart, AddressSupport, Capabilities, Customer, CustomerPatch,
    Field, FieldError,
};
use http::header::{HeaderName, HeaderValue, ACCEPT, AUTHORIZATION};
use http::Method;
use serde_json::Value;

pub struct Juice;

const FIELDS: [(Field, &str); 4] = [
    (Field::FirstName, "first_name"),
    (Field::LastName, "last_name"),
    (Field::Email, "email"),
    (Field::Phone, "phone_number"),
];

const ADDRESS: [(AddressPart, &str); 6] = [
    (AddressPart::Line1, "line1"),
    (AddressPart::Line2, "line2"),
    (AddressPart::City, "city"),
    (AddressPart::State, "state"),
    (AddressPart::PostalCode, "zip_code"),
    (AddressPart::Country, "country"),
];

static CAPABILITIES: Capabilities = Capabilities {
    fields: &[
        (Field::FirstName, true),
        (Field::LastName, true),
        (Field::Email, true),
        (Field::Phone, true),
    ],
    // Removing the whole address is not documented by Juice, so it is refused.
    addresses: &[AddressSupport {
        kind: AddressKind::Billing,
        parts: &AddressPart::ALL,
        removable: false,
    }],
};

const RESERVED: &[&str] = &[
    "id",
    "created_at",
    "updated_at",
    "first_name",
    "last_name",
    "email",
    "phone_number",
    "billing_address",
];

const ERROR_FIELDS: &[(&str, &str)] = &[("phone_number", "phone"), ("zip_code", "postal_code")];

fn path(id: &str) -> String {
    id_path("/customers/", id)
}

impl Dialect for Juice {
    fn name(&self) -> &'static str {
        "juice"
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
        UpstreamRequest::get(path(id))
    }

    fn needs_current(&self, patch: &CustomerPatch) -> bool {
        patch.addresses.contains_key(&AddressKind::Billing)
    }

    fn write(
        &self,
        id: &str,
        patch: &CustomerPatch,
        current: Option<&Record>,
    ) -> Result<UpstreamRequest, Vec<FieldError>> {
        // Juice ignores `null`; the empty string is what clears.
        let mut body = Object::from_map(&patch.provider_fields, FIELDS.len() + 1);
        for (field, key) in FIELDS {
            if let Some(change) = patch.fields.get(&field) {
                body.set(key, change_wire(change, Wire::Str("")));
            }
        }
        if let Some(AddressChange::Merge(parts)) = patch.addresses.get(&AddressKind::Billing) {
            // A nested object must be sent complete: merge onto the stored one, empties as "".
            let stored = current
                .and_then(|c| c.get("billing_address"))
                .and_then(Value::as_object);
            let mut address = Object::with_capacity(ADDRESS.len());
            for (part, key) in ADDRESS {
                let value = match parts.get(&part) {
                    Some(change) => change_wire(change, Wire::Str("")),
                    None => match Wire::stored(stored.and_then(|s| s.get(key))) {
                        Wire::Null => Wire::Str(""),
                        other => other,
                    },
                };
                address.set(key, value);
            }
            body.set("billing_address", Wire::Object(address));
        }
        Ok(UpstreamRequest::json(
            Method::PATCH,
            path(id),
            body.to_bytes(),
        ))
    }

    fn record_at(&self) -> RecordAt {
        RecordAt::Data
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
        let mut stored = record.remove("billing_address").and_then(into_object);
        customer.push(
            AddressKind::Billing.name(),
            take_address(stored.as_mut(), &ADDRESS),
        );
        finish_canonical(
            customer,
            self.name(),
            record,
            ("created_at", "updated_at"),
            RESERVED,
        )
    }

    fn failure(
        &self,
        body: &Value,
        _sent: Option<&[u8]>,
        _current: Option<&Record>,
    ) -> UpstreamFailure {
        let items = body.pointer("/error/errors").or_else(|| body.get("errors"));
        UpstreamFailure {
            message: string_at(body, "/error/message"),
            code: string_at(body, "/error/code"),
            errors: field_errors(items, "field", |f| map_field(f, ERROR_FIELDS)),
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Settings and credentials: the API key as `Bearer <key>` (one page of Juice's docs) or raw (the
// current ones), `Accept: application/json;version=1`, and the caller's `Idempotency-Key`.

/// The key the sandbox's Juice accepts (`test_…`), as `Bearer <key>` or raw.
const DEMO_API_KEY: &str = "test_sandbox_juice";

const ACCEPT_VERSION: &str = "application/json;version=1";

impl Provider for Juice {
    fn settings_keys(&self) -> &'static [&'static str] {
        &["api_key", "auth_scheme", "forward_idempotency_key"]
    }

    fn defaults(&self) -> ProviderConfig {
        ProviderConfig::documented("https://api.spendjuice.com", &[(10, 60), (1000, 86_400)])
    }

    fn credentials(
        &self,
        settings: &ProviderConfig,
    ) -> Result<Box<dyn CredentialScheme>, Vec<&'static str>> {
        let api_key = settings.api_key.clone().ok_or(vec!["api_key"])?;
        let authorization = match settings.auth_scheme {
            AuthScheme::Bearer => bearer(api_key.expose()),
            AuthScheme::Raw => sensitive(api_key.expose()),
        };
        Ok(Box::new(JuiceKey {
            api_key,
            authorization,
            forward_idempotency_key: settings.forward_idempotency_key,
        }))
    }

    fn use_demo_credentials(&self, settings: &mut ProviderConfig) {
        settings.api_key = Some(Secret::new(DEMO_API_KEY));
    }

    fn demo_credentials(&self) -> Vec<(&'static str, String)> {
        vec![("api_key", DEMO_API_KEY.into())]
    }
}

struct JuiceKey {
    api_key: Secret,
    authorization: HeaderValue,
    forward_idempotency_key: bool,
}

impl CredentialScheme for JuiceKey {
    fn credential_id(&self) -> &str {
        self.api_key.expose()
    }

    fn secrets(&self) -> Vec<&Secret> {
        vec![&self.api_key]
    }

    fn authorize(&self, call: Outgoing<'_>, _token: Option<&Secret>) {
        let headers = call.headers;
        headers.insert(AUTHORIZATION, self.authorization.clone());
        headers.insert(ACCEPT, HeaderValue::from_static(ACCEPT_VERSION));
        if let (true, Some(key)) = (self.forward_idempotency_key, call.idempotency_key) {
            headers.insert(HeaderName::from_static("idempotency-key"), key.clone());
        }
    }
}
