//! `zpanel sessions`: a host's terminal sessions (yours, or everyone's with `--all`; a shell
//! in a container names it), and ending one.

use serde::Serialize;
use zpanel_proto::{KillTerminalRequest, ListTerminalsRequest, TerminalInfo};

use crate::client::{self, call_failed};
use crate::config::Settings;
use crate::display::{self, ago, rfc3339};

#[derive(Debug, Serialize)]
struct SessionJson {
    id: String,
    owner: String,
    local_user: String,
    created_at: String,
    cols: u32,
    rows: u32,
    viewers: u32,
    last_activity: String,
    command: String,
    output_bytes: u64,
    /// The container the shell runs in; empty for a shell on the host.
    container: String,
}

impl From<&TerminalInfo> for SessionJson {
    fn from(info: &TerminalInfo) -> Self {
        let size = info.size.unwrap_or_default();
        SessionJson {
            id: info.session_id.clone(),
            owner: info.owner_name.clone(),
            local_user: info.local_user.clone(),
            created_at: rfc3339(info.created_at),
            cols: size.cols,
            rows: size.rows,
            viewers: info.viewers,
            last_activity: rfc3339(info.last_activity),
            command: info.command.clone(),
            output_bytes: info.output_bytes,
            container: info.container.clone(),
        }
    }
}

/// Prints the sessions on `host`, oldest first: a table, or JSON.
pub async fn list(settings: &Settings, host: String, all: bool, json: bool) -> anyhow::Result<()> {
    let mut client = client::connect(settings).await?;
    let mut sessions = client
        .list_terminals(ListTerminalsRequest {
            host: host.clone(),
            all,
        })
        .await
        .map_err(call_failed)?
        .into_inner()
        .sessions;
    sessions.sort_by(|a, b| (a.created_at, &a.session_id).cmp(&(b.created_at, &b.session_id)));
    if json {
        let rows: Vec<SessionJson> = sessions.iter().map(SessionJson::from).collect();
        return display::print_json(&rows, "sessions");
    }
    if sessions.is_empty() {
        println!("no sessions on {host}");
        return Ok(());
    }
    print!("{}", table(&sessions, zpanel_shared::unix_now()));
    Ok(())
}

/// Ends session `id` on `host` (its shell gets SIGHUP).
pub async fn kill(settings: &Settings, host: String, id: String) -> anyhow::Result<()> {
    let mut client = client::connect(settings).await?;
    client
        .kill_terminal(KillTerminalRequest {
            host: host.clone(),
            session_id: id.clone(),
        })
        .await
        .map_err(call_failed)?;
    println!("killed session {id} on {host}");
    Ok(())
}

fn table(sessions: &[TerminalInfo], now: i64) -> String {
    let header = [
        "ID",
        "OWNER",
        "USER",
        "CREATED",
        "SIZE",
        "VIEWERS",
        "LAST ACTIVITY",
        "CONTAINER",
    ];
    display::table(
        header,
        sessions.iter().map(|s| {
            let size = s.size.unwrap_or_default();
            [
                s.session_id.clone(),
                s.owner_name.clone(),
                s.local_user.clone(),
                ago(s.created_at, now),
                format!("{}x{}", size.cols, size.rows),
                s.viewers.to_string(),
                ago(s.last_activity, now),
                s.container.clone(),
            ]
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use zpanel_proto::TerminalSize;

    #[test]
    fn the_table_has_aligned_columns_sizes_and_ages() {
        let now = 10_000;
        let session = TerminalInfo {
            session_id: "a1".into(),
            owner_id: "u1".into(),
            owner_name: "admin".into(),
            local_user: "root".into(),
            created_at: now - 7200,
            size: Some(TerminalSize {
                cols: 120,
                rows: 40,
            }),
            viewers: 2,
            last_activity: now - 30,
            output_bytes: 10,
            command: "/bin/bash".into(),
            container: String::new(),
        };
        let in_container = TerminalInfo {
            session_id: "b2".into(),
            container: "web".into(),
            ..session.clone()
        };
        assert_eq!(
            table(&[session, in_container], now),
            "ID  OWNER  USER  CREATED  SIZE    VIEWERS  LAST ACTIVITY  CONTAINER\n\
             a1  admin  root  2h ago   120x40  2        30s ago\n\
             b2  admin  root  2h ago   120x40  2        30s ago        web\n"
        );
    }
}
