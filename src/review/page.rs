//! The reviewer's web page, served by `veil registry serve` with the JSON API (same process, same
//! reviewer credentials): what is held and since when, retained WAL, each pending column with
//! its proposal and evidence (detector hit rates, name hint, sample size — never a value),
//! approve / change the rule / block with a reason, and each table's decisions with their history
//! from the audit archive.
//!
//! Server-rendered HTML (askama templates under `templates/review/`), no JavaScript, plain forms
//! with labels (keyboard first). A browser cannot send a bearer header from a form, so the
//! reviewer's token is exchanged once for a session: an `HttpOnly`, `SameSite=Strict` cookie
//! holding a random session id (`Secure` when the API serves TLS); every form carries the
//! session's CSRF token (the sign-in form a nonce from its own cookie). The token never goes
//! into a URL or a log line; responses are `no-store` and framing is refused.

use askama::Template;
use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::state::{AppState, Session};
use super::status;
use super::workflow::{self as review, ColumnDecision, Why};
use crate::deid::registry::{Decision, Registry};

const SESSION_COOKIE: &str = "veil_session";
const LOGIN_COOKIE: &str = "veil_login";
/// A session ends this long after sign-in.
const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
const RULES: &[&str] = &[
    "tokenize",
    "date_token",
    "ssn",
    "email",
    "surrogate",
    "date_shift",
    "scrub",
    "year_only",
    "zip3",
    "age_cap",
    "redact",
    "json",
];

fn random_hex() -> String {
    let mut b = [0u8; 32];
    rand::fill(&mut b);
    hex::encode(b)
}

/// Equal strings, compared without an early exit.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && blake3::hash(a.as_bytes()) == blake3::hash(b.as_bytes())
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

fn set_cookie(name: &str, value: &str, max_age: u64, secure: bool) -> HeaderValue {
    let v = format!(
        "{name}={value}; HttpOnly; SameSite=Strict; Path=/review; Max-Age={max_age}{}",
        if secure { "; Secure" } else { "" }
    );
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// An HTML response with the page's security headers.
fn html(status: StatusCode, body: String, cookies: Vec<HeaderValue>) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    for c in cookies {
        h.append(header::SET_COOKIE, c);
    }
    r
}

/// `303 See Other` to `to` (after a form), with cookies.
fn see_other(to: &str, cookies: Vec<HeaderValue>) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    let h = r.headers_mut();
    h.insert(
        header::LOCATION,
        HeaderValue::from_str(to).unwrap_or_else(|_| HeaderValue::from_static("/review")),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for c in cookies {
        h.append(header::SET_COOKIE, c);
    }
    r
}

fn render(t: &impl Template) -> String {
    t.render()
        .unwrap_or_else(|e| format!("<!doctype html><p>page error: {e}</p>"))
}

/// A query-string value: every byte but unreserved ones percent-encoded.
fn url_value(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The signed-in reviewer and the session's CSRF token.
fn signed_in(state: &AppState, headers: &HeaderMap) -> Option<(String, String, String)> {
    let id = cookie(headers, SESSION_COOKIE)?;
    let mut sessions = state.sessions.lock();
    let now = Instant::now();
    sessions.retain(|_, s| s.expires > now);
    let s = sessions.get(&id)?;
    Some((id, s.reviewer.clone(), s.csrf.clone()))
}

#[derive(Template)]
#[template(path = "review/login.html")]
struct LoginPage {
    csrf: String,
    error: Option<String>,
}

fn login_page(state: &AppState, status: StatusCode, error: Option<String>) -> Response {
    let nonce = random_hex();
    let page = render(&LoginPage {
        csrf: nonce.clone(),
        error,
    });
    html(
        status,
        page,
        vec![set_cookie(LOGIN_COOKIE, &nonce, 900, state.secure)],
    )
}

async fn login_form(State(state): State<Arc<AppState>>) -> Response {
    login_page(&state, StatusCode::OK, None)
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
    csrf: String,
}

async fn login(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let nonce = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if nonce.is_empty() || !same(&nonce, &f.csrf) {
        return login_page(
            &state,
            StatusCode::FORBIDDEN,
            Some("The sign-in form expired or came from elsewhere; sign in again.".into()),
        );
    }
    let Some(who) = state.reviewer_of(f.token.trim()) else {
        tracing::info!("review page: sign-in refused (unknown token)");
        return login_page(
            &state,
            StatusCode::UNAUTHORIZED,
            Some("Unknown reviewer token.".into()),
        );
    };
    let id = random_hex();
    state.sessions.lock().insert(
        id.clone(),
        Session {
            reviewer: who.clone(),
            csrf: random_hex(),
            expires: Instant::now() + SESSION_TTL,
            flash: None,
        },
    );
    tracing::info!(reviewer = %who, "review page: signed in");
    see_other(
        "/review",
        vec![
            set_cookie(SESSION_COOKIE, &id, SESSION_TTL.as_secs(), state.secure),
            set_cookie(LOGIN_COOKIE, "", 0, state.secure),
        ],
    )
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn logout(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Some((id, _, csrf)) = signed_in(&state, &headers)
        && same(&csrf, &f.csrf)
    {
        state.sessions.lock().remove(&id);
    }
    see_other(
        "/review/login",
        vec![set_cookie(SESSION_COOKIE, "", 0, state.secure)],
    )
}

struct SlotView {
    slot: String,
    active: bool,
    confirmed_lsn: String,
    lag: String,
    retained: String,
}

struct PendingView {
    anchor: String,
    target: String,
    table: String,
    table_link: String,
    column: String,
    type_name: String,
    why: String,
    has_proposal: bool,
    class: String,
    rule: String,
    domain: String,
    identifier_class: String,
    confidence: String,
    hit_rates: String,
    name_hint: String,
    sampled: usize,
    notes: String,
    shares: String,
    /// The `date_token` rule's other key columns, comma-separated.
    with: String,
    /// Weakest first: 0 blocked, 1 low confidence, 2 evidence disagreeing with the proposal,
    /// 3 medium, 4 high.
    rank: u8,
    /// Why it sorts where it does (shown beside the proposal).
    weakness: String,
}

/// One table's pending columns, weakest proposal first.
struct TableGroup {
    table: String,
    anchor: String,
    link: String,
    rank: u8,
    proposals: usize,
    items: Vec<PendingView>,
}

/// How weak a proposal is (see [`PendingView::rank`]), and why.
fn weakness(p: &review::Pending) -> (u8, String) {
    let Some(pr) = &p.proposal else {
        return (0, "no proposal".into());
    };
    if pr.class == "blocked" {
        return (0, "proposed blocked".into());
    }
    if pr.confidence == "low" {
        return (1, "low confidence".into());
    }
    let fired = pr.hit_rates.iter().any(|(_, r)| *r >= 0.1);
    let id_name = pr.name_hint.as_deref().is_some_and(|h| h != "safe kind");
    let safe = pr.class == "safe";
    if safe && (fired || id_name) {
        return (
            2,
            "proposed safe while a detector or the name says identifier".into(),
        );
    }
    if !safe && pr.name_hint.as_deref() == Some("safe kind") {
        return (2, "proposed sensitive while the name says safe".into());
    }
    match pr.confidence.as_str() {
        "high" => (4, "high confidence".into()),
        _ => (3, "medium confidence".into()),
    }
}

/// Pending columns grouped by table; tables and columns weakest first.
fn groups(pending: &[review::Pending]) -> Vec<TableGroup> {
    let mut by_table: Vec<TableGroup> = Vec::new();
    for p in pending {
        let v = pending_view(p);
        match by_table.iter_mut().find(|g| g.table == p.table) {
            Some(g) => g.items.push(v),
            None => by_table.push(TableGroup {
                table: p.table.clone(),
                anchor: anchor(&p.table),
                link: url_value(&p.table),
                rank: 0,
                proposals: 0,
                items: vec![v],
            }),
        }
    }
    for g in &mut by_table {
        g.items.sort_by_key(|v| v.rank);
        g.rank = g.items.iter().map(|v| v.rank).min().unwrap_or(0);
        g.proposals = g.items.iter().filter(|v| v.has_proposal).count();
    }
    by_table.sort_by(|a, b| a.rank.cmp(&b.rank).then_with(|| a.table.cmp(&b.table)));
    by_table
}

#[derive(Template)]
#[template(path = "review/overview.html")]
struct OverviewPage {
    reviewer: String,
    csrf: String,
    flash: Option<String>,
    state: String,
    state_class: String,
    slots: Vec<SlotView>,
    held: Vec<status::HeldState>,
    pending: usize,
    groups: Vec<TableGroup>,
    stale: Vec<String>,
    tables: Vec<(String, String)>,
    rules: &'static [&'static str],
}

fn why_text(w: &Why) -> String {
    match w {
        Why::NewTable => "New table.".into(),
        Why::NewColumn => "New column.".into(),
        Why::TypeChanged { registry_type } => {
            format!("Its type changed (the registry decided it as {registry_type}).")
        }
        Why::Rebound { why } => format!("Not the column the registry decided: {why}."),
        Why::Gone { reason } => {
            format!("The stream is held on a table production no longer has ({reason}): block it.")
        }
    }
}

fn anchor(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

fn pending_view(p: &review::Pending) -> PendingView {
    let target = if p.column == "*" || p.column.is_empty() {
        p.table.clone()
    } else {
        format!("{}.{}", p.table, p.column)
    };
    let mut v = PendingView {
        anchor: anchor(&target),
        target,
        table: p.table.clone(),
        table_link: url_value(&p.table),
        column: p.column.clone(),
        type_name: p.type_name.clone(),
        why: why_text(&p.why),
        has_proposal: p.proposal.is_some(),
        class: "sensitive".into(),
        rule: String::new(),
        domain: String::new(),
        identifier_class: String::new(),
        confidence: String::new(),
        hit_rates: String::new(),
        name_hint: String::new(),
        sampled: 0,
        notes: String::new(),
        shares: p.shares_domain_with.join(", "),
        with: String::new(),
        rank: 0,
        weakness: String::new(),
    };
    (v.rank, v.weakness) = weakness(p);
    if let Some(pr) = &p.proposal {
        v.class = pr.class.clone();
        v.rule = pr.rule.clone().unwrap_or_default();
        v.domain = pr.domain.clone().unwrap_or_default();
        v.identifier_class = pr
            .identifier_class
            .clone()
            .unwrap_or_else(|| "none (safe)".into());
        v.confidence = pr.confidence.clone();
        let mut rates: Vec<(&String, &f64)> =
            pr.hit_rates.iter().filter(|(_, r)| **r > 0.0).collect();
        rates.sort_by(|a, b| b.1.total_cmp(a.1));
        v.hit_rates = if rates.is_empty() {
            "no detector fired".into()
        } else {
            rates
                .iter()
                .map(|(d, r)| format!("{d} {:.0}%", *r * 100.0))
                .collect::<Vec<_>>()
                .join(", ")
        };
        v.name_hint = pr.name_hint.clone().unwrap_or_else(|| "none".into());
        v.sampled = pr.sampled;
        v.notes = pr.notes.join("; ");
        v.with = pr.with.join(", ");
    }
    v
}

fn take_flash(state: &AppState, id: &str) -> Option<String> {
    state
        .sessions
        .lock()
        .get_mut(id)
        .and_then(|s| s.flash.take())
}

async fn overview(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let Some((id, reviewer, csrf)) = signed_in(&state, &headers) else {
        return see_other("/review/login", Vec::new());
    };
    let cfg = &state.cfg;
    let (st, slots, held) = match status::stream_state(cfg).await {
        Ok(s) => (
            s.state.to_owned(),
            s.slots
                .into_iter()
                .map(|x| SlotView {
                    lag: status::human_bytes(x.lag_bytes),
                    retained: status::human_bytes(x.retained_bytes),
                    slot: x.slot,
                    active: x.active,
                    confirmed_lsn: x.confirmed_lsn,
                })
                .collect(),
            s.held,
        ),
        Err(e) => (format!("unknown ({e})"), Vec::new(), Vec::new()),
    };
    let mut flash = take_flash(&state, &id);
    let pending = match review::pending(cfg).await {
        Ok(p) => p,
        Err(e) => {
            flash = Some(format!("Pending items could not be read: {e}"));
            Vec::new()
        }
    };
    let stale = review::stale(cfg)
        .await
        .map(|v| {
            v.into_iter()
                .map(|s| format!("{}.{} ({})", s.table, s.column, s.type_name))
                .collect()
        })
        .unwrap_or_default();
    let tables = Registry::load(&cfg.registry.dir)
        .map(|r| r.tables.keys().map(|t| (t.clone(), url_value(t))).collect())
        .unwrap_or_default();
    let page = OverviewPage {
        reviewer,
        csrf,
        flash,
        state_class: anchor(&st),
        state: st,
        slots,
        held,
        pending: pending.len(),
        groups: groups(&pending),
        stale,
        tables,
        rules: RULES,
    };
    html(StatusCode::OK, render(&page), Vec::new())
}

struct ColumnView {
    name: String,
    type_name: String,
    class: String,
    /// The rule as the registry describes it, and its name (what the form sends).
    rule: String,
    rule_name: String,
    domain: String,
    reviewer: String,
    reason: String,
}

struct HistoryView {
    at: String,
    column: String,
    reviewer: String,
    before: String,
    after: String,
    reason: String,
}

#[derive(Template)]
#[template(path = "review/table.html")]
struct TablePage {
    reviewer: String,
    csrf: String,
    table: String,
    link: String,
    blocked: bool,
    columns: Vec<ColumnView>,
    history: Vec<HistoryView>,
    history_error: Option<String>,
    rules: &'static [&'static str],
}

#[derive(Deserialize)]
struct TableQuery {
    name: String,
}

/// The table's decision records in the audit archive, newest first.
async fn history(cfg: &crate::config::Config, table: &str) -> Result<Vec<HistoryView>, String> {
    let client = crate::audit::archive::archive_client(cfg)
        .await
        .map_err(|e| format!("History needs the audit archive: {e}"))?;
    let rows = client
        .query(
            "SELECT to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), body::text \
             FROM veil_audit.records WHERE kind = 'decision' AND body->>'table' = $1 \
             ORDER BY at DESC, seq DESC LIMIT 500",
            &[&table],
        )
        .await
        .map_err(|e| crate::pg::errors::PgError::new("read decision history", &e).to_string())?;
    let both = |class: &str, rule: &str| match (class, rule) {
        ("", "") => "—".to_owned(),
        (c, "") => c.to_owned(),
        (c, r) => format!("{c}, {r}"),
    };
    Ok(rows
        .iter()
        .map(|r| {
            let b: serde_json::Value =
                serde_json::from_str(&r.get::<_, String>(1)).unwrap_or_default();
            let s = |k: &str| b.get(k).and_then(|v| v.as_str()).unwrap_or("").to_owned();
            HistoryView {
                at: r.get(0),
                column: s("column"),
                reviewer: s("reviewer"),
                before: both(&s("previous_class"), &s("previous_rule")),
                after: both(&s("class"), &s("rule")),
                reason: s("reason"),
            }
        })
        .collect())
}

async fn table_page(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<TableQuery>,
) -> Response {
    let Some((_, reviewer, csrf)) = signed_in(&state, &headers) else {
        return see_other("/review/login", Vec::new());
    };
    let registry = match Registry::load(&state.cfg.registry.dir) {
        Ok(r) => r,
        Err(e) => {
            return html(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("<!doctype html><p>The registry does not load: {e}</p>"),
                Vec::new(),
            );
        }
    };
    let Some(entry) = registry.table(&q.name) else {
        return html(
            StatusCode::NOT_FOUND,
            "<!doctype html><p>No such table in the registry. <a href=\"/review\">Overview</a></p>"
                .into(),
            Vec::new(),
        );
    };
    let columns = entry
        .columns
        .iter()
        .map(|(name, c)| {
            let (class, rule, domain) = match &c.decision {
                Decision::Blocked => ("blocked".to_owned(), String::new(), String::new()),
                Decision::Publish(crate::deid::registry::Rule::Keep) => {
                    ("safe".to_owned(), String::new(), String::new())
                }
                Decision::Publish(r) => (
                    "sensitive".to_owned(),
                    r.describe(),
                    r.domain().unwrap_or("").to_owned(),
                ),
            };
            ColumnView {
                name: name.clone(),
                type_name: c.type_name.clone(),
                class,
                rule_name: rule.split('(').next().unwrap_or("").to_owned(),
                rule,
                domain,
                reviewer: c.reviewer.clone().unwrap_or_default(),
                reason: c.reason.clone().unwrap_or_default(),
            }
        })
        .collect();
    let (history, history_error) = match history(&state.cfg, &q.name).await {
        Ok(h) => (h, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    let page = TablePage {
        reviewer,
        csrf,
        link: format!("/review/table?name={}", url_value(&q.name)),
        table: q.name,
        blocked: entry.blocked,
        columns,
        history,
        history_error,
        rules: RULES,
    };
    html(StatusCode::OK, render(&page), Vec::new())
}

#[derive(Deserialize)]
struct DecideForm {
    csrf: String,
    target: String,
    action: String,
    #[serde(default)]
    class: String,
    #[serde(default)]
    rule: String,
    #[serde(default)]
    domain: String,
    #[serde(default)]
    reason: String,
    /// The `date_token` rule's other key columns, comma-separated.
    #[serde(default)]
    with: String,
    /// Where to go afterwards (a page of this site only).
    #[serde(default)]
    back: String,
}

async fn decide(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Form(f): Form<DecideForm>,
) -> Response {
    let Some((id, reviewer, csrf)) = signed_in(&state, &headers) else {
        return see_other("/review/login", Vec::new());
    };
    if !same(&csrf, &f.csrf) {
        return html(
            StatusCode::FORBIDDEN,
            "<!doctype html><p>This form is not from your session; reload the page.</p>".into(),
            Vec::new(),
        );
    }
    let opt = |s: &str| {
        let s = s.trim();
        (!s.is_empty()).then(|| s.to_owned())
    };
    // A rule shown as `tokenize(patient_id)` on the table page is sent back by its name.
    let rule = opt(f.rule.split('(').next().unwrap_or(""));
    let result = match f.action.as_str() {
        "approve" => {
            let d = ColumnDecision {
                class: if f.class == "safe" {
                    "safe"
                } else {
                    "sensitive"
                }
                .into(),
                rule: if f.class == "safe" {
                    None
                } else {
                    rule.clone()
                },
                domain: if f.class == "safe" {
                    None
                } else {
                    opt(&f.domain)
                },
                kind: None,
                entity: None,
                profile: None,
                by: reviewer.clone(),
                reason: f.reason.trim().to_owned(),
                scan: None,
                mode: None,
                paths: Vec::new(),
                with: if f.class == "safe" {
                    Vec::new()
                } else {
                    f.with
                        .split(',')
                        .map(str::trim)
                        .filter(|c| !c.is_empty())
                        .map(str::to_owned)
                        .collect()
                },
            };
            review::approve(&state.cfg, &f.target, &d).await.map(|_| {
                match (&d.class[..], &d.rule) {
                    ("safe", _) => format!("{} approved as safe.", f.target),
                    (_, Some(r)) => format!("{} approved: sensitive, rule {r}.", f.target),
                    _ => format!("{} approved: sensitive.", f.target),
                }
            })
        }
        // Every pending proposal of one table at once, under the same check as each approve.
        "accept-table" => review::approve_table_proposals(&state.cfg, &f.target, &reviewer)
            .await
            .map(|n| format!("{}: {n} proposals accepted.", f.target)),
        "block" => review::block(&state.cfg, &f.target, &reviewer, f.reason.trim())
            .await
            .map(|_| format!("{} blocked: nothing of it leaves production.", f.target)),
        other => Err(review::ReviewError::Invalid(format!(
            "unknown action {other:?}"
        ))),
    };
    let flash = match result {
        Ok(m) => {
            tracing::info!(reviewer = %reviewer, target = %f.target, action = %f.action, "review page: decision written");
            format!("{m} The stream picks it up within seconds.")
        }
        Err(e) => format!("Not written: {e}"),
    };
    if let Some(s) = state.sessions.lock().get_mut(&id) {
        s.flash = Some(flash);
    }
    let back = if f.back.starts_with("/review") && !f.back.starts_with("//") {
        f.back.as_str()
    } else {
        "/review"
    };
    see_other(back, Vec::new())
}

async fn style() -> Response {
    let mut r = include_str!("../../templates/review/style.css").into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    r
}

/// The page's routes (merged into the API's router).
pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(|| async { see_other("/review", Vec::new()) }))
        .route("/review", get(overview))
        .route("/review/login", get(login_form).post(login))
        .route("/review/logout", post(logout))
        .route("/review/table", get(table_page))
        .route("/review/decide", post(decide))
        .route("/review/style.css", get(style))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_and_values() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; veil_session=abc; b=2"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&h, LOGIN_COOKIE), None);
        assert_eq!(url_value("public.\"a b\""), "public.%22a%20b%22");
        assert!(same("x1", "x1") && !same("x1", "x2") && !same("x", "xx"));
        let c = set_cookie(SESSION_COOKIE, "id", 10, true);
        let c = c.to_str().unwrap();
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Secure"));
    }
}
