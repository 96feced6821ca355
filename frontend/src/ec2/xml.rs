//! EC2 responses: `<ActionResponse xmlns="...2016-11-15/">` with `requestId` first, then
//! elements as botocore's ec2 model names them (written with the shared `http::xml` writer);
//! lists are `<xSet><item>..</item></xSet>`.

pub use crate::http::xml::Xml;

pub const EC2_NS: &str = "http://ec2.amazonaws.com/doc/2016-11-15/";

/// The response document of `action`, its `requestId` written; `finish` closes it.
pub fn response(action: &str, request_id: &str) -> Xml {
    let mut x = Xml::namespaced(EC2_NS);
    x.open(&format!("{action}Response"))
        .field("requestId", request_id);
    x
}

/// `<return>true</return>`, the answer of calls that only succeed.
pub fn ok(action: &str, request_id: &str) -> String {
    let mut x = response(action, request_id);
    x.field("return", "true");
    x.finish()
}

/// ISO 8601 with milliseconds, as EC2 writes timestamps.
pub fn time(ms: i64) -> String {
    crate::auth::time::format_iso8601_millis(ms)
}

/// The unescaped text of every `<tag>` element of `doc`, in order: how the rooms that run an
/// EC2 call for someone (the audit log, the web console) read what its answer names.
pub fn element_texts(doc: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = doc;
    while let Some(start) = rest.find(&open) {
        rest = &rest[start + open.len()..];
        let Some(end) = rest.find(&close) else { break };
        let text = quick_xml::escape::unescape(&rest[..end])
            .map_or_else(|_| rest[..end].to_string(), |t| t.into_owned());
        out.push(text);
        rest = &rest[end + close.len()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_carry_namespace_request_id_and_item_lists() {
        let mut x = response("DescribeRegions", "R");
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
