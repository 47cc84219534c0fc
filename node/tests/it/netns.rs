//! `mycel-node` processes on three hosts: Linux network namespaces joined by a bridge that each
//! test builds itself on a private /24 of its own (10.77.0.0/24, 10.77.1.0/24), so the tests can
//! run in parallel. The bridge lives in a fourth namespace and the veth pairs are created inside the
//! namespaces, so the host's own network is never touched.
//!
//! In both tests host A serves `tiny` and B and C serve nothing; C must list A's model and have A
//! answer its chat, and A must see its peers at their bridge addresses only.
//! - Bootstrap, no mDNS: B bootstraps to A, C to B only, so C learns of A from heartbeats two hops
//!   away.
//! - mDNS, no bootstrap: the nodes run with their default discovery and no address of each other;
//!   they find each other by multicast DNS across the bridge.
//!
//! Needs root, `ip` (iproute2) and `curl`; skipped with a message otherwise.

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::HttpReply;

const BIN: &str = env!("CARGO_BIN_EXE_mycel-node");
/// Namespaces are named `<prefix><pid>-<lan>-<role>`, so parallel runs (and the tests of one run)
/// do not collide, and namespaces left behind by a killed run can be recognised and removed.
const NS_PREFIX: &str = "mycel-it-netns-";
/// Fixed ports are safe: every host is a fresh namespace with nothing else listening.
const P2P_PORT: u16 = 4001;
const HTTP_PORT: u16 = 7400;
/// How long discovery may take: C hearing A's heartbeat through B (heartbeats every second here),
/// or the hosts finding each other by mDNS (first query after 0.5 s, then 1 s, 2 s, …).
const DISCOVERY_DEADLINE: Duration = Duration::from_secs(30);

#[test]
fn three_hosts_on_a_bridge_reach_a_model_two_hops_away() {
    let started = Instant::now();
    let Some(lan) = lan_or_skip("boot", "10.77.0") else {
        return;
    };
    let [host_a, host_b, host_c] = &lan.hosts;
    let setup = started.elapsed();

    // No mDNS: C can learn of A only through B.
    let a = NodeProcess::start(host_a, &["--model", "tiny", "--no-mdns"]);
    let b_args = ["--no-model", "--no-mdns", "--bootstrap", &a.p2p_addr];
    let b = NodeProcess::start(host_b, &b_args);
    let c_args = ["--no-model", "--no-mdns", "--bootstrap", &b.p2p_addr];
    let c = NodeProcess::start(host_c, &c_args);
    let nodes_up = started.elapsed();

    // C lists `tiny` served by A once A's heartbeat has crossed two hosts.
    let models = wait_until_listed(&c, "tiny", &a);
    let discovered = started.elapsed();
    println!("C's /v1/models: {models}");

    assert_chat_answered_by(&c, &a);
    let chatted = started.elapsed();

    // A knows B (and any other peer) by its bridge address, never by loopback.
    let peers = a.rpc("mycel_peers");
    assert_sees(&peers, &b, host_b);
    assert_all_on(&peers, &lan);
    println!("A's peers: {peers}");

    shut_down(lan, [c, b, a]);
    println!(
        "timing: namespaces {setup:?}, nodes up {nodes_up:?}, C lists tiny {discovered:?}, \
         chat answered {chatted:?}, total {:?}",
        started.elapsed()
    );
}

#[test]
fn three_hosts_on_a_bridge_find_each_other_by_mdns() {
    let started = Instant::now();
    let Some(lan) = lan_or_skip("mdns", "10.77.1") else {
        return;
    };
    let [host_a, host_b, host_c] = &lan.hosts;
    let setup = started.elapsed();

    // Default discovery (mDNS on) and no bootstrap address: multicast is the only way to a peer.
    let a = NodeProcess::start(host_a, &["--model", "tiny"]);
    let b = NodeProcess::start(host_b, &["--no-model"]);
    let c = NodeProcess::start(host_c, &["--no-model"]);
    let nodes_up = started.elapsed();

    let models = wait_until_listed(&c, "tiny", &a);
    let discovered = started.elapsed();
    println!("C's /v1/models: {models}");

    assert_chat_answered_by(&c, &a);
    let chatted = started.elapsed();

    // Every host finds every other: A ends up connected to B and C, at their bridge addresses only.
    let deadline = Instant::now() + DISCOVERY_DEADLINE;
    let peers = loop {
        let peers = a.rpc("mycel_peers");
        if [&b, &c]
            .iter()
            .all(|n| !peer_addrs(&peers, &n.did).is_empty())
        {
            break peers;
        }
        assert!(
            Instant::now() < deadline,
            "A did not find both B and C by mDNS within {DISCOVERY_DEADLINE:?}: {peers}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_sees(&peers, &b, host_b);
    assert_sees(&peers, &c, host_c);
    assert_all_on(&peers, &lan);
    println!("A's peers: {peers}");
    let meshed = started.elapsed();

    shut_down(lan, [c, b, a]);
    println!(
        "timing: namespaces {setup:?}, nodes up {nodes_up:?}, C lists tiny {discovered:?}, \
         chat answered {chatted:?}, A meshed {meshed:?}, total {:?}",
        started.elapsed()
    );
}

/// The test's three hosts on their bridge, or `None` (after printing why) when this machine cannot
/// build them.
fn lan_or_skip(name: &str, subnet: &'static str) -> Option<Lan> {
    if let Some(reason) = missing_prerequisite() {
        println!("SKIPPED: netns test: {reason}");
        return None;
    }
    remove_namespaces_of_dead_runs();
    match Lan::create(std::process::id(), name, subnet) {
        Ok(lan) => Some(lan),
        Err(reason) => {
            println!("SKIPPED: netns test: `ip netns add` failed ({reason}); needs CAP_SYS_ADMIN");
            None
        }
    }
}

/// Polls `node`'s `/v1/models` until `model` is listed as served by `server`; returns the listing.
fn wait_until_listed(node: &NodeProcess, model: &str, server: &NodeProcess) -> Value {
    let deadline = Instant::now() + DISCOVERY_DEADLINE;
    loop {
        if let Ok(r) = node.http("/v1/models", None)
            && r.status == 200
        {
            let v = r.json();
            let entry = v["data"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|m| m["id"] == model);
            if let Some(m) = entry
                && m["mycel"]["served_by"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|d| d == server.did.as_str()))
            {
                return v;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} never listed {model} served by {} within {DISCOVERY_DEADLINE:?}",
            node.ns,
            server.ns
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A chat for `tiny` sent to `node` is answered remotely by `server`.
fn assert_chat_answered_by(node: &NodeProcess, server: &NodeProcess) {
    let chat = json!({
        "model": "tiny",
        "messages": [{"role": "user", "content": "hello across hosts"}],
        "max_tokens": 8,
    });
    let r = node
        .http("/v1/chat/completions", Some(&chat))
        .unwrap_or_else(|e| panic!("chat to {}: {e}", node.ns));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.served_by.as_deref(),
        Some(server.did.as_str()),
        "{}",
        r.body
    );
    let v = r.json();
    assert_eq!(v["mycel"]["served_by"], server.did.as_str(), "{v}");
    assert_eq!(v["mycel"]["remote"], true, "{v}");
}

/// The addresses a `mycel_peers` result lists for `did`.
fn peer_addrs(peers: &Value, did: &str) -> Vec<String> {
    peers
        .as_array()
        .unwrap_or_else(|| panic!("mycel_peers is not a list: {peers}"))
        .iter()
        .filter(|p| p["did"] == did)
        .flat_map(|p| p["addrs"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect()
}

/// `peers` lists `node` at an address of its host on the bridge.
fn assert_sees(peers: &Value, node: &NodeProcess, host: &Host) {
    let prefix = format!("/ip4/{}/", host.ip);
    assert!(
        peer_addrs(peers, &node.did)
            .iter()
            .any(|a| a.starts_with(&prefix)),
        "{} is not seen at {}: {peers}",
        node.ns,
        host.ip
    );
}

/// Every address in `peers` is on the bridge's subnet: none on loopback or anywhere else.
fn assert_all_on(peers: &Value, lan: &Lan) {
    let prefix = format!("/ip4/{}.", lan.subnet);
    for p in peers.as_array().into_iter().flatten() {
        for addr in p["addrs"].as_array().into_iter().flatten() {
            let addr = addr.as_str().unwrap_or_default();
            assert!(
                addr.starts_with(&prefix),
                "a peer address off the bridge: {addr} in {peers}"
            );
        }
    }
}

/// SIGTERMs the nodes in order, each of which must exit cleanly, then deletes the namespaces and
/// checks that none is left.
fn shut_down<const N: usize>(lan: Lan, nodes: [NodeProcess; N]) {
    for node in nodes {
        let role = node.ns.clone();
        let status = node.stop();
        assert!(
            status.success(),
            "{role} exited with {status} after SIGTERM"
        );
    }
    let names = lan.created.clone();
    drop(lan);
    let left = namespace_list();
    for name in &names {
        assert!(!left.contains(name), "namespace {name} left behind");
    }
}

/// Why the test cannot run here, if it cannot.
fn missing_prerequisite() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1));
    if euid != Some("0") {
        return Some("not running as root".into());
    }
    for (tool, arg) in [("ip", "-V"), ("curl", "--version")] {
        let found = Command::new(tool)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Some(format!("`{tool}` not found"));
        }
    }
    None
}

/// Runs `ip <args>`, returning its stderr on failure.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}`: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn namespace_list() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output();
    let text = out.map(|o| o.stdout).unwrap_or_default();
    String::from_utf8_lossy(&text)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// A run killed outright (e.g. by a test timeout) cannot drop its guard; its namespaces carry its
/// pid, so they are removed here once that process is gone.
fn remove_namespaces_of_dead_runs() {
    for name in namespace_list() {
        let Some(pid) = name
            .strip_prefix(NS_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", &name]);
        }
    }
}

/// One host: a namespace with `eth0` on the bridge at `ip`/24.
struct Host {
    ns: String,
    ip: String,
}

/// The namespaces of one run. Dropping it (also while the test panics) deletes the ones created,
/// which removes the veth pairs and the bridge with them.
struct Lan {
    /// The first three octets of the /24; it exists only inside these namespaces.
    subnet: &'static str,
    bridge_ns: String,
    hosts: [Host; 3],
    created: Vec<String>,
}

impl Lan {
    /// Builds the bridge namespace and three hosts on it at `<subnet>.1` to `.3`, all named after
    /// `lan`. Returns why when `ip netns add` fails (the test is then skipped); any later failure is
    /// a test failure.
    fn create(pid: u32, lan: &str, subnet: &'static str) -> Result<Self, String> {
        let name = |role: &str| format!("{NS_PREFIX}{pid}-{lan}-{role}");
        let mut lan = Lan {
            subnet,
            bridge_ns: name("br"),
            hosts: [(1, "a"), (2, "b"), (3, "c")].map(|(n, role)| Host {
                ns: name(role),
                ip: format!("{subnet}.{n}"),
            }),
            created: Vec::new(),
        };
        ip(&["netns", "add", &lan.bridge_ns])?;
        lan.created.push(lan.bridge_ns.clone());
        for i in 0..lan.hosts.len() {
            let ns = lan.hosts[i].ns.clone();
            ip(&["netns", "add", &ns]).unwrap_or_else(|e| panic!("{e}"));
            lan.created.push(ns);
        }
        lan.wire()
            .unwrap_or_else(|e| panic!("building the bridge: {e}"));
        Ok(lan)
    }

    /// mDNS needs nothing more: veths and bridges are created with MULTICAST set, the bridge floods
    /// 224.0.0.251 (in 224.0.0.0/24, never subject to IGMP snooping), and libp2p-mdns sends from a
    /// socket bound to eth0's address, so the kernel routes its multicast out of eth0 without a
    /// 224.0.0.0/4 route.
    fn wire(&self) -> Result<(), String> {
        let br = self.bridge_ns.as_str();
        ip(&["-n", br, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", br, "link", "set", "br0", "up"])?;
        for (i, host) in self.hosts.iter().enumerate() {
            let port = format!("veth{i}");
            let ns = host.ns.as_str();
            // Both ends are born inside namespaces: nothing appears in the root namespace.
            ip(&[
                "-n", br, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", ns,
            ])?;
            ip(&["-n", br, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", br, "link", "set", &port, "up"])?;
            let cidr = format!("{}/24", host.ip);
            ip(&["-n", ns, "addr", "add", &cidr, "dev", "eth0"])?;
            ip(&["-n", ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for name in &self.created {
            if let Err(e) = ip(&["netns", "del", name]) {
                eprintln!("netns test cleanup: {e}");
            }
        }
    }
}

/// A `mycel-node up` process inside a host's namespace. Dropping it kills the process if it still
/// runs (and prints its log when the test is failing), so the namespaces can go.
struct NodeProcess {
    child: Child,
    dir: tempfile::TempDir,
    ns: String,
    http_url: String,
    did: String,
    /// The listen address on the bridge, with `/p2p/<peer id>`.
    p2p_addr: String,
}

impl NodeProcess {
    /// Starts `mycel-node up` on `host`, listening on its bridge address, with the test's `args`
    /// (model, discovery) appended; returns once the node has written its node.json.
    fn start(host: &Host, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        // Heartbeats every second (default 5 s) keep discovery across hosts quick.
        std::fs::write(
            dir.path().join("config.toml"),
            "heartbeat_interval_secs = 1\n",
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("node.log")).unwrap();
        let listen = format!("/ip4/{}/tcp/{P2P_PORT}", host.ip);
        let http = format!("{}:{HTTP_PORT}", host.ip);
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &host.ns, BIN])
            .args(["--data-dir", dir.path().to_str().unwrap(), "-q", "up"])
            .args(["--listen", &listen, "--http", &http])
            .args(args);
        // `ip netns exec` execs the binary in place, so the child's pid is the node's.
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut node = NodeProcess {
            child,
            dir,
            ns: host.ns.clone(),
            http_url: String::new(),
            did: String::new(),
            p2p_addr: String::new(),
        };
        let info_path = node.dir.path().join("node.json");
        let deadline = Instant::now() + Duration::from_secs(30);
        let info: Value = loop {
            if let Ok(text) = std::fs::read_to_string(&info_path)
                && let Ok(v) = serde_json::from_str(&text)
            {
                break v;
            }
            if let Some(status) = node.child.try_wait().unwrap() {
                panic!(
                    "node in {} exited with {status} before writing node.json",
                    host.ns
                );
            }
            assert!(
                Instant::now() < deadline,
                "node.json never appeared in {}",
                host.ns
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        node.http_url = info["http_url"].as_str().unwrap().to_string();
        node.did = info["did"].as_str().unwrap().to_string();
        node.p2p_addr = info["listen_addrs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .find(|a| a.starts_with(&listen) && a.contains("/p2p/"))
            .unwrap_or_else(|| panic!("no {listen}/p2p/… in {info}"))
            .to_string();
        node
    }

    /// GETs (or POSTs `body` to) `path` with curl run inside the node's namespace, the only place its
    /// HTTP address is reachable from.
    fn http(&self, path: &str, body: Option<&Value>) -> Result<HttpReply, String> {
        let url = format!("{}{path}", self.http_url);
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns, "curl", "-sS", "-i", "-m", "60"]);
        if let Some(body) = body {
            cmd.args(["-H", "content-type: application/json", "--data-binary"])
                .arg(body.to_string());
        }
        let out = cmd
            .arg(&url)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run curl: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "curl {url} in {}: {}",
                self.ns,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("no HTTP header block from {url}: {text}"))?;
        let status = head
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("no status line from {url}: {head}"))?;
        let served_by = head.lines().find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("x-mycel-served-by")
                .then(|| value.trim().to_string())
        });
        Ok(HttpReply {
            status,
            served_by,
            body: body.to_string(),
        })
    }

    /// Calls a parameterless JSON-RPC method and returns its result.
    fn rpc(&self, method: &str) -> Value {
        let req = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": []});
        let r = self
            .http("/", Some(&req))
            .unwrap_or_else(|e| panic!("{method}: {e}"));
        assert_eq!(r.status, 200, "{method}: {}", r.body);
        let v = r.json();
        assert!(v["error"].is_null(), "{method}: {v}");
        v["result"].clone()
    }

    /// SIGTERM, then waits up to 15 s for the node to exit.
    fn stop(mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(killed.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "node in {} did not stop within 15 s of SIGTERM",
                self.ns
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.path().join("node.log")).unwrap_or_default();
            eprintln!("--- log of the node in {} ---\n{log}", self.ns);
        }
    }
}
