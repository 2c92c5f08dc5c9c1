//! `zpanel hosts`: the hosts the caller can see (a table, or JSON), deleting and revoking
//! one.

use std::collections::BTreeMap;

use serde::Serialize;
use zpanel_proto::{DeleteHostRequest, Host, ListHostsRequest, RevokeHostRequest};

use crate::client::{self, call_failed};
use crate::config::Settings;
use crate::display::{self, rfc3339};

#[derive(Debug, Serialize)]
struct HostJson {
    id: String,
    name: String,
    /// The workspace's name.
    workspace: String,
    status: &'static str,
    last_seen: Option<String>,
    os: String,
    kernel: String,
    arch: String,
    daemon_version: String,
    labels: BTreeMap<String, String>,
    /// sha256 of the daemon binary the host runs.
    daemon_sha256: String,
    /// The control plane has another daemon binary for it (`zpanel hosts upgrade`).
    upgrade_available: bool,
    /// When the host was revoked; `status` is `revoked` then.
    revoked_at: Option<String>,
    cert_expires_at: Option<String>,
    /// Pin of the CA that issued the host's certificate.
    cert_ca_pin: String,
}

impl From<Host> for HostJson {
    fn from(h: Host) -> Self {
        HostJson {
            id: h.id,
            name: h.name,
            workspace: h.workspace,
            status: if h.revoked_at > 0 {
                "revoked"
            } else if h.online {
                "online"
            } else {
                "offline"
            },
            last_seen: (h.last_seen > 0).then(|| rfc3339(h.last_seen)),
            os: h.os,
            kernel: h.kernel,
            arch: h.arch,
            daemon_version: h.daemon_version,
            labels: h.labels.into_iter().collect(),
            daemon_sha256: h.daemon_sha256,
            upgrade_available: h.upgrade_available,
            revoked_at: (h.revoked_at > 0).then(|| rfc3339(h.revoked_at)),
            cert_expires_at: (h.cert_expires_at > 0).then(|| rfc3339(h.cert_expires_at)),
            cert_ca_pin: h.cert_ca_pin,
        }
    }
}

/// Prints the hosts in the caller's workspaces: a table, or JSON.
pub async fn list(settings: &Settings, json: bool) -> anyhow::Result<()> {
    let mut client = client::connect(settings).await?;
    let hosts = client
        .list_hosts(ListHostsRequest {})
        .await
        .map_err(call_failed)?
        .into_inner()
        .hosts;
    let rows: Vec<HostJson> = hosts.into_iter().map(HostJson::from).collect();
    if json {
        return display::print_json(&rows, "hosts");
    }
    print!("{}", table(&rows));
    Ok(())
}

fn table(hosts: &[HostJson]) -> String {
    let header = [
        "ID",
        "NAME",
        "WORKSPACE",
        "STATUS",
        "LAST SEEN",
        "OS",
        "LABELS",
    ];
    display::table(
        header,
        hosts.iter().map(|h| {
            let labels: Vec<String> = h.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            [
                h.id.clone(),
                h.name.clone(),
                h.workspace.clone(),
                if h.upgrade_available {
                    format!("{}, update available", h.status)
                } else {
                    h.status.into()
                },
                h.last_seen.clone().unwrap_or_else(|| "never".into()),
                h.os.clone(),
                labels.join(","),
            ]
        }),
    )
}

/// Deletes a host: its session ends and its certificate is refused from now on.
pub async fn delete(settings: &Settings, host: String) -> anyhow::Result<()> {
    let mut client = client::connect(settings).await?;
    let deleted = client
        .delete_host(DeleteHostRequest { host })
        .await
        .map_err(call_failed)?
        .into_inner();
    println!("deleted host {}", deleted.id);
    Ok(())
}

/// Revokes a host. Revoking a revoked host is not an error: it says when that happened.
pub async fn revoke(settings: &Settings, host: String) -> anyhow::Result<()> {
    let mut client = client::connect(settings).await?;
    match client.revoke_host(RevokeHostRequest { host }).await {
        Ok(revoked) => {
            println!(
                "revoked host {}: its session ended and its certificate is refused from now on",
                revoked.into_inner().id
            );
            Ok(())
        }
        Err(status) if status.code() == tonic::Code::AlreadyExists => {
            println!("{}", client::status_message(&status));
            Ok(())
        }
        Err(status) => Err(call_failed(status)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_names_each_hosts_workspace() {
        let host = Host {
            id: "h1".into(),
            name: "web-1".into(),
            online: true,
            last_seen: 60,
            os: "Debian 12".into(),
            labels: [("env".to_string(), "prod".to_string())].into(),
            workspace: "ops".into(),
            ..Host::default()
        };
        assert_eq!(
            table(&[HostJson::from(host)]),
            "ID  NAME   WORKSPACE  STATUS  LAST SEEN             OS         LABELS\n\
             h1  web-1  ops        online  1970-01-01T00:01:00Z  Debian 12  env=prod\n"
        );
    }
}
