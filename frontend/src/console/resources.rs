//! The signed-in user's resources: instances (list, launch, reboot, stop, start, terminate,
//! console output), key pairs (list, create with the private key downloaded once, delete) and
//! credentials (the AWS credentials file, shell settings and the CA bundle). Changes are EC2
//! calls run through [`Ec2::call_as`] as the user, so they are checked, scoped and audited as
//! the Query API's are; lists read the user's own records as the Describe calls do.

use super::launch::{self, Choices, Filled};
use super::pages::{self, InstanceRow, Nav};
use super::reply::Reply;
use super::{Asked, Console, ConsoleError};
use crate::cloud::instance_attributes::Related;
use crate::cloud::model::{Instance, KeyPair, INSTANCE, KEY_PAIR};
use crate::ec2::params::Params;
use crate::ec2::{Ec2, Ec2Error};
use crate::store::Session;
use http::StatusCode;

fn nav(s: &Session) -> Nav<'_> {
    Nav::of(s)
}

impl Console {
    /// Runs the EC2 call `pairs` names as the session's user from the request's address.
    pub(super) fn call(
        ec2: &Ec2,
        a: &Asked<'_>,
        s: &Session,
        pairs: &[(&str, &str)],
    ) -> Result<String, Ec2Error> {
        let rid = crate::ec2::request_id();
        ec2.call_as(&s.user, &Params::from_pairs(pairs), &rid, a.source)
    }

    pub(super) fn instances(
        &self,
        ec2: &Ec2,
        s: &Session,
        message: Option<(StatusCode, &str)>,
    ) -> Result<Reply, ConsoleError> {
        self.instances_with(ec2, s, message, &Filled::default())
    }

    /// The instances page with the launch form filled as `filled`.
    fn instances_with(
        &self,
        ec2: &Ec2,
        s: &Session,
        message: Option<(StatusCode, &str)>,
        filled: &Filled,
    ) -> Result<Reply, ConsoleError> {
        let owner = &s.user.name;
        let (all, related, choices) = ec2.store.cloud(|tx| {
            let all = tx.list::<Instance>(INSTANCE, Some(owner))?;
            let related = Related::load(tx, owner)?;
            Ok::<_, ConsoleError>((all, related, Choices::load(tx, owner)?))
        })?;
        let rows: Vec<InstanceRow<'_>> = all
            .iter()
            .map(|i| InstanceRow {
                instance: i,
                tags: related.tags.of(&i.id),
            })
            .collect();
        let (status, text) = message.map_or((StatusCode::OK, None), |(st, m)| (st, Some(m)));
        let form = launch::form(&s.csrf, &choices, filled);
        Ok(Reply::page(
            status,
            pages::instances(nav(s), &rows, form, text),
        ))
    }

    /// RunInstances of one instance as the launch form asks; back to the list, or the form
    /// as it was sent with EC2's reason when it refused.
    pub(super) fn launch(
        &self,
        ec2: &Ec2,
        a: &Asked<'_>,
        s: &Session,
    ) -> Result<Reply, ConsoleError> {
        let filled = Filled::from_form(&a.form);
        let params = filled.run_instances();
        let pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        match Self::call(ec2, a, s, &pairs) {
            Ok(_) => Ok(Reply::redirect("/_console/instances")),
            Err(e) => {
                let why = format!("The instance was not launched: {}", e.message);
                let status = crate::http::status(e.status);
                self.instances_with(ec2, s, Some((status, &why)), &filled)
            }
        }
    }

    /// The EC2 lifecycle call `verb` (a button of the instances page) names on `id`: `reboot`,
    /// `stop`, `start` or `terminate`; back to the list, with EC2's reason when it refused.
    /// EC2 decides what is allowed (an instance-store instance does not stop, a stopped one
    /// does not reboot): the page only leaves out the buttons that would be refused.
    pub(super) fn instance_action(
        &self,
        ec2: &Ec2,
        a: &Asked<'_>,
        s: &Session,
        id: &str,
        verb: &str,
    ) -> Result<Reply, ConsoleError> {
        let Some(action) = pages::InstanceAction::from_verb(verb) else {
            return Err(ConsoleError::NotFound(format!(
                "{}{}",
                super::PREFIX,
                a.path
            )));
        };
        match Self::call(
            ec2,
            a,
            s,
            &[("Action", action.ec2_action()), ("InstanceId.1", id)],
        ) {
            Ok(_) => Ok(Reply::redirect("/_console/instances")),
            Err(e) => self.instances(ec2, s, Some((crate::http::status(e.status), &e.message))),
        }
    }

    pub(super) fn console_output(
        &self,
        ec2: &Ec2,
        s: &Session,
        id: &str,
    ) -> Result<Reply, ConsoleError> {
        let (instance, output) = crate::ec2::instances::console_of(ec2, &s.user.name, id)?;
        let page = pages::console_output(nav(s), &instance, output.as_ref());
        Ok(Reply::page(StatusCode::OK, page))
    }

    pub(super) fn key_pairs(
        &self,
        ec2: &Ec2,
        s: &Session,
        status: StatusCode,
        message: Option<&str>,
    ) -> Result<Reply, ConsoleError> {
        let pairs: Vec<KeyPair> = ec2
            .store
            .cloud(|tx| tx.list::<KeyPair>(KEY_PAIR, Some(&s.user.name)))?;
        Ok(Reply::page(
            status,
            pages::key_pairs(nav(s), &pairs, message),
        ))
    }

    /// CreateKeyPair: the private key comes back once, as a file download.
    pub(super) fn create_key_pair(
        &self,
        ec2: &Ec2,
        a: &Asked<'_>,
        s: &Session,
    ) -> Result<Reply, ConsoleError> {
        let name = a.form.get("name").unwrap_or("").trim();
        if name.is_empty() {
            let why = "Give the key pair a name.";
            return self.key_pairs(ec2, s, StatusCode::BAD_REQUEST, Some(why));
        }
        let kind = a.form.get("type").unwrap_or("ed25519");
        let made = Self::call(
            ec2,
            a,
            s,
            &[
                ("Action", "CreateKeyPair"),
                ("KeyName", name),
                ("KeyType", kind),
            ],
        );
        match made {
            Ok(xml) => {
                let pem = crate::ec2::xml::element_texts(&xml, "keyMaterial")
                    .pop()
                    .unwrap_or_default();
                let file = format!("{name}.pem");
                Ok(Reply::download(
                    &file,
                    "application/x-pem-file",
                    pem.into_bytes(),
                ))
            }
            Err(e) => {
                let why = format!("The key pair was not created: {}", e.message);
                self.key_pairs(ec2, s, crate::http::status(e.status), Some(&why))
            }
        }
    }

    pub(super) fn delete_key_pair(
        &self,
        ec2: &Ec2,
        a: &Asked<'_>,
        s: &Session,
    ) -> Result<Reply, ConsoleError> {
        let name = a.form.get("name").unwrap_or("");
        match Self::call(ec2, a, s, &[("Action", "DeleteKeyPair"), ("KeyName", name)]) {
            Ok(_) => Ok(Reply::redirect("/_console/keypairs")),
            Err(e) => {
                let why = format!("The key pair was not deleted: {}", e.message);
                self.key_pairs(ec2, s, crate::http::status(e.status), Some(&why))
            }
        }
    }

    /// The address clients reach this listener at, as the browser asked for it.
    fn endpoint(&self, a: &Asked<'_>) -> String {
        let host = (a.headers.get(http::header::HOST))
            .and_then(|h| h.to_str().ok())
            .filter(|h| {
                !h.is_empty()
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
            })
            .unwrap_or("FRONTEND-ADDRESS");
        let scheme = if self.cookies.secure { "https" } else { "http" };
        format!("{scheme}://{host}")
    }

    pub(super) fn credentials(&self, a: &Asked<'_>, s: &Session) -> Reply {
        let page = pages::credentials(nav(s), &self.endpoint(a), self.ca_bundle.is_some());
        Reply::page(StatusCode::OK, page)
    }

    /// One of the credential downloads.
    pub(super) fn credentials_file(
        &self,
        a: &Asked<'_>,
        s: &Session,
        file: &str,
    ) -> Result<Reply, ConsoleError> {
        let text = "text/plain; charset=utf-8";
        match file {
            "aws-credentials" => Ok(Reply::download(
                "credentials",
                text,
                crate::admin::credentials_text(&s.user).into_bytes(),
            )),
            "mallee-env.sh" => Ok(Reply::download(
                file,
                text,
                shell_settings(
                    &s.user,
                    &self.region,
                    &self.endpoint(a),
                    self.ca_bundle.is_some(),
                )
                .into_bytes(),
            )),
            "mallee-ca.pem" => {
                let Some(path) = &self.ca_bundle else {
                    return Err(ConsoleError::NotFound(format!(
                        "{}{}",
                        super::PREFIX,
                        a.path
                    )));
                };
                let pem = std::fs::read(path).map_err(crate::store::StoreError::Io)?;
                Ok(Reply::download(file, "application/x-pem-file", pem))
            }
            _ => Err(ConsoleError::NotFound(format!(
                "{}{}",
                super::PREFIX,
                a.path
            ))),
        }
    }
}

/// Shell settings for the AWS CLI and SDKs: `user`'s key, the region, the endpoint and (over
/// TLS) the CA bundle where the Credentials page says to save it.
pub fn shell_settings(
    user: &crate::store::User,
    region: &str,
    endpoint: &str,
    tls: bool,
) -> String {
    let mut s = format!(
        "# Mallee: the AWS CLI and SDKs against {endpoint}.\n\
         # Use it with: source mallee-env.sh\n\
         export AWS_ACCESS_KEY_ID={key}\n\
         export AWS_SECRET_ACCESS_KEY={secret}\n\
         export AWS_DEFAULT_REGION={region}\n\
         export AWS_ENDPOINT_URL={endpoint}\n",
        key = user.access_key,
        secret = user.secret,
    );
    if tls {
        s.push_str(
            "# Save the CA certificate (mallee-ca.pem on the console's Credentials page) here:\n\
             export AWS_CA_BUNDLE=\"$HOME/.aws/mallee-ca.pem\"\n",
        );
    }
    s.push_str(&format!(
        "# Older clients ignore AWS_ENDPOINT_URL; give it to each command:\n\
         #   aws --endpoint-url {endpoint} ec2 describe-instances\n"
    ));
    s
}
