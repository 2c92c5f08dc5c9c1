//! Host lifecycle: revocation, and the CA rotation (see ARCHITECTURE.md "Certificate
//! lifecycle"). `zpanel-cp ca rotate` drives a rotation through the database and the CA
//! files, never through a running process: every control plane sharing the data reads the
//! `ca_rotation` row every [`ROTATION_POLL`] and follows it ([`follow_ca_rotation`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use zpanel_proto::RenewNow;
use zpanel_proto::frame::Body;

use super::{Action, AppState, Principal, ServiceError};
use crate::ca::{
    Authorities, CERT_FILE, Ca, KEY_FILE, NEXT_CERT_FILE, NEXT_KEY_FILE, Phase, Rotation,
};
use crate::router::HostRouter;
use crate::store::{AuditEntry, HostRecord, Store};

/// How often control planes read the rotation row.
pub const ROTATION_POLL: Duration = Duration::from_secs(2);
/// `RenewNow` frames a control plane sends per poll: a fleet renews spread out, a few
/// hosts a second, not all at once.
const RENEW_NOW_PER_POLL: usize = 10;
/// A host told to renew that still holds a certificate of the old CA after this long is
/// told again (its answer may have been lost with its session).
const RENEW_NOW_AGAIN: Duration = Duration::from_secs(60);
/// How long `ca rotate` gives control planes to follow the row into `retire` before it
/// moves the old CA's files away (they hold the CAs in memory; this is for the hosts'
/// `RenewNow`s and the log to line up, not for safety).
const RETIRE_GRACE: Duration = Duration::from_secs(5);
/// What a revoked host's daemon is told, and what opening a channel to one answers.
pub const REVOKED_ADVICE: &str = "enrol the machine again with a new join token (`zpanel tokens create`), or delete the host with `zpanel hosts rm`";

/// Unix seconds as RFC 3339, for messages.
pub(crate) fn rfc3339(unix: i64) -> String {
    let at = std::time::UNIX_EPOCH + Duration::from_secs(unix.max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}

// === revocation ===

impl AppState {
    /// Revokes a host: its session ends at once, its certificate is refused from now on
    /// (at the TLS handshake), and it stays listed as revoked until it is deleted. Revoking
    /// a revoked host changes nothing and says when it was revoked (`Conflict`).
    pub async fn revoke_host(
        &self,
        principal: &Principal,
        id_or_name: &str,
    ) -> Result<String, ServiceError> {
        let host = self
            .host_for(principal, Action::RevokeHost, id_or_name)
            .await?;
        if let Some(at) = self
            .store
            .revoke_host(&host.id, crate::store::now())
            .await?
        {
            return Err(ServiceError::Conflict(format!(
                "host {} was already revoked at {}; `zpanel hosts rm {}` deletes it",
                host.name,
                rfc3339(at),
                host.name
            )));
        }
        self.allowed_hosts.revoke(&host.id);
        self.router.disconnect(&host.id);
        self.audit(
            self.entry(principal, "host.revoke")
                .host(&host.id, &host.workspace_id)
                .target(&host.name),
        )
        .await;
        tracing::info!(host = %host.id, name = %host.name, "host revoked");
        Ok(host.id)
    }
}

/// The refusal for a channel to a revoked host.
pub fn revoked(host: &HostRecord, at: i64) -> ServiceError {
    ServiceError::Forbidden(format!(
        "host {} was revoked at {} and can no longer be reached; {REVOKED_ADVICE}",
        host.name,
        rfc3339(at)
    ))
}

// === following a rotation (every control plane) ===

/// Which hosts a control plane tells to renew now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Nudge {
    /// Nobody: no rotation ran since this control plane started.
    Nobody,
    /// Hosts whose certificate the issuing CA did not sign (the overlap).
    OldCertificates,
    /// Every host once: the current CA changed, and their renewal hands them a CA bundle
    /// without the old CA.
    EveryoneOnce,
}

/// What a control plane does when the rotation row says `next` after `seen`: whether to put
/// other CAs in force, and whom to tell to renew.
fn transition(seen: Option<&Rotation>, next: Option<&Rotation>, old_pin: &str) -> (bool, Nudge) {
    let reload = seen != next;
    let nudge = match next {
        Some(r) if r.phase == Phase::Overlap => Nudge::OldCertificates,
        Some(r) if r.new_pin != old_pin => Nudge::EveryoneOnce,
        Some(_) => Nudge::Nobody,
        // the row went away: a rotation ended (with or without this control plane seeing
        // its retire phase)
        None if seen.is_some() => Nudge::EveryoneOnce,
        None => Nudge::Nobody,
    };
    (reload, nudge)
}

/// Follows the rotation row until `shutdown`: puts the CAs it names in force and tells this
/// control plane's hosts to renew. `seen` is the row the CAs in force were loaded for.
pub async fn follow_ca_rotation(
    state: Arc<AppState>,
    ca_dir: PathBuf,
    mut seen: Option<Rotation>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(ROTATION_POLL);
    let mut nudge = match &seen {
        Some(r) if r.phase == Phase::Overlap => Nudge::OldCertificates,
        _ => Nudge::Nobody,
    };
    let mut told: HashMap<String, Instant> = HashMap::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let next = match state.store.ca_rotation().await {
            Ok(next) => next,
            Err(e) => {
                tracing::warn!("cannot read the CA rotation: {e:#}");
                continue;
            }
        };
        let current_pin = state.ca.pin();
        let (reload, next_nudge) = transition(seen.as_ref(), next.as_ref(), &current_pin);
        if reload {
            let dir = ca_dir.clone();
            let wanted = next.clone();
            let loaded =
                tokio::task::spawn_blocking(move || Authorities::load(&dir, wanted.as_ref())).await;
            let installed = match loaded {
                Ok(Ok(authorities)) => state.ca.install(authorities).map_err(|e| e.to_string()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = installed {
                tracing::warn!("cannot put the CAs of the rotation in force (trying again): {e}");
                continue;
            }
            match &next {
                Some(r) => {
                    tracing::info!(phase = r.phase.as_str(), old = %r.old_pin, new = %r.new_pin, "CA rotation: {}", match r.phase {
                        Phase::Overlap => "trusting both CAs, issuing host certificates with the new one",
                        Phase::Retire => "retiring the old CA: serving and trusting the new one only",
                    })
                }
                None => tracing::info!(ca = %state.ca.pin(), "CA rotation finished"),
            }
            if next_nudge != nudge {
                told.clear();
            }
            nudge = next_nudge;
            seen = next;
        }
        if nudge != Nudge::Nobody
            && let Err(e) = tell_hosts_to_renew(&state, nudge, &mut told).await
        {
            tracing::warn!("cannot tell hosts to renew: {e:#}");
        }
    }
}

/// Sends `RenewNow` to at most [`RENEW_NOW_PER_POLL`] online hosts that need it, spread
/// over the poll interval.
async fn tell_hosts_to_renew(
    state: &AppState,
    nudge: Nudge,
    told: &mut HashMap<String, Instant>,
) -> Result<(), ServiceError> {
    let online = state.router.online_hosts();
    let mut due: Vec<String> = match nudge {
        Nudge::Nobody => return Ok(()),
        Nudge::EveryoneOnce => online
            .into_iter()
            .filter(|id| !told.contains_key(id))
            .collect(),
        Nudge::OldCertificates => {
            let issuing = state.ca.authorities().issuing.pin();
            let online: std::collections::HashSet<String> = online.into_iter().collect();
            state
                .store
                .list_hosts()
                .await?
                .into_iter()
                .filter(|h| online.contains(&h.id) && h.cert_ca_pin != issuing)
                .filter(|h| {
                    told.get(&h.id)
                        .is_none_or(|at| at.elapsed() > RENEW_NOW_AGAIN)
                })
                .map(|h| h.id)
                .collect()
        }
    };
    due.truncate(RENEW_NOW_PER_POLL);
    let pause = ROTATION_POLL / (RENEW_NOW_PER_POLL as u32 + 1);
    for host_id in due {
        if let Some(session) = state.router.get(&host_id) {
            let _ = session.outbound.try_send(Body::RenewNow(RenewNow {}));
            tracing::debug!(host = %host_id, "told to renew its certificate now");
        }
        told.insert(host_id, Instant::now());
        tokio::time::sleep(pause).await;
    }
    Ok(())
}

// === `zpanel-cp ca rotate` and `zpanel-cp ca status` ===

/// What `zpanel-cp ca rotate` was asked.
pub struct RotateOptions {
    pub data_dir: PathBuf,
    /// How long to wait for every host to hold a certificate of the new CA.
    pub timeout: Duration,
    /// Retire the old CA after the timeout anyway (hosts still on it are lost).
    pub force: bool,
}

async fn open_store(data_dir: &Path) -> anyhow::Result<Store> {
    let db = data_dir.join("zpanel.db");
    anyhow::ensure!(
        db.exists() && crate::ca_dir(data_dir).join(CERT_FILE).exists(),
        "no control plane data in {}; start `zpanel-cp serve --data-dir {}` once first",
        data_dir.display(),
        data_dir.display()
    );
    Store::open(&db).await.context("cannot open the database")
}

fn local_entry(action: &str) -> AuditEntry {
    AuditEntry::new("zpanel-cp ca rotate", action).credential("local: access to the data directory")
}

/// Hosts that count for a rotation (not revoked), split into those whose certificate the
/// new CA issued and the others.
async fn rotation_progress(
    store: &Store,
    new_pin: &str,
) -> anyhow::Result<(usize, Vec<HostRecord>)> {
    let hosts: Vec<HostRecord> = store
        .list_hosts()
        .await?
        .into_iter()
        .filter(|h| h.revoked_at.is_none())
        .collect();
    let total = hosts.len();
    let remaining: Vec<HostRecord> = hosts
        .into_iter()
        .filter(|h| h.cert_ca_pin != new_pin)
        .collect();
    Ok((total, remaining))
}

fn names(hosts: &[HostRecord]) -> String {
    hosts
        .iter()
        .map(|h| h.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `zpanel-cp ca rotate`: starts (or resumes) a rotation, waits until every host holds a
/// certificate of the new CA, then retires the old one.
pub async fn ca_rotate(options: RotateOptions) -> anyhow::Result<()> {
    let store = open_store(&options.data_dir).await?;
    let dir = crate::ca_dir(&options.data_dir);
    let lock_path = dir.join("rotate.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open {}", lock_path.display()))?;
    if lock.try_lock().is_err() {
        bail!(
            "another `zpanel-cp ca rotate` is running (it holds {}); `zpanel-cp ca status` shows how far it is",
            lock_path.display()
        );
    }
    let rotation = match store.ca_rotation().await? {
        Some(rotation) => {
            println!(
                "resuming the rotation from {} to {} started at {} ({} phase)",
                rotation.old_pin,
                rotation.new_pin,
                rfc3339(rotation.started_at),
                rotation.phase.as_str()
            );
            rotation
        }
        None => start_rotation(&store, &dir).await?,
    };
    if rotation.phase == Phase::Overlap {
        wait_for_hosts(&store, &rotation, options.timeout, options.force).await?;
        store.set_ca_rotation_phase(Phase::Retire).await?;
        println!("retiring the old CA: control planes now serve and trust the new one only");
        tokio::time::sleep(RETIRE_GRACE.max(ROTATION_POLL * 2)).await;
    }
    let retired = tokio::task::spawn_blocking({
        let (dir, rotation) = (dir.clone(), rotation.clone());
        move || retire_files(&dir, &rotation)
    })
    .await??;
    store.end_ca_rotation().await?;
    let detail = format!(
        "old CA {} retired; new CA {}",
        rotation.old_pin, rotation.new_pin
    );
    store
        .audit(&local_entry("ca.retire").detail(&detail))
        .await?;
    println!("CA rotation done.");
    if let Some(retired) = retired {
        println!("  old CA kept in:  {}", retired.display());
    }
    println!("  new CA pin:      {}", rotation.new_pin);
    println!(
        "  CLI users who logged in with the old pin run `zpanel login` again with --ca-pin {}",
        rotation.new_pin
    );
    println!("  join tokens created from now on carry the new pin");
    drop(lock);
    Ok(())
}

/// Makes the next CA (`next.pem`, `next.key`) and the rotation row.
async fn start_rotation(store: &Store, dir: &Path) -> anyhow::Result<Rotation> {
    let started_at = crate::store::now();
    let old_pin = Ca::load(&dir.join(CERT_FILE), &dir.join(KEY_FILE))
        .context("cannot load the CA")?
        .pin();
    let new = {
        let dir = dir.to_path_buf();
        // Rotated CAs have names of their own: a certificate's issuer tells which one
        // signed it.
        let name = format!("Zpanel CA {}", rfc3339(started_at));
        tokio::task::spawn_blocking(move || {
            Ca::create(&dir.join(NEXT_CERT_FILE), &dir.join(NEXT_KEY_FILE), &name)
        })
        .await??
    };
    let rotation = Rotation {
        old_pin,
        new_pin: new.pin(),
        phase: Phase::Overlap,
        started_at,
    };
    anyhow::ensure!(
        store.start_ca_rotation(&rotation).await?,
        "a rotation was started meanwhile; `zpanel-cp ca status` shows it"
    );
    let detail = format!("new CA {}; old CA {}", rotation.new_pin, rotation.old_pin);
    store
        .audit(&local_entry("ca.rotate").detail(&detail))
        .await?;
    println!("new CA {}", rotation.new_pin);
    println!(
        "control planes trust both CAs within {} s and re-issue every host's certificate over its session",
        ROTATION_POLL.as_secs()
    );
    Ok(rotation)
}

/// Waits until every host that is not revoked holds a certificate of the new CA, printing
/// progress. After `timeout`, fails naming the hosts still on the old CA, unless `force`.
async fn wait_for_hosts(
    store: &Store,
    rotation: &Rotation,
    timeout: Duration,
    force: bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut printed = None;
    loop {
        let (total, remaining) = rotation_progress(store, &rotation.new_pin).await?;
        let done = total - remaining.len();
        if printed != Some(done) {
            println!("{done} of {total} hosts re-issued");
            printed = Some(done);
        }
        if remaining.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let what = format!(
                "{} host(s) still hold a certificate of the old CA after {}: {}",
                remaining.len(),
                humantime::format_duration(timeout),
                names(&remaining)
            );
            if force {
                eprintln!(
                    "zpanel-cp: --force: retiring the old CA anyway; {what}; they can no longer connect and must be enrolled again"
                );
                return Ok(());
            }
            bail!(
                "{what}; a host renews when it is online: run `zpanel-cp ca rotate` again once they are (both CAs stay trusted meanwhile), or add --force to retire the old CA anyway, losing them"
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Moves the old CA's files to `retired-UNIXTIME/` and makes the new CA `ca.pem`/`ca.key`.
/// Safe to run again after a crash at any step: each step checks what is on disk. The
/// certificate moves before the key; a control plane starting in between finds the new
/// CA's key in `next.key` ([`crate::ca::find_ca`]).
fn retire_files(dir: &Path, rotation: &Rotation) -> anyhow::Result<Option<PathBuf>> {
    let pin_of = |file: &str| -> Option<String> {
        let pem = std::fs::read(dir.join(file)).ok()?;
        let certs = zpanel_shared::tls::certs_from_pem(&pem).ok()?;
        Some(zpanel_shared::tls::ca_pin(&certs[0]))
    };
    let mut retired = None;
    if pin_of(CERT_FILE).as_deref() == Some(rotation.old_pin.as_str()) {
        anyhow::ensure!(
            pin_of(NEXT_CERT_FILE).as_deref() == Some(rotation.new_pin.as_str()),
            "{} is not the new CA {}; nothing was moved",
            dir.join(NEXT_CERT_FILE).display(),
            rotation.new_pin
        );
        let archive = dir.join(format!("retired-{}", crate::store::now()));
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&archive)
                .with_context(|| format!("cannot create {}", archive.display()))?;
        }
        for file in [CERT_FILE, KEY_FILE] {
            let contents = std::fs::read(dir.join(file))?;
            let mode = if file == KEY_FILE { 0o600 } else { 0o644 };
            zpanel_shared::fsutil::write_atomic(&archive.join(file), &contents, mode)
                .with_context(|| format!("cannot write {}", archive.join(file).display()))?;
        }
        std::fs::rename(dir.join(NEXT_CERT_FILE), dir.join(CERT_FILE))?;
        retired = Some(archive);
    }
    anyhow::ensure!(
        pin_of(CERT_FILE).as_deref() == Some(rotation.new_pin.as_str()),
        "{} is neither the old CA {} nor the new one {}; nothing was moved",
        dir.join(CERT_FILE).display(),
        rotation.old_pin,
        rotation.new_pin
    );
    if dir.join(NEXT_KEY_FILE).exists() {
        std::fs::rename(dir.join(NEXT_KEY_FILE), dir.join(KEY_FILE))?;
    }
    std::fs::File::open(dir)?.sync_all()?;
    Ca::load(&dir.join(CERT_FILE), &dir.join(KEY_FILE))
        .context("the new CA's files do not load")?;
    Ok(retired)
}

/// `zpanel-cp ca status`: the CA in force, or how far a rotation is.
pub async fn ca_status(data_dir: &Path) -> anyhow::Result<()> {
    let store = open_store(data_dir).await?;
    let dir = crate::ca_dir(data_dir);
    match store.ca_rotation().await? {
        None => {
            let ca = Ca::load(&dir.join(CERT_FILE), &dir.join(KEY_FILE))?;
            println!("no CA rotation in progress; CA pin {}", ca.pin());
        }
        Some(rotation) => {
            let (total, remaining) = rotation_progress(&store, &rotation.new_pin).await?;
            println!(
                "CA rotation in progress since {}, phase {}",
                rfc3339(rotation.started_at),
                rotation.phase.as_str()
            );
            println!("  old CA: {}", rotation.old_pin);
            println!("  new CA: {}", rotation.new_pin);
            println!("  {} of {total} hosts re-issued", total - remaining.len());
            if !remaining.is_empty() {
                println!("  still on the old CA: {}", names(&remaining));
            }
            println!("  `zpanel-cp ca rotate` carries it on");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rotation(phase: Phase) -> Rotation {
        Rotation {
            old_pin: "sha256:old".into(),
            new_pin: "sha256:new".into(),
            phase,
            started_at: 1,
        }
    }

    #[test]
    fn control_planes_follow_the_rotation_row() {
        let (overlap, retire) = (rotation(Phase::Overlap), rotation(Phase::Retire));
        // steady: nothing to do
        assert_eq!(transition(None, None, "sha256:old"), (false, Nudge::Nobody));
        // a rotation starts: both CAs, hosts on the old one renew
        assert_eq!(
            transition(None, Some(&overlap), "sha256:old"),
            (true, Nudge::OldCertificates)
        );
        // still overlapping: keep telling the stragglers
        assert_eq!(
            transition(Some(&overlap), Some(&overlap), "sha256:old"),
            (false, Nudge::OldCertificates)
        );
        // retire: the current CA changes, everyone renews once for the new bundle
        assert_eq!(
            transition(Some(&overlap), Some(&retire), "sha256:old"),
            (true, Nudge::EveryoneOnce)
        );
        // ... and while the row says retire after the switch, nobody more
        assert_eq!(
            transition(Some(&retire), Some(&retire), "sha256:new"),
            (false, Nudge::Nobody)
        );
        // the row goes away, seen or not seen the retire phase
        assert_eq!(
            transition(Some(&retire), None, "sha256:new"),
            (true, Nudge::EveryoneOnce)
        );
        assert_eq!(
            transition(Some(&overlap), None, "sha256:old"),
            (true, Nudge::EveryoneOnce)
        );
    }

    #[test]
    fn the_files_move_once_and_a_half_done_move_finishes() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let old = Ca::load_or_create(dir).unwrap();
        let new = Ca::create(
            &dir.join(NEXT_CERT_FILE),
            &dir.join(NEXT_KEY_FILE),
            "Zpanel CA next",
        )
        .unwrap();
        let rotation = Rotation {
            old_pin: old.pin(),
            new_pin: new.pin(),
            phase: Phase::Retire,
            started_at: 1,
        };
        // overlap: the old CA serves, the new one issues, both are trusted
        let overlap = Rotation {
            phase: Phase::Overlap,
            ..rotation.clone()
        };
        let both = Authorities::load(dir, Some(&overlap)).unwrap();
        assert_eq!(both.current.pin(), old.pin());
        assert_eq!(both.issuing.pin(), new.pin());
        assert_eq!(both.trusted.len(), 2);
        assert!(both.bundle_pem().starts_with(old.cert_pem()));
        // a crash between moving the certificate and the key: the new CA still loads
        std::fs::rename(dir.join(NEXT_CERT_FILE), dir.join(CERT_FILE)).unwrap();
        let retiring = Authorities::load(dir, Some(&rotation)).unwrap();
        assert_eq!(retiring.current.pin(), new.pin());
        assert_eq!(retiring.trusted.len(), 1);
        // running the move again finishes it
        retire_files(dir, &rotation).unwrap();
        assert_eq!(Ca::load_or_create(dir).unwrap().pin(), new.pin());
        assert!(!dir.join(NEXT_KEY_FILE).exists());
    }

    #[test]
    fn a_certificate_names_the_ca_that_issued_it() {
        let dir = tempfile::tempdir().unwrap();
        let old = Arc::new(Ca::load_or_create(dir.path()).unwrap());
        let new = Arc::new(
            Ca::create(
                &dir.path().join(NEXT_CERT_FILE),
                &dir.path().join(NEXT_KEY_FILE),
                "Zpanel CA next",
            )
            .unwrap(),
        );
        let key = rcgen::KeyPair::generate().unwrap();
        let csr = rcgen::CertificateParams::default()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap();
        let issued = new
            .sign_host_csr(&csr, "h", Duration::from_secs(60))
            .unwrap();
        let der = zpanel_shared::tls::certs_from_pem(issued.cert_pem.as_bytes())
            .unwrap()
            .remove(0);
        let authorities = Authorities {
            current: old.clone(),
            issuing: new.clone(),
            trusted: vec![old.clone(), new.clone()],
        };
        assert_eq!(authorities.issuer_pin(&der), Some(new.pin()));
        assert!(!old.issued(&der));
    }
}
