//! A multi-layer test image for `driftwatch diff`: `localhost/driftwatch-layers:1`
//! is the test image (`localhost/driftwatch-test:1`, exported from containerd)
//! with three more layers written here as OCI layer tars:
//!
//! * A: `/opt/app/...`, `/opt/gone-later`, `/opt/replaced/{old1,old2}`,
//!   `/etc/app.conf` ("setting=1"), `/etc/chmod-me`, `/etc/link -> /etc/app.conf`,
//!   `/srv/data/{d1,d2}`, `/var/lib/olddir/{f1,f2}`;
//! * B: deletes `/opt/gone-later` (a whiteout in a lower layer), replaces
//!   `/opt/replaced` by a directory holding only `new1` (an opaque
//!   directory), edits `/etc/app.conf` ("setting=2");
//! * C: `/usr/local/bin/tool`, `/opt/app/conf/c.conf`.
//!
//! containerd unpacks these into overlay snapshot directories the way it
//! unpacks any image (whiteouts become 0:0 devices, the opaque marker an
//! xattr), which is what the diff reads. The build is reproducible (fixed
//! mtimes, sorted entries, uncompressed layers), imported once and reused
//! while the base image and [`VERSION`] stay the same.

use super::Containerd;
use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::Path;
use std::sync::OnceLock;

pub const LAYERS_IMAGE: &str = "localhost/driftwatch-layers:1";
/// Bump when the layers below change.
const VERSION: &str = "layers-v1";
const STAMP: &str = "/var/lib/driftwatch-test/layers.stamp";
const MTIME: u64 = 1_700_000_000;

static READY: OnceLock<String> = OnceLock::new();

/// One entry of a layer tar.
enum E {
    Dir(&'static str),
    File(&'static str, &'static [u8], u32),
    Link(&'static str, &'static str),
}

fn layer_a() -> Vec<E> {
    use E::*;
    vec![
        Dir("etc"),
        File("etc/app.conf", b"setting=1\n", 0o644),
        File("etc/chmod-me", b"chmod me\n", 0o644),
        Link("etc/link", "/etc/app.conf"),
        Dir("opt"),
        Dir("opt/app"),
        Dir("opt/app/bin"),
        File("opt/app/bin/run.sh", b"#!/bin/sh\necho v1\n", 0o755),
        Dir("opt/app/conf"),
        File("opt/app/conf/a.conf", b"a=1\n", 0o644),
        File("opt/app/conf/b.conf", b"b=1\n", 0o644),
        File("opt/gone-later", b"deleted by layer B\n", 0o644),
        Dir("opt/replaced"),
        File("opt/replaced/old1", b"old1\n", 0o644),
        File("opt/replaced/old2", b"old2\n", 0o644),
        Dir("srv"),
        Dir("srv/data"),
        File("srv/data/d1", b"d1\n", 0o644),
        File("srv/data/d2", b"d2\n", 0o644),
        Dir("var"),
        Dir("var/lib"),
        Dir("var/lib/olddir"),
        File("var/lib/olddir/f1", b"f1\n", 0o644),
        File("var/lib/olddir/f2", b"f2\n", 0o644),
    ]
}

fn layer_b() -> Vec<E> {
    use E::*;
    vec![
        Dir("etc"),
        File("etc/app.conf", b"setting=2\n", 0o644),
        Dir("opt"),
        File("opt/.wh.gone-later", b"", 0o644),
        Dir("opt/replaced"),
        File("opt/replaced/.wh..wh..opq", b"", 0o644),
        File("opt/replaced/new1", b"new1\n", 0o644),
    ]
}

fn layer_c() -> Vec<E> {
    use E::*;
    vec![
        Dir("opt"),
        Dir("opt/app"),
        Dir("opt/app/conf"),
        File("opt/app/conf/c.conf", b"c=1\n", 0o644),
        Dir("usr"),
        Dir("usr/local"),
        Dir("usr/local/bin"),
        File("usr/local/bin/tool", b"#!/bin/sh\necho tool\n", 0o755),
    ]
}

fn sha256_hex(b: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, b).as_ref().iter().map(|x| format!("{x:02x}")).collect()
}

fn header(path: &str, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_path(path).unwrap_or_else(|e| panic!("tar path {path}: {e}"));
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(MTIME);
    h.set_size(size);
    h
}

fn layer_tar(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        match e {
            E::Dir(p) => {
                let mut h = header(&format!("{p}/"), tar::EntryType::Directory, 0o755, 0);
                h.set_cksum();
                b.append(&h, std::io::empty()).unwrap();
            }
            E::File(p, data, mode) => {
                let mut h = header(p, tar::EntryType::Regular, *mode, data.len() as u64);
                h.set_cksum();
                b.append(&h, *data).unwrap();
            }
            E::Link(p, target) => {
                let mut h = header(p, tar::EntryType::Symlink, 0o777, 0);
                h.set_link_name(target).unwrap();
                h.set_cksum();
                b.append(&h, std::io::empty()).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// The files of an OCI layout tar, by path.
fn read_tar(bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut a = tar::Archive::new(bytes);
    for e in a.entries().expect("export tar") {
        let mut e = e.expect("export tar entry");
        if e.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let p = e.path().expect("entry path").to_string_lossy().trim_start_matches("./").to_string();
        let mut v = Vec::new();
        e.read_to_end(&mut v).expect("entry data");
        out.insert(p, v);
    }
    out
}

fn json(b: &[u8], what: &str) -> serde_json::Value {
    serde_json::from_slice(b).unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Builds (when missing or stale) and imports the layered image; returns its
/// manifest digest.
pub fn ensure(ctrd: &Containerd) -> &'static str {
    READY.get_or_init(|| build_and_import(ctrd))
}

fn listed_digest(ctrd: &Containerd, image: &str) -> Option<String> {
    let listing = ctrd.ctr_ok(&["images", "ls"]);
    listing.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.first() == Some(&image)).then(|| f.get(2).map(|d| d.to_string())).flatten()
    })
}

fn build_and_import(ctrd: &Containerd) -> String {
    let base = listed_digest(ctrd, super::TEST_IMAGE).expect("the test image is imported");
    let fingerprint = format!("{VERSION} {base}");
    if let Ok(stamp) = fs::read_to_string(STAMP)
        && let Some((fp, digest)) = stamp.trim().rsplit_once(' ')
        && fp == fingerprint
        && listed_digest(ctrd, LAYERS_IMAGE).as_deref() == Some(digest)
    {
        return digest.to_string();
    }
    let work = Path::new(super::RUN_DIR).join(format!("layers-{}", std::process::id()));
    fs::create_dir_all(&work).unwrap();
    let exported = work.join("base.tar");
    ctrd.ctr_ok(&["images", "export", "--skip-manifest-json", exported.to_str().unwrap(), super::TEST_IMAGE]);
    let files = read_tar(&fs::read(&exported).unwrap());
    let blob = |d: &str| -> &Vec<u8> {
        let p = format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
        files.get(&p).unwrap_or_else(|| panic!("{p} missing in the export of {}", super::TEST_IMAGE))
    };
    let index = json(&files["index.json"], "index.json");
    let mdesc = &index["manifests"][0];
    let manifest = json(blob(mdesc["digest"].as_str().unwrap()), "manifest");
    let mut config = json(blob(manifest["config"]["digest"].as_str().unwrap()), "config");

    let mut out: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut put = |data: Vec<u8>| -> (String, usize) {
        let d = sha256_hex(&data);
        let n = data.len();
        out.insert(format!("blobs/sha256/{d}"), data);
        (format!("sha256:{d}"), n)
    };
    let mut layers = manifest["layers"].as_array().unwrap().clone();
    for l in &layers {
        let d = l["digest"].as_str().unwrap();
        put(blob(d).clone());
    }
    for (name, entries) in [("A", layer_a()), ("B", layer_b()), ("C", layer_c())] {
        let (digest, size) = put(layer_tar(&entries));
        // Uncompressed: the diff id is the blob's digest.
        config["rootfs"]["diff_ids"].as_array_mut().unwrap().push(digest.clone().into());
        config["history"].as_array_mut().unwrap().push(serde_json::json!({
            "created": "2023-11-14T22:13:20Z",
            "created_by": format!("tests/support/layers.rs: layer {name}"),
        }));
        layers.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": digest,
            "size": size,
        }));
    }
    let (cfg_digest, cfg_size) = put(serde_json::to_vec(&config).unwrap());
    let new_manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg_digest, "size": cfg_size},
        "layers": layers,
    });
    let (m_digest, m_size) = put(serde_json::to_vec(&new_manifest).unwrap());
    let new_index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": m_digest,
            "size": m_size,
            "platform": mdesc["platform"],
            "annotations": {
                "io.containerd.image.name": LAYERS_IMAGE,
                "org.opencontainers.image.ref.name": LAYERS_IMAGE,
            },
        }],
    });
    out.insert("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec());
    out.insert("index.json".into(), serde_json::to_vec(&new_index).unwrap());

    let mut b = tar::Builder::new(Vec::new());
    for (p, data) in &out {
        let mut h = header(p, tar::EntryType::Regular, 0o644, data.len() as u64);
        h.set_cksum();
        b.append(&h, &data[..]).unwrap();
    }
    let archive = work.join("layers.tar");
    fs::write(&archive, b.into_inner().unwrap()).unwrap();
    ctrd.ctr_ok(&["images", "import", archive.to_str().unwrap()]);
    let _ = fs::remove_dir_all(&work);
    assert_eq!(
        listed_digest(ctrd, LAYERS_IMAGE).as_deref(),
        Some(m_digest.as_str()),
        "{LAYERS_IMAGE} not listed with the digest just imported"
    );
    let _ = fs::write(STAMP, format!("{fingerprint} {m_digest}\n"));
    m_digest
}
