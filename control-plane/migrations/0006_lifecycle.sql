-- Host lifecycle: revocation, which CA issued each host's certificate, the daemon binary a
-- host runs, and the state of a CA rotation.

-- Unix seconds; set when the host is revoked (its certificate is refused from then on).
ALTER TABLE hosts ADD COLUMN revoked_at INTEGER;
-- Pin (sha256:<hex>) of the CA that issued the current certificate ('' before this migration:
-- the CA of the day, filled at the next renewal).
ALTER TABLE hosts ADD COLUMN cert_ca_pin TEXT NOT NULL DEFAULT '';
-- Lower-case hex sha256 of the daemon executable, and whether it runs under systemd, as the
-- daemon's last hello said.
ALTER TABLE hosts ADD COLUMN daemon_sha256 TEXT NOT NULL DEFAULT '';
ALTER TABLE hosts ADD COLUMN systemd INTEGER NOT NULL DEFAULT 0;

-- At most one row: the CA rotation in progress. `phase` is 'overlap' (both CAs trusted,
-- hosts re-issued by the new one) and the row is deleted when the old CA is retired.
CREATE TABLE ca_rotation (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    old_pin     TEXT NOT NULL,
    new_pin     TEXT NOT NULL,
    phase       TEXT NOT NULL,
    started_at  INTEGER NOT NULL
);
