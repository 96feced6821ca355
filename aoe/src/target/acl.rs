//! Who an export answers: the MAC mask list (only listed initiators are answered when it is
//! non-empty) and the reserve list (only members may issue ATA commands). Remote edits over
//! AoE are refused unless the export's configuration allows them; by default the lists come
//! from the frontend's configuration.

use crate::wire::{
    AoeError, Directive, DirectiveCommand, Mac, MacMaskCommand, MacMaskRepr, ReserveCommand,
    ReserveRepr, MASK_ERROR_BAD_DCMD, MASK_ERROR_LIST_FULL, MASK_ERROR_UNSPEC,
};

/// Most entries either list can hold (the wire count is one byte).
pub const MAX_LIST: usize = 255;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessControl {
    pub mask: Vec<Mac>,
    pub reserve: Vec<Mac>,
    /// Whether MAC Mask List edits and Reserve/Release sets over AoE are obeyed.
    pub remote_edit: bool,
}

impl AccessControl {
    /// Whether frames from `src` are answered at all.
    pub fn allows(&self, src: Mac) -> bool {
        self.mask.is_empty() || self.mask.contains(&src)
    }

    /// Whether a reservation held by others excludes `src`.
    pub fn reserved_against(&self, src: Mac) -> bool {
        !self.reserve.is_empty() && !self.reserve.contains(&src)
    }

    fn mask_reply(&self, command: MacMaskCommand, error: u8) -> MacMaskRepr {
        MacMaskRepr {
            command,
            error,
            directives: self
                .mask
                .iter()
                .map(|&mac| Directive {
                    command: DirectiveCommand::None,
                    mac,
                })
                .collect(),
        }
    }

    /// Applies a MAC Mask List request; the reply carries the resulting list and MError.
    pub fn mask_command(&mut self, req: &MacMaskRepr, src: Mac) -> Result<MacMaskRepr, AoeError> {
        if req.command == MacMaskCommand::Read {
            return Ok(self.mask_reply(req.command, 0));
        }
        if self.reserved_against(src) {
            return Err(AoeError::TargetReserved);
        }
        if !self.remote_edit {
            return Ok(self.mask_reply(req.command, MASK_ERROR_UNSPEC));
        }
        let mut error = 0;
        for d in &req.directives {
            match d.command {
                DirectiveCommand::None => {}
                DirectiveCommand::Add if self.mask.contains(&d.mac) => {}
                DirectiveCommand::Add if self.mask.len() >= MAX_LIST => {
                    error = MASK_ERROR_LIST_FULL;
                    break;
                }
                DirectiveCommand::Add => self.mask.push(d.mac),
                DirectiveCommand::Delete => self.mask.retain(|m| *m != d.mac),
                DirectiveCommand::Other(_) => {
                    error = MASK_ERROR_BAD_DCMD;
                    break;
                }
            }
        }
        Ok(self.mask_reply(req.command, error))
    }

    /// Applies a Reserve/Release request; the reply carries the resulting reserve list.
    pub fn reserve_command(
        &mut self,
        req: &ReserveRepr,
        src: Mac,
    ) -> Result<ReserveRepr, AoeError> {
        match req.command {
            ReserveCommand::Read => {}
            _ if !self.remote_edit => return Err(AoeError::BadArgument),
            ReserveCommand::Set if self.reserved_against(src) => {
                return Err(AoeError::TargetReserved)
            }
            ReserveCommand::Set | ReserveCommand::ForceSet => self.reserve = req.macs.clone(),
        }
        Ok(ReserveRepr {
            command: req.command,
            macs: self.reserve.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Mac = Mac([2, 0, 0, 0, 0, 0xa]);
    const B: Mac = Mac([2, 0, 0, 0, 0, 0xb]);

    fn edit(cmds: &[(DirectiveCommand, Mac)]) -> MacMaskRepr {
        MacMaskRepr {
            command: MacMaskCommand::Edit,
            error: 0,
            directives: cmds
                .iter()
                .map(|&(command, mac)| Directive { command, mac })
                .collect(),
        }
    }

    #[test]
    fn empty_mask_allows_everyone_and_a_list_only_its_members() {
        let mut acl = AccessControl::default();
        assert!(acl.allows(A));
        acl.mask = vec![A];
        assert!(acl.allows(A) && !acl.allows(B));
    }

    #[test]
    fn mask_edit_is_refused_without_remote_edit() {
        let mut acl = AccessControl::default();
        let reply = acl
            .mask_command(&edit(&[(DirectiveCommand::Add, A)]), A)
            .unwrap();
        assert_eq!(reply.error, MASK_ERROR_UNSPEC);
        assert!(acl.mask.is_empty());
    }

    #[test]
    fn mask_edit_adds_deletes_and_reports_bad_directive() {
        let mut acl = AccessControl {
            remote_edit: true,
            ..Default::default()
        };
        let r = acl
            .mask_command(
                &edit(&[(DirectiveCommand::Add, A), (DirectiveCommand::Add, B)]),
                A,
            )
            .unwrap();
        assert_eq!(r.error, 0);
        assert_eq!(acl.mask, vec![A, B]);
        acl.mask_command(&edit(&[(DirectiveCommand::Delete, A)]), A)
            .unwrap();
        assert_eq!(acl.mask, vec![B]);
        let r = acl
            .mask_command(&edit(&[(DirectiveCommand::Other(9), A)]), A)
            .unwrap();
        assert_eq!(r.error, MASK_ERROR_BAD_DCMD);
        assert_eq!(r.directives.len(), 1);
    }

    #[test]
    fn reserve_set_by_outsider_is_refused_but_force_set_wins() {
        let mut acl = AccessControl {
            remote_edit: true,
            ..Default::default()
        };
        let set = |macs: Vec<Mac>, command| ReserveRepr { command, macs };
        acl.reserve_command(&set(vec![A], ReserveCommand::Set), A)
            .unwrap();
        assert!(acl.reserved_against(B) && !acl.reserved_against(A));
        assert_eq!(
            acl.reserve_command(&set(vec![B], ReserveCommand::Set), B),
            Err(AoeError::TargetReserved)
        );
        acl.reserve_command(&set(vec![B], ReserveCommand::ForceSet), B)
            .unwrap();
        assert_eq!(acl.reserve, vec![B]);
        // Release: the holder sets an empty list.
        acl.reserve_command(&set(vec![], ReserveCommand::Set), B)
            .unwrap();
        assert!(!acl.reserved_against(A));
    }

    #[test]
    fn reserve_set_is_refused_without_remote_edit() {
        let mut acl = AccessControl::default();
        let req = ReserveRepr {
            command: ReserveCommand::ForceSet,
            macs: vec![A],
        };
        assert_eq!(acl.reserve_command(&req, A), Err(AoeError::BadArgument));
    }
}
