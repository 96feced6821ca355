//! The console's HTML: one function per page, rendered with `maud`, which escapes every
//! value put into the markup (tags, names, console output, messages), so nothing a user typed
//! becomes markup. Pages work without JavaScript; each form that changes something carries
//! the session's CSRF token. It reads plain values (the core's records) and fetches nothing.

use crate::cloud::model::{Instance, KeyPair, State};
use crate::cloud::tags::TagSet;
use maud::{html, Markup, DOCTYPE};

/// The stylesheet, embedded in the binary and served at [`STYLE_PATH`].
pub const STYLE: &str = include_str!("style.css");
pub const STYLE_PATH: &str = "/_console/style.css";

/// Who is signed in, for the navigation bar and its sign-out form.
pub struct Nav<'a> {
    pub user: &'a str,
    pub csrf: &'a str,
    /// Whether to show the admin pages' links.
    pub admin: bool,
}

impl Nav<'_> {
    /// The navigation of `s`'s pages.
    pub fn of(s: &crate::store::Session) -> Nav<'_> {
        Nav {
            user: &s.user.name,
            csrf: &s.csrf,
            admin: s.user.role == crate::store::Role::Admin,
        }
    }
}

/// What every page shares: title, navigation when signed in, and an optional refresh.
pub struct Frame<'a> {
    pub title: &'a str,
    pub nav: Option<Nav<'a>>,
    /// Seconds after which the browser reloads the page.
    pub refresh: Option<u32>,
}

impl<'a> Frame<'a> {
    /// A page titled `title` for the signed-in user `nav` names, not refreshed.
    pub fn signed_in(title: &'a str, nav: Nav<'a>) -> Frame<'a> {
        Frame {
            title,
            nav: Some(nav),
            refresh: None,
        }
    }
}

pub(super) fn time(ms: i64) -> String {
    crate::auth::time::format_iso8601_millis(ms)
}

/// The CSRF token field of a form.
pub(super) fn csrf_field(csrf: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(csrf); }
}

/// A whole page around `content`.
pub fn page(frame: &Frame<'_>, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(secs) = frame.refresh {
                    meta http-equiv="refresh" content=(secs);
                }
                title { (frame.title) " · Mallee console" }
                link rel="stylesheet" href=(STYLE_PATH);
            }
            body {
                header {
                    a.brand href="/_console/" { "Mallee" }
                    @if let Some(nav) = &frame.nav {
                        nav {
                            a href="/_console/instances" { "Instances" }
                            a href="/_console/images" { "Images" }
                            a href="/_console/keypairs" { "Key pairs" }
                            a href="/_console/groups" { "Security groups" }
                            a href="/_console/volumes" { "Volumes" }
                            a href="/_console/addresses" { "Elastic IPs" }
                            a href="/_console/credentials" { "Credentials" }
                            @if nav.admin {
                                a href="/_console/admin/nodes" { "Nodes" }
                                a href="/_console/admin/users" { "Users" }
                                a href="/_console/admin/networks" { "Networks" }
                                a href="/_console/admin/audit" { "Audit log" }
                            }
                            form.inline method="post" action="/_console/signout" {
                                (csrf_field(nav.csrf))
                                button.link type="submit" { "Sign out " (nav.user) }
                            }
                        }
                    }
                }
                main {
                    h1 { (frame.title) }
                    (content)
                }
            }
        }
    }
}

/// A notice above a page's content: an error says what went wrong and what to do.
pub fn notice(message: Option<&str>) -> Markup {
    html! {
        @if let Some(m) = message {
            p.notice role="alert" { (m) }
        }
    }
}

/// The sign-in form (`token`: the pre-session CSRF token, also in a cookie).
pub fn sign_in(token: &str, message: Option<&str>) -> Markup {
    let frame = Frame {
        title: "Sign in",
        nav: None,
        refresh: None,
    };
    page(
        &frame,
        html! {
            (notice(message))
            form.card method="post" action="/_console/signin" {
                (csrf_field(token))
                label { "User name" input type="text" name="user" autocomplete="username" required autofocus; }
                label { "Password" input type="password" name="password" autocomplete="current-password" required; }
                button type="submit" { "Sign in" }
            }
            p.hint {
                "The admin's first password is in the file admin-console-password beside the admin credentials file; "
                "an admin sets other users' passwords on the console's Users page or with "
                code { "mallee-frontend admin user password NAME --password-stdin" } "."
            }
        },
    )
}

/// An error page: what went wrong and what to do about it.
pub fn error(nav: Option<Nav<'_>>, title: &str, message: &str) -> Markup {
    let frame = Frame {
        title,
        nav,
        refresh: None,
    };
    page(
        &frame,
        html! {
            (notice(Some(message)))
            p { a href="/_console/" { "Back to the console" } }
        },
    )
}

fn state_class(state: State) -> &'static str {
    match state {
        State::Running => "state ok",
        State::Terminated | State::ShuttingDown => "state gone",
        _ => "state",
    }
}

fn tags(set: &TagSet) -> Markup {
    html! {
        @for (k, v) in set.iter() {
            span.tag { (k) "=" (v) } " "
        }
    }
}

/// One instance of the instances page, with its tags.
pub struct InstanceRow<'a> {
    pub instance: &'a Instance,
    pub tags: &'a TagSet,
}

/// A button of the instances page: an EC2 lifecycle call on one instance, posted to
/// `/_console/instances/ID/VERB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceAction {
    Reboot,
    Stop,
    Start,
    Terminate,
}

impl InstanceAction {
    const ALL: [InstanceAction; 4] = [
        InstanceAction::Reboot,
        InstanceAction::Stop,
        InstanceAction::Start,
        InstanceAction::Terminate,
    ];

    /// The action the last part of a POST's path names.
    pub fn from_verb(verb: &str) -> Option<InstanceAction> {
        Self::ALL.into_iter().find(|a| a.verb() == verb)
    }

    /// The last part of the form's path.
    pub fn verb(self) -> &'static str {
        match self {
            InstanceAction::Reboot => "reboot",
            InstanceAction::Stop => "stop",
            InstanceAction::Start => "start",
            InstanceAction::Terminate => "terminate",
        }
    }

    /// The EC2 call it runs.
    pub fn ec2_action(self) -> &'static str {
        match self {
            InstanceAction::Reboot => "RebootInstances",
            InstanceAction::Stop => "StopInstances",
            InstanceAction::Start => "StartInstances",
            InstanceAction::Terminate => "TerminateInstances",
        }
    }

    fn label(self) -> &'static str {
        match self {
            InstanceAction::Reboot => "Reboot",
            InstanceAction::Stop => "Stop",
            InstanceAction::Start => "Start",
            InstanceAction::Terminate => "Terminate",
        }
    }

    /// Whether EC2 would take it for `i` as its record stands (`ec2::instances`): reboot and
    /// stop a running instance, stop only one whose root device is EBS, start a stopped one
    /// that no CreateImage holds, terminate any not yet terminated.
    pub fn applies_to(self, i: &Instance) -> bool {
        match self {
            InstanceAction::Reboot => i.state == State::Running,
            InstanceAction::Stop => {
                i.state == State::Running && crate::ec2::render::root_device_type(i) == "ebs"
            }
            InstanceAction::Start => i.state == State::Stopped && i.image_hold.is_none(),
            InstanceAction::Terminate => i.state != State::Terminated,
        }
    }

    /// The actions whose buttons `i`'s row shows, in the page's order.
    pub fn offered(i: &Instance) -> impl Iterator<Item = InstanceAction> + '_ {
        Self::ALL.into_iter().filter(|a| a.applies_to(i))
    }
}

/// The signed-in user's instances, each with the buttons of the lifecycle calls EC2 would take
/// in its state ([`InstanceAction::offered`]), above the `launch` form.
pub fn instances(
    nav: Nav<'_>,
    rows: &[InstanceRow<'_>],
    launch: Markup,
    message: Option<&str>,
) -> Markup {
    let csrf = nav.csrf;
    let frame = Frame::signed_in("Instances", nav);
    page(
        &frame,
        html! {
            (notice(message))
            @if rows.is_empty() {
                p { "You have no instances. Launch one below, or with " code { "aws ec2 run-instances" } " (see Credentials)." }
            } @else {
                table.list {
                    thead { tr {
                        th { "Instance" } th { "State" } th { "Type" } th { "Private address" }
                        th { "Public address" } th { "Zone" } th { "Launched" } th { "State reason" }
                        th { "Tags" } th { "" }
                    } }
                    tbody {
                        @for row in rows {
                            @let i = row.instance;
                            tr {
                                td data-label="Instance" {
                                    a href={ "/_console/instances/" (i.id) "/console" } { (i.id) }
                                }
                                td data-label="State" { span class=(state_class(i.state)) { (i.state.name()) } }
                                td data-label="Type" { (i.instance_type) }
                                td data-label="Private address" { (i.private_ip) }
                                td data-label="Public address" { (i.public_ip.as_deref().unwrap_or("-")) }
                                td data-label="Zone" { (i.zone) }
                                td data-label="Launched" { (time(i.launch_ms)) }
                                td data-label="State reason" {
                                    @match crate::ec2::render::reason(i) {
                                        Some((_, message)) => (message),
                                        None => "-",
                                    }
                                }
                                td data-label="Tags" { (tags(row.tags)) }
                                td {
                                    @for action in InstanceAction::offered(i) {
                                        form.inline method="post" action={ "/_console/instances/" (i.id) "/" (action.verb()) } {
                                            (csrf_field(csrf))
                                            @if action == InstanceAction::Terminate {
                                                button.danger type="submit" { (action.label()) }
                                            } @else {
                                                button type="submit" { (action.label()) }
                                            }
                                        }
                                        " "
                                    }
                                }
                            }
                        }
                    }
                }
            }
            (launch)
        },
    )
}

/// An instance's console output; reloads every 5 s while the instance is not terminated.
pub fn console_output(nav: Nav<'_>, i: &Instance, output: Option<&(i64, String)>) -> Markup {
    let title = format!("Console of {}", i.id);
    let frame = Frame {
        title: &title,
        nav: Some(nav),
        refresh: (i.state != State::Terminated).then_some(5),
    };
    page(
        &frame,
        html! {
            p {
                "State " span class=(state_class(i.state)) { (i.state.name()) }
                @if let Some((ms, _)) = output { ", output as of " (time(*ms)) }
                @if i.state != State::Terminated { "; this page reloads every 5 seconds." }
            }
            @match output {
                Some((_, text)) => pre.console { (text) },
                None => p { "No console output yet: it appears once the instance's node reports it." },
            }
            p { a href="/_console/instances" { "All instances" } }
        },
    )
}

/// The signed-in user's key pairs, the form to create one (its private key is downloaded
/// once) and a Delete button on each.
pub fn key_pairs(nav: Nav<'_>, pairs: &[KeyPair], message: Option<&str>) -> Markup {
    let csrf = nav.csrf;
    let frame = Frame::signed_in("Key pairs", nav);
    page(
        &frame,
        html! {
            (notice(message))
            form.card method="post" action="/_console/keypairs" {
                (csrf_field(csrf))
                label { "Name" input type="text" name="name" required maxlength="255"; }
                label { "Type"
                    select name="type" {
                        option value="ed25519" { "ed25519" }
                        option value="rsa" { "RSA 2048" }
                    }
                }
                button type="submit" { "Create and download the private key" }
                p.hint { "The private key is shown only this once: keep the downloaded file." }
            }
            @if pairs.is_empty() {
                p { "You have no key pairs." }
            } @else {
                table.list {
                    thead { tr { th { "Name" } th { "Id" } th { "Type" } th { "Fingerprint" } th { "Created" } th { "" } } }
                    tbody {
                        @for k in pairs {
                            tr {
                                td data-label="Name" { (k.name) }
                                td data-label="Id" { (k.id) }
                                td data-label="Type" { (k.key_type) }
                                td data-label="Fingerprint" { code { (k.fingerprint) } }
                                td data-label="Created" { (time(k.created_ms)) }
                                td {
                                    form.inline method="post" action="/_console/keypairs/delete" {
                                        (csrf_field(csrf))
                                        input type="hidden" name="name" value=(k.name);
                                        button.danger type="submit" { "Delete" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// Where the credential downloads are.
pub fn credentials(nav: Nav<'_>, endpoint: &str, tls: bool) -> Markup {
    let frame = Frame::signed_in("Credentials", nav);
    page(
        &frame,
        html! {
            p { "Use these with the AWS CLI, boto3 or euca2ools against " code { (endpoint) } "." }
            ul.downloads {
                li { a href="/_console/credentials/aws-credentials" download { "AWS credentials file" }
                    " — save as " code { "~/.aws/credentials" } " (it holds your secret key)." }
                li { a href="/_console/credentials/mallee-env.sh" download { "Shell settings" }
                    " — " code { "source mallee-env.sh" } " sets the key, region, endpoint" @if tls { " and CA bundle" } "." }
                @if tls {
                    li { a href="/_console/credentials/mallee-ca.pem" download { "CA certificate" }
                        " — save as " code { "~/.aws/mallee-ca.pem" } "; clients verify this cloud's TLS certificate with it." }
                }
            }
            p { "Then, for example: " code { "aws --endpoint-url " (endpoint) " ec2 describe-instances" } }
            p { a href="/_console/credentials/rotate" { "Rotate your access key" }
                " — a new key and secret replace these; the old ones stop working at once." }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::tags::TagSet;

    fn nav() -> Nav<'static> {
        Nav {
            user: "alice",
            csrf: "CSRF-TOKEN",
            admin: false,
        }
    }

    fn key(name: &str) -> KeyPair {
        KeyPair {
            id: "key-0123456789abcdef0".into(),
            owner: "alice".into(),
            name: name.into(),
            fingerprint: "SHA256:x".into(),
            key_type: "ed25519".into(),
            public_key: "ssh-ed25519 AAAA".into(),
            created_ms: 0,
        }
    }

    #[test]
    fn a_script_in_a_key_pair_name_is_escaped() {
        let html = key_pairs(nav(), &[key("<script>alert(1)</script>")], None).into_string();
        assert!(!html.contains("<script>"), "{html}");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{html}"
        );
    }

    #[test]
    fn every_form_of_a_signed_in_page_carries_the_csrf_token() {
        let html = key_pairs(nav(), &[key("a"), key("b")], None).into_string();
        let forms = html.matches("<form").count();
        assert_eq!(forms, 4, "{html}");
        assert_eq!(
            html.matches(r#"<input type="hidden" name="csrf" value="CSRF-TOKEN">"#)
                .count(),
            forms,
            "{html}"
        );
    }

    #[test]
    fn pages_fit_phones_and_need_no_script() {
        let html = credentials(nav(), "https://cloud.example:8773", true).into_string();
        assert!(html
            .contains(r#"<meta name="viewport" content="width=device-width, initial-scale=1">"#));
        assert!(!html.contains("<script"));
        assert!(html.contains("mallee-ca.pem"));
        let plain = credentials(nav(), "http://127.0.0.1:8773", false).into_string();
        assert!(!plain.contains("mallee-ca.pem"));
    }

    #[test]
    fn a_message_and_the_sign_in_token_are_escaped_into_the_form() {
        let html = sign_in("tok\"en", Some("Wrong <b>name</b>")).into_string();
        assert!(html.contains(r#"value="tok&quot;en""#), "{html}");
        assert!(html.contains("Wrong &lt;b&gt;name&lt;/b&gt;"), "{html}");
    }

    #[test]
    fn the_console_page_escapes_output_and_refreshes_until_terminated() {
        let i = test_instance();
        let out = (1_000, "login: <script>x</script>\n".to_string());
        let html = console_output(nav(), &i, Some(&out)).into_string();
        assert!(
            html.contains(r#"<meta http-equiv="refresh" content="5">"#),
            "{html}"
        );
        assert!(
            html.contains("login: &lt;script&gt;x&lt;/script&gt;"),
            "{html}"
        );
        let mut gone = test_instance();
        gone.state = State::Terminated;
        let html = console_output(nav(), &gone, Some(&out)).into_string();
        assert!(!html.contains("http-equiv"), "{html}");
    }

    fn test_instance() -> Instance {
        let mut i = crate::cloud::reconcile::tests::instance();
        i.state = State::Running;
        i
    }

    #[test]
    fn the_instances_page_shows_state_addresses_zone_reason_and_escaped_tags() {
        let mut i = test_instance();
        i.public_ip = Some("198.51.100.7".into());
        i.reason = Some(crate::cloud::model::Reason {
            code: "Client.UserInitiatedShutdown".into(),
            message: "Client.UserInitiatedShutdown: <b>bye</b>".into(),
        });
        let tags =
            TagSet::from_pairs(vec![("Name".into(), "<script>web</script>".into())]).unwrap();
        let html = instances(
            nav(),
            &[InstanceRow {
                instance: &i,
                tags: &tags,
            }],
            html! {},
            None,
        )
        .into_string();
        for part in [
            i.id.as_str(),
            "running",
            i.instance_type.as_str(),
            i.private_ip.as_str(),
            "198.51.100.7",
            i.zone.as_str(),
            "Client.UserInitiatedShutdown: &lt;b&gt;bye&lt;/b&gt;",
            "Name=&lt;script&gt;web&lt;/script&gt;",
            "/terminate",
        ] {
            assert!(html.contains(part), "{part} not in {html}");
        }
        assert!(!html.contains("<script>"));
        let mut gone = test_instance();
        gone.state = State::Terminated;
        let html = instances(
            nav(),
            &[InstanceRow {
                instance: &gone,
                tags: &tags,
            }],
            html! {},
            None,
        )
        .into_string();
        assert!(!html.contains("/terminate"), "{html}");
    }

    /// The actions (`verb`s) of the buttons on `i`'s row, after checking each form carries the
    /// CSRF token.
    fn buttons_of(i: &Instance) -> Vec<String> {
        let tags = TagSet::default();
        let row = InstanceRow {
            instance: i,
            tags: &tags,
        };
        let html = instances(nav(), &[row], html! {}, None).into_string();
        let forms: Vec<&str> = html.split("<form").skip(1).collect();
        for form in &forms {
            let form = &form[..form.find("</form>").unwrap()];
            assert!(
                form.contains(r#"<input type="hidden" name="csrf" value="CSRF-TOKEN">"#),
                "{form}"
            );
        }
        let prefix = format!(r#"action="/_console/instances/{}/"#, i.id);
        (forms.iter())
            .filter_map(|f| f.split_once(&prefix))
            .map(|(_, rest)| rest.split('"').next().unwrap().to_string())
            .collect()
    }

    #[test]
    fn each_instance_shows_the_buttons_ec2_would_take_in_its_state_with_the_csrf_token() {
        let with = |state: State, ebs: bool| {
            let mut i = test_instance();
            i.state = state;
            i.root_volume = ebs.then(|| "vol-0123456789abcdef0".to_string());
            i
        };
        let cases = [
            (State::Running, false, vec!["reboot", "terminate"]),
            (State::Running, true, vec!["reboot", "stop", "terminate"]),
            (State::Pending, true, vec!["terminate"]),
            (State::Stopping, true, vec!["terminate"]),
            (State::Stopped, true, vec!["start", "terminate"]),
            (State::ShuttingDown, true, vec!["terminate"]),
            (State::Terminated, true, vec![]),
        ];
        for (state, ebs, want) in cases {
            assert_eq!(buttons_of(&with(state, ebs)), want, "{state:?}, ebs {ebs}");
        }
        let mut held = with(State::Stopped, true);
        held.image_hold = Some(crate::cloud::model::ImageHold {
            image_id: "emi-0123456789abcdef0".into(),
            snapshot_id: "snap-0123456789abcdef0".into(),
            restart: true,
        });
        assert_eq!(buttons_of(&held), ["terminate"]);
    }

    #[test]
    fn an_instance_action_is_named_by_its_verb_and_runs_its_ec2_call() {
        for (verb, call) in [
            ("reboot", "RebootInstances"),
            ("stop", "StopInstances"),
            ("start", "StartInstances"),
            ("terminate", "TerminateInstances"),
        ] {
            let action = InstanceAction::from_verb(verb).unwrap();
            assert_eq!((action.verb(), action.ec2_action()), (verb, call));
        }
        assert_eq!(InstanceAction::from_verb("console"), None);
    }
}
