//! The job store: durable bytes per job id, behind a small trait so an embedder can keep jobs
//! elsewhere. The queue owns the record format, the rules and the index; a store only keeps
//! bytes safe.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Durable storage of job records, one opaque byte string per job id.
///
/// Methods block (the queue calls them from Tokio's blocking pool), so an implementation may
/// use plain file or socket I/O. [`FileJobStore`](super::FileJobStore) is the default.
pub trait JobStore: Send + Sync + fmt::Debug + 'static {
    /// Visits every stored record once, at start, one at a time (so memory holds one record,
    /// not all of them).
    ///
    /// `visit` gets the job id and the bytes and answers `Err(reason)` for a record the queue
    /// cannot use; the store then sets the entry aside (it must not delete it). Entries the
    /// store cannot use itself (stale temporary files, unreadable or oversized entries) are set
    /// aside the same way. Every entry set aside is listed in the report. Only a store that
    /// cannot be listed at all is an error: one bad record must never stop a start.
    fn scan(&self, visit: &mut Visit<'_>) -> Result<ScanReport, StoreError>;

    /// Stores `record` under `id`, replacing what was there. When this returns `Ok` the record
    /// survives a crash or a power cut; a crash during the call leaves the old record or the
    /// new one, never a mix.
    fn write(&self, id: &str, record: &[u8]) -> Result<(), StoreError>;

    /// The record stored under `id`, if any.
    fn read(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Forgets `id`; forgetting an unknown id is not an error.
    fn remove(&self, id: &str) -> Result<(), StoreError>;

    /// Bytes available for new records, when the store can tell (it is checked against
    /// `asyncQueue.minFreeStorageMiB` before each submission).
    fn available_bytes(&self) -> Option<u64>;

    /// Checks that the store takes writes now, without touching any record. The queue calls
    /// it about once a second while writes fail, and the first `Ok` ends the fault (submissions
    /// are taken again, waiting jobs resume). The default answers `Ok`, so a store that cannot
    /// check learns of a lasting fault from the next real write instead.
    fn probe(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// The names of the entries set aside so far (at this start or earlier ones), as
    /// [`SetAside::name`] gave them, possibly followed by `.` and a suffix the store added to
    /// keep them apart. The queue answers `job_record_damaged` for the job ids among them.
    /// The default knows of none.
    fn quarantined(&self) -> Vec<String> {
        Vec::new()
    }

    /// Claims job `id` for this handle for `period` from `now_ms` (Unix ms): granted when the
    /// job is not completed and no live lease on it is held, by anyone sharing the store.
    /// The queue claims a job before each attempt and holds the lease while it runs, so two
    /// dispatchers on one store never run the same job. The rules are [`Claims`](super::Claims).
    ///
    /// The default grants every claim, which is right for a store only one queue uses (the
    /// queue's own index already keeps a job to one attempt at a time); a store shared by
    /// several dispatchers must implement the four claim methods together.
    fn claim(&self, id: &str, now_ms: u64, period: Duration) -> Result<Lease, ClaimError> {
        Ok(Lease {
            job_id: id.to_string(),
            holder: String::new(),
            generation: 0,
            expires_ms: now_ms.saturating_add(period.as_millis() as u64),
        })
    }

    /// Extends a live lease to `period` from `now_ms`; [`ClaimError::Lost`] once it expired,
    /// was released or the job was claimed again.
    fn renew(&self, lease: &Lease, now_ms: u64, period: Duration) -> Result<Lease, ClaimError> {
        Ok(Lease {
            expires_ms: now_ms.saturating_add(period.as_millis() as u64),
            ..lease.clone()
        })
    }

    /// Gives a claimed job back (it may run again, here or elsewhere).
    fn release(&self, lease: &Lease) -> Result<(), ClaimError> {
        let _ = lease;
        Ok(())
    }

    /// Marks a claimed job finished under a live lease: no claim is granted for it again
    /// (until [`JobStore::remove`] forgets it).
    fn complete(&self, lease: &Lease, now_ms: u64) -> Result<(), ClaimError> {
        let _ = (lease, now_ms);
        Ok(())
    }
}

/// The visitor of [`JobStore::scan`]: gets a job id and its record's bytes, answers
/// `Err(reason)` to have the entry set aside.
pub type Visit<'a> = dyn FnMut(&str, &[u8]) -> Result<(), String> + 'a;

/// What a scan found besides the records it handed to the visitor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanReport {
    /// Entries set aside, with the reason.
    pub set_aside: Vec<SetAside>,
    /// Entries left alone because they are not the store's (for a directory: files without
    /// the `.json` extension).
    pub ignored: Vec<String>,
}

/// One entry a scan set aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetAside {
    /// The entry's name in the store (a file name for the file store).
    pub name: String,
    /// Why it was set aside.
    pub reason: String,
    /// Where it went, when it could be moved.
    pub moved_to: Option<PathBuf>,
}

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A file system operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done (`write`, `read`, ...).
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A stored record is larger than the store accepts.
    #[error("{} is {size} bytes, more than the {limit} allowed", path.display())]
    TooLarge {
        /// The record's path.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A stored record is damaged: it cannot be parsed as a job record.
    #[error("the stored record is damaged: {0}")]
    Damaged(String),
    /// Any other failure (a store of an embedder's own, a task that panicked).
    #[error("{0}")]
    Other(String),
}

/// A claim on one job, held until `expires_ms` unless renewed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The job claimed.
    pub job_id: String,
    /// Who holds it (the store's name for its dispatcher).
    pub holder: String,
    /// Which claim of the job this is; a lease of an earlier claim is stale.
    pub generation: u64,
    /// When the lease ends, in Unix milliseconds.
    pub expires_ms: u64,
}

/// Why a claim operation was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClaimError {
    /// Someone else holds a live lease on the job.
    #[error("job {job_id} is claimed by {holder} until {expires_ms} (Unix ms)")]
    Held {
        /// The job.
        job_id: String,
        /// Who holds it.
        holder: String,
        /// When that lease ends.
        expires_ms: u64,
    },
    /// The lease is no longer the job's claim: it expired, was released, or the job was
    /// claimed again since.
    #[error("the lease on job {job_id} was lost")]
    Lost {
        /// The job.
        job_id: String,
    },
    /// The job was completed: it can never be claimed again.
    #[error("job {job_id} is completed")]
    Completed {
        /// The job.
        job_id: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
