//! How a VM ends: [`Exit`], the contract type in `mallee-proto` whose codes are the VMM's
//! process exit status (0 poweroff, 1 error, 2 reboot, 3 API shutdown; the crate README), and the
//! [`Failure`] report written before an error exit so the node agent reads a reason, not a log.
//!
//! The node agent reads both, so they are part of the interface; this module only writes them.

use std::io::Write;
use std::path::Path;

pub use mallee_proto::vmm::{Exit, Failure};

/// Writes `failure` to `path` whole or not at all (a temporary file renamed into place), so a
/// reader never sees half a report.
pub fn write_failure(path: &Path, failure: &Failure) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&mallee_proto::encode(failure))?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_file_reads_back_as_the_same_failure() {
        let dir = std::env::temp_dir().join(format!("mallee-vmm-exit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("failure.json");
        let failure = Failure::error("cannot open disk /x: No such file or directory");
        write_failure(&path, &failure).unwrap();
        let read: Failure = mallee_proto::decode(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(read, failure);
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "no temporary left"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
