//! Passwords and browser sessions: argon2id hashes, an optional TOTP second factor, logins
//! rate-limited per client address with a lockout per account, and session tokens of which
//! only hashes are stored.

use std::net::IpAddr;
use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use super::{AppState, ServiceError};
use crate::access::Principal;
use crate::store::{AuditEntry, Store};

/// Shortest password `zpanel-cp passwd` accepts.
pub const MIN_PASSWORD_CHARS: usize = 10;
/// Longest password accepted anywhere (argon2 hashes any length, but a login request
/// should not make the server hash megabytes).
const MAX_PASSWORD_BYTES: usize = 1024;

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

/// Checks a new password's length and hashes it (on a blocking thread: argon2 is slow).
pub async fn hash_checked(password: &str) -> Result<String, ServiceError> {
    if password.chars().count() < MIN_PASSWORD_CHARS || password.len() > MAX_PASSWORD_BYTES {
        return Err(ServiceError::InvalidArgument(format!(
            "a password must be {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_BYTES} characters long"
        )));
    }
    let password = password.to_string();
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| ServiceError::Internal(e.to_string()))?
}

/// Sets (or resets) a user's password; the user's browser sessions end.
pub async fn set_password(store: &Store, user: &str, password: &str) -> Result<(), ServiceError> {
    let hash = hash_checked(password).await?;
    if store.set_password(user, &hash).await? {
        Ok(())
    } else {
        Err(ServiceError::NotFound(format!("no user named {user:?}")))
    }
}

impl AppState {
    /// Checks a user name, password and (when the user has one) TOTP code, and opens a
    /// browser session.
    pub async fn login(
        &self,
        user: &str,
        password: &str,
        totp_code: Option<&str>,
        address: IpAddr,
    ) -> Result<WebSession, ServiceError> {
        let refused = |detail: &str| {
            AuditEntry::new(user, "login")
                .target(address.to_string())
                .detail(detail)
                .outcome("refused")
        };
        let limited = self
            .limits
            .login_attempt(address)
            .and_then(|()| self.limits.account.check(user));
        if let Err(wait) = limited {
            self.audit(refused("rate limited or locked out")).await;
            return Err(ServiceError::RateLimited(wait.max(Duration::from_secs(1))));
        }
        let account = self.store.credentials(user).await?;
        let hash = account.as_ref().and_then(|a| a.password_hash.clone());
        let password = password.to_string();
        // Without a stored hash, verify against a throwaway one anyway so a wrong user name
        // takes as long as a wrong password.
        let verified = tokio::task::spawn_blocking(move || {
            let hash = hash.unwrap_or_else(|| DUMMY_HASH.to_string());
            password.len() <= MAX_PASSWORD_BYTES && verify_password(&password, &hash)
        })
        .await
        .map_err(|e| ServiceError::Internal(e.to_string()))?;
        let account = match account {
            Some(account) if verified && account.password_hash.is_some() => account,
            _ => {
                self.login_failed(user, refused("wrong user name or password"))
                    .await;
                return Err(ServiceError::BadCredentials);
            }
        };
        let principal = account.principal;
        if let Some(secret) = &account.totp_secret {
            let Some(code) = totp_code.filter(|code| !code.is_empty()) else {
                return Err(ServiceError::TotpRequired);
            };
            if !self
                .take_totp_code(&principal.user_id, secret, code)
                .await?
            {
                self.login_failed(user, refused("wrong or reused TOTP code"))
                    .await;
                return Err(ServiceError::BadCredentials);
            }
        }
        self.limits.account.succeed(user);
        let token = crate::store::new_token("zps");
        let csrf = hex::encode(rand::random::<[u8; 16]>());
        let expires_at = crate::store::now() + self.web_session_ttl.as_secs() as i64;
        self.store
            .create_web_session(
                &token,
                &principal.user_id,
                &csrf,
                expires_at,
                &address.to_string(),
            )
            .await?;
        self.audit(
            AuditEntry::new(&principal.user_name, "login")
                .credential("password")
                .target(address.to_string()),
        )
        .await;
        Ok(WebSession {
            token,
            csrf,
            principal,
            expires_at,
        })
    }

    /// Counts a failed login against the account and records it.
    async fn login_failed(&self, user: &str, entry: AuditEntry) {
        let locked = self.limits.account.fail(user);
        self.audit(entry).await;
        if locked {
            self.audit(
                AuditEntry::new(user, "login.lockout")
                    .detail("too many failed logins; the account is locked for a while")
                    .outcome("refused"),
            )
            .await;
        }
    }

    /// The user behind a session cookie, the session's CSRF token and the session's id.
    pub async fn authenticate_web(
        &self,
        token: &str,
    ) -> Result<(Principal, String, String), ServiceError> {
        self.store
            .web_session(token)
            .await?
            .ok_or(ServiceError::Unauthenticated)
    }

    pub async fn logout(&self, principal: &Principal, token: &str) -> Result<(), ServiceError> {
        self.store.delete_web_session(token).await?;
        self.audit(self.entry(principal, "logout")).await;
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
}
