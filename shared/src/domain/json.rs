//! Strict JSON reading for every API body: duplicate keys refused, and only a JSON object may
//! become a struct.
//! Serde's derived structs also accept arrays (fields by position) and serde_json would let
//! `[["+1415…"], null, …]` pass as a broadcast; an API must not.

use serde::de::value::{MapDeserializer, SeqDeserializer};
use serde::de::{self, IntoDeserializer, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

pub struct Strict(pub Value);

/// Parses JSON text into a `Value`, refusing an object that names a key twice (parsers disagree
/// on which one wins, and a proxy and Herald must not read two different requests).
pub fn parse_value(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let v = NoDup::deserialize(&mut de)?;
    de.end()?;
    Ok(v.0)
}

struct NoDup(Value);

impl<'de> serde::Deserialize<'de> for NoDup {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NoDupVisitor)
    }
}

struct NoDupVisitor;

impl<'de> Visitor<'de> for NoDupVisitor {
    type Value = NoDup;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<NoDup, E> {
        Ok(NoDup(Value::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<NoDup, E> {
        Ok(NoDup(Value::from(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<NoDup, E> {
        Ok(NoDup(Value::from(v)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<NoDup, E> {
        Ok(NoDup(Value::from(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<NoDup, E> {
        Ok(NoDup(Value::String(v.to_string())))
    }
    fn visit_string<E>(self, v: String) -> Result<NoDup, E> {
        Ok(NoDup(Value::String(v)))
    }
    fn visit_unit<E>(self) -> Result<NoDup, E> {
        Ok(NoDup(Value::Null))
    }
    fn visit_none<E>(self) -> Result<NoDup, E> {
        Ok(NoDup(Value::Null))
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<NoDup, A::Error> {
        let mut out = Vec::new();
        while let Some(NoDup(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(NoDup(Value::Array(out)))
    }
    fn visit_map<A: de::MapAccess<'de>>(self, mut m: A) -> Result<NoDup, A::Error> {
        let mut out = Map::new();
        while let Some(k) = m.next_key::<String>()? {
            let NoDup(v) = m.next_value()?;
            if out.contains_key(&k) {
                return Err(de::Error::custom(format!("names the key `{k}` twice")));
            }
            out.insert(k, v);
        }
        Ok(NoDup(Value::Object(out)))
    }
}

impl<'de> IntoDeserializer<'de, serde_json::Error> for Strict {
    type Deserializer = Strict;
    fn into_deserializer(self) -> Strict {
        self
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn map<'de, V: Visitor<'de>>(m: Map<String, Value>, visitor: V) -> Result<V::Value, serde_json::Error> {
    let mut de = MapDeserializer::new(m.into_iter().map(|(k, v)| (k, Strict(v))));
    let out = visitor.visit_map(&mut de)?;
    de.end()?;
    Ok(out)
}

impl<'de> de::Deserializer<'de> for Strict {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Array(items) => {
                let mut de = SeqDeserializer::new(items.into_iter().map(Strict));
                let out = visitor.visit_seq(&mut de)?;
                de.end()?;
                Ok(out)
            }
            Value::Object(m) => map(m, visitor),
            scalar => de::Deserializer::deserialize_any(scalar, visitor),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Object(m) => map(m, visitor),
            other => Err(de::Error::custom(format!("must be a JSON object, not {}", kind(&other)))),
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Object(m) => map(m, visitor),
            other => Err(de::Error::custom(format!("must be a JSON object, not {}", kind(&other)))),
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Array(_) => self.deserialize_any(visitor),
            other => Err(de::Error::custom(format!("must be an array, not {}", kind(&other)))),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            v => visitor.visit_some(Strict(v)),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::String(s) => visitor.visit_string(s),
            other => Err(de::Error::custom(format!("must be a string, not {}", kind(&other)))),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.deserialize_string(visitor)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Bool(b) => visitor.visit_bool(b),
            other => Err(de::Error::custom(format!("must be true or false, not {}", kind(&other)))),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _: &'static str, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::String(_) => de::Deserializer::deserialize_enum(self.0, name, variants, visitor),
            other => Err(de::Error::custom(format!("must be one of {}, not {}", variants.join(", "), kind(&other)))),
        }
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char bytes byte_buf unit unit_struct tuple tuple_struct identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct S {
        a: Option<String>,
        b: Option<Vec<Inner>>,
    }
    #[derive(Debug, Deserialize, PartialEq)]
    struct Inner {
        x: u32,
    }

    fn parse(v: Value) -> Result<S, String> {
        serde_path_to_error::deserialize(Strict(v)).map_err(|e| format!("{}: {}", e.path(), e.inner()))
    }

    #[test]
    fn objects_become_structs_and_arrays_do_not() {
        assert_eq!(parse(serde_json::json!({"a": "1", "b": [{"x": 2}]})).unwrap().b.unwrap()[0].x, 2);
        assert_eq!(parse(serde_json::json!(["1", null])).unwrap_err(), ".: must be a JSON object, not an array");
        assert_eq!(parse(serde_json::json!({"b": [[2]]})).unwrap_err(), "b[0]: must be a JSON object, not an array");
        assert_eq!(parse(serde_json::json!({"a": 5})).unwrap_err(), "a: must be a string, not a number");
        assert!(parse(serde_json::json!({"c": 1})).unwrap_err().contains("unknown field `c`"));
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        assert!(parse_value(br#"{"a": 1, "a": 2}"#).unwrap_err().to_string().contains("names the key `a` twice"));
        assert!(parse_value(br#"{"b": [{"x": 1, "x": 1}]}"#).is_err());
        assert_eq!(
            parse_value(br#"{"a": [1, 2.5, "s", null, true]}"#).unwrap(),
            serde_json::json!({"a": [1, 2.5, "s", null, true]})
        );
    }
}
