//! The canonical merge patch: parsing and validating a caller's body (check 8), then
//! restricting it to what one provider can store (check 9).

use super::json::kind_of;
use super::{address_path, AddressKind, AddressPart, Field, FieldError, Slots, READ_ONLY_FIELDS};
use email_address::EmailAddress;
use serde_json::{Map, Value};
use std::str::FromStr;

/// What a patch does to one string field. A field absent from the patch is simply not in the map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Store this (already validated and normalised) value.
    Set(String),
    /// `null` or `""`: empty the field.
    Clear,
}

/// What a patch does to one address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddressChange {
    /// `null`: remove the whole address.
    Remove,
    /// An object: change the named sub-fields, keep the others.
    Merge(Slots<AddressPart, Change, 6>),
}

/// A validated canonical patch for one provider.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CustomerPatch {
    pub fields: Slots<Field, Change, 7>,
    pub addresses: Slots<AddressKind, AddressChange, 2>,
    /// `provider_fields.<target>`: raw upstream fields, passed through unchanged.
    pub provider_fields: Map<String, Value>,
}

/// What one provider can store and clear, used to refuse or skip the rest of a patch.
#[derive(Debug)]
pub struct Capabilities {
    /// Each storable top-level field and whether the provider lets it be cleared.
    pub fields: &'static [(Field, bool)],
    pub addresses: &'static [AddressSupport],
}

/// How a provider stores one canonical address.
#[derive(Debug)]
pub struct AddressSupport {
    pub kind: AddressKind,
    pub parts: &'static [AddressPart],
    pub removable: bool,
}

impl Capabilities {
    pub fn field(&self, field: Field) -> Option<bool> {
        self.fields
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, clearable)| *clearable)
    }

    pub fn address(&self, kind: AddressKind) -> Option<&AddressSupport> {
        self.addresses.iter().find(|a| a.kind == kind)
    }
}

const MAX_LEN: usize = 255;
const MAX_EMAIL_LEN: usize = 254;

impl CustomerPatch {
    /// Validates a body against the canonical model, reporting every bad field at once. The body is
    /// taken by value: its strings become the patch's values.
    ///
    /// `target` is the provider being patched and `providers` every provider name that
    /// `provider_fields` may mention.
    pub fn parse(
        body: Map<String, Value>,
        target: &str,
        providers: &[&str],
    ) -> Result<CustomerPatch, Vec<FieldError>> {
        let mut patch = CustomerPatch::default();
        let mut errors = Vec::new();
        for (key, value) in body {
            if let Some(field) = Field::from_name(&key) {
                match parse_field(field, value) {
                    Ok(change) => {
                        patch.fields.insert(field, change);
                    }
                    Err(message) => errors.push(FieldError::new(key, message)),
                }
            } else if let Some(kind) = AddressKind::from_name(&key) {
                match parse_address(kind, value, &mut errors) {
                    Some(AddressChange::Merge(parts)) if parts.is_empty() => {}
                    Some(change) => {
                        patch.addresses.insert(kind, change);
                    }
                    None => {}
                }
            } else if key == "provider_fields" {
                patch.provider_fields =
                    parse_provider_fields(value, target, providers, &mut errors);
            } else if READ_ONLY_FIELDS.contains(&key.as_str()) {
                errors.push(FieldError::new(key, "is read-only and cannot be patched"));
            } else {
                errors.push(FieldError::new(key, "is not a canonical customer field"));
            }
        }
        if errors.is_empty() {
            Ok(patch)
        } else {
            Err(errors)
        }
    }

    /// `{}` (or a patch that became empty once skipped fields were removed) writes nothing.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty() && self.addresses.is_empty() && self.provider_fields.is_empty()
    }

    /// Refuses (strict) or drops (lenient) whatever the provider cannot store or clear.
    ///
    /// Returns the patch that can be written and, in lenient mode, the canonical paths that were skipped.
    pub fn restrict(
        mut self,
        caps: &Capabilities,
        provider: &str,
        lenient: bool,
    ) -> Result<(CustomerPatch, Vec<String>), Vec<FieldError>> {
        let mut refused = Vec::new();
        self.fields.retain(|field, change| {
            let message = match caps.field(*field) {
                None => format!("{provider} cannot store this field"),
                Some(false) if *change == Change::Clear => {
                    format!("{provider} does not allow this field to be cleared")
                }
                Some(_) => return true,
            };
            refused.push(FieldError::new(field.name(), message));
            false
        });
        self.addresses.retain(|kind, change| {
            let Some(support) = caps.address(*kind) else {
                refused.push(FieldError::new(
                    kind.name(),
                    format!("{provider} cannot store this address"),
                ));
                return false;
            };
            match change {
                AddressChange::Remove if !support.removable => {
                    refused.push(FieldError::new(
                        kind.name(),
                        format!("{provider} does not allow this address to be removed"),
                    ));
                    false
                }
                AddressChange::Remove => true,
                AddressChange::Merge(parts) => {
                    parts.retain(|part, _| {
                        let stored = support.parts.contains(part);
                        if !stored {
                            refused.push(FieldError::new(
                                address_path(*kind, *part),
                                format!("{provider} cannot store this address field"),
                            ));
                        }
                        stored
                    });
                    !parts.is_empty()
                }
            }
        });
        if refused.is_empty() || lenient {
            let skipped = refused.into_iter().map(|e| e.field).collect();
            Ok((self, skipped))
        } else {
            Err(refused)
        }
    }
}

fn parse_field(field: Field, value: Value) -> Result<Change, String> {
    let text = match value {
        Value::Null => None,
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(s),
        other => return Err(format!("must be a string or null, not {}", kind_of(&other))),
    };
    let Some(text) = text else {
        return if field == Field::Status {
            Err("cannot be cleared; use `active` or `inactive`".into())
        } else {
            Ok(Change::Clear)
        };
    };
    let normalised = match field {
        Field::FirstName | Field::LastName | Field::CompanyName => {
            check_len(&text, MAX_LEN)?;
            text
        }
        Field::Email => {
            check_len(&text, MAX_EMAIL_LEN)?;
            if !EmailAddress::is_valid(&text) {
                return Err("is not a valid email address".into());
            }
            text
        }
        Field::Phone => {
            check_len(&text, MAX_LEN)?;
            normalise_phone(&text)?
        }
        Field::Website => {
            check_len(&text, MAX_LEN)?;
            check_website(&text)?;
            text
        }
        Field::Status => match text.as_str() {
            "active" | "inactive" => text,
            _ => return Err("must be `active` or `inactive`".into()),
        },
    };
    Ok(Change::Set(normalised))
}

/// A canonical string: at most `max` characters, none of them a control character (U+0000–U+001F,
/// U+007F), which no provider's field is meant to hold (each is one byte in UTF-8). Characters are
/// counted only when the bytes could be too many: a character is at least one byte.
fn check_len(text: &str, max: usize) -> Result<(), String> {
    if text.bytes().any(|byte| byte < 0x20 || byte == 0x7f) {
        return Err("must not contain control characters (U+0000–U+001F, U+007F)".into());
    }
    if text.len() > max && text.chars().count() > max {
        Err(format!("must be at most {max} characters"))
    } else {
        Ok(())
    }
}

/// E.164 syntax after removing the usual separators: `+`, then 8–15 digits, the first 1–9.
pub(crate) fn normalise_phone(text: &str) -> Result<String, String> {
    let mut compact = String::with_capacity(text.len());
    compact.extend(
        text.chars()
            .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')')),
    );
    let digits = compact.strip_prefix('+').unwrap_or("");
    let valid = (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    if valid {
        Ok(compact)
    } else {
        Err("must be an E.164 phone number: `+`, then 8 to 15 digits, the first not 0".into())
    }
}

fn check_website(text: &str) -> Result<(), String> {
    if plainly_web_url(text) || parsed_web_url(text) {
        Ok(())
    } else {
        Err("must be an absolute http(s) URL".into())
    }
}

/// The WHATWG parser's verdict: an absolute http(s) URL with a host.
fn parsed_web_url(text: &str) -> bool {
    url::Url::from_str(text)
        .is_ok_and(|url| matches!(url.scheme(), "http" | "https") && url.has_host())
}

/// The common website, `http(s)://` + a lower-case dotted host name + an optional plain path, which the
/// WHATWG parser (`url`) accepts; anything else goes through it. The parser is the costliest step of a COUNT
/// translation (benches/README.md). Conservative by construction, and a property test holds it to `url`:
/// - host labels non-empty, of `a-z 0-9 -`, and none an IDNA label (`xn--`), which the parser decodes;
/// - the last label starts with a letter, so the host cannot "end in a number" (an IPv4 address, which
///   the parser checks separately);
/// - no port, userinfo, or characters the parser would percent-encode or strip.
fn plainly_web_url(text: &str) -> bool {
    let Some(rest) = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
    else {
        return false;
    };
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let label_ok = |label: &str| {
        !label.is_empty()
            && !label.starts_with("xn--")
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    let last_starts_with_letter = host
        .rsplit('.')
        .next()
        .and_then(|last| last.bytes().next())
        .is_some_and(|b| b.is_ascii_lowercase());
    last_starts_with_letter
        && host.split('.').all(label_ok)
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~/?#&=%+:@!$'()*,;".contains(&b))
}

fn parse_address(
    kind: AddressKind,
    value: Value,
    errors: &mut Vec<FieldError>,
) -> Option<AddressChange> {
    let object = match value {
        Value::Null => return Some(AddressChange::Remove),
        Value::Object(object) => object,
        other => {
            errors.push(FieldError::new(
                kind.name(),
                format!("must be an object or null, not {}", kind_of(&other)),
            ));
            return None;
        }
    };
    let mut parts = Slots::default();
    let before = errors.len();
    for (key, value) in object {
        let Some(part) = AddressPart::from_name(&key) else {
            errors.push(FieldError::new(
                format!("{}.{key}", kind.name()),
                "is not a canonical address field",
            ));
            continue;
        };
        match parse_address_part(part, value) {
            Ok(change) => {
                parts.insert(part, change);
            }
            Err(message) => errors.push(FieldError::new(address_path(kind, part), message)),
        }
    }
    (errors.len() == before).then_some(AddressChange::Merge(parts))
}

fn parse_address_part(part: AddressPart, value: Value) -> Result<Change, String> {
    let text = match value {
        Value::Null => return Ok(Change::Clear),
        Value::String(s) if s.is_empty() => return Ok(Change::Clear),
        Value::String(s) => s,
        other => return Err(format!("must be a string or null, not {}", kind_of(&other))),
    };
    check_len(&text, MAX_LEN)?;
    if part == AddressPart::Country {
        let upper = text.to_ascii_uppercase();
        if upper.len() != 2 || isocountry::CountryCode::for_alpha2(&upper).is_err() {
            return Err("must be an ISO 3166-1 alpha-2 country code".into());
        }
        return Ok(Change::Set(upper));
    }
    Ok(Change::Set(text))
}

fn parse_provider_fields(
    value: Value,
    target: &str,
    providers: &[&str],
    errors: &mut Vec<FieldError>,
) -> Map<String, Value> {
    let by_provider = match value {
        Value::Object(by_provider) => by_provider,
        other => {
            errors.push(FieldError::new(
                "provider_fields",
                format!(
                    "must be an object keyed by provider, not {}",
                    kind_of(&other)
                ),
            ));
            return Map::new();
        }
    };
    let mut chosen = Map::new();
    for (provider, fields) in by_provider {
        let path = || format!("provider_fields.{provider}");
        if !providers.contains(&provider.as_str()) {
            errors.push(FieldError::new(path(), "is not a known provider"));
            continue;
        }
        match fields {
            Value::Object(fields) if provider == target => chosen = fields,
            Value::Object(_) => {}
            other => errors.push(FieldError::new(
                path(),
                format!(
                    "must be an object of upstream fields, not {}",
                    kind_of(&other)
                ),
            )),
        }
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PROVIDERS: [&str; 2] = ["juice", "count"];

    fn parse(body: Value) -> Result<CustomerPatch, Vec<FieldError>> {
        let Value::Object(body) = body else {
            panic!("a test patch is an object")
        };
        CustomerPatch::parse(body, "juice", &PROVIDERS)
    }

    fn fields_of(errors: Vec<FieldError>) -> Vec<String> {
        errors.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn null_and_empty_string_both_clear() {
        let patch = parse(json!({"first_name": null, "last_name": "", "email": "a@b.co"})).unwrap();
        assert_eq!(patch.fields[&Field::FirstName], Change::Clear);
        assert_eq!(patch.fields[&Field::LastName], Change::Clear);
        assert_eq!(patch.fields[&Field::Email], Change::Set("a@b.co".into()));
    }

    #[test]
    fn phone_is_normalised_to_e164() {
        let patch = parse(json!({"phone": "+1 (415) 555-0101"})).unwrap();
        assert_eq!(
            patch.fields[&Field::Phone],
            Change::Set("+14155550101".into())
        );
        for bad in [
            "4155550101",
            "+0155550101",
            "+1234567",
            "+1234567890123456",
            "+1-800-FLOWERS",
        ] {
            assert!(parse(json!({ "phone": bad })).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn every_bad_field_is_reported_at_once() {
        let errors = parse(json!({
            "email": "not-an-email",
            "website": "ftp://example.com",
            "status": "paused",
            "first_name": 7,
            "billing_address": {"country": "ZZ", "planet": "Mars", "city": "x".repeat(256)},
            "shipping_address": "",
            "id": "juice:1",
            "nickname": "x",
            "provider_fields": {"nope": {}}
        }))
        .unwrap_err();
        let mut fields = fields_of(errors);
        fields.sort();
        assert_eq!(
            fields,
            [
                "billing_address.city",
                "billing_address.country",
                "billing_address.planet",
                "email",
                "first_name",
                "id",
                "nickname",
                "provider_fields.nope",
                "shipping_address",
                "status",
                "website"
            ]
        );
    }

    #[test]
    fn control_characters_are_refused_in_every_string() {
        for bad in ["\u{0}", "\n", "\t", "\u{1f}", "\u{7f}"] {
            let errors = parse(json!({
                "first_name": format!("Ada{bad}"),
                "email": format!("a{bad}@example.com"),
                "phone": format!("+44 20 7183 8751{bad}"),
                "website": format!("https://a.example/{bad}"),
                "billing_address": {"city": format!("Leeds{bad}")},
            }))
            .unwrap_err();
            let mut fields = fields_of(errors);
            fields.sort();
            assert_eq!(
                fields,
                [
                    "billing_address.city",
                    "email",
                    "first_name",
                    "phone",
                    "website"
                ],
                "{bad:?}"
            );
        }
        // A letter outside ASCII is one character, and not a control character.
        assert!(parse(json!({"first_name": "Zoë", "last_name": "é".repeat(255)})).is_ok());
        assert!(parse(json!({"last_name": "é".repeat(256)})).is_err());
    }

    #[test]
    fn status_cannot_be_cleared() {
        assert_eq!(
            fields_of(parse(json!({"status": null})).unwrap_err()),
            ["status"]
        );
        assert_eq!(
            fields_of(parse(json!({"status": ""})).unwrap_err()),
            ["status"]
        );
    }

    #[test]
    fn addresses_merge_remove_and_upper_case_country() {
        let patch = parse(json!({"billing_address": {"city": "Anon", "line2": "", "country": "us"}, "shipping_address": null})).unwrap();
        let AddressChange::Merge(parts) = &patch.addresses[&AddressKind::Billing] else {
            panic!("expected a merge")
        };
        assert_eq!(parts[&AddressPart::City], Change::Set("Anon".into()));
        assert_eq!(parts[&AddressPart::Line2], Change::Clear);
        assert_eq!(parts[&AddressPart::Country], Change::Set("US".into()));
        assert_eq!(
            patch.addresses[&AddressKind::Shipping],
            AddressChange::Remove
        );
    }

    #[test]
    fn empty_patch_and_empty_address_are_no_ops() {
        assert!(parse(json!({})).unwrap().is_empty());
        assert!(parse(json!({"billing_address": {}})).unwrap().is_empty());
    }

    #[test]
    fn provider_fields_keep_only_the_target() {
        let patch =
            parse(json!({"provider_fields": {"juice": {"x": 1}, "count": {"y": 2}}})).unwrap();
        assert_eq!(Value::Object(patch.provider_fields), json!({"x": 1}));
    }

    #[test]
    fn plain_websites_skip_the_parser_and_the_rest_go_through_it() {
        // (website, takes the fast path, valid): what is not plain, valid or not, the parser decides.
        for (text, plain, valid) in [
            ("https://acme.example", true, true),
            (
                "http://www.acme-books.co.uk/about/team?lang=en#top",
                true,
                true,
            ),
            ("https://a1.example/", true, true),
            ("HTTPS://Acme.Example", false, true),
            ("https://acme.example:8443/", false, true),
            ("https://xn--bcher-kva.example", false, true),
            ("http://192.168.0.1/", false, true),
            ("https://user@acme.example", false, true),
            (" https://acme.example", false, true),
            ("http://1.2.3.999", false, false),
            ("http://acme.0x1f", false, false),
            ("https://xn--a.example", false, false),
            ("ftp://acme.example", false, false),
            ("https://", false, false),
            ("acme.example", false, false),
        ] {
            assert_eq!(plainly_web_url(text), plain, "{text}");
            assert_eq!(check_website(text).is_ok(), valid, "{text}");
        }
    }

    /// Host labels near the parser's edges: numbers (decimal, hex, not quite hex), IDNA labels valid and
    /// not, hyphens, empty labels, and random ones.
    fn website_like() -> proptest::string::RegexGeneratorStrategy<String> {
        const LABEL: &str = "(a|b7|9|12|0|0x|0x1f|0xg|xn--a|xn--bcher-kva|ab--c|-||[a-z0-9-]{1,4})";
        let pattern = format!(
            "(https?|HTTP|ftp)://(u@)?({LABEL}\\.){{0,3}}{LABEL}\\.?(:[0-9]{{1,6}})?(/[a-zA-Z0-9 %./?#@:~-]{{0,6}})?"
        );
        proptest::string::string_regex(&pattern).expect("a valid pattern")
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2048))]
        /// The fast path only ever accepts what the WHATWG parser accepts.
        #[test]
        fn plain_websites_are_web_urls(
            text in website_like()
        ) {
            if plainly_web_url(&text) {
                proptest::prop_assert!(parsed_web_url(&text), "{text:?}");
            }
        }
    }

    static CAPS: Capabilities = Capabilities {
        fields: &[(Field::Email, false), (Field::Phone, true)],
        addresses: &[AddressSupport {
            kind: AddressKind::Billing,
            parts: &[AddressPart::Line1, AddressPart::City],
            removable: false,
        }],
    };

    #[test]
    fn strict_refuses_what_the_provider_cannot_store_or_clear() {
        let patch = parse(json!({
            "email": null, "phone": null, "first_name": "A",
            "billing_address": {"city": "X", "line2": "Y"}, "shipping_address": {"city": "Z"}
        }))
        .unwrap();
        let errors = patch.clone().restrict(&CAPS, "demo", false).unwrap_err();
        assert_eq!(
            fields_of(errors),
            [
                "first_name",
                "email",
                "billing_address.line2",
                "shipping_address"
            ]
        );
        let (kept, skipped) = patch.restrict(&CAPS, "demo", true).unwrap();
        assert_eq!(
            skipped,
            [
                "first_name",
                "email",
                "billing_address.line2",
                "shipping_address"
            ]
        );
        assert_eq!(kept.fields.len(), 1);
        assert_eq!(kept.addresses.len(), 1);
        let removal = parse(json!({"billing_address": null})).unwrap();
        assert_eq!(
            fields_of(removal.restrict(&CAPS, "demo", false).unwrap_err()),
            ["billing_address"]
        );
    }
}
