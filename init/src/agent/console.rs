//! Console streaming: the retained tail of each instance's serial output (`console.log`),
//! sent to the frontend (`POST /_node/console`) whenever it grew. The whole tail goes each
//! time, so a lost post costs nothing.

use super::client::Client;
use super::instances::Instances;
use mallee_proto as proto;
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Console bytes kept and sent per instance (what EC2 keeps).
pub const TAIL: u64 = 64 << 10;

/// The file's length and its last `max` bytes as text (invalid UTF-8 replaced).
pub fn tail(path: &Path, max: u64) -> std::io::Result<(u64, String)> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(max)))?;
    let mut buf = Vec::new();
    f.take(max).read_to_end(&mut buf)?;
    Ok((len, String::from_utf8_lossy(&buf).into_owned()))
}

/// Posts grown consoles every `every`, forever.
pub fn stream(instances: Instances, client: Arc<Mutex<Client>>, every: Duration) {
    let mut sent: HashMap<String, u64> = HashMap::new();
    loop {
        std::thread::sleep(every);
        let consoles = instances.consoles();
        sent.retain(|id, _| consoles.iter().any(|(i, _)| i == id));
        for (id, path) in consoles {
            let Ok((len, output)) = tail(&path, TAIL) else {
                continue;
            };
            if sent.get(&id) == Some(&len) {
                continue;
            }
            let c = client.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let msg = proto::ConsoleReport {
                instance_id: id.clone(),
                output,
            };
            let r: Result<serde_json::Value, _> = c.call(
                "POST",
                proto::PATH_CONSOLE,
                Some(&msg),
                Duration::from_secs(10),
            );
            match r {
                Ok(_) => {
                    if !sent.contains_key(&id) {
                        tracing::debug!("agent: console of {id}: streaming ({len} bytes so far)");
                    }
                    sent.insert(id, len);
                }
                Err(e) => tracing::warn!("agent: console of {id}: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_bytes_and_survives_bad_utf8() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c");
        let mut data = b"0123456789".to_vec();
        data.push(0xff);
        std::fs::write(&p, &data).unwrap();
        assert_eq!(tail(&p, 4).unwrap(), (11, "789\u{fffd}".to_string()));
        assert_eq!(tail(&p, 100).unwrap().1.len(), 13);
        assert!(tail(&dir.path().join("none"), 4).is_err());
    }
}
