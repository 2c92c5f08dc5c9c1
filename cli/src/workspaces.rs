//! `zpanel workspaces`: creating workspaces with quotas, listing the caller's, and moving
//! hosts and members into them (admins only, except listing; the server checks).

use serde::Serialize;
use zpanel_proto::{
    AddWorkspaceHostRequest, AddWorkspaceMemberRequest, CreateWorkspaceRequest,
    ListWorkspacesRequest, Quotas, RemoveWorkspaceMemberRequest, SetWorkspaceQuotaRequest,
    Workspace,
};

use crate::client::{self, call_failed};
use crate::config::Settings;
use crate::display;

/// A workspace as `--json` prints it: `null` for an unlimited quota and for no role.
#[derive(Debug, Serialize)]
struct WorkspaceJson {
    id: String,
    name: String,
    /// The caller's role in it.
    role: Option<String>,
    hosts: u64,
    members: u64,
    max_hosts: Option<u64>,
    max_terminals: Option<u64>,
    max_api_tokens: Option<u64>,
    created_at: i64,
}

impl From<&Workspace> for WorkspaceJson {
    fn from(w: &Workspace) -> Self {
        let limit = |max: u64| (max > 0).then_some(max);
        WorkspaceJson {
            id: w.id.clone(),
            name: w.name.clone(),
            role: Some(w.role.clone()).filter(|r| !r.is_empty()),
            hosts: w.hosts,
            members: w.members,
            max_hosts: limit(w.max_hosts),
            max_terminals: limit(w.max_terminals),
            max_api_tokens: limit(w.max_api_tokens),
            created_at: w.created_at,
        }
    }
}

/// A quota for a table: the number, or "-" for unlimited (0).
fn quota(max: u64) -> String {
    if max == 0 {
        "-".into()
    } else {
        max.to_string()
    }
}

/// "hosts 5, terminals -, API tokens 2".
fn quotas(w: &Workspace) -> String {
    format!(
        "hosts {}, terminals {}, API tokens {}",
        quota(w.max_hosts),
        quota(w.max_terminals),
        quota(w.max_api_tokens)
    )
}

/// Prints one workspace after a change: JSON, or its name and quotas after `done`.
fn print_one(w: &Workspace, done: &str, json: bool) -> anyhow::Result<()> {
    if json {
        return display::print_json(&WorkspaceJson::from(w), "the workspace");
    }
    println!("{done} workspace {} (quotas: {})", w.name, quotas(w));
    Ok(())
}

/// Creates a workspace; an unset quota is unlimited.
pub async fn create(
    settings: &Settings,
    name: String,
    limits: Quotas,
    json: bool,
) -> anyhow::Result<()> {
    let mut client = client::connect(settings).await?;
    let workspace = client
        .create_workspace(CreateWorkspaceRequest {
            name,
            quotas: Some(limits),
        })
        .await
        .map_err(call_failed)?
        .into_inner();
    print_one(&workspace, "created", json)
}

/// Prints the workspaces the caller has a role in (all of them for admins), by name.
pub async fn list(settings: &Settings, json: bool) -> anyhow::Result<()> {
    let mut client = client::connect(settings).await?;
    let workspaces = client
        .list_workspaces(ListWorkspacesRequest {})
        .await
        .map_err(call_failed)?
        .into_inner()
        .workspaces;
    if json {
        let rows: Vec<WorkspaceJson> = workspaces.iter().map(WorkspaceJson::from).collect();
        return display::print_json(&rows, "workspaces");
    }
    if workspaces.is_empty() {
        println!("no workspaces you have a role in");
        return Ok(());
    }
    print!("{}", table(&workspaces));
    Ok(())
}

fn table(workspaces: &[Workspace]) -> String {
    display::table(
        [
            "NAME",
            "ROLE",
            "HOSTS",
            "MEMBERS",
            "QUOTAS (HOSTS/TERMINALS/TOKENS)",
        ],
        workspaces.iter().map(|w| {
            [
                w.name.clone(),
                display::cell(&w.role),
                w.hosts.to_string(),
                w.members.to_string(),
                format!(
                    "{}/{}/{}",
                    quota(w.max_hosts),
                    quota(w.max_terminals),
                    quota(w.max_api_tokens)
                ),
            ]
        }),
    )
}

/// Changes the quotas that are set (0: unlimited), keeping the others.
pub async fn set_quota(
    settings: &Settings,
    workspace: String,
    limits: Quotas,
) -> anyhow::Result<()> {
    let mut client = client::connect(settings).await?;
    let workspace = client
        .set_workspace_quota(SetWorkspaceQuotaRequest {
            workspace,
            quotas: Some(limits),
        })
        .await
        .map_err(call_failed)?
        .into_inner();
    print_one(&workspace, "updated", false)
}

/// Moves a host into a workspace.
pub async fn add_host(settings: &Settings, workspace: String, host: String) -> anyhow::Result<()> {
    let mut client = client::connect(settings).await?;
    client
        .add_workspace_host(AddWorkspaceHostRequest {
            workspace: workspace.clone(),
            host: host.clone(),
        })
        .await
        .map_err(call_failed)?;
    println!("host {host} is in workspace {workspace}");
    Ok(())
}

/// Makes a user a member of a workspace with a role (or changes their role there).
pub async fn add_member(
    settings: &Settings,
    workspace: String,
    user: String,
    role: String,
) -> anyhow::Result<()> {
    let mut client = client::connect(settings).await?;
    client
        .add_workspace_member(AddWorkspaceMemberRequest {
            workspace: workspace.clone(),
            user: user.clone(),
            role: role.clone(),
        })
        .await
        .map_err(call_failed)?;
    println!("{user} is {role} in workspace {workspace}");
    Ok(())
}

pub async fn remove_member(
    settings: &Settings,
    workspace: String,
    user: String,
) -> anyhow::Result<()> {
    let mut client = client::connect(settings).await?;
    client
        .remove_workspace_member(RemoveWorkspaceMemberRequest {
            workspace: workspace.clone(),
            user: user.clone(),
        })
        .await
        .map_err(call_failed)?;
    println!("removed {user} from workspace {workspace}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_the_callers_role_and_quotas_with_dashes_for_unlimited() {
        let workspaces = [
            Workspace {
                name: "default".into(),
                role: "admin".into(),
                hosts: 3,
                members: 1,
                ..Workspace::default()
            },
            Workspace {
                name: "ops".into(),
                hosts: 1,
                max_hosts: 5,
                max_api_tokens: 2,
                ..Workspace::default()
            },
        ];
        assert_eq!(
            table(&workspaces),
            "NAME     ROLE   HOSTS  MEMBERS  QUOTAS (HOSTS/TERMINALS/TOKENS)\n\
             default  admin  3      1        -/-/-\n\
             ops      -      1      0        5/-/2\n"
        );
        assert_eq!(quotas(&workspaces[1]), "hosts 5, terminals -, API tokens 2");
        let json = WorkspaceJson::from(&workspaces[1]);
        assert_eq!((json.max_hosts, json.max_terminals), (Some(5), None));
    }
}
