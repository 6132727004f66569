//! The review API: the reviewer workflow (`pending`, `propose`, `approve`, `block`) over HTTP
//! with a bearer token, so a review page can follow. It runs on the production side next to the
//! registry (`veil registry serve`); decisions land in the registry files exactly as the CLI
//! writes them, and a held stream resumes within seconds.
//!
//! Responses carry table and column names, types, rules and detector hit rates — never values.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use std::sync::Arc;
use tokio::sync::watch;

use crate::config::Config;
use crate::review::workflow::{self as review, ColumnDecision, ReviewError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("review API: {0}")]
    Config(String),
    #[error("review API: cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("review API: {0}")]
    Serve(std::io::Error),
}

struct AppState {
    cfg: Config,
    token: blake3::Hash,
}

type Reply = (StatusCode, Json<serde_json::Value>);

fn reply(status: StatusCode, v: serde_json::Value) -> Reply {
    (status, Json(v))
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Reply {
    reply(status, serde_json::json!({ "error": message.to_string() }))
}

fn review_error(e: ReviewError) -> Reply {
    let status = match e {
        ReviewError::Invalid(_) | ReviewError::Registry(_) => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, e)
}

/// Bearer-token check; the comparison is constant-time (BLAKE3 hashes compare so).
fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), Reply> {
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if blake3::hash(given.as_bytes()) == state.token {
        Ok(())
    } else {
        Err(error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token",
        ))
    }
}

type JsonBody<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

/// Authorizes the request and unpacks its JSON body (400 with the parser's reason if malformed).
fn accept<T>(state: &AppState, headers: &HeaderMap, body: JsonBody<T>) -> Result<T, Reply> {
    authorize(state, headers)?;
    body.map(|Json(b)| b)
        .map_err(|e| error(StatusCode::BAD_REQUEST, e.body_text()))
}

/// The reply to a decision written into a registry file.
fn written(result: Result<std::path::PathBuf, ReviewError>) -> Reply {
    match result {
        Ok(path) => reply(
            StatusCode::OK,
            serde_json::json!({ "written": path.display().to_string() }),
        ),
        Err(e) => review_error(e),
    }
}

async fn health() -> Reply {
    reply(StatusCode::OK, serde_json::json!({ "status": "ok" }))
}

async fn pending(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Reply {
    if let Err(r) = authorize(&state, &headers) {
        return r;
    }
    match review::pending(&state.cfg).await {
        Ok(items) => reply(StatusCode::OK, serde_json::json!({ "pending": items })),
        Err(e) => review_error(e),
    }
}

async fn propose(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Reply {
    if let Err(r) = authorize(&state, &headers) {
        return r;
    }
    match review::propose(&state.cfg).await {
        Ok(items) => reply(StatusCode::OK, serde_json::json!({ "proposed": items })),
        Err(e) => review_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApproveBody {
    /// `schema.table.column`; absent with `all_proposed`.
    #[serde(default)]
    target: Option<String>,
    #[serde(default = "sensitive")]
    class: String,
    #[serde(default)]
    rule: Option<String>,
    #[serde(default)]
    domain: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    entity: Option<String>,
    #[serde(default)]
    profile: Option<String>,
    #[serde(default)]
    all_proposed: bool,
    by: String,
    #[serde(default)]
    reason: String,
    /// `false`: a safe text column the in-flight scanner must not sample.
    #[serde(default)]
    scan: Option<bool>,
    /// The `redact` rule's mode: `spans` or `whole`.
    #[serde(default)]
    mode: Option<String>,
}

fn sensitive() -> String {
    "sensitive".into()
}

async fn approve(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: JsonBody<ApproveBody>,
) -> Reply {
    let b = match accept(&state, &headers, body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if b.all_proposed {
        return match review::approve_all_proposed(&state.cfg, &b.by).await {
            Ok(n) => reply(StatusCode::OK, serde_json::json!({ "accepted": n })),
            Err(e) => review_error(e),
        };
    }
    let Some(target) = b.target else {
        return error(
            StatusCode::BAD_REQUEST,
            "give target (schema.table.column) or all_proposed",
        );
    };
    let d = ColumnDecision {
        class: b.class,
        rule: b.rule,
        domain: b.domain,
        kind: b.kind,
        entity: b.entity,
        profile: b.profile,
        by: b.by,
        reason: b.reason,
        scan: b.scan,
        mode: b.mode,
        paths: Vec::new(),
    };
    written(review::approve(&state.cfg, &target, &d).await)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BlockBody {
    target: String,
    by: String,
    reason: String,
}

async fn block(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: JsonBody<BlockBody>,
) -> Reply {
    let b = match accept(&state, &headers, body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    written(review::block(&state.cfg, &b.target, &b.by, &b.reason).await)
}

/// The router (also used by tests in-process).
pub fn router(cfg: Config, token: &str) -> Router {
    let state = Arc::new(AppState {
        cfg,
        token: blake3::hash(token.as_bytes()),
    });
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/pending", get(pending))
        .route("/v1/propose", post(propose))
        .route("/v1/approve", post(approve))
        .route("/v1/block", post(block))
        .with_state(state)
}

/// Serves the API on `[api] listen` until `shutdown` turns true.
pub async fn serve(cfg: &Config, mut shutdown: watch::Receiver<bool>) -> Result<(), ApiError> {
    let api = cfg
        .api
        .as_ref()
        .ok_or_else(|| ApiError::Config("missing [api] section".into()))?;
    let token = cfg
        .api_token()
        .map_err(|e| ApiError::Config(e.to_string()))?;
    if token.len() < 16 {
        return Err(ApiError::Config(
            "the API token must be at least 16 characters".into(),
        ));
    }
    let listener = tokio::net::TcpListener::bind(&api.listen)
        .await
        .map_err(|source| ApiError::Listen {
            addr: api.listen.clone(),
            source,
        })?;
    tracing::info!(listen = %api.listen, "review API up");
    axum::serve(listener, router(cfg.clone(), &token))
        .with_graceful_shutdown(async move {
            while shutdown.changed().await.is_ok() {
                if *shutdown.borrow() {
                    break;
                }
            }
        })
        .await
        .map_err(ApiError::Serve)
}

impl crate::error::Classify for ApiError {
    fn class(&self) -> crate::error::ErrorClass {
        use crate::error::ErrorClass;
        match self {
            ApiError::Config(_) | ApiError::Listen { .. } => ErrorClass::Usage,
            ApiError::Serve(e) => e.class(),
        }
    }
}
