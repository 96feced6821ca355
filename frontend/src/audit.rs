//! The audit log's rules: which calls are recorded (every mutating EC2 action and S3 request,
//! signed or not, and the admin CLI's changes — not reads), which resource ids an entry names,
//! and the one place an entry is written: a console line (target `audit`) and a row in the
//! store. It works on plain names and values; the API rooms and the CLI build the entries, the
//! store owns the table (`store::audit`), and DescribeAuditLog and `admin audit` read it.

use crate::store::{AuditEntry, Store};
use http::Method;

/// Whether an EC2-style action changes anything: every action but the `Describe*` and `Get*`
/// ones (all of Mallee's reads are named so; an action name it does not know counts as a
/// change, so probing shows up too).
pub fn is_mutating(action: &str) -> bool {
    !(action.starts_with("Describe") || action.starts_with("Get"))
}

/// The request parameters that name a resource, in the order an entry lists them. Each also
/// matches its numbered form (`InstanceId.1`, `ResourceId.2`, ...). Names (`GroupName`,
/// `KeyName`) are listed as given; ids carry their kind in their prefix.
const RESOURCE_PARAMS: &[&str] = &[
    "InstanceId",
    "ImageId",
    "KernelId",
    "RamdiskId",
    "ImageLocation",
    "VolumeId",
    "SnapshotId",
    "GroupId",
    "GroupName",
    "SecurityGroupId",
    "SecurityGroup",
    "KeyName",
    "KeyPairId",
    "PublicIp",
    "AllocationId",
    "AssociationId",
    "ResourceId",
    "NodeId",
];

/// The elements of a successful answer that name what the action made.
const CREATED: &[(&str, &[&str])] = &[
    ("RunInstances", &["instanceId"]),
    ("CreateVolume", &["volumeId"]),
    ("CreateSnapshot", &["snapshotId"]),
    ("RegisterImage", &["imageId"]),
    ("CreateImage", &["imageId"]),
    ("CreateSecurityGroup", &["groupId"]),
    ("CreateKeyPair", &["keyPairId"]),
    ("ImportKeyPair", &["keyPairId"]),
    ("AllocateAddress", &["publicIp", "allocationId"]),
    ("AssociateAddress", &["associationId"]),
];

/// The resource ids named by an EC2 request's parameters, in [`RESOURCE_PARAMS`] order (a
/// numbered list in its numbers' order), each once.
pub fn request_resources<'a>(params: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<String> {
    let mut found: Vec<(usize, u32, &str)> = Vec::new();
    for (name, value) in params {
        let (base, n) = match name.split_once('.') {
            Some((base, n)) => match n.parse::<u32>() {
                Ok(n) => (base, n),
                Err(_) => continue,
            },
            None => (name, 0),
        };
        if let Some(rank) = RESOURCE_PARAMS.iter().position(|p| *p == base) {
            if !value.is_empty() {
                found.push((rank, n, value));
            }
        }
    }
    found.sort();
    let mut out = Vec::new();
    for (_, _, value) in found {
        push_new(&mut out, value);
    }
    out
}

/// The ids a successful `action` made, read from its answer's XML (elements listed in
/// [`CREATED`]; nothing for other actions).
pub fn created_resources(action: &str, response: &str) -> Vec<String> {
    let Some((_, tags)) = CREATED.iter().find(|(a, _)| *a == action) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for tag in *tags {
        for text in crate::ec2::xml::element_texts(response, tag) {
            push_new(&mut out, &text);
        }
    }
    out
}

/// Everything an EC2 call names: its request's resources, then what it made.
pub fn ec2_resources<'a>(
    action: &str,
    params: impl IntoIterator<Item = (&'a str, &'a str)>,
    response: Option<&str>,
) -> Vec<String> {
    let mut out = request_resources(params);
    for id in response
        .map(|r| created_resources(action, r))
        .unwrap_or_default()
    {
        push_new(&mut out, &id);
    }
    out
}

fn push_new(out: &mut Vec<String>, value: &str) {
    if !value.is_empty() && !out.iter().any(|v| v == value) {
        out.push(value.to_string());
    }
}

/// The S3 operation a request to `bucket`/`key` is, when it changes anything: PUT, POST and
/// DELETE on a bucket or object, told apart by their subresources (`query` raw) and whether
/// they copy (`x-amz-copy-source`) as Walrus routes them. `None` for reads and for requests
/// that name no bucket.
pub fn s3_action(
    method: &Method,
    bucket: Option<&str>,
    key: Option<&str>,
    query: &str,
    copy: bool,
) -> Option<&'static str> {
    let has = |name: &str| query.split('&').any(|p| p.split('=').next() == Some(name));
    bucket?;
    Some(match (method, key.is_some()) {
        (&Method::PUT, false) => "CreateBucket",
        (&Method::DELETE, false) => "DeleteBucket",
        (&Method::POST, false) if has("delete") => "DeleteObjects",
        (&Method::PUT, true) if has("uploadId") => "UploadPart",
        (&Method::PUT, true) if copy => "CopyObject",
        (&Method::PUT, true) => "PutObject",
        (&Method::DELETE, true) if has("uploadId") => "AbortMultipartUpload",
        (&Method::DELETE, true) => "DeleteObject",
        (&Method::POST, true) if has("uploads") => "CreateMultipartUpload",
        (&Method::POST, true) if has("uploadId") => "CompleteMultipartUpload",
        _ => return None,
    })
}

/// What an S3 request names: `bucket` or `bucket/key`, and a copy's source (`bucket/key` as
/// `x-amz-copy-source` gives it, decoded, its version left off). DeleteObjects names only its
/// bucket: the keys are in its body, which the operation reads.
pub fn s3_resources(bucket: &str, key: Option<&str>, copy_source: Option<&str>) -> Vec<String> {
    let mut out = vec![match key {
        Some(k) => format!("{bucket}/{k}"),
        None => bucket.to_string(),
    }];
    if let Some(src) = copy_source {
        let src = src.split('?').next().unwrap_or_default();
        let src = src.strip_prefix('/').unwrap_or(src);
        let decoded = crate::auth::canonical::percent_decode(src);
        push_new(&mut out, &String::from_utf8_lossy(&decoded));
    }
    out
}

/// Writes `entry` as a console line (target `audit`) and into the store.
///
/// Best effort, never failing the call: a store that cannot take the row is logged at error
/// level and the call's answer stands. By the time a call is recorded its change is committed
/// in its own transaction; failing the answer would not undo it, only make the client retry a
/// change that happened (a retried RunInstances launches more instances). The console line,
/// written first, is the copy that survives such a store. AWS CloudTrail, too, records after
/// the fact and best effort.
pub fn record(store: &Store, entry: &AuditEntry) {
    let (outcome, code) = entry.outcome.parts();
    let code = code.map(tracing::field::display);
    tracing::info!(
        target: "audit",
        user = %entry.user,
        action = %entry.action,
        resources = %entry.resources.join(","),
        source = %entry.source,
        outcome = %outcome,
        code,
        request_id = %entry.request_id,
        "recorded"
    );
    if let Err(e) = store.record_audit(entry) {
        tracing::error!(target: "audit", error = %e, action = %entry.action, user = %entry.user, "the audit entry was not stored");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_and_get_actions_are_reads_everything_else_a_change() {
        for read in [
            "DescribeInstances",
            "DescribeNodes",
            "DescribeAuditLog",
            "GetConsoleOutput",
        ] {
            assert!(!is_mutating(read), "{read}");
        }
        for change in [
            "RunInstances",
            "TerminateInstances",
            "CreateTags",
            "AuthorizeSecurityGroupIngress",
            "UpgradeAppliance",
            "NoSuchAction",
        ] {
            assert!(is_mutating(change), "{change}");
        }
    }

    #[test]
    fn request_resources_come_in_table_then_number_order_each_once() {
        let params = [
            ("Action", "CreateTags"),
            ("ResourceId.10", "vol-3"),
            ("ResourceId.2", "i-2"),
            ("ResourceId.1", "i-1"),
            ("Tag.1.Key", "name"),
            ("InstanceId", "i-2"),
            ("ResourceId.x", "ignored"),
        ];
        // InstanceId comes first in the table; ResourceId.2 names i-2 again.
        assert_eq!(request_resources(params), ["i-2", "i-1", "vol-3"]);
    }

    #[test]
    fn each_kind_of_resource_parameter_is_taken() {
        let params = [
            ("KeyName", "k1"),
            ("SecurityGroup.1", "web"),
            ("ImageId", "emi-1"),
            ("GroupName", "db"),
            ("GroupId", "sg-1"),
            ("VolumeId", "vol-1"),
            ("SnapshotId", "snap-1"),
            ("PublicIp", "198.51.100.7"),
            ("AllocationId", "eipalloc-1"),
            ("ImageLocation", "images/root.img"),
            ("Description", "not a resource"),
            ("InstanceId.1", ""),
            ("NodeId", "node-525400990001"),
        ];
        assert_eq!(
            request_resources(params),
            [
                "emi-1",
                "images/root.img",
                "vol-1",
                "snap-1",
                "sg-1",
                "db",
                "web",
                "k1",
                "198.51.100.7",
                "eipalloc-1",
                "node-525400990001"
            ]
        );
    }

    #[test]
    fn created_ids_are_read_from_the_answer_of_creating_actions_only() {
        let run = "<RunInstancesResponse><instancesSet><item><instanceId>i-1</instanceId>\
                   <imageId>emi-1</imageId></item><item><instanceId>i-2</instanceId>\
                   </item></instancesSet></RunInstancesResponse>";
        assert_eq!(created_resources("RunInstances", run), ["i-1", "i-2"]);
        let alloc =
            "<r><publicIp>198.51.100.7</publicIp><allocationId>eipalloc-1</allocationId></r>";
        assert_eq!(
            created_resources("AllocateAddress", alloc),
            ["198.51.100.7", "eipalloc-1"]
        );
        assert!(created_resources("DescribeInstances", run).is_empty());
        assert!(created_resources("CreateVolume", "<unterminated><volumeId>v").is_empty());
    }

    #[test]
    fn an_ec2_entry_names_the_request_then_what_was_made() {
        let params = [("ImageId", "emi-1"), ("KeyName", "k1")];
        let answer = "<x><instanceId>i-9</instanceId><imageId>emi-1</imageId></x>";
        assert_eq!(
            ec2_resources("RunInstances", params, Some(answer)),
            ["emi-1", "k1", "i-9"]
        );
        assert_eq!(ec2_resources("RunInstances", params, None), ["emi-1", "k1"]);
    }

    #[test]
    fn s3_changes_are_named_as_s3_names_them_and_reads_are_not() {
        let cases = [
            (
                Method::PUT,
                Some("b"),
                None,
                "",
                false,
                Some("CreateBucket"),
            ),
            (
                Method::DELETE,
                Some("b"),
                None,
                "",
                false,
                Some("DeleteBucket"),
            ),
            (
                Method::POST,
                Some("b"),
                None,
                "delete",
                false,
                Some("DeleteObjects"),
            ),
            (
                Method::PUT,
                Some("b"),
                Some("k"),
                "",
                false,
                Some("PutObject"),
            ),
            (
                Method::PUT,
                Some("b"),
                Some("k"),
                "",
                true,
                Some("CopyObject"),
            ),
            (
                Method::PUT,
                Some("b"),
                Some("k"),
                "partNumber=1&uploadId=u",
                false,
                Some("UploadPart"),
            ),
            (
                Method::DELETE,
                Some("b"),
                Some("k"),
                "",
                false,
                Some("DeleteObject"),
            ),
            (
                Method::DELETE,
                Some("b"),
                Some("k"),
                "uploadId=u",
                false,
                Some("AbortMultipartUpload"),
            ),
            (
                Method::POST,
                Some("b"),
                Some("k"),
                "uploads",
                false,
                Some("CreateMultipartUpload"),
            ),
            (
                Method::POST,
                Some("b"),
                Some("k"),
                "uploadId=u",
                false,
                Some("CompleteMultipartUpload"),
            ),
            (Method::GET, Some("b"), Some("k"), "", false, None),
            (Method::HEAD, Some("b"), None, "", false, None),
            (Method::GET, None, None, "", false, None),
            (Method::PUT, None, None, "", false, None),
            (Method::POST, Some("b"), None, "", false, None),
        ];
        for (method, bucket, key, query, copy, want) in cases {
            assert_eq!(
                s3_action(&method, bucket, key, query, copy),
                want,
                "{method} {bucket:?} {key:?} {query}"
            );
        }
    }

    #[test]
    fn s3_resources_are_bucket_slash_key_and_a_copys_decoded_source() {
        assert_eq!(s3_resources("b", None, None), ["b"]);
        assert_eq!(s3_resources("b", Some("a/k"), None), ["b/a/k"]);
        assert_eq!(
            s3_resources("b", Some("k"), Some("/src/a%20b?versionId=3")),
            ["b/k", "src/a b"]
        );
    }
}
