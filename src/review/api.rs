//! The review API: the reviewer workflow (`pending`, `propose`, `approve`, `block`, `unblock`)
//! over HTTPS, so a review page can follow. It runs on the production side next to the registry
//! (`veil registry serve`); decisions land in the registry files exactly as the CLI writes them,
//! and a held stream resumes within seconds.
//!
//! - Identity: every reviewer has a bearer token of their own (`[api.reviewers]` maps the name
//!   to the token's BLAKE3 digest). The reviewer recorded with a decision is the name the token
//!   maps to; a request that names someone else is refused.
//! - Transport: TLS with rustls when `[api] tls_cert`/`tls_key` are set; otherwise the API
//!   listens only on a loopback address, for a TLS-terminating reverse proxy in front.
//!
//! Responses carry table and column names, types, rules and detector hit rates — never values.
//! Tokens never appear in a log line.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use std::sync::Arc;
use tokio::sync::watch;

use crate::config::Config;
use crate::review::state::AppState;
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
    #[error("review API TLS ({path}): {message}")]
    Tls { path: String, message: String },
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

/// Bearer-token check: the reviewer whose token digest matches.
fn authorize(state: &AppState, headers: &HeaderMap) -> Result<String, Reply> {
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    state.reviewer_of(given).ok_or_else(|| {
        error(
            StatusCode::UNAUTHORIZED,
            "missing or unknown reviewer token",
        )
    })
}

/// The decision's reviewer: the credential's name. A body that names someone else is refused.
fn reviewer(who: String, stated: Option<&str>) -> Result<String, Reply> {
    match stated {
        Some(s) if !s.is_empty() && s != who => Err(error(
            StatusCode::FORBIDDEN,
            format!("\"by\" is taken from your credential ({who}); a request cannot decide as {s}"),
        )),
        _ => Ok(who),
    }
}

type JsonBody<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

/// Authorizes the request and unpacks its JSON body (400 with the parser's reason if
/// malformed); returns the reviewer's name with it.
fn accept<T>(
    state: &AppState,
    headers: &HeaderMap,
    body: JsonBody<T>,
) -> Result<(String, T), Reply> {
    let who = authorize(state, headers)?;
    body.map(|Json(b)| (who, b))
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
    let stale = match review::stale(&state.cfg).await {
        Ok(s) => s,
        Err(e) => return review_error(e),
    };
    match review::pending(&state.cfg).await {
        Ok(items) => reply(
            StatusCode::OK,
            serde_json::json!({ "pending": items, "stale": stale }),
        ),
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
    /// Optional; when given it must be the credential's own name.
    #[serde(default)]
    by: Option<String>,
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
    let (who, b) = match accept(&state, &headers, body) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let by = match reviewer(who, b.by.as_deref()) {
        Ok(by) => by,
        Err(r) => return r,
    };
    if b.all_proposed {
        return match review::approve_all_proposed(&state.cfg, &by).await {
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
        by,
        reason: b.reason,
        scan: b.scan,
        mode: b.mode,
        paths: Vec::new(),
        with: Vec::new(),
    };
    written(review::approve(&state.cfg, &target, &d).await)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BlockBody {
    target: String,
    #[serde(default)]
    by: Option<String>,
    reason: String,
}

/// `block` or `unblock` (a loosening decision: the reason is required), as the credential's
/// reviewer.
async fn block_or_unblock(
    state: &AppState,
    headers: &HeaderMap,
    body: JsonBody<BlockBody>,
    unblock: bool,
) -> Reply {
    let (who, b) = match accept(state, headers, body) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let by = match reviewer(who, b.by.as_deref()) {
        Ok(by) => by,
        Err(r) => return r,
    };
    written(if unblock {
        review::unblock(&state.cfg, &b.target, &by, &b.reason).await
    } else {
        review::block(&state.cfg, &b.target, &by, &b.reason).await
    })
}

async fn block(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: JsonBody<BlockBody>,
) -> Reply {
    block_or_unblock(&state, &headers, body, false).await
}

async fn unblock(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: JsonBody<BlockBody>,
) -> Reply {
    block_or_unblock(&state, &headers, body, true).await
}

/// Who am I: the reviewer name the credential maps to.
async fn whoami(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Reply {
    match authorize(&state, &headers) {
        Ok(who) => reply(StatusCode::OK, serde_json::json!({ "reviewer": who })),
        Err(r) => r,
    }
}

/// The router (also used by tests in-process): the JSON API under `/v1`, the review page under
/// `/review`; `reviewers` are names with their token digests.
pub fn router(cfg: Config, reviewers: Vec<(String, [u8; 32])>) -> Router {
    let secure = cfg
        .api
        .as_ref()
        .is_some_and(|a| a.tls_cert.is_some() && a.tls_key.is_some());
    let state = Arc::new(AppState {
        cfg,
        reviewers: reviewers
            .into_iter()
            .map(|(n, d)| (n, blake3::Hash::from_bytes(d)))
            .collect(),
        sessions: Default::default(),
        secure,
    });
    super::page::routes()
        .route("/v1/health", get(health))
        .route("/v1/whoami", get(whoami))
        .route("/v1/pending", get(pending))
        .route("/v1/propose", post(propose))
        .route("/v1/approve", post(approve))
        .route("/v1/block", post(block))
        .route("/v1/unblock", post(unblock))
        .with_state(state)
}

/// A new reviewer token and its digest for `[api.reviewers]` (`veil registry token NAME`).
pub fn new_reviewer_token() -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    let token = format!("veilr_{}", hex::encode(bytes));
    let digest = format!("blake3:{}", blake3::hash(token.as_bytes()).to_hex());
    (token, digest)
}

/// The rustls server config from `[api] tls_cert` and `tls_key` (PEM).
fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<rustls::ServerConfig, ApiError> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| ApiError::Tls {
            path: p.display().to_string(),
            message: e.to_string(),
        })
    };
    let bad = |p: &std::path::Path, m: String| ApiError::Tls {
        path: p.display().to_string(),
        message: m,
    };
    let pem = read(cert)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| bad(cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(bad(cert, "no certificate in the file".into()));
    }
    let pem = read(key)?;
    let key_der = rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| bad(key, e.to_string()))?
        .ok_or_else(|| bad(key, "no private key in the file".into()))?;
    rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bad(cert, e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key_der)
    .map_err(|e| bad(cert, e.to_string()))
}

/// A TLS listener for axum: TCP connections are accepted and their handshakes run in tasks of
/// their own (a slow client never stalls the accept loop); finished streams queue here.
struct TlsListener {
    local: std::net::SocketAddr,
    ready: tokio::sync::mpsc::Receiver<(
        tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        std::net::SocketAddr,
    )>,
}

impl TlsListener {
    fn new(
        listener: tokio::net::TcpListener,
        config: rustls::ServerConfig,
    ) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let (tx, ready) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (tcp, addr) = match listener.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "review API: accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let done = tx.clone();
                tokio::spawn(async move {
                    let handshake = tokio::time::timeout(
                        std::time::Duration::from_secs(10),
                        acceptor.accept(tcp),
                    )
                    .await;
                    match handshake {
                        Ok(Ok(tls)) => {
                            let _ = done.send((tls, addr)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %addr, error = %e, "review API: TLS handshake failed")
                        }
                        Err(_) => {
                            tracing::debug!(peer = %addr, "review API: TLS handshake timed out")
                        }
                    }
                });
                if tx.is_closed() {
                    break;
                }
            }
        });
        Ok(TlsListener { local, ready })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(x) => x,
            // The accept task never ends while the listener lives.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Serves the API on `[api] listen` until `shutdown` turns true: over TLS with a certificate,
/// else on a loopback address only.
pub async fn serve(cfg: &Config, mut shutdown: watch::Receiver<bool>) -> Result<(), ApiError> {
    let api = cfg
        .api
        .as_ref()
        .ok_or_else(|| ApiError::Config("missing [api] section".into()))?;
    let reviewers = api
        .reviewer_digests()
        .map_err(|e| ApiError::Config(e.to_string()))?;
    let tls = match (&api.tls_cert, &api.tls_key) {
        (Some(c), Some(k)) => Some(tls_config(c, k)?),
        (None, None) => None,
        _ => {
            return Err(ApiError::Config(
                "[api] tls_cert and tls_key go together".into(),
            ));
        }
    };
    let listener = tokio::net::TcpListener::bind(&api.listen)
        .await
        .map_err(|source| ApiError::Listen {
            addr: api.listen.clone(),
            source,
        })?;
    let local = listener.local_addr().map_err(ApiError::Serve)?;
    let app = router(cfg.clone(), reviewers);
    let stop = async move {
        while shutdown.changed().await.is_ok() {
            if *shutdown.borrow() {
                break;
            }
        }
    };
    match tls {
        Some(config) => {
            tracing::info!(listen = %local, "review API up (TLS)");
            let listener = TlsListener::new(listener, config).map_err(ApiError::Serve)?;
            axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
                .map_err(ApiError::Serve)
        }
        None if local.ip().is_loopback() => {
            tracing::info!(listen = %local, "review API up (plain HTTP on loopback: put a TLS proxy in front)");
            axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
                .map_err(ApiError::Serve)
        }
        None => Err(ApiError::Config(format!(
            "[api] listen = {:?} is not a loopback address: serve over TLS (tls_cert, tls_key) or \
             listen on 127.0.0.1 behind a TLS-terminating reverse proxy",
            api.listen
        ))),
    }
}

impl crate::error::Classify for ApiError {
    fn class(&self) -> crate::error::ErrorClass {
        use crate::error::ErrorClass;
        match self {
            ApiError::Config(_) | ApiError::Listen { .. } | ApiError::Tls { .. } => {
                ErrorClass::Usage
            }
            ApiError::Serve(e) => e.class(),
        }
    }
}
