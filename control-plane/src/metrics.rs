//! Counters the control plane exposes at `/metrics` in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Metrics {
    pub channels_open: AtomicU64,
    pub bytes_routed: AtomicU64,
    pub frames_rejected: AtomicU64,
    pub sessions_accepted: AtomicU64,
    pub handshakes_refused: AtomicU64,
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn render(&self, hosts_online: usize) -> String {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let rows = [
            (
                "zpanel_hosts_online",
                "gauge",
                "Hosts with a live bridge session.",
                hosts_online as u64,
            ),
            (
                "zpanel_channels_open",
                "gauge",
                "Channels open across all sessions.",
                load(&self.channels_open),
            ),
            (
                "zpanel_bytes_routed_total",
                "counter",
                "Stream payload bytes routed between clients and hosts.",
                load(&self.bytes_routed),
            ),
            (
                "zpanel_frames_rejected_total",
                "counter",
                "Bridge frames refused as malformed, oversized, out of order or for an unknown channel.",
                load(&self.frames_rejected),
            ),
            (
                "zpanel_sessions_accepted_total",
                "counter",
                "Bridge sessions accepted.",
                load(&self.sessions_accepted),
            ),
            (
                "zpanel_handshakes_refused_total",
                "counter",
                "Bridge connections refused during TLS or the hello.",
                load(&self.handshakes_refused),
            ),
        ];
        let mut out = String::new();
        for (name, kind, help, value) in rows {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        out
    }
}
