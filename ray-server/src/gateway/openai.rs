//! The OpenAI-compatible routes: `POST /v1/chat/completions`, `POST /v1/completions` and
//! `GET /v1/models`. They translate to and from Ray's own request and response
//! (`ray_core::wire::openai`) and run through the same runtime as `/v1/infer`: auth, rate limit,
//! cache, dedupe, admission, degradation and metrics all apply. Errors keep Ray's status codes
//! and `Retry-After`, in OpenAI's body shape.

use crate::gateway::http::RequestBody;
use bytes::Bytes;
use hyper::header::HeaderValue;
use hyper::{Request, Response, StatusCode};
use ray_core::wire::openai::{
    ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChunkChoice, ChunkDelta,
    Completion, CompletionChoice, CompletionRequest, DoorLimits, Model, ModelList, OpenAiErrorBody,
    OpenAiUsage, finish_reason, logprobs_of,
};
use ray_core::wire::{InferEvent, InferRequest, InferResponse};
use ray_core::{ErrorCode, RayError};

use ray_core::config::RouteKind;
use ray_runtime::RequestContext;

use crate::gateway::app::{
    App, Caller, RequestLog, Route, log_response, request_context, with_routing_headers,
};
use crate::gateway::http::{self, Body};
use crate::gateway::sse::{self, Encoder};

fn unix_now() -> u64 {
    ray_core::time::unix_millis_now() / 1000
}

/// `GET /v1/models`: every configured model, with its aliases, role, state and context size
/// (Ray's fields beside OpenAI's).
pub(crate) async fn models(app: &App) -> Response<Body> {
    let list = ModelList {
        object: "list".into(),
        data: listed_models(app).await,
    };
    http::json(StatusCode::OK, &list)
}

/// Every configured model with Ray's fields beside OpenAI's.
async fn listed_models(app: &App) -> Vec<Model> {
    let runtime = app.runtime();
    let created = unix_now().saturating_sub(runtime.uptime().as_secs());
    runtime
        .models()
        .await
        .into_iter()
        .map(|model| Model {
            aliases: model.aliases,
            role: Some(model.role),
            default: Some(model.default),
            state: Some(model.state),
            reason: model.reason,
            context_window: Some(model.context_window),
            max_output_tokens: Some(model.max_output_tokens),
            failures: (model.failures > 0).then_some(model.failures),
            cooldown_remaining_ms: model.cooldown_remaining_ms,
            lifecycle: model.lifecycle,
            ..Model::new(model.id, created)
        })
        .collect()
}

/// `GET /v1/models/{id}`: the model `id` names (an id, an alias or a backend's `modelRef`),
/// as `GET /v1/models` lists it, else `404 model_not_found` in OpenAI's shape.
pub(crate) async fn model(app: &App, path: &str, log: &mut RequestLog) -> Response<Body> {
    let raw = path.strip_prefix("/v1/models/").unwrap_or_default();
    let asked = percent_decode(raw);
    let Some(id) = app.runtime().resolve_model(&asked) else {
        let known = app.runtime().model_ids().join(", ");
        let error = RayError::new(
            ErrorCode::ModelNotFound,
            format!("The model {asked:?} does not exist here; the models are {known}"),
        )
        .with_details(serde_json::json!({ "param": "model" }));
        return app.reject(Route::Model, error, log, false);
    };
    let mut model = listed_models(app)
        .await
        .into_iter()
        .find(|m| m.id == id)
        .unwrap_or_else(|| Model::new(id, unix_now()));
    // Answer with the id that was asked for, as OpenAI does; the alias names the same model.
    model.id = asked;
    http::json(StatusCode::OK, &model)
}

/// Any other `/v1/*` path: `404 not_found` in OpenAI's shape, naming the method and path.
pub(crate) fn not_found(
    app: &App,
    request: &Request<RequestBody>,
    log: &mut RequestLog,
) -> Response<Body> {
    let error = RayError::new(
        ErrorCode::NotFound,
        format!(
            "Invalid URL ({} {}): this gateway serves POST /v1/chat/completions, \
             POST /v1/completions, POST /v1/embeddings, GET /v1/models and \
             GET /v1/models/{{id}}",
            request.method(),
            request.uri().path()
        ),
    );
    app.reject(Route::OpenAiNotFound, error, log, false)
}

/// `%XX` escapes decoded (model ids such as `org/name` arrive as `org%2Fname`); invalid
/// escapes and invalid UTF-8 are kept as they came.
fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(byte) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| raw.to_string())
}

/// What differs between the two generation routes.
trait Endpoint: serde::de::DeserializeOwned {
    /// The route, for the routing rules.
    const ROUTE_KIND: RouteKind;
    const ROUTE: Route;
    type Events: Encoder;
    fn model(&self) -> Option<&str>;
    fn to_infer(&self) -> Result<InferRequest, RayError>;
    /// Checks the values that have a range (`max_tokens`, `temperature`, `top_p`, `n`).
    fn check_limits(&self, limits: DoorLimits) -> Result<(), RayError>;
    /// `n`.
    fn choices(&self) -> u32;
    fn events(&self, model: String, created: u64) -> Self::Events;
    /// The answer to one or (with `n`) several generations.
    fn whole(responses: &[InferResponse], created: u64) -> Response<Body>;
}

impl Endpoint for ChatCompletionRequest {
    const ROUTE: Route = Route::ChatCompletions;
    const ROUTE_KIND: RouteKind = RouteKind::Chat;
    type Events = ChatChunks;

    fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    fn to_infer(&self) -> Result<InferRequest, RayError> {
        ChatCompletionRequest::to_infer(self)
    }

    fn check_limits(&self, limits: DoorLimits) -> Result<(), RayError> {
        ChatCompletionRequest::check_limits(self, limits)
    }

    fn choices(&self) -> u32 {
        ChatCompletionRequest::choices(self)
    }

    fn events(&self, model: String, created: u64) -> ChatChunks {
        ChatChunks {
            model,
            created,
            include_usage: self.include_usage(),
            id: None,
            started: false,
        }
    }

    fn whole(responses: &[InferResponse], created: u64) -> Response<Body> {
        http::json(
            StatusCode::OK,
            &ChatCompletion::from_choices(responses, created),
        )
    }
}

impl Endpoint for CompletionRequest {
    const ROUTE: Route = Route::Completions;
    const ROUTE_KIND: RouteKind = RouteKind::Completions;
    type Events = TextChunks;

    fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    fn to_infer(&self) -> Result<InferRequest, RayError> {
        CompletionRequest::to_infer(self)
    }

    fn check_limits(&self, limits: DoorLimits) -> Result<(), RayError> {
        CompletionRequest::check_limits(self, limits)
    }

    fn choices(&self) -> u32 {
        CompletionRequest::choices(self)
    }

    fn events(&self, model: String, created: u64) -> TextChunks {
        TextChunks {
            model,
            created,
            include_usage: self.include_usage(),
            id: None,
        }
    }

    fn whole(responses: &[InferResponse], created: u64) -> Response<Body> {
        http::json(
            StatusCode::OK,
            &Completion::from_choices(responses, created),
        )
    }
}

/// `POST /v1/chat/completions`.
pub(crate) async fn chat_completions(
    app: &App,
    request: Request<RequestBody>,
    caller: Caller,
    log: &mut RequestLog,
) -> Response<Body> {
    serve::<ChatCompletionRequest>(app, request, caller, log).await
}

/// `POST /v1/completions`.
pub(crate) async fn completions(
    app: &App,
    request: Request<RequestBody>,
    caller: Caller,
    log: &mut RequestLog,
) -> Response<Body> {
    serve::<CompletionRequest>(app, request, caller, log).await
}

/// The ranges an OpenAI-compatible request is held to.
fn door_limits(app: &App, model: Option<&str>) -> DoorLimits {
    let runtime = app.runtime();
    DoorLimits {
        max_output_tokens: runtime.max_output_tokens(model),
        max_n: runtime.config().scheduler.max_choices,
    }
}

/// Parses, checks the model and the ranges, translates, then answers whole or streamed; with
/// `n` above 1, runs the `n` generations side by side, each admitted on its own.
async fn serve<E: Endpoint>(
    app: &App,
    request: Request<RequestBody>,
    caller: Caller,
    log: &mut RequestLog,
) -> Response<Body> {
    let context = request_context(&request, caller, E::ROUTE_KIND, false);
    // `X-Ray-Priority: batch` (or `batch:3`): checked like `/v1/infer`'s `priority` field.
    let priority = request
        .headers()
        .get("x-ray-priority")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let no_cache = asks_no_cache(request.headers());
    let parsed: E = match app.read_json(request).await {
        Ok(parsed) => parsed,
        Err((error, close)) => return app.reject(E::ROUTE, error, log, close),
    };
    let limits = door_limits(app, parsed.model());
    let mut infer = match parsed.check_limits(limits).and_then(|()| parsed.to_infer()) {
        Ok(infer) => infer,
        Err(error) => return app.reject(E::ROUTE, error, log, false),
    };
    // The model by name (id, alias, the backend's modelRef, or `auto` for the rules).
    infer.model = parsed.model().map(String::from);
    infer.priority = priority;
    if no_cache {
        infer.cache = Some(false);
    }
    let n = parsed.choices();
    if infer.stream == Some(true) {
        if n > 1 {
            let error = RayError::new(
                ErrorCode::UnsupportedParameter,
                "n: above 1 is not supported with stream: true; send stream: false for several choices",
            )
            .with_details(serde_json::json!({ "param": "n" }));
            return app.reject(E::ROUTE, error, log, false);
        }
        let created = unix_now();
        let events = |model: &str| parsed.events(model.to_string(), created);
        return app.stream(E::ROUTE, infer, &context, events, log).await;
    }
    let answers = if n > 1 {
        choices(app, infer, &context, n, log).await
    } else {
        whole(app, infer, &context, log).await.map(|r| vec![r])
    };
    match answers {
        Ok(responses) => {
            let routed = responses[0].diagnostics.routing.clone().unwrap_or_default();
            let answer = with_ray_headers(E::whole(&responses, unix_now()), &responses[0]);
            with_routing_headers(answer, &routed)
        }
        Err(error) => app.reject(E::ROUTE, error, log, false),
    }
}

async fn whole(
    app: &App,
    request: InferRequest,
    context: &RequestContext,
    log: &mut RequestLog,
) -> Result<InferResponse, RayError> {
    let response = app.runtime().infer_in(request, context).await?;
    log_response(log, &response);
    Ok(response)
}

/// `n` generations of one request, side by side: each is a request of its own to the
/// runtime (admitted, queued and counted like any other), none is served from the cache or
/// joined with another (they are meant to differ), and a given `seed` becomes `seed + i`. The
/// first failure fails the whole request; the others are dropped, which cancels them.
async fn choices(
    app: &App,
    request: InferRequest,
    context: &RequestContext,
    n: u32,
    log: &mut RequestLog,
) -> Result<Vec<InferResponse>, RayError> {
    let runs = (0..n).map(|i| {
        let mut one = request.clone();
        one.cache = Some(false);
        one.seed = request.seed.map(|seed| seed.saturating_add(i64::from(i)));
        app.runtime().infer_in(one, context)
    });
    let responses = futures_util::future::try_join_all(runs).await?;
    if let Some(first) = responses.first() {
        log_response(log, first);
    }
    Ok(responses)
}

/// `Cache-Control: no-cache` or `no-store` on an OpenAI route: the request neither reads nor
/// writes the result cache, nor joins an identical request in flight (`/v1/infer`'s
/// `"cache": false`, which OpenAI's body has no field for).
fn asks_no_cache(headers: &hyper::HeaderMap) -> bool {
    headers
        .get_all(hyper::header::CACHE_CONTROL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|directive| directive.trim())
        .any(|directive| {
            directive.eq_ignore_ascii_case("no-cache") || directive.eq_ignore_ascii_case("no-store")
        })
}

/// Ray's request id and cache and dedupe outcome, for clients that care.
fn with_ray_headers(mut response: Response<Body>, ray: &InferResponse) -> Response<Body> {
    let headers = response.headers_mut();
    if let Ok(id) = HeaderValue::from_str(&ray.id) {
        headers.insert("x-ray-request-id", id);
    }
    headers.insert(
        "x-ray-cached",
        HeaderValue::from_static(if ray.cached { "true" } else { "false" }),
    );
    headers.insert(
        "x-ray-deduplicated",
        HeaderValue::from_static(if ray.deduplicated { "true" } else { "false" }),
    );
    // A pressure clamp lowered max_tokens (the documented degradation): say so.
    headers.insert(
        "x-ray-degraded",
        HeaderValue::from_static(if ray.degraded { "true" } else { "false" }),
    );
    response
}

fn done() -> Bytes {
    Bytes::from_static(b"data: [DONE]\n\n")
}

/// A failure after the stream started: `data: {"error": …}` and no `[DONE]`, which the OpenAI
/// SDKs raise as an API error.
fn stream_error(error: &RayError) -> Vec<Bytes> {
    vec![sse::encode_json(None, &OpenAiErrorBody::from_error(error))]
}

/// `chat.completion.chunk` events: the role first, then the text, then the finish reason, then
/// (with `include_usage`) the usage, then `[DONE]`.
pub(crate) struct ChatChunks {
    model: String,
    created: u64,
    include_usage: bool,
    id: Option<String>,
    started: bool,
}

impl ChatChunks {
    fn chunk(&self, delta: ChunkDelta, finish: Option<&str>) -> ChatCompletionChunk {
        ChatCompletionChunk {
            id: self.id.clone().unwrap_or_default(),
            object: "chat.completion.chunk".into(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason: finish.map(String::from),
                logprobs: None,
            }],
            usage: None,
        }
    }

    fn role(&mut self, frames: &mut Vec<Bytes>) {
        if !self.started {
            self.started = true;
            let delta = ChunkDelta {
                role: Some("assistant".into()),
                content: Some(String::new()),
                tool_calls: None,
            };
            frames.push(sse::encode_json(None, &self.chunk(delta, None)));
        }
    }
}

impl Encoder for ChatChunks {
    fn begin(&mut self, request_id: &str) {
        self.id = Some(format!("chatcmpl-{request_id}"));
    }

    fn event(&mut self, event: &InferEvent) -> Vec<Bytes> {
        let mut frames = Vec::with_capacity(2);
        match event {
            InferEvent::Delta(delta) => {
                self.role(&mut frames);
                let delta = ChunkDelta {
                    role: None,
                    content: Some(delta.text.clone()),
                    tool_calls: None,
                };
                frames.push(sse::encode_json(None, &self.chunk(delta, None)));
            }
            InferEvent::Done(response) => {
                self.role(&mut frames);
                // Tool calls go out whole, one delta carrying every call with its index, as
                // OpenAI's SDKs accumulate them.
                if let Some(calls) = &response.tool_calls {
                    let calls = calls
                        .iter()
                        .enumerate()
                        .map(|(i, call)| {
                            serde_json::json!({
                                "index": i, "id": call.id, "type": call.kind,
                                "function": {"name": call.function.name,
                                             "arguments": call.function.arguments},
                            })
                        })
                        .collect();
                    let delta = ChunkDelta {
                        tool_calls: Some(calls),
                        ..ChunkDelta::default()
                    };
                    frames.push(sse::encode_json(None, &self.chunk(delta, None)));
                }
                let finish = finish_reason(response.finish_reason);
                let mut last = self.chunk(ChunkDelta::default(), Some(finish));
                // Log probabilities of a streamed answer come in its last chunk with choices.
                last.choices[0].logprobs = logprobs_of(response);
                frames.push(sse::encode_json(None, &last));
                if self.include_usage {
                    let mut chunk = self.chunk(ChunkDelta::default(), None);
                    chunk.choices.clear();
                    chunk.usage = Some(OpenAiUsage::of(response));
                    frames.push(sse::encode_json(None, &chunk));
                }
            }
            InferEvent::Error(body) => {
                let error = RayError::new(body.error.code, body.error.message.clone());
                frames.extend(stream_error(&error));
            }
        }
        frames
    }

    fn error(&mut self, error: &RayError) -> Vec<Bytes> {
        stream_error(error)
    }

    fn end(&mut self) -> Vec<Bytes> {
        vec![done()]
    }
}

/// `text_completion` chunks of the legacy endpoint.
pub(crate) struct TextChunks {
    model: String,
    created: u64,
    include_usage: bool,
    id: Option<String>,
}

impl TextChunks {
    fn chunk(&self, text: String, finish: Option<&str>) -> Completion {
        Completion {
            id: self.id.clone().unwrap_or_default(),
            object: "text_completion".into(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![CompletionChoice {
                index: 0,
                text,
                finish_reason: finish.map(String::from),
                logprobs: None,
            }],
            usage: None,
        }
    }
}

impl Encoder for TextChunks {
    fn begin(&mut self, request_id: &str) {
        self.id = Some(format!("cmpl-{request_id}"));
    }

    fn event(&mut self, event: &InferEvent) -> Vec<Bytes> {
        match event {
            InferEvent::Delta(delta) => {
                vec![sse::encode_json(
                    None,
                    &self.chunk(delta.text.clone(), None),
                )]
            }
            InferEvent::Done(response) => {
                let finish = finish_reason(response.finish_reason);
                let mut frames = vec![sse::encode_json(
                    None,
                    &self.chunk(String::new(), Some(finish)),
                )];
                if self.include_usage {
                    let mut chunk = self.chunk(String::new(), None);
                    chunk.choices.clear();
                    chunk.usage = Some(OpenAiUsage::of(response));
                    frames.push(sse::encode_json(None, &chunk));
                }
                frames
            }
            InferEvent::Error(body) => {
                stream_error(&RayError::new(body.error.code, body.error.message.clone()))
            }
        }
    }

    fn error(&mut self, error: &RayError) -> Vec<Bytes> {
        stream_error(error)
    }

    fn end(&mut self) -> Vec<Bytes> {
        vec![done()]
    }
}
