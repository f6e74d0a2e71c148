//! TLS for the server's listener (feature `tls`): HTTPS, WSS, and HTTP/2 through ALPN.
//!
//! A [`TlsConfig`] holds a certificate chain and its private key, loaded from PEM files
//! or PEM bytes, and optionally the CA a client certificate must come from (mutual TLS).
//! Put it in [`ServerConfig::tls`](super::ServerConfig::tls) and [`Server::listen`]
//! serves `https://` and `wss://`; the handshake must complete within
//! [`ServerConfig::tls_handshake_timeout`](super::ServerConfig::tls_handshake_timeout).
//!
//! rustls runs with its `ring` provider, chosen explicitly: nothing is installed
//! process-wide, so an application with another provider is not disturbed.
//!
//! [`Server::listen`]: super::Server::listen

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;

/// Whether the server asks clients for a certificate (mutual TLS), and what it does
/// without one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientAuth {
    /// A client must present a certificate issued by the configured CA; the handshake
    /// fails otherwise.
    Required,
    /// A client may present a certificate; if it does, it must be issued by the
    /// configured CA, and a client without one is served too.
    Optional,
}

/// A TLS configuration problem found at start-up: the file, and what is wrong with it.
///
/// Its display is one line that starts with `tls:`, names the file (or says that PEM
/// bytes were given) and the cause, e.g. `tls: cannot read certificate file
/// /etc/bayeux/cert.pem: No such file or directory (os error 2)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsError {
    message: String,
}

impl TlsError {
    fn new(message: String) -> Self {
        TlsError { message }
    }
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tls: {}", self.message)
    }
}

impl std::error::Error for TlsError {}

/// Where a PEM came from, for error messages.
#[derive(Clone, Debug)]
enum Source {
    File(PathBuf),
    Bytes(&'static str),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(path) => write!(f, "{}", path.display()),
            Source::Bytes(what) => write!(f, "the {what} PEM"),
        }
    }
}

impl Source {
    fn read(path: &Path, what: &str) -> Result<(Vec<u8>, Source), TlsError> {
        match std::fs::read(path) {
            Ok(bytes) => Ok((bytes, Source::File(path.to_path_buf()))),
            Err(e) => Err(TlsError::new(format!(
                "cannot read {what} file {}: {e}",
                path.display()
            ))),
        }
    }
}

/// One line for a PEM syntax problem (rustls-pki-types prints raw bytes).
fn pem_cause(e: &pem::Error) -> String {
    match e {
        pem::Error::MissingSectionEnd { .. } => "a PEM section has no END line".to_string(),
        pem::Error::IllegalSectionStart { .. } => "a malformed BEGIN line".to_string(),
        pem::Error::Base64Decode(e) => format!("bad base64 ({e})"),
        other => other.to_string(),
    }
}

/// The certificate chain of a PEM (end-entity first).
fn certificates(pem: &[u8], source: &Source) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::new(format!("malformed PEM in {source}: {}", pem_cause(&e))))?;
    if chain.is_empty() {
        return Err(TlsError::new(format!(
            "no certificate in {source} (PEM CERTIFICATE blocks expected)"
        )));
    }
    Ok(chain)
}

/// The first private key of a PEM (PKCS#8, PKCS#1 or SEC1).
fn private_key(pem: &[u8], source: &Source) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::new(format!(
            "no private key in {source} (an unencrypted PEM PRIVATE KEY, RSA PRIVATE KEY or \
             EC PRIVATE KEY block expected)"
        )),
        e => TlsError::new(format!("malformed PEM in {source}: {}", pem_cause(&e))),
    })
}

/// The crypto provider every config of this module uses: rustls's `ring` provider,
/// passed explicitly (no process-wide default is installed or needed).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The ALPN protocols offered, in order of preference.
fn alpn_protocols() -> Vec<Vec<u8>> {
    let mut protocols = Vec::new();
    if cfg!(feature = "http2") {
        protocols.push(b"h2".to_vec());
    }
    protocols.push(b"http/1.1".to_vec());
    protocols
}

/// The server's certificate chain and key, kept to rebuild the rustls config.
struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    cert_source: Source,
    key_source: Source,
}

/// TLS settings of a listener: the server's certificate chain and private key, ALPN
/// (`h2` when the `http2` feature is on, and `http/1.1`), and optionally mutual TLS.
///
/// Load it once at start-up; cheap to clone (the rustls config is shared). Errors are
/// [`TlsError`]s that name the file and the cause.
///
/// ```no_run
/// use bayeux::server::{ClientAuth, Server, ServerConfig, TlsConfig};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let tls = TlsConfig::from_pem_files("cert.pem", "key.pem")?
///     .with_client_ca_file("clients-ca.pem", ClientAuth::Required)?; // optional
/// let server = Server::new(ServerConfig::default().with_tls(tls));
/// let listening = server.listen("0.0.0.0:8443".parse()?, "/cometd").await?;
/// assert!(listening.url("/cometd").starts_with("https://"));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct TlsConfig {
    rustls: Arc<rustls::ServerConfig>,
    /// None for a config handed over ready-made.
    identity: Option<Arc<Identity>>,
    client_auth: Option<ClientAuth>,
}

impl fmt::Debug for TlsConfig {
    /// Names the sources and settings, never key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("TlsConfig");
        if let Some(identity) = &self.identity {
            d.field("certificate", &identity.cert_source.to_string())
                .field("chain_length", &identity.chain.len())
                .field("key", &identity.key_source.to_string());
        }
        let alpn: Vec<String> = self
            .rustls
            .alpn_protocols
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect();
        d.field("alpn", &alpn)
            .field("client_auth", &self.client_auth)
            .finish()
    }
}

impl TlsConfig {
    /// Loads the certificate chain (PEM `CERTIFICATE` blocks, the server's own first)
    /// from `cert` and its private key (PEM, PKCS#8, PKCS#1 or SEC1, unencrypted) from
    /// `key`, and checks that they belong together.
    pub fn from_pem_files(
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<TlsConfig, TlsError> {
        let (cert_pem, cert_source) = Source::read(cert.as_ref(), "certificate")?;
        let (key_pem, key_source) = Source::read(key.as_ref(), "private key")?;
        Self::from_identity(Identity {
            chain: certificates(&cert_pem, &cert_source)?,
            key: private_key(&key_pem, &key_source)?,
            cert_source,
            key_source,
        })
    }

    /// Like [`TlsConfig::from_pem_files`] with the PEM text itself (for certificates
    /// kept elsewhere than in files, or generated at run time).
    pub fn from_pem(cert: &[u8], key: &[u8]) -> Result<TlsConfig, TlsError> {
        let (cert_source, key_source) =
            (Source::Bytes("certificate"), Source::Bytes("private key"));
        Self::from_identity(Identity {
            chain: certificates(cert, &cert_source)?,
            key: private_key(key, &key_source)?,
            cert_source,
            key_source,
        })
    }

    /// A ready-made rustls configuration, used as it is: its certificates, client
    /// verification and ALPN list are the caller's (offer `h2` to get HTTP/2, and
    /// `http/1.1`; a connection that negotiates no protocol is served HTTP/1.1).
    /// [`TlsConfig::with_client_ca_file`] does not apply to it.
    pub fn from_rustls(config: Arc<rustls::ServerConfig>) -> TlsConfig {
        TlsConfig {
            rustls: config,
            identity: None,
            client_auth: None,
        }
    }

    /// Asks clients for a certificate issued by one of the CAs in the PEM file `ca`
    /// (mutual TLS), as `auth` says.
    pub fn with_client_ca_file(
        self,
        ca: impl AsRef<Path>,
        auth: ClientAuth,
    ) -> Result<TlsConfig, TlsError> {
        let (pem, source) = Source::read(ca.as_ref(), "client CA")?;
        self.with_client_ca_source(&pem, &source, auth)
    }

    /// Like [`TlsConfig::with_client_ca_file`] with the PEM text itself.
    pub fn with_client_ca_pem(self, ca: &[u8], auth: ClientAuth) -> Result<TlsConfig, TlsError> {
        self.with_client_ca_source(ca, &Source::Bytes("client CA"), auth)
    }

    /// The rustls server configuration in force (for inspection, or to build another
    /// listener with it).
    pub fn rustls_config(&self) -> Arc<rustls::ServerConfig> {
        self.rustls.clone()
    }

    /// Whether and how clients are asked for a certificate; `None` without mutual TLS
    /// (or for a config made with [`TlsConfig::from_rustls`]).
    pub fn client_auth(&self) -> Option<ClientAuth> {
        self.client_auth
    }

    fn from_identity(identity: Identity) -> Result<TlsConfig, TlsError> {
        let rustls = build(&identity, None)?;
        Ok(TlsConfig {
            rustls,
            identity: Some(Arc::new(identity)),
            client_auth: None,
        })
    }

    fn with_client_ca_source(
        self,
        pem: &[u8],
        source: &Source,
        auth: ClientAuth,
    ) -> Result<TlsConfig, TlsError> {
        let Some(identity) = self.identity else {
            return Err(TlsError::new(
                "a client CA cannot be added to a ready-made rustls config; set its \
                 client certificate verifier instead"
                    .to_string(),
            ));
        };
        let mut roots = RootCertStore::empty();
        for cert in certificates(pem, source)? {
            roots
                .add(cert)
                .map_err(|e| TlsError::new(format!("unusable CA certificate in {source}: {e}")))?;
        }
        let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
        let builder = match auth {
            ClientAuth::Required => builder,
            ClientAuth::Optional => builder.allow_unauthenticated(),
        };
        let verifier = builder
            .build()
            .map_err(|e| TlsError::new(format!("unusable client CA in {source}: {e}")))?;
        Ok(TlsConfig {
            rustls: build(&identity, Some(verifier))?,
            identity: Some(identity),
            client_auth: Some(auth),
        })
    }
}

/// The rustls config for `identity`, with ALPN and the client verifier if any.
fn build(
    identity: &Identity,
    verifier: Option<Arc<dyn ClientCertVerifier>>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::new(format!("the ring provider cannot be used: {e}")))?;
    let builder = match verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let (cert, key) = (&identity.cert_source, &identity.key_source);
    let mut config = builder
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                TlsError::new(format!(
                    "the private key in {key} does not match the certificate in {cert}"
                ))
            }
            rustls::Error::InvalidCertificate(e) => {
                TlsError::new(format!("the certificate in {cert} is not valid: {e}"))
            }
            e => TlsError::new(format!(
                "cannot use the certificate in {cert} with the private key in {key}: {e}"
            )),
        })?;
    config.alpn_protocols = alpn_protocols();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_bytes_without_a_certificate_or_key_are_named() {
        let e = TlsConfig::from_pem(b"", b"").unwrap_err();
        assert_eq!(
            e.to_string(),
            "tls: no certificate in the certificate PEM (PEM CERTIFICATE blocks expected)"
        );
        let e = TlsConfig::from_pem(b"-----BEGIN CERTIFICATE-----\nAAAA\n", b"").unwrap_err();
        assert_eq!(
            e.to_string(),
            "tls: malformed PEM in the certificate PEM: a PEM section has no END line"
        );
    }

    #[test]
    fn a_missing_file_is_one_line_naming_it() {
        let e = TlsConfig::from_pem_files("/nonexistent/cert.pem", "/nonexistent/key.pem")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("tls: cannot read certificate file /nonexistent/cert.pem: "),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
    }
}
