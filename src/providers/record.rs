//! A provider's record as read: its top-level members in a plain list, their values as JSON.
//!
//! serde_json's `Map` is a B-tree, costly to build for every answer and then empty member by member; a
//! record's few dozen members are found as fast in a list, by length first (benches/README.md). Nested
//! objects (a stored address) stay `Value`s.

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;

/// A JSON object's members, each key once (a repeated key keeps its last value, as in a `Map`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Record {
    members: Vec<(String, Value)>,
}

/// Where a provider's answer holds the record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordAt {
    /// The answer is the record.
    Top,
    /// `{"data": {…}}`.
    Data,
}

/// Beyond this many members, repeated keys are found through a `Map` instead of pairwise.
const PAIRWISE_LIMIT: usize = 32;

impl Record {
    /// The record in a provider's answer, or `None` when the text holds none where `at` says.
    pub fn parse(text: &str, at: RecordAt) -> Option<Record> {
        #[derive(serde::Deserialize)]
        struct Data {
            data: Record,
        }
        match at {
            RecordAt::Top => serde_json::from_str(text).ok(),
            RecordAt::Data => serde_json::from_str::<Data>(text).ok().map(|d| d.data),
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.members
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, value)| value)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Moves `key`'s value out (the order of the other members may change).
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let index = self.members.iter().position(|(k, _)| k == key)?;
        Some(self.members.swap_remove(index).1)
    }

    /// The members `keep` accepts, as a `Map`.
    pub fn into_map(self, mut keep: impl FnMut(&str) -> bool) -> Map<String, Value> {
        self.members
            .into_iter()
            .filter(|(key, _)| keep(key))
            .collect()
    }

    fn from_members(mut members: Vec<(String, Value)>) -> Record {
        if members.len() > PAIRWISE_LIMIT {
            // Rare and possibly hostile: let the B-tree keep each key's last value.
            let map: Map<String, Value> = members.into_iter().collect();
            members = map.into_iter().collect();
        } else {
            // Each key is dropped when a later member repeats it: the last value stays.
            let mut index = 0;
            while index < members.len() {
                let (key, _) = &members[index];
                if members[index + 1..].iter().any(|(later, _)| later == key) {
                    members.remove(index);
                } else {
                    index += 1;
                }
            }
        }
        Record { members }
    }
}

impl From<Map<String, Value>> for Record {
    fn from(map: Map<String, Value>) -> Record {
        Record {
            members: map.into_iter().collect(),
        }
    }
}

impl<'de> Deserialize<'de> for Record {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Record, D::Error> {
        struct Members;

        impl<'de> Visitor<'de> for Members {
            type Value = Record;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Record, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(16).min(64));
                while let Some((key, value)) = map.next_entry::<String, Value>()? {
                    members.push((key, value));
                }
                Ok(Record::from_members(members))
            }
        }

        deserializer.deserialize_map(Members)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Object texts with repeated keys, few and many.
    fn object_text() -> impl Strategy<Value = String> {
        let key = prop_oneof![
            Just("a".to_owned()),
            Just("b".to_owned()),
            Just("ab".to_owned()),
            "[a-z]{1,3}",
        ];
        let member = (key, any::<i32>());
        prop::collection::vec(member, 0..80).prop_map(|members| {
            let body: Vec<String> = members
                .iter()
                .map(|(key, value)| format!("\"{key}\":{value}"))
                .collect();
            format!("{{{}}}", body.join(","))
        })
    }

    proptest! {
        /// A record holds what serde_json's `Map` holds for the same text: each key once, the last
        /// value of a repeated key.
        #[test]
        fn a_record_holds_what_a_map_holds(text in object_text()) {
            let record = Record::parse(&text, RecordAt::Top).unwrap();
            let map: Map<String, Value> = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(record.members.len(), map.len());
            for (key, value) in &map {
                prop_assert_eq!(record.get(key), Some(value));
            }
            prop_assert_eq!(record.into_map(|_| true), map);
        }
    }

    #[test]
    fn records_are_found_where_the_provider_puts_them() {
        let top = Record::parse(r#"{"id":"x","n":1}"#, RecordAt::Top).unwrap();
        assert_eq!(top.get("id"), Some(&Value::from("x")));
        let data = Record::parse(r#"{"status":true,"data":{"id":"y"}}"#, RecordAt::Data).unwrap();
        assert_eq!(data.get("id"), Some(&Value::from("y")));
        for (text, at) in [
            (r#"{"id":"x"}"#, RecordAt::Data),
            (r#"{"data":[1]}"#, RecordAt::Data),
            (r#"[{"id":"x"}]"#, RecordAt::Top),
            ("null", RecordAt::Top),
        ] {
            assert_eq!(Record::parse(text, at), None, "{text}");
        }
    }

    #[test]
    fn removing_moves_the_value_out() {
        let mut record = Record::parse(r#"{"a":1,"b":2,"c":3}"#, RecordAt::Top).unwrap();
        assert_eq!(record.remove("a"), Some(Value::from(1)));
        assert_eq!(record.remove("a"), None);
        assert!(!record.contains_key("a") && record.contains_key("c"));
        let rest = record.into_map(|key| key != "b");
        assert_eq!(Value::Object(rest), serde_json::json!({"c": 3}));
    }
}
