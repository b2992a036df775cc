//! TLS of the outbound exports (OTLP log events and spans, Alertmanager):
//! rustls with the `ring` provider (the one the Kubernetes client already uses;
//! no OpenSSL, no aws-lc build).
//!
//! What is trusted: the PEM bundle of `ca_file` when one is given, *instead of*
//! the system roots (like Prometheus' `tls_config.ca_file` and the Go OTLP
//! exporters: a private collector's CA should not widen into "any public CA
//! too"); otherwise the **system roots**, read from the OS store with
//! `rustls-native-certs` (`/etc/ssl/certs/ca-certificates.crt` on Debian and the
//! agent's image; `SSL_CERT_FILE` / `SSL_CERT_DIR` override it). System roots
//! rather than a compiled-in Mozilla list (webpki-roots): in-cluster collectors
//! and Alertmanagers are usually signed by an organisation's CA that operators
//! add to the image's or the node's store, and a compiled-in list can only
//! change with a new build.
//!
//! A client certificate (`cert_file` + `key_file`) is presented when the server
//! asks for one (mTLS). `server_name` replaces the URL's host as the name the
//! server certificate must carry (and as SNI), for servers reached by IP or
//! through a name their certificate does not list. There is deliberately no
//! switch to skip verification: give the CA that signed the server's
//! certificate as `ca_file` instead.
//!
//! Everything is read and checked when the configuration is loaded (see
//! [`check`]): a file that cannot be read, a file without a PEM certificate, a
//! key that does not belong to the certificate are configuration errors at
//! startup, not export-time failures. Certificates are read once, at startup.

use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject},
};
use std::sync::Arc;

/// The files and name of a `tls:` section (`config::Tls`, or the `OTEL_*` variables).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Files<'a> {
    pub ca_file: &'a str,
    pub cert_file: &'a str,
    pub key_file: &'a str,
    pub server_name: &'a str,
}

/// The `tls:` setting an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    CaFile,
    CertFile,
    KeyFile,
    ServerName,
}

impl Field {
    /// The key under `tls:` in the config.
    pub fn key(self) -> &'static str {
        match self {
            Field::CaFile => "ca_file",
            Field::CertFile => "cert_file",
            Field::KeyFile => "key_file",
            Field::ServerName => "server_name",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TlsError {
    pub field: Field,
    pub message: String,
}

fn err(field: Field, message: impl Into<String>) -> TlsError {
    TlsError { field, message: message.into() }
}

/// The crypto provider of every TLS connection the agent makes.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(field: Field, path: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| err(field, format!("cannot read {path:?}: {e}")))
}

/// Every certificate of a PEM file (at least one).
fn certificates(field: Field, path: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(field, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(field, format!("{path:?} is not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(err(field, format!("{path:?} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")));
    }
    Ok(certs)
}

/// The CA bundle of `ca_file` as trust anchors.
fn ca_roots(path: &str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for (i, cert) in certificates(Field::CaFile, path)?.into_iter().enumerate() {
        roots
            .add(cert)
            .map_err(|e| err(Field::CaFile, format!("certificate #{} of {path:?} is not a usable CA: {e}", i + 1)))?;
    }
    Ok(roots)
}

/// The system roots (the OS store; `SSL_CERT_FILE` / `SSL_CERT_DIR` override it).
fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::debug!(error = %e, "tls: a system CA certificate could not be loaded");
    }
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(err(
            Field::CaFile,
            "no ca_file is set and no system CA certificate was found (install ca-certificates, \
             set SSL_CERT_FILE, or set ca_file)",
        ));
    }
    Ok(roots)
}

/// A client certificate chain and its key, checked to belong together.
struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            cert_pem: self.cert_pem.clone(),
            key_pem: self.key_pem.clone(),
        }
    }
}

fn identity(cert_file: &str, key_file: &str) -> Result<Identity, TlsError> {
    let chain = certificates(Field::CertFile, cert_file)?;
    let key_pem = read(Field::KeyFile, key_file)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        err(
            Field::KeyFile,
            format!(
                "{key_file:?} holds no usable PEM private key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY): {e}"
            ),
        )
    })?;
    // rustls loads the key and compares it with the certificate's public key.
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(RootCertStore::empty());
    if let Err(e) = builder.with_client_auth_cert(chain.clone(), key.clone_key()) {
        return Err(match e {
            rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
                err(Field::CertFile, format!("{cert_file:?}: the certificate cannot be used: {e}"))
            }
            rustls::Error::InconsistentKeys(_) => {
                err(Field::KeyFile, format!("{key_file:?} is not the private key of the certificate in {cert_file:?}"))
            }
            other => err(Field::KeyFile, format!("{key_file:?}: unsupported private key: {other}")),
        });
    }
    let cert_pem = read(Field::CertFile, cert_file)?;
    Ok(Identity { chain, key, cert_pem, key_pem })
}

fn server_name(name: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(name.to_string())
        .map_err(|e| err(Field::ServerName, format!("{name:?} is not a DNS name or an IP address: {e}")))
}

/// Checks a `tls:` section without touching the system roots: the pairing of
/// `cert_file` and `key_file`, `server_name`, and every file it names (readable,
/// PEM, usable CA certificates, a key that belongs to the certificate).
pub fn check(t: Files) -> Result<(), TlsError> {
    check_pairing(t)?;
    check_files(t)
}

/// The parts of [`check`] that do not read files.
pub fn check_pairing(t: Files) -> Result<(), TlsError> {
    match (t.cert_file.is_empty(), t.key_file.is_empty()) {
        (false, true) => {
            return Err(err(Field::CertFile, "a client certificate needs its private key: set key_file too"));
        }
        (true, false) => {
            return Err(err(Field::KeyFile, "a private key needs its client certificate: set cert_file too"));
        }
        _ => {}
    }
    if !t.server_name.is_empty() {
        server_name(t.server_name)?;
    }
    Ok(())
}

/// The parts of [`check`] that read files.
pub fn check_files(t: Files) -> Result<(), TlsError> {
    if !t.ca_file.is_empty() {
        ca_roots(t.ca_file)?;
    }
    if !t.cert_file.is_empty() && !t.key_file.is_empty() {
        identity(t.cert_file, t.key_file)?;
    }
    Ok(())
}

/// What a `tls:` section loads to: the roots to trust, the client identity, the server name.
#[derive(Clone)]
pub struct ClientTls {
    roots: Arc<RootCertStore>,
    /// `ca_file`, or None for the system roots.
    ca_file: Option<String>,
    identity: Option<Identity>,
    server_name: Option<String>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("roots", &self.ca_file.as_deref().unwrap_or("system"))
            .field("client_certificate", &self.identity.is_some())
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl PartialEq for ClientTls {
    fn eq(&self, o: &Self) -> bool {
        self.ca_file == o.ca_file
            && self.server_name == o.server_name
            && self.roots.roots == o.roots.roots
            && self.identity.as_ref().map(|i| &i.cert_pem) == o.identity.as_ref().map(|i| &i.cert_pem)
    }
}

impl ClientTls {
    /// Reads everything `t` names; the system roots when it names no CA file.
    pub fn load(t: Files) -> Result<ClientTls, TlsError> {
        check_pairing(t)?;
        let (roots, ca_file) = match t.ca_file {
            "" => (system_roots()?, None),
            path => (ca_roots(path)?, Some(path.to_string())),
        };
        let identity = match (t.cert_file, t.key_file) {
            ("", _) | (_, "") => None,
            (c, k) => Some(identity(c, k)?),
        };
        let server_name = (!t.server_name.is_empty()).then(|| t.server_name.to_string());
        Ok(ClientTls { roots: Arc::new(roots), ca_file, identity, server_name })
    }

    /// Where the trusted roots come from, for logs: the CA file, or `system`.
    pub fn roots_source(&self) -> &str {
        self.ca_file.as_deref().unwrap_or("system")
    }

    pub fn has_client_certificate(&self) -> bool {
        self.identity.is_some()
    }

    /// The `server_name` override, if any.
    pub fn server_name(&self) -> Option<&str> {
        self.server_name.as_deref()
    }

    /// A rustls client configuration offering `alpn` (e.g. `http/1.1`).
    pub fn rustls_config(&self, alpn: &[&[u8]]) -> ClientConfig {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(self.roots.clone());
        let mut cfg = match &self.identity {
            Some(id) => builder
                .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
                .expect("the client certificate and key were checked when loaded"),
            None => builder.with_no_client_auth(),
        };
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        cfg
    }

    /// The same settings for tonic's own rustls connector (gRPC): our roots as
    /// trust anchors, the client identity as PEM, the server name.
    pub fn tonic_config(&self) -> opentelemetry_otlp::tonic_types::transport::ClientTlsConfig {
        use opentelemetry_otlp::tonic_types::transport::{ClientTlsConfig, Identity};
        let mut c = ClientTlsConfig::new().trust_anchors(self.roots.roots.iter().cloned());
        if let Some(id) = &self.identity {
            c = c.identity(Identity::from_pem(&id.cert_pem, &id.key_pem));
        }
        if let Some(name) = &self.server_name {
            c = c.domain_name(name.clone());
        }
        c
    }

    /// An HTTP/1.1 connector for hyper that speaks TLS to `https://` URLs (and
    /// plain TCP to `http://` ones).
    pub fn https_connector(&self) -> hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector> {
        let b = hyper_rustls::HttpsConnectorBuilder::new()
            // hyper-rustls sets the ALPN protocols itself (http/1.1 here).
            .with_tls_config(self.rustls_config(&[]))
            .https_or_http();
        let b = match &self.server_name {
            Some(name) => b.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(
                ServerName::try_from(name.clone()).expect("server_name was checked when loaded"),
            )),
            None => b,
        };
        b.enable_http1().build()
    }
}

/// An HTTP/1.1 connector for plain `http://` URLs only (no TLS configured).
pub fn http_connector() -> hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector> {
    let cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(cfg).https_or_http().enable_http1().build()
}

/// The chain of an error's sources, `outer: inner: innermost` (hyper's and
/// rustls' useful part is at the end: "invalid peer certificate: UnknownIssuer").
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        let t = inner.to_string();
        if !s.ends_with(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn dir(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("driftwatch-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    fn write(d: &Dir, name: &str, text: &str) -> String {
        let p = d.0.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }

    fn tls<'a>(ca: &'a str, cert: &'a str, key: &'a str) -> Files<'a> {
        Files { ca_file: ca, cert_file: cert, key_file: key, server_name: "" }
    }

    #[test]
    fn pairing_and_server_name() {
        let e = check_pairing(tls("", "/c.pem", "")).unwrap_err();
        assert_eq!(e.field, Field::CertFile, "{e}");
        let e = check_pairing(tls("", "", "/k.pem")).unwrap_err();
        assert_eq!(e.field, Field::KeyFile, "{e}");
        let name = |n| Files { server_name: n, ..Default::default() };
        assert_eq!(check_pairing(name("not a name")).unwrap_err().field, Field::ServerName);
        assert!(check_pairing(name("collector.observability.svc")).is_ok());
        assert!(check_pairing(name("10.0.0.7")).is_ok());
    }

    #[test]
    fn unreadable_and_non_pem_files_name_the_file() {
        let d = dir("bad");
        let e = check(tls("/nonexistent/ca.pem", "", "")).unwrap_err();
        assert_eq!(e.field, Field::CaFile);
        assert!(e.message.contains("/nonexistent/ca.pem") && e.message.contains("cannot read"), "{e}");
        let junk = write(&d, "junk.pem", "hello\n");
        let e = check(tls(&junk, "", "")).unwrap_err();
        assert!(e.message.contains("no PEM certificate") && e.message.contains("junk.pem"), "{e}");
        let broken = write(&d, "broken.pem", "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n");
        let e = check(tls(&broken, "", "")).unwrap_err();
        assert_eq!(e.field, Field::CaFile, "{e}");
        let e = check(tls("", &junk, &junk)).unwrap_err();
        assert_eq!(e.field, Field::CertFile, "{e}");
    }

    /// A CA and one certificate it signed (PEM): (ca, cert, key).
    fn pki(client: bool) -> (String, String, String) {
        use rcgen::{
            BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        };
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca.distinguished_name.push(rcgen::DnType::CommonName, "unit CA");
        let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
        let key = KeyPair::generate().unwrap();
        let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        leaf.extended_key_usages =
            vec![if client { ExtendedKeyUsagePurpose::ClientAuth } else { ExtendedKeyUsagePurpose::ServerAuth }];
        let cert = leaf.signed_by(&key, &Issuer::from_params(&ca, &ca_key)).unwrap();
        (ca_pem, cert.pem(), key.serialize_pem())
    }

    #[test]
    fn ca_and_client_certificate_load() {
        let d = dir("good");
        let (ca, cert, key) = pki(true);
        let (ca, cert, key) = (write(&d, "ca.pem", &ca), write(&d, "c.pem", &cert), write(&d, "k.pem", &key));
        let t = tls(&ca, &cert, &key);
        check(t).unwrap();
        let c = ClientTls::load(t).unwrap();
        assert_eq!(c.roots_source(), ca);
        assert!(c.has_client_certificate());
        assert_eq!(c.roots.len(), 1);
        let cfg = c.rustls_config(&[b"h2"]);
        assert_eq!(cfg.alpn_protocols, vec![b"h2".to_vec()]);
        assert!(cfg.client_auth_cert_resolver.has_certs());
        // The connectors build (hyper-rustls refuses a config with ALPN already set).
        let _ = c.https_connector();
        let _ = http_connector();
        let _ = c.tonic_config();
    }

    #[test]
    fn key_of_another_certificate_is_refused() {
        let d = dir("mismatch");
        let (_, cert, _) = pki(true);
        let (_, _, other_key) = pki(true);
        let (cert, key) = (write(&d, "c.pem", &cert), write(&d, "k.pem", &other_key));
        let e = check(tls("", &cert, &key)).unwrap_err();
        assert_eq!(e.field, Field::KeyFile, "{e}");
        assert!(e.message.contains("is not the private key of the certificate"), "{e}");
        // A certificate given as the key: no private key in it.
        let e = check(tls("", &cert, &cert)).unwrap_err();
        assert_eq!(e.field, Field::KeyFile, "{e}");
        assert!(e.message.contains("no usable PEM private key"), "{e}");
    }

    #[test]
    fn system_roots_are_the_default() {
        // The CI image has ca-certificates; skip quietly where a machine has none.
        if let Ok(c) = ClientTls::load(Files::default()) {
            assert_eq!(c.roots_source(), "system");
            assert!(!c.roots.is_empty());
            assert!(!c.has_client_certificate());
        }
    }

    #[test]
    fn error_chain_joins_sources() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("client error (Connect)")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = Outer(std::io::Error::other("invalid peer certificate: UnknownIssuer"));
        assert_eq!(error_chain(&e), "client error (Connect): invalid peer certificate: UnknownIssuer");
    }
}
