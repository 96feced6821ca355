//! Which boot file a DHCP client gets: iPXE is sent the HTTP URL of `boot.ipxe`; a plain PXE ROM
//! is sent an iPXE binary to fetch over TFTP (chainloading), chosen by its architecture
//! (option 93, RFC 4578); any other DHCP client (an OS renewing its address) gets none.
//!
//! iPXE says who it is with option 175 (its feature list) or user class (option 77) "iPXE".
//! This module only reads options; it builds no reply.

use dhcproto::v4::{DhcpOption, Message, OptionCode};

/// What kind of boot client sent a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    /// iPXE (any platform): can fetch the script over HTTP.
    Ipxe,
    /// A PXE ROM on a legacy BIOS (architecture 0).
    PxeBios,
    /// A UEFI PXE client on x86-64 (architecture 7 or 9).
    PxeUefi,
    /// A PXE client on an architecture we have no iPXE binary for.
    PxeUnsupported(u16),
    /// Not a network-boot client.
    Plain,
}

/// The boot files offered to each kind of client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootFiles {
    /// Full URL of the iPXE script, e.g. `http://10.0.0.1:8069/boot.ipxe`.
    pub ipxe_script_url: String,
    /// TFTP path of iPXE for BIOS PXE ROMs.
    pub bios: String,
    /// TFTP path of iPXE for UEFI x86-64 PXE clients.
    pub uefi: String,
}

impl BootFiles {
    /// The boot file name for `kind`, if it gets one.
    pub fn for_client(&self, kind: ClientKind) -> Option<&str> {
        match kind {
            ClientKind::Ipxe => Some(&self.ipxe_script_url),
            ClientKind::PxeBios => Some(&self.bios),
            ClientKind::PxeUefi => Some(&self.uefi),
            ClientKind::PxeUnsupported(_) | ClientKind::Plain => None,
        }
    }
}

/// iPXE's encapsulated options (its feature list in requests, its settings in replies).
pub const IPXE_ENCAPSULATED: u8 = 175;

/// Classifies the client that sent `msg`.
pub fn classify(msg: &Message) -> ClientKind {
    if is_ipxe(msg) {
        return ClientKind::Ipxe;
    }
    let pxe = matches!(
        msg.opts().get(OptionCode::ClassIdentifier),
        Some(DhcpOption::ClassIdentifier(v)) if v.starts_with(b"PXEClient")
    );
    if !pxe {
        return ClientKind::Plain;
    }
    match msg.opts().get(OptionCode::ClientSystemArchitecture) {
        None => ClientKind::PxeBios,
        Some(DhcpOption::ClientSystemArchitecture(arch)) => match u16::from(*arch) {
            0 => ClientKind::PxeBios,
            7 | 9 => ClientKind::PxeUefi,
            other => ClientKind::PxeUnsupported(other),
        },
        Some(_) => ClientKind::PxeUnsupported(u16::MAX),
    }
}

fn is_ipxe(msg: &Message) -> bool {
    let opts = msg.opts();
    if opts.get(OptionCode::Unknown(IPXE_ENCAPSULATED)).is_some() {
        return true;
    }
    match opts.get(OptionCode::UserClass) {
        // iPXE sends the bare string; RFC 3004 clients prefix each class with its length.
        Some(DhcpOption::UserClass(v)) => v.as_slice() == b"iPXE" || v.as_slice() == b"\x04iPXE",
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcproto::v4::{Architecture, MessageType, UnknownOption};

    fn discover(opts: Vec<DhcpOption>) -> Message {
        let mut m = Message::default();
        m.opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Discover));
        for o in opts {
            m.opts_mut().insert(o);
        }
        m
    }

    fn pxe(arch: u16) -> Vec<DhcpOption> {
        vec![
            DhcpOption::ClassIdentifier(format!("PXEClient:Arch:{arch:05}:UNDI:002001").into()),
            DhcpOption::ClientSystemArchitecture(Architecture::from(arch)),
        ]
    }

    #[test]
    fn ipxe_by_option_175_or_user_class() {
        let mut with_175 = pxe(0);
        with_175.push(DhcpOption::Unknown(UnknownOption::new(
            OptionCode::Unknown(175),
            vec![0xb1, 1, 1],
        )));
        assert_eq!(classify(&discover(with_175)), ClientKind::Ipxe);
        let mut with_class = pxe(0);
        with_class.push(DhcpOption::UserClass(b"iPXE".to_vec()));
        assert_eq!(classify(&discover(with_class)), ClientKind::Ipxe);
    }

    #[test]
    fn plain_pxe_by_architecture() {
        assert_eq!(classify(&discover(pxe(0))), ClientKind::PxeBios);
        assert_eq!(classify(&discover(pxe(7))), ClientKind::PxeUefi);
        assert_eq!(classify(&discover(pxe(9))), ClientKind::PxeUefi);
        assert_eq!(classify(&discover(pxe(11))), ClientKind::PxeUnsupported(11));
        let other_class = vec![DhcpOption::UserClass(b"something".to_vec())];
        assert_eq!(classify(&discover(other_class)), ClientKind::Plain);
        assert_eq!(classify(&discover(vec![])), ClientKind::Plain);
    }
}
