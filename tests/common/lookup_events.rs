//! A loopback server for CloudTrail's LookupEvents, the one call of the
//! event-history API the replay uses (the S3 test server does not serve
//! it). It speaks the AWS JSON 1.1 protocol as the SDK sends it
//! (`X-Amz-Target: CloudTrail_20131101.LookupEvents`), holds each region's
//! events (the region comes from the request's SigV4 credential scope),
//! answers newest first in pages of `MaxResults` (at most 50) with a
//! `NextToken`, honours `StartTime`, `EndTime` and one lookup attribute, and
//! answers `ThrottlingException` to requests that come faster than two per
//! second per region, or that the test asks to throttle.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// One request, as the server saw it.
#[derive(Clone, Debug)]
pub struct LookupRequest {
    pub region: String,
    pub at: Instant,
    pub target: String,
    pub body: Value,
    pub throttled: bool,
}

/// An event the server holds: its time (epoch seconds), name, and record.
struct Held {
    time: f64,
    name: String,
    record: Value,
}

struct Shared {
    events: BTreeMap<String, Vec<Held>>,
    requests: Mutex<Vec<LookupRequest>>,
    /// Request ordinals (0-based, all regions) answered with throttling.
    throttle: BTreeSet<usize>,
}

pub struct LookupServer {
    pub endpoint: String,
    shared: Arc<Shared>,
    _runtime: tokio::runtime::Runtime,
}

impl LookupServer {
    /// Serves these CloudTrail records, by their `awsRegion`; the requests
    /// numbered in `throttle` are throttled.
    pub fn start(records: &[Value], throttle: BTreeSet<usize>) -> LookupServer {
        let mut events: BTreeMap<String, Vec<Held>> = BTreeMap::new();
        for record in records {
            let time = chrono::DateTime::parse_from_rfc3339(record["eventTime"].as_str().unwrap())
                .unwrap()
                .timestamp() as f64;
            events
                .entry(record["awsRegion"].as_str().unwrap().to_owned())
                .or_default()
                .push(Held {
                    time,
                    name: record["eventName"].as_str().unwrap_or("").to_owned(),
                    record: record.clone(),
                });
        }
        for list in events.values_mut() {
            // Newest first, as the API answers.
            list.sort_by(|a, b| b.time.total_cmp(&a.time));
        }
        let shared = Arc::new(Shared {
            events,
            requests: Mutex::new(Vec::new()),
            throttle,
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(SocketAddr::from((
                [127, 0, 0, 1],
                0,
            ))))
            .unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let app = Router::new().fallback(handle).with_state(shared.clone());
        runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });
        LookupServer {
            endpoint,
            shared,
            _runtime: runtime,
        }
    }

    pub fn requests(&self) -> Vec<LookupRequest> {
        self.shared.requests.lock().unwrap().clone()
    }
}

fn region_of(headers: &HeaderMap) -> String {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.split("Credential=").nth(1))
        .and_then(|c| c.split('/').nth(2))
        .unwrap_or("")
        .to_owned()
}

fn error(kind: &str, message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [("content-type", "application/x-amz-json-1.1")],
        json!({ "__type": kind, "message": message }).to_string(),
    )
        .into_response()
}

async fn handle(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let region = region_of(&headers);
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let now = Instant::now();
    let throttled = {
        let mut requests = shared.requests.lock().unwrap();
        let ordinal = requests.len();
        // Faster than 2 per second in this region, as the real API throttles
        // (with room for a loaded host delaying one request more than the
        // next: a client that does not pace at all sends them ms apart).
        let too_fast = requests
            .iter()
            .rev()
            .find(|r| r.region == region)
            .is_some_and(|r| now.duration_since(r.at).as_millis() < 250);
        let throttled = too_fast || shared.throttle.contains(&ordinal);
        requests.push(LookupRequest {
            region: region.clone(),
            at: now,
            target: target.clone(),
            body: body.clone(),
            throttled,
        });
        throttled
    };
    if target != "CloudTrail_20131101.LookupEvents" {
        return error("UnknownOperationException", &target);
    }
    if throttled {
        return error("ThrottlingException", "Rate exceeded");
    }
    let start = body["StartTime"].as_f64().unwrap_or(f64::MIN);
    let end = body["EndTime"].as_f64().unwrap_or(f64::MAX);
    let name = body["LookupAttributes"][0]
        .as_object()
        .filter(|a| a["AttributeKey"] == "EventName")
        .and_then(|a| a["AttributeValue"].as_str());
    let page = body["MaxResults"].as_u64().unwrap_or(50).clamp(1, 50) as usize;
    let from: usize = body["NextToken"]
        .as_str()
        .and_then(|t| t.strip_prefix("page-"))
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let matching: Vec<&Held> = shared
        .events
        .get(&region)
        .map(|list| {
            list.iter()
                .filter(|e| e.time >= start && e.time <= end)
                .filter(|e| name.is_none_or(|n| e.name == n))
                .collect()
        })
        .unwrap_or_default();
    let events: Vec<Value> = matching
        .iter()
        .skip(from)
        .take(page)
        .map(|e| {
            json!({
                "EventId": e.record["eventID"],
                "EventName": e.name,
                "ReadOnly": e.record["readOnly"].as_bool().unwrap_or(false).to_string(),
                "EventTime": e.time,
                "EventSource": e.record["eventSource"],
                "Username": e.record["userIdentity"]["userName"],
                "Resources": [],
                "CloudTrailEvent": e.record.to_string(),
            })
        })
        .collect();
    let mut answer = json!({ "Events": events });
    if from + page < matching.len() {
        answer["NextToken"] = Value::from(format!("page-{}", from + page));
    }
    (
        [("content-type", "application/x-amz-json-1.1")],
        answer.to_string(),
    )
        .into_response()
}
