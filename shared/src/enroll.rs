//! The enrolment exchange (`POST /api/v1/enroll`), the one JSON API both the daemon and
//! the control plane speak: a join token and a CSR in, a signed certificate out.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const ENROLL_PATH: &str = "/api/v1/enroll";
pub const CA_PATH: &str = "/api/v1/ca.pem";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrollRequest {
    pub token: String,
    pub csr_pem: String,
    pub name: String,
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub kernel: String,
    #[serde(default)]
    pub arch: String,
    #[serde(default)]
    pub daemon_version: String,
    /// Labels to select hosts by (`env=prod`, `role=db`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// A machine enrolled before with this control plane sends the certificate it was given,
    /// and its CSR is for the same key: the CSR's signature proves the machine still holds
    /// that key, so it enrols again as the same host (same id, history and name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_cert_pem: Option<String>,
}

/// Most labels a host may carry.
pub const MAX_LABELS: usize = 32;

/// Checks a label: keys and values of 1-63 letters, digits, `-`, `_`, `.` or `/`.
pub fn check_label(key: &str, value: &str) -> Result<(), String> {
    let ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
    };
    if ok(key) && ok(value) {
        Ok(())
    } else {
        Err(format!(
            "label {key}={value} is invalid: keys and values are 1-63 letters, digits, '-', '_', '.' or '/'"
        ))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrollResponse {
    pub host_id: String,
    pub name: String,
    pub cert_pem: String,
    pub ca_pem: String,
    pub bridge_url: String,
    pub cert_expires_at: i64,
}

/// The body of every JSON error answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}
