//! ATA over Ethernet (AoE v1, EtherType 0x88A2): wire format, target and user-space initiator.
//!
//! Not yet implemented: this crate is filled in by the AoE issue.
