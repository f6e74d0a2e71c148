//! Test certificates generated at run time with rcgen: a private CA, server certificates
//! for 127.0.0.1 and `localhost` (valid, expired, or issued by another CA), and a client
//! certificate for mutual TLS. Nothing comes from outside the test.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, date_time_ymd,
};

/// A certificate and its private key, both PEM.
#[derive(Clone, Debug)]
pub struct Pem {
    pub cert: String,
    pub key: String,
}

/// A private CA and what it issued.
pub struct TestPki {
    /// The CA's certificate (PEM): what a client is told to trust.
    pub ca: String,
    /// A server certificate for `127.0.0.1` and `localhost`.
    pub server: Pem,
    /// The same names, expired in 2021.
    pub expired: Pem,
    /// The same names, issued by another CA that no client trusts.
    pub unknown_issuer: Pem,
    /// A server certificate for `other.example` only (a wrong host name for 127.0.0.1).
    pub wrong_host: Pem,
    /// A client certificate (for mutual TLS) issued by the CA.
    pub client: Pem,
    /// A client certificate issued by the other CA.
    pub untrusted_client: Pem,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn leaf(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    names: &[&str],
    purpose: ExtendedKeyUsagePurpose,
    expired: bool,
) -> Pem {
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, names[0]);
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![purpose];
    if expired {
        params.not_before = date_time_ymd(2020, 1, 1);
        params.not_after = date_time_ymd(2021, 1, 1);
    }
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

impl TestPki {
    /// Generates a fresh set (a few milliseconds).
    pub fn new() -> TestPki {
        let ca_issuer = ca("bayeux test CA");
        let other = ca("some other CA");
        let server_names = ["127.0.0.1", "localhost"];
        use ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
        TestPki {
            ca: ca_issuer.pem(),
            server: leaf(&ca_issuer, &server_names, ServerAuth, false),
            expired: leaf(&ca_issuer, &server_names, ServerAuth, true),
            unknown_issuer: leaf(&other, &server_names, ServerAuth, false),
            wrong_host: leaf(&ca_issuer, &["other.example"], ServerAuth, false),
            client: leaf(&ca_issuer, &["agent-42"], ClientAuth, false),
            untrusted_client: leaf(&other, &["intruder"], ClientAuth, false),
        }
    }

    /// Writes every PEM into `dir` (created if missing) as `ca.pem`, `server.pem`,
    /// `server.key`, `expired.pem`, `expired.key`, `unknown.pem`, `unknown.key`,
    /// `wrong-host.pem`, `wrong-host.key`, `client.pem`, `client.key`,
    /// `untrusted-client.pem`, `untrusted-client.key`, and returns `dir`.
    pub fn write_to(&self, dir: &Path) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let files: [(&str, &str); 13] = [
            ("ca.pem", &self.ca),
            ("server.pem", &self.server.cert),
            ("server.key", &self.server.key),
            ("expired.pem", &self.expired.cert),
            ("expired.key", &self.expired.key),
            ("unknown.pem", &self.unknown_issuer.cert),
            ("unknown.key", &self.unknown_issuer.key),
            ("wrong-host.pem", &self.wrong_host.cert),
            ("wrong-host.key", &self.wrong_host.key),
            ("client.pem", &self.client.cert),
            ("client.key", &self.client.key),
            ("untrusted-client.pem", &self.untrusted_client.cert),
            ("untrusted-client.key", &self.untrusted_client.key),
        ];
        for (name, pem) in files {
            std::fs::write(dir.join(name), pem).unwrap();
        }
        dir.to_path_buf()
    }
}

/// A fresh, unique temporary directory for one test's files.
pub fn temp_dir(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "bayeux-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
