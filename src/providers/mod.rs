//! Provider dialects: pure translations between the canonical model and each provider's wire format.
//!
//! A dialect turns `canonical patch (+ current record)` into an [`UpstreamRequest`] and an upstream record
//! into a canonical customer, and reads the provider's error bodies. It does no IO: the gateway decides when
//! to call, `upstream` signs and sends. A provider module also says what settings the provider reads,
//! how its calls are authenticated ([`CredentialScheme`]) and which demo credentials its sandbox
//! emulator accepts: adding a provider is one module here plus its entry in [`all`].

mod count;
pub mod credentials;
mod juice;
mod record;
pub mod settings;
mod sparklayer;
mod sweetspot;
mod wire;

pub use credentials::CredentialScheme;

pub use count::Count;
pub use juice::Juice;
pub use record::{Record, RecordAt};
pub use sparklayer::SparkLayer;
pub use sweetspot::SweetSpot;

use crate::canonical::{
    AddressPart, Capabilities, Change, Customer, CustomerPatch, FieldError, Member,
};
use bytes::Bytes;
use http::Method;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{Map, Value};
use settings::ProviderConfig;
use wire::{Object, Wire};

/// A call a dialect wants made: method, path below the provider's `base_url`, and body with its media
/// type (sent as `Content-Type`: not every provider need speak JSON).
#[derive(Clone, Debug, PartialEq)]
pub struct UpstreamRequest {
    pub method: Method,
    pub path: String,
    pub body: Option<Bytes>,
    pub content_type: Option<&'static str>,
}

impl UpstreamRequest {
    /// A call without a body.
    pub fn get(path: String) -> UpstreamRequest {
        UpstreamRequest {
            method: Method::GET,
            path,
            body: None,
            content_type: None,
        }
    }

    /// A call with a JSON body.
    pub fn json(method: Method, path: String, body: impl Into<Bytes>) -> UpstreamRequest {
        UpstreamRequest {
            method,
            path,
            body: Some(body.into()),
            content_type: Some("application/json"),
        }
    }
}

/// A provider's error body, read back into canonical terms.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UpstreamFailure {
    /// The provider's own message, if it gave one.
    pub message: Option<String>,
    /// The provider's machine-readable code, if it gave one (e.g. COUNT's `token_expired`).
    pub code: Option<String>,
    /// Field errors with their names mapped back to canonical paths.
    pub errors: Vec<FieldError>,
}

/// One provider's dialect. Implementations are unit structs: all state lives in the records passed in.
pub trait Dialect: Send + Sync + 'static {
    /// The provider's name in URLs and config (`juice`).
    fn name(&self) -> &'static str;

    /// What the provider can store and clear.
    fn capabilities(&self) -> &'static Capabilities;

    /// Validates a percent-decoded id and returns the form sent upstream (e.g. a lower-cased UUID).
    fn parse_id(&self, id: &str) -> Result<String, String>;

    /// Upstream fields that `provider_fields` may not write: the ones canonical fields map to, ids and
    /// timestamps, and anything the dialect manages itself.
    fn reserved_fields(&self) -> &'static [&'static str];

    /// The call that reads one customer.
    fn read(&self, id: &str) -> UpstreamRequest;

    /// Whether [`Dialect::write`] needs the current record (read-merge-write).
    fn needs_current(&self, patch: &CustomerPatch) -> bool;

    /// Whether writing `patch` must wait for other writes of the same customer: always for a
    /// read-merge-write, and for any write that a concurrent read-merge-write could undo by writing back a
    /// stale copy of what it read. Writes that carry nothing but the patch need no lock.
    fn serialise_write(&self, patch: &CustomerPatch) -> bool {
        self.needs_current(patch)
    }

    /// The call that applies `patch`; `current` is the record when [`Dialect::needs_current`] said so.
    /// Fails with field errors when the merged result is something the provider would refuse.
    fn write(
        &self,
        id: &str,
        patch: &CustomerPatch,
        current: Option<&Record>,
    ) -> Result<UpstreamRequest, Vec<FieldError>>;

    /// Where a successful response body holds the customer record.
    fn record_at(&self) -> RecordAt {
        RecordAt::Top
    }

    /// The provider's own primary id in a record (SparkLayer's `cu_…`, even when called by external id).
    fn record_id(&self, record: &Record) -> Option<String>;

    /// The canonical customer for a record, taken by value: its values move into the answer.
    fn to_canonical(&self, record: Record) -> Customer;

    /// Reads an error body; `sent` is the body of the request that failed, for dialects whose error paths
    /// point into it (SparkLayer's `addresses.N.city`), and `current` the record it was merged from.
    fn failure(
        &self,
        body: &Value,
        sent: Option<&[u8]>,
        current: Option<&Record>,
    ) -> UpstreamFailure;

    /// Refuses `provider_fields` entries that would bypass the canonical mapping.
    fn check_provider_fields(&self, fields: &Map<String, Value>) -> Vec<FieldError> {
        let reserved = self.reserved_fields();
        fields
            .keys()
            .filter(|key| reserved.contains(&key.as_str()))
            .map(|key| {
                FieldError::new(
                    format!("provider_fields.{}.{key}", self.name()),
                    "is managed by patchbay: write it through its canonical field",
                )
            })
            .collect()
    }
}

/// One provider, whole: its dialect, and what patchbay must know to configure and authenticate it.
pub trait Provider: Dialect {
    /// The settings it reads besides `base_url` and `rate_limit`; other providers' keys are refused.
    fn settings_keys(&self) -> &'static [&'static str];

    /// Its documented API root and rate limits.
    fn defaults(&self) -> ProviderConfig;

    /// The credential scheme its settings describe, or the settings it lacks (it is then disabled).
    fn credentials(
        &self,
        settings: &ProviderConfig,
    ) -> Result<Box<dyn CredentialScheme>, Vec<&'static str>>;

    /// Sets the demo credentials its sandbox emulator accepts.
    fn use_demo_credentials(&self, settings: &mut ProviderConfig);

    /// The demo credentials, as `(setting, value)`, for another gateway to use a standalone sandbox.
    fn demo_credentials(&self) -> Vec<(&'static str, String)>;
}

/// Every provider of this version, in a fixed order.
pub fn all() -> Vec<Box<dyn Provider>> {
    vec![
        Box::new(SweetSpot),
        Box::new(Count),
        Box::new(Juice),
        Box::new(SparkLayer),
    ]
}

/// Characters left alone in a path segment: RFC 3986 unreserved.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The bytes [`SEGMENT`] leaves alone (a test holds the two to the same set).
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"-._~".contains(&byte)
}

/// `prefix` followed by `id` percent-encoded as one URL path segment.
pub(crate) fn id_path(prefix: &str, id: &str) -> String {
    let mut path = String::with_capacity(prefix.len() + id.len());
    path.push_str(prefix);
    // Ids that passed `parse_id` are unreserved characters already (the common case, checked cheaply).
    if id.bytes().all(is_unreserved) {
        path.push_str(id);
    } else {
        path.extend(utf8_percent_encode(id, SEGMENT));
    }
    path
}

/// A hyphenated UUID (8-4-4-4-12 hex, any version), lower-cased.
pub(crate) fn parse_uuid(id: &str) -> Result<String, String> {
    let hyphenated = id.len() == 36
        && id
            .char_indices()
            .all(|(i, c)| matches!(i, 8 | 13 | 18 | 23) == (c == '-'));
    match uuid::Uuid::try_parse(id) {
        Ok(uuid) if hyphenated => Ok(uuid.hyphenated().to_string()),
        _ => Err("must be a hyphenated UUID (8-4-4-4-12 hex digits)".into()),
    }
}

/// Checks an id against `[first][rest]{0,max-1}` character classes.
pub(crate) fn check_id_chars(
    id: &str,
    first: impl Fn(char) -> bool,
    rest: impl Fn(char) -> bool,
    max: usize,
    rule: &str,
) -> Result<String, String> {
    let mut chars = id.chars();
    let ok = id.len() <= max && chars.next().is_some_and(first) && chars.all(rest);
    if ok {
        Ok(id.to_owned())
    } else {
        Err(format!("must match {rule}"))
    }
}

pub(crate) fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// A JSON object whose members can be moved out by key: a record, or an object inside it.
pub(crate) trait Members {
    fn take(&mut self, key: &str) -> Option<Value>;
}

impl Members for Record {
    fn take(&mut self, key: &str) -> Option<Value> {
        self.remove(key)
    }
}

impl Members for Map<String, Value> {
    fn take(&mut self, key: &str) -> Option<Value> {
        self.remove(key)
    }
}

/// `source[key]` moved out of `source`, with `""` (an empty field) as `null`.
pub(crate) fn take_value(source: &mut impl Members, key: &str) -> Value {
    canonical_owned(source.take(key))
}

/// What a change sends: the new value, or `cleared` (the provider's way of emptying a field).
pub(crate) fn change_wire<'a>(change: &'a Change, cleared: Wire<'a>) -> Wire<'a> {
    match change {
        Change::Set(value) => Wire::Str(value),
        Change::Clear => cleared,
    }
}

fn canonical_owned(value: Option<Value>) -> Value {
    match value {
        Some(Value::String(s)) if s.is_empty() => Value::Null,
        other => other.unwrap_or(Value::Null),
    }
}

/// Builds a canonical address from an upstream object given `(canonical part, upstream key)` pairs; `null`
/// when every part is empty.
pub(crate) fn canonical_address(
    source: Option<&Object<'_>>,
    mapping: &[(AddressPart, &str)],
) -> Member {
    source.map_or(Member::Json(Value::Null), |source| {
        address(mapping, |key| {
            canonical_owned(source.get(key).map(Wire::to_value))
        })
    })
}

/// [`canonical_address`], moving the parts out of `source`.
pub(crate) fn take_address(
    source: Option<&mut impl Members>,
    mapping: &[(AddressPart, &str)],
) -> Member {
    source.map_or(Member::Json(Value::Null), |source| {
        address(mapping, |key| take_value(source, key))
    })
}

/// The canonical address whose parts `part` yields by upstream key; `null` when every part is empty.
fn address(mapping: &[(AddressPart, &str)], mut part: impl FnMut(&str) -> Value) -> Member {
    Member::address(|name| {
        let (_, key) = mapping.iter().find(|(p, _)| *p == name)?;
        Some(part(key))
    })
}

/// Adds timestamps and `provider_fields.<provider>`: every record key that `mapped` does not cover.
pub(crate) fn finish_canonical(
    mut customer: Customer,
    provider: &str,
    mut record: Record,
    timestamps: (&str, &str),
    mapped: &[&str],
) -> Customer {
    customer.push("created_at", take_value(&mut record, timestamps.0));
    customer.push("updated_at", take_value(&mut record, timestamps.1));
    let rest = record.into_map(|key| !mapped.contains(&key));
    let mut by_provider = Map::new();
    by_provider.insert(provider.to_owned(), Value::Object(rest));
    customer.push("provider_fields", Value::Object(by_provider));
    customer
}

/// Maps an upstream field path back to a canonical one with an `(upstream, canonical)` table: the whole
/// path first (`address1` → `billing_address.line1`), else segment by segment
/// (`billingAddress.zipCode` → `billing_address.postal_code`).
pub(crate) fn map_field(path: &str, table: &[(&str, &str)]) -> String {
    let lookup = |name: &str| -> Option<String> {
        table
            .iter()
            .find(|(upstream, _)| *upstream == name)
            .map(|(_, canonical)| (*canonical).to_owned())
    };
    lookup(path).unwrap_or_else(|| {
        path.split('.')
            .map(|segment| lookup(segment).unwrap_or_else(|| segment.to_owned()))
            .collect::<Vec<_>>()
            .join(".")
    })
}

/// Reads `[{field|property, message}]` error items with field names mapped through `map`.
pub(crate) fn field_errors(
    items: Option<&Value>,
    name_key: &str,
    map: impl Fn(&str) -> String,
) -> Vec<FieldError> {
    items
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|item| {
                    let field = item.get(name_key)?.as_str()?;
                    let message = item
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("was refused by the provider");
                    Some(FieldError::new(map(field), message))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A JSON object, owned.
pub(crate) fn into_object(value: Value) -> Option<Map<String, Value>> {
    match value {
        Value::Object(object) => Some(object),
        _ => None,
    }
}

pub(crate) fn string_at(value: &Value, pointer: &str) -> Option<String> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_hyphenated_and_lower_cased() {
        assert_eq!(
            parse_uuid("6F7E1E7F-93D1-4FCC-B7A4-738F869615C8").unwrap(),
            "6f7e1e7f-93d1-4fcc-b7a4-738f869615c8"
        );
        for bad in [
            "6f7e1e7f93d14fccb7a4738f869615c8",
            "{6f7e1e7f-93d1-4fcc-b7a4-738f869615c8}",
            "6f7e1e7f-93d1-4fcc-b7a4-738f869615cg",
            "../../admin",
        ] {
            assert!(parse_uuid(bad).is_err(), "{bad}");
        }
    }

    /// Answers are written in the order dialects add members: every dialect must add them in the
    /// documented order.
    #[test]
    fn every_dialect_answers_in_canonical_member_order() {
        use crate::canonical::{AddressKind, Field};
        let order: Vec<&str> = ["id", "provider"]
            .into_iter()
            .chain(Field::ALL.into_iter().map(Field::name))
            .chain(AddressKind::ALL.into_iter().map(AddressKind::name))
            .chain(["created_at", "updated_at", "provider_fields"])
            .collect();
        for dialect in all() {
            let customer = dialect.to_canonical(Record::default());
            let names: Vec<&str> = customer.names().collect();
            let mut expected = order.clone();
            expected.retain(|name| names.contains(name));
            assert_eq!(names, expected, "{}", dialect.name());
            assert!(names.len() >= 6, "{}: {names:?}", dialect.name());
        }
    }

    /// `provider_fields` holds only what no canonical member took (no timestamp, no mapped field, and no
    /// `null` left behind by a taken value).
    #[test]
    fn provider_fields_hold_only_what_no_member_took() {
        use serde_json::json;
        let record = json!({"createdAt": "t", "updatedAt": "t", "created_at": "t", "updated_at": "t",
            "firstName": "A", "first_name": "A", "customer": "A", "email": "a@b.co", "extra": 1});
        for dialect in all() {
            let customer = dialect.to_canonical(Record::from(record.as_object().unwrap().clone()));
            assert_eq!(
                customer.get("created_at"),
                Some(json!("t")),
                "{}",
                dialect.name()
            );
            let fields = customer.get("provider_fields").unwrap();
            let own = fields[dialect.name()].as_object().unwrap();
            assert_eq!(own.get("extra"), Some(&json!(1)), "{}", dialect.name());
            let reserved = dialect.reserved_fields();
            assert!(
                own.iter()
                    .all(|(k, v)| !v.is_null() && !reserved.contains(&k.as_str())),
                "{}: {own:?}",
                dialect.name()
            );
        }
    }

    #[test]
    fn the_unencoded_fast_path_leaves_alone_exactly_what_segment_does() {
        for byte in 0..=u8::MAX {
            let left_alone =
                utf8_percent_encode(std::str::from_utf8(&[byte]).unwrap_or("\u{80}"), SEGMENT)
                    .to_string()
                    .len()
                    == 1;
            assert_eq!(is_unreserved(byte), left_alone, "byte {byte:#x}");
        }
    }

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(id_path("/c/", "a b/c%"), "/c/a%20b%2Fc%25");
        assert_eq!(id_path("/c/", "cu_1-2.3~"), "/c/cu_1-2.3~");
    }

    #[test]
    fn field_paths_map_back() {
        let table = [
            ("billingAddress", "billing_address"),
            ("zipCode", "postal_code"),
            ("mainPhone", "phone"),
        ];
        assert_eq!(
            map_field("billing_address.zipCode", &table),
            "billing_address.postal_code"
        );
        assert_eq!(map_field("mainPhone", &table), "phone");
        assert_eq!(
            map_field("billingAddress.zipCode", &table),
            "billing_address.postal_code"
        );
        assert_eq!(map_field("other", &table), "other");
    }
}
