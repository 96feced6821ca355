//! Telling nodes that desired state changed: a generation number that every change of
//! instance records bumps, and a watch channel on which the node protocol's long polls wait.
//! The epoch (random per process) makes generations of a restarted frontend new to nodes.

use rand::RngCore;

/// Wakes nodes long-polling their desired state whenever instance records change.
pub struct Changes {
    epoch: String,
    tx: tokio::sync::watch::Sender<u64>,
}

impl Default for Changes {
    fn default() -> Self {
        let mut raw = [0u8; 4];
        rand::thread_rng().fill_bytes(&mut raw);
        Changes {
            epoch: hex::encode(raw),
            tx: tokio::sync::watch::channel(0).0,
        }
    }
}

impl Changes {
    /// Records that desired state may have changed.
    pub fn bump(&self) {
        self.tx.send_modify(|g| *g += 1);
    }

    /// The current generation, as nodes see it.
    pub fn generation(&self) -> String {
        format!("{}-{}", self.epoch, *self.tx.borrow())
    }

    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.tx.subscribe()
    }
}
