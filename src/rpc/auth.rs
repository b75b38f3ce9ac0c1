//! JWT authentication of control calls: the shared secret (loaded or generated), HS256 tokens as the Engine API uses them, and the per-method policy; the listener applies it, methods know nothing of it.

use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// How far `iat` may be from our clock, either way (the Engine API's window).
pub const IAT_WINDOW_SECS: u64 = 60;

/// JSON-RPC code for a refused token (the code geth's authenticated endpoints and op-node use
/// for "unauthorized" is an HTTP 401; -32001 is the conventional server-defined slot).
pub const UNAUTHORIZED: i64 = -32001;

/// The subject this sidecar puts in tokens it sends to other sidecars.
const PEER_SUBJECT_PREFIX: &str = "op-sidecar/";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("jwt secret {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("jwt secret {path}: expected 32 hex-encoded bytes (64 hex characters, optional 0x prefix): {reason}")]
    Invalid { path: String, reason: String },
    #[error("jwt secret {path}: could not create it: {reason}")]
    Create { path: String, reason: String },
}

/// Why a token was refused; the message goes back to the caller as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("unauthorized: missing token (send Authorization: Bearer <jwt>)")]
    Missing,
    #[error("unauthorized: invalid token: {0}")]
    Invalid(String),
    #[error(
        "unauthorized: stale token: iat {iat} is more than {IAT_WINDOW_SECS}s from now ({now})"
    )]
    Stale { iat: u64, now: u64 },
}

/// Who a call may come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// op-node's own calls and read-only queries: no token, so op-node's `--conductor.rpc`
    /// and op-batcher/op-proposer need no change.
    Open,
    /// Changes the cluster: needs a valid token when a secret is configured.
    Control,
}

/// The policy for every method in `methods::KNOWN` (a unit test keeps the two in step); `None`
/// for a method this sidecar does not serve (answered "method not found" without a token).
pub fn access(method: &str) -> Option<Access> {
    Some(match method {
        "coordinator_setMaster"
        | "coordinator_setActiveSequencer"
        | "coordinator_startElection"
        | "coordinator_stopElection"
        | "conductor_pause"
        | "conductor_resume"
        | "conductor_stop"
        | "conductor_overrideLeader"
        | "conductor_transferLeader"
        | "conductor_transferLeaderToServer"
        | "conductor_addServerAsVoter"
        | "conductor_addServerAsNonvoter"
        | "conductor_removeServer"
        | "conductor_demoteVoter"
        // Fanned out to every node's op-geth: it throttles the whole chain's DA.
        | "miner_setMaxDASize" => Access::Control,
        "coordinator_getMaster"
        | "coordinator_getActiveSequencer"
        | "coordinator_electionStopped"
        | "coordinator_getStoppedHash"
        | "coordinator_version"
        | "coordinator_requestBuildingBlock"
        | "optimism_syncStatus"
        | "optimism_outputAtBlock"
        | "optimism_rollupConfig"
        | "optimism_version"
        | "eth_getBlockByNumber"
        | "admin_sequencerActive"
        | "conductor_leader"
        | "conductor_leaderWithID"
        | "conductor_active"
        | "conductor_paused"
        | "conductor_stopped"
        | "conductor_sequencerHealthy"
        // op-node's fenced commit: the fence (the leader key's epoch), not a token, decides.
        | "conductor_commitUnsafePayload"
        | "conductor_leaderOverridden"
        | "conductor_clusterMembership"
        | "health_status"
        | "rpc_modules"
        | "sidecar_status" => Access::Open,
        _ => return None,
    })
}

pub fn is_control(method: &str) -> bool {
    access(method) == Some(Access::Control)
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iat: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sub: Option<String>,
}

/// The 32-byte HS256 secret shared by every sidecar of a cluster and its operators.
#[derive(Clone)]
pub struct JwtSecret {
    bytes: [u8; 32],
}

impl std::fmt::Debug for JwtSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtSecret(<redacted>)")
    }
}

impl JwtSecret {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        JwtSecret { bytes }
    }

    /// Parses 64 hex characters, optionally prefixed with 0x; surrounding whitespace is ignored.
    pub fn from_hex(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let t = t
            .strip_prefix("0x")
            .or_else(|| t.strip_prefix("0X"))
            .unwrap_or(t);
        let v = hex::decode(t).map_err(|e| e.to_string())?;
        let bytes: [u8; 32] = v
            .try_into()
            .map_err(|v: Vec<u8>| format!("{} bytes", v.len()))?;
        Ok(JwtSecret { bytes })
    }

    /// Reads the secret at `path`, or, if there is no file, generates one and writes it there
    /// with mode 0600 (as op-node does for its supervisor and engine secrets), so a first start
    /// needs no preparation and the operator copies the file to the other sidecars.
    pub fn load_or_generate(path: &Path) -> Result<Self, SecretError> {
        let shown = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Self::from_hex(&text).map_err(|reason| SecretError::Invalid {
                path: shown,
                reason,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let secret = JwtSecret::from_bytes(rand::random());
                secret.write_new(path).map_err(|e| SecretError::Create {
                    path: shown.clone(),
                    reason: e.to_string(),
                })?;
                tracing::info!(path = %shown, "generated a new jwt secret; copy it to the other sidecars and to operators");
                Ok(secret)
            }
            Err(e) => Err(SecretError::Read {
                path: shown,
                reason: e.to_string(),
            }),
        }
    }

    fn write_new(&self, path: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        // create_new: never overwrite a secret another process wrote in the meantime; the mode
        // is set at creation so the secret is never readable by others, even briefly.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        f.write_all(hex::encode(self.bytes).as_bytes())?;
        f.sync_all()
    }

    /// A fresh token (`iat` = now) with an optional subject.
    pub fn token(&self, sub: Option<&str>) -> String {
        self.token_at(sub, unix_now())
    }

    /// A token issued at `iat` (seconds since the Unix epoch); tests use it for stale tokens.
    pub fn token_at(&self, sub: Option<&str>, iat: u64) -> String {
        let claims = Claims {
            iat,
            sub: sub.map(str::to_string),
        };
        // HS256 signing of a serializable struct cannot fail.
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&self.bytes),
        )
        .unwrap_or_default()
    }

    /// The token this sidecar sends to the other sidecars.
    pub fn peer_token(&self, server_id: &str) -> String {
        self.token(Some(&format!("{PEER_SUBJECT_PREFIX}{server_id}")))
    }

    /// Checks an `Authorization` header value; the token's subject on success.
    pub fn verify_header(&self, header: Option<&str>) -> Result<Option<String>, TokenError> {
        let value = header.ok_or(TokenError::Missing)?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| TokenError::Invalid("expected \"Bearer <jwt>\"".into()))?;
        self.verify(token, unix_now())
    }

    fn verify(&self, token: &str, now: u64) -> Result<Option<String>, TokenError> {
        let mut v = Validation::new(Algorithm::HS256);
        // The Engine API's JWTs carry only `iat`; freshness is checked below, not by `exp`.
        v.required_spec_claims.clear();
        v.validate_exp = false;
        v.validate_nbf = false;
        let data =
            jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(&self.bytes), &v)
                .map_err(|e| TokenError::Invalid(e.to_string()))?;
        let iat = data.claims.iat;
        if iat.abs_diff(now) > IAT_WINDOW_SECS {
            return Err(TokenError::Stale { iat, now });
        }
        Ok(data.claims.sub)
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_at(secret: &JwtSecret, iat: u64) -> String {
        secret.token_at(None, iat)
    }

    #[test]
    fn every_known_method_has_a_policy() {
        for m in crate::rpc::methods::KNOWN {
            assert!(access(m).is_some(), "{m} has no access policy");
        }
        assert_eq!(access("conductor_commitUnsafePayload"), Some(Access::Open));
        assert_eq!(access("conductor_leader"), Some(Access::Open));
        assert_eq!(access("conductor_active"), Some(Access::Open));
        assert_eq!(access("conductor_overrideLeader"), Some(Access::Control));
        assert_eq!(access("no_such"), None);
        // The listener skips the token check for these (op-node's hot path): they must be open.
        for m in crate::rpc::limits::CRITICAL {
            assert_eq!(access(m), Some(Access::Open), "{m}");
        }
    }

    #[test]
    fn tokens_round_trip_and_are_checked() {
        let s = JwtSecret::from_bytes([7; 32]);
        let t = s.token(Some("alice"));
        assert_eq!(
            s.verify_header(Some(&format!("Bearer {t}"))),
            Ok(Some("alice".into()))
        );
        assert_eq!(s.verify_header(None), Err(TokenError::Missing));
        let other = JwtSecret::from_bytes([8; 32]);
        assert!(matches!(
            other.verify_header(Some(&format!("Bearer {t}"))),
            Err(TokenError::Invalid(_))
        ));
        let now = unix_now();
        assert!(s.verify(&token_at(&s, now - 59), now).is_ok());
        assert!(s.verify(&token_at(&s, now + 59), now).is_ok());
        assert!(matches!(
            s.verify(&token_at(&s, now - 61), now),
            Err(TokenError::Stale { .. })
        ));
        assert!(matches!(
            s.verify(&token_at(&s, now + 61), now),
            Err(TokenError::Stale { .. })
        ));
    }

    #[test]
    fn secret_parsing() {
        let hex64 = "ab".repeat(32);
        assert!(JwtSecret::from_hex(&hex64).is_ok());
        assert!(JwtSecret::from_hex(&format!("0x{hex64}\n")).is_ok());
        assert!(JwtSecret::from_hex("abcd").is_err());
        assert!(JwtSecret::from_hex(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn secret_is_generated_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("jwt.hex");
        let a = JwtSecret::load_or_generate(&path).expect("generate");
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.len(), 64);
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = JwtSecret::load_or_generate(&path).expect("load");
        assert_eq!(a.bytes, b.bytes);
    }
}
