//! The numbered, bounded buffer of samples the control plane has not stored yet, and what
//! a session sends from it: new samples as they are taken, everything still held on a new
//! session, and everything unacknowledged again when no acknowledgement came for
//! [`RESEND_AFTER`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use zpanel_proto::{Message, MetricBatch, MetricSample};

/// Samples in one `MetricBatch` at most.
pub const MAX_BATCH: usize = 100;
/// How long sent samples wait for an acknowledgement before they are sent again.
pub const RESEND_AFTER: Duration = Duration::from_secs(30);

/// Samples numbered from 0, the oldest first; the oldest is dropped when it is full.
#[derive(Debug)]
pub struct SampleBuffer {
    samples: VecDeque<MetricSample>,
    /// The number of `samples[0]` (of the next sample when empty).
    first_seq: u64,
    capacity: usize,
    /// The number of the next sample this session sends.
    next_send: u64,
    /// When the unacknowledged samples are sent again, while some are.
    resend_at: Option<Instant>,
    /// Samples dropped since the control plane last took some.
    dropped: u64,
}

impl SampleBuffer {
    /// A buffer of at most `capacity` samples (at least one).
    pub fn new(capacity: usize) -> SampleBuffer {
        SampleBuffer {
            samples: VecDeque::new(),
            first_seq: 0,
            capacity: capacity.max(1),
            next_send: 0,
            resend_at: None,
            dropped: 0,
        }
    }

    /// The number the next sample gets.
    pub fn next_seq(&self) -> u64 {
        self.first_seq + self.samples.len() as u64
    }

    /// Takes a sample; when full, drops the oldest. Answers how many have been dropped since
    /// the control plane last took samples (0: none dropped now).
    pub fn push(&mut self, sample: MetricSample) -> u64 {
        let full = self.samples.len() == self.capacity;
        if full {
            self.samples.pop_front();
            self.first_seq += 1;
            self.next_send = self.next_send.max(self.first_seq);
            self.dropped += 1;
        }
        self.samples.push_back(sample);
        if full { self.dropped } else { 0 }
    }

    /// The control plane has every sample numbered below `next_seq`. Answers how many were
    /// dropped before it could take them, since it last took some.
    pub fn acknowledge(&mut self, next_seq: u64, now: Instant) -> u64 {
        let upto = next_seq.clamp(self.first_seq, self.next_seq());
        let taken = (upto - self.first_seq) as usize;
        self.samples.drain(..taken);
        self.first_seq = upto;
        self.next_send = self.next_send.max(upto);
        self.resend_at = (self.next_send > self.first_seq).then_some(now + RESEND_AFTER);
        if taken == 0 {
            return 0;
        }
        std::mem::take(&mut self.dropped)
    }

    /// A new session: everything held is sent again, oldest first.
    pub fn restart(&mut self) {
        self.next_send = self.first_seq;
        self.resend_at = None;
    }

    /// When unacknowledged samples are sent again, if any wait.
    pub fn resend_at(&self) -> Option<Instant> {
        self.resend_at
    }

    /// The next samples to send (at most [`MAX_BATCH`], and at most `max_bytes` encoded
    /// unless one alone is larger), with the number of the first; none when everything
    /// held was sent and the resend time has not come.
    pub fn next_batch(&mut self, now: Instant, max_bytes: usize) -> Option<MetricBatch> {
        if self.resend_at.is_some_and(|at| now >= at) {
            self.next_send = self.first_seq;
            self.resend_at = None;
        }
        let start = (self.next_send - self.first_seq) as usize;
        let mut bytes = 0;
        let samples: Vec<MetricSample> = self
            .samples
            .iter()
            .skip(start)
            .take(MAX_BATCH)
            .take_while(|sample| {
                bytes += sample.encoded_len();
                bytes <= max_bytes || bytes == sample.encoded_len()
            })
            .cloned()
            .collect();
        if samples.is_empty() {
            return None;
        }
        let first_seq = self.next_send;
        self.next_send += samples.len() as u64;
        self.resend_at.get_or_insert(now + RESEND_AFTER);
        Some(MetricBatch {
            first_seq,
            samples,
            ..MetricBatch::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sample recognisable by its time.
    fn sample(at_ms: i64) -> MetricSample {
        MetricSample {
            at_ms,
            ..MetricSample::default()
        }
    }

    fn times(batch: &MetricBatch) -> Vec<i64> {
        batch.samples.iter().map(|s| s.at_ms).collect()
    }

    const UNLIMITED: usize = usize::MAX;

    #[test]
    fn samples_are_numbered_sent_once_and_acknowledged() {
        let now = Instant::now();
        let mut buffer = SampleBuffer::new(10);
        assert!(buffer.next_batch(now, UNLIMITED).is_none());
        buffer.push(sample(0));
        buffer.push(sample(1));
        let batch = buffer.next_batch(now, UNLIMITED).unwrap();
        assert_eq!((batch.first_seq, times(&batch)), (0, vec![0, 1]));
        assert!(buffer.next_batch(now, UNLIMITED).is_none(), "sent twice");
        buffer.push(sample(2));
        let batch = buffer.next_batch(now, UNLIMITED).unwrap();
        assert_eq!((batch.first_seq, times(&batch)), (2, vec![2]));

        assert_eq!(buffer.acknowledge(2, now), 0);
        assert_eq!((buffer.first_seq, buffer.samples.len()), (2, 1));
        assert!(buffer.resend_at().is_some(), "sample 2 is still waiting");
        buffer.acknowledge(3, now);
        assert!(buffer.samples.is_empty());
        assert_eq!((buffer.next_seq(), buffer.resend_at()), (3, None));
        // an acknowledgement of what never was, or of the past, changes nothing
        buffer.acknowledge(1_000, now);
        buffer.acknowledge(0, now);
        assert_eq!(buffer.next_seq(), 3);
        buffer.push(sample(3));
        assert_eq!(buffer.next_batch(now, UNLIMITED).unwrap().first_seq, 3);
    }

    #[test]
    fn a_full_buffer_drops_the_oldest_and_counts_until_the_control_plane_takes_some() {
        let now = Instant::now();
        let mut buffer = SampleBuffer::new(3);
        for at in 0..3 {
            assert_eq!(buffer.push(sample(at)), 0);
        }
        assert_eq!(buffer.push(sample(3)), 1);
        assert_eq!(buffer.push(sample(4)), 2);
        let batch = buffer.next_batch(now, UNLIMITED).unwrap();
        assert_eq!((batch.first_seq, times(&batch)), (2, vec![2, 3, 4]));
        assert_eq!(buffer.acknowledge(4, now), 2);
        assert_eq!(buffer.push(sample(5)), 0);
        assert_eq!(buffer.acknowledge(6, now), 0);
    }

    #[test]
    fn unacknowledged_samples_are_sent_again_after_the_timeout() {
        let start = Instant::now();
        let mut buffer = SampleBuffer::new(10);
        buffer.push(sample(0));
        buffer.push(sample(1));
        buffer.next_batch(start, UNLIMITED).unwrap();
        assert_eq!(buffer.resend_at(), Some(start + RESEND_AFTER));
        buffer.push(sample(2));
        let later = start + Duration::from_secs(10);
        assert_eq!(buffer.next_batch(later, UNLIMITED).unwrap().first_seq, 2);
        // the clock runs from the first unacknowledged send, not the latest
        assert_eq!(buffer.resend_at(), Some(start + RESEND_AFTER));
        let before = start + RESEND_AFTER - Duration::from_millis(1);
        assert!(buffer.next_batch(before, UNLIMITED).is_none());

        // an acknowledgement of part of it restarts the clock for the rest
        buffer.acknowledge(1, before);
        assert_eq!(buffer.resend_at(), Some(before + RESEND_AFTER));
        assert!(buffer.next_batch(start + RESEND_AFTER, UNLIMITED).is_none());

        let due = before + RESEND_AFTER;
        let again = buffer.next_batch(due, UNLIMITED).unwrap();
        assert_eq!((again.first_seq, times(&again)), (1, vec![1, 2]));
        assert_eq!(buffer.resend_at(), Some(due + RESEND_AFTER));
        assert!(buffer.next_batch(due, UNLIMITED).is_none());
    }

    #[test]
    fn a_new_session_sends_everything_held_in_order_in_batches_of_at_most_100() {
        let now = Instant::now();
        let mut buffer = SampleBuffer::new(1_000);
        for at in 0..250 {
            buffer.push(sample(at));
        }
        buffer.next_batch(now, UNLIMITED).unwrap();
        buffer.acknowledge(30, now);

        buffer.restart();
        assert_eq!(buffer.resend_at(), None);
        let mut sent = Vec::new();
        while let Some(batch) = buffer.next_batch(now, UNLIMITED) {
            assert!(batch.samples.len() <= MAX_BATCH);
            assert_eq!(batch.first_seq, 30 + sent.len() as u64);
            sent.extend(times(&batch));
        }
        assert_eq!(sent, (30..250).collect::<Vec<_>>());
    }

    #[test]
    fn batches_stay_within_the_byte_budget_but_carry_at_least_one_sample() {
        let now = Instant::now();
        let mut buffer = SampleBuffer::new(10);
        for at in 1..=4 {
            buffer.push(sample(at));
        }
        let one = sample(1).encoded_len();
        let batch = buffer.next_batch(now, 2 * one).unwrap();
        assert_eq!(times(&batch), vec![1, 2]);
        let batch = buffer.next_batch(now, 1).unwrap();
        assert_eq!(times(&batch), vec![3]);
    }
}
