//! The admin HTTP server of `seamwatch run`: health and readiness probes,
//! Prometheus metrics, the live findings feed (recent findings as JSON, new
//! ones as Server-Sent Events) and a one-page web view of both.
//!
//! It binds to `127.0.0.1:9464` by default. Bound to any other address it
//! requires a bearer token (`[admin] token_env` or `token_file`) on every
//! endpoint but the probes (`/healthz`, `/readyz`: an orchestrator's probes
//! send no token, and they reveal only up or not), and refuses to start
//! without one. The page and
//! `EventSource` cannot send headers, so `?access_token=` is accepted too.
//!
//! | path | what |
//! |---|---|
//! | `/healthz` | 200 while the process runs |
//! | `/readyz` | 200 when partitions are assigned and the outbox takes findings, else 503 and why |
//! | `/metrics` | Prometheus text |
//! | `/findings?since=&after=&limit=&<filter>` | recent findings, oldest first; with `after` (a position), the ones beyond it |
//! | `/findings/stream?after=&<filter>` | Server-Sent Events, one finding each, `id` = its position (`<feed>-<seq>`); `Last-Event-ID` or `after` resumes |
//!
//! Without a token (loopback), requests must name a loopback host, which
//! keeps a web page that rebinds its own name to 127.0.0.1 out.
//! | `/api/overview` | counts of the last hour and the pipeline's health, for the page |
//! | `/` | the web view |

pub mod filter;
pub mod hub;
mod prom;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use futures_util::Stream;
use serde::Deserialize;
use subtle::ConstantTimeEq;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;

pub use filter::{FilterError, FindingFilter};
pub use hub::{FindingsHub, HubSink, Published};

use crate::alert::config::Secret;
use crate::alert::deliver::SinkStats;
use crate::alert::store::Outbox;
use crate::analyze::Analyzer;
use crate::pipeline::Metrics;

/// `[admin]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Serve at all.
    pub enabled: bool,
    pub listen: SocketAddr,
    /// Environment variable holding the bearer token.
    pub token_env: Option<String>,
    /// File holding the bearer token.
    pub token_file: Option<PathBuf>,
    /// Findings kept for `/findings` and resuming clients.
    pub recent: usize,
    /// A source (topic and cloud) with no event for this long is silent.
    #[serde(with = "humantime_serde")]
    pub silent_after: Duration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            token_env: None,
            token_file: None,
            recent: 1000,
            silent_after: Duration::from_secs(900),
        }
    }
}

/// Why the admin server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(
        "the admin server listens on {0}, beyond loopback: set [admin] token_env or token_file so that it requires a token"
    )]
    TokenRequired(SocketAddr),
    #[error("reading the admin token: {0}")]
    Token(String),
    #[error("binding the admin server to {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl AdminConfig {
    /// The token, if one is configured; an error when the server would be
    /// reachable beyond loopback without one.
    pub fn token(&self) -> Result<Option<Secret>, AdminError> {
        let token = Secret::load(self.token_env.as_deref(), self.token_file.as_deref())
            .map_err(|e| AdminError::Token(e.to_string()))?;
        match token {
            Some(t) if t.expose().is_empty() => Err(AdminError::Token("the token is empty".into())),
            Some(t) => Ok(Some(t)),
            None if !self.listen.ip().is_loopback() => Err(AdminError::TokenRequired(self.listen)),
            None => Ok(None),
        }
    }
}

/// What the endpoints read.
pub struct AdminState {
    pub hub: Arc<FindingsHub>,
    pub metrics: Arc<Metrics>,
    pub analyzer: Option<Arc<Analyzer>>,
    pub outbox: Option<Arc<Outbox>>,
    pub sinks: Vec<Arc<SinkStats>>,
    pub token: Option<Secret>,
    pub silent_after: Duration,
}

/// The router; serve it with [`serve`].
pub fn router(state: Arc<AdminState>) -> Router {
    let protected = Router::new()
        .route("/", get(page))
        .route("/metrics", get(metrics))
        .route("/findings", get(findings))
        .route("/findings/stream", get(stream))
        .route("/api/overview", get(overview))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .merge(protected)
        .with_state(state)
}

/// Binds `addr` and serves until `shutdown` completes; returns the bound
/// address (port 0 picks one) and the server task.
pub async fn serve(
    addr: SocketAddr,
    state: Arc<AdminState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), AdminError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| AdminError::Bind { addr, source })?;
    let bound = listener.local_addr().unwrap_or(addr);
    let app = router(state);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "admin server stopped");
        }
    });
    tracing::info!(addr = %bound, "admin server listening");
    Ok((bound, task))
}

/// A loopback host name, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

async fn auth(State(state): State<Arc<AdminState>>, request: Request, next: Next) -> Response {
    let Some(token) = &state.token else {
        // No token: loopback only. A page elsewhere that rebinds its own
        // name to 127.0.0.1 still sends its own name as the Host.
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !is_loopback_host(host) {
            return (
                StatusCode::FORBIDDEN,
                "without a token, only loopback host names are served\n",
            )
                .into_response();
        }
        return next.run(request).await;
    };
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let query = request.uri().query().and_then(|q| {
        url_pairs(q)
            .into_iter()
            .find(|(k, _)| k == "access_token")
            .map(|(_, v)| v)
    });
    let given = bearer.or(query).unwrap_or_default();
    if bool::from(given.as_bytes().ct_eq(token.expose().as_bytes())) {
        next.run(request).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "a bearer token is required\n",
        )
            .into_response()
    }
}

fn url_pairs(query: &str) -> Vec<(String, String)> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query).unwrap_or_default()
}

async fn page() -> Html<&'static str> {
    Html(include_str!("page.html"))
}

/// Why the pipeline is not ready, if it is not.
fn not_ready(state: &AdminState) -> Vec<&'static str> {
    let mut why = Vec::new();
    if state.metrics.assigned.load(Ordering::Relaxed) == 0 {
        why.push("no partition assigned");
    }
    if state.metrics.failed.load(Ordering::Relaxed) {
        why.push("the outbox refused findings");
    }
    why
}

async fn readyz(State(state): State<Arc<AdminState>>) -> Response {
    let why = not_ready(&state);
    if why.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", why.join("; ")),
        )
            .into_response()
    }
}

async fn metrics(State(state): State<Arc<AdminState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        prom::render(&state),
    )
        .into_response()
}

fn bad_request(e: impl std::fmt::Display) -> Response {
    (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response()
}

fn filter_of(pairs: &[(String, String)]) -> Result<FindingFilter, FilterError> {
    FindingFilter::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

async fn findings(
    State(state): State<Arc<AdminState>>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let filter = match filter_of(&pairs) {
        Ok(f) => f,
        Err(e) => return bad_request(e),
    };
    let get = |key: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let since = match get("since").map(DateTime::parse_from_rfc3339) {
        Some(Ok(t)) => Some(t.with_timezone(&Utc)),
        Some(Err(e)) => return bad_request(format!("since: {e}")),
        None => None,
    };
    let after = match get("after").map(|v| state.hub.resume_after(v)) {
        Some(None) => return bad_request("after: expected a position (<feed>-<seq>) or a number"),
        Some(Some(n)) => Some(n),
        None => None,
    };
    let limit = match get("limit").map(str::parse::<usize>) {
        Some(Err(e)) => return bad_request(format!("limit: {e}")),
        Some(Ok(n)) => n,
        None => 100,
    };
    axum::Json(state.hub.recent(&filter, since, after, limit)).into_response()
}

fn event_of(p: &Published) -> Event {
    Event::default()
        .id(p.position())
        .event("finding")
        .json_data(p)
        .unwrap_or_else(|_| Event::default().comment("unencodable finding"))
}

async fn stream(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let filter = match filter_of(&pairs) {
        Ok(f) => f,
        Err(e) => return bad_request(e),
    };
    // Subscribe first, then read the ring: nothing falls between the two
    // (a finding in both is sent once: the live copy is skipped by number).
    let live = BroadcastStream::new(state.hub.subscribe());
    // Where the client left off: the SSE reconnect header, or `?after=`
    // (a new EventSource cannot send the header).
    let position = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| {
            pairs
                .iter()
                .find(|(k, _)| k == "after")
                .map(|(_, v)| v.clone())
        });
    let resume = match position.as_deref().map(|p| state.hub.resume_after(p)) {
        Some(None) => return bad_request("after: expected a position (<feed>-<seq>) or a number"),
        Some(Some(n)) => Some(n),
        None => None,
    };
    let backlog = match resume {
        Some(after) => state.hub.recent(&filter, None, Some(after), usize::MAX),
        None => Vec::new(),
    };
    let mut last = backlog.last().map_or(resume.unwrap_or(0), |p| p.seq);
    let backlog = tokio_stream::iter(backlog.into_iter().map(|p| Ok(event_of(&p))));
    let live = live.filter_map(move |item| match item {
        Ok(p) if p.seq > last && filter.matches(&p.finding) => {
            last = p.seq;
            Some(Ok(event_of(&p)))
        }
        Ok(_) => None,
        // A subscriber too slow for the broadcast buffer is told so.
        Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n)) => {
            Some(Ok(Event::default().event("lagged").data(n.to_string())))
        }
    });
    let events: std::pin::Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>> =
        Box::pin(backlog.chain(live));
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// The pipeline's health, for the page.
#[derive(serde::Serialize)]
struct Health {
    ready: bool,
    not_ready: Vec<&'static str>,
    assigned_partitions: u64,
    commit_lag: u64,
    lag_by_partition: Vec<(String, i32, i64)>,
    /// Sources (topic, cloud) without events for `silent_after`, and since
    /// how many seconds.
    silent_sources: Vec<(String, &'static str, i64)>,
    outbox_queued: u64,
    outbox_dead: u64,
    delivery_failures: u64,
}

async fn overview(State(state): State<Arc<AdminState>>) -> Response {
    let m = &state.metrics;
    let mut lag: Vec<(String, i32, i64)> = m
        .commit_lag
        .iter()
        .map(|e| (e.key().0.clone(), e.key().1, *e.value()))
        .collect();
    lag.sort();
    let now = Utc::now().timestamp_millis();
    let silent_ms = state.silent_after.as_millis() as i64;
    let mut silent: Vec<(String, &'static str, i64)> = m
        .last_seen
        .iter()
        .filter(|e| now - *e.value() >= silent_ms)
        .map(|e| (e.key().0.clone(), e.key().1, (now - *e.value()) / 1000))
        .collect();
    silent.sort();
    let (queued, dead) = state
        .outbox
        .as_ref()
        .and_then(|o| o.depth().ok())
        .map_or((0, 0), |d| {
            d.values().fold((0, 0), |(q, x), (a, b)| (q + a, x + b))
        });
    let why = not_ready(&state);
    let health = Health {
        ready: why.is_empty(),
        not_ready: why,
        assigned_partitions: m.assigned.load(Ordering::Relaxed),
        commit_lag: lag.iter().map(|(_, _, n)| (*n).max(0) as u64).sum(),
        lag_by_partition: lag,
        silent_sources: silent,
        outbox_queued: queued,
        outbox_dead: dead,
        delivery_failures: state
            .sinks
            .iter()
            .map(|s| s.failed.load(Ordering::Relaxed))
            .sum(),
    };
    axum::Json(serde_json::json!({
        "last_hour": state.hub.last_hour(),
        "health": health,
        "events": m.total_events(),
        "findings": m.findings.load(Ordering::Relaxed),
    }))
    .into_response()
}
