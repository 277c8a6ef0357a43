//! The stored form of a job record: encoding with the size cap, parsing with the checks a
//! record read back from disk must pass, and the recovery rules applied at start. Pure
//! functions, so they are unit- and property-tested without a store.

use ray_core::time::parse_rfc3339_millis;
use ray_core::wire::{CallbackStatus, JobError, JobRecord, JobStatus, is_valid_job_id};

/// The code kept on a job whose attempt was interrupted by a restart and that was queued again.
pub const JOB_RECOVERED: &str = "job_recovered";
/// The code of a job whose attempt was interrupted by a restart with no attempt left.
pub const JOB_RECOVERY_ATTEMPTS_EXHAUSTED: &str = "job_recovery_attempts_exhausted";

/// A record too large for the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooLarge {
    pub(crate) bytes: usize,
    pub(crate) limit: u64,
}

/// Serialises a record (compact JSON and a newline), refusing one larger than `limit` bytes.
pub(crate) fn encode(record: &JobRecord, limit: u64) -> Result<Vec<u8>, TooLarge> {
    // Serialising these types cannot fail: every map key is a string and no value is a float
    // outside JSON's range (non-finite floats serialise as null).
    let mut bytes = serde_json::to_vec(record).unwrap_or_default();
    bytes.push(b'\n');
    if bytes.len() as u64 > limit {
        return Err(TooLarge {
            bytes: bytes.len(),
            limit,
        });
    }
    Ok(bytes)
}

/// Parses a stored record and checks what the queue relies on. `id` is the id the store filed
/// it under. The error is the reason the record is set aside.
pub(crate) fn parse(id: &str, bytes: &[u8]) -> Result<JobRecord, String> {
    let record: JobRecord =
        serde_json::from_slice(bytes).map_err(|e| format!("not a valid job record: {e}"))?;
    if record.id != id {
        return Err(format!(
            "the record's id {:?} does not match the name it is stored under ({id})",
            record.id
        ));
    }
    if !is_valid_job_id(&record.id) {
        return Err(format!("{:?} is not a job id", record.id));
    }
    for (field, value) in [
        ("createdAt", Some(&record.created_at)),
        ("updatedAt", Some(&record.updated_at)),
        ("startedAt", record.started_at.as_ref()),
        ("completedAt", record.completed_at.as_ref()),
        ("nextAttemptAt", record.next_attempt_at.as_ref()),
    ] {
        if let Some(value) = value
            && parse_rfc3339_millis(value).is_none()
        {
            return Err(format!("{field} is not an RFC 3339 UTC time: {value:?}"));
        }
    }
    if record.max_attempts == 0 {
        return Err("maxAttempts is 0".into());
    }
    if record.status == JobStatus::Succeeded && record.result.is_none() {
        return Err("the job succeeded but the record has no result".into());
    }
    if let Some(callback) = &record.callback
        && callback.url.is_empty()
    {
        return Err("the callback has no URL".into());
    }
    Ok(record)
}

/// Applies the recovery rules to a record read at start and says whether it changed:
///
/// - `running`: the attempt was interrupted. With attempts left the job is queued again
///   (error `job_recovered`); without, it fails (`job_recovery_attempts_exhausted`).
/// - a finished job whose callback is pending with every attempt used (the last delivery was
///   cut off): the callback fails, saying so.
pub(crate) fn recover(record: &mut JobRecord, max_callback_attempts: u32, now: &str) -> bool {
    let mut changed = false;
    if record.status == JobStatus::Running {
        changed = true;
        record.next_attempt_at = None;
        if record.attempts >= record.max_attempts {
            record.status = JobStatus::Failed;
            record.completed_at = Some(now.to_string());
            record.error = Some(JobError::new(
                JOB_RECOVERY_ATTEMPTS_EXHAUSTED,
                format!(
                    "attempt {} of {} was cut off (the gateway stopped while it ran, or its \
                     outcome could not be stored), and no attempt is left",
                    record.attempts, record.max_attempts
                ),
            ));
        } else {
            record.status = JobStatus::Queued;
            record.error = Some(JobError::new(
                JOB_RECOVERED,
                format!(
                    "attempt {} of {} was cut off (the gateway stopped while it ran, or its \
                     outcome could not be stored); the job was queued again",
                    record.attempts, record.max_attempts
                ),
            ));
        }
    }
    if record.status.is_terminal()
        && let Some(callback) = &mut record.callback
        && callback.status == CallbackStatus::Pending
        && callback.attempts >= max_callback_attempts
    {
        changed = true;
        // Each delivery is recorded before it is sent, with no next attempt: a record that
        // still says so had its last delivery cut off. One with a next attempt planned ran out
        // because `maxCallbackAttempts` was lowered, and keeps its last error.
        if callback.next_attempt_at.is_none() {
            callback.last_error = Some(format!(
                "delivery attempt {} was cut off when the gateway stopped during it, and it \
                 was the last (maxCallbackAttempts {max_callback_attempts})",
                callback.attempts
            ));
        }
        callback.status = CallbackStatus::Failed;
        callback.next_attempt_at = None;
    }
    if changed {
        record.updated_at = now.to_string();
    }
    changed
}

#[cfg(test)]
mod tests;
