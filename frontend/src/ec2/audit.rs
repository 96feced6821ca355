//! The EC2 side of the audit log: the entry a call makes (`crate::audit` says which calls and
//! which resources), and DescribeAuditLog, Mallee's admin-only action that reads the log back
//! newest first (`MaxResults` 5..1000, default 1000, and `NextToken`), refused to anyone else
//! as DescribeNodes is. Like DescribeNodes no AWS client models it: `scripts/mallee-admin`
//! signs the call.

use super::params::Params;
use super::xml::{self, time, Xml};
use super::{nodes::authorize, Call, Ec2, Ec2Error};
use crate::audit;
use crate::store::{AuditEntry, AuditPage, AuditRow, Outcome};

/// The page size when `MaxResults` is not given, and the largest one may ask for.
const MAX_PAGE: i64 = 1000;

fn outcome(result: &Result<String, Ec2Error>) -> Outcome {
    match result {
        Ok(_) => Outcome::Ok,
        Err(e) => Outcome::Err {
            code: e.code.clone(),
        },
    }
}

/// Records an authenticated call when it is a change.
pub fn record_call(ec2: &Ec2, c: &Call<'_>, source: &str, result: &Result<String, Ec2Error>) {
    if !audit::is_mutating(c.action) {
        return;
    }
    let response = result.as_ref().ok().map(String::as_str);
    let entry = AuditEntry {
        at_ms: crate::store::now_ms(),
        user: c.user.name.clone(),
        action: c.action.to_string(),
        resources: audit::ec2_resources(c.action, c.p.pairs(), response),
        source: source.to_string(),
        outcome: outcome(result),
        request_id: c.rid.to_string(),
    };
    audit::record(&ec2.store, &entry);
}

/// Records a request whose signature did not check out, as user `-`, when it asked for a
/// change (`p`: its parameters), so forged attempts show up.
pub fn record_refused(ec2: &Ec2, p: &Params, source: &str, rid: &str, error: &Ec2Error) {
    let Some(action) = p.get("Action") else {
        return;
    };
    if !audit::is_mutating(action) {
        return;
    }
    let entry = AuditEntry {
        at_ms: crate::store::now_ms(),
        user: "-".into(),
        action: action.to_string(),
        resources: audit::ec2_resources(action, p.pairs(), None),
        source: source.to_string(),
        outcome: Outcome::Err {
            code: error.code.clone(),
        },
        request_id: rid.to_string(),
    };
    audit::record(&ec2.store, &entry);
}

/// One `item` of `auditEventSet`.
fn event_item(x: &mut Xml, row: &AuditRow) {
    let e = &row.entry;
    x.field("eventId", row.id)
        .field("time", time(e.at_ms))
        .field("user", &e.user)
        .field("action", &e.action);
    x.set("resourceSet", &e.resources, |x, r| {
        x.field("resourceId", r);
    });
    x.field("sourceAddress", &e.source);
    let (outcome, code) = e.outcome.parts();
    x.field("outcome", outcome);
    if let Some(code) = code {
        x.field("errorCode", code);
    }
    x.field("requestId", &e.request_id);
}

/// The response document.
pub fn render(action: &str, rid: &str, page: &AuditPage) -> String {
    let mut x = xml::response(action, rid);
    x.set("auditEventSet", &page.rows, event_item);
    x.opt("nextToken", page.next);
    x.finish()
}

pub fn describe(ec2: &Ec2, c: &Call<'_>) -> Result<String, Ec2Error> {
    authorize(c.user, c.action)?;
    let max = c.p.int("MaxResults")?.unwrap_or(MAX_PAGE);
    if !(5..=MAX_PAGE).contains(&max) {
        return Err(Ec2Error::invalid(
            "MaxResults",
            &max.to_string(),
            "MaxResults must be 5..1000.",
        ));
    }
    let before = match c.p.get("NextToken").filter(|t| !t.is_empty()) {
        Some(t) => Some(
            t.parse::<i64>()
                .ok()
                .filter(|id| *id > 0)
                .ok_or_else(|| Ec2Error::invalid("NextToken", t, "The token is not valid."))?,
        ),
        None => None,
    };
    let page = ec2.store.audit_log(max as usize, before)?;
    Ok(render(c.action, c.rid, &page))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, resources: &[&str], outcome: Outcome) -> AuditRow {
        AuditRow {
            id,
            entry: AuditEntry {
                at_ms: 1_500,
                user: "bob".into(),
                action: "DeleteSecurityGroup".into(),
                resources: resources.iter().map(|r| r.to_string()).collect(),
                source: "127.0.0.1".into(),
                outcome,
                request_id: "R1".into(),
            },
        }
    }

    #[test]
    fn events_render_with_resources_outcome_code_and_the_next_token() {
        let page = AuditPage {
            rows: vec![
                row(
                    7,
                    &["web"],
                    Outcome::Err {
                        code: "InvalidGroup.NotFound".into(),
                    },
                ),
                row(6, &[], Outcome::Ok),
            ],
            next: Some(6),
        };
        let xml = render("DescribeAuditLog", "R", &page);
        for part in [
            "<DescribeAuditLogResponse xmlns=",
            "<auditEventSet><item><eventId>7</eventId><time>1970-01-01T00:00:01.500Z</time>",
            "<user>bob</user><action>DeleteSecurityGroup</action>",
            "<resourceSet><item><resourceId>web</resourceId></item></resourceSet>",
            "<sourceAddress>127.0.0.1</sourceAddress><outcome>error</outcome>",
            "<errorCode>InvalidGroup.NotFound</errorCode><requestId>R1</requestId></item>",
            "<item><eventId>6</eventId>",
            "<resourceSet></resourceSet><sourceAddress>127.0.0.1</sourceAddress><outcome>ok</outcome><requestId>R1</requestId>",
            "</auditEventSet><nextToken>6</nextToken>",
        ] {
            assert!(xml.contains(part), "{part} not in {xml}");
        }
    }
}
