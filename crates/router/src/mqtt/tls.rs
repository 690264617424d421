//! TLS for the bridge (`mqtts://`): the broker's certificate checked against a CA file or
//! the system's roots, and an X.509 client certificate when the broker asks for one (AWS
//! IoT Core does). Files are read when the config is made, so a missing or unreadable
//! file is an error then, not a silent reconnect loop.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::MqttConfigError;

/// The TLS side of a bridge's connection.
#[derive(Clone)]
pub struct MqttTls {
    pub(super) client: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for MqttTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttTls")
            .field(
                "client_auth",
                &self.client.client_auth_cert_resolver.has_certs(),
            )
            .finish()
    }
}

fn tls_error(what: &str, path: &Path, e: impl std::fmt::Display) -> MqttConfigError {
    MqttConfigError::Tls(format!("{what} {}: {e}", path.display()))
}

impl MqttTls {
    /// TLS trusting the certificates in `ca_file` (PEM), or the system's roots without
    /// one, and presenting `cert_file` with `key_file` (PEM) when both are given.
    pub fn load(
        ca_file: Option<&Path>,
        cert_file: Option<&Path>,
        key_file: Option<&Path>,
    ) -> Result<MqttTls, MqttConfigError> {
        let mut roots = rustls::RootCertStore::empty();
        match ca_file {
            Some(path) => {
                let certs = CertificateDer::pem_file_iter(path)
                    .map_err(|e| tls_error("the CA file", path, e))?;
                for cert in certs {
                    let cert = cert.map_err(|e| tls_error("the CA file", path, e))?;
                    roots
                        .add(cert)
                        .map_err(|e| tls_error("a certificate of the CA file", path, e))?;
                }
                if roots.is_empty() {
                    return Err(tls_error("the CA file", path, "no certificate in it"));
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for cert in found.certs {
                    let _ = roots.add(cert);
                }
                if roots.is_empty() {
                    return Err(MqttConfigError::Tls(
                        "the system has no root certificates; name a ca_file".into(),
                    ));
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| MqttConfigError::Tls(e.to_string()))?
            .with_root_certificates(roots);
        let client = match (cert_file, key_file) {
            (Some(cert), Some(key)) => {
                let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                    .map_err(|e| tls_error("the certificate file", cert, e))?
                    .collect::<Result<_, _>>()
                    .map_err(|e| tls_error("the certificate file", cert, e))?;
                if chain.is_empty() {
                    return Err(tls_error(
                        "the certificate file",
                        cert,
                        "no certificate in it",
                    ));
                }
                let private = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| tls_error("the key file", key, e))?;
                builder
                    .with_client_auth_cert(chain, private)
                    .map_err(|e| tls_error("the certificate and key", cert, e))?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(MqttConfigError::Tls(
                    "a client certificate needs both cert_file and key_file".into(),
                ));
            }
        };
        Ok(MqttTls {
            client: Arc::new(client),
        })
    }
}
