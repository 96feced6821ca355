//! Writing EC2 responses: `<ActionResponse xmlns="...2016-11-15/">` with `requestId` first,
//! then elements as botocore's ec2 model names them; lists are `<xSet><item>..</item></xSet>`.

use crate::walrus::xml::escape;

pub const EC2_NS: &str = "http://ec2.amazonaws.com/doc/2016-11-15/";

/// Builds one response document.
pub struct Xml {
    out: String,
    action: String,
}

impl Xml {
    pub fn new(action: &str, request_id: &str) -> Xml {
        let mut out = String::with_capacity(1024);
        out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        out.push_str(&format!("<{action}Response xmlns=\"{EC2_NS}\">"));
        let mut x = Xml {
            out,
            action: action.to_string(),
        };
        x.field("requestId", request_id);
        x
    }

    pub fn open(&mut self, name: &str) -> &mut Self {
        self.out.push('<');
        self.out.push_str(name);
        self.out.push('>');
        self
    }

    pub fn close(&mut self, name: &str) -> &mut Self {
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
        self.out.push_str(&escape(&text));
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

    /// `<return>true</return>`, the answer of calls that only succeed.
    pub fn ok(action: &str, request_id: &str) -> String {
        let mut x = Xml::new(action, request_id);
        x.field("return", "true");
        x.finish()
    }

    pub fn finish(mut self) -> String {
        let action = std::mem::take(&mut self.action);
        self.out.push_str(&format!("</{action}Response>"));
        self.out
    }
}

/// ISO 8601 with milliseconds, as EC2 writes timestamps.
pub fn time(ms: i64) -> String {
    crate::auth::time::format_iso8601_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_carry_namespace_request_id_and_item_lists() {
        let mut x = Xml::new("DescribeRegions", "R");
        x.set("regionInfo", &["a<b"], |x, r| {
            x.field("regionName", r);
        });
        let s = x.finish();
        assert!(s.contains(&format!(
            "<DescribeRegionsResponse xmlns=\"{EC2_NS}\"><requestId>R</requestId>"
        )));
        assert!(s.contains("<regionInfo><item><regionName>a&lt;b</regionName></item></regionInfo>"));
        assert!(s.ends_with("</DescribeRegionsResponse>"));
    }
}
