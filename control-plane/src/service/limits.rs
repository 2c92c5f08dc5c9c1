//! Rate limits and lockouts: how many logins an address may try (governor), and how many
//! failures an account, or an address presenting bad API or join tokens, may pile up
//! before it is locked out for a while.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Entries a lockout keeps before it forgets stale ones.
const LOCKOUT_PRUNE_AT: usize = 10_000;

/// Counts failures per key within a window; at `max` failures the key is locked out.
pub struct Lockout {
    max: u32,
    window: Duration,
    lock: Duration,
    keys: Mutex<HashMap<String, Failures>>,
}

#[derive(Clone, Copy)]
struct Failures {
    count: u32,
    first: Instant,
    locked_until: Option<Instant>,
}

impl Lockout {
    pub fn new(max: u32, window: Duration, lock: Duration) -> Lockout {
        Lockout {
            max,
            window,
            lock,
            keys: Mutex::default(),
        }
    }

    fn keys(&self) -> std::sync::MutexGuard<'_, HashMap<String, Failures>> {
        self.keys
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How long `key` is still locked out, if it is.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        let now = Instant::now();
        match self.keys().get(key).and_then(|f| f.locked_until) {
            Some(until) if until > now => Err(until - now),
            _ => Ok(()),
        }
    }

    /// Counts a failure; true when it locked the key out.
    pub fn fail(&self, key: &str) -> bool {
        let now = Instant::now();
        let mut keys = self.keys();
        if keys.len() >= LOCKOUT_PRUNE_AT {
            keys.retain(|_, f| {
                now.duration_since(f.first) < self.window
                    || f.locked_until.is_some_and(|until| until > now)
            });
        }
        let fresh = Failures {
            count: 0,
            first: now,
            locked_until: None,
        };
        let failures = keys.entry(key.to_string()).or_insert(fresh);
        if now.duration_since(failures.first) >= self.window {
            *failures = fresh;
        }
        failures.count += 1;
        if failures.count >= self.max {
            *failures = Failures {
                locked_until: Some(now + self.lock),
                ..fresh
            };
            return true;
        }
        false
    }

    /// Forgets the failures of a key that just succeeded.
    pub fn succeed(&self, key: &str) {
        self.keys().remove(key);
    }
}

/// Every limit the service applies.
pub struct Limits {
    /// Login attempts per client address: a burst, then a steady pace.
    login_per_address: DefaultKeyedRateLimiter<IpAddr>,
    /// Failed logins per account.
    pub account: Lockout,
    /// Unknown, revoked or expired API tokens per client address.
    pub api_tokens: Lockout,
    /// Refused join tokens per client address.
    pub enrolment: Lockout,
}

impl Default for Limits {
    fn default() -> Self {
        let per_address = Quota::with_period(Duration::from_secs(3))
            .expect("non-zero period")
            .allow_burst(NonZeroU32::new(20).expect("non-zero burst"));
        let minutes = |n: u64| Duration::from_secs(60 * n);
        Limits {
            login_per_address: RateLimiter::keyed(per_address),
            account: Lockout::new(10, minutes(15), minutes(15)),
            api_tokens: Lockout::new(20, minutes(1), minutes(5)),
            enrolment: Lockout::new(10, minutes(10), minutes(10)),
        }
    }
}

impl Limits {
    /// Takes one login attempt for `address`, or says how long to wait.
    pub fn login_attempt(&self, address: IpAddr) -> Result<(), Duration> {
        let now = DefaultClock::default().now();
        self.login_per_address
            .check_key(&address)
            .map_err(|denied| denied.wait_time_from(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_out_after_max_failures_and_success_resets() {
        let lockout = Lockout::new(3, Duration::from_secs(60), Duration::from_secs(60));
        assert!(!lockout.fail("a"));
        lockout.succeed("a");
        assert!(!lockout.fail("a"));
        assert!(!lockout.fail("a"));
        assert!(lockout.check("a").is_ok());
        assert!(lockout.fail("a"));
        assert!(lockout.check("a").is_err());
        assert!(lockout.check("b").is_ok());
    }

    #[test]
    fn limits_login_bursts_per_address() {
        let limits = Limits::default();
        let address: IpAddr = [127, 0, 0, 1].into();
        for _ in 0..20 {
            assert!(limits.login_attempt(address).is_ok());
        }
        assert!(limits.login_attempt(address).is_err());
        assert!(limits.login_attempt([127, 0, 0, 2].into()).is_ok());
    }
}
