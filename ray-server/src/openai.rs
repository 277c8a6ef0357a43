//! The OpenAI-compatible routes: `POST /v1/chat/completions`, `POST /v1/completions` and
//! `GET /v1/models`. They translate to and from Ray's own request and response
//! (`ray_core::wire::openai`) and run through the same runtime as `/v1/infer`: auth, rate limit,
//! cache, dedupe, admission, degradation and metrics all apply. Errors keep Ray's status codes
//! and `Retry-After`, in OpenAI's body shape.

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Request, Response, StatusCode};
use ray_core::RayError;
use ray_core::wire::openai::{
    ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChunkChoice, ChunkDelta,
    Completion, CompletionChoice, CompletionRequest, Model, ModelList, OpenAiErrorBody,
    OpenAiUsage, finish_reason,
};
use ray_core::wire::{InferEvent, InferRequest, InferResponse};

use ray_core::config::RouteKind;
use ray_runtime::RequestContext;

use crate::app::{App, RequestLog, Route, log_response, request_context, with_routing_headers};
use crate::http::{self, Body};
use crate::sse::{self, Encoder};

/// An error in OpenAI's shape, with Ray's status, `Retry-After` and `WWW-Authenticate`.
pub(crate) fn error_response(error: &RayError) -> Response<Body> {
    http::error_response_with(error, &OpenAiErrorBody::from_error(error))
}

fn unix_now() -> u64 {
    ray_core::time::unix_millis_now() / 1000
}

/// `GET /v1/models`: every configured model, with its aliases, role, state and context size
/// (Ray's fields beside OpenAI's).
pub(crate) async fn models(app: &App) -> Response<Body> {
    let runtime = app.runtime();
    let created = unix_now().saturating_sub(runtime.uptime().as_secs());
    let data: Vec<Model> = runtime
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
            ..Model::new(model.id, created)
        })
        .collect();
    let list = ModelList {
        object: "list".into(),
        data,
    };
    http::json(StatusCode::OK, &list)
}

/// What differs between the two generation routes.
trait Endpoint: serde::de::DeserializeOwned {
    /// The route, for the routing rules.
    const ROUTE_KIND: RouteKind;
    const ROUTE: Route;
    type Events: Encoder;
    fn model(&self) -> Option<&str>;
    fn to_infer(&self) -> Result<InferRequest, RayError>;
    fn events(&self, model: String, created: u64) -> Self::Events;
    fn whole(response: &InferResponse, created: u64) -> Response<Body>;
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

    fn events(&self, model: String, created: u64) -> ChatChunks {
        ChatChunks {
            model,
            created,
            include_usage: self.include_usage(),
            id: None,
            started: false,
        }
    }

    fn whole(response: &InferResponse, created: u64) -> Response<Body> {
        http::json(
            StatusCode::OK,
            &ChatCompletion::from_infer(response, created),
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

    fn events(&self, model: String, created: u64) -> TextChunks {
        TextChunks {
            model,
            created,
            include_usage: self.include_usage(),
            id: None,
        }
    }

    fn whole(response: &InferResponse, created: u64) -> Response<Body> {
        http::json(StatusCode::OK, &Completion::from_infer(response, created))
    }
}

/// `POST /v1/chat/completions`.
pub(crate) async fn chat_completions(
    app: &App,
    request: Request<Incoming>,
    log: &mut RequestLog,
) -> Response<Body> {
    serve::<ChatCompletionRequest>(app, request, log).await
}

/// `POST /v1/completions`.
pub(crate) async fn completions(
    app: &App,
    request: Request<Incoming>,
    log: &mut RequestLog,
) -> Response<Body> {
    serve::<CompletionRequest>(app, request, log).await
}

/// Parses, checks the model, translates, then answers whole or streamed.
async fn serve<E: Endpoint>(
    app: &App,
    request: Request<Incoming>,
    log: &mut RequestLog,
) -> Response<Body> {
    let context = request_context(&request, E::ROUTE_KIND, false);
    let parsed: E = match app.read_json(request).await {
        Ok(parsed) => parsed,
        Err((error, close)) => return app.reject(E::ROUTE, error, log, close),
    };
    let mut infer = match parsed.to_infer() {
        Ok(infer) => infer,
        Err(error) => return app.reject(E::ROUTE, error, log, false),
    };
    // The model by name (id, alias, the backend's modelRef, or `auto` for the rules).
    infer.model = parsed.model().map(String::from);
    if infer.stream == Some(true) {
        let created = unix_now();
        let events = |model: &str| parsed.events(model.to_string(), created);
        return app.stream(E::ROUTE, infer, &context, events, log).await;
    }
    match whole(app, infer, &context, log).await {
        Ok(response) => {
            let routed = response.diagnostics.routing.clone().unwrap_or_default();
            let answer = with_ray_headers(E::whole(&response, unix_now()), &response);
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
                };
                frames.push(sse::encode_json(None, &self.chunk(delta, None)));
            }
            InferEvent::Done(response) => {
                self.role(&mut frames);
                let finish = finish_reason(response.finish_reason);
                frames.push(sse::encode_json(
                    None,
                    &self.chunk(ChunkDelta::default(), Some(finish)),
                ));
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
