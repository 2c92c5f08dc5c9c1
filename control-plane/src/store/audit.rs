//! The audit log: an append-only hash chain. Each entry's `hash` is the SHA-256 of the
//! previous entry's hash and the entry's own fields; `audit_head` keeps the newest entry's
//! id and hash, so an edited, deleted or re-ordered entry, or a cut-off tail, is detected
//! by [`Store::verify_audit`].

use sha2::{Digest, Sha256};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::{Store, StoreError, now};

/// An entry to append. Built with [`AuditEntry::new`] and the setters.
#[derive(Debug, Clone, Default)]
pub struct AuditEntry {
    pub actor: String,
    /// How the actor authenticated: `session`, `token:<id>`, a join token, a host.
    pub credential: String,
    pub action: String,
    pub workspace_id: String,
    pub host_id: String,
    pub target: String,
    pub detail: String,
    /// `ok`, `failed`, `refused` or `denied`.
    pub outcome: String,
}

impl AuditEntry {
    pub fn new(actor: &str, action: &str) -> AuditEntry {
        AuditEntry {
            actor: actor.into(),
            action: action.into(),
            outcome: "ok".into(),
            ..AuditEntry::default()
        }
    }

    pub fn credential(mut self, credential: impl Into<String>) -> Self {
        self.credential = credential.into();
        self
    }

    pub fn workspace(mut self, workspace_id: &str) -> Self {
        self.workspace_id = workspace_id.into();
        self
    }

    pub fn host(mut self, host_id: &str, workspace_id: &str) -> Self {
        self.host_id = host_id.into();
        self.workspace_id = workspace_id.into();
        self
    }

    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.target = target.into();
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }

    pub fn outcome(mut self, outcome: impl Into<String>) -> Self {
        self.outcome = outcome.into();
        self
    }
}

/// A stored entry.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub id: i64,
    pub at: i64,
    pub entry: AuditEntry,
    pub hash: String,
}

/// What to read from the log.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only these workspaces (and, with `None`, every entry).
    pub workspaces: Option<Vec<String>>,
    pub host_id: Option<String>,
    pub actor: Option<String>,
    pub action_prefix: Option<String>,
    pub since: Option<i64>,
    /// Entries with a smaller id than this (paging backwards).
    pub before_id: Option<i64>,
    pub limit: u32,
}

/// Where and how the chain is broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditBreak {
    /// The first entry that does not verify (for a cut-off tail: the last one kept).
    pub id: i64,
    pub reason: String,
}

const COLUMNS: &str = "id, at, actor, credential, action, workspace_id, host_id, target, detail, outcome, prev_hash, hash";

fn record_from_row(r: &SqliteRow) -> (AuditRecord, String) {
    let record = AuditRecord {
        id: r.get(0),
        at: r.get(1),
        entry: AuditEntry {
            actor: r.get(2),
            credential: r.get(3),
            action: r.get(4),
            workspace_id: r.get(5),
            host_id: r.get(6),
            target: r.get(7),
            detail: r.get(8),
            outcome: r.get(9),
        },
        hash: r.get(11),
    };
    (record, r.get(10))
}

/// The hash of an entry chained after `prev_hash`: SHA-256 over a JSON array of the fields,
/// which escapes them unambiguously.
fn entry_hash(prev_hash: &str, id: i64, at: i64, e: &AuditEntry) -> String {
    let fields = serde_json::json!([
        prev_hash,
        id,
        at,
        e.actor,
        e.credential,
        e.action,
        e.workspace_id,
        e.host_id,
        e.target,
        e.detail,
        e.outcome
    ]);
    hex::encode(Sha256::digest(fields.to_string().as_bytes()))
}

impl Store {
    /// Appends an entry to the chain.
    pub async fn audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let _chain = self.audit_lock.lock().await;
        let mut tx = self.pool.begin().await?;
        // A write first, so the transaction holds the database's write lock before it reads
        // the head: another process appending (`zpanel-cp passwd`) waits instead of forking
        // the chain.
        sqlx::query("INSERT INTO audit_head (id, last_id, hash) VALUES (1, 0, '') ON CONFLICT (id) DO NOTHING")
            .execute(&mut *tx)
            .await?;
        let head = sqlx::query("SELECT last_id, hash FROM audit_head WHERE id = 1")
            .fetch_optional(&mut *tx)
            .await?;
        let (last_id, prev_hash): (i64, String) =
            head.map(|r| (r.get(0), r.get(1))).unwrap_or_default();
        let id = last_id + 1;
        let at = now();
        let hash = entry_hash(&prev_hash, id, at, entry);
        sqlx::query(
            "INSERT INTO audit_log (id, at, actor, credential, action, workspace_id, host_id, target, detail, outcome, prev_hash, hash)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(id)
        .bind(at)
        .bind(&entry.actor)
        .bind(&entry.credential)
        .bind(&entry.action)
        .bind(&entry.workspace_id)
        .bind(&entry.host_id)
        .bind(&entry.target)
        .bind(&entry.detail)
        .bind(&entry.outcome)
        .bind(&prev_hash)
        .bind(&hash)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO audit_head (id, last_id, hash) VALUES (1, ?1, ?2)
             ON CONFLICT (id) DO UPDATE SET last_id = ?1, hash = ?2",
        )
        .bind(id)
        .bind(&hash)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Chains entries written before the log was hashed (once, after the migration).
    pub(super) async fn seal_audit(&self) -> Result<(), StoreError> {
        let _chain = self.audit_lock.lock().await;
        let head: Option<i64> = sqlx::query_scalar("SELECT last_id FROM audit_head")
            .fetch_optional(&self.pool)
            .await?;
        if head.is_some() {
            return Ok(());
        }
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM audit_log ORDER BY id"))
            .fetch_all(&self.pool)
            .await?;
        let mut tx = self.pool.begin().await?;
        let mut prev_hash = String::new();
        let mut last_id = 0;
        for row in &rows {
            let (record, _) = record_from_row(row);
            let hash = entry_hash(&prev_hash, record.id, record.at, &record.entry);
            sqlx::query("UPDATE audit_log SET prev_hash = ?, hash = ? WHERE id = ?")
                .bind(&prev_hash)
                .bind(&hash)
                .bind(record.id)
                .execute(&mut *tx)
                .await?;
            prev_hash = hash;
            last_id = record.id;
        }
        if last_id > 0 {
            sqlx::query("INSERT INTO audit_head (id, last_id, hash) VALUES (1, ?, ?)")
                .bind(last_id)
                .bind(&prev_hash)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Entries matching a filter, newest first.
    pub async fn query_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        let mut sql = format!("SELECT {COLUMNS} FROM audit_log WHERE 1 = 1");
        let mut binds: Vec<String> = Vec::new();
        let mut clause = |condition: &str, values: &[String]| {
            sql.push_str(condition);
            binds.extend_from_slice(values);
        };
        if let Some(host) = &filter.host_id {
            clause(" AND host_id = ?", std::slice::from_ref(host));
        }
        if let Some(actor) = &filter.actor {
            clause(" AND actor = ?", std::slice::from_ref(actor));
        }
        if let Some(prefix) = &filter.action_prefix {
            // An action or its sub-actions: `file` matches `file.write`.
            let escaped = prefix
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            clause(
                " AND (action = ? OR action LIKE ? ESCAPE '\\')",
                &[prefix.clone(), format!("{escaped}.%")],
            );
        }
        if let Some(since) = filter.since {
            clause(" AND at >= CAST(? AS INTEGER)", &[since.to_string()]);
        }
        if let Some(before) = filter.before_id {
            clause(" AND id < CAST(? AS INTEGER)", &[before.to_string()]);
        }
        if let Some(workspaces) = &filter.workspaces {
            let list = serde_json::to_string(workspaces).unwrap_or_else(|_| "[]".into());
            clause(
                " AND workspace_id IN (SELECT value FROM json_each(?))",
                &[list],
            );
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", filter.limit.max(1)));
        let mut query = sqlx::query(&sql);
        for value in &binds {
            query = query.bind(value);
        }
        let rows = query.fetch_all(&self.pool).await?;
        Ok(rows.iter().map(|r| record_from_row(r).0).collect())
    }

    /// Walks the whole chain; `Ok(n)` when all `n` entries verify.
    pub async fn verify_audit(&self) -> Result<Result<u64, AuditBreak>, StoreError> {
        let _chain = self.audit_lock.lock().await;
        let head = sqlx::query("SELECT last_id, hash FROM audit_head WHERE id = 1")
            .fetch_optional(&self.pool)
            .await?;
        let (head_id, head_hash): (i64, String) =
            head.map(|r| (r.get(0), r.get(1))).unwrap_or_default();
        let sql = format!("SELECT {COLUMNS} FROM audit_log ORDER BY id");
        let mut rows = sqlx::query(&sql).fetch(&self.pool);
        let mut prev_hash = String::new();
        let mut last_id = 0;
        let mut count = 0u64;
        use futures_util::TryStreamExt;
        while let Some(row) = rows.try_next().await? {
            let (record, stored_prev) = record_from_row(&row);
            let broken = |reason: &str| {
                Ok(Err(AuditBreak {
                    id: record.id,
                    reason: reason.into(),
                }))
            };
            if stored_prev != prev_hash {
                return broken("the entry before it was deleted or changed");
            }
            if entry_hash(&prev_hash, record.id, record.at, &record.entry) != record.hash {
                return broken("the entry was edited");
            }
            prev_hash = record.hash;
            last_id = record.id;
            count += 1;
        }
        if last_id != head_id || prev_hash != head_hash {
            return Ok(Err(AuditBreak {
                id: last_id,
                reason: format!(
                    "the log ends at entry {last_id} but entry {head_id} was written: newer entries were deleted"
                ),
            }));
        }
        Ok(Ok(count))
    }
}
