//! Host lifecycle in the database: revocation, the CA that issued each host's certificate,
//! and the CA rotation row every control plane sharing the database follows.

use sqlx::Row;

use super::{Store, StoreError};
use crate::ca::{Phase, Rotation};

impl Store {
    /// Marks a host revoked at `at`. Answers when it already was revoked instead (and
    /// changes nothing then).
    pub async fn revoke_host(&self, host_id: &str, at: i64) -> Result<Option<i64>, StoreError> {
        let changed =
            sqlx::query("UPDATE hosts SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
                .bind(at)
                .bind(host_id)
                .execute(&self.pool)
                .await?
                .rows_affected();
        if changed > 0 {
            return Ok(None);
        }
        Ok(
            sqlx::query_scalar::<_, Option<i64>>("SELECT revoked_at FROM hosts WHERE id = ?")
                .bind(host_id)
                .fetch_optional(&self.pool)
                .await?
                .flatten(),
        )
    }

    /// Ids of the hosts whose certificates the bridge listener accepts: enrolled, not
    /// revoked.
    pub async fn allowed_host_ids(&self) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT id FROM hosts WHERE revoked_at IS NULL")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Records the pin of the CA that issued the host's current certificate.
    pub async fn set_host_ca_pin(&self, host_id: &str, pin: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE hosts SET cert_ca_pin = ? WHERE id = ?")
            .bind(pin)
            .bind(host_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The CA rotation in progress, if any.
    pub async fn ca_rotation(&self) -> Result<Option<Rotation>, StoreError> {
        let row =
            sqlx::query("SELECT old_pin, new_pin, phase, started_at FROM ca_rotation WHERE id = 1")
                .fetch_optional(&self.pool)
                .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let phase: String = row.get(2);
        let phase = Phase::parse(&phase).ok_or_else(|| {
            sqlx::Error::Decode(format!("ca_rotation has an unknown phase {phase:?}").into())
        })?;
        Ok(Some(Rotation {
            old_pin: row.get(0),
            new_pin: row.get(1),
            phase,
            started_at: row.get(3),
        }))
    }

    /// Records a new rotation; `false` when one is already in progress.
    pub async fn start_ca_rotation(&self, rotation: &Rotation) -> Result<bool, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO ca_rotation (id, old_pin, new_pin, phase, started_at) VALUES (1, ?, ?, ?, ?)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&rotation.old_pin)
        .bind(&rotation.new_pin)
        .bind(rotation.phase.as_str())
        .bind(rotation.started_at)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(inserted > 0)
    }

    pub async fn set_ca_rotation_phase(&self, phase: Phase) -> Result<(), StoreError> {
        sqlx::query("UPDATE ca_rotation SET phase = ? WHERE id = 1")
            .bind(phase.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Ends the rotation: the new CA is the only one.
    pub async fn end_ca_rotation(&self) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM ca_rotation WHERE id = 1")
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_rotation_row_is_single_and_follows_its_phases() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("zpanel.db")).await.unwrap();
        assert_eq!(store.ca_rotation().await.unwrap(), None);
        let rotation = Rotation {
            old_pin: "sha256:old".into(),
            new_pin: "sha256:new".into(),
            phase: Phase::Overlap,
            started_at: 5,
        };
        assert!(store.start_ca_rotation(&rotation).await.unwrap());
        let other = Rotation {
            new_pin: "sha256:other".into(),
            ..rotation.clone()
        };
        assert!(!store.start_ca_rotation(&other).await.unwrap());
        assert_eq!(store.ca_rotation().await.unwrap(), Some(rotation.clone()));
        store.set_ca_rotation_phase(Phase::Retire).await.unwrap();
        assert_eq!(
            store.ca_rotation().await.unwrap().map(|r| r.phase),
            Some(Phase::Retire)
        );
        store.end_ca_rotation().await.unwrap();
        assert_eq!(store.ca_rotation().await.unwrap(), None);
    }
}
