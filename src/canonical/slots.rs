//! A map over a small closed set of keys (the canonical fields, addresses and address parts): one slot per
//! key, in the keys' canonical order. A patch holds three of these; as B-trees they cost an allocation
//! each and tree code on every request.

use std::fmt;

/// A key with a fixed place among the others.
pub trait Slot: Copy + Eq + 'static {
    /// Every key, in canonical order; a key's place in it is its slot.
    const ALL: &'static [Self];

    fn slot(self) -> usize;
}

/// At most one value per key, iterated in canonical key order.
#[derive(Clone, PartialEq, Eq)]
pub struct Slots<K: Slot, V, const N: usize> {
    values: [Option<V>; N],
    keys: std::marker::PhantomData<K>,
}

impl<K: Slot, V, const N: usize> Default for Slots<K, V, N> {
    fn default() -> Self {
        Slots {
            values: std::array::from_fn(|_| None),
            keys: std::marker::PhantomData,
        }
    }
}

impl<K: Slot, V, const N: usize> Slots<K, V, N> {
    pub fn get(&self, key: &K) -> Option<&V> {
        self.values[key.slot()].as_ref()
    }

    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.values[key.slot()].replace(value)
    }

    pub fn contains_key(&self, key: &K) -> bool {
        self.get(key).is_some()
    }

    pub fn len(&self) -> usize {
        self.values.iter().filter(|v| v.is_some()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.values.iter().all(Option::is_none)
    }

    /// `(key, value)` pairs in canonical key order.
    pub fn iter(&self) -> Iter<'_, K, V> {
        Iter {
            keys: K::ALL.iter(),
            values: self.values.iter(),
        }
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.values.iter().flatten()
    }

    /// Keeps the pairs for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        for (key, slot) in K::ALL.iter().zip(&mut self.values) {
            if let Some(value) = slot {
                if !keep(key, value) {
                    *slot = None;
                }
            }
        }
    }
}

/// The pairs of a [`Slots`], in canonical key order.
pub struct Iter<'a, K: 'static, V> {
    keys: std::slice::Iter<'static, K>,
    values: std::slice::Iter<'a, Option<V>>,
}

impl<'a, K, V> Iterator for Iter<'a, K, V> {
    type Item = (&'static K, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let key = self.keys.next()?;
            if let Some(value) = self.values.next()? {
                return Some((key, value));
            }
        }
    }
}

impl<'a, K: Slot, V, const N: usize> IntoIterator for &'a Slots<K, V, N> {
    type Item = (&'static K, &'a V);
    type IntoIter = Iter<'a, K, V>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<K: Slot, V, const N: usize> std::ops::Index<&K> for Slots<K, V, N> {
    type Output = V;

    fn index(&self, key: &K) -> &V {
        self.get(key).expect("no value for this key")
    }
}

impl<K: Slot + fmt::Debug, V: fmt::Debug, const N: usize> fmt::Debug for Slots<K, V, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::{AddressKind, AddressPart, Field};

    #[test]
    fn one_value_per_key_in_canonical_order() {
        let mut slots: Slots<AddressPart, u8, 6> = Slots::default();
        assert!(slots.is_empty());
        slots.insert(AddressPart::Country, 1);
        slots.insert(AddressPart::Line1, 2);
        assert_eq!(slots.insert(AddressPart::Country, 3), Some(1));
        let pairs: Vec<(AddressPart, u8)> = slots.iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(pairs, [(AddressPart::Line1, 2), (AddressPart::Country, 3)]);
        assert_eq!(slots.len(), 2);
        slots.retain(|key, _| *key != AddressPart::Line1);
        assert_eq!(slots.get(&AddressPart::Line1), None);
        assert_eq!(slots[&AddressPart::Country], 3);
        assert!(!slots.contains_key(&AddressPart::City));
    }

    /// A key's slot is its place in `ALL` (the enums' declaration order must match it).
    #[test]
    fn every_key_has_its_own_slot() {
        fn check<K: Slot>() {
            for (i, key) in K::ALL.iter().enumerate() {
                assert_eq!(key.slot(), i);
            }
        }
        check::<Field>();
        check::<AddressKind>();
        check::<AddressPart>();
    }
}
