//! COUNT: camelCase with nested address objects that are replaced whole, and `customer` and `email`
//! required on every write, so most writes are read-merge-write.

use super::credentials::{
    authorize_bearer, header_text, json_headers, sensitive, unix_seconds, CredentialScheme,
    Outgoing, Token, TokenRefused,
};
use super::settings::{ProviderConfig, Secret};
use super::Provider;
use super::{
    change_wire, field_errors, finish_canonical, id_path, into_object, map_field, parse_uuid,
    string_at, take_address, take_value, Dialect, Object, Record, RecordAt, UpstreamFailure,
    UpstreamRequest, Wire,
};
use crate::canonical::{
    AddressChange, AddressKind, AddressPart, AddressSupport, Capabilities, Change, Customer,
    CustomerPatch, Field, FieldError,
};
use hmac::{Hmac, Mac};
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::time::{Duration, SystemTime};

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

    /// COUNT documents its customer ids as UUID v4 and refuses others with a 400.
    fn parse_id(&self, id: &str) -> Result<String, String> {
        let uuid = parse_uuid(id)?;
        match uuid::Uuid::parse_str(&uuid).map(|u| u.get_version_num()) {
            Ok(4) if matches!(uuid.as_bytes()[19], b'8' | b'9' | b'a' | b'b') => Ok(uuid),
            _ => Err("must be a UUID v4 (8-4-4-4-12 hex digits, version 4, variant 8–b)".into()),
        }
    }

    fn reserved_fields(&self) -> &'static [&'static str] {
        RESERVED
    }

    fn read(&self, id: &str) -> UpstreamRequest {
        UpstreamRequest::get(path(id))
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
        Ok(UpstreamRequest::json(
            Method::PUT,
            path(id),
            body.to_bytes(),
        ))
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

// ---------------------------------------------------------------------------------------------------
// Settings and credentials: every call HMAC-signed with the client secret, plus an OAuth access token
// refreshed shortly before `accessTokenExpiresAt` or after a 401 (expired, or revoked by a rotation
// elsewhere). Refresh tokens rotate: each refresh answer carries the one to use next.

const REFRESH_PATH: &str = "/refresh-user-access-token";

/// The HMAC identity and OAuth tokens the sandbox's COUNT accepts. The refresh token rotates: once used
/// it is spent for the life of the sandbox process.
const DEMO_CLIENT_ID: &str = "count_sandbox_client";
const DEMO_CLIENT_SECRET: &str = "count_sandbox_secret";
const DEMO_ACCESS_TOKEN: &str = "count_sandbox_access_token";
const DEMO_REFRESH_TOKEN: &str = "count_sandbox_refresh_token";

impl Provider for Count {
    fn settings_keys(&self) -> &'static [&'static str] {
        &[
            "client_id",
            "client_secret",
            "access_token",
            "refresh_token",
            "refresh_before_expiry_s",
        ]
    }

    fn defaults(&self) -> ProviderConfig {
        ProviderConfig::documented("https://api.getcount.com/partners", &[(100, 60)])
    }

    fn credentials(
        &self,
        settings: &ProviderConfig,
    ) -> Result<Box<dyn CredentialScheme>, Vec<&'static str>> {
        match (
            &settings.client_id,
            &settings.client_secret,
            &settings.refresh_token,
        ) {
            (Some(client_id), Some(client_secret), Some(refresh_token)) => {
                Ok(Box::new(CountCredentials {
                    client_id: client_id.clone(),
                    client_secret: client_secret.clone(),
                    access_token: settings.access_token.clone(),
                    refresh_token: refresh_token.clone(),
                    refresh_before: Duration::from_secs(settings.refresh_before_expiry_s),
                }))
            }
            (client_id, client_secret, refresh_token) => Err([
                ("client_id", client_id.is_none()),
                ("client_secret", client_secret.is_none()),
                ("refresh_token", refresh_token.is_none()),
            ]
            .into_iter()
            .filter_map(|(key, missing)| missing.then_some(key))
            .collect()),
        }
    }

    fn use_demo_credentials(&self, settings: &mut ProviderConfig) {
        settings.client_id = Some(DEMO_CLIENT_ID.to_owned());
        settings.client_secret = Some(Secret::new(DEMO_CLIENT_SECRET));
        settings.access_token = Some(Secret::new(DEMO_ACCESS_TOKEN));
        settings.refresh_token = Some(Secret::new(DEMO_REFRESH_TOKEN));
    }

    fn demo_credentials(&self) -> Vec<(&'static str, String)> {
        vec![
            ("client_id", DEMO_CLIENT_ID.into()),
            ("client_secret", DEMO_CLIENT_SECRET.into()),
            ("access_token", DEMO_ACCESS_TOKEN.into()),
            ("refresh_token", DEMO_REFRESH_TOKEN.into()),
        ]
    }
}

struct CountCredentials {
    client_id: String,
    client_secret: Secret,
    access_token: Option<Secret>,
    refresh_token: Secret,
    refresh_before: Duration,
}

impl CountCredentials {
    /// The HMAC headers over `METHOD:path:timestamp:bodyHash`.
    fn sign(
        &self,
        headers: &mut HeaderMap,
        method: &Method,
        path: &str,
        body: &[u8],
        now: SystemTime,
    ) {
        let timestamp = unix_seconds(now);
        let signature = signature(
            self.client_secret.expose(),
            method.as_str(),
            path,
            timestamp,
            body,
        );
        headers.insert(
            HeaderName::from_static("x-client-id"),
            header_text(&self.client_id),
        );
        headers.insert(
            HeaderName::from_static("x-timestamp"),
            HeaderValue::from(timestamp),
        );
        headers.insert(
            HeaderName::from_static("x-signature"),
            sensitive(&signature),
        );
    }
}

impl CredentialScheme for CountCredentials {
    fn credential_id(&self) -> &str {
        &self.client_id
    }

    fn secrets(&self) -> Vec<&Secret> {
        let mut secrets = vec![&self.client_secret, &self.refresh_token];
        secrets.extend(&self.access_token);
        secrets
    }

    fn authorize(&self, call: Outgoing<'_>, token: Option<&Secret>) {
        self.sign(call.headers, call.method, call.path, call.body, call.now);
        authorize_bearer(call.headers, token);
    }

    fn uses_tokens(&self) -> bool {
        true
    }

    /// A configured access token's expiry is unknown: it is used until COUNT refuses it.
    fn initial_token(&self) -> Option<Token> {
        self.access_token.clone().map(|access| Token {
            access,
            use_until: None,
            refresh: None,
        })
    }

    fn initial_refresh(&self) -> Option<Secret> {
        Some(self.refresh_token.clone())
    }

    fn token_call(
        &self,
        refresh: Option<&Secret>,
        now: SystemTime,
    ) -> Option<(UpstreamRequest, HeaderMap)> {
        let refresh = refresh.unwrap_or(&self.refresh_token);
        let body = serde_json::json!({ "refreshToken": refresh.expose() }).to_string();
        let mut headers = json_headers(&[]);
        self.sign(
            &mut headers,
            &Method::POST,
            REFRESH_PATH,
            body.as_bytes(),
            now,
        );
        let call = UpstreamRequest::json(Method::POST, REFRESH_PATH.to_owned(), body);
        Some((call, headers))
    }

    fn read_token(&self, body: &[u8], _now: SystemTime) -> Result<Token, TokenRefused> {
        let answer: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let data = answer.get("data").unwrap_or(&answer);
        let text = |key: &str| data.get(key).and_then(Value::as_str);
        let (Some(access), Some(refresh)) = (text("accessToken"), text("refreshToken")) else {
            return Err(TokenRefused {
                upstream_status: None,
                detail: "COUNT's token refresh answer has no accessToken/refreshToken".into(),
            });
        };
        let expires =
            text("accessTokenExpiresAt").and_then(|at| humantime::parse_rfc3339_weak(at).ok());
        Ok(Token {
            access: Secret::new(access),
            use_until: expires.map(|at| at - self.refresh_before),
            refresh: Some(Secret::new(refresh)),
        })
    }
}

/// COUNT's `x-signature`: lower-case hex HMAC-SHA256(secret, `METHOD:path:timestamp:bodyHash`), where
/// `bodyHash` is the lower-case hex SHA-256 of the body, or empty for an empty body (or exactly `{}`, as
/// COUNT's sample app does).
fn signature(secret: &str, method: &str, path: &str, timestamp: u64, body: &[u8]) -> String {
    let body_hash = if body.is_empty() || body == b"{}" {
        String::new()
    } else {
        hex::encode(Sha256::digest(body))
    };
    let message = format!(
        "{}:{path}:{timestamp}:{body_hash}",
        method.to_ascii_uppercase()
    );
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(message.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod signature_tests {
    use super::*;

    #[test]
    fn matches_an_independent_computation() {
        // Computed with openssl: printf 'GET:/customers/x:1700000000:' | openssl dgst -sha256 -hmac secret
        assert_eq!(
            signature("secret", "get", "/customers/x", 1_700_000_000, b""),
            "95eadfaee0e7938fdd8f278c2454368baa31a3d0b5f511a78160eea3af376f34"
        );
        // ... and with the body's SHA-256 (sha256sum) appended for a body.
        assert_eq!(
            signature(
                "secret",
                "PUT",
                "/customers/x",
                1_700_000_000,
                br#"{"a":1}"#
            ),
            "4cfd3b93c327d3666c2c1abc660472cedbe7ae5a6445446790892b7f6c779762"
        );
    }
}
