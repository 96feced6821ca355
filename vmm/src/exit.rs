//! Why a VM stopped, and how that maps to the VMM's process exit status.
//!
//! The node agent reads the exit status to tell a guest poweroff from a guest reboot from a
//! failure, so these numbers are part of the interface (documented in the crate README).

/// The reason the VMM stops running a guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest powered itself off (ACPI-less: a halt of every vCPU is not used; see README).
    PowerOff,
    /// The guest asked for a reset (i8042 pulse, triple fault).
    Reboot,
    /// The control socket asked the VMM to stop.
    ApiShutdown,
    /// The VMM or KVM failed while running the guest.
    Error,
}

impl ExitReason {
    /// The process exit status for this reason: 0 poweroff, 1 error, 2 reboot, 3 API shutdown.
    pub fn exit_code(self) -> u8 {
        match self {
            ExitReason::PowerOff => 0,
            ExitReason::Error => 1,
            ExitReason::Reboot => 2,
            ExitReason::ApiShutdown => 3,
        }
    }

    /// A short name used in logs and in the API status document.
    pub fn name(self) -> &'static str {
        match self {
            ExitReason::PowerOff => "poweroff",
            ExitReason::Reboot => "reboot",
            ExitReason::ApiShutdown => "api-shutdown",
            ExitReason::Error => "error",
        }
    }

    /// Encodes the reason for storage in an atomic (see [`crate::vm::ExitLatch`]).
    pub fn to_u8(self) -> u8 {
        self.exit_code() + 1
    }

    /// Decodes a value written by [`ExitReason::to_u8`]; 0 means "still running".
    pub fn from_u8(v: u8) -> Option<ExitReason> {
        match v {
            1 => Some(ExitReason::PowerOff),
            2 => Some(ExitReason::Error),
            3 => Some(ExitReason::Reboot),
            4 => Some(ExitReason::ApiShutdown),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_reason_round_trips_through_u8() {
        for r in [
            ExitReason::PowerOff,
            ExitReason::Reboot,
            ExitReason::ApiShutdown,
            ExitReason::Error,
        ] {
            assert_eq!(ExitReason::from_u8(r.to_u8()), Some(r));
        }
        assert_eq!(ExitReason::from_u8(0), None);
    }
}
