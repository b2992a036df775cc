//! A real OTLP logs receiver for tests: gRPC (tonic, the generated
//! `LogsService` from opentelemetry-proto) or HTTP/protobuf (hyper, POST
//! /v1/logs), on a free loopback port. It decodes every request and keeps the
//! log records with their resource and scope; it can also answer slowly.

use opentelemetry_proto::tonic::{
    collector::logs::v1::{
        ExportLogsServiceRequest, ExportLogsServiceResponse,
        logs_service_server::{LogsService, LogsServiceServer},
    },
    common::v1::{AnyValue, KeyValue, any_value::Value as Av},
    logs::v1::LogRecord,
};
use prost::Message;
use serde_json::{Map, Value};
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// One received log record, with its resource and scope.
#[derive(Debug, Clone)]
pub struct Rec {
    pub resource: BTreeMap<String, Value>,
    pub scope: String,
    pub record: LogRecord,
    pub attrs: Map<String, Value>,
}

impl Rec {
    pub fn body(&self) -> Value {
        self.record.body.as_ref().map(any_json).unwrap_or(Value::Null)
    }
}

/// An OTLP value as JSON (ints as numbers, arrays as arrays), to compare with the JSON finding.
pub fn any_json(v: &AnyValue) -> Value {
    match &v.value {
        Some(Av::StringValue(s)) => Value::String(s.clone()),
        Some(Av::BoolValue(b)) => Value::Bool(*b),
        Some(Av::IntValue(i)) => Value::from(*i),
        Some(Av::DoubleValue(d)) => Value::from(*d),
        Some(Av::ArrayValue(a)) => Value::Array(a.values.iter().map(any_json).collect()),
        Some(Av::KvlistValue(kv)) => Value::Object(kvs(&kv.values)),
        Some(Av::BytesValue(b)) => Value::String(format!("{b:?}")),
        _ => Value::Null,
    }
}

fn kvs(kv: &[KeyValue]) -> Map<String, Value> {
    kv.iter().map(|k| (k.key.clone(), k.value.as_ref().map(any_json).unwrap_or(Value::Null))).collect()
}

type Store = Arc<Mutex<Vec<Rec>>>;
/// The headers (gRPC metadata) of every request, names lowercased.
type Headers = Arc<Mutex<Vec<BTreeMap<String, String>>>>;

fn header_map(h: &hyper::HeaderMap) -> BTreeMap<String, String> {
    h.iter().map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())).collect()
}

fn keep(req: ExportLogsServiceRequest, into: &Store) {
    let mut out = into.lock().unwrap();
    for rl in req.resource_logs {
        let resource: BTreeMap<String, Value> =
            rl.resource.map(|r| kvs(&r.attributes).into_iter().collect()).unwrap_or_default();
        for sl in rl.scope_logs {
            let scope = sl.scope.map(|s| s.name).unwrap_or_default();
            for record in sl.log_records {
                let attrs = kvs(&record.attributes);
                out.push(Rec { resource: resource.clone(), scope: scope.clone(), record, attrs });
            }
        }
    }
}

struct Svc {
    store: Store,
    delay: Duration,
    requests: Arc<Mutex<u64>>,
    headers: Headers,
}

#[tonic::async_trait]
impl LogsService for Svc {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        *self.requests.lock().unwrap() += 1;
        self.headers.lock().unwrap().push(header_map(&request.metadata().clone().into_headers()));
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        keep(request.into_inner(), &self.store);
        Ok(tonic::Response::new(ExportLogsServiceResponse { partial_success: None }))
    }
}

pub struct Receiver {
    pub addr: SocketAddr,
    store: Store,
    requests: Arc<Mutex<u64>>,
    headers: Headers,
    rt: Option<tokio::runtime::Runtime>,
}

impl Receiver {
    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime")
    }

    /// A gRPC receiver answering after `delay` (zero: at once).
    pub fn grpc_with_delay(delay: Duration) -> Receiver {
        let rt = Self::runtime();
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind");
        let addr = listener.local_addr().unwrap();
        let store = Store::default();
        let requests = Arc::new(Mutex::new(0));
        let headers = Headers::default();
        let svc = Svc { store: store.clone(), delay, requests: requests.clone(), headers: headers.clone() };
        rt.spawn(async move {
            tonic::transport::Server::builder()
                .add_service(LogsServiceServer::new(svc))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await
                .expect("grpc receiver");
        });
        Receiver { addr, store, requests, headers, rt: Some(rt) }
    }

    pub fn grpc() -> Receiver {
        Self::grpc_with_delay(Duration::ZERO)
    }

    /// An HTTP/protobuf receiver (POST /v1/logs, application/x-protobuf).
    pub fn http() -> Receiver {
        use http_body_util::{BodyExt, Full};
        use hyper::{Request, Response, body::Incoming, service::service_fn};
        let rt = Self::runtime();
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind");
        let addr = listener.local_addr().unwrap();
        let store = Store::default();
        let requests = Arc::new(Mutex::new(0));
        let headers = Headers::default();
        let (st, rq, hd) = (store.clone(), requests.clone(), headers.clone());
        rt.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (st, rq, hd) = (st.clone(), rq.clone(), hd.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (st, rq, hd) = (st.clone(), rq.clone(), hd.clone());
                        async move {
                            *rq.lock().unwrap() += 1;
                            hd.lock().unwrap().push(header_map(req.headers()));
                            let ok_path = req.uri().path() == "/v1/logs";
                            let ctype = req
                                .headers()
                                .get("content-type")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_string();
                            let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            let status = match ExportLogsServiceRequest::decode(body) {
                                Ok(r) if ok_path && ctype == "application/x-protobuf" => {
                                    keep(r, &st);
                                    200
                                }
                                _ => 400,
                            };
                            let resp = ExportLogsServiceResponse { partial_success: None }.encode_to_vec();
                            Ok::<_, std::convert::Infallible>(
                                Response::builder()
                                    .status(status)
                                    .header("content-type", "application/x-protobuf")
                                    .body(Full::new(bytes::Bytes::from(resp)))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Receiver { addr, store, requests, headers, rt: Some(rt) }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn records(&self) -> Vec<Rec> {
        self.store.lock().unwrap().clone()
    }

    pub fn requests(&self) -> u64 {
        *self.requests.lock().unwrap()
    }

    /// The headers of every request so far.
    pub fn headers(&self) -> Vec<BTreeMap<String, String>> {
        self.headers.lock().unwrap().clone()
    }

    /// Waits until some record satisfies `pred`.
    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&Rec) -> bool) -> Rec {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(r) = self.records().into_iter().find(|r| pred(r)) {
                return r;
            }
            if Instant::now() > deadline {
                panic!("OTLP receiver: no record for {what} within {timeout:?}; got {:#?}", self.records());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Writes a config file enabling OTLP and returns its path (in a fresh temp dir).
pub fn config_file(name: &str, yaml: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("driftwatch-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("config.yaml");
    std::fs::write(&p, yaml).unwrap();
    p
}
