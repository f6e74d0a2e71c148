//! TLS for the client (feature `tls`): `https://` and `wss://` through rustls, with the
//! `ring` provider and no OpenSSL.
//!
//! [`TlsOptions`] says whom the client trusts and who it is: the platform's trusted roots
//! (read by `rustls-native-certs`, on by default), extra certificate authorities (PEM),
//! and a client certificate with its key for mutual TLS. The [`ClientBuilder`] takes the
//! same settings ([`ClientBuilder::ca_certificate_pem`], ...); the load tool and any
//! code that uses [`HttpPool`](super::transport::HttpPool) directly builds a rustls
//! configuration from them.
//!
//! The crypto provider is given to rustls explicitly (`ring`), so nothing is installed
//! process-wide and an application that uses another provider elsewhere is not affected.
//!
//! A failure that retrying cannot mend (the server's certificate has an unknown issuer,
//! another host name, has expired; the server refused our certificate) is an
//! [`ErrorKind::Tls`](super::ErrorKind::Tls) error whose
//! [`tls_failure`](super::Error::tls_failure) names the cause.
//!
//! [`ClientBuilder`]: super::ClientBuilder
//! [`ClientBuilder::ca_certificate_pem`]: super::ClientBuilder::ca_certificate_pem

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{AlertDescription, CertificateError, ClientConfig, RootCertStore};

use super::{Error, TlsFailure};

/// The rustls crate this client is built with, for [`TlsOptions::rustls_config`] and
/// [`ClientBuilder::tls_config`](super::ClientBuilder::tls_config): a configuration
/// must come from this very version.
pub use rustls;

/// The ALPN protocol id of HTTP/2.
#[cfg(feature = "http2")]
const H2: &[u8] = b"h2";
/// The ALPN protocol id of HTTP/1.1.
const HTTP_1_1: &[u8] = b"http/1.1";

/// Whom a client trusts and how it identifies itself over TLS (`https://`, `wss://`).
///
/// By default the platform's trusted roots are used, and no client certificate is
/// sent. Cheap to clone. `Debug` does not show keys.
#[derive(Clone)]
pub struct TlsOptions {
    /// Extra trusted certificate authorities, each a PEM text of one or more certificates.
    ca_pems: Vec<Vec<u8>>,
    /// The client's certificate chain and private key, PEM.
    identity: Option<(Vec<u8>, Vec<u8>)>,
    /// Whether the platform's trusted roots are trusted too.
    platform_roots: bool,
    /// A complete rustls configuration that replaces the settings above.
    config: Option<Arc<ClientConfig>>,
}

impl Default for TlsOptions {
    fn default() -> Self {
        TlsOptions {
            ca_pems: Vec::new(),
            identity: None,
            platform_roots: true,
            config: None,
        }
    }
}

impl fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsOptions")
            .field("extra_ca_pems", &self.ca_pems.len())
            .field("client_certificate", &self.identity.is_some())
            .field("platform_roots", &self.platform_roots)
            .field("custom_rustls_config", &self.config.is_some())
            .finish()
    }
}

impl TlsOptions {
    /// The defaults: the platform's roots, no client certificate.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also trusts the certificate authorities in `pem` (one or more `CERTIFICATE`
    /// blocks): a private or corporate CA. Adds to the platform's roots unless
    /// [`platform_roots(false)`](Self::platform_roots).
    pub fn ca_certificate_pem(mut self, pem: impl AsRef<[u8]>) -> Self {
        self.ca_pems.push(pem.as_ref().to_vec());
        self
    }

    /// Whether the platform's trusted roots are trusted (default `true`). With `false`,
    /// only the CAs given with [`ca_certificate_pem`](Self::ca_certificate_pem) are.
    pub fn platform_roots(mut self, enabled: bool) -> Self {
        self.platform_roots = enabled;
        self
    }

    /// Presents this certificate (PEM, the leaf first, then any intermediates) and its
    /// private key (PEM: PKCS#8, PKCS#1 or SEC1) to servers that ask for one (mutual TLS).
    pub fn client_certificate_pem(
        mut self,
        certificate: impl AsRef<[u8]>,
        key: impl AsRef<[u8]>,
    ) -> Self {
        self.identity = Some((certificate.as_ref().to_vec(), key.as_ref().to_vec()));
        self
    }

    /// Uses this rustls configuration as it is, instead of the settings above (which are
    /// then ignored), for full control: other verifiers, key logging, resumption... Its
    /// ALPN protocols are replaced by the ones each connection needs (see
    /// [`http_config`](Self::http_config) and [`websocket_config`](Self::websocket_config)).
    pub fn rustls_config(mut self, config: Arc<ClientConfig>) -> Self {
        self.config = Some(config);
        self
    }

    /// The rustls configuration for HTTP connections: ALPN offers `h2` (with the `http2`
    /// feature) and `http/1.1`, so the server picks HTTP/2 when it can. For
    /// [`HttpPool::with_tls`](super::transport::HttpPool::with_tls).
    ///
    /// Errors ([`Config`](super::ErrorKind::Config)): a PEM without a certificate or key,
    /// a key that does not match its certificate, or no trusted root at all (the
    /// platform's store could not be read and no CA was given).
    pub fn http_config(&self) -> Result<Arc<ClientConfig>, Error> {
        #[cfg(feature = "http2")]
        let alpn: &[&[u8]] = &[H2, HTTP_1_1];
        #[cfg(not(feature = "http2"))]
        let alpn: &[&[u8]] = &[HTTP_1_1];
        Ok(with_alpn(self.base()?, alpn))
    }

    /// The rustls configuration for WebSocket connections: ALPN offers `http/1.1` only,
    /// since the upgrade is an HTTP/1.1 request. Errors as
    /// [`http_config`](Self::http_config).
    pub fn websocket_config(&self) -> Result<Arc<ClientConfig>, Error> {
        Ok(with_alpn(self.base()?, &[HTTP_1_1]))
    }

    /// The configuration without ALPN.
    fn base(&self) -> Result<Arc<ClientConfig>, Error> {
        if let Some(config) = &self.config {
            return Ok(config.clone());
        }
        let mut roots = RootCertStore::empty();
        let mut platform_problem = None;
        if self.platform_roots {
            match platform_roots() {
                Ok(certs) => {
                    roots.add_parsable_certificates(certs.iter().cloned());
                }
                Err(why) => platform_problem = Some(why.clone()),
            }
        }
        for pem in &self.ca_pems {
            let mut found = 0;
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| Error::config(format!("CA certificate PEM: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| Error::config(format!("CA certificate: {e}")))?;
                found += 1;
            }
            if found == 0 {
                return Err(Error::config(
                    "the CA certificate PEM holds no CERTIFICATE block",
                ));
            }
        }
        if roots.is_empty() {
            return Err(Error::config(match platform_problem {
                Some(why) => format!(
                    "no trusted certificate authority: the platform's store could not be \
                     read ({why}) and no CA certificate was given"
                ),
                None if self.platform_roots => "no trusted certificate authority: the \
                     platform's store is empty and no CA certificate was given"
                    .to_string(),
                None => "no trusted certificate authority: platform roots are off and no \
                         CA certificate was given"
                    .to_string(),
            }));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::config(format!("TLS: {e}")))?
            .with_root_certificates(roots);
        let config = match &self.identity {
            None => builder.with_no_client_auth(),
            Some((cert_pem, key_pem)) => {
                let chain = CertificateDer::pem_slice_iter(cert_pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| Error::config(format!("client certificate PEM: {e}")))?;
                if chain.is_empty() {
                    return Err(Error::config(
                        "the client certificate PEM holds no CERTIFICATE block",
                    ));
                }
                let key = PrivateKeyDer::from_pem_slice(key_pem)
                    .map_err(|e| Error::config(format!("client key PEM: {e}")))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| Error::config(format!("client certificate and key: {e}")))?
            }
        };
        Ok(Arc::new(config))
    }
}

/// `config` with exactly these ALPN protocols (a copy when they differ).
fn with_alpn(config: Arc<ClientConfig>, protocols: &[&[u8]]) -> Arc<ClientConfig> {
    if config
        .alpn_protocols
        .iter()
        .map(Vec::as_slice)
        .eq(protocols.iter().copied())
    {
        return config;
    }
    let mut config = (*config).clone();
    config.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// The platform's trusted roots, read once per process (`rustls-native-certs`: the
/// system's CA bundle on Linux and the BSDs, or `SSL_CERT_FILE` / `SSL_CERT_DIR` when
/// set; the keychain on macOS; the system store on Windows).
fn platform_roots() -> &'static Result<Vec<CertificateDer<'static>>, String> {
    static ROOTS: OnceLock<Result<Vec<CertificateDer<'static>>, String>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        if found.certs.is_empty() {
            let why: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
            Err(if why.is_empty() {
                "no certificate found".to_string()
            } else {
                why.join("; ")
            })
        } else {
            Ok(found.certs)
        }
    })
}

/// Tells whether a failed exchange failed for a TLS reason that retrying does not mend,
/// and which: the server's certificate was refused by us (unknown issuer, wrong host
/// name, expired, otherwise invalid), ours by the server (a fatal alert), or the two
/// sides share no TLS version, cipher suite or application protocol.
///
/// Looks through `error`'s chain of causes, into the `io::Error`s that carry rustls
/// errors (hyper-rustls and tokio-rustls wrap them so), and, since the HTTP/2 layer
/// keeps only the text of an I/O error, recognizes a fatal alert from its message too.
pub(crate) fn classify(error: &(dyn StdError + 'static)) -> Option<TlsFailure> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(r) = rustls_error(e) {
            return classify_rustls(r);
        }
        if let Some(failure) = classify_alert_text(&e.to_string()) {
            return Some(failure);
        }
        next = e.source();
    }
    None
}

/// The rustls error that `e` is, or that the `io::Error`s `e` is wrap.
fn rustls_error<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    if let Some(r) = e.downcast_ref::<rustls::Error>() {
        return Some(r);
    }
    let inner = e.downcast_ref::<io::Error>()?.get_ref()?;
    rustls_error(inner)
}

fn classify_rustls(e: &rustls::Error) -> Option<TlsFailure> {
    match e {
        rustls::Error::InvalidCertificate(c) => Some(match c {
            CertificateError::UnknownIssuer => TlsFailure::UnknownIssuer,
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                TlsFailure::WrongHostName
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                TlsFailure::Expired
            }
            _ => TlsFailure::InvalidCertificate,
        }),
        rustls::Error::NoCertificatesPresented => Some(TlsFailure::InvalidCertificate),
        rustls::Error::AlertReceived(alert) => classify_alert(*alert),
        rustls::Error::PeerIncompatible(_) => Some(TlsFailure::Handshake),
        _ => None,
    }
}

/// The fatal alerts a server sends about our certificate, or about a handshake that
/// cannot succeed.
const ALERTS: [AlertDescription; 12] = [
    AlertDescription::CertificateRequired,
    AlertDescription::NoCertificate,
    AlertDescription::BadCertificate,
    AlertDescription::UnsupportedCertificate,
    AlertDescription::CertificateRevoked,
    AlertDescription::CertificateExpired,
    AlertDescription::CertificateUnknown,
    AlertDescription::UnknownCA,
    AlertDescription::AccessDenied,
    AlertDescription::HandshakeFailure,
    AlertDescription::ProtocolVersion,
    AlertDescription::NoApplicationProtocol,
];

fn classify_alert(alert: AlertDescription) -> Option<TlsFailure> {
    use AlertDescription as A;
    match alert {
        A::CertificateRequired => Some(TlsFailure::ClientCertificateRequired),
        A::NoCertificate
        | A::BadCertificate
        | A::UnsupportedCertificate
        | A::CertificateRevoked
        | A::CertificateExpired
        | A::CertificateUnknown
        | A::UnknownCA
        | A::AccessDenied => Some(TlsFailure::ClientCertificateRefused),
        A::HandshakeFailure | A::ProtocolVersion | A::NoApplicationProtocol => {
            Some(TlsFailure::Handshake)
        }
        _ => None,
    }
}

/// A fatal alert named in an error's text, as rustls writes it
/// (`received fatal alert: CertificateRequired`).
fn classify_alert_text(text: &str) -> Option<TlsFailure> {
    let (_, name) = text.split_once("received fatal alert: ")?;
    let name = name.split(|c: char| !c.is_ascii_alphanumeric()).next()?;
    ALERTS
        .iter()
        .find(|a| format!("{a:?}") == name)
        .and_then(|a| classify_alert(*a))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wrapped(e: rustls::Error) -> io::Error {
        // As hyper-rustls wraps what tokio-rustls returns.
        io::Error::other(io::Error::new(io::ErrorKind::InvalidData, e))
    }

    #[test]
    fn certificate_errors_are_named_through_io_wrappers() {
        let cases = [
            (CertificateError::UnknownIssuer, TlsFailure::UnknownIssuer),
            (CertificateError::NotValidForName, TlsFailure::WrongHostName),
            (CertificateError::Expired, TlsFailure::Expired),
            (CertificateError::Revoked, TlsFailure::InvalidCertificate),
        ];
        for (cert, failure) in cases {
            let e = wrapped(rustls::Error::InvalidCertificate(cert));
            assert_eq!(classify(&e), Some(failure));
        }
        let alert = wrapped(rustls::Error::AlertReceived(
            AlertDescription::CertificateRequired,
        ));
        assert_eq!(
            classify(&alert),
            Some(TlsFailure::ClientCertificateRequired)
        );
        let other = io::Error::new(io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(classify(&other), None);
        let not_tls = wrapped(rustls::Error::DecryptError);
        assert_eq!(classify(&not_tls), None);
    }

    #[test]
    fn an_alert_kept_only_as_text_is_recognized() {
        let h2_style = io::Error::new(
            io::ErrorKind::InvalidData,
            "received fatal alert: UnknownCA",
        );
        assert_eq!(
            classify(&h2_style),
            Some(TlsFailure::ClientCertificateRefused)
        );
        assert_eq!(
            classify_alert_text("received fatal alert: DecodeError"),
            None
        );
    }

    #[test]
    fn bad_pems_and_missing_roots_are_config_errors() {
        use super::super::ErrorKind::Config;
        let kind = |o: TlsOptions| o.http_config().unwrap_err().kind();
        assert_eq!(
            kind(TlsOptions::new().ca_certificate_pem("nothing here")),
            Config
        );
        assert_eq!(kind(TlsOptions::new().platform_roots(false)), Config);
    }

    #[test]
    fn alpn_is_set_per_use() {
        let config = Arc::new(
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(RootCertStore::empty())
                .with_no_client_auth(),
        );
        let options = TlsOptions::new().rustls_config(config);
        let ws = options.websocket_config().unwrap();
        assert_eq!(ws.alpn_protocols, vec![b"http/1.1".to_vec()]);
        let http = options.http_config().unwrap();
        assert_eq!(http.alpn_protocols.last().unwrap(), b"http/1.1");
        assert_eq!(
            http.alpn_protocols.first().unwrap() == b"h2",
            cfg!(feature = "http2")
        );
    }
}
