//! The owned XML element model, the decoder (roxmltree) and the single writer.

use crate::error::ProtocolError;

/// An owned XML element: name, attributes in document order, child elements and text.
///
/// Every OM AXI message is one such element. Typed messages are built from it; anything this
/// crate does not model stays reachable here, so nothing the OMM sends is lost.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Element {
    name: String,
    attributes: Vec<(String, String)>,
    children: Vec<Self>,
    text: String,
}

impl Element {
    /// A new element without attributes or children.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// Adds an attribute (builder style).
    pub fn with_attr(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.set_attr(name, value);
        self
    }

    /// Adds a child (builder style).
    pub fn with_child(mut self, child: Self) -> Self {
        self.children.push(child);
        self
    }

    /// Sets the text content (builder style).
    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.text = text.into();
        self
    }

    /// Sets or replaces an attribute.
    pub fn set_attr(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        let value = value.into();
        match self.attributes.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => self.attributes.push((name, value)),
        }
    }

    /// Appends a child.
    pub fn push_child(&mut self, child: Self) {
        self.children.push(child);
    }

    /// Element name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Value of an attribute.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// All attributes in document order.
    pub fn attributes(&self) -> &[(String, String)] {
        &self.attributes
    }

    /// Child elements.
    pub fn children(&self) -> &[Self] {
        &self.children
    }

    /// Children with the given name.
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Self> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// First child with the given name.
    pub fn child(&self, name: &str) -> Option<&Self> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Concatenated text content directly inside this element.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Decodes one frame (without its NUL). Frames nesting deeper than [`MAX_DEPTH`] are
    /// refused before anything recursive touches them.
    pub fn decode(frame: &[u8]) -> Result<Self, ProtocolError> {
        let text = std::str::from_utf8(frame).map_err(|e| ProtocolError::Utf8 {
            valid_up_to: e.valid_up_to(),
        })?;
        // A BOM or trailing whitespace/newlines around the document are tolerated.
        let text = text.trim_start_matches('\u{feff}').trim();
        // roxmltree's tokenizer recurses per element: refuse deep frames before it runs
        if nesting_exceeds(text.as_bytes(), MAX_DEPTH) {
            return Err(ProtocolError::TooDeep { max: MAX_DEPTH });
        }
        let opts = roxmltree::ParsingOptions {
            allow_dtd: false,
            nodes_limit: 1_000_000,
        };
        let doc = roxmltree::Document::parse_with_options(text, opts).map_err(|e| {
            ProtocolError::Xml {
                message: e.to_string(),
            }
        })?;
        // iteratively: the conversion below (and Drop, and the writer) recurse per level
        let mut stack = vec![(doc.root_element(), 1usize)];
        while let Some((node, depth)) = stack.pop() {
            if depth > MAX_DEPTH {
                return Err(ProtocolError::TooDeep { max: MAX_DEPTH });
            }
            stack.extend(
                node.children()
                    .filter(roxmltree::Node::is_element)
                    .map(|c| (c, depth + 1)),
            );
        }
        Ok(Self::from_node(doc.root_element()))
    }

    fn from_node(node: roxmltree::Node<'_, '_>) -> Self {
        let mut el = Self::new(node.tag_name().name());
        el.attributes = node
            .attributes()
            .map(|a| (a.name().to_owned(), a.value().to_owned()))
            .collect();
        for child in node.children() {
            if child.is_element() {
                el.children.push(Self::from_node(child));
            } else if child.is_text() {
                el.text.push_str(child.text().unwrap_or_default());
            }
        }
        if el.text.trim().is_empty() {
            el.text.clear();
        }
        el
    }

    /// Encodes the element followed by the NUL terminator.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = String::with_capacity(128);
        self.write(&mut out);
        let mut bytes = out.into_bytes();
        bytes.push(0);
        bytes
    }

    /// Writes the element as XML text (no declaration, no NUL).
    pub fn write(&self, out: &mut String) {
        out.push('<');
        push_name(out, &self.name);
        for (k, v) in &self.attributes {
            out.push(' ');
            push_name(out, k);
            out.push_str("=\"");
            escape_into(out, v);
            out.push('"');
        }
        if self.children.is_empty() && self.text.is_empty() {
            out.push_str("/>");
            return;
        }
        out.push('>');
        escape_into(out, &self.text);
        for c in &self.children {
            c.write(out);
        }
        out.push_str("</");
        push_name(out, &self.name);
        out.push('>');
    }
}

/// Deepest element nesting a frame may have. OM AXI's deepest documents (a response with a
/// record and its sub-elements) use four levels.
pub const MAX_DEPTH: usize = 16;

/// Whether the element nesting of `text` goes deeper than `max` (a single pass, no
/// recursion). Quoted attribute values, comments, CDATA sections and processing
/// instructions are skipped; anything malformed is left for the parser to report.
fn nesting_exceeds(text: &[u8], max: usize) -> bool {
    fn skip_past(text: &[u8], from: usize, end: &[u8]) -> usize {
        text[from.min(text.len())..]
            .windows(end.len())
            .position(|w| w == end)
            .map_or(text.len(), |p| from + p + end.len())
    }
    let mut depth = 0usize;
    let mut i = 0;
    while i < text.len() {
        if text[i] != b'<' {
            i += 1;
            continue;
        }
        let rest = &text[i..];
        if rest.starts_with(b"<!--") {
            i = skip_past(text, i + 4, b"-->");
        } else if rest.starts_with(b"<![CDATA[") {
            i = skip_past(text, i + 9, b"]]>");
        } else if rest.starts_with(b"<?") || rest.starts_with(b"<!") {
            i = skip_past(text, i + 2, b">");
        } else if rest.starts_with(b"</") {
            depth = depth.saturating_sub(1);
            i = skip_past(text, i + 2, b">");
        } else {
            // a start tag: find its end outside quoted attribute values
            let mut j = i + 1;
            let mut quote = None;
            while j < text.len() {
                match (quote, text[j]) {
                    (None, b'"' | b'\'') => quote = Some(text[j]),
                    (Some(q), c) if c == q => quote = None,
                    (None, b'>') => break,
                    _ => {}
                }
                j += 1;
            }
            let self_closing = j > i + 1 && text.get(j - 1) == Some(&b'/');
            if !self_closing {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            i = j + 1;
        }
    }
    false
}

/// Names come from this crate or from callers; anything that is not a safe XML name
/// character is replaced so the output stays well-formed.
fn push_name(out: &mut String, name: &str) {
    if name.is_empty() {
        out.push('_');
    }
    for (i, c) in name.chars().enumerate() {
        let ok = c.is_ascii_alphabetic()
            || c == '_'
            || (i > 0 && (c.is_ascii_digit() || c == '-' || c == '.'));
        out.push(if ok { c } else { '_' });
    }
}

/// The one escaping function: every user-controlled string goes through here.
///
/// `& < > " '` become entities, TAB/LF/CR become character references (so attribute values
/// keep real newlines), and characters XML 1.0 forbids (other C0 controls including NUL,
/// U+FFFE, U+FFFF) become `?`. NUL can therefore never reach the wire inside a frame.
pub fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('?'),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(value: &str, expected: &str) {
        let mut out = String::new();
        escape_into(&mut out, value);
        assert_eq!(out, expected);
    }

    #[test]
    fn escaping() {
        check("plain", "plain");
        check(r#"a&b<c>d"e'f"#, "a&amp;b&lt;c&gt;d&quot;e&apos;f");
        check("line1\nline2\r\t", "line1&#10;line2&#13;&#9;");
        check("nul\0bell\u{7}", "nul?bell?");
        check("Tomás 📞", "Tomás 📞");
        check("\u{FFFE}", "?");
    }

    #[test]
    fn hostile_values_round_trip() {
        let nasty = "\"/><Open x=\"1\0&amp;\n";
        let el =
            Element::new("SetPPUser").with_child(Element::new("user").with_attr("name", nasty));
        let bytes = el.encode();
        assert_eq!(bytes.iter().filter(|b| **b == 0).count(), 1);
        let back = Element::decode(&bytes[..bytes.len() - 1]).unwrap();
        assert_eq!(
            back.child("user").unwrap().attr("name"),
            Some("\"/><Open x=\"1?&amp;\n")
        );
    }

    #[test]
    fn decode_errors_are_typed() {
        assert!(matches!(
            Element::decode(b"<a"),
            Err(ProtocolError::Xml { .. })
        ));
        assert!(matches!(
            Element::decode(&[0xff, 0xfe]),
            Err(ProtocolError::Utf8 { .. })
        ));
        assert!(matches!(
            Element::decode(b"<!DOCTYPE a [<!ENTITY x 'y'>]><a/>"),
            Err(ProtocolError::Xml { .. })
        ));
        assert!(Element::decode(b"\xef\xbb\xbf<a/>\r\n").is_ok());
    }

    #[test]
    fn deep_nesting_is_an_error_even_on_a_small_stack() {
        let deep = |n: usize| "<a>".repeat(n) + &"</a>".repeat(n);
        assert!(Element::decode(deep(MAX_DEPTH).as_bytes()).is_ok());
        let t = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                for n in [MAX_DEPTH + 1, 10_000, 200_000] {
                    assert!(
                        matches!(
                            Element::decode(deep(n).as_bytes()),
                            Err(ProtocolError::TooDeep { .. })
                        ),
                        "depth {n}"
                    );
                }
                // unclosed deep frames are malformed or too deep, never a crash
                assert!(Element::decode("<a>".repeat(200_000).as_bytes()).is_err());
                // quotes, comments and self-closing tags do not fool the count
                let wide = format!(
                    "<r>{}<!-- <a><a><a> --><x v='>/>'/><y w=\"/>\"/></r>",
                    "<b/>".repeat(1000)
                );
                assert!(Element::decode(wide.as_bytes()).is_ok());
            })
            .unwrap();
        t.join().unwrap();
    }
}
