//! Starting test nodes and talking HTTP to them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mycel_identity::Keypair;
use mycel_node::config::{Config, TINY_MODEL_ID};
use mycel_node::{RunningNode, StartOptions, models};

/// A pair of nodes: `a` serves `tiny`, `b` serves nothing and bootstrapped to `a`.
pub struct Pair {
    pub a: RunningNode,
    pub b: RunningNode,
}

/// Starts a node serving `tiny`.
pub async fn start_provider() -> RunningNode {
    let tiny = models::load(TINY_MODEL_ID, std::path::Path::new("/nonexistent"), |_| {}).unwrap();
    RunningNode::start(StartOptions {
        shards: Default::default(),
        models_dir: None,
        key: Keypair::generate(),
        config: Config::loopback(Vec::new()),
        models: BTreeMap::from([(TINY_MODEL_ID.to_string(), Arc::new(tiny))]),
        info_file: None,
        ledger: None,
    })
    .await
    .unwrap()
}

/// Starts a node serving nothing, bootstrapped to `to`.
pub async fn start_forwarder(to: &RunningNode) -> RunningNode {
    let addr = to.node.listen_addrs()[0].to_string();
    RunningNode::start(StartOptions {
        shards: Default::default(),
        models_dir: None,
        key: Keypair::generate(),
        config: Config::loopback(vec![addr]),
        models: BTreeMap::new(),
        info_file: None,
        ledger: None,
    })
    .await
    .unwrap()
}

impl Pair {
    pub async fn start() -> Self {
        let a = start_provider().await;
        let b = start_forwarder(&a).await;
        // Wait until B is connected to A.
        let deadline = Instant::now() + Duration::from_secs(10);
        while b.node.peers().await.unwrap().is_empty() {
            assert!(Instant::now() < deadline, "B never connected to A");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { a, b }
    }

    /// Waits until B lists A's `tiny` among its models, which happens once B has heard A's signed
    /// heartbeat (1 s interval in tests); returns B's `/v1/models` body.
    pub async fn wait_until_b_lists_tiny(&self) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let v = get(url(&self.b, "/v1/models")).await.json();
            if v["data"][0]["id"] == TINY_MODEL_ID {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "B never heard A's heartbeat: {v}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn shutdown(self) {
        self.b.shutdown().await;
        self.a.shutdown().await;
    }
}

/// An HTTP response: status, `x-mycel-served-by` header, body text.
pub struct HttpReply {
    pub status: u16,
    pub served_by: Option<String>,
    pub body: String,
}

impl HttpReply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// POSTs a body with ureq on a blocking thread (4xx/5xx are returned, not errors).
pub async fn post(url: String, body: String) -> HttpReply {
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let mut resp = agent
            .post(&url)
            .header("content-type", "application/json")
            .send(body.as_bytes())
            .unwrap();
        let served_by = resp
            .headers()
            .get("x-mycel-served-by")
            .map(|v| v.to_str().unwrap().to_string());
        HttpReply {
            status: resp.status().as_u16(),
            served_by,
            body: resp.body_mut().read_to_string().unwrap(),
        }
    })
    .await
    .unwrap()
}

/// GETs a URL.
pub async fn get(url: String) -> HttpReply {
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut resp = agent.get(&url).call().unwrap();
        HttpReply {
            status: resp.status().as_u16(),
            served_by: None,
            body: resp.body_mut().read_to_string().unwrap(),
        }
    })
    .await
    .unwrap()
}

pub fn url(node: &RunningNode, path: &str) -> String {
    format!("http://{}{path}", node.http_addr)
}

/// The value of one Prometheus series in `node`'s `/metrics` scrape (0 when the series has not
/// been created yet, as labelled counters appear on first use).
pub async fn metric(node: &RunningNode, series: &str) -> f64 {
    let scrape = get(url(node, "/metrics")).await.body;
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

/// POSTs a JSON body with an `Authorization` header.
pub async fn post_with_auth(url: String, body: String, authorization: &str) -> HttpReply {
    let authorization = authorization.to_string();
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let mut resp = agent
            .post(&url)
            .header("content-type", "application/json")
            .header("authorization", &authorization)
            .send(body.as_bytes())
            .unwrap();
        HttpReply {
            status: resp.status().as_u16(),
            served_by: None,
            body: resp.body_mut().read_to_string().unwrap(),
        }
    })
    .await
    .unwrap()
}

/// A non-loopback address of this machine (reaching a node through it makes the client
/// non-loopback), found by routing a UDP socket without sending anything; None when the machine
/// has none.
pub fn routable_ip() -> Option<std::net::IpAddr> {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("192.0.2.1:9").map(|_| s))
        .and_then(|s| s.local_addr())
        .ok()
        .map(|a| a.ip())
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
}
