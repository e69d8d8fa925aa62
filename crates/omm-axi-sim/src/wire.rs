//! The simulator's own view of the wire: NUL splitting, a parsed request tree and an XML
//! writer. Written independently of the `omm-axi` crate so tests cannot confirm themselves.

/// A parsed request element.
#[derive(Clone, Debug, Default)]
pub struct Node {
    /// Element name.
    pub name: String,
    /// Attributes in document order.
    pub attrs: Vec<(String, String)>,
    /// Child elements.
    pub children: Vec<Self>,
}

impl Node {
    /// Attribute value.
    pub fn get(&self, k: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }

    /// First child with this name.
    pub fn child(&self, name: &str) -> Option<&Self> {
        self.children.iter().find(|c| c.name == name)
    }

    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let doc = roxmltree::Document::parse(text.trim()).map_err(|e| e.to_string())?;
        Ok(Self::from(doc.root_element()))
    }

    fn from(n: roxmltree::Node<'_, '_>) -> Self {
        Self {
            name: n.tag_name().name().to_owned(),
            attrs: n
                .attributes()
                .map(|a| (a.name().to_owned(), a.value().to_owned()))
                .collect(),
            children: n
                .children()
                .filter(|c| c.is_element())
                .map(Self::from)
                .collect(),
        }
    }
}

/// Escapes an attribute value the way the OMM does (entities; CR/LF/TAB as references).
pub(crate) fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            '\n' => o.push_str("&#10;"),
            '\r' => o.push_str("&#13;"),
            '\t' => o.push_str("&#9;"),
            c if (c as u32) < 0x20 => {}
            c => o.push(c),
        }
    }
    o
}

/// Builds one outgoing document.
#[derive(Debug)]
pub(crate) struct Out {
    text: String,
    open: bool,
    name: String,
}

impl Out {
    pub(crate) fn new(name: &str) -> Self {
        Self {
            text: format!("<{name}"),
            open: true,
            name: name.to_owned(),
        }
    }

    pub(crate) fn attr(mut self, k: &str, v: &str) -> Self {
        debug_assert!(self.open);
        self.text.push_str(&format!(" {k}=\"{}\"", esc(v)));
        self
    }

    pub(crate) fn attrs<'a>(mut self, kv: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        for (k, v) in kv {
            self = self.attr(k, v);
        }
        self
    }

    pub(crate) fn seq(self, seq: Option<&str>) -> Self {
        match seq {
            Some(s) => self.attr("seq", s),
            None => self,
        }
    }

    pub(crate) fn child(mut self, raw: &str) -> Self {
        if self.open {
            self.text.push('>');
            self.open = false;
        }
        self.text.push_str(raw);
        self
    }

    pub(crate) fn finish(mut self) -> String {
        if self.open {
            self.text.push_str("/>");
        } else {
            self.text.push_str(&format!("</{}>", self.name));
        }
        self.text
    }
}
