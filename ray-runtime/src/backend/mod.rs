//! Backend processes: the `llama-server` command line generated from a launch profile, and
//! the supervisor that runs it for a model (`launchProfile.supervise`), restarts it with
//! backoff and reports its state to the model's readiness.

mod launch;
mod process;
pub mod supervise;

pub use launch::{LLAMA_OOM_SCORE_ADJUST, LlamaCommand, llama_command};
pub use process::BackendProcess;
pub use supervise::Supervisor;

use crate::runtime::Runtime;

/// The supervisors of the models whose launch profile sets `supervise`.
#[derive(Debug, Default)]
pub struct Backends {
    supervisors: Vec<Supervisor>,
}

impl Backends {
    /// How many backend processes are supervised.
    pub fn len(&self) -> usize {
        self.supervisors.len()
    }

    /// Whether no backend process is supervised.
    pub fn is_empty(&self) -> bool {
        self.supervisors.is_empty()
    }

    /// Stops every child (SIGTERM, SIGKILL after [`supervise::STOP_GRACE`]) and waits for them.
    pub async fn shutdown(self) {
        for supervisor in self.supervisors {
            supervisor.shutdown().await;
        }
    }
}

impl Runtime {
    /// Starts a supervisor for every model whose llama.cpp launch profile sets `supervise`.
    /// Call it from inside a Tokio runtime, after the listener is bound; stop them with
    /// [`Backends::shutdown`] after the drain (requests in progress need them until then).
    pub fn start_backends(&self) -> Backends {
        let mut supervisors = Vec::new();
        for model in self.inner.registry.entries() {
            let Some(launch) = model
                .config
                .adapter
                .launch_profile()
                .filter(|launch| launch.supervise)
            else {
                continue;
            };
            let api_key_env = model
                .config
                .adapter
                .http()
                .and_then(|h| h.api_key_env.map(String::from));
            supervisors.push(supervise::spawn(
                self.clone(),
                model.id.clone(),
                launch.clone(),
                api_key_env,
            ));
        }
        Backends { supervisors }
    }
}
