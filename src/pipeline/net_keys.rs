//! The network baseline keys of the containers whose endpoints were judged
//! last. A key ("<namespace>/<kind>/<workload>/<container>") is derived from
//! the runtime's metadata (the workload from the pod's name and labels) and
//! was ~2,500 instructions and three allocations an endpoint; a node's
//! endpoints come from a handful of containers at a time. Keyed by the
//! metadata's own `Arc` (the registry hands out the same one until the
//! runtime says something new, which then misses), fixed in size ([`SLOTS`],
//! the oldest replaced first) and exported as `driftwatch_cache_entries{cache="network_keys"}`.

use super::policy;
use crate::{
    enrich::{cri::ContainerMeta, workload},
    recent::Recent,
};
use std::sync::Arc;

/// Containers remembered at most.
pub const SLOTS: usize = 16;

/// Its `cache` label in `driftwatch_cache_entries`.
pub const CACHE: &str = "network_keys";

#[derive(Default)]
pub struct NetKeys {
    slots: Recent<(Arc<ContainerMeta>, Arc<str>), SLOTS>,
}

impl NetKeys {
    /// Slots in use.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// The baseline key of a pod's container (`m.pod_name` not empty).
    pub fn key(&mut self, m: &Arc<ContainerMeta>) -> Arc<str> {
        if let Some((_, k)) = self.slots.find(|(held, _)| Arc::ptr_eq(held, m)) {
            return k.clone();
        }
        let w = workload::from_pod(&m.pod_name, &m.pod_labels);
        let key: Arc<str> = policy::baseline_key(&m.namespace, w.kind, &w.name, &m.container_name).into();
        // Holding the metadata keeps its address from being reused by another.
        self.slots.push((m.clone(), key.clone()));
        key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(pod: &str, container: &str) -> Arc<ContainerMeta> {
        Arc::new(ContainerMeta {
            container_id: format!("{pod}-{container}"),
            container_name: container.into(),
            pod_name: pod.into(),
            namespace: "shop".into(),
            pod_uid: String::new(),
            sandbox_id: String::new(),
            image: String::new(),
            image_ref: String::new(),
            pod_labels: [("pod-template-hash".to_string(), "7d9f8b6c5d".to_string())].into_iter().collect(),
            pod_annotations: Default::default(),
            runtime: "containerd".into(),
        })
    }

    #[test]
    fn same_key_as_built_from_the_metadata_shared_while_it_is_the_same() {
        let mut keys = NetKeys::default();
        let a = meta("checkout-7d9f8b6c5d-x2k4q", "api");
        let k = keys.key(&a);
        assert_eq!(&*k, "shop/Deployment/checkout/api");
        assert!(Arc::ptr_eq(&k, &keys.key(&a)), "a hit shares the key");
        // New metadata for the same container (the runtime said something new):
        // built again from what it says now, never the old answer.
        let renamed = meta("checkout-7d9f8b6c5d-x2k4q", "web");
        assert_eq!(&*keys.key(&renamed), "shop/Deployment/checkout/web");
        assert_eq!(keys.len(), 2);
    }

    #[test]
    fn stays_fixed_in_size_and_every_answer_matches_the_metadata() {
        let mut keys = NetKeys::default();
        let metas: Vec<_> = (0..3 * SLOTS).map(|i| meta(&format!("p{i}-7d9f8b6c5d-abcde"), "c")).collect();
        for _ in 0..2 {
            for (i, m) in metas.iter().enumerate() {
                assert_eq!(&*keys.key(m), format!("shop/Deployment/p{i}/c"));
                assert!(keys.len() <= SLOTS);
            }
        }
        assert_eq!(keys.len(), SLOTS);
    }
}
