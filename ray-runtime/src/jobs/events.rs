//! Where the queue's events (`job_failed`, `callback_gave_up`) go: the hooks the builder sets,
//! and the `job_failed` events of the recovery at open, held until then.

use ray_core::wire::JobRecord;

use super::{EventSink, JobQueue};

impl JobQueue {
    /// Sets where the queue's events go, and sends the `job_failed` events of the recovery
    /// at open.
    pub(crate) fn set_hooks(&self, sink: EventSink) {
        if self.hooks.set(sink).is_ok()
            && let Some(hooks) = self.hooks.get()
        {
            for fields in std::mem::take(&mut *self.recovered_failures.lock()) {
                hooks("job_failed", fields);
            }
        }
    }

    /// Sends `job_failed` for `record` to the hooks, when they are set.
    pub(crate) fn emit_failed(&self, record: &JobRecord) {
        if let Some(hooks) = self.hooks.get() {
            hooks("job_failed", failed_event(record));
        }
    }
}

/// The fields of a `job_failed` event.
pub(super) fn failed_event(record: &JobRecord) -> serde_json::Map<String, serde_json::Value> {
    let mut fields = serde_json::Map::new();
    fields.insert("jobId".into(), record.id.clone().into());
    fields.insert("attempts".into(), record.attempts.into());
    fields.insert(
        "code".into(),
        record
            .error
            .as_ref()
            .map(|e| e.code.as_str())
            .unwrap_or_default()
            .into(),
    );
    fields
}
