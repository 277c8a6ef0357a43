//! `POST /v1/embeddings` in OpenAI's shape: parse, run `Runtime::embed_in` (routing to a model,
//! validation, capability, cache, admission and metrics live there), answer
//! the list of vectors. Errors keep Ray's status codes and `Retry-After`, in OpenAI's body
//! shape (`error.message`, `type`, `param`, `code`).

use crate::gateway::http::RequestBody;
use hyper::{Request, Response, StatusCode};
use ray_core::config::RouteKind;
use ray_core::wire::embeddings::EmbeddingsRequest;

use crate::gateway::app::{App, RequestLog, Route};
use crate::gateway::http::{self, Body};

/// `POST /v1/embeddings`.
pub(crate) async fn embeddings(
    app: &App,
    request: Request<RequestBody>,
    caller: crate::gateway::app::Caller,
    log: &mut RequestLog,
) -> Response<Body> {
    let context =
        crate::gateway::app::request_context(&request, caller, RouteKind::Embeddings, false);
    let parsed: EmbeddingsRequest = match app.read_json(request).await {
        Ok(parsed) => parsed,
        Err((error, close)) => return app.reject(Route::Embeddings, error, log, close),
    };
    // The model by name (id, alias, modelRef), else the routing rules for this route.
    match app.runtime().embed_in(parsed, &context).await {
        Ok(response) => http::json(StatusCode::OK, &response),
        Err(error) => app.reject(Route::Embeddings, error, log, false),
    }
}
