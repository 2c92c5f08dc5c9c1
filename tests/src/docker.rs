//! The Docker engine the tests run against: its endpoint (started by `scripts/test`, named by
//! `ZPANEL_TEST_DOCKER_HOST`), the offline test image, and the `docker` CLI as a peer to set
//! things up and to check what the engine really did.

use std::process::Output;

use tokio::process::Command;

/// The environment variable naming the engine the tests use.
pub const ENDPOINT_VARIABLE: &str = "ZPANEL_TEST_DOCKER_HOST";

/// A busybox image built offline by `scripts/test` (there is no registry to pull from).
pub const TEST_IMAGE: &str = "zpanel-test/busybox:latest";

/// The endpoint of the test engine (`unix:///...`).
pub fn endpoint() -> String {
    std::env::var(ENDPOINT_VARIABLE).unwrap_or_else(|_| {
        panic!("set {ENDPOINT_VARIABLE} to a Docker engine (scripts/test starts one)")
    })
}

/// A name no other test (or earlier run) uses.
pub fn unique_name(prefix: &str) -> String {
    format!("zp-{prefix}-{}", &uuid_like()[..12])
}

fn uuid_like() -> String {
    use sha2::Digest;
    let seed = format!(
        "{:?}{}{:?}",
        std::time::SystemTime::now(),
        std::process::id(),
        std::thread::current().id()
    );
    hex::encode(sha2::Sha256::digest(seed.as_bytes()))
}

/// Runs the `docker` CLI against the test engine.
pub async fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .arg("-H")
        .arg(endpoint())
        .args(args)
        .output()
        .await
        .expect("run the docker CLI (scripts/test installs it)")
}

/// Runs the `docker` CLI and returns its standard output, failing the test on an error.
pub async fn docker_ok(args: &[&str]) -> String {
    let out = docker(args).await;
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Removes the named containers (and their anonymous volumes) when dropped, so a failed test
/// leaves nothing running in the engine.
pub struct Cleanup {
    pub containers: Vec<String>,
    pub images: Vec<String>,
    pub volumes: Vec<String>,
    pub networks: Vec<String>,
}

impl Cleanup {
    pub fn new() -> Cleanup {
        Cleanup {
            containers: Vec::new(),
            images: Vec::new(),
            volumes: Vec::new(),
            networks: Vec::new(),
        }
    }

    /// `name`, remembered for removal.
    pub fn container(&mut self, name: &str) -> String {
        self.containers.push(name.to_string());
        name.to_string()
    }
}

impl Default for Cleanup {
    fn default() -> Self {
        Cleanup::new()
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let endpoint = endpoint();
        let run = |args: Vec<&str>| {
            let _ = std::process::Command::new("docker")
                .arg("-H")
                .arg(&endpoint)
                .args(args)
                .output();
        };
        for container in &self.containers {
            run(vec!["rm", "-f", "-v", container]);
        }
        for image in &self.images {
            run(vec!["rmi", "-f", image]);
        }
        for volume in &self.volumes {
            run(vec!["volume", "rm", "-f", volume]);
        }
        for network in &self.networks {
            run(vec!["network", "rm", network]);
        }
    }
}
