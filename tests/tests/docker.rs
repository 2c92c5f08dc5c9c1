//! Docker on a host end to end, against a real engine (`scripts/test` starts one and names it
//! in `ZPANEL_TEST_DOCKER_HOST`): the HTTP API of ARCHITECTURE.md "Docker" through a real
//! control plane and daemon: run with limits, logs that follow, stats, lifecycle, events, a
//! shell in a container, the errors of bad input, an engine that goes away mid-stream, roles
//! and the host's policy.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;
use zpanel_tests::docker::{Cleanup, TEST_IMAGE, docker_ok, unique_name};
use zpanel_tests::web::{Browser, HttpResponse, Screen, read_until, type_text};
use zpanel_tests::{Cli, ControlPlane, Daemon, assert_eventually};

struct Setup {
    cp: ControlPlane,
    cli: Cli,
    _daemon: Daemon,
    browser: Browser,
    host: String,
}

async fn setup(host: &str) -> Setup {
    let cp = ControlPlane::start().await;
    let cli = cp.admin_cli().await;
    let daemon = cp.add_docker_host(&cli, host).await;
    let browser = Browser::login(&cp, "admin", &cp.admin_password())
        .await
        .expect("login");
    Setup {
        cp,
        cli,
        _daemon: daemon,
        browser,
        host: host.into(),
    }
}

fn docker_path(host: &str, rest: &str) -> String {
    format!("/api/v1/hosts/{host}/docker{rest}")
}

impl Setup {
    fn path(&self, rest: &str) -> String {
        docker_path(&self.host, rest)
    }

    async fn get(&self, rest: &str) -> HttpResponse {
        self.browser
            .call("GET", &self.path(rest), None)
            .await
            .expect("GET")
    }

    async fn send(&self, method: &str, rest: &str, body: Value) -> HttpResponse {
        self.browser
            .call(method, &self.path(rest), Some(&body))
            .await
            .expect("request")
    }

    /// Creates and starts a container running `script` in sh.
    async fn run(&self, name: &str, script: &str, extra: Value) -> HttpResponse {
        let mut spec = json!({
            "image": TEST_IMAGE,
            "name": name,
            "command": ["sh", "-c", script],
            "start": true,
        });
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        self.send("POST", "/containers", spec).await
    }

    async fn container(&self, name: &str) -> Option<Value> {
        let listing = self.get("/containers?all=1").await;
        assert_eq!(listing.status, 200, "{listing:?}");
        listing
            .json()
            .as_array()
            .expect("a list")
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
    }
}

fn error_of(response: &HttpResponse) -> String {
    response.json()["error"].as_str().unwrap_or("").to_string()
}

/// Reads an event stream in the background until `done` holds for what arrived; `connected`
/// turns true once the server answered (so events after it are not missed).
fn follow(
    browser: &Browser,
    path: String,
    done: impl Fn(&str) -> bool + Send + 'static,
) -> (JoinHandle<bool>, Arc<AtomicBool>) {
    let connected = Arc::new(AtomicBool::new(false));
    let flag = connected.clone();
    let browser = browser.clone();
    let task = tokio::spawn(async move {
        browser
            .events_until(&path, move |seen| {
                if seen.contains("200 OK") {
                    flag.store(true, Ordering::SeqCst);
                }
                done(seen)
            })
            .await
    });
    (task, connected)
}

async fn connected(flag: &AtomicBool) {
    assert_eventually!(
        flag.load(Ordering::SeqCst),
        Duration::from_secs(20),
        "the event stream never answered"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_container_runs_with_its_limits_streams_its_logs_and_goes_through_its_life() {
    let s = setup("docker-life").await;
    let mut cleanup = Cleanup::new();
    let name = cleanup.container(&unique_name("life"));

    let engine = s.get("").await;
    assert_eq!(engine.status, 200, "{engine:?}");
    assert_eq!(engine.json()["available"], true, "{engine:?}");
    assert!(!engine.json()["version"].as_str().unwrap_or("").is_empty());

    // Engine events from before the container exists.
    let watched = name.clone();
    let (events, events_connected) = follow(&s.browser, s.path("/events"), move |seen| {
        seen.contains(&watched) && seen.contains("\"die\"") && seen.contains("\"destroy\"")
    });
    connected(&events_connected).await;

    let script = "echo ready; while [ ! -e /go ]; do sleep 0.1; done; echo after-follow; \
                  exec sleep 600";
    let created = s
        .run(
            &name,
            script,
            json!({"memory_bytes": 64 * 1024 * 1024, "labels": {"zpanel.test": "life"}}),
        )
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    let container = created.json();
    assert_eq!(container["name"], name.as_str());
    assert_eq!(container["state"], "running", "{container}");
    assert_eq!(container["labels"]["zpanel.test"], "life");
    let id = container["id"].as_str().expect("id").to_string();

    // The list says what the engine says.
    let listed = s.container(&name).await.expect("listed");
    assert_eq!(listed["image"], TEST_IMAGE);
    let engine_state = docker_ok(&["inspect", "-f", "{{.State.Status}}", &name]).await;
    assert_eq!(listed["state"], engine_state.as_str());

    // The memory limit shows in stats.
    let stats = s.get(&format!("/containers/{name}/stats")).await;
    assert_eq!(stats.status, 200, "{stats:?}");
    assert_eq!(
        stats.json()["memory_limit_bytes"],
        64 * 1024 * 1024,
        "{stats:?}"
    );
    assert!(stats.json()["pids"].as_u64().unwrap_or(0) >= 1, "{stats:?}");

    // Logs followed from before a line is written receive it.
    let (logs, logs_connected) = follow(
        &s.browser,
        s.path(&format!("/containers/{name}/logs?follow=1")),
        |seen| seen.contains("after-follow"),
    );
    connected(&logs_connected).await;
    assert_eventually!(
        docker_ok(&["logs", &name]).await.contains("ready"),
        Duration::from_secs(20),
        "the container never started writing"
    );
    docker_ok(&["exec", &name, "sh", "-c", "echo > /go"]).await;
    assert!(
        logs.await.unwrap(),
        "a line written after the follow began never arrived"
    );

    // Not following: the whole log, then the end.
    let (whole, _) = follow(
        &s.browser,
        s.path(&format!("/containers/{name}/logs?tail=1&timestamps=1")),
        |seen| seen.contains("event: end"),
    );
    assert!(whole.await.unwrap(), "a log without follow never ended");

    let top = s.get(&format!("/containers/{name}/top")).await;
    assert_eq!(top.status, 200, "{top:?}");
    assert!(top.body.contains("sleep"), "{top:?}");

    let inspect = s.get(&format!("/containers/{name}")).await;
    assert_eq!(inspect.status, 200);
    assert_eq!(inspect.json()["Id"], id.as_str());

    // Stop, restart, pause, rename, remove: the engine agrees each time.
    let stopped = s
        .send(
            "POST",
            &format!("/containers/{name}/stop"),
            json!({"timeout_seconds": 1}),
        )
        .await;
    assert_eq!(stopped.status, 200, "{stopped:?}");
    assert_eq!(stopped.json()["state"], "exited");
    assert_eq!(
        docker_ok(&["inspect", "-f", "{{.State.Status}}", &name]).await,
        "exited"
    );
    let restarted = s
        .send("POST", &format!("/containers/{name}/restart"), json!({}))
        .await;
    assert_eq!(restarted.json()["state"], "running", "{restarted:?}");
    let paused = s
        .send("POST", &format!("/containers/{name}/pause"), json!({}))
        .await;
    assert_eq!(paused.json()["state"], "paused", "{paused:?}");
    let unpaused = s
        .send("POST", &format!("/containers/{name}/unpause"), json!({}))
        .await;
    assert_eq!(unpaused.json()["state"], "running", "{unpaused:?}");
    let renamed_to = cleanup.container(&format!("{name}-renamed"));
    let renamed = s
        .send(
            "POST",
            &format!("/containers/{name}/rename"),
            json!({"name": renamed_to}),
        )
        .await;
    assert_eq!(renamed.json()["name"], renamed_to.as_str(), "{renamed:?}");

    let running = s
        .send("DELETE", &format!("/containers/{renamed_to}"), json!({}))
        .await;
    assert_eq!(
        running.status, 409,
        "removing a running container: {running:?}"
    );
    assert!(!error_of(&running).is_empty());
    let removed = s
        .send(
            "DELETE",
            &format!("/containers/{renamed_to}?force=1"),
            json!({}),
        )
        .await;
    assert_eq!(removed.status, 204, "{removed:?}");
    assert!(s.container(&renamed_to).await.is_none());
    let gone = s.get(&format!("/containers/{id}")).await;
    assert_eq!(gone.status, 404, "{gone:?}");

    // The events of all that arrived.
    assert!(
        events.await.unwrap(),
        "the container's events never arrived"
    );

    // Every change is in the audit log.
    let audit = s.cli.run(&["audit", "--action", "docker", "--json"]).await;
    let audit = String::from_utf8_lossy(&audit.stdout).to_string();
    for action in [
        "docker.create",
        "docker.stop",
        "docker.restart",
        "docker.pause",
        "docker.rename",
        "docker.remove",
    ] {
        assert!(
            audit.contains(action),
            "no {action} in the audit log: {audit}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shell_in_a_container_is_a_terminal() {
    let s = setup("docker-shell").await;
    let mut cleanup = Cleanup::new();
    let name = cleanup.container(&unique_name("shell"));
    let created = s.run(&name, "exec sleep 600", json!({})).await;
    assert_eq!(created.status, 201, "{created:?}");

    let mut socket = s
        .browser
        .terminal(&s.host, &format!("container={name}&cols=100&rows=30"))
        .await
        .expect("terminal socket");
    let mut screen = Screen::default();
    assert!(
        read_until(&mut socket, &mut screen, Duration::from_secs(20), |s| {
            s.attached.is_some()
        })
        .await,
        "never attached: {screen:?}"
    );
    type_text(&mut socket, "echo zp-$((6*7)); hostname; stty size\n").await;
    assert!(
        read_until(&mut socket, &mut screen, Duration::from_secs(20), |s| {
            s.text().contains("zp-42") && s.text().contains("30 100")
        })
        .await,
        "the shell in the container never answered: {:?}",
        screen.text()
    );
    // The shell runs inside the container: its hostname is the container's.
    let container_host = docker_ok(&["inspect", "-f", "{{.Config.Hostname}}", &name]).await;
    assert!(
        screen.text().contains(&container_host),
        "{:?}",
        screen.text()
    );

    // It is listed as a terminal session naming the container.
    let sessions = s
        .browser
        .call("GET", &format!("/api/v1/hosts/{}/terminals", s.host), None)
        .await
        .unwrap();
    assert!(
        sessions
            .json()
            .as_array()
            .is_some_and(|list| list.iter().any(|t| t["container"] == name.as_str())),
        "{sessions:?}"
    );

    type_text(&mut socket, "exit 3\n").await;
    assert!(
        read_until(&mut socket, &mut screen, Duration::from_secs(20), |s| {
            s.messages.iter().any(|m| m["type"] == "exit")
        })
        .await,
        "the shell's exit never arrived: {screen:?}"
    );
    let exit = screen
        .messages
        .iter()
        .find(|m| m["type"] == "exit")
        .cloned()
        .unwrap_or_default();
    assert_eq!(exit["code"], 3, "{exit}");

    // A shell in a container that does not exist says so.
    let mut socket = s
        .browser
        .terminal(&s.host, "container=zp-no-such-container&cols=80&rows=24")
        .await
        .expect("terminal socket");
    let mut screen = Screen::default();
    read_until(&mut socket, &mut screen, Duration::from_secs(20), |s| {
        s.text().contains("zp-no-such-container") || s.closed.is_some()
    })
    .await;
    assert!(
        screen.text().contains("zp-no-such-container")
            || screen
                .messages
                .iter()
                .any(|m| m.to_string().contains("zp-no-such-container")),
        "no line naming the missing container: {screen:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_one_clear_line_and_leaves_other_streams_working() {
    let s = setup("docker-bad").await;
    let mut cleanup = Cleanup::new();

    let missing = s
        .send(
            "POST",
            "/containers",
            json!({"image": "zpanel-test/no-such-image:1", "start": true}),
        )
        .await;
    assert_eq!(missing.status, 404, "{missing:?}");
    assert!(error_of(&missing).contains("no-such-image"), "{missing:?}");

    let name = cleanup.container(&unique_name("taken"));
    let first = s.run(&name, "exec sleep 600", json!({})).await;
    assert_eq!(first.status, 201, "{first:?}");
    let taken = s.run(&name, "exec sleep 600", json!({})).await;
    assert_eq!(taken.status, 409, "{taken:?}");
    assert!(error_of(&taken).contains(&name), "{taken:?}");

    let tiny = cleanup.container(&unique_name("tiny"));
    let too_small = s
        .run(&tiny, "true", json!({"memory_bytes": 1024 * 1024}))
        .await;
    assert_eq!(too_small.status, 400, "{too_small:?}");
    assert!(error_of(&too_small).contains("memory"), "{too_small:?}");

    let nothing = s.get("/containers/zp-no-such-container/stats").await;
    assert_eq!(nothing.status, 404, "{nothing:?}");
    let bad_verb = s.send("POST", "/containers/x/explode", json!({})).await;
    assert!(
        (400..500).contains(&bad_verb.status),
        "an unknown verb: {bad_verb:?}"
    );

    let pull = s
        .browser
        .call(
            "POST",
            &s.path("/images/pull"),
            Some(&json!({"image": "zpanel-test/never-published:1"})),
        )
        .await
        .unwrap();
    assert!(
        pull.body.contains("\"error\""),
        "a pull from no registry must end with an error: {pull:?}"
    );

    // A container removed while its logs are followed ends that stream alone.
    let noisy = cleanup.container(&unique_name("noisy"));
    let quiet = cleanup.container(&unique_name("quiet"));
    let loop_script = "i=0; while true; do i=$((i+1)); echo line-$i; sleep 0.1; done";
    assert_eq!(s.run(&noisy, loop_script, json!({})).await.status, 201);
    assert_eq!(s.run(&quiet, loop_script, json!({})).await.status, 201);
    let (removed_stream, removed_connected) = follow(
        &s.browser,
        s.path(&format!("/containers/{noisy}/logs?follow=1")),
        |seen| seen.contains("event: end"),
    );
    let (other_stream, other_connected) = follow(
        &s.browser,
        s.path(&format!("/containers/{quiet}/logs?follow=1&tail=0")),
        |seen| seen.contains("line-") && seen.matches("event: log").count() >= 30,
    );
    connected(&removed_connected).await;
    connected(&other_connected).await;
    docker_ok(&["rm", "-f", &noisy]).await;
    assert!(
        removed_stream.await.unwrap(),
        "following a removed container's logs never ended"
    );
    assert!(
        other_stream.await.unwrap(),
        "another container's log stream stopped"
    );
}

/// A unix socket in front of the engine's that can be cut and restored: to the daemon, the
/// engine restarting.
struct EngineProxy {
    path: PathBuf,
    accept: Option<JoinHandle<()>>,
    connections: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
}

impl EngineProxy {
    fn start(path: &Path) -> EngineProxy {
        let mut proxy = EngineProxy {
            path: path.to_path_buf(),
            accept: None,
            connections: Arc::default(),
        };
        proxy.listen();
        proxy
    }

    fn listen(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let listener = UnixListener::bind(&self.path).expect("bind the proxy socket");
        let engine = zpanel_tests::docker::endpoint();
        let engine = engine
            .strip_prefix("unix://")
            .expect("a unix:// test engine")
            .to_string();
        let connections = self.connections.clone();
        self.accept = Some(tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let engine = engine.clone();
                let connection = tokio::spawn(async move {
                    if let Ok(mut upstream) = UnixStream::connect(&engine).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                });
                connections.lock().unwrap().push(connection);
            }
        }));
    }

    /// Every connection cut and nobody listening, as while an engine restarts.
    fn cut(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
        }
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for EngineProxy {
    fn drop(&mut self) {
        self.cut();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_engine_that_goes_away_ends_its_streams_and_is_found_again() {
    let cp = ControlPlane::start().await;
    let cli = cp.admin_cli().await;
    let browser = Browser::login(&cp, "admin", &cp.admin_password())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("engine.sock");
    let mut proxy = EngineProxy::start(&socket);
    let proxied = format!("unix://{}", socket.display());
    let _through_proxy = cp
        .add_online_host_with(&cli, "docker-proxied", &[], |d| {
            d.set_docker_endpoint(&proxied)
        })
        .await;
    let _direct = cp.add_docker_host(&cli, "docker-direct").await;
    let dead = format!("unix://{}", dir.path().join("nobody.sock").display());
    let _nowhere = cp
        .add_online_host_with(&cli, "docker-nowhere", &[], |d| {
            d.set_docker_endpoint(&dead)
        })
        .await;

    // No engine: the host says so, clearly, and requests are refused with 503.
    let engine = browser
        .call("GET", &docker_path("docker-nowhere", ""), None)
        .await
        .unwrap();
    assert_eq!(engine.status, 200, "{engine:?}");
    assert_eq!(engine.json()["available"], false, "{engine:?}");
    assert!(
        engine.json()["message"]
            .as_str()
            .unwrap_or("")
            .contains("nobody.sock"),
        "{engine:?}"
    );
    let refused = browser
        .call("GET", &docker_path("docker-nowhere", "/containers"), None)
        .await
        .unwrap();
    assert_eq!(refused.status, 503, "{refused:?}");
    assert!(error_of(&refused).contains("bridge.toml"), "{refused:?}");

    let mut cleanup = Cleanup::new();
    let name = cleanup.container(&unique_name("engine"));
    let spec = json!({
        "image": TEST_IMAGE,
        "name": name,
        "command": ["sh", "-c", "i=0; while true; do i=$((i+1)); echo tick-$i; sleep 0.1; done"],
        "start": true,
    });
    let created = browser
        .call(
            "POST",
            &docker_path("docker-proxied", "/containers"),
            Some(&spec),
        )
        .await
        .unwrap();
    assert_eq!(created.status, 201, "{created:?}");

    let (proxied_logs, proxied_connected) = follow(
        &browser,
        docker_path(
            "docker-proxied",
            &format!("/containers/{name}/logs?follow=1"),
        ),
        |seen| seen.contains("tick-") && seen.contains("event: end"),
    );
    let (direct_logs, direct_connected) = follow(
        &browser,
        docker_path(
            "docker-direct",
            &format!("/containers/{name}/logs?follow=1&tail=0"),
        ),
        |seen| seen.matches("event: log").count() >= 40,
    );
    connected(&proxied_connected).await;
    connected(&direct_connected).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    proxy.cut();
    assert!(
        proxied_logs.await.unwrap(),
        "the log stream did not end when the engine went away"
    );
    let meanwhile = browser
        .call("GET", &docker_path("docker-proxied", "/containers"), None)
        .await
        .unwrap();
    assert_eq!(meanwhile.status, 503, "{meanwhile:?}");

    proxy.listen();
    assert_eventually!(
        browser
            .call("GET", &docker_path("docker-proxied", "/containers"), None)
            .await
            .is_ok_and(|r| r.status == 200 && r.body.contains(&name)),
        Duration::from_secs(20),
        "the daemon never found the engine again"
    );
    assert!(
        direct_logs.await.unwrap(),
        "the other host's stream stopped when this engine went away"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn roles_and_the_hosts_policy_decide_who_may_do_what() {
    let s = setup("docker-roles").await;
    let mut cleanup = Cleanup::new();
    let name = cleanup.container(&unique_name("roles"));
    assert_eq!(s.run(&name, "exec sleep 600", json!({})).await.status, 201);

    let mut callers = Vec::new();
    for role in ["viewer", "developer", "operator"] {
        let user = format!("docker-{role}");
        let added = s
            .cli
            .run(&[
                "users",
                "add",
                &user,
                "--role",
                role,
                "--workspace",
                "default",
            ])
            .await;
        assert!(added.status.success(), "{added:?}");
        let created = s
            .cli
            .run(&["api-tokens", "create", "--user", &user, "--json"])
            .await;
        let token: Value = serde_json::from_slice(&created.stdout).expect("token json");
        callers.push((
            role,
            Browser::with_token(&s.cp, token["token"].as_str().unwrap()),
        ));
    }
    let other = cleanup.container(&unique_name("roles-new"));
    for (role, caller) in &callers {
        let list = caller
            .call("GET", &s.path("/containers"), None)
            .await
            .unwrap();
        assert_eq!(list.status, 200, "{role} lists: {list:?}");
        let logs = caller
            .call("GET", &s.path(&format!("/containers/{name}")), None)
            .await
            .unwrap();
        let restart = caller
            .call(
                "POST",
                &s.path(&format!("/containers/{name}/restart")),
                Some(&json!({"timeout_seconds": 0})),
            )
            .await
            .unwrap();
        let create = caller
            .call(
                "POST",
                &s.path("/containers"),
                Some(&json!({"image": TEST_IMAGE, "name": other, "command": ["true"]})),
            )
            .await
            .unwrap();
        let (inspect_ok, restart_ok, create_ok) = match *role {
            "viewer" => (403, 403, 403),
            "developer" => (200, 200, 403),
            _ => (200, 200, 201),
        };
        assert_eq!(logs.status, inspect_ok, "{role} inspects: {logs:?}");
        assert_eq!(restart.status, restart_ok, "{role} restarts: {restart:?}");
        assert_eq!(create.status, create_ok, "{role} creates: {create:?}");
        if create.status == 403 {
            assert!(error_of(&create).contains(role), "{create:?}");
        }
    }

    // A host whose policy leaves Docker out refuses it whatever the role.
    let _closed =
        s.cp.add_online_host_with(&s.cli, "docker-closed", &[], |d| {
            d.set_docker_endpoint(&zpanel_tests::docker::endpoint());
            d.set_policy(Some(&["exec", "terminal", "files"]), None);
        })
        .await;
    let closed = s
        .browser
        .call("GET", &docker_path("docker-closed", "/containers"), None)
        .await
        .unwrap();
    assert_eq!(closed.status, 403, "{closed:?}");
    assert!(error_of(&closed).contains("docker"), "{closed:?}");
}
