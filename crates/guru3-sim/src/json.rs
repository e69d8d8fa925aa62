//! JSON as GURU3 writes it: Python's `json.dumps` defaults (keys in insertion order, `", "` and
//! `": "` separators, every non-ASCII character as `\uXXXX`, astral characters as surrogate
//! pairs, floats in their shortest round-trip form with a `.0` on whole numbers).

use std::fmt::Write;

/// A JSON value with ordered object keys.
#[derive(Debug, Clone, PartialEq)]
pub enum J {
    /// `null`
    Null,
    /// `true` / `false`
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// An array.
    Arr(Vec<Self>),
    /// An object, keys in the order given.
    Obj(Vec<(String, Self)>),
}

impl J {
    /// An object from `(key, value)` pairs.
    pub fn obj<const N: usize>(pairs: [(&str, Self); N]) -> Self {
        Self::Obj(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }

    /// A string value.
    pub fn s(s: impl Into<String>) -> Self {
        Self::Str(s.into())
    }

    /// Appends a key to an object (no-op on other values).
    pub fn push(&mut self, key: &str, value: Self) {
        if let Self::Obj(v) = self {
            v.push((key.to_owned(), value));
        }
    }

    /// Looks up a key of an object.
    pub fn get(&self, key: &str) -> Option<&Self> {
        match self {
            Self::Obj(v) => v.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The string value, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Serialises like `json.dumps(value)`.
    pub fn dumps(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) {
        match self {
            Self::Null => out.push_str("null"),
            Self::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Self::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Self::Float(f) => {
                if !f.is_finite() {
                    out.push_str("NaN");
                } else if f.fract() == 0.0 && f.abs() < 1e16 {
                    let _ = write!(out, "{f:.1}");
                } else {
                    let _ = write!(out, "{f}");
                }
            }
            Self::Str(s) => write_str(s, out),
            Self::Arr(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    v.write(out);
                }
                out.push(']');
            }
            Self::Obj(pairs) => {
                out.push('{');
                for (i, (k, v)) in pairs.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    write_str(k, out);
                    out.push_str(": ");
                    v.write(out);
                }
                out.push('}');
            }
        }
    }

    /// Converts a parsed value (object keys come out in serde_json's order).
    pub fn from_value(v: &serde_json::Value) -> Self {
        use serde_json::Value as V;
        match v {
            V::Null => Self::Null,
            V::Bool(b) => Self::Bool(*b),
            V::Number(n) => match n.as_i64() {
                Some(i) => Self::Int(i),
                None => Self::Float(n.as_f64().unwrap_or(0.0)),
            },
            V::String(s) => Self::Str(s.clone()),
            V::Array(a) => Self::Arr(a.iter().map(Self::from_value).collect()),
            V::Object(o) => Self::Obj(
                o.iter()
                    .map(|(k, v)| (k.clone(), Self::from_value(v)))
                    .collect(),
            ),
        }
    }
}

fn write_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{u:04x}");
                }
            }
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_like_python() {
        let v = J::obj([
            ("id", J::Int(52003)),
            ("timestamp", J::Float(1766743200.109822)),
            ("whole", J::Float(1766746020.0)),
            ("name", J::s("Tomás R. 📞 \"q\"\\\n\u{1}")),
            ("list", J::Arr(vec![J::Bool(true), J::Null])),
        ]);
        assert_eq!(
            v.dumps(),
            r#"{"id": 52003, "timestamp": 1766743200.109822, "whole": 1766746020.0, "name": "Tom\u00e1s R. \ud83d\udcde \"q\"\\\n\u0001", "list": [true, null]}"#
        );
    }
}
