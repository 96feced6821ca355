//! Telling nodes that desired state changed: a generation number that every change of
//! instance records bumps, and a watch channel on which the node protocol's long polls wait.
//! The epoch (random per process) makes generations of a restarted frontend new to nodes.
//! A second channel tells the gateway that networks or group rules may have changed (every
//! instance change, and rule changes that nodes need not hear of).

use rand::RngCore;

/// Wakes nodes long-polling their desired state whenever instance records change.
pub struct Changes {
    epoch: String,
    tx: tokio::sync::watch::Sender<u64>,
    network: tokio::sync::watch::Sender<u64>,
}

impl Default for Changes {
    fn default() -> Self {
        let mut raw = [0u8; 4];
        rand::thread_rng().fill_bytes(&mut raw);
        Changes {
            epoch: hex::encode(raw),
            tx: tokio::sync::watch::channel(0).0,
            network: tokio::sync::watch::channel(0).0,
        }
    }
}

impl Changes {
    /// Records that desired state may have changed.
    pub fn bump(&self) {
        self.tx.send_modify(|g| *g += 1);
        self.bump_network();
    }

    /// Records that what the gateway enforces may have changed (group rules).
    pub fn bump_network(&self) {
        self.network.send_modify(|g| *g += 1);
    }

    /// Wakes on every [`Changes::bump_network`] (and so every [`Changes::bump`]).
    pub fn subscribe_network(&self) -> tokio::sync::watch::Receiver<u64> {
        self.network.subscribe()
    }

    /// The current generation, as nodes see it.
    pub fn generation(&self) -> String {
        format!("{}-{}", self.epoch, *self.tx.borrow())
    }

    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.tx.subscribe()
    }
}
