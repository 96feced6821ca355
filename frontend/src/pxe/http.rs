//! HTTP for booting nodes: `GET /boot.ipxe` (the iPXE script), `GET /node/vmlinuz` and
//! `GET /node/initramfs` (the netboot bundle, with `Range` for resumed downloads).
//!
//! The script and the node's kernel command line are plain functions; the handlers only render
//! them. File serving (ranges, HEAD, conditional requests) is tower-http's `ServeFile`.

use super::events::{EventLog, PxeEvent};
use axum::extract::Request;
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use mallee_proto::cmdline::{Key, PublicKeyPin};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tower_http::services::ServeFile;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeCmdlineError {
    #[error(
        "{field} `{value}` cannot go on a kernel command line (empty, or has spaces or quotes)"
    )]
    Unquotable { field: &'static str, value: String },
}

/// What a node must know before it can reach the frontend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeParams {
    /// The frontend's node API address, as the node reaches it.
    pub frontend: SocketAddr,
    pub cluster: String,
    pub enrollment_secret: String,
    /// The node puts the NIC it booted from into its uplink bridge (MANAGED-NOVLAN and SYSTEM,
    /// whose instances share the node's segment).
    pub bridge: bool,
    /// The frontend's TLS key, which the node's agent pins (none: the API is plain HTTP).
    pub frontend_key: Option<PublicKeyPin>,
}

/// What iPXE replaces with the MAC of the NIC it booted from.
const BOOT_NIC_MAC: &str = "${netX/mac}";

/// The node kernel's command line: the image's own, then `mallee.frontend=`, `mallee.cluster=`,
/// `mallee.secret=`, `mallee.frontend_key=` when the API speaks TLS (and `mallee.bridge=` with the
/// boot NIC's MAC, which iPXE fills in), then
/// `initrd=initramfs` (needed by the EFI stub when iPXE boots on UEFI).
pub fn node_cmdline(base: &str, p: &NodeParams) -> Result<String, NodeCmdlineError> {
    for (field, value) in [
        ("cluster name", &p.cluster),
        ("enrollment secret", &p.enrollment_secret),
    ] {
        if value.is_empty() || value.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'')
        {
            return Err(NodeCmdlineError::Unquotable {
                field,
                value: value.clone(),
            });
        }
    }
    let mut line = base.trim().to_string();
    if !line.is_empty() {
        line.push(' ');
    }
    let mut words = vec![
        Key::Frontend.arg(p.frontend),
        Key::Cluster.arg(&p.cluster),
        Key::Secret.arg(&p.enrollment_secret),
    ];
    if let Some(pin) = p.frontend_key {
        words.push(Key::FrontendKey.arg(pin));
    }
    if p.bridge {
        words.push(Key::Bridge.arg(BOOT_NIC_MAC));
    }
    line.push_str(&words.join(" "));
    line.push_str(" initrd=initramfs");
    Ok(line)
}

/// The iPXE script that boots a node from `base_url` (`http://IP:PORT`).
pub fn boot_script(base_url: &str, cmdline: &str) -> String {
    format!(
        "#!ipxe\n\
         echo mallee: booting node from {base_url}\n\
         kernel {base_url}/node/vmlinuz {cmdline}\n\
         initrd --name initramfs {base_url}/node/initramfs\n\
         boot\n"
    )
}

/// The files and script the HTTP side serves.
#[derive(Debug, Clone)]
pub struct NodeBoot {
    pub script: String,
    pub vmlinuz: PathBuf,
    pub initramfs: PathBuf,
}

pub fn router(boot: NodeBoot, events: EventLog) -> Router {
    let script = Arc::new(boot.script);
    Router::new()
        .route(
            "/boot.ipxe",
            get(move || {
                let script = script.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                        script.as_str().to_owned(),
                    )
                        .into_response()
                }
            }),
        )
        .route_service("/node/vmlinuz", ServeFile::new(boot.vmlinuz))
        .route_service("/node/initramfs", ServeFile::new(boot.initramfs))
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            let events = events.clone();
            async move {
                let path = req.uri().path().to_string();
                let range = req.headers().contains_key(header::RANGE);
                let response = next.run(req).await;
                events.push(PxeEvent::Http {
                    path,
                    status: response.status().as_u16(),
                    range,
                });
                response
            }
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> NodeParams {
        NodeParams {
            frontend: "10.9.0.1:8773".parse().unwrap(),
            cluster: "zone-a".into(),
            enrollment_secret: "s3cr3t".into(),
            bridge: false,
            frontend_key: None,
        }
    }

    #[test]
    fn a_tls_frontend_puts_its_key_pin_on_the_line() {
        let pin = PublicKeyPin([0xab; 32]);
        let p = NodeParams {
            frontend_key: Some(pin),
            ..params()
        };
        let line = node_cmdline("", &p).unwrap();
        let word = format!("mallee.frontend_key=sha256:{}", "ab".repeat(32));
        assert!(
            line.contains(&format!("mallee.secret=s3cr3t {word} initrd=")),
            "{line}"
        );
        let back = line
            .split(' ')
            .find_map(|w| w.strip_prefix("mallee.frontend_key="));
        assert_eq!(back.unwrap().parse::<PublicKeyPin>().unwrap(), pin);
    }

    #[test]
    fn cmdline_carries_frontend_cluster_and_secret_after_the_base() {
        let line = node_cmdline("console=ttyS0 mallee.role=node\n", &params()).unwrap();
        assert_eq!(
            line,
            "console=ttyS0 mallee.role=node mallee.frontend=10.9.0.1:8773 \
             mallee.cluster=zone-a mallee.secret=s3cr3t initrd=initramfs"
        );
    }

    #[test]
    fn a_bridged_node_is_told_to_bridge_the_nic_ipxe_booted_from() {
        let p = NodeParams {
            bridge: true,
            ..params()
        };
        let line = node_cmdline("", &p).unwrap();
        assert!(
            line.ends_with("mallee.secret=s3cr3t mallee.bridge=${netX/mac} initrd=initramfs"),
            "{line}"
        );
    }

    #[test]
    fn cmdline_refuses_values_that_would_split() {
        let mut p = params();
        p.enrollment_secret = "two words".into();
        assert!(node_cmdline("", &p).is_err());
        p.enrollment_secret = String::new();
        assert!(node_cmdline("", &p).is_err());
    }

    #[test]
    fn script_is_ipxe_with_kernel_initrd_boot() {
        let s = boot_script("http://10.9.0.1:8069", "console=ttyS0");
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "#!ipxe");
        assert!(lines.contains(&"kernel http://10.9.0.1:8069/node/vmlinuz console=ttyS0"));
        assert!(lines.contains(&"initrd --name initramfs http://10.9.0.1:8069/node/initramfs"));
        assert_eq!(lines.last(), Some(&"boot"));
    }
}
