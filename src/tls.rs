//! rustls configurations from PEM files: the RPC listener's server side (optionally requiring
//! client certificates) and the outbound client side (trust roots and an optional client
//! certificate); owns no socket and knows nothing of who is on the other end.
//!
//! Always the `ring` provider, named explicitly rather than through rustls's process-wide
//! default: etcd-client's TLS already uses it, and a default chosen implicitly would panic at
//! run time the day a second provider feature slipped into the dependency tree.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// ALPN offered by the listener: hyper's auto builder serves both, and offering h2 lets TLS
/// clients that prefer it (Go's net/http, as op-node uses) negotiate it.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// A PEM file or a TLS configuration that cannot be used. `Display` is one line naming the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not valid PEM ({reason})", path.display())]
    Pem { path: PathBuf, reason: String },
    #[error("{}: no {what} in it (expected PEM with {expected})", path.display())]
    Empty {
        path: PathBuf,
        what: &'static str,
        expected: &'static str,
    },
    #[error("{}: {reason}", path.display())]
    BadCertificate { path: PathBuf, reason: String },
    #[error("{} and {}: {reason}", cert.display(), key.display())]
    Identity {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("TLS setup: {0}")]
    Setup(String),
}

/// The listener's certificate and key and, for mutual TLS, the CA its clients must be signed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// How the sidecar (or `ctl`) checks https:// servers and identifies itself to them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientFiles {
    /// Trusted CAs instead of the built-in roots.
    pub ca: Option<PathBuf>,
    /// Certificate and key presented to servers that ask for one.
    pub identity: Option<(PathBuf, PathBuf)>,
}

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The listener's configuration: our chain and key, client certificates required (and checked
/// against `client_ca`) when one is given, ALPN h2 and http/1.1.
pub fn server_config(files: &ServerFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = certificates(&files.cert)?;
    let key = private_key(&files.key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let roots = roots(ca)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| TlsError::BadCertificate {
                    path: ca.clone(),
                    reason: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| identity_error(&files.cert, &files.key, e))?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The outbound configuration: the CAs in `files.ca`, or else the compiled-in Mozilla roots
/// (webpki-roots), so a binary behaves the same on every host and in a distroless image; and
/// our certificate for servers that require one. No ALPN: hyper-rustls sets it, and refuses
/// (panics on) a config that already has one.
pub fn client_config(files: &ClientFiles) -> Result<ClientConfig, TlsError> {
    let roots = match &files.ca {
        Some(ca) => roots(ca)?,
        None => RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        },
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .with_root_certificates(roots);
    match &files.identity {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => builder
            .with_client_auth_cert(certificates(cert)?, private_key(key)?)
            .map_err(|e| identity_error(cert, key, e)),
    }
}

fn identity_error(cert: &Path, key: &Path, e: rustls::Error) -> TlsError {
    let reason = match e {
        rustls::Error::InconsistentKeys(_) => {
            "the private key does not match the certificate".into()
        }
        other => other.to_string(),
    };
    TlsError::Identity {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        reason,
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn pem_error(path: &Path, e: rustls_pki_types::pem::Error) -> TlsError {
    use rustls_pki_types::pem::Error as E;
    // The crate's own Display shows byte vectors; say it in words.
    let reason = match e {
        E::MissingSectionEnd { end_marker } => {
            format!(
                "no -----END {}----- line",
                String::from_utf8_lossy(&end_marker)
            )
        }
        E::IllegalSectionStart { line } => {
            format!("malformed line {:?}", String::from_utf8_lossy(&line))
        }
        E::Base64Decode(e) => format!("bad base64: {e}"),
        other => other.to_string(),
    };
    TlsError::Pem {
        path: path.to_path_buf(),
        reason,
    }
}

/// Every certificate in a PEM file, in order (leaf first for a chain).
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            path: path.to_path_buf(),
            what: "certificate",
            expected: "-----BEGIN CERTIFICATE-----",
        });
    }
    Ok(certs)
}

/// The first private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::Empty {
            path: path.to_path_buf(),
            what: "private key",
            expected: "-----BEGIN PRIVATE KEY----- (PKCS#8), RSA or EC PRIVATE KEY",
        },
        other => pem_error(path, other),
    })
}

/// A CA bundle as a root store; every certificate in it must parse as a trust anchor.
pub fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in certificates(path)? {
        store.add(cert).map_err(|e| TlsError::BadCertificate {
            path: path.to_path_buf(),
            reason: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_empty_and_garbage_files_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.pem");
        let e = certificates(&missing).unwrap_err().to_string();
        assert!(
            e.starts_with("cannot read ") && e.contains("missing.pem"),
            "{e}"
        );

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "this is not a certificate\n").expect("write");
        let e = certificates(&garbage).unwrap_err().to_string();
        assert!(
            e.contains("garbage.pem") && e.contains("no certificate"),
            "{e}"
        );
        let e = private_key(&garbage).unwrap_err().to_string();
        assert!(e.contains("no private key"), "{e}");

        let cut = dir.path().join("cut.pem");
        std::fs::write(&cut, "-----BEGIN CERTIFICATE-----\nMIIB\n").expect("write");
        let e = certificates(&cut).unwrap_err().to_string();
        assert!(
            e.contains("not valid PEM") && e.contains("END CERTIFICATE"),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");

        let bad = dir.path().join("bad.pem");
        std::fs::write(
            &bad,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        let e = roots(&bad).unwrap_err().to_string();
        assert!(e.contains("not a usable CA certificate"), "{e}");
    }

    #[test]
    fn default_client_config_trusts_the_builtin_roots() {
        let c = client_config(&ClientFiles::default()).expect("default client config");
        assert!(c.alpn_protocols.is_empty());
        assert!(!webpki_roots::TLS_SERVER_ROOTS.is_empty());
    }
}
