//! The one XML writer of the daemon, for EC2 and S3 responses alike: an XML declaration, then
//! elements opened, filled with escaped text and closed; `finish` closes whatever is still
//! open. The API rooms choose the root and its namespace; reading request XML is theirs too.

/// Builds one XML document.
pub struct Xml {
    out: String,
    /// Namespace for the next element opened (the root), if not yet written.
    ns: Option<&'static str>,
    open: Vec<String>,
}

impl Default for Xml {
    fn default() -> Self {
        Self::new()
    }
}

impl Xml {
    /// A document whose root carries no namespace.
    pub fn new() -> Xml {
        let mut out = String::with_capacity(1024);
        out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        Xml {
            out,
            ns: None,
            open: Vec::new(),
        }
    }

    /// A document whose root (the first element opened) carries `xmlns="ns"`.
    pub fn namespaced(ns: &'static str) -> Xml {
        Xml {
            ns: Some(ns),
            ..Xml::new()
        }
    }

    pub fn open(&mut self, name: &str) -> &mut Self {
        self.out.push('<');
        self.out.push_str(name);
        if let Some(ns) = self.ns.take() {
            self.out.push_str(" xmlns=\"");
            self.out.push_str(ns);
            self.out.push('"');
        }
        self.out.push('>');
        self.open.push(name.to_string());
        self
    }

    pub fn close(&mut self, name: &str) -> &mut Self {
        debug_assert_eq!(self.open.last().map(String::as_str), Some(name));
        self.open.pop();
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push('>');
        self
    }

    /// Escaped text inside the open element.
    pub fn text(&mut self, value: &str) -> &mut Self {
        self.out.push_str(&escape(value));
        self
    }

    /// `<name>text</name>`, escaped.
    pub fn field(&mut self, name: &str, value: impl std::fmt::Display) -> &mut Self {
        let text = value.to_string();
        self.open(name);
        self.text(&text);
        self.close(name)
    }

    /// A field only when `value` is `Some`.
    pub fn opt<T: std::fmt::Display>(&mut self, name: &str, value: Option<T>) -> &mut Self {
        if let Some(v) = value {
            self.field(name, v);
        }
        self
    }

    /// `<name><item>..</item>...</name>`, each item written by `f`.
    pub fn set<T>(
        &mut self,
        name: &str,
        items: &[T],
        mut f: impl FnMut(&mut Xml, &T),
    ) -> &mut Self {
        self.open(name);
        for item in items {
            self.open("item");
            f(self, item);
            self.close("item");
        }
        self.close(name)
    }

    /// The document, every element still open closed.
    pub fn finish(mut self) -> String {
        while let Some(name) = self.open.pop() {
            self.out.push_str("</");
            self.out.push_str(&name);
            self.out.push('>');
        }
        self.out
    }
}

/// Escapes text for element content.
pub fn escape(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_carries_the_namespace_and_text_is_escaped() {
        let mut x = Xml::namespaced("urn:x");
        x.open("R").field("K", "a<b&c");
        x.close("R");
        assert_eq!(
            x.finish(),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<R xmlns=\"urn:x\"><K>a&lt;b&amp;c</K></R>"
        );
    }

    #[test]
    fn finish_closes_what_is_still_open_and_sets_hold_items() {
        let mut x = Xml::new();
        x.open("R").set("s", &["a", "b"], |x, v| {
            x.field("v", v);
        });
        assert!(x
            .finish()
            .ends_with("<R><s><item><v>a</v></item><item><v>b</v></item></s></R>"));
    }
}
