//! SparkLayer: snake_case, addresses kept as a list whose entries the customer's default billing and
//! shipping ids point at. The list is replaced whole, so every address change is read-merge-write.

use super::credentials::{
    authorize_bearer, header_text, json_headers, use_until, CredentialScheme, Outgoing, Token,
    TokenRefused,
};
use super::settings::{ProviderConfig, Secret};
use super::Provider;
use super::{
    canonical_address, change_wire, check_id_chars, field_errors, finish_canonical, id_path,
    is_id_char, map_field, string_at, take_value, Dialect, Object, Record, UpstreamFailure,
    UpstreamRequest, Wire,
};
use crate::canonical::{
    address_path, AddressChange, AddressKind, AddressPart, AddressSupport, Capabilities, Customer,
    CustomerPatch, Field, FieldError,
};
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method};
use serde_json::Value;
use std::borrow::Cow;
use std::time::{Duration, SystemTime};

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

fn text<'e>(entry: &'e Object<'_>, key: &str) -> Option<&'e str> {
    entry
        .get(key)
        .and_then(Wire::as_str)
        .filter(|s| !s.is_empty())
}

/// The entry a default id names: by `id` or by `external_id`, as SparkLayer accepts either.
fn find(entries: &[Object<'_>], reference: &str) -> Option<usize> {
    entries
        .iter()
        .position(|e| text(e, "id") == Some(reference) || text(e, "external_id") == Some(reference))
}

fn find_external(entries: &[Object<'_>], external_id: &str) -> Option<usize> {
    entries
        .iter()
        .position(|e| text(e, "external_id") == Some(external_id))
}

/// How a default should name an entry: its `ca_…` id once it has one, else its external id.
fn reference(entry: &Object<'_>) -> Option<String> {
    text(entry, "id")
        .or_else(|| text(entry, "external_id"))
        .map(str::to_owned)
}

fn entry_key(part: AddressPart) -> Option<&'static str> {
    ENTRY.iter().find(|(p, _)| *p == part).map(|(_, k)| *k)
}

/// The address list and default ids being rewritten for one write, borrowed from the record read.
struct AddressBook<'a> {
    entries: Vec<Object<'a>>,
    /// The default billing and shipping references, borrowed from the record until a write changes them.
    defaults: [Option<Cow<'a, str>>; 2],
}

impl<'a> AddressBook<'a> {
    fn from_record(record: Option<&'a Record>) -> AddressBook<'a> {
        let entries = record
            .and_then(|r| r.get("addresses"))
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|e| e.as_object().map(|e| Object::from_map(e, 1)))
                    .collect()
            })
            .unwrap_or_default();
        let default = |kind| {
            record
                .and_then(|r| r.get(default_key(kind)))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(Cow::Borrowed)
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
                let mut fresh = Object::with_capacity(ENTRY.len() + 1);
                for (_, key) in ENTRY {
                    let shared = current.and_then(|index| self.entries[index].get(key));
                    fresh.set(key, shared.cloned().unwrap_or(Wire::Null));
                }
                let reusable = find_external(&self.entries, own).filter(|i| Some(*i) != current);
                match reusable {
                    Some(index) => {
                        let entry = &mut self.entries[index];
                        for (_, key) in ENTRY {
                            entry.set(key, fresh.get(key).cloned().unwrap_or(Wire::Null));
                        }
                        index
                    }
                    None => {
                        let external_id = if find_external(&self.entries, own).is_some() {
                            Wire::Owned(format!("{own}-{}", self.entries.len()))
                        } else {
                            Wire::Str(own)
                        };
                        fresh.set("external_id", external_id);
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
        UpstreamRequest::get(path(id))
    }

    fn needs_current(&self, patch: &CustomerPatch) -> bool {
        !patch.addresses.is_empty()
    }

    fn write(
        &self,
        id: &str,
        patch: &CustomerPatch,
        current: Option<&Record>,
    ) -> Result<UpstreamRequest, Vec<FieldError>> {
        let mut body = Object::from_map(&patch.provider_fields, FIELDS.len() + 3);
        for (field, key) in FIELDS {
            if let Some(change) = patch.fields.get(&field) {
                body.set(key, change_wire(change, Wire::Null));
            }
        }
        if patch.addresses.is_empty() {
            return Ok(UpstreamRequest::json(
                Method::PATCH,
                path(id),
                body.to_bytes(),
            ));
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
                    let entry = &mut book.entries[index];
                    for (part, change) in parts {
                        if let Some(key) = entry_key(*part) {
                            entry.set(key, change_wire(change, Wire::Null));
                        }
                    }
                    for part in REQUIRED_PARTS {
                        if entry_key(part).and_then(|k| text(entry, k)).is_none() {
                            errors.push(FieldError::new(
                                address_path(kind, part),
                                "SparkLayer requires it in every address",
                            ));
                        }
                    }
                    book.defaults[AddressBook::slot(kind)] = reference(entry).map(Cow::Owned);
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        for kind in AddressKind::ALL {
            let slot = AddressBook::slot(kind);
            if book.defaults[slot] != before[slot] {
                let value = match book.defaults[slot].take() {
                    None => Wire::Null,
                    Some(Cow::Borrowed(reference)) => Wire::Str(reference),
                    Some(Cow::Owned(reference)) => Wire::Owned(reference),
                };
                body.set(default_key(kind), value);
            }
        }
        let entries = book.entries.into_iter().map(Wire::Object).collect();
        body.set("addresses", Wire::Array(entries));
        Ok(UpstreamRequest::json(
            Method::PATCH,
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
        sent: Option<&[u8]>,
        current: Option<&Record>,
    ) -> UpstreamFailure {
        // `addresses.N.key` points into the list we sent; name the canonical address that entry is.
        let sent: Option<Record> = sent.and_then(|s| serde_json::from_slice(s).ok());
        let sent_book = sent.as_ref().map(|s| {
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

// ---------------------------------------------------------------------------------------------------
// Settings and credentials: a client-credentials token from `/api/auth/token`, used until shortly
// before it expires, and `Site-Id` on every call.

const TOKEN_PATH: &str = "/api/auth/token";

/// The site and client the sandbox's SparkLayer accepts.
const DEMO_SITE_ID: &str = "patchbay-demo";
const DEMO_CLIENT_ID: &str = "sparklayer_sandbox_client";
const DEMO_CLIENT_SECRET: &str = "sparklayer_sandbox_secret";

impl Provider for SparkLayer {
    fn settings_keys(&self) -> &'static [&'static str] {
        &["site_id", "client_id", "client_secret", "token_leeway_s"]
    }

    fn defaults(&self) -> ProviderConfig {
        ProviderConfig::documented("https://app.sparklayer.io", &[])
    }

    fn credentials(
        &self,
        settings: &ProviderConfig,
    ) -> Result<Box<dyn CredentialScheme>, Vec<&'static str>> {
        match (
            &settings.site_id,
            &settings.client_id,
            &settings.client_secret,
        ) {
            (Some(site_id), Some(client_id), Some(client_secret)) => {
                Ok(Box::new(ClientCredentials {
                    site_id: header_text(site_id),
                    client_id: client_id.clone(),
                    client_secret: client_secret.clone(),
                    leeway: Duration::from_secs(settings.token_leeway_s),
                }))
            }
            (site_id, client_id, client_secret) => Err([
                ("site_id", site_id.is_none()),
                ("client_id", client_id.is_none()),
                ("client_secret", client_secret.is_none()),
            ]
            .into_iter()
            .filter_map(|(key, missing)| missing.then_some(key))
            .collect()),
        }
    }

    fn use_demo_credentials(&self, settings: &mut ProviderConfig) {
        settings.site_id = Some(DEMO_SITE_ID.to_owned());
        settings.client_id = Some(DEMO_CLIENT_ID.to_owned());
        settings.client_secret = Some(Secret::new(DEMO_CLIENT_SECRET));
    }

    fn demo_credentials(&self) -> Vec<(&'static str, String)> {
        vec![
            ("site_id", DEMO_SITE_ID.into()),
            ("client_id", DEMO_CLIENT_ID.into()),
            ("client_secret", DEMO_CLIENT_SECRET.into()),
        ]
    }
}

struct ClientCredentials {
    site_id: HeaderValue,
    client_id: String,
    client_secret: Secret,
    leeway: Duration,
}

fn site_id_header() -> HeaderName {
    HeaderName::from_static("site-id")
}

impl CredentialScheme for ClientCredentials {
    fn credential_id(&self) -> &str {
        &self.client_id
    }

    fn secrets(&self) -> Vec<&Secret> {
        vec![&self.client_secret]
    }

    fn authorize(&self, call: Outgoing<'_>, token: Option<&Secret>) {
        authorize_bearer(call.headers, token);
        call.headers.insert(site_id_header(), self.site_id.clone());
    }

    fn uses_tokens(&self) -> bool {
        true
    }

    fn token_call(
        &self,
        _refresh: Option<&Secret>,
        _now: SystemTime,
    ) -> Option<(UpstreamRequest, HeaderMap)> {
        let body = serde_json::json!({
            "grant_type": "client_credentials",
            "client_id": self.client_id,
            "client_secret": self.client_secret.expose(),
        })
        .to_string();
        let headers = json_headers(&[(site_id_header(), self.site_id.clone())]);
        let call = UpstreamRequest::json(Method::POST, TOKEN_PATH.to_owned(), body);
        Some((call, headers))
    }

    fn read_token(&self, body: &[u8], now: SystemTime) -> Result<Token, TokenRefused> {
        let answer: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let Some(token) = answer.get("access_token").and_then(Value::as_str) else {
            return Err(TokenRefused {
                upstream_status: None,
                detail: "SparkLayer's token answer has no access_token".into(),
            });
        };
        let expires_in = answer
            .get("expires_in")
            .and_then(Value::as_u64)
            .unwrap_or(3600);
        Ok(Token {
            access: Secret::new(token),
            use_until: Some(use_until(now, expires_in, self.leeway)),
            refresh: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// SparkLayer's `addresses.N.key` errors point into the list patchbay sent, which the dialect reads
    /// back from the bytes of the write: a new entry at the end is named by the canonical address it is.
    #[test]
    fn upstream_errors_inside_the_sent_list_name_the_canonical_address() {
        let current = json!({"id": "cu_1", "addresses": [
            {"id": "ca_office", "address_line1": "1 Crag Rd", "city": "Sheffield", "postal_code": "S1 1AA", "country_code": "GB"}],
            "default_billing_address_id": "ca_office", "default_shipping_address_id": "ca_office"});
        let current: Record = serde_json::from_value(current).unwrap();
        let current = &current;
        let patch = json!({"shipping_address": {"city": "York"}});
        let patch = CustomerPatch::parse(
            patch.as_object().unwrap().clone(),
            "sparklayer",
            &["sparklayer"],
        )
        .unwrap();
        let request = SparkLayer.write("cu_1", &patch, Some(current)).unwrap();
        let sent: Value = serde_json::from_slice(request.body.as_deref().unwrap()).unwrap();
        // The shared entry is split: shipping gets a second entry, a copy with the city changed.
        assert_eq!(sent["addresses"][1]["city"], "York");
        assert_eq!(sent["addresses"][1]["postal_code"], "S1 1AA");
        assert_eq!(sent["default_shipping_address_id"], "patchbay-shipping");
        let refusal = json!({"title": "Unprocessable", "errors": [
            {"property": "addresses.1.postal_code", "code": "invalid"},
            {"property": "addresses.0.city", "code": "invalid"}]});
        let failure = SparkLayer.failure(&refusal, request.body.as_deref(), Some(current));
        let fields: Vec<&str> = failure.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["shipping_address.postal_code", "billing_address.city"]
        );
        // Without the sent list the index means nothing and stays as SparkLayer wrote it.
        let blind = SparkLayer.failure(&refusal, None, Some(current));
        assert_eq!(blind.errors[0].field, "addresses.1.postal_code");
    }
}
