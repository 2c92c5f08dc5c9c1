//! A shell inside a container through a terminal session: the daemon's own binary runs
//! `container-shell` in the pseudo-terminal, against the engine of `ZPANEL_TEST_DOCKER_HOST`
//! (started by `scripts/test`, with the offline image `zpanel-test/busybox:latest`).

use std::time::Duration;

use bytes::Bytes;
use zpanel_bridge::config::TerminalAccounts;
use zpanel_bridge::docker::Docker;
use zpanel_bridge::terminal::{ContainerShells, TerminalLimits, Terminals, Viewer};
use zpanel_proto::docker_request::Op;
use zpanel_proto::{
    ContainerAction, ContainerSpec, ContainerVerb, DockerRequest, ProcessExit, TerminalOpen,
    TerminalSize,
};
use zpanel_shared::replay::Read;

/// How long any one step may take.
const STEP: Duration = Duration::from_secs(20);

fn endpoint() -> String {
    std::env::var("ZPANEL_TEST_DOCKER_HOST").unwrap_or_else(|_| {
        panic!("set ZPANEL_TEST_DOCKER_HOST to a Docker engine (scripts/test starts one)")
    })
}

fn terminals() -> std::sync::Arc<Terminals> {
    let limits = TerminalLimits {
        window: 1 << 20,
        scrollback: 1 << 20,
        idle_timeout: Duration::from_secs(600),
        max_sessions: 8,
    };
    let containers = ContainerShells {
        endpoint: endpoint(),
        program: Some(env!("CARGO_BIN_EXE_zpanel-bridge").into()),
    };
    Terminals::new(limits, TerminalAccounts::default(), containers)
}

fn shell_in(session_id: &str, container: &str) -> TerminalOpen {
    TerminalOpen {
        session_id: session_id.into(),
        owner_id: "u-alice".into(),
        owner_name: "alice".into(),
        size: Some(TerminalSize { cols: 80, rows: 24 }),
        container: container.into(),
        ..TerminalOpen::default()
    }
}

/// The controller's side of a terminal: what it typed and read.
struct Screen {
    viewer: Viewer,
    typed: u64,
    text: String,
    read: u64,
}

impl Screen {
    fn new(viewer: Viewer) -> Screen {
        Screen {
            viewer,
            typed: 0,
            text: String::new(),
            read: 0,
        }
    }

    fn type_line(&mut self, line: &str) {
        let keys = Bytes::from(format!("{line}\r"));
        let length = keys.len() as u64;
        self.viewer.input(self.typed, keys).unwrap();
        self.typed += length;
    }

    /// Reads (and acknowledges) output until it holds `needle`; false at its end.
    async fn read_until(&mut self, needle: &str) -> bool {
        while !self.text.contains(needle) {
            let output = self.viewer.session().output();
            let read = tokio::time::timeout(STEP, output.read_at(self.read, 1 << 16))
                .await
                .unwrap_or_else(|_| panic!("no {needle:?} on the screen: {:?}", self.text));
            match read.unwrap() {
                Read::Data(data) => {
                    self.text.push_str(&String::from_utf8_lossy(&data));
                    self.read += data.len() as u64;
                    self.viewer.ack(self.read).unwrap();
                }
                Read::Eof | Read::Pending => return false,
            }
        }
        true
    }

    async fn exit(&mut self) -> ProcessExit {
        assert!(!self.read_until("\u{0}never\u{0}").await);
        let mut exit = self.viewer.session().exit();
        let exit = tokio::time::timeout(STEP, exit.wait_for(Option::is_some))
            .await
            .expect("the shell exits")
            .unwrap();
        exit.expect("an exit")
    }
}

/// A running container, removed when dropped.
struct Container {
    docker: std::sync::Arc<Docker>,
    name: String,
}

impl Container {
    async fn run() -> Container {
        let docker = Docker::new(endpoint());
        let name = format!("zp-bridge-test-shell-{:08x}", rand::random::<u32>());
        let spec = ContainerSpec {
            image: "zpanel-test/busybox:latest".into(),
            name: name.clone(),
            command: ["sleep", "300"].map(String::from).into(),
            start: true,
            ..ContainerSpec::default()
        };
        let request = DockerRequest {
            op: Some(Op::Create(spec)),
        };
        docker.request(request).await.expect("the container runs");
        Container { docker, name }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let (docker, name) = (self.docker.clone(), self.name.clone());
        let remove = Op::Action(ContainerAction {
            container: name,
            verb: ContainerVerb::Remove as i32,
            force: true,
            ..ContainerAction::default()
        });
        let removal = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the clean-up");
            let request = DockerRequest { op: Some(remove) };
            let _ = runtime.block_on(docker.request(request));
        });
        let _ = removal.join();
    }
}

#[tokio::test]
async fn a_shell_in_a_container_runs_commands_and_exits_with_their_code() {
    let container = Container::run().await;
    let terminals = terminals();
    let viewer = terminals
        .open(&shell_in("in-container", &container.name))
        .unwrap();
    let info = viewer.session().info();
    assert_eq!(
        (info.container.as_str(), info.command.as_str()),
        (container.name.as_str(), "sh")
    );
    let mut screen = Screen::new(viewer);
    screen.type_line("echo zp-$((40+2))");
    assert!(screen.read_until("zp-42\r\n").await);
    // the container's processes: the shell runs in there, not on the host
    screen.type_line("ps");
    assert!(screen.read_until("sleep 300").await);

    screen.type_line("exit 3");
    let exit = screen.exit().await;
    assert_eq!((exit.code, exit.signal), (3, 0), "{:?}", screen.text);
}

#[tokio::test]
async fn a_shell_in_a_missing_container_says_so_and_exits_1() {
    let terminals = terminals();
    let missing = "zp-bridge-test-no-such-container";
    let mut screen = Screen::new(terminals.open(&shell_in("missing", missing)).unwrap());
    let exit = screen.exit().await;
    assert_eq!(exit.code, 1, "{:?}", screen.text);
    assert!(
        screen
            .text
            .contains(&format!("no such container: {missing}")),
        "{:?}",
        screen.text
    );

    // a name that looks like a flag stays a name, and not one a container can have
    let sneaky = "--endpoint=tcp://127.0.0.1:1";
    let mut screen = Screen::new(terminals.open(&shell_in("sneaky", sneaky)).unwrap());
    assert_eq!(screen.exit().await.code, 1, "{:?}", screen.text);
    assert!(
        screen.text.contains("is not a container id or name"),
        "{:?}",
        screen.text
    );
}
