//! Whether a body has members its target type ignores, without saying where.
//!
//! `serde_ignored` reports the path of every ignored member, so it copies
//! every key of the body into a `String` on the way (about half the cost of
//! a plain parse of a typical order). Most bodies have no unknown member: the
//! fast path only needs to know whether one was ignored, and the rare body
//! that has one is parsed again with `serde_ignored` for the pointers. This
//! adapter forwards everything unchanged and wraps the same places
//! `serde_ignored` does (values of maps and sequences, `Some`, newtypes,
//! enum variants; never keys), so it flags exactly the bodies for which
//! `serde_ignored` would report a path.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Visitor};

/// Deserializes a `T` from `de`, setting `ignored` when `T` ignores a member.
pub(crate) fn deserialize<'de, D, T>(de: D, ignored: &Cell<bool>) -> Result<T, D::Error>
where
    D: de::Deserializer<'de>,
    T: de::Deserialize<'de>,
{
    T::deserialize(Deserializer { de, ignored })
}

/// The deserializer adapter.
struct Deserializer<'f, D> {
    de: D,
    ignored: &'f Cell<bool>,
}

/// A visitor, sequence, map, enum or variant adapter.
struct Wrap<'f, X> {
    delegate: X,
    ignored: &'f Cell<bool>,
}

/// A seed whose value is deserialized through the adapter.
struct Seed<'f, X> {
    delegate: X,
    ignored: &'f Cell<bool>,
}

impl<'f, X> Wrap<'f, X> {
    fn new(delegate: X, ignored: &'f Cell<bool>) -> Self {
        Self { delegate, ignored }
    }
}

macro_rules! forward_deserialize {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {$(
        #[inline]
        fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, D::Error> {
            self.de.$method($($arg,)* Wrap::new(visitor, self.ignored))
        }
    )*};
}

impl<'de, D: de::Deserializer<'de>> de::Deserializer<'de> for Deserializer<'_, D> {
    type Error = D::Error;

    forward_deserialize! {
        deserialize_any();
        deserialize_bool();
        deserialize_i8();
        deserialize_i16();
        deserialize_i32();
        deserialize_i64();
        deserialize_i128();
        deserialize_u8();
        deserialize_u16();
        deserialize_u32();
        deserialize_u64();
        deserialize_u128();
        deserialize_f32();
        deserialize_f64();
        deserialize_char();
        deserialize_str();
        deserialize_string();
        deserialize_bytes();
        deserialize_byte_buf();
        deserialize_option();
        deserialize_unit();
        deserialize_unit_struct(name: &'static str);
        deserialize_newtype_struct(name: &'static str);
        deserialize_seq();
        deserialize_tuple(len: usize);
        deserialize_tuple_struct(name: &'static str, len: usize);
        deserialize_map();
        deserialize_struct(name: &'static str, fields: &'static [&'static str]);
        deserialize_enum(name: &'static str, variants: &'static [&'static str]);
        deserialize_identifier();
    }

    /// What a derived `Deserialize` calls for a member it does not declare.
    #[inline]
    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.ignored.set(true);
        self.de.deserialize_ignored_any(visitor)
    }

    fn is_human_readable(&self) -> bool {
        self.de.is_human_readable()
    }
}

macro_rules! forward_visit {
    ($($method:ident($ty:ty);)*) => {$(
        #[inline]
        fn $method<E: de::Error>(self, v: $ty) -> Result<Self::Value, E> {
            self.delegate.$method(v)
        }
    )*};
}

impl<'de, X: Visitor<'de>> Visitor<'de> for Wrap<'_, X> {
    type Value = X::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.delegate.expecting(f)
    }

    forward_visit! {
        visit_bool(bool);
        visit_i8(i8);
        visit_i16(i16);
        visit_i32(i32);
        visit_i64(i64);
        visit_i128(i128);
        visit_u8(u8);
        visit_u16(u16);
        visit_u32(u32);
        visit_u64(u64);
        visit_u128(u128);
        visit_f32(f32);
        visit_f64(f64);
        visit_char(char);
        visit_str(&str);
        visit_borrowed_str(&'de str);
        visit_string(String);
        visit_bytes(&[u8]);
        visit_borrowed_bytes(&'de [u8]);
        visit_byte_buf(Vec<u8>);
    }

    #[inline]
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.delegate.visit_none()
    }

    #[inline]
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.delegate.visit_unit()
    }

    #[inline]
    fn visit_some<D: de::Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        let ignored = self.ignored;
        self.delegate.visit_some(Deserializer { de, ignored })
    }

    #[inline]
    fn visit_newtype_struct<D: de::Deserializer<'de>>(
        self,
        de: D,
    ) -> Result<Self::Value, D::Error> {
        let ignored = self.ignored;
        self.delegate
            .visit_newtype_struct(Deserializer { de, ignored })
    }

    #[inline]
    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        self.delegate.visit_seq(Wrap::new(seq, self.ignored))
    }

    #[inline]
    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.delegate.visit_map(Wrap::new(map, self.ignored))
    }

    #[inline]
    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
        self.delegate.visit_enum(Wrap::new(data, self.ignored))
    }
}

impl<'de, X: de::SeqAccess<'de>> de::SeqAccess<'de> for Wrap<'_, X> {
    type Error = X::Error;

    #[inline]
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, X::Error> {
        let ignored = self.ignored;
        self.delegate.next_element_seed(Seed {
            delegate: seed,
            ignored,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        self.delegate.size_hint()
    }
}

impl<'de, X: de::MapAccess<'de>> de::MapAccess<'de> for Wrap<'_, X> {
    type Error = X::Error;

    /// Keys are not watched, as `serde_ignored` does not watch them.
    #[inline]
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, X::Error> {
        self.delegate.next_key_seed(seed)
    }

    #[inline]
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, X::Error> {
        let ignored = self.ignored;
        self.delegate.next_value_seed(Seed {
            delegate: seed,
            ignored,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        self.delegate.size_hint()
    }
}

impl<'de, 'f, X: de::EnumAccess<'de>> de::EnumAccess<'de> for Wrap<'f, X> {
    type Error = X::Error;
    type Variant = Wrap<'f, X::Variant>;

    #[inline]
    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self::Variant), X::Error> {
        let ignored = self.ignored;
        let (value, variant) = self.delegate.variant_seed(seed)?;
        Ok((value, Wrap::new(variant, ignored)))
    }
}

impl<'de, X: de::VariantAccess<'de>> de::VariantAccess<'de> for Wrap<'_, X> {
    type Error = X::Error;

    fn unit_variant(self) -> Result<(), X::Error> {
        self.delegate.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, X::Error> {
        let ignored = self.ignored;
        self.delegate.newtype_variant_seed(Seed {
            delegate: seed,
            ignored,
        })
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, X::Error> {
        self.delegate
            .tuple_variant(len, Wrap::new(visitor, self.ignored))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, X::Error> {
        self.delegate
            .struct_variant(fields, Wrap::new(visitor, self.ignored))
    }
}

impl<'de, X: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<'_, X> {
    type Value = X::Value;

    #[inline]
    fn deserialize<D: de::Deserializer<'de>>(self, de: D) -> Result<X::Value, D::Error> {
        let ignored = self.ignored;
        self.delegate.deserialize(Deserializer { de, ignored })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        a: u32,
    }

    #[derive(Deserialize)]
    #[allow(dead_code)]
    enum Kind {
        Unit,
        New(Inner),
        Tuple(Inner, u8),
        Struct { inner: Inner },
    }

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Outer {
        list: Vec<Inner>,
        map: BTreeMap<String, Inner>,
        opt: Option<Inner>,
        kind: Kind,
        #[serde(default)]
        kinds: Vec<Kind>,
    }

    /// Whether this adapter and `serde_ignored` agree on `json`.
    fn agree(json: &str) -> bool {
        let fast = Cell::new(false);
        let mut de = serde_json::Deserializer::from_str(json);
        deserialize::<_, Outer>(&mut de, &fast).unwrap();
        let mut paths = Vec::new();
        let mut de = serde_json::Deserializer::from_str(json);
        serde_ignored::deserialize::<_, _, Outer>(&mut de, |p| paths.push(p.to_string())).unwrap();
        assert_eq!(fast.get(), !paths.is_empty(), "{json}: {paths:?}");
        fast.get()
    }

    #[test]
    fn flags_exactly_what_serde_ignored_reports() {
        let base = r#""list": [{"a": 1}], "map": {"k": {"a": 1}}, "opt": {"a": 1}, "kind": "Unit""#;
        assert!(!agree(&format!("{{{base}}}")));
        assert!(agree(&format!("{{{base}, \"x\": [1, {{\"y\": 2}}]}}")));
        let cases = [
            r#"{"list": [{"a": 1, "b": 2}], "map": {}, "opt": null, "kind": "Unit"}"#,
            r#"{"list": [], "map": {"k": {"a": 1, "b": 2}}, "opt": null, "kind": "Unit"}"#,
            r#"{"list": [], "map": {}, "opt": {"a": 1, "b": 2}, "kind": "Unit"}"#,
            r#"{"list": [], "map": {}, "opt": null, "kind": {"New": {"a": 1, "b": 2}}}"#,
            r#"{"list": [], "map": {}, "opt": null, "kind": {"Tuple": [{"a": 1, "b": 2}, 3]}}"#,
            r#"{"list": [], "map": {}, "opt": null, "kind": {"Struct": {"inner": {"a": 1}, "b": 2}}}"#,
            r#"{"list": [], "map": {}, "opt": null, "kind": "Unit", "kinds": [{"Struct": {"inner": {"a": 1, "z": 0}}}]}"#,
        ];
        for json in cases {
            assert!(agree(json), "{json}");
        }
        let clean = r#"{"list": [], "map": {}, "opt": null, "kind": {"Struct": {"inner": {"a": 1}}}, "kinds": ["Unit", {"New": {"a": 2}}]}"#;
        assert!(!agree(clean));
    }
}
