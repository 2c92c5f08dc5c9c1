//! systemd integration for both programs' `Type=notify` units (`systemd/`): readiness,
//! `STATUS=` lines `systemctl status` shows, and the watchdog. Outside systemd (no
//! `NOTIFY_SOCKET`, no `WATCHDOG_USEC`) every call does nothing.

use std::time::Duration;

use sd_notify::NotifyState;

/// Tells systemd the service is ready (`READY=1`), with a status line.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A new status line for `systemctl status`.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// Tells systemd the service is stopping (`STOPPING=1`).
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// When the unit has `WatchdogSec=`, pings the watchdog (`WATCHDOG=1`) at half its interval
/// from a task on the current runtime: a runtime that stops making progress stops the pings,
/// and systemd restarts the service. Call it once, inside the runtime.
pub fn spawn_watchdog() {
    let Some(interval) = watchdog_interval() else {
        return;
    };
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            send(&[NotifyState::Watchdog]);
        }
    });
}

/// Half the watchdog timeout systemd set for this process, if it set one.
fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
        .filter(|timeout| !timeout.is_zero())
        .map(|timeout| timeout / 2)
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("cannot notify systemd: {e}");
    }
}
