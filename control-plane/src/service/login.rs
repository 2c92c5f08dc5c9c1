//! Passwords and browser sessions: argon2id hashes, logins rate-limited per user name and
//! per client address, and session tokens of which only hashes are stored.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::{AppState, ServiceError};
use crate::store::{Principal, Store};

/// Shortest password `zpanel-cp passwd` accepts.
pub const MIN_PASSWORD_CHARS: usize = 10;
/// Longest password accepted anywhere (argon2 hashes any length, but a login request
/// should not make the server hash megabytes).
const MAX_PASSWORD_BYTES: usize = 1024;

/// Login attempts allowed in a burst, and the pace they come back at, per user name and
/// per client address.
pub struct LoginLimits {
    per_user: DefaultKeyedRateLimiter<String>,
    per_address: DefaultKeyedRateLimiter<IpAddr>,
}

impl Default for LoginLimits {
    fn default() -> Self {
        let quota = |burst: u32, every: Duration| {
            Quota::with_period(every)
                .expect("non-zero period")
                .allow_burst(NonZeroU32::new(burst).expect("non-zero burst"))
        };
        LoginLimits {
            per_user: RateLimiter::keyed(quota(5, Duration::from_secs(12))),
            per_address: RateLimiter::keyed(quota(20, Duration::from_secs(3))),
        }
    }
}

impl LoginLimits {
    /// Takes one attempt for `user` from `address`, or says how long to wait.
    fn check(&self, user: &str, address: IpAddr) -> Result<(), Duration> {
        let now = DefaultClock::default().now();
        let wait = |denied: governor::NotUntil<_>| denied.wait_time_from(now);
        self.per_address.check_key(&address).map_err(wait)?;
        self.per_user.check_key(&user.to_string()).map_err(wait)?;
        Ok(())
    }
}

/// A logged-in browser: the cookie value, its CSRF token and who it is.
pub struct WebSession {
    pub token: String,
    pub csrf: String,
    pub principal: Principal,
    pub expires_at: i64,
}

/// Hashes a password with argon2id and a random salt (PHC string).
pub fn hash_password(password: &str) -> Result<String, ServiceError> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
        .map_err(|e| ServiceError::Internal(format!("password salt: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| ServiceError::Internal(format!("password hash: {e}")))
}

fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// A fresh random password for the first admin: 24 characters, about 140 bits.
pub fn generate_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    (0..24)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Sets (or resets) a user's password; the user's browser sessions end.
pub async fn set_password(store: &Store, user: &str, password: &str) -> Result<(), ServiceError> {
    if password.chars().count() < MIN_PASSWORD_CHARS || password.len() > MAX_PASSWORD_BYTES {
        return Err(ServiceError::InvalidArgument(format!(
            "a password must be {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_BYTES} characters long"
        )));
    }
    let password = password.to_string();
    let hash = tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| ServiceError::Internal(e.to_string()))??;
    if store.set_password(user, &hash).await? {
        Ok(())
    } else {
        Err(ServiceError::NotFound(format!("no user named {user:?}")))
    }
}

impl AppState {
    /// Checks a user name and password and opens a browser session.
    pub async fn login(
        &self,
        user: &str,
        password: &str,
        address: IpAddr,
    ) -> Result<WebSession, ServiceError> {
        if let Err(wait) = self.login_limits.check(user, address) {
            self.audit(
                user,
                "login",
                &address.to_string(),
                "rate limited",
                "refused",
            )
            .await;
            return Err(ServiceError::RateLimited(wait.max(Duration::from_secs(1))));
        }
        let account = self.store.user_password(user).await?;
        let hash = account.as_ref().and_then(|(_, hash)| hash.clone());
        let password = password.to_string();
        // Without a stored hash, verify against a throwaway one anyway so a wrong user name
        // takes as long as a wrong password.
        let verified = tokio::task::spawn_blocking(move || {
            let hash = hash.unwrap_or_else(|| DUMMY_HASH.to_string());
            password.len() <= MAX_PASSWORD_BYTES && verify_password(&password, &hash)
        })
        .await
        .map_err(|e| ServiceError::Internal(e.to_string()))?;
        let principal = match account {
            Some((principal, Some(_))) if verified => principal,
            _ => {
                self.audit(user, "login", &address.to_string(), "", "refused")
                    .await;
                return Err(ServiceError::BadCredentials);
            }
        };
        let token = crate::store::new_token("zps");
        let csrf = hex::encode(rand::random::<[u8; 16]>());
        let expires_at = crate::store::now() + self.web_session_ttl.as_secs() as i64;
        self.store
            .create_web_session(&token, &principal.user_id, &csrf, expires_at)
            .await?;
        self.audit(
            &principal.user_name,
            "login",
            &address.to_string(),
            "",
            "ok",
        )
        .await;
        Ok(WebSession {
            token,
            csrf,
            principal,
            expires_at,
        })
    }

    /// The user behind a session cookie and the session's CSRF token.
    pub async fn authenticate_web(&self, token: &str) -> Result<(Principal, String), ServiceError> {
        self.store
            .web_session(token)
            .await?
            .ok_or(ServiceError::Unauthenticated)
    }

    pub async fn logout(&self, principal: &Principal, token: &str) -> Result<(), ServiceError> {
        self.store.delete_web_session(token).await?;
        self.audit(&principal.user_name, "logout", "-", "", "ok")
            .await;
        Ok(())
    }
}

/// An argon2id hash of a random password nobody knows, for timing-equal refusals.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$2Qe1pJqfXrG3Jm1pHAlnwqM9kUX1cJ6x3oE7yS1jT2c";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_differ() {
        let a = hash_password("correct horse battery").unwrap();
        let b = hash_password("correct horse battery").unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", &a));
        assert!(!verify_password("wrong", &a));
        assert!(!verify_password("x", DUMMY_HASH));
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
    }

    #[test]
    fn limits_bursts_per_user_and_address() {
        let limits = LoginLimits::default();
        let address: IpAddr = [127, 0, 0, 1].into();
        for _ in 0..5 {
            assert!(limits.check("admin", address).is_ok());
        }
        assert!(limits.check("admin", address).is_err());
        assert!(limits.check("other", address).is_ok());
    }
}
