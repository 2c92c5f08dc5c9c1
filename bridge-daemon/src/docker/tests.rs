//! The Docker service against a real engine (`ZPANEL_TEST_DOCKER_HOST`, which `scripts/test`
//! starts, with the offline image `zpanel-test/busybox:latest`): requests answered at once,
//! logs, stats and events through a session's channels, pull and import, and an engine that
//! does not answer.

use std::collections::HashMap;

use bollard::query_parameters::{RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder};
use bytes::Bytes;
use tokio::sync::mpsc;
use zpanel_proto::docker_reply::Result as Reply;
use zpanel_proto::docker_request::Op;
use zpanel_proto::docker_update::Update;
use zpanel_proto::frame::Body;
use zpanel_proto::{
    ChannelAck, ChannelData, ContainerAction, ContainerList, ContainerRef, ContainerRename,
    ContainerSpec, ContainerSummary, ContainerVerb, DockerEmpty, DockerError, DockerEventsWatch,
    DockerImport, DockerLogs, DockerOutcome, DockerPull, DockerRequest, DockerStatsWatch,
    OpenError, StreamAck, StreamChunk, StreamKind, open, open_result,
};

use super::{Docker, DockerFailure};
use crate::config::{Capability, Policy};
use crate::session::DaemonSession;
use crate::session::tests::{chunk_on, expect, open, opened, session_with};

const TEST_IMAGE: &str = "zpanel-test/busybox:latest";
const MIB: u64 = 1024 * 1024;

/// The test engine's endpoint.
fn endpoint() -> String {
    std::env::var("ZPANEL_TEST_DOCKER_HOST").unwrap_or_else(|_| {
        panic!("set ZPANEL_TEST_DOCKER_HOST to a Docker engine (scripts/test starts one)")
    })
}

/// A container or image name no other test (or earlier run) uses.
fn unique(what: &str) -> String {
    format!("zp-bridge-test-{what}-{:08x}", rand::random::<u32>())
}

/// Removes what a test made in the engine when dropped, so a failed test leaves nothing
/// running.
#[derive(Default)]
struct Cleanup {
    containers: Vec<String>,
    images: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let (containers, images) = (self.containers.clone(), self.images.clone());
        // A runtime of its own, on a thread of its own: the test's may be gone or busy.
        let removal = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the clean-up");
            runtime.block_on(async {
                let Ok(client) = Docker::new(endpoint()).client().await else {
                    return;
                };
                for container in containers {
                    let options = RemoveContainerOptionsBuilder::new()
                        .force(true)
                        .v(true)
                        .build();
                    let _ = client.remove_container(&container, Some(options)).await;
                }
                for image in images {
                    let options = RemoveImageOptionsBuilder::new().force(true).build();
                    let _ = client.remove_image(&image, Some(options), None).await;
                }
            });
        });
        let _ = removal.join();
    }
}

async fn request(docker: &Docker, op: Op) -> Result<Reply, DockerFailure> {
    let reply = docker.request(DockerRequest { op: Some(op) }).await?;
    Ok(reply.result.expect("a reply has a result"))
}

async fn container(docker: &Docker, op: Op) -> ContainerSummary {
    match request(docker, op).await {
        Ok(Reply::Container(summary)) => summary,
        other => panic!("no container in {other:?}"),
    }
}

/// A running test container printing `ready`, then running `script`.
async fn run(docker: &Docker, cleanup: &mut Cleanup, what: &str, script: &str) -> String {
    let name = unique(what);
    cleanup.containers.push(name.clone());
    let spec = ContainerSpec {
        image: TEST_IMAGE.into(),
        name: name.clone(),
        command: ["sh", "-c", &format!("echo ready; {script}")]
            .map(String::from)
            .into(),
        start: true,
        ..ContainerSpec::default()
    };
    let created = container(docker, Op::Create(spec)).await;
    assert_eq!(created.state, "running", "{created:?}");
    name
}

fn action(container: &str, verb: ContainerVerb) -> Op {
    Op::Action(ContainerAction {
        container: container.into(),
        verb: verb as i32,
        timeout_seconds: Some(1),
        ..ContainerAction::default()
    })
}

#[tokio::test]
async fn containers_are_created_listed_acted_on_and_renamed() {
    let docker = Docker::new(endpoint());
    let mut cleanup = Cleanup::default();
    let Ok(Reply::Engine(engine)) = request(&docker, Op::Engine(DockerEmpty {})).await else {
        panic!("no engine description");
    };
    assert!(engine.available, "{engine:?}");
    assert!(!engine.version.is_empty() && !engine.api_version.is_empty());
    assert_eq!(engine.endpoint, endpoint());

    let name = unique("life");
    cleanup.containers.push(name.clone());
    let spec = ContainerSpec {
        image: TEST_IMAGE.into(),
        name: name.clone(),
        command: ["sh", "-c", "echo ready; sleep 300"]
            .map(String::from)
            .into(),
        env: vec!["GREETING=hello".into()],
        restart: "on-failure:2".into(),
        memory_bytes: 64 * MIB,
        cpus: 0.5,
        labels: HashMap::from([("zpanel.test".into(), "life".into())]),
        start: true,
        ..ContainerSpec::default()
    };
    let created = container(&docker, Op::Create(spec)).await;
    assert_eq!(
        (
            created.name.as_str(),
            created.state.as_str(),
            created.image.as_str()
        ),
        (name.as_str(), "running", TEST_IMAGE)
    );
    assert_eq!(created.labels["zpanel.test"], "life");

    let Ok(Reply::Stats(stats)) = request(
        &docker,
        Op::Stats(ContainerRef {
            container: name.clone(),
        }),
    )
    .await
    else {
        panic!("no stats sample");
    };
    assert_eq!(stats.memory_limit_bytes, 64 * MIB, "{stats:?}");
    assert!(stats.pids >= 1 && stats.memory_bytes > 0, "{stats:?}");

    let running = ContainerList { all: false };
    let Ok(Reply::Containers(listing)) = request(&docker, Op::Containers(running)).await else {
        panic!("no listing");
    };
    assert!(listing.containers.iter().any(|c| c.name == name));
    let Ok(Reply::Top(top)) = request(
        &docker,
        Op::Top(ContainerRef {
            container: name.clone(),
        }),
    )
    .await
    else {
        panic!("no processes");
    };
    assert!(
        top.processes
            .iter()
            .any(|row| row.fields.join(" ").contains("sleep 300")),
        "{top:?}"
    );
    let Ok(Reply::InspectJson(inspected)) = request(
        &docker,
        Op::Inspect(ContainerRef {
            container: name.clone(),
        }),
    )
    .await
    else {
        panic!("no inspect document");
    };
    let inspected: serde_json::Value = serde_json::from_str(&inspected).unwrap();
    assert_eq!(inspected["Id"], created.id.as_str());
    assert_eq!(inspected["HostConfig"]["NanoCpus"], 500_000_000);
    assert_eq!(
        inspected["HostConfig"]["RestartPolicy"]["MaximumRetryCount"],
        2
    );

    let states = [
        (ContainerVerb::Stop, "exited"),
        (ContainerVerb::Restart, "running"),
        (ContainerVerb::Pause, "paused"),
        (ContainerVerb::Unpause, "running"),
        (ContainerVerb::Kill, "exited"),
        (ContainerVerb::Start, "running"),
    ];
    for (verb, state) in states {
        let acted = container(&docker, action(&name, verb)).await;
        assert_eq!(acted.state, state, "after {verb:?}: {acted:?}");
    }

    let renamed_to = unique("renamed");
    cleanup.containers.push(renamed_to.clone());
    let rename = ContainerRename {
        container: name.clone(),
        name: renamed_to.clone(),
    };
    let renamed = container(&docker, Op::Rename(rename)).await;
    assert_eq!(
        (renamed.id.as_str(), renamed.name.as_str()),
        (created.id.as_str(), renamed_to.as_str())
    );

    let not_forced = request(&docker, action(&renamed_to, ContainerVerb::Remove)).await;
    assert_eq!(not_forced.unwrap_err().kind, DockerError::Conflict);
    let remove = Op::Action(ContainerAction {
        container: renamed_to.clone(),
        verb: ContainerVerb::Remove as i32,
        force: true,
        volumes: true,
        ..ContainerAction::default()
    });
    assert_eq!(
        request(&docker, remove).await,
        Ok(Reply::Removed(renamed_to.clone()))
    );
    let gone = request(&docker, action(&renamed_to, ContainerVerb::Start)).await;
    let gone = gone.unwrap_err();
    assert_eq!(gone.kind, DockerError::NotFound, "{gone:?}");
    assert!(gone.message.contains(&renamed_to), "{gone:?}");
}

#[tokio::test]
async fn bad_specs_are_refused_with_the_engine_s_reason() {
    let docker = Docker::new(endpoint());
    let mut cleanup = Cleanup::default();
    let create = |spec: ContainerSpec| Op::Create(spec);
    let missing = ContainerSpec {
        image: "zpanel-test/no-such-image:latest".into(),
        name: unique("missing"),
        ..ContainerSpec::default()
    };
    let failure = request(&docker, create(missing)).await.unwrap_err();
    assert_eq!(failure.kind, DockerError::NotFound, "{failure:?}");
    assert!(failure.message.contains("no-such-image"), "{failure:?}");

    let name = run(&docker, &mut cleanup, "taken", "sleep 300").await;
    let taken = ContainerSpec {
        image: TEST_IMAGE.into(),
        name: name.clone(),
        command: vec!["sh".into()],
        ..ContainerSpec::default()
    };
    let failure = request(&docker, create(taken)).await.unwrap_err();
    assert_eq!(failure.kind, DockerError::Conflict, "{failure:?}");
    assert!(failure.message.contains(&name), "{failure:?}");

    let tiny = ContainerSpec {
        image: TEST_IMAGE.into(),
        name: unique("tiny"),
        memory_bytes: MIB,
        ..ContainerSpec::default()
    };
    cleanup.containers.push(tiny.name.clone());
    let failure = request(&docker, create(tiny)).await.unwrap_err();
    assert_eq!(failure.kind, DockerError::Invalid, "{failure:?}");
    assert!(failure.message.contains("memory"), "{failure:?}");

    let policy = ContainerSpec {
        image: TEST_IMAGE.into(),
        restart: "sometimes".into(),
        ..ContainerSpec::default()
    };
    let failure = request(&docker, create(policy)).await.unwrap_err();
    assert_eq!(failure.kind, DockerError::Invalid, "{failure:?}");

    // names go into the engine's URL paths: one that would reach another endpoint is refused
    for sneaky in ["../../images/prune?", "web/../../volumes", "a b"] {
        let failure = request(&docker, action(sneaky, ContainerVerb::Stop)).await;
        assert_eq!(failure.unwrap_err().kind, DockerError::Invalid, "{sneaky}");
    }
    let remove = zpanel_proto::ImageRemove {
        image: "busybox/../../../containers/prune?".into(),
        force: false,
    };
    let failure = request(&docker, Op::RemoveImage(remove)).await.unwrap_err();
    assert_eq!(failure.kind, DockerError::Invalid, "{failure:?}");

    // through a session: the open's error says what the Docker error means
    let (session, mut frames) = session_with(&[], Policy::default(), &endpoint());
    let stop = DockerRequest {
        op: Some(action(
            "zp-bridge-test-no-such-container",
            ContainerVerb::Stop,
        )),
    };
    open(&session, 1, open::Request::Docker(stop));
    let refused = expect(&mut frames, opened(1)).await;
    assert_eq!(
        (refused.error(), refused.docker_error()),
        (OpenError::NotFound, DockerError::NotFound)
    );
    assert!(refused.message.contains("no-such-container"), "{refused:?}");
}

/// Everything a Docker channel sends on its streams until both ended, acknowledging it.
struct Received {
    stdout: String,
    stderr: String,
    ended: usize,
}

impl Received {
    fn new() -> Received {
        Received {
            stdout: String::new(),
            stderr: String::new(),
            ended: 0,
        }
    }

    /// Takes chunks until `done` holds.
    async fn until(
        &mut self,
        session: &DaemonSession,
        frames: &mut mpsc::Receiver<Body>,
        channel_id: u64,
        done: impl Fn(&Received) -> bool,
    ) {
        while !done(self) {
            let chunk = expect(frames, chunk_on(channel_id)).await;
            let text = String::from_utf8_lossy(&chunk.payload);
            match chunk.stream() {
                StreamKind::Stderr => self.stderr.push_str(&text),
                _ => self.stdout.push_str(&text),
            }
            self.ended += usize::from(chunk.eof);
            let ack = StreamAck {
                stream: chunk.stream,
                offset: chunk.offset + chunk.payload.len() as u64,
            };
            let ack = ChannelAck {
                channel_id,
                ack: Some(ack),
            };
            session.on_frame(Body::Ack(ack)).unwrap();
        }
    }
}

#[tokio::test]
async fn logs_follow_lines_written_after_the_follow_began_and_end_when_the_container_goes() {
    let docker = Docker::new(endpoint());
    let mut cleanup = Cleanup::default();
    let script = "while [ ! -f /go ]; do sleep 0.1; done; echo after-follow; echo oops >&2; \
                  sleep 300";
    let name = run(&docker, &mut cleanup, "logs", script).await;
    let (session, mut frames) = session_with(&[], Policy::default(), &endpoint());

    let logs = DockerLogs {
        container: name.clone(),
        follow: true,
        ..DockerLogs::default()
    };
    open(&session, 1, open::Request::DockerLogs(logs));
    assert_eq!(
        expect(&mut frames, opened(1)).await.error(),
        OpenError::None
    );
    let mut received = Received::new();
    received
        .until(&session, &mut frames, 1, |r| r.stdout.contains("ready"))
        .await;
    assert!(!received.stdout.contains("after-follow"));

    let client = docker.client().await.unwrap();
    let touch = bollard::models::ExecConfig {
        cmd: Some(["sh", "-c", ": > /go"].map(String::from).into()),
        ..Default::default()
    };
    let exec = client.create_exec(&name, touch).await.unwrap();
    let detached = bollard::exec::StartExecOptions {
        detach: true,
        ..Default::default()
    };
    client.start_exec(&exec.id, Some(detached)).await.unwrap();
    received
        .until(&session, &mut frames, 1, |r| {
            r.stdout.contains("after-follow\n") && r.stderr.contains("oops\n")
        })
        .await;

    // removed while followed: both streams end
    let remove = Op::Action(ContainerAction {
        container: name.clone(),
        verb: ContainerVerb::Remove as i32,
        force: true,
        ..ContainerAction::default()
    });
    request(&docker, remove).await.unwrap();
    received
        .until(&session, &mut frames, 1, |r| r.ended == 2)
        .await;

    // the logs of a container that is gone are refused
    let logs = DockerLogs {
        container: name.clone(),
        ..DockerLogs::default()
    };
    open(&session, 2, open::Request::DockerLogs(logs));
    let refused = expect(&mut frames, opened(2)).await;
    assert_eq!(refused.docker_error(), DockerError::NotFound, "{refused:?}");
}

#[tokio::test]
async fn stats_and_events_arrive_while_the_channel_is_open() {
    let docker = Docker::new(endpoint());
    let mut cleanup = Cleanup::default();
    let (session, mut frames) = session_with(&[], Policy::default(), &endpoint());
    open(
        &session,
        1,
        open::Request::DockerEvents(DockerEventsWatch {}),
    );
    assert_eq!(
        expect(&mut frames, opened(1)).await.error(),
        OpenError::None
    );

    let name = run(&docker, &mut cleanup, "events", "sleep 300").await;
    let started = expect(&mut frames, |body| match body {
        Body::DockerUpdate(update) if update.channel_id == 1 => {
            match update.update.as_ref()?.update.as_ref()? {
                Update::Event(event) if event.name == name && event.action == "start" => {
                    Some(event.clone())
                }
                _ => None,
            }
        }
        _ => None,
    })
    .await;
    assert_eq!(started.kind, "container");
    assert!(started.time_ms > 0 && !started.id.is_empty(), "{started:?}");

    let watch = DockerStatsWatch {
        container: name.clone(),
    };
    open(&session, 2, open::Request::DockerStats(watch));
    assert_eq!(
        expect(&mut frames, opened(2)).await.error(),
        OpenError::None
    );
    for _ in 0..2 {
        let sample = expect(&mut frames, |body| match body {
            Body::DockerUpdate(update) if update.channel_id == 2 => {
                match update.update.as_ref()?.update.as_ref()? {
                    Update::Stats(stats) => Some(stats.clone()),
                    _ => None,
                }
            }
            _ => None,
        })
        .await;
        assert_eq!(sample.container, name);
        assert!(sample.pids >= 1, "{sample:?}");
    }

    // the container goes: the events say so, its stats channel closes with the reason
    request(&docker, action(&name, ContainerVerb::Kill))
        .await
        .unwrap();
    let died = expect(&mut frames, |body| match body {
        Body::DockerUpdate(update) if update.channel_id == 1 => {
            match update.update.as_ref()?.update.as_ref()? {
                Update::Event(event) if event.name == name && event.action == "die" => {
                    Some(event.clone())
                }
                _ => None,
            }
        }
        _ => None,
    })
    .await;
    assert_eq!(died.exit_code, Some(137), "{died:?}");
    let closed = expect(&mut frames, |body| match body {
        Body::Close(close) if close.channel_id == 2 => Some(close.clone()),
        _ => None,
    })
    .await;
    assert!(closed.reason.contains(&name), "{closed:?}");
}

/// The outcome a pull or import channel ends with.
fn done_on(channel_id: u64) -> impl FnMut(&Body) -> Option<DockerOutcome> {
    move |body| match body {
        Body::DockerDone(done) if done.channel_id == channel_id => done.outcome.clone(),
        _ => None,
    }
}

#[tokio::test]
async fn a_pull_that_cannot_reach_a_registry_fails_cleanly() {
    let (session, mut frames) = session_with(&[], Policy::default(), &endpoint());
    let pull = DockerPull {
        image: "zpanel-test/no-such-image".into(),
    };
    open(&session, 1, open::Request::DockerPull(pull));
    assert_eq!(
        expect(&mut frames, opened(1)).await.error(),
        OpenError::None
    );
    let outcome = expect(&mut frames, done_on(1)).await;
    assert_ne!(outcome.error(), DockerError::None, "{outcome:?}");
    assert!(!outcome.message.is_empty() && outcome.reply.is_none());
}

#[tokio::test]
async fn an_import_takes_a_tarball_on_stdin() {
    let mut cleanup = Cleanup::default();
    let mut tarball = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    let content = b"imported by zpanel\n";
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tarball
        .append_data(&mut header, "hello.txt", &content[..])
        .unwrap();
    let tarball = Bytes::from(tarball.into_inner().unwrap());

    let repo = unique("import");
    let image = format!("{repo}:v1");
    cleanup.images.push(image.clone());
    let (session, mut frames) = session_with(&[], Policy::default(), &endpoint());
    open(
        &session,
        1,
        open::Request::DockerImport(DockerImport {
            image: image.clone(),
        }),
    );
    let answer = expect(&mut frames, opened(1)).await;
    assert_eq!((answer.error(), answer.stdin_offset), (OpenError::None, 0));
    let (first, rest) = tarball.split_at(tarball.len() / 2);
    for (offset, piece, eof) in [(0, first, false), (first.len(), rest, true)] {
        let chunk = StreamChunk {
            stream: StreamKind::Stdin as i32,
            offset: offset as u64,
            payload: Bytes::copy_from_slice(piece),
            eof,
        };
        session
            .on_frame(Body::Data(ChannelData {
                channel_id: 1,
                chunk: Some(chunk),
            }))
            .unwrap();
    }
    let outcome = expect(&mut frames, done_on(1)).await;
    let Some(Reply::ImageId(id)) = outcome.reply.and_then(|reply| reply.result) else {
        panic!("no image id in {:?}", outcome.message);
    };
    assert!(id.starts_with("sha256:"), "{id}");

    let docker = Docker::new(endpoint());
    let Ok(Reply::Images(images)) = request(&docker, Op::Images(Default::default())).await else {
        panic!("no images");
    };
    let imported = images
        .images
        .iter()
        .find(|i| i.id == id)
        .expect("the image is listed");
    assert_eq!(imported.tags, [image]);
}

#[tokio::test]
async fn an_engine_that_does_not_answer_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    // a socket nobody listens on any more, and no socket at all
    let stale = dir.path().join("docker.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let missing = dir.path().join("missing.sock");
    for path in [&stale, &missing] {
        let endpoint = format!("unix://{}", path.display());
        let docker = Docker::new(endpoint.clone());
        let Ok(Reply::Engine(engine)) = request(&docker, Op::Engine(DockerEmpty {})).await else {
            panic!("no engine description");
        };
        assert!(!engine.available);
        assert!(
            engine
                .message
                .starts_with(&format!("no Docker engine answers at {endpoint}: "))
                && engine
                    .message
                    .ends_with("; start it or set [docker] endpoint in bridge.toml"),
            "{}",
            engine.message
        );
        let failure = request(&docker, Op::Containers(ContainerList { all: true })).await;
        assert_eq!(failure.unwrap_err().kind, DockerError::Unavailable);
    }

    let endpoint = format!("unix://{}", missing.display());
    let (session, mut frames) = session_with(&[], Policy::default(), &endpoint);
    let watch = DockerEventsWatch {};
    open(&session, 1, open::Request::DockerEvents(watch));
    let refused = expect(&mut frames, opened(1)).await;
    assert_eq!(
        (refused.error(), refused.docker_error()),
        (OpenError::Refused, DockerError::Unavailable)
    );
}

#[tokio::test]
async fn the_policy_can_turn_docker_off() {
    let policy = Policy {
        capabilities: [Capability::Exec].into(),
        ..Policy::default()
    };
    let (session, mut frames) = session_with(&[], policy, &endpoint());
    let engine = DockerRequest {
        op: Some(Op::Engine(DockerEmpty {})),
    };
    open(&session, 1, open::Request::Docker(engine));
    let refused = expect(&mut frames, opened(1)).await;
    assert_eq!(
        (refused.error(), refused.message.as_str()),
        (
            OpenError::Forbidden,
            "this host's policy does not offer containers (\"docker\" is not in bridge.toml \
             [policy] capabilities)"
        )
    );
    assert!(!matches!(
        refused.reply,
        Some(open_result::Reply::Docker(_))
    ));
}

/// A proxy in front of the test engine's socket that can be cut (its socket and every
/// connection through it gone) and put back, like an engine that restarts.
struct Proxy {
    path: std::path::PathBuf,
    serving: Option<tokio::task::JoinHandle<()>>,
}

impl Proxy {
    fn new(path: std::path::PathBuf) -> Proxy {
        let mut proxy = Proxy {
            path,
            serving: None,
        };
        proxy.listen();
        proxy
    }

    fn listen(&mut self) {
        let engine = endpoint();
        let engine = engine
            .strip_prefix("unix://")
            .expect("the test engine listens on a unix socket")
            .to_string();
        let listener = tokio::net::UnixListener::bind(&self.path).unwrap();
        self.serving = Some(tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                let engine = engine.clone();
                connections.spawn(async move {
                    if let Ok(mut engine) = tokio::net::UnixStream::connect(engine).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut engine).await;
                    }
                });
            }
        }));
    }

    fn cut(&mut self) {
        if let Some(serving) = self.serving.take() {
            serving.abort();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

#[tokio::test]
async fn an_engine_that_goes_away_ends_its_streams_and_is_found_again() {
    let docker = Docker::new(endpoint());
    let mut cleanup = Cleanup::default();
    let ticks = "i=0; while true; do i=$((i+1)); echo tick-$i; sleep 0.1; done";
    let name = run(&docker, &mut cleanup, "away", ticks).await;
    let dir = tempfile::tempdir().unwrap();
    let mut proxy = Proxy::new(dir.path().join("engine.sock"));
    let proxied = format!("unix://{}", proxy.path.display());
    let (session, mut frames) = session_with(&[], Policy::default(), &proxied);
    let logs = DockerLogs {
        container: name.clone(),
        follow: true,
        ..DockerLogs::default()
    };
    open(&session, 1, open::Request::DockerLogs(logs));
    let proxied_docker = Docker::new(proxied);
    let all = || Op::Containers(ContainerList { all: true });
    assert!(request(&proxied_docker, all()).await.is_ok());
    assert_eq!(
        expect(&mut frames, opened(1)).await.error(),
        OpenError::None
    );
    let mut received = Received::new();
    received
        .until(&session, &mut frames, 1, |r| r.stdout.contains("tick-3\n"))
        .await;

    proxy.cut();
    // the channel closes with the reason; nothing pretends the logs ended
    let closed = expect(&mut frames, |body| match body {
        Body::Close(close) if close.channel_id == 1 => Some(close.reason.clone()),
        Body::Data(ChannelData {
            channel_id: 1,
            chunk: Some(chunk),
        }) if chunk.eof => Some("an end of stream".into()),
        _ => None,
    })
    .await;
    assert!(
        closed.starts_with(&format!(
            "the logs of container {name} stopped: the connection to the Docker engine at unix://"
        )),
        "{closed}"
    );
    let failure = request(&proxied_docker, all()).await;
    assert_eq!(failure.unwrap_err().kind, DockerError::Unavailable);

    proxy.listen();
    let Ok(Reply::Containers(listing)) = request(&proxied_docker, all()).await else {
        panic!("the engine was not found again");
    };
    assert!(listing.containers.iter().any(|c| c.name == name));
    proxy.cut();
}
