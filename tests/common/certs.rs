//! A throwaway PKI for TLS tests (etcd's client-cert auth, the sidecar's RPC listener, https://
//! to nodes and peers), made by the `openssl` CLI, which `.ci/run` installs.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use tempfile::TempDir;

/// Certificates made with `openssl` in a temp dir: a CA, a server certificate for 127.0.0.1 and
/// localhost (also usable as a client certificate), a client certificate signed by the CA, a
/// second CA with its own client certificate that the first CA's servers do not trust, and two
/// unusable files (`garbage`: no PEM at all; `truncated`: a PEM block without its end line).
#[derive(Debug)]
pub struct TestCerts {
    pub dir: TempDir,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub other_ca: PathBuf,
    pub other_client_cert: PathBuf,
    pub other_client_key: PathBuf,
    pub garbage: PathBuf,
    pub truncated: PathBuf,
}

impl TestCerts {
    pub fn generate() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("op-sidecar-certs-")
            .tempdir()
            .expect("cert temp dir");
        let d = dir.path().to_path_buf();
        let p = |n: &str| d.join(n);
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .current_dir(&d)
                .args(args)
                .stdin(Stdio::null())
                .output()
                .unwrap_or_else(|e| panic!("cannot run openssl ({e}): these tests need it"));
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        for ca in ["ca", "other-ca"] {
            run(&[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN={ca}"),
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
            ]);
        }
        std::fs::write(
            p("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
        .expect("write ext");
        std::fs::write(p("client.ext"), "extendedKeyUsage=clientAuth\n").expect("write ext");
        let leaf = |name: &str, ca: &str, ext: &str| {
            run(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN={name}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ]);
            run(&[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                &format!("{ca}.pem"),
                "-CAkey",
                &format!("{ca}.key"),
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                ext,
                "-out",
                &format!("{name}.pem"),
            ]);
        };
        leaf("server", "ca", "server.ext");
        leaf("client", "ca", "client.ext");
        leaf("other-client", "other-ca", "client.ext");
        std::fs::write(p("garbage.pem"), "this is not PEM\n").expect("write garbage");
        std::fs::write(
            p("truncated.pem"),
            "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n",
        )
        .expect("write truncated");
        Self {
            ca: p("ca.pem"),
            server_cert: p("server.pem"),
            server_key: p("server.key"),
            client_cert: p("client.pem"),
            client_key: p("client.key"),
            other_ca: p("other-ca.pem"),
            other_client_cert: p("other-client.pem"),
            other_client_key: p("other-client.key"),
            garbage: p("garbage.pem"),
            truncated: p("truncated.pem"),
            dir,
        }
    }
}
