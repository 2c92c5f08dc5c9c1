//! The enrolment exchange (`POST /api/v1/enroll`), the one JSON API both the daemon and
//! the control plane speak: a join token and a CSR in, a signed certificate out.

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
