//! Host telemetry (ARCHITECTURE.md, "Metrics and alerts"): a sample every `[metrics]
//! interval` for the daemon's whole life, kept in a bounded buffer until the control plane
//! acknowledges it; the sender each session runs to deliver them; and the top processes on
//! demand.

mod buffer;
mod collect;
mod processes;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use zpanel_proto::frame::Body;
use zpanel_proto::{MetricBatch, MetricSample, OpenError, OpenResult, ProcessList, open_result};

use crate::config::MetricsSettings;
use buffer::SampleBuffer;
use collect::Collector;
use processes::ProcessTable;

/// The host's samples and process list, shared by the collector and every session.
pub struct Telemetry {
    interval: Duration,
    capacity: usize,
    buffer: Mutex<SampleBuffer>,
    /// The number the next sample gets: a session's sender waits on it for new samples.
    taken: watch::Sender<u64>,
    /// Made on the first request for processes: the daemon stays small until one comes.
    processes: Arc<Mutex<Option<ProcessTable>>>,
}

impl Telemetry {
    /// Telemetry that collects nothing until [`Telemetry::collect_forever`] runs.
    pub fn new(settings: &MetricsSettings) -> Arc<Telemetry> {
        let capacity = settings.buffered_samples();
        Arc::new(Telemetry {
            interval: settings.interval,
            capacity,
            buffer: Mutex::new(SampleBuffer::new(capacity)),
            taken: watch::Sender::new(0),
            processes: Arc::default(),
        })
    }

    fn buffer(&self) -> MutexGuard<'_, SampleBuffer> {
        self.buffer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a sample every interval, on a blocking thread (it reads `/proc` and calls
    /// `statfs`), for as long as the daemon runs.
    pub async fn collect_forever(self: Arc<Self>) {
        let mut collector = Collector::new();
        let mut tick = tokio::time::interval_at(Instant::now() + self.interval, self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let taking = tokio::task::spawn_blocking(move || {
                let sample = collector.sample();
                (collector, sample)
            });
            match taking.await {
                Ok((kept, sample)) => {
                    collector = kept;
                    self.record(sample);
                }
                Err(e) => {
                    tracing::warn!("taking a metrics sample failed: {e}");
                    collector = Collector::new();
                }
            }
        }
    }

    /// Keeps a sample for the control plane and wakes the session's sender.
    fn record(&self, sample: MetricSample) {
        let (dropped, next) = {
            let mut buffer = self.buffer();
            (buffer.push(sample), buffer.next_seq())
        };
        if dropped == 1 {
            tracing::warn!(
                "metrics buffer full ({} samples, bridge.toml [metrics] buffer): dropping the \
                 oldest until the control plane takes them",
                self.capacity
            );
        }
        self.taken.send_replace(next);
    }

    /// The control plane stored every sample numbered below `next_seq`.
    pub fn acknowledge(&self, next_seq: u64) {
        let dropped = self
            .buffer()
            .acknowledge(next_seq, Instant::now().into_std());
        if dropped > 0 {
            tracing::warn!(
                "{dropped} metric samples were dropped while the control plane could not take \
                 them (bridge.toml [metrics] buffer)"
            );
        }
    }

    /// Sends samples on a session for as long as it lasts: everything held first, then each
    /// new one as it is taken, and the unacknowledged ones again after a silence (see
    /// `buffer`). Frames stay within half of `max_frame` bytes.
    pub async fn send(self: Arc<Self>, outbound: mpsc::Sender<Body>, max_frame: usize) {
        let mut taken = self.taken.subscribe();
        self.buffer().restart();
        loop {
            while let Some(batch) = self.next_batch(max_frame / 2) {
                if outbound.send(Body::Metrics(batch)).await.is_err() {
                    return;
                }
            }
            let resend_at = self.buffer().resend_at();
            let resend = async {
                match resend_at {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = taken.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = resend => {}
            }
        }
    }

    fn next_batch(&self, max_bytes: usize) -> Option<MetricBatch> {
        let batch = self
            .buffer()
            .next_batch(Instant::now().into_std(), max_bytes)?;
        Some(MetricBatch {
            sent_at_ms: zpanel_shared::unix_now_ms(),
            interval_ms: u32::try_from(self.interval.as_millis()).unwrap_or(u32::MAX),
            ..batch
        })
    }

    /// Answers `Open{processes}`: the host now and its top processes, measured on a
    /// blocking thread.
    pub async fn processes(&self, channel_id: u64, request: ProcessList) -> OpenResult {
        let table = self.processes.clone();
        let listing = tokio::task::spawn_blocking(move || {
            let mut table = table.lock().unwrap_or_else(|p| p.into_inner());
            table.get_or_insert_with(ProcessTable::new).list(&request)
        })
        .await;
        match listing {
            Ok(listing) => OpenResult {
                channel_id,
                reply: Some(open_result::Reply::Processes(listing)),
                ..OpenResult::default()
            },
            Err(e) => OpenResult {
                channel_id,
                error: OpenError::Refused as i32,
                message: format!("the process list could not be read: {e}"),
                ..OpenResult::default()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_ms: i64) -> MetricSample {
        MetricSample {
            at_ms,
            ..MetricSample::default()
        }
    }

    async fn batch(frames: &mut mpsc::Receiver<Body>) -> (u64, Vec<i64>) {
        match frames.recv().await {
            Some(Body::Metrics(batch)) => {
                assert_eq!(batch.interval_ms, 10_000);
                assert!(batch.sent_at_ms > 0);
                let times = batch.samples.iter().map(|s| s.at_ms).collect();
                (batch.first_seq, times)
            }
            other => panic!("not a batch: {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_gets_what_is_held_then_new_samples_and_resends_after_silence() {
        let telemetry = Telemetry::new(&MetricsSettings::default());
        telemetry.record(sample(0));
        telemetry.record(sample(1));
        let (outbound, mut frames) = mpsc::channel(16);
        let session = tokio::spawn(telemetry.clone().send(outbound, 1 << 20));
        assert_eq!(batch(&mut frames).await, (0, vec![0, 1]));
        telemetry.record(sample(2));
        assert_eq!(batch(&mut frames).await, (2, vec![2]));
        telemetry.acknowledge(2);

        // no acknowledgement of sample 2: sent again once the silence is long enough
        let asked = Instant::now();
        assert_eq!(batch(&mut frames).await, (2, vec![2]));
        assert!(asked.elapsed() >= buffer::RESEND_AFTER);
        telemetry.acknowledge(3);

        // a new session after a cut: what was taken meanwhile comes first, in order
        session.abort();
        telemetry.record(sample(3));
        telemetry.record(sample(4));
        let (outbound, mut frames) = mpsc::channel(16);
        tokio::spawn(telemetry.clone().send(outbound, 1 << 20));
        assert_eq!(batch(&mut frames).await, (3, vec![3, 4]));
    }

    #[tokio::test]
    async fn processes_are_answered_with_a_summary() {
        let telemetry = Telemetry::new(&MetricsSettings::default());
        let request = ProcessList {
            limit: 3,
            ..ProcessList::default()
        };
        let result = telemetry.processes(7, request).await;
        assert_eq!((result.channel_id, result.error()), (7, OpenError::None));
        let Some(open_result::Reply::Processes(listing)) = result.reply else {
            panic!("no processes in {result:?}");
        };
        assert!(listing.summary.is_some());
        assert_eq!(listing.processes.len(), 3);
    }
}
