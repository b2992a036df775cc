//! A fake CRI runtime on a Unix socket, for tests of the client and of the
//! container registry: it answers Version, ContainerStatus, ListContainers,
//! PodSandboxStatus and ListPodSandbox from its state, with an optional delay.

use crate::locks::lock;
use k8s_cri::v1 as api;
use std::collections::HashMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tonic::codegen::{Body, BoxFuture, StdError, http};

pub const UID: &str = "1234abcd-5678-90ef-1234-567890abcdef";

pub fn cid(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}
pub fn sid(n: u8) -> String {
    format!("5{n:x}").repeat(32)
}
pub fn map(kv: &[(&str, &str)]) -> HashMap<String, String> {
    kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

// ---- a fake CRI runtime on a Unix socket -------------------------------------

#[derive(Default)]
pub struct FakeState {
    pub runtime: String,
    pub version_unimplemented: bool,
    pub delay: Duration,
    pub containers: HashMap<String, (api::ContainerStatus, String)>,
    pub sandboxes: HashMap<String, api::PodSandboxStatus>,
    pub status_calls: u64,
}

#[derive(Clone)]
pub struct Fake(pub Arc<Mutex<FakeState>>);

impl Fake {
    pub fn new(runtime: &str) -> Fake {
        Fake(Arc::new(Mutex::new(FakeState { runtime: runtime.into(), ..Default::default() })))
    }
    pub fn add_pod(&self, sandbox: &str, name: &str) {
        let st = api::PodSandboxStatus {
            id: sandbox.into(),
            metadata: Some(api::PodSandboxMetadata {
                name: name.into(),
                uid: UID.into(),
                namespace: "payments".into(),
                attempt: 0,
            }),
            labels: map(&[("app", "checkout"), ("io.kubernetes.pod.name", name)]),
            annotations: map(&[("team", "shop")]),
            ..Default::default()
        };
        lock(&self.0).sandboxes.insert(sandbox.into(), st);
    }
    pub fn add_container(&self, id: &str, sandbox: &str, name: &str) {
        let st = api::ContainerStatus {
            id: id.into(),
            metadata: Some(api::ContainerMetadata { name: name.into(), attempt: 0 }),
            image: Some(api::ImageSpec { image: "docker.io/shop/api:v2".into(), ..Default::default() }),
            image_ref: format!("docker.io/shop/api@sha256:{}", "ab".repeat(32)),
            labels: map(&[
                ("io.kubernetes.pod.name", "checkout-7d9f"),
                ("io.kubernetes.pod.namespace", "payments"),
                ("io.kubernetes.pod.uid", UID),
                ("io.kubernetes.container.name", name),
            ]),
            ..Default::default()
        };
        lock(&self.0).containers.insert(id.into(), (st, sandbox.into()));
    }
    pub fn remove_container(&self, id: &str) {
        lock(&self.0).containers.remove(id);
    }
    pub fn status_calls(&self) -> u64 {
        lock(&self.0).status_calls
    }
    pub fn set_delay(&self, d: Duration) {
        lock(&self.0).delay = d;
    }

    /// Serves on `path` until `stop` is cancelled.
    pub async fn serve(&self, path: &Path, stop: CancellationToken) {
        let _ = std::fs::remove_file(path);
        let listener = tokio::net::UnixListener::bind(path).expect("bind fake socket");
        let svc = self.clone();
        tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
            let _ = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
                .await;
        });
    }

    fn handle(&self, path: &str, body: Vec<u8>) -> Result<Vec<u8>, tonic::Status> {
        use prost::Message;
        let dec = |e: prost::DecodeError| tonic::Status::invalid_argument(e.to_string());
        let mut st = lock(&self.0);
        let out = match path {
            "/runtime.v1.RuntimeService/Version" => {
                if st.version_unimplemented {
                    return Err(tonic::Status::unimplemented("cri disabled"));
                }
                api::VersionResponse {
                    version: "0.1.0".into(),
                    runtime_name: st.runtime.clone(),
                    runtime_version: "1.0".into(),
                    runtime_api_version: "v1".into(),
                }
                .encode_to_vec()
            }
            "/runtime.v1.RuntimeService/ContainerStatus" => {
                st.status_calls += 1;
                let req = api::ContainerStatusRequest::decode(&body[..]).map_err(dec)?;
                let (s, _) = st.containers.get(&req.container_id).ok_or_else(|| tonic::Status::not_found("nope"))?;
                api::ContainerStatusResponse { status: Some(s.clone()), ..Default::default() }.encode_to_vec()
            }
            "/runtime.v1.RuntimeService/ListContainers" => {
                let req = api::ListContainersRequest::decode(&body[..]).map_err(dec)?;
                let want = req.filter.map(|f| f.id).unwrap_or_default();
                let containers = st
                    .containers
                    .values()
                    .filter(|(s, _)| want.is_empty() || s.id == want)
                    .map(|(s, sb)| api::Container {
                        id: s.id.clone(),
                        pod_sandbox_id: sb.clone(),
                        metadata: s.metadata.clone(),
                        // Like the kubelet's CreateContainer: the image id.
                        image: Some(api::ImageSpec {
                            image: format!("sha256:{}", "cd".repeat(32)),
                            ..Default::default()
                        }),
                        image_ref: format!("sha256:{}", "cd".repeat(32)),
                        labels: s.labels.clone(),
                        state: api::ContainerState::ContainerRunning as i32,
                        ..Default::default()
                    })
                    .collect();
                api::ListContainersResponse { containers }.encode_to_vec()
            }
            "/runtime.v1.RuntimeService/PodSandboxStatus" => {
                let req = api::PodSandboxStatusRequest::decode(&body[..]).map_err(dec)?;
                let s = st.sandboxes.get(&req.pod_sandbox_id).ok_or_else(|| tonic::Status::not_found("nope"))?;
                api::PodSandboxStatusResponse { status: Some(s.clone()), ..Default::default() }.encode_to_vec()
            }
            "/runtime.v1.RuntimeService/ListPodSandbox" => {
                let items = st
                    .sandboxes
                    .values()
                    .map(|s| api::PodSandbox {
                        id: s.id.clone(),
                        metadata: s.metadata.clone(),
                        labels: s.labels.clone(),
                        annotations: s.annotations.clone(),
                        ..Default::default()
                    })
                    .collect();
                api::ListPodSandboxResponse { items }.encode_to_vec()
            }
            _ => return Err(tonic::Status::unimplemented(path.to_owned())),
        };
        Ok(out)
    }
}

/// Raw bytes in and out: the fake decodes and encodes the messages itself.
#[derive(Default, Clone)]
struct RawCodec;
struct RawEnc;
struct RawDec;
impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEnc;
    type Decoder = RawDec;
    fn encoder(&mut self) -> RawEnc {
        RawEnc
    }
    fn decoder(&mut self) -> RawDec {
        RawDec
    }
}
impl tonic::codec::Encoder for RawEnc {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}
impl tonic::codec::Decoder for RawDec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf;
        let mut v = vec![0; src.remaining()];
        src.copy_to_slice(&mut v);
        Ok(Some(v))
    }
}

struct Method(Fake, String);
impl tonic::server::UnaryService<Vec<u8>> for Method {
    type Response = Vec<u8>;
    type Future = BoxFuture<tonic::Response<Vec<u8>>, tonic::Status>;
    fn call(&mut self, req: tonic::Request<Vec<u8>>) -> Self::Future {
        let (fake, path) = (self.0.clone(), self.1.clone());
        Box::pin(async move {
            let delay = lock(&fake.0).delay;
            tokio::time::sleep(delay).await;
            fake.handle(&path, req.into_inner()).map(tonic::Response::new)
        })
    }
}

impl<B> tower::Service<http::Request<B>> for Fake
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let m = Method(self.clone(), req.uri().path().to_owned());
        Box::pin(async move { Ok(tonic::server::Grpc::new(RawCodec).unary(m, req).await) })
    }
}
impl tonic::server::NamedService for Fake {
    const NAME: &'static str = "runtime.v1.RuntimeService";
}

/// Waits (polling every 10 ms) until `f` holds, at most `limit`.
pub async fn until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t0 = std::time::Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The usual runtime of these tests: pod `sid(1)` ("checkout-7d9f") with
/// its container `cid(1)` ("api"), served on `cri.sock` in a fresh
/// directory. Returns (directory, socket, runtime, what stops it).
pub async fn serve_one_pod(tag: &str) -> (PathBuf, PathBuf, Fake, CancellationToken) {
    let d = tmpdir(tag);
    let sock = d.join("cri.sock");
    let stop = CancellationToken::new();
    let f = Fake::new("containerd");
    f.add_pod(&sid(1), "checkout-7d9f");
    f.add_container(&cid(1), &sid(1), "api");
    f.serve(&sock, stop.clone()).await;
    (d, sock, f, stop)
}

pub fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("dw-cri-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("tmpdir");
    d
}
