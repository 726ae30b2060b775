//! A TOML document parsed into a tree that remembers the byte span of each value, so that config
//! errors can name a line. Private: the public config types are built from it.
//!
//! The `toml` crate exposes spans only through `toml::Spanned`, whose deserializer fails on tables
//! that have no span of their own (dotted keys, implicit parents). We therefore speak the same
//! private protocol `toml::Spanned` uses, and accept values without a span. The protocol names
//! are pinned by the lockfile and covered by the line-number tests in `config`.

use std::fmt;
use std::ops::Range;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::quote::toml_quote;

const SPANNED_NAME: &str = "$__serde_spanned_private_Spanned";
const SPANNED_START: &str = "$__serde_spanned_private_start";
const SPANNED_END: &str = "$__serde_spanned_private_end";
const SPANNED_VALUE: &str = "$__serde_spanned_private_value";
const SPANNED_FIELDS: &[&str] = &[SPANNED_START, SPANNED_END, SPANNED_VALUE];
const DATETIME_FIELD: &str = "$__toml_private_datetime";

/// A TOML value with the byte span it came from, if the parser reported one.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub span: Option<Range<usize>>,
    pub kind: Kind,
}

/// The value itself.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    String(String),
    Integer(i64),
    Float(f64),
    Boolean(bool),
    Datetime(String),
    Array(Vec<Node>),
    Table(Vec<(String, Node)>),
}

impl Node {
    fn new(kind: Kind) -> Node {
        Node { span: None, kind }
    }

    /// The TOML type, with an article: `a string`, `an array`, ...
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            Kind::String(_) => "a string",
            Kind::Integer(_) => "an integer",
            Kind::Float(_) => "a float",
            Kind::Boolean(_) => "a boolean",
            Kind::Datetime(_) => "a datetime",
            Kind::Array(_) => "an array",
            Kind::Table(_) => "a table",
        }
    }

    /// A short rendering for messages: scalars as TOML, containers by type.
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::String(s) => toml_quote(s),
            Kind::Integer(i) => i.to_string(),
            Kind::Float(f) => f.to_string(),
            Kind::Boolean(b) => b.to_string(),
            Kind::Datetime(d) => d.clone(),
            Kind::Array(_) | Kind::Table(_) => self.type_name().to_owned(),
        }
    }

    /// The entries, if this is a table.
    pub fn as_table(&self) -> Option<&[(String, Node)]> {
        match &self.kind {
            Kind::Table(t) => Some(t),
            _ => None,
        }
    }

    /// The value of `key`, if this is a table that has it.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_table()?.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

/// Parses `src`. On error returns the 1-based line (if known) and the parser's message.
pub(crate) fn parse(src: &str) -> Result<Node, (Option<usize>, String)> {
    toml::from_str::<Node>(src).map_err(|e| {
        let line = e.span().map(|s| line_of(src, s.start));
        (line, e.message().trim().to_owned())
    })
}

/// The 1-based line that byte `offset` of `src` is on.
pub(crate) fn line_of(src: &str, offset: usize) -> usize {
    let end = offset.min(src.len());
    src.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_struct(SPANNED_NAME, SPANNED_FIELDS, NodeVisitor)
    }
}

/// The value inside a spanned wrapper: must not ask for a span again.
struct Unspanned(Node);

impl<'de> Deserialize<'de> for Unspanned {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor).map(Unspanned)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a toml value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::new(Kind::Boolean(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::new(Kind::Integer(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        i64::try_from(v).map(|v| Node::new(Kind::Integer(v))).map_err(|_| E::custom("integer out of range"))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Node::new(Kind::Float(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::new(Kind::String(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(Node::new(Kind::String(v)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Node::new(Kind::Array(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let Some(first) = map.next_key::<String>()? else {
            return Ok(Node::new(Kind::Table(Vec::new())));
        };
        if first == SPANNED_START {
            let start: usize = map.next_value()?;
            expect_key(&mut map, SPANNED_END)?;
            let end: usize = map.next_value()?;
            expect_key(&mut map, SPANNED_VALUE)?;
            let Unspanned(mut node) = map.next_value()?;
            node.span = Some(start..end);
            return Ok(node);
        }
        if first == DATETIME_FIELD {
            let text: String = map.next_value()?;
            return Ok(Node::new(Kind::Datetime(text)));
        }
        let mut entries = vec![(first, map.next_value::<Node>()?)];
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value::<Node>()?;
            entries.push((key, value));
        }
        Ok(Node::new(Kind::Table(entries)))
    }
}

fn expect_key<'de, A: MapAccess<'de>>(map: &mut A, want: &str) -> Result<(), A::Error> {
    match map.next_key::<String>()? {
        Some(k) if k == want => Ok(()),
        other => Err(de::Error::custom(format!("internal: expected span field {want}, got {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(src: &str, node: &Node) -> usize {
        line_of(src, node.span.clone().expect("span").start)
    }

    #[test]
    fn values_carry_spans_and_types() {
        let src = "a = 1\nb.c = \"x\"\n\n[t]\nd = [1, \"two\"]\ne = 1979-05-27T07:32:00Z\nf = { g = true }\nh = 1.5\n[[arr]]\ni = 2\n";
        let root = parse(src).expect("parses");
        assert_eq!(line(src, root.get("a").expect("a")), 1);
        let b = root.get("b").expect("b");
        assert_eq!(b.type_name(), "a table");
        assert_eq!(line(src, b.get("c").expect("c")), 2);
        let t = root.get("t").expect("t");
        let d = t.get("d").expect("d");
        assert_eq!(line(src, d), 5);
        match &d.kind {
            Kind::Array(items) => {
                assert_eq!(items[0].kind, Kind::Integer(1));
                assert_eq!(items[1].kind, Kind::String("two".into()));
            }
            other => panic!("not an array: {other:?}"),
        }
        let e = t.get("e").expect("e");
        assert_eq!(e.type_name(), "a datetime");
        assert_eq!(line(src, e), 6);
        let g = t.get("f").expect("f").get("g").expect("g");
        assert_eq!(g.kind, Kind::Boolean(true));
        assert_eq!(line(src, g), 7);
        assert_eq!(t.get("h").expect("h").kind, Kind::Float(1.5));
        let arr = root.get("arr").expect("arr");
        assert_eq!(arr.type_name(), "an array");
    }

    #[test]
    fn syntax_errors_have_lines() {
        let (line, msg) = parse("a = 1\nb = = 2\n").expect_err("bad");
        assert_eq!(line, Some(2));
        assert!(!msg.is_empty());
        let (line, _) = parse("a = 1\na = 2\n").expect_err("duplicate");
        assert_eq!(line, Some(2));
    }

    #[test]
    fn empty_document_is_an_empty_table() {
        assert_eq!(parse("").expect("ok").as_table().map(<[_]>::len), Some(0));
    }
}
