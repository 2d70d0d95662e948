//! The JSON body of a write, borrowed from the patch and the record it is merged with, and written once
//! into the bytes sent: no map is built and no string copied on the way.

use bytes::Bytes;
use serde::ser::{Serialize, Serializer};
use serde_json::{Map, Value};

/// One value of a body being written.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Wire<'a> {
    Null,
    Str(&'a str),
    /// A string made for this write (e.g. a new external id).
    Owned(String),
    /// A value passed through as it is (`provider_fields`, a member copied from the record).
    Value(&'a Value),
    Object(Object<'a>),
    Array(Vec<Wire<'a>>),
}

impl<'a> Wire<'a> {
    /// The value kept from a stored record, with `""` (an empty field) as `null`.
    pub(crate) fn stored(value: Option<&'a Value>) -> Wire<'a> {
        match value {
            None | Some(Value::Null) => Wire::Null,
            Some(Value::String(s)) if s.is_empty() => Wire::Null,
            Some(value) => Wire::Value(value),
        }
    }

    pub(crate) fn is_null(&self) -> bool {
        matches!(self, Wire::Null | Wire::Value(Value::Null))
    }

    /// An owned copy, for the rare reader that needs a `Value`.
    pub(crate) fn to_value(&self) -> Value {
        match self {
            Wire::Null => Value::Null,
            Wire::Str(text) => Value::String((*text).to_owned()),
            Wire::Owned(text) => Value::String(text.clone()),
            Wire::Value(value) => (*value).clone(),
            Wire::Object(object) => Value::Object(
                object
                    .members
                    .iter()
                    .map(|(key, value)| ((*key).to_owned(), value.to_value()))
                    .collect(),
            ),
            Wire::Array(items) => Value::Array(items.iter().map(Wire::to_value).collect()),
        }
    }

    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Wire::Str(s) => Some(s),
            Wire::Owned(s) => Some(s),
            Wire::Value(Value::String(s)) => Some(s),
            _ => None,
        }
    }
}

/// A JSON object whose members keep the order they were first set in.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Object<'a> {
    members: Vec<(&'a str, Wire<'a>)>,
}

impl<'a> Object<'a> {
    pub(crate) fn with_capacity(members: usize) -> Object<'a> {
        Object {
            members: Vec::with_capacity(members),
        }
    }

    /// Starts from the members of `map` (e.g. the raw `provider_fields`), borrowed, with room for `more`.
    pub(crate) fn from_map(map: &'a Map<String, Value>, more: usize) -> Object<'a> {
        let mut members = Vec::with_capacity(map.len() + more);
        members.extend(map.iter().map(|(k, v)| (k.as_str(), Wire::Value(v))));
        Object { members }
    }

    /// Sets `key`, replacing the value it had (like `Map::insert`).
    pub(crate) fn set(&mut self, key: &'a str, value: Wire<'a>) {
        match self.members.iter_mut().find(|(k, _)| *k == key) {
            Some((_, old)) => *old = value,
            None => self.members.push((key, value)),
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<&Wire<'a>> {
        self.members
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, value)| value)
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &Wire<'a>> {
        self.members.iter().map(|(_, value)| value)
    }

    /// The JSON text to send.
    pub(crate) fn to_bytes(&self) -> Bytes {
        // Room for a SparkLayer address list (~330 bytes) without regrowing mid-write; 512 B is still one
        // of mimalloc's small size classes.
        let mut out = Vec::with_capacity(512);
        serde_json::to_writer(&mut out, self)
            .expect("a body of strings and JSON values serialises");
        Bytes::from(out)
    }
}

impl Serialize for Wire<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Wire::Null => serializer.serialize_unit(),
            Wire::Str(text) => serializer.serialize_str(text),
            Wire::Owned(text) => serializer.serialize_str(text),
            Wire::Value(value) => value.serialize(serializer),
            Wire::Object(object) => object.serialize(serializer),
            Wire::Array(items) => serializer.collect_seq(items),
        }
    }
}

impl Serialize for Object<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.members.iter().map(|(key, value)| (key, value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn members_keep_their_first_place_and_the_last_value() {
        let raw = json!({"b": 1, "a": [true]});
        let mut object = Object::from_map(raw.as_object().unwrap(), 2);
        object.set("z", Wire::Str("x\"y"));
        object.set("b", Wire::Null);
        let mut inner = Object::default();
        inner.set("k", Wire::Owned("v".into()));
        object.set("o", Wire::Array(vec![Wire::Object(inner), Wire::Null]));
        assert_eq!(
            &object.to_bytes()[..],
            br#"{"a":[true],"b":null,"z":"x\"y","o":[{"k":"v"},null]}"#
        );
    }

    #[test]
    fn stored_empty_strings_are_null() {
        let empty = json!("");
        let text = json!("x");
        assert!(Wire::stored(Some(&empty)).is_null());
        assert!(Wire::stored(None).is_null());
        assert_eq!(Wire::stored(Some(&text)).as_str(), Some("x"));
    }
}
