//! The node's image cache: one file per image, named by its SHA-256, in one directory under a
//! size budget. A miss downloads through a [`Fetch`] into `<sha>.part` (resuming from the bytes
//! already there when a transfer breaks), checks size and SHA-256 and renames it into place;
//! concurrent requests for one image wait for the single download. An entry is verified
//! again when first used after the cache opens (the node booted), and whenever its file is no
//! longer the one last verified (another inode, size, modification or change time); a
//! corrupted entry is dropped and fetched again. Hashing a verified, unchanged file again on
//! every hit cost a launch the time to read the whole image (seconds for a cloud image on a
//! node under emulation). Room is made by evicting the least recently used entries that no
//! launch holds ([`Pinned`]). Files made from an entry (`<sha>.<suffix>`, [`Cache::derived`]:
//! an unpacked kernel) go with it.

use mallee_proto::{CacheSummary, CachedImage, ImageRef, Storage};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Why an image could not be provided.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image {0:?} has no valid SHA-256 (64 lower-case hex digits)")]
    BadDigest(String),
    #[error("image {sha} ({size} bytes) does not fit the {budget}-byte cache")]
    NoRoom { sha: String, size: u64, budget: u64 },
    #[error("fetching {key}: {message}")]
    Fetch { key: String, message: String },
    #[error("{key}: downloaded {got} bytes hashing to {sha}, expected {want_size} bytes {want}")]
    Mismatch {
        key: String,
        got: u64,
        sha: String,
        want_size: u64,
        want: String,
    },
    #[error("image cache file {0}: {1}")]
    Io(PathBuf, std::io::Error),
}

/// Downloads an object from `offset` to its end into `out`; returns the bytes written.
pub trait Fetch: Sync {
    fn fetch(&self, image: &ImageRef, offset: u64, out: &mut dyn Write) -> Result<u64, String>;
}

struct Entry {
    size: u64,
    last_used: u64,
    pins: u32,
    /// The file as it was when its contents were last found right; `None` until then.
    verified: Option<Stamp>,
}

/// What identifies a file's contents without reading them: the same inode, unchanged since
/// (a write or truncation moves the modification and change times; a rename or copy over it
/// is another inode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(path: &Path) -> std::io::Result<Stamp> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path)?;
        Ok(Stamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

#[derive(Default)]
struct State {
    entries: HashMap<String, Entry>,
    fetching: HashSet<String>,
    /// Bytes promised to downloads in flight.
    reserved: u64,
    clock: u64,
    /// Downloads started (a hit costs none), for the report and the tests.
    downloads: u64,
    /// Requests answered by a verified entry.
    hits: u64,
    /// Entries whose contents were hashed again on a hit.
    rehashes: u64,
}

struct Shared {
    dir: PathBuf,
    budget: u64,
    storage: Storage,
    state: Mutex<State>,
    done: Condvar,
}

/// The cache; cheap to clone.
#[derive(Clone)]
pub struct Cache(Arc<Shared>);

/// An image held for use: not evicted until dropped.
pub struct Pinned {
    cache: Cache,
    sha: String,
    pub path: PathBuf,
}

impl Drop for Pinned {
    fn drop(&mut self) {
        if let Some(e) = self.cache.lock().entries.get_mut(&self.sha) {
            e.pins = e.pins.saturating_sub(1);
        }
    }
}

const FETCH_ATTEMPTS: u32 = 6;

fn valid_sha(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Size and lower-case hex SHA-256 of a file.
pub fn digest_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let got = f.read(&mut buf)?;
        if got == 0 {
            break;
        }
        h.update(&buf[..got]);
        n += got as u64;
    }
    Ok((n, format!("{:x}", h.finalize())))
}

impl Cache {
    /// Opens the cache in `dir` (created if missing), keeping entries found there; they are
    /// verified when first used.
    pub fn open(dir: &Path, budget: u64, storage: Storage) -> Result<Cache, ImageError> {
        let io = |e| ImageError::Io(dir.to_path_buf(), e);
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut state = State::default();
        let mut others = Vec::new();
        for ent in std::fs::read_dir(dir).map_err(io)?.flatten() {
            let name = ent.file_name().to_string_lossy().into_owned();
            if let (true, Ok(meta)) = (valid_sha(&name), ent.metadata()) {
                let entry = Entry {
                    size: meta.len(),
                    last_used: 0,
                    pins: 0,
                    verified: None,
                };
                state.entries.insert(name, entry);
            } else {
                others.push(name);
            }
        }
        // Derived files of entries no longer there, and half-made ones; `.part` downloads
        // resume.
        for name in others {
            let (sha, rest) = name.split_once('.').unwrap_or((&name, ""));
            let orphan = valid_sha(sha) && !state.entries.contains_key(sha) && rest != "part";
            if orphan || rest.contains(".tmp") {
                let _ = std::fs::remove_file(dir.join(&name));
            }
        }
        Ok(Cache(Arc::new(Shared {
            dir: dir.to_path_buf(),
            budget,
            storage,
            state: Mutex::new(state),
            done: Condvar::new(),
        })))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn path(&self, sha: &str) -> PathBuf {
        self.0.dir.join(sha)
    }

    /// Where a file made from the pinned entry lives (`<sha>.<suffix>`): removed with the
    /// entry, so it never outlives the image it was made from. Not counted in the budget.
    pub fn derived(&self, pinned: &Pinned, suffix: &str) -> PathBuf {
        self.0.dir.join(format!("{}.{suffix}", pinned.sha))
    }

    /// Removes entry `sha`'s file and every file derived from it.
    fn remove_files(&self, sha: &str) {
        let _ = std::fs::remove_file(self.path(sha));
        let derived = format!("{sha}.");
        if let Ok(dir) = std::fs::read_dir(&self.0.dir) {
            for ent in dir.flatten() {
                let name = ent.file_name().to_string_lossy().into_owned();
                if name.starts_with(&derived) && name != format!("{sha}.part") {
                    let _ = std::fs::remove_file(ent.path());
                }
            }
        }
    }

    /// What the cache holds, for the node's report.
    pub fn list(&self) -> Vec<CachedImage> {
        let mut v: Vec<CachedImage> = (self.lock().entries.iter())
            .map(|(sha, e)| CachedImage {
                sha256: sha.clone(),
                size: e.size,
            })
            .collect();
        v.sort_by(|a, b| a.sha256.cmp(&b.sha256));
        v
    }

    /// Downloads started so far.
    pub fn downloads(&self) -> u64 {
        self.lock().downloads
    }

    /// Hits that hashed their entry again (first use after opening, or a changed file).
    pub fn rehashes(&self) -> u64 {
        self.lock().rehashes
    }

    /// Totals for the node's report.
    pub fn summary(&self) -> CacheSummary {
        let st = self.lock();
        CacheSummary {
            storage: self.0.storage,
            budget_bytes: self.0.budget,
            used_bytes: used(&st),
            downloads: st.downloads,
            hits: st.hits,
        }
    }

    /// The image, verified, pinned until the returned guard drops.
    pub fn get(&self, image: &ImageRef, fetch: &dyn Fetch) -> Result<Pinned, ImageError> {
        let sha = image.sha256.clone();
        if !valid_sha(&sha) {
            return Err(ImageError::BadDigest(sha));
        }
        let mut st = self.lock();
        loop {
            if st.fetching.contains(&sha) {
                st = self.0.done.wait(st).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            st.clock += 1;
            let now = st.clock;
            if let Some(e) = st.entries.get_mut(&sha) {
                e.pins += 1;
                e.last_used = now;
                let verified = e.verified;
                let pinned = Pinned {
                    cache: self.clone(),
                    sha: sha.clone(),
                    path: self.path(&sha),
                };
                let stamp = Stamp::of(&pinned.path).ok();
                if stamp.is_some() && stamp == verified && e.size == image.size {
                    st.hits += 1;
                    return Ok(pinned);
                }
                st.rehashes += 1;
                drop(st);
                match digest_file(&pinned.path) {
                    Ok((n, d)) if n == image.size && d == sha => {
                        let mut st = self.lock();
                        st.hits += 1;
                        if let Some(e) = st.entries.get_mut(&sha) {
                            // Taken before the hash: a change while hashing shows next time.
                            e.verified = stamp;
                        }
                        return Ok(pinned);
                    }
                    found => tracing::warn!(
                        "agent: cached image {sha} is corrupt ({found:?}); fetching it again"
                    ),
                }
                drop(pinned);
                st = self.lock();
                st.entries.remove(&sha);
                self.remove_files(&sha);
                continue;
            }
            make_room(&mut st, self.0.budget, &sha, image.size, |s| {
                self.remove_files(s);
            })?;
            st.fetching.insert(sha.clone());
            st.reserved += image.size;
            st.downloads += 1;
            break;
        }
        drop(st);
        let result = self.download(image, fetch);
        let mut st = self.lock();
        st.fetching.remove(&sha);
        st.reserved -= image.size;
        self.0.done.notify_all();
        result?;
        st.clock += 1;
        let entry = Entry {
            size: image.size,
            last_used: st.clock,
            pins: 1,
            // `download` verified it, then renamed it into place (which moves its change time).
            verified: Stamp::of(&self.path(&sha)).ok(),
        };
        st.entries.insert(sha.clone(), entry);
        Ok(Pinned {
            cache: self.clone(),
            path: self.path(&sha),
            sha,
        })
    }

    /// Fetches into `<sha>.part`, resuming after breaks, verifies, renames into place.
    fn download(&self, image: &ImageRef, fetch: &dyn Fetch) -> Result<(), ImageError> {
        let part = self.0.dir.join(format!("{}.part", image.sha256));
        let io = |e| ImageError::Io(part.clone(), e);
        let mut last = String::new();
        for attempt in 0..FETCH_ATTEMPTS {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&part)
                .map_err(io)?;
            let have = f.metadata().map_err(io)?.len();
            if have > image.size {
                f.set_len(0).map_err(io)?;
                continue;
            }
            if have == image.size {
                break;
            }
            match fetch.fetch(image, have, &mut f) {
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(
                        "agent: fetching {} from byte {have} failed (attempt {}): {e}",
                        image.key,
                        attempt + 1
                    );
                    last = e;
                    std::thread::sleep(Duration::from_millis(200 << attempt.min(4)));
                }
            }
        }
        let (got, sha) = digest_file(&part).map_err(io)?;
        if got < image.size && !last.is_empty() {
            return Err(ImageError::Fetch {
                key: image.key.clone(),
                message: last,
            });
        }
        if got != image.size || sha != image.sha256 {
            let _ = std::fs::remove_file(&part);
            return Err(ImageError::Mismatch {
                key: image.key.clone(),
                got,
                sha,
                want_size: image.size,
                want: image.sha256.clone(),
            });
        }
        std::fs::rename(&part, self.path(&image.sha256)).map_err(io)
    }
}

/// Bytes held by entries and promised to downloads in flight.
fn used(st: &State) -> u64 {
    st.entries.values().map(|e| e.size).sum::<u64>() + st.reserved
}

/// Evicts least recently used, unpinned entries (calling `remove` for each) until `size` more
/// bytes fit the budget; fails when they cannot.
fn make_room(
    st: &mut State,
    budget: u64,
    sha: &str,
    size: u64,
    mut remove: impl FnMut(&str),
) -> Result<(), ImageError> {
    while used(st) + size > budget {
        let victim = (st.entries.iter())
            .filter(|(_, e)| e.pins == 0)
            .min_by_key(|(_, e)| e.last_used)
            .map(|(s, _)| s.clone());
        let Some(victim) = victim else {
            return Err(ImageError::NoRoom {
                sha: sha.to_string(),
                size,
                budget,
            });
        };
        tracing::info!("agent: evicting cached image {victim}");
        st.entries.remove(&victim);
        remove(&victim);
    }
    Ok(())
}

#[cfg(test)]
#[path = "images_tests.rs"]
mod tests;
