//! The OpenAI-compatible routes: `POST /v1/chat/completions`, `POST /v1/completions` and
//! `GET /v1/models`. They translate to and from Ray's own request and response
//! (`ray_core::wire::openai`) and run through the same runtime as `/v1/infer`: auth, rate limit,
//! cache, dedupe, admission, degradation and metrics all apply. Errors keep Ray's status codes
//! and `Retry-After`, in OpenAI's body shape.

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Request, Response, StatusCode};
use ray_core::wire::openai::{
    ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChunkChoice, ChunkDelta,
    Completion, CompletionChoice, CompletionRequest, Model, ModelList, OpenAiErrorBody,
    OpenAiUsage, finish_reason,
};
use ray_core::wire::{InferEvent, InferRequest, InferResponse};
use ray_core::{ErrorCode, RayError};

use crate::app::{App, RequestLog, Route, log_response};
use crate::http::{self, Body};
use crate::sse::{self, Encoder};

/// An error in OpenAI's shape, with Ray's status, `Retry-After` and `WWW-Authenticate`.
pub(crate) fn error_response(error: &RayError) -> Response<Body> {
    http::error_response_with(error, &OpenAiErrorBody::from_error(error))
}

fn unix_now() -> u64 {
    ray_core::time::unix_millis_now() / 1000
}

/// Refuses a `model` this gateway does not serve (the config's `model.id` and the adapter's
/// `modelRef` are both accepted).
pub(crate) fn check_model(app: &App, model: Option<&str>) -> Result<(), RayError> {
    let Some(model) = model else {
        return Ok(());
    };
    let config = app.runtime().config();
    let model_ref = config.model.adapter.http().map(|h| h.model_ref);
    if model == config.model.id || Some(model) == model_ref {
        return Ok(());
    }
    Err(RayError::new(
        ErrorCode::ModelNotFound,
        format!(
            "The model {model:?} does not exist here; this gateway serves {:?}",
            config.model.id
        ),
    )
    .with_details(serde_json::json!({ "param": "model", "available": [config.model.id] })))
}

/// `GET /v1/models`.
pub(crate) fn models(app: &App) -> Response<Body> {
    let runtime = app.runtime();
    let created = unix_now().saturating_sub(runtime.uptime().as_secs());
    let list = ModelList {
        object: "list".into(),
        data: vec![Model {
            id: runtime.config().model.id.clone(),
            object: "model".into(),
            created,
            owned_by: "ray".into(),
        }],
    };
    http::json(StatusCode::OK, &list)
}

/// What differs between the two generation routes.
trait Endpoint: serde::de::DeserializeOwned {
    const ROUTE: Route;
    type Events: Encoder;
    fn model(&self) -> Option<&str>;
    fn to_infer(&self) -> Result<InferRequest, RayError>;
    fn events(&self, model: String, created: u64) -> Self::Events;
    fn whole(response: &InferResponse, created: u64) -> Response<Body>;
}

impl Endpoint for ChatCompletionRequest {
    const ROUTE: Route = Route::ChatCompletions;
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
    let parsed: E = match app.read_json(request).await {
        Ok(parsed) => parsed,
        Err((error, close)) => return app.reject(E::ROUTE, error, log, close),
    };
    let infer = match check_model(app, parsed.model()).and_then(|()| parsed.to_infer()) {
        Ok(infer) => infer,
        Err(error) => return app.reject(E::ROUTE, error, log, false),
    };
    if infer.stream == Some(true) {
        let model = app.runtime().config().model.id.clone();
        let events = parsed.events(model, unix_now());
        return app.stream(E::ROUTE, infer, events, log).await;
    }
    match whole(app, infer, log).await {
        Ok(response) => with_ray_headers(E::whole(&response, unix_now()), &response),
        Err(error) => app.reject(E::ROUTE, error, log, false),
    }
}

async fn whole(
    app: &App,
    request: InferRequest,
    log: &mut RequestLog,
) -> Result<InferResponse, RayError> {
    let response = app.runtime().infer(request).await?;
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
