//! Strict JSON parsing for request bodies: UTF-8, an object at the top, and no duplicate keys at any depth.
//!
//! `serde_json::Value` silently keeps the last of two equal keys; a gateway that guesses which one the caller
//! meant would write something nobody asked for, so duplicates are refused instead.

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;

/// Parses a request body into a JSON object, or explains in one sentence why it is not one.
pub fn parse_object(body: &[u8]) -> Result<Map<String, Value>, String> {
    // UTF-8 checked once for the whole body: parsing from `&str` then skips the check of every string.
    let text = std::str::from_utf8(body).map_err(|e| {
        format!(
            "the body is not valid JSON: it is not UTF-8 (invalid byte at offset {})",
            e.valid_up_to()
        )
    })?;
    let mut de = serde_json::Deserializer::from_str(text);
    let value = StrictValue
        .deserialize(&mut de)
        .map_err(|e| format!("the body is not valid JSON: {e}"))?;
    de.end()
        .map_err(|e| format!("the body is not valid JSON: {e}"))?;
    match value {
        Value::Object(map) => Ok(map),
        other => Err(format!(
            "the body must be a JSON object, not {}",
            kind_of(&other)
        )),
    }
}

/// A short name for a JSON value's type, for error messages.
pub fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// How serde_json (with `arbitrary_precision`) hands a number's text to a visitor: a one-member map
/// under this key.
const NUMBER_TOKEN: &str = "$serde_json::private::Number";

struct StrictValue;

impl<'de> DeserializeSeed<'de> for StrictValue {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictValue {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(StrictValue)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            if key == NUMBER_TOKEN && map.is_empty() {
                // A number, as its text: passed on unchanged, never rounded through f64.
                let text: String = access.next_value()?;
                return text.parse().map(Value::Number).map_err(de::Error::custom);
            }
            if map.contains_key(&key) {
                return Err(de::Error::custom(format_args!("duplicate key `{key}`")));
            }
            let value = access.next_value_seed(StrictValue)?;
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_an_object() {
        let map = parse_object(br#"{"a":{"b":[1,2,{"c":null}]}}"#).unwrap();
        assert_eq!(map["a"]["b"][2]["c"], Value::Null);
    }

    #[test]
    fn numbers_keep_their_digits() {
        // serde_json writes an exponent as `e` with its sign; every digit, sign and point is kept.
        for (text, kept) in [
            (
                "123456789012345678901234567890",
                "123456789012345678901234567890",
            ),
            ("1E2", "1e+2"),
            ("1e-999", "1e-999"),
            ("-0", "-0"),
            ("0.10", "0.10"),
            ("-1.5E+300", "-1.5e+300"),
        ] {
            let body = format!(r#"{{"n":{text},"deep":[{{"n":{text}}}]}}"#);
            let map = parse_object(body.as_bytes()).unwrap();
            assert_eq!(map["n"].to_string(), kept);
            assert_eq!(map["deep"][0]["n"].to_string(), kept);
        }
    }

    #[test]
    fn refuses_duplicates_at_any_depth() {
        assert!(parse_object(br#"{"a":1,"a":2}"#)
            .unwrap_err()
            .contains("duplicate key `a`"));
        assert!(parse_object(br#"{"x":{"b":1,"b":1}}"#)
            .unwrap_err()
            .contains("duplicate key `b`"));
    }

    #[test]
    fn refuses_non_objects_and_garbage() {
        assert!(parse_object(b"[]").unwrap_err().contains("an array"));
        assert!(parse_object(b"\"x\"").unwrap_err().contains("a string"));
        assert!(parse_object(b"{").unwrap_err().contains("not valid JSON"));
        assert!(parse_object(b"{} {}")
            .unwrap_err()
            .contains("not valid JSON"));
        assert_eq!(
            parse_object(b"{\"a\":\"\xff\"}").unwrap_err(),
            "the body is not valid JSON: it is not UTF-8 (invalid byte at offset 6)"
        );
    }
}
