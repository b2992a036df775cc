//! TLS for the export tests: a test PKI (a CA, a server certificate and a
//! client certificate, generated with rcgen and written as PEM files), TLS
//! servers in front of the plain test receivers, and a blocking HTTPS client.
//!
//! * [`TlsFront`] terminates TLS (tokio-rustls, optionally requiring a client
//!   certificate) and pipes the bytes to a plain upstream: the OTLP receivers
//!   of `support::otlp` (gRPC: ALPN h2; HTTP/protobuf: http/1.1) stay as they
//!   are. Every handshake is recorded: failed (with the reason) or done (with
//!   the client certificate presented, if any).
//! * [`HttpsProxy`] terminates TLS, records each request's method, path and
//!   headers, and forwards it to a plain HTTP upstream (a real Alertmanager).
//! * [`https_get`]: GET over TLS (HTTP/1.0, the answer ends with the connection).

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A CA and the two certificates it signed, as PEM files in a temporary directory.
pub struct Pki {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// The client certificate (DER), to compare with what a server saw.
    pub client_der: Vec<u8>,
}

impl Pki {
    /// A PKI whose server certificate is valid for 127.0.0.1 and localhost.
    pub fn new(name: &str) -> Pki {
        Self::with_server_names(name, &["127.0.0.1", "localhost"])
    }

    /// A PKI whose server certificate carries `names` (DNS names or IP addresses).
    pub fn with_server_names(name: &str, names: &[&str]) -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
            KeyUsagePurpose,
        };
        let dir = std::env::temp_dir().join(format!("driftwatch-pki-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        ca.distinguished_name.push(DnType::CommonName, format!("driftwatch test CA {name}"));
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::from_params(&ca, &ca_key);
        let leaf = |names: Vec<String>, cn: &str, eku| {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(names).unwrap();
            p.distinguished_name.push(DnType::CommonName, cn);
            p.extended_key_usages = vec![eku];
            p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            (p.signed_by(&key, &issuer).unwrap(), key)
        };
        let names = names.iter().map(|n| n.to_string()).collect();
        let (server, server_key) = leaf(names, "driftwatch test server", ExtendedKeyUsagePurpose::ServerAuth);
        let (client, client_key) = leaf(Vec::new(), "driftwatch-agent", ExtendedKeyUsagePurpose::ClientAuth);
        let write = |file: &str, pem: String| {
            let p = dir.join(file);
            std::fs::write(&p, pem).unwrap();
            p
        };
        Pki {
            ca: write("ca.pem", ca_cert.pem()),
            server_cert: write("server.pem", server.pem()),
            server_key: write("server-key.pem", server_key.serialize_pem()),
            client_cert: write("client.pem", client.pem()),
            client_key: write("client-key.pem", client_key.serialize_pem()),
            client_der: client.der().to_vec(),
            dir,
        }
    }

    fn certs(path: &PathBuf) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_file_iter(path).unwrap().collect::<Result<_, _>>().unwrap()
    }

    fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        for c in Self::certs(&self.ca) {
            roots.add(c).unwrap();
        }
        roots
    }

    /// A server configuration with the server certificate; with `client_auth`
    /// the client must present a certificate signed by this CA.
    pub fn server_config(&self, client_auth: bool, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
        let b = rustls::ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions().unwrap();
        let b = if client_auth {
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(self.roots()), provider())
                .build()
                .unwrap();
            b.with_client_cert_verifier(v)
        } else {
            b.with_no_client_auth()
        };
        let key = PrivateKeyDer::from_pem_file(&self.server_key).unwrap();
        let mut cfg = b.with_single_cert(Self::certs(&self.server_cert), key).unwrap();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(cfg)
    }

    /// A client configuration trusting this CA, presenting the client certificate.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let key = PrivateKeyDer::from_pem_file(&self.client_key).unwrap();
        let cfg = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(self.roots())
            .with_client_auth_cert(Self::certs(&self.client_cert), key)
            .unwrap();
        Arc::new(cfg)
    }

    pub fn path(p: &std::path::Path) -> &str {
        p.to_str().unwrap()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One TLS handshake as the server saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum Handshake {
    /// Done; the client's certificate (DER), if it presented one.
    Done { client_cert: Option<Vec<u8>> },
    /// Failed, with the server's error.
    Failed(String),
}

type Handshakes = Arc<Mutex<Vec<Handshake>>>;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime")
}

async fn accept(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: tokio::net::TcpStream,
    log: &Handshakes,
) -> Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
        Ok(Ok(tls)) => {
            let client_cert = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec());
            log.lock().unwrap().push(Handshake::Done { client_cert });
            Some(tls)
        }
        Ok(Err(e)) => {
            log.lock().unwrap().push(Handshake::Failed(e.to_string()));
            None
        }
        Err(_) => {
            log.lock().unwrap().push(Handshake::Failed("handshake timed out".into()));
            None
        }
    }
}

/// Terminates TLS and pipes each connection to a plain `upstream`.
pub struct TlsFront {
    pub addr: SocketAddr,
    handshakes: Handshakes,
    rt: Option<tokio::runtime::Runtime>,
}

impl TlsFront {
    pub fn start(upstream: SocketAddr, cfg: Arc<rustls::ServerConfig>) -> TlsFront {
        let rt = runtime();
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind");
        let addr = listener.local_addr().unwrap();
        let handshakes = Handshakes::default();
        let log = handshakes.clone();
        let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
        rt.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (acceptor, log) = (acceptor.clone(), log.clone());
                tokio::spawn(async move {
                    let Some(mut tls) = accept(&acceptor, stream, &log).await else { return };
                    if let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                    }
                });
            }
        });
        TlsFront { addr, handshakes, rt: Some(rt) }
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn handshakes(&self) -> Vec<Handshake> {
        self.handshakes.lock().unwrap().clone()
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// One request an [`HttpsProxy`] received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Header names lowercased.
    pub headers: BTreeMap<String, String>,
}

/// Terminates TLS, records every request and forwards it to a plain HTTP `upstream`.
pub struct HttpsProxy {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    handshakes: Handshakes,
    rt: Option<tokio::runtime::Runtime>,
}

async fn forward(
    upstream: SocketAddr,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<http_body_util::Full<bytes::Bytes>>, String> {
    use http_body_util::{BodyExt, Full};
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    let stream = tokio::net::TcpStream::connect(upstream).await.map_err(|e| e.to_string())?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Full<bytes::Bytes>>(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut up = hyper::Request::builder()
        .method(parts.method)
        .uri(parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
        .header(hyper::header::HOST, upstream.to_string());
    if let Some(ct) = parts.headers.get(hyper::header::CONTENT_TYPE) {
        up = up.header(hyper::header::CONTENT_TYPE, ct);
    }
    let resp = sender.send_request(up.body(Full::new(body)).unwrap()).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(hyper::Response::builder().status(status).body(Full::new(body)).unwrap())
}

impl HttpsProxy {
    pub fn start(upstream: SocketAddr, cfg: Arc<rustls::ServerConfig>) -> HttpsProxy {
        use hyper::{Request, body::Incoming, service::service_fn};
        let rt = runtime();
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind");
        let addr = listener.local_addr().unwrap();
        let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let handshakes = Handshakes::default();
        let (rq, log) = (requests.clone(), handshakes.clone());
        let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
        rt.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (acceptor, log, rq) = (acceptor.clone(), log.clone(), rq.clone());
                tokio::spawn(async move {
                    let Some(tls) = accept(&acceptor, stream, &log).await else { return };
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let rq = rq.clone();
                        async move {
                            let headers = req
                                .headers()
                                .iter()
                                .map(|(k, v)| {
                                    (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())
                                })
                                .collect();
                            rq.lock().unwrap().push(Recorded {
                                method: req.method().to_string(),
                                path: req.uri().path().to_string(),
                                headers,
                            });
                            let resp = forward(upstream, req).await.unwrap_or_else(|e| {
                                hyper::Response::builder()
                                    .status(502)
                                    .body(http_body_util::Full::new(bytes::Bytes::from(e)))
                                    .unwrap()
                            });
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        HttpsProxy { addr, requests, handshakes, rt: Some(rt) }
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    pub fn handshakes(&self) -> Vec<Handshake> {
        self.handshakes.lock().unwrap().clone()
    }
}

impl Drop for HttpsProxy {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// GET `path` over TLS (HTTP/1.0 with `Accept: application/json`, extra
/// `headers`), verifying the server as `server_name`; returns (status, body).
pub fn https_get(
    addr: SocketAddr,
    path: &str,
    cfg: Arc<rustls::ClientConfig>,
    server_name: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String)> {
    let name = ServerName::try_from(server_name.to_string()).map_err(std::io::Error::other)?;
    let conn = rustls::ClientConnection::new(cfg, name).map_err(std::io::Error::other)?;
    let sock = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut s = rustls::StreamOwned::new(conn, sock);
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: application/json\r\n{extra}\r\n")?;
    s.flush()?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            // A server that closes without close_notify: the answer is complete anyway.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => break,
            Err(e) => return Err(e),
        }
    }
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((status, body.to_string()))
}
