//! The default job store: one JSON file per job under `<storageDir>/jobs/`, written atomically
//! (temporary file, `fdatasync`, rename, directory `fsync`), with entries it cannot use moved to
//! `<storageDir>/quarantine/` rather than deleted.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use ray_core::wire::is_valid_job_id;

use super::claim::{ClaimError, Claims, Lease};
use super::file_claims::FileClaims;
use super::store::{JobStore, ScanReport, SetAside, StoreError, Visit};

/// Prefix of temporary files; a file with it found at start is left from an interrupted write.
const TEMP_PREFIX: &str = ".tmp-";

/// One JSON file per job, crash-safe, in a directory of its own.
///
/// A write goes to a new temporary file in the same directory (created exclusively, mode
/// 0600), is flushed with `fdatasync`, renamed over `<id>.json`, and the directory is
/// `fsync`ed so the rename itself is durable. Concurrent writers share directory `fsync`s:
/// a writer whose rename an `fsync` already in progress will not cover waits for it and runs
/// the next one, which covers every rename finished before it started.
#[derive(Debug)]
pub struct FileJobStore {
    root: PathBuf,
    jobs: PathBuf,
    quarantine: PathBuf,
    max_record_bytes: u64,
    directory: DirectorySync,
    temp_counter: AtomicU64,
    process_id: u32,
    claims: FileClaims,
}

impl FileJobStore {
    /// Opens (creating with mode 0700 when missing) `<root>/jobs` and checks that a file can
    /// be written in it: a directory that exists but cannot be written (permissions, a
    /// read-only mount) is an error naming it, as one that cannot be created. Records larger
    /// than `max_record_bytes` are refused on read and set aside at scan.
    pub fn open(
        root: impl Into<PathBuf>,
        max_record_bytes: u64,
    ) -> Result<FileJobStore, StoreError> {
        let root = root.into();
        let jobs = root.join("jobs");
        create_private_dir(&jobs)?;
        let directory = DirectorySync::open(&jobs)?;
        let claims = FileClaims::new(&root);
        let store = FileJobStore {
            quarantine: root.join("quarantine"),
            root,
            jobs,
            max_record_bytes,
            directory,
            temp_counter: AtomicU64::new(0),
            process_id: std::process::id(),
            claims,
        };
        match store.probe() {
            // A full disk is not a reason to refuse to start: submissions are refused with
            // `async_queue_storage_low` until space is freed.
            Err(error)
                if super::faults::FaultKind::of(&error) != super::faults::FaultKind::Space =>
            {
                Err(error)
            }
            _ => Ok(store),
        }
    }

    /// The directory records are kept in (`<storageDir>/jobs`).
    pub fn jobs_dir(&self) -> &Path {
        &self.jobs
    }

    /// The storage directory (`asyncQueue.storageDir`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The name this handle's claims carry (`<host>/<pid>/<handle>`): each handle opened on a
    /// directory is a dispatcher of its own.
    pub fn holder(&self) -> &str {
        self.claims.holder()
    }

    /// Where entries that could not be used are moved.
    pub fn quarantine_dir(&self) -> &Path {
        &self.quarantine
    }

    fn record_path(&self, id: &str) -> PathBuf {
        self.jobs.join(format!("{id}.json"))
    }

    fn temp_path(&self, id: &str) -> PathBuf {
        let n = self.temp_counter.fetch_add(1, Ordering::Relaxed);
        let millis = ray_core::time::unix_millis_now();
        self.jobs.join(format!(
            "{TEMP_PREFIX}{id}-{}-{:x}{n:x}",
            base36(millis),
            self.process_id
        ))
    }

    /// Moves `path` into the quarantine directory as `<name>.<unix ms>[.<n>]`.
    fn set_aside(&self, path: &Path, name: &str, reason: String) -> SetAside {
        let moved = create_private_dir(&self.quarantine)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                let stamp = ray_core::time::unix_millis_now();
                let mut target = self.quarantine.join(format!("{name}.{stamp}"));
                let mut n = 1;
                while target.exists() {
                    target = self.quarantine.join(format!("{name}.{stamp}.{n}"));
                    n += 1;
                }
                fs::rename(path, &target)
                    .map(|()| target)
                    .map_err(|e| e.to_string())
            });
        match moved {
            Ok(target) => SetAside {
                name: name.to_string(),
                reason,
                moved_to: Some(target),
            },
            Err(error) => SetAside {
                name: name.to_string(),
                reason: format!("{reason}; it could not be moved aside ({error})"),
                moved_to: None,
            },
        }
    }

    /// Reads a record of at most `max_record_bytes`.
    fn read_capped(&self, path: &Path) -> Result<Vec<u8>, StoreError> {
        let io = |source| StoreError::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        if size > self.max_record_bytes {
            return Err(StoreError::TooLarge {
                path: path.to_path_buf(),
                size,
                limit: self.max_record_bytes,
            });
        }
        let mut bytes = Vec::with_capacity(size as usize);
        file.take(self.max_record_bytes + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        if bytes.len() as u64 > self.max_record_bytes {
            return Err(StoreError::TooLarge {
                path: path.to_path_buf(),
                size: bytes.len() as u64,
                limit: self.max_record_bytes,
            });
        }
        Ok(bytes)
    }
}

impl JobStore for FileJobStore {
    fn scan(&self, visit: &mut Visit<'_>) -> Result<ScanReport, StoreError> {
        let entries = fs::read_dir(&self.jobs).map_err(|source| StoreError::Io {
            action: "list",
            path: self.jobs.clone(),
            source,
        })?;
        let mut report = ScanReport::default();
        for entry in entries {
            let entry = entry.map_err(|source| StoreError::Io {
                action: "list",
                path: self.jobs.clone(),
                source,
            })?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(file_name) = entry.file_name().to_str().map(str::to_string) else {
                report.set_aside.push(self.set_aside(
                    &path,
                    &name,
                    "the file name is not UTF-8".into(),
                ));
                continue;
            };
            // `file_type` does not follow symlinks: a link is set aside, never read through.
            let kind = entry.file_type().map_err(|source| StoreError::Io {
                action: "inspect",
                path: path.clone(),
                source,
            })?;
            if file_name.starts_with(TEMP_PREFIX) {
                report.set_aside.push(self.set_aside(
                    &path,
                    &file_name,
                    "a temporary file left by an interrupted write".into(),
                ));
                continue;
            }
            let Some(id) = file_name.strip_suffix(".json") else {
                report.ignored.push(file_name);
                continue;
            };
            if !kind.is_file() {
                report.set_aside.push(self.set_aside(
                    &path,
                    &file_name,
                    "not a regular file".into(),
                ));
                continue;
            }
            if !is_valid_job_id(id) {
                report.set_aside.push(self.set_aside(
                    &path,
                    &file_name,
                    "the file name is not a job id".into(),
                ));
                continue;
            }
            let bytes = match self.read_capped(&path) {
                Ok(bytes) => bytes,
                Err(error) => {
                    report
                        .set_aside
                        .push(self.set_aside(&path, &file_name, error.to_string()));
                    continue;
                }
            };
            if let Err(reason) = visit(id, &bytes) {
                report
                    .set_aside
                    .push(self.set_aside(&path, &file_name, reason));
            }
        }
        Ok(report)
    }

    fn write(&self, id: &str, record: &[u8]) -> Result<(), StoreError> {
        let temp = self.temp_path(id);
        let io = |action, source| StoreError::Io {
            action,
            path: temp.clone(),
            source,
        };
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&temp).map_err(|e| io("create", e))?;
        let written = file
            .write_all(record)
            .and_then(|()| file.sync_data())
            .map_err(|e| io("write", e));
        drop(file);
        let renamed = written
            .and_then(|()| fs::rename(&temp, self.record_path(id)).map_err(|e| io("rename", e)));
        if let Err(error) = renamed {
            let _ = fs::remove_file(&temp);
            return Err(error);
        }
        self.directory.sync()
    }

    fn read(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self.read_capped(&self.record_path(id)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(StoreError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }

    fn remove(&self, id: &str) -> Result<(), StoreError> {
        // Not followed by a directory fsync: a removal lost in a crash only brings back a
        // finished job, which the next start prunes again.
        let path = self.record_path(id);
        self.claims.remove(id)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(source) if source.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StoreError::Io {
                action: "remove",
                path,
                source,
            }),
        }
    }

    fn claim(&self, id: &str, now_ms: u64, period: Duration) -> Result<Lease, ClaimError> {
        self.claims.claim(id, now_ms, period)
    }

    fn renew(&self, lease: &Lease, now_ms: u64, period: Duration) -> Result<Lease, ClaimError> {
        self.claims.with_state(&lease.job_id, |state| {
            Claims::renew(state, lease, now_ms, period)
        })
    }

    fn release(&self, lease: &Lease) -> Result<(), ClaimError> {
        self.claims
            .with_state(&lease.job_id, |state| Claims::release(state, lease))
    }

    fn complete(&self, lease: &Lease, now_ms: u64) -> Result<(), ClaimError> {
        self.claims.with_state(&lease.job_id, |state| {
            Claims::complete(state, lease, now_ms)
        })
    }

    fn available_bytes(&self) -> Option<u64> {
        let stats = rustix::fs::statvfs(&self.root).ok()?;
        Some(stats.f_bavail.saturating_mul(stats.f_frsize))
    }

    fn quarantined(&self) -> Vec<String> {
        let Ok(entries) = fs::read_dir(&self.quarantine) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Creates, fills with one block, flushes and removes a temporary file in `jobs/`: this
    /// fails on a full disk, a read-only mount or a directory the gateway may not write.
    fn probe(&self) -> Result<(), StoreError> {
        let temp = self.temp_path("probe");
        let io = |source| StoreError::Io {
            action: "write to",
            path: self.jobs.clone(),
            source,
        };
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&temp).map_err(io)?;
        let written = file
            .write_all(&[b'\n'; 4096])
            .and_then(|()| file.sync_data())
            .map_err(io);
        drop(file);
        let removed = fs::remove_file(&temp).map_err(io);
        written.and(removed)
    }
}

/// Directory `fsync`s shared between concurrent writers (group commit).
#[derive(Debug)]
struct DirectorySync {
    directory: File,
    path: PathBuf,
    /// Renames finished so far (each writer takes a ticket after its rename).
    requested: AtomicU64,
    /// Every ticket up to this one is durable.
    durable: AtomicU64,
    /// Held while an `fsync` runs.
    running: Mutex<()>,
}

impl DirectorySync {
    fn open(path: &Path) -> Result<DirectorySync, StoreError> {
        let directory = File::open(path).map_err(|source| StoreError::Io {
            action: "open",
            path: path.to_path_buf(),
            source,
        })?;
        Ok(DirectorySync {
            directory,
            path: path.to_path_buf(),
            requested: AtomicU64::new(0),
            durable: AtomicU64::new(0),
            running: Mutex::new(()),
        })
    }

    /// Returns once every rename finished before the call is durable.
    fn sync(&self) -> Result<(), StoreError> {
        let ticket = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let _running = self.running.lock();
        if self.durable.load(Ordering::SeqCst) >= ticket {
            return Ok(());
        }
        // Every ticket taken so far belongs to a rename that has finished, so this fsync
        // covers all of them.
        let covered = self.requested.load(Ordering::SeqCst);
        self.directory.sync_all().map_err(|source| StoreError::Io {
            action: "fsync",
            path: self.path.clone(),
            source,
        })?;
        self.durable.fetch_max(covered, Ordering::SeqCst);
        Ok(())
    }
}

fn create_private_dir(path: &Path) -> Result<(), StoreError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path).map_err(|source| StoreError::Io {
        action: "create",
        path: path.to_path_buf(),
        source,
    })
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replace_atomically_and_leave_no_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileJobStore::open(dir.path(), 1024).unwrap();
        store.write("job_1", b"first").unwrap();
        store.write("job_1", b"second").unwrap();
        assert_eq!(
            store.read("job_1").unwrap().as_deref(),
            Some(&b"second"[..])
        );
        assert_eq!(store.read("job_2").unwrap(), None);
        let names: Vec<String> = fs::read_dir(dir.path().join("jobs"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["job_1.json"]);
        store.remove("job_1").unwrap();
        store.remove("job_1").unwrap();
        assert_eq!(store.read("job_1").unwrap(), None);
        assert!(store.available_bytes().unwrap() > 0);
    }

    #[test]
    fn oversized_records_are_refused_on_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileJobStore::open(dir.path(), 8).unwrap();
        store.write("job_1", b"0123456789").unwrap();
        let error = store.read("job_1").unwrap_err();
        assert!(
            matches!(error, StoreError::TooLarge { size: 10, .. }),
            "{error}"
        );
    }

    #[test]
    fn concurrent_writers_share_directory_syncs() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(FileJobStore::open(dir.path(), 1024).unwrap());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for i in 0..20 {
                        store.write(&format!("job_{t}_{i}"), b"{}").unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let directory = &store.directory;
        assert_eq!(directory.requested.load(Ordering::SeqCst), 160);
        assert_eq!(directory.durable.load(Ordering::SeqCst), 160);
        assert_eq!(fs::read_dir(dir.path().join("jobs")).unwrap().count(), 160);
    }

    #[test]
    fn base36_counts() {
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
    }
}
