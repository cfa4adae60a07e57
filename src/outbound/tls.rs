//! TLS for outbound connections (STARTTLS): the rustls client settings for
//! each `[delivery] tls` policy.
//!
//! Opportunistic TLS does not verify the server: like every MTA that
//! encrypts opportunistically (RFC 7435), it defends against passive
//! eavesdropping only, and a certificate that does not verify is no
//! reason to send the message in plaintext instead. Required TLS verifies
//! against the configured CA file or the system's roots.
//! Must never: fall back to plaintext under the required policy (the
//! delivery machine defers instead).

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts any certificate; the handshake signatures are still checked,
/// so the session keys belong to whoever holds the certificate's key.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Why the client's TLS settings could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
    #[error("{}: {source}", path.display())]
    CaFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    CaCertificate {
        path: std::path::PathBuf,
        source: rustls::Error,
    },
    #[error("{}: no certificate found", .0.display())]
    NoCertificate(std::path::PathBuf),
    #[error(
        "no trusted root certificates found on this system; \
         install ca-certificates or set [delivery] tls_ca_file"
    )]
    NoSystemRoots,
}

fn builder() -> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>, TlsSetupError> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?)
}

/// Client settings that encrypt without verifying (opportunistic TLS).
pub fn unverified() -> Result<Arc<ClientConfig>, TlsSetupError> {
    let config = builder()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider())))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Client settings that verify the server against the certificates in
/// `ca_file` (PEM), or the system's roots when it is `None`.
pub fn verified(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let io = |source| TlsSetupError::CaFile {
                path: path.to_owned(),
                source,
            };
            let file = std::fs::File::open(path).map_err(io)?;
            for cert in rustls_pemfile::certs(&mut std::io::BufReader::new(file)) {
                roots
                    .add(cert.map_err(io)?)
                    .map_err(|source| TlsSetupError::CaCertificate {
                        path: path.to_owned(),
                        source,
                    })?;
            }
            if roots.is_empty() {
                return Err(TlsSetupError::NoCertificate(path.to_owned()));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(TlsSetupError::NoSystemRoots);
            }
        }
    }
    Ok(Arc::new(
        builder()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// The name to present and verify: the MX host name, or its address when
/// the destination is an address literal or a relay given as an IP.
pub fn server_name(host: &str, addr: std::net::IpAddr) -> ServerName<'static> {
    ServerName::try_from(host.to_owned()).unwrap_or(ServerName::IpAddress(addr.into()))
}
