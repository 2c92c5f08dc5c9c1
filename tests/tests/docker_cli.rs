//! `zpanel docker` end to end over gRPC, against a real engine (see `tests/docker.rs`): what a
//! user types, checked against what the engine really did.

use std::time::Duration;

use serde_json::Value;
use zpanel_tests::docker::{Cleanup, TEST_IMAGE, docker_ok, unique_name};
use zpanel_tests::pty::PtyCli;
use zpanel_tests::{Cli, ControlPlane, Daemon, assert_eventually, stderr, stdout};

const HOST: &str = "docker-cli";

async fn setup() -> (ControlPlane, Cli, Daemon) {
    let cp = ControlPlane::start().await;
    let cli = cp.admin_cli().await;
    let daemon = cp.add_docker_host(&cli, HOST).await;
    (cp, cli, daemon)
}

/// Runs `zpanel docker HOST ARGS...` and returns its standard output, failing on an error.
async fn zd(cli: &Cli, args: &[&str]) -> String {
    let out = zd_output(cli, args).await;
    assert!(
        out.status.success(),
        "zpanel docker {args:?} failed: {}",
        stderr(&out)
    );
    stdout(&out)
}

async fn zd_output(cli: &Cli, args: &[&str]) -> std::process::Output {
    let mut all = vec!["docker", HOST];
    all.extend_from_slice(args);
    cli.run(&all).await
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// A failure: non-zero, one line on stderr that contains `needle`, nothing on stdout.
fn one_line_error(out: &std::process::Output, needle: &str, case: &str) {
    assert!(!out.status.success(), "{case}: succeeded");
    let err = stderr(out);
    assert_eq!(
        err.trim().lines().count(),
        1,
        "{case}: not one line: {err:?}"
    );
    assert!(
        err.contains(needle),
        "{case}: {err:?} does not name {needle:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn containers_from_the_command_line() {
    let (_cp, cli, _daemon) = setup().await;
    let mut cleanup = Cleanup::new();

    let info = zd(&cli, &["info"]).await;
    assert!(info.to_lowercase().contains("version"), "{info}");

    // run -d with limits and labels prints the id.
    let name = cleanup.container(&unique_name("cli"));
    let id = zd(
        &cli,
        &[
            "run",
            "-d",
            "--name",
            &name,
            "-m",
            "64m",
            "-l",
            "zpanel.test=cli",
            "-e",
            "GREETING=hello",
            TEST_IMAGE,
            "sh",
            "-c",
            "echo $GREETING from the container; echo oops >&2; exec sleep 600",
        ],
    )
    .await;
    let id = id.trim().to_string();
    assert!(id.len() >= 12, "run -d printed {id:?}");
    assert_eq!(
        docker_ok(&["inspect", "-f", "{{.HostConfig.Memory}}", &name]).await,
        (64 * 1024 * 1024).to_string()
    );

    let table = zd(&cli, &["ps"]).await;
    assert!(
        table.contains(&name) && table.contains(&id[..12]),
        "{table}"
    );
    let listed = json(&zd(&cli, &["ps", "--json"]).await);
    let ours = listed
        .as_array()
        .and_then(|list| list.iter().find(|c| c["name"] == name.as_str()))
        .cloned()
        .unwrap_or_else(|| panic!("{name} not in {listed}"));
    assert_eq!(ours["state"], "running");
    assert_eq!(ours["labels"]["zpanel.test"], "cli");

    let stats = json(&zd(&cli, &["stats", "--no-stream", "--json", &name]).await);
    let sample = stats
        .as_array()
        .and_then(|s| s.first())
        .cloned()
        .unwrap_or(stats);
    assert_eq!(sample["memory_limit_bytes"], 64 * 1024 * 1024, "{sample}");

    // Logs: stdout to stdout, stderr to stderr.
    assert_eventually!(
        !zd_output(&cli, &["logs", &name]).await.stdout.is_empty(),
        Duration::from_secs(20),
        "no logs"
    );
    let logs = zd_output(&cli, &["logs", &name]).await;
    assert!(
        stdout(&logs).contains("hello from the container"),
        "{logs:?}"
    );
    assert!(stderr(&logs).contains("oops"), "{logs:?}");
    assert!(!stdout(&logs).contains("oops"));

    let top = zd(&cli, &["top", &name]).await;
    assert!(top.contains("sleep"), "{top}");
    let inspect = json(&zd(&cli, &["inspect", &name]).await);
    assert_eq!(inspect["Id"], id.as_str());

    // Stop: gone from ps, still in ps -a; then rm.
    zd(&cli, &["stop", "-t", "1", &name]).await;
    assert_eq!(
        docker_ok(&["inspect", "-f", "{{.State.Status}}", &name]).await,
        "exited"
    );
    assert!(!zd(&cli, &["ps"]).await.contains(&name));
    assert!(zd(&cli, &["ps", "-a"]).await.contains(&name));
    zd(&cli, &["start", &name]).await;
    zd(&cli, &["restart", "-t", "1", &name]).await;
    let running = zd_output(&cli, &["rm", &name]).await;
    one_line_error(&running, &name, "rm of a running container");
    zd(&cli, &["rm", "-f", &name]).await;
    let gone = docker_ok(&["ps", "-a", "--filter", &format!("name={name}"), "-q"]).await;
    assert!(gone.is_empty(), "still there: {gone}");

    // run without -d waits and prints the output; logs -f of a container that ends, ends.
    let short = cleanup.container(&unique_name("cli-short"));
    let printed = zd(
        &cli,
        &["run", "--name", &short, TEST_IMAGE, "sh", "-c", "seq 1 5"],
    )
    .await;
    assert_eq!(
        printed.split_whitespace().collect::<Vec<_>>(),
        ["1", "2", "3", "4", "5"]
    );
    let followed = zd(&cli, &["logs", "-f", "--tail", "2", &short]).await;
    assert_eq!(followed.split_whitespace().collect::<Vec<_>>(), ["4", "5"]);

    // Bad input: one line each.
    let missing = zd_output(&cli, &["run", "-d", "zpanel-test/no-such-image:1"]).await;
    one_line_error(&missing, "no-such-image", "run of a missing image");
    let taken = zd_output(&cli, &["run", "-d", "--name", &short, TEST_IMAGE, "true"]).await;
    one_line_error(&taken, &short, "run with a taken name");
    let pull = zd_output(&cli, &["pull", "zpanel-test/never-published:1"]).await;
    assert!(!pull.status.success(), "a pull with no registry succeeded");
    assert!(stderr(&pull).contains("never-published"), "{pull:?}");
    let bad_memory = zd_output(&cli, &["run", "-d", "-m", "lots", TEST_IMAGE, "true"]).await;
    one_line_error(&bad_memory, "lots", "a memory size that is not one");
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_it_opens_a_shell_in_the_container() {
    let (_cp, cli, _daemon) = setup().await;
    let mut cleanup = Cleanup::new();
    let name = cleanup.container(&unique_name("cli-exec"));
    zd(
        &cli,
        &["run", "-d", "--name", &name, TEST_IMAGE, "sleep", "600"],
    )
    .await;

    let mut shell = PtyCli::spawn(&cli, &["docker", HOST, "exec", "-it", &name, "sh"], 90, 20)
        .expect("spawn zpanel docker exec");
    shell.type_text("echo zp-$((6*7)); stty size\n");
    shell.expect("zp-42", Duration::from_secs(20)).await;
    shell.expect("20 90", Duration::from_secs(20)).await;
    shell.type_text("exit 5\n");
    assert_eq!(shell.exit_code(Duration::from_secs(20)).await.unwrap(), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn images_volumes_and_networks_from_the_command_line() {
    let (_cp, cli, _daemon) = setup().await;
    let mut cleanup = Cleanup::new();

    let images = json(&zd(&cli, &["images", "--json"]).await);
    assert!(
        images
            .as_array()
            .is_some_and(|list| list.iter().any(|i| i["tags"]
                .as_array()
                .is_some_and(|tags| tags.iter().any(|t| t == TEST_IMAGE)))),
        "{images}"
    );

    // Import a root file system tarball as an image, run it, remove it.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
    std::fs::write(root.join("hello.txt"), "imported through zpanel\n").unwrap();
    let tarball = dir.path().join("root.tar");
    let tar = tokio::process::Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tarball)
        .arg(".")
        .status()
        .await
        .unwrap();
    assert!(tar.success());
    let image = format!("{}:v1", unique_name("imported"));
    cleanup.images.push(image.clone());
    let imported = zd(&cli, &["import", tarball.to_str().unwrap(), &image]).await;
    assert!(imported.contains("sha256:"), "{imported}");
    let run = cleanup.container(&unique_name("imported-run"));
    let printed = zd(
        &cli,
        &[
            "run",
            "--name",
            &run,
            &image,
            "/bin/busybox",
            "cat",
            "/hello.txt",
        ],
    )
    .await;
    assert!(printed.contains("imported through zpanel"), "{printed}");
    zd(&cli, &["rm", &run]).await;
    zd(&cli, &["rmi", &image]).await;
    assert!(!zd(&cli, &["images"]).await.contains(&image));

    let volume = unique_name("volume");
    cleanup.volumes.push(volume.clone());
    zd(&cli, &["volumes", "create", &volume]).await;
    let volumes = json(&zd(&cli, &["volumes", "--json"]).await);
    assert!(volumes.to_string().contains(&volume), "{volumes}");
    assert_eq!(
        docker_ok(&["volume", "inspect", "-f", "{{.Name}}", &volume]).await,
        volume
    );
    zd(&cli, &["volumes", "rm", &volume]).await;
    assert!(!zd(&cli, &["volumes"]).await.contains(&volume));

    let network = unique_name("network");
    cleanup.networks.push(network.clone());
    zd(&cli, &["networks", "create", &network, "--internal"]).await;
    let networks = json(&zd(&cli, &["networks", "--json"]).await);
    let ours = networks
        .as_array()
        .and_then(|list| list.iter().find(|n| n["name"] == network.as_str()))
        .cloned()
        .unwrap_or_else(|| panic!("{network} not in {networks}"));
    assert_eq!(ours["internal"], true);
    zd(&cli, &["networks", "rm", &network]).await;
    let missing = zd_output(&cli, &["networks", "rm", &network]).await;
    one_line_error(&missing, &network, "removing a network twice");

    // Prune removes unused networks (of the shared test engine, only networks are never in use
    // by another test: stopped containers and images are).
    let unused = unique_name("unused");
    cleanup.networks.push(unused.clone());
    zd(&cli, &["networks", "create", &unused]).await;
    let pruned = zd(&cli, &["prune", "networks"]).await;
    assert!(pruned.contains(&unused), "{pruned}");
    assert!(!zd(&cli, &["networks"]).await.contains(&unused));
}
