//! The EC2 Query API (the cloud controller): authenticates each request with the same SigV4
//! verifier Walrus uses (service `ec2`), decodes its parameters and dispatches on `Action` to
//! the resource modules, which do their work in one store transaction and render XML in the
//! EC2 namespace. Each change asked for, signed or not, goes into the audit log (`audit`). It
//! does not own the node protocol (`nodes`) or placement (`scheduler`).
//!
//! Routing rule (see [`is_ec2_request`]): a request is EC2 when its path is `/` and it is a
//! POST with a form-encoded body (what botocore sends) or a GET whose query names an
//! `Action`. S3 never POSTs to `/`, and S3's only `GET /` (ListBuckets) carries no `Action`.

pub mod error;
pub mod params;
pub mod xml;

mod addresses;
mod appliance;
mod audit;
mod create_image;
mod groups;
mod images;
mod instance_attributes;
pub mod instances;
mod key_material;
mod keypairs;
mod metadata_options;
mod networks;
mod nodes;
pub mod render;
mod run;
mod tags;
mod volumes;
mod zones;

/// The `[ec2]` table of the daemon's configuration (it configures the cloud core).
use crate::cloud::{Ec2Config, NetworkConfig};
pub use error::Ec2Error;
/// The user's `default` security group, made on first use (the console lists it as
/// DescribeSecurityGroups does).
pub use groups::ensure_default as ensure_default_group;

use crate::auth::{self, Policy, UriMode};
use crate::cloud::Changes;
use crate::http::{db, read_whole, RespBody};
use crate::store::{Store, User};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use params::Params;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Largest request body accepted (user data is at most 16 KiB before base64).
const MAX_BODY: usize = 1 << 20;

/// The EC2 service.
pub struct Ec2 {
    pub store: Arc<Store>,
    pub cfg: Ec2Config,
    /// The instance networks (`[network]`).
    pub net: NetworkConfig,
    pub changes: Arc<Changes>,
    pub region: String,
    max_skew_secs: i64,
    /// The flashable appliance's slots, when booted from one (`appliance_dir` is configured).
    pub appliance: Option<Arc<crate::appliance::Appliance>>,
    /// Where the gateway is handed to init (`gateway_dir`), for DescribeNetworks.
    pub gateway_dir: Option<std::path::PathBuf>,
    /// The volume exports (`[storage]`): the shelves attachments are given.
    pub storage: crate::cloud::StorageConfig,
}

/// One decoded, authenticated call.
pub struct Call<'a> {
    pub user: &'a User,
    pub p: &'a Params,
    pub rid: &'a str,
    pub action: &'a str,
    pub now: i64,
}

/// Whether a request belongs to the EC2 API rather than Walrus (see the module text).
pub fn is_ec2_request(
    method: &http::Method,
    path: &str,
    content_type: Option<&str>,
    query: &str,
) -> bool {
    if path != "/" {
        return false;
    }
    let form = content_type.is_some_and(|c| {
        c.to_ascii_lowercase()
            .starts_with("application/x-www-form-urlencoded")
    });
    (method == http::Method::POST && form)
        || (method == http::Method::GET && query.split('&').any(|p| p.starts_with("Action=")))
}

/// A fresh request id (a version-4 UUID, as AWS's).
pub fn request_id() -> String {
    let mut raw = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut raw);
    // A version-4 UUID, as AWS request ids are.
    uuid::Builder::from_random_bytes(raw)
        .into_uuid()
        .hyphenated()
        .to_string()
}

impl Ec2 {
    pub fn new(
        store: Arc<Store>,
        cfg: Ec2Config,
        changes: Arc<Changes>,
        region: &str,
        max_skew: u64,
    ) -> Ec2 {
        Ec2 {
            store,
            cfg,
            net: NetworkConfig::default(),
            changes,
            region: region.to_string(),
            max_skew_secs: max_skew as i64,
            appliance: None,
            gateway_dir: None,
            storage: Default::default(),
        }
    }

    /// Exports attached volumes as `storage` says.
    pub fn with_storage(mut self, storage: crate::cloud::StorageConfig) -> Ec2 {
        self.storage = storage;
        self
    }

    /// Networks instances as `net` says.
    pub fn with_network(mut self, net: NetworkConfig) -> Ec2 {
        self.net = net;
        self
    }

    /// Reports the gateway handed over in `dir` in DescribeNetworks.
    pub fn with_gateway_dir(mut self, dir: Option<std::path::PathBuf>) -> Ec2 {
        self.gateway_dir = dir;
        self
    }

    /// Serves the appliance actions from `appliance`.
    pub fn with_appliance(mut self, appliance: Option<Arc<crate::appliance::Appliance>>) -> Ec2 {
        self.appliance = appliance;
        self
    }

    /// Answers one HTTP request.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<RespBody> {
        let rid = request_id();
        let source = crate::http::client_addr(&req);
        let (parts, body) = req.into_parts();
        let body = match read_whole(body, MAX_BODY).await {
            Ok(b) => b,
            Err(why) => return respond(Err(Ec2Error::client("InvalidRequest", why)), &rid),
        };
        let result = db(|| self.call(&parts, &body, &rid, &source));
        respond(result, &rid)
    }

    /// Authenticates, decodes and runs one call, recording it in the audit log when it asks
    /// for a change (`source`: the client's address).
    fn call(
        &self,
        parts: &http::request::Parts,
        body: &[u8],
        rid: &str,
        source: &str,
    ) -> Result<String, Ec2Error> {
        let user = match self.authenticate(parts, body) {
            Ok(user) => user,
            Err(e) => {
                if let Ok(p) = params(parts, body) {
                    audit::record_refused(self, &p, source, rid, &e);
                }
                return Err(e);
            }
        };
        let p = params(parts, body)?;
        self.call_as(&user, &p, rid, source)
    }

    /// Runs the call `p` names (`Action` and its parameters) as `user`, once authenticated:
    /// the same checks, core operations and audit entry whichever room asked (the signed
    /// Query API, or the web console for a signed-in user); `source` is the client's address.
    pub fn call_as(
        &self,
        user: &User,
        p: &Params,
        rid: &str,
        source: &str,
    ) -> Result<String, Ec2Error> {
        let action = p.req("Action")?.to_string();
        let call = Call {
            user,
            p,
            rid,
            action: &action,
            now: crate::store::now_ms(),
        };
        let out = self.run(&call);
        if let Err(e) = &out {
            tracing::info!(action = %action, user = %user.name, code = %e.code, message = %e.message, "ec2 request failed");
        }
        audit::record_call(self, &call, source, &out);
        out
    }

    /// Runs an authenticated call (a dry run only says it would have): what [`Ec2::handle`]
    /// does once the request is authenticated and decoded; benches call it without a socket.
    pub fn run(&self, c: &Call<'_>) -> Result<String, Ec2Error> {
        if c.p.bool("DryRun")? == Some(true) {
            return Err(Ec2Error::new(
                412,
                "DryRunOperation",
                "Request would have succeeded, but DryRun flag is set.",
            ));
        }
        self.dispatch(c)
    }

    fn authenticate(&self, parts: &http::request::Parts, body: &[u8]) -> Result<User, Ec2Error> {
        let body_sha = hex::encode(Sha256::digest(body));
        let policy = Policy {
            service: "ec2",
            region: None,
            uri_mode: UriMode::Normalized,
            now: crate::store::now_ms() / 1000,
            max_skew_secs: self.max_skew_secs,
            body_sha256: Some(&body_sha),
        };
        let (user, _) = auth::authenticate::<Ec2Error>(&self.store, parts, &policy)?;
        Ok(user)
    }

    fn dispatch(&self, c: &Call<'_>) -> Result<String, Ec2Error> {
        match c.action {
            "RegisterImage" => images::register(self, c),
            "DescribeImages" => images::describe(self, c),
            "DeregisterImage" => images::deregister(self, c),
            "CreateImage" => create_image::create(self, c),
            "DescribeImageAttribute" => images::describe_attribute(self, c),
            "ModifyImageAttribute" => images::modify_attribute(self, c),
            "CreateKeyPair" => keypairs::create(self, c),
            "ImportKeyPair" => keypairs::import(self, c),
            "DescribeKeyPairs" => keypairs::describe(self, c),
            "DeleteKeyPair" => keypairs::delete(self, c),
            "CreateSecurityGroup" => groups::create(self, c),
            "DeleteSecurityGroup" => groups::delete(self, c),
            "DescribeSecurityGroups" => groups::describe(self, c),
            "AuthorizeSecurityGroupIngress" => groups::change_ingress(self, c, true),
            "RevokeSecurityGroupIngress" => groups::change_ingress(self, c, false),
            "RunInstances" => run::run_instances(self, c),
            "DescribeInstances" => instances::describe(self, c),
            "TerminateInstances" => instances::terminate(self, c),
            "StopInstances" => instances::stop(self, c),
            "StartInstances" => instances::start(self, c),
            "RebootInstances" => instances::reboot(self, c),
            "GetConsoleOutput" => instances::console_output(self, c),
            "DescribeInstanceStatus" => instances::describe_status(self, c),
            "ModifyInstanceMetadataOptions" => metadata_options::modify(self, c),
            "DescribeInstanceAttribute" => instance_attributes::describe(self, c),
            "ModifyInstanceAttribute" => instance_attributes::modify(self, c),
            "CreateTags" => tags::create(self, c),
            "DeleteTags" => tags::delete(self, c),
            "DescribeTags" => tags::describe(self, c),
            "DescribeInstanceTypes" => zones::describe_instance_types(self, c),
            "DescribeAvailabilityZones" => zones::describe_zones(self, c),
            "DescribeRegions" => zones::describe_regions(self, c),
            "AllocateAddress" => addresses::allocate(self, c),
            "AssociateAddress" => addresses::associate(self, c),
            "DisassociateAddress" => addresses::disassociate(self, c),
            "ReleaseAddress" => addresses::release(self, c),
            "DescribeAddresses" => addresses::describe(self, c),
            "CreateVolume" => volumes::create(self, c),
            "DeleteVolume" => volumes::delete(self, c),
            "DescribeVolumes" => volumes::describe(self, c),
            "AttachVolume" => volumes::attach(self, c),
            "DetachVolume" => volumes::detach(self, c),
            "CreateSnapshot" => volumes::create_snapshot(self, c),
            "DeleteSnapshot" => volumes::delete_snapshot(self, c),
            "DescribeSnapshots" => volumes::describe_snapshots(self, c),
            "DescribeNodes" => nodes::describe(self, c),
            "ApproveNode" => nodes::approve(self, c),
            "RejectNode" => nodes::reject(self, c),
            "DescribeAuditLog" => audit::describe(self, c),
            "DescribeNetworks" => networks::describe(self, c),
            "DescribeAppliance" => appliance::describe(self, c),
            "UpgradeAppliance" => appliance::upgrade(self, c),
            other => Err(Ec2Error::client(
                "InvalidAction",
                format!("The action {other} is not valid for this web service."),
            )),
        }
    }
}

/// A request's parameters: the query of a GET, else the form body (which must be UTF-8).
fn params(parts: &http::request::Parts, body: &[u8]) -> Result<Params, Ec2Error> {
    let text = std::str::from_utf8(body)
        .map_err(|_| Ec2Error::client("InvalidRequest", "the body is not UTF-8"))?;
    Ok(match parts.method {
        http::Method::GET => Params::parse(parts.uri.query().unwrap_or("")),
        _ => Params::parse(text),
    })
}

/// The answer to a request refused for the client's load: `RequestLimitExceeded`, 503.
pub fn throttled() -> Response<RespBody> {
    let e = Ec2Error::new(503, "RequestLimitExceeded", "Request limit exceeded.");
    respond(Err(e), &request_id())
}

fn respond(result: Result<String, Ec2Error>, rid: &str) -> Response<RespBody> {
    let (status, text) = match result {
        Ok(xml) => (StatusCode::OK, xml),
        Err(e) => (crate::http::status(e.status), e.to_xml(rid)),
    };
    let mut resp = crate::http::xml_response(status, text);
    if let Ok(v) = rid.parse() {
        resp.headers_mut().insert("x-amzn-requestid", v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn form_posts_and_action_gets_to_root_are_ec2_everything_else_s3() {
        let form = Some("application/x-www-form-urlencoded; charset=utf-8");
        assert!(is_ec2_request(&Method::POST, "/", form, ""));
        assert!(is_ec2_request(
            &Method::GET,
            "/",
            None,
            "Action=DescribeRegions&Version=x"
        ));
        assert!(!is_ec2_request(&Method::GET, "/", None, ""));
        assert!(!is_ec2_request(&Method::POST, "/bucket", form, ""));
        assert!(!is_ec2_request(
            &Method::POST,
            "/",
            Some("application/xml"),
            ""
        ));
        assert!(!is_ec2_request(&Method::PUT, "/", form, ""));
    }
}
