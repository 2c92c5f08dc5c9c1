//! `zpanel docker HOST ...`: Docker on a host through the control plane (ARCHITECTURE.md
//! "Docker"), with docker's own words and flags: containers ([`containers`]), their logs
//! ([`logs`]) and stats ([`stats`]), images ([`images`]), the engine, volumes, networks and
//! prune ([`engine`]); a shell in a container is `zpanel shell`'s terminal session. A host
//! whose engine does not answer is refused with the daemon's line, and `zpanel` exits
//! non-zero.

pub mod containers;
pub mod engine;
pub mod images;
pub mod logs;
pub mod parse;
pub mod stats;

use std::collections::{BTreeMap, HashMap};

use zpanel_proto::{DockerOpRequest, DockerRequest, docker_reply, docker_request};

use crate::client::{self, Client, call_failed};
use crate::config::Settings;

/// Characters of an id that tables show, as docker does.
const SHORT_ID_CHARS: usize = 12;

/// One request the host answers at once: the reply's result.
async fn request(
    client: &mut Client,
    host: &str,
    op: docker_request::Op,
) -> anyhow::Result<docker_reply::Result> {
    let request = DockerOpRequest {
        host: host.into(),
        request: Some(DockerRequest { op: Some(op) }),
    };
    client
        .docker(request)
        .await
        .map_err(call_failed)?
        .into_inner()
        .result
        .ok_or_else(|| unexpected("a result"))
}

/// The host answered with something else than `what` was asked.
fn unexpected(what: &str) -> anyhow::Error {
    anyhow::anyhow!("the host answered without {what}; is the daemon as new as the control plane?")
}

/// Runs the request `op` makes for each of `names` in turn, printing each name done (as
/// docker does) and one line for each failure; exits 1 when any failed.
async fn each(
    settings: &Settings,
    host: &str,
    names: &[String],
    op: impl Fn(&str) -> docker_request::Op,
) -> anyhow::Result<i32> {
    let mut client = client::connect(settings).await?;
    let mut failed = false;
    for name in names {
        match request(&mut client, host, op(name)).await {
            Ok(_) => println!("{name}"),
            Err(e) => {
                eprintln!("zpanel: {e:#}");
                failed = true;
            }
        }
    }
    Ok(i32::from(failed))
}

/// Labels in the order JSON prints them.
fn sorted_labels(labels: &HashMap<String, String>) -> BTreeMap<&str, &str> {
    labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// An id as tables show it: without `sha256:`, its first 12 characters.
fn short_id(id: &str) -> String {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    id.chars().take(SHORT_ID_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ids_drop_the_digest_name() {
        assert_eq!(short_id("sha256:0123456789abcdef"), "0123456789ab");
        assert_eq!(short_id("0123456789abcdef"), "0123456789ab");
        assert_eq!(short_id("abc"), "abc");
    }
}
