//! Wire types: what crosses HTTP between clients, the gateway and the SDK.

pub mod embeddings;
pub mod generation;
pub mod health;
pub mod infer;
pub mod jobs;
pub mod openai;
pub mod priority;
pub mod stream;

pub use generation::{
    FunctionCall, GenerationExtensions, JsonSchemaFormat, ParameterClamp, ToolCall,
};
pub use health::{
    AdaptiveHealth, Availability, CacheHealth, ClusterHealth, CpuHealth, DegradationHealth,
    DetectedCapabilities, GatewayHealth, GatewayHttpHealth, Health, HealthStatus, LifecycleHealth,
    MemoryHealth, ModelHealth, ModelIdentity, ModelLifecycle, PreparationHealth, PressureFlags,
    ProviderHealth, ProviderStatus, QueueHealth, RateLimitHealth, Readiness, RuntimeHealth,
    model_names_match, overall_status,
};
pub use infer::{
    AdaptiveTuningDiagnostics, ChatTurn, CountTriple, CpuSignals, DegradationDiagnostics,
    Diagnostics, DiagnosticsDetail, FinishReason, InferRequest, InferResponse, Lane,
    LearnedCapDiagnostics, MemorySignals, OrderedF64, PromptCompilerDiagnostics,
    ProviderDiagnostics, ProviderTimings, ResponseFormat, ResponseFormatKind, RoutingDiagnostics,
    SchedulerDiagnostics, TaskRoutingDiagnostics, TemplateValue, TurnRole, Usage, limits,
};
pub use jobs::{
    AsyncQueueHealth, CallbackStatus, JobAccepted, JobCallback, JobError, JobList, JobListQuery,
    JobRecord, JobStatus, JobSubmission, JobSummary, is_valid_job_id,
};
pub use priority::{
    MAX_PRIORITY_LEVEL, Priority, PriorityClass, PriorityDiagnostics, PriorityHealth,
};
pub use stream::{InferEvent, StreamDelta};
