//! The file store's claims: one small JSON file per claimed job under `<storageDir>/claims/`,
//! each operation made atomic against every other handle on the directory (in this process or
//! another) by an exclusive `flock` on `<storageDir>/claims/.lock`.
//!
//! A lease names its holder as `<host>/<pid>/<handle>`. Besides expiry, a lease is treated as
//! released when its holder is visibly gone: a process on this host that no longer exists, or
//! a store handle of this process that was dropped. So a gateway restarted after a crash takes
//! its jobs back at once instead of after one lease period; a holder on another host is only
//! ever timed out.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use super::claim::{ClaimError, ClaimState, Claims, Lease};
use super::store::StoreError;

/// Store handles of this process that are still open, by their number.
static LIVE_HANDLES: LazyLock<Mutex<HashSet<u64>>> = LazyLock::new(Default::default);
static NEXT_HANDLE: AtomicU64 = AtomicU64::new(1);

/// The claims directory of one store handle, and the handle's name as a holder.
#[derive(Debug)]
pub(super) struct FileClaims {
    dir: PathBuf,
    lock_path: PathBuf,
    host: String,
    handle: u64,
    holder: String,
}

impl FileClaims {
    pub(super) fn new(root: &Path) -> FileClaims {
        let host = fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        let handle = NEXT_HANDLE.fetch_add(1, Ordering::Relaxed);
        LIVE_HANDLES.lock().insert(handle);
        let dir = root.join("claims");
        FileClaims {
            lock_path: dir.join(".lock"),
            holder: format!("{host}/{}/{handle}", std::process::id()),
            dir,
            host,
            handle,
        }
    }

    /// This handle's name as a holder.
    pub(super) fn holder(&self) -> &str {
        &self.holder
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Runs `change` on the job's state under the directory lock and writes the state back
    /// when `change` succeeds.
    pub(super) fn with_state<T>(
        &self,
        id: &str,
        change: impl FnOnce(&mut ClaimState) -> Result<T, ClaimError>,
    ) -> Result<T, ClaimError> {
        let _lock = self.lock()?;
        let path = self.path(id);
        let mut state = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|error| {
                // A damaged claim file loses only the lease it held: the job's record is
                // the truth about the job, and its generation only has to go up.
                tracing::warn!(job_id = %id, %error, "a claim file is damaged; it is replaced");
                ClaimState {
                    generation: u64::from(u32::MAX),
                    ..ClaimState::default()
                }
            }),
            Err(error) if error.kind() == io::ErrorKind::NotFound => ClaimState::default(),
            Err(source) => return Err(io_error("read", &path, source).into()),
        };
        if let Some(holder) = &state.holder
            && !self.alive(holder)
        {
            state.holder = None;
            state.expires_ms = 0;
        }
        let before = state.clone();
        let answer = change(&mut state)?;
        if state != before {
            self.write(&path, &state)?;
        }
        Ok(answer)
    }

    /// Forgets the job's claims (the job was removed).
    pub(super) fn remove(&self, id: &str) -> Result<(), StoreError> {
        let path = self.path(id);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(source) if source.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(io_error("remove", &path, source)),
        }
    }

    fn lock(&self) -> Result<File, StoreError> {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(&self.dir)
            .map_err(|source| io_error("create", &self.dir, source))?;
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options
            .open(&self.lock_path)
            .map_err(|source| io_error("open", &self.lock_path, source))?;
        // Released when the file is closed, so a crash never leaves it held.
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|errno| io_error("lock", &self.lock_path, errno.into()))?;
        Ok(file)
    }

    /// Writes a temporary file and renames it over the claim. Not synced: a claim lost in a
    /// power cut only frees a job whose record still says what happened to it.
    fn write(&self, path: &Path, state: &ClaimState) -> Result<(), StoreError> {
        let temp = path.with_extension("tmp");
        let bytes = serde_json::to_vec(state).map_err(|e| StoreError::Other(e.to_string()))?;
        let mut options = OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options
            .open(&temp)
            .and_then(|mut file| file.write_all(&bytes))
            .and_then(|()| fs::rename(&temp, path))
            .map_err(|source| io_error("write", path, source))
    }

    /// Whether the holder may still be working: always for another host (its lease times
    /// out), else whether its process, and in this process its store handle, still exist.
    fn alive(&self, holder: &str) -> bool {
        let mut parts = holder.rsplitn(3, '/');
        let (Some(handle), Some(pid), Some(host)) = (parts.next(), parts.next(), parts.next())
        else {
            return true;
        };
        if host != self.host || self.host.is_empty() {
            return true;
        }
        let (Ok(handle), Ok(pid)) = (handle.parse::<u64>(), pid.parse::<u32>()) else {
            return true;
        };
        if pid == std::process::id() {
            return handle == self.handle || LIVE_HANDLES.lock().contains(&handle);
        }
        Path::new("/proc").join(pid.to_string()).exists()
    }

    pub(super) fn claim(
        &self,
        id: &str,
        now_ms: u64,
        period: Duration,
    ) -> Result<Lease, ClaimError> {
        self.with_state(id, |state| {
            Claims::claim(state, id, &self.holder, now_ms, period)
        })
    }
}

impl Drop for FileClaims {
    fn drop(&mut self) {
        LIVE_HANDLES.lock().remove(&self.handle);
    }
}

fn io_error(action: &'static str, path: &Path, source: io::Error) -> StoreError {
    StoreError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}
