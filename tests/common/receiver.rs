//! A webhook receiver on loopback for the delivery tests: a real HTTP server
//! (axum on `127.0.0.1`, on a tokio runtime of its own) that records every
//! request it gets and answers as the test tells it to, and that can be
//! stopped (its port closed: connections are refused) and started again on
//! the same port.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// How the receiver answers a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// This status, at once.
    Status(u16),
    /// This status with `Retry-After: <seconds>`.
    RetryAfter(u16, u64),
    /// Nothing for this long (past the client's timeout), or until the
    /// receiver stops; then a 504.
    Hang(Duration),
    /// This status after a pause.
    Slow(Duration, u16),
}

impl Reply {
    /// Whether the answer is a 2xx (what a client counts as delivered).
    pub fn is_success(self) -> bool {
        matches!(self, Reply::Status(s) | Reply::Slow(_, s) if (200..300).contains(&s))
    }
}

/// One request as received, with the answer it got.
#[derive(Clone, Debug)]
pub struct Hit {
    pub at: Instant,
    pub wall: DateTime<Utc>,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub reply: Reply,
}

impl Hit {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `Idempotency-Key` header ("" when absent).
    pub fn key(&self) -> &str {
        self.header("idempotency-key").unwrap_or("")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

type Behaviour = dyn Fn(&Hit) -> Reply + Send + Sync;

struct Shared {
    hits: Mutex<Vec<Hit>>,
    behaviour: Mutex<Arc<Behaviour>>,
    /// True while the receiver is stopping: hung requests give up.
    stopping: watch::Sender<bool>,
}

pub struct Receiver {
    runtime: tokio::runtime::Runtime,
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl Receiver {
    /// Listens on a free loopback port; `behaviour` picks each answer (the
    /// hit it gets has a placeholder `reply`).
    pub fn start(behaviour: impl Fn(&Hit) -> Reply + Send + Sync + 'static) -> Receiver {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("test-receiver")
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let shared = Arc::new(Shared {
            hits: Mutex::new(Vec::new()),
            behaviour: Mutex::new(Arc::new(behaviour)),
            stopping: watch::Sender::new(false),
        });
        let mut receiver = Receiver {
            runtime,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            shared,
            server: None,
        };
        receiver.listen();
        receiver
    }

    /// Answers every request the same way.
    pub fn always(reply: Reply) -> Receiver {
        Receiver::start(move |_| reply)
    }

    fn listen(&mut self) {
        let listener = self
            .runtime
            .block_on(tokio::net::TcpListener::bind(self.addr))
            .unwrap_or_else(|e| panic!("binding {}: {e}", self.addr));
        self.addr = listener.local_addr().expect("a local address");
        self.shared.stopping.send_replace(false);
        let app = Router::new()
            .fallback(handle)
            .with_state(self.shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = self.runtime.spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
                .expect("the receiver serves");
        });
        self.server = Some((stop, task));
    }

    /// Closes the port (waiting for requests in progress to be answered),
    /// so that new connections are refused.
    pub fn stop(&mut self) {
        if let Some((stop, task)) = self.server.take() {
            self.shared.stopping.send_replace(true);
            let _ = stop.send(());
            self.runtime
                .block_on(async { tokio::time::timeout(Duration::from_secs(10), task).await })
                .expect("the receiver stops within 10 s")
                .expect("the receiver task ends cleanly");
        }
    }

    /// Listens again on the same port.
    pub fn restart(&mut self) {
        assert!(self.server.is_none(), "the receiver is running");
        self.listen();
    }

    pub fn set(&self, behaviour: impl Fn(&Hit) -> Reply + Send + Sync + 'static) {
        *self.shared.behaviour.lock().unwrap() = Arc::new(behaviour);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request so far, in order of arrival.
    pub fn hits(&self) -> Vec<Hit> {
        self.shared.hits.lock().unwrap().clone()
    }

    /// The idempotency keys answered with a 2xx at least once (what a
    /// receiver that drops repeats would keep).
    pub fn delivered_keys(&self) -> BTreeSet<String> {
        self.hits()
            .iter()
            .filter(|h| h.reply.is_success())
            .map(|h| h.key().to_owned())
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some((stop, _)) = self.server.take() {
            self.shared.stopping.send_replace(true);
            let _ = stop.send(());
        }
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut hit = Hit {
        at: Instant::now(),
        wall: Utc::now(),
        path: uri.path().to_owned(),
        headers,
        body,
        reply: Reply::Status(0),
    };
    let behaviour = shared.behaviour.lock().unwrap().clone();
    hit.reply = behaviour(&hit);
    let reply = hit.reply;
    shared.hits.lock().unwrap().push(hit);
    let status = |s: u16| StatusCode::from_u16(s).expect("a valid status");
    match reply {
        Reply::Status(s) => status(s).into_response(),
        Reply::RetryAfter(s, secs) => {
            (status(s), [("retry-after", secs.to_string())]).into_response()
        }
        Reply::Hang(d) => {
            let mut stopping = shared.stopping.subscribe();
            tokio::select! {
                _ = tokio::time::sleep(d) => {}
                _ = stopping.wait_for(|s| *s) => {}
            }
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        Reply::Slow(d, s) => {
            tokio::time::sleep(d).await;
            status(s).into_response()
        }
    }
}
