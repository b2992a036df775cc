//! The webhook over TLS (`respond.webhook.tls`): the server certificate, and
//! with `client_ca_file` a client certificate signed by that CA, as
//! Alertmanager's `http_config.tls_config` (`cert_file`, `key_file`) sends
//! one, required for `/v1/alerts` (server.rs).

use super::config::WebhookTls;
use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};
use std::sync::Arc;

fn certificates(field: &str, path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("respond.webhook.tls.{field} {path}: {e}"))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("respond.webhook.tls.{field} {path}: not valid PEM: {e}"))?;
    if certs.is_empty() {
        return Err(format!("respond.webhook.tls.{field} {path}: no PEM certificate (-----BEGIN CERTIFICATE-----)"));
    }
    Ok(certs)
}

/// The rustls server config of `t`, files read now (a renewed certificate needs a restart).
pub fn server_config(t: &WebhookTls) -> Result<Arc<ServerConfig>, String> {
    let provider = crate::tls::provider();
    let certs = certificates("cert_file", &t.cert_file)?;
    let key = PrivateKeyDer::from_pem_file(&t.key_file)
        .map_err(|e| format!("respond.webhook.tls.key_file {}: {e}", t.key_file))?;
    let b = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("respond.webhook.tls: {e}"))?;
    let b = if t.client_ca_file.is_empty() {
        b.with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        for c in certificates("client_ca_file", &t.client_ca_file)? {
            roots.add(c).map_err(|e| format!("respond.webhook.tls.client_ca_file {}: {e}", t.client_ca_file))?;
        }
        // A missing certificate passes the handshake (kubelet probes and scrapes have none) and
        // is refused at /v1/alerts; a certificate of another CA fails the handshake.
        let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .allow_unauthenticated()
            .build()
            .map_err(|e| format!("respond.webhook.tls.client_ca_file {}: {e}", t.client_ca_file))?;
        b.with_client_cert_verifier(v)
    };
    let mut cfg = b
        .with_single_cert(certs, key)
        .map_err(|e| format!("respond.webhook.tls: cert_file {} and key_file {}: {e}", t.cert_file, t.key_file))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
