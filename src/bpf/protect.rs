//! Protect mode's kernel maps: which containers (mount namespace ids) have
//! their binary drift killed at exec, and the approved paths that still run
//! in them (ebpf/helpers/protect.h).

use crate::{
    abi,
    policy::protect::{KernelApprovals, allow_hash},
};
use aya::maps::{HashMap as BpfHashMap, MapData};
use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
};

/// A random seed per load, so the approved-path hashes the kernel compares
/// cannot be forged offline by someone who knows an approved path.
pub fn random_seed() -> u64 {
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b)).is_ok() {
        return u64::from_ne_bytes(b);
    }
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

struct Maps {
    modes: BpfHashMap<MapData, u64, abi::dw_protect>,
    allow: BpfHashMap<MapData, abi::dw_allow_key, u32>,
    /// The allow keys written per namespace, to remove them with it.
    keys: HashMap<u64, HashSet<(u64, u64)>>,
}

/// The userspace end of `protect_mntns` / `protect_allow`.
pub struct ProtectMaps {
    maps: Mutex<Maps>,
    seed: u64,
    /// `#!` scripts the kernel killed when their interpreter opened them.
    script_killed: Mutex<BpfHashMap<MapData, abi::dw_script_key, u8>>,
}

impl ProtectMaps {
    pub(super) fn new(
        modes: BpfHashMap<MapData, u64, abi::dw_protect>,
        allow: BpfHashMap<MapData, abi::dw_allow_key, u32>,
        script_killed: BpfHashMap<MapData, abi::dw_script_key, u8>,
        seed: u64,
    ) -> Self {
        Self {
            maps: Mutex::new(Maps { modes, allow, keys: HashMap::new() }),
            seed,
            script_killed: Mutex::new(script_killed),
        }
    }

    /// The namespace is protected now.
    pub fn is_armed(&self, mntns_id: u64) -> bool {
        self.maps.lock().is_ok_and(|m| m.modes.get(&mntns_id, 0).is_ok())
    }

    /// The kernel killed the script `tgid` exec'd at `exec_ktime_ns` (and
    /// forgets it: one finding per exec).
    pub fn take_script_killed(&self, tgid: u32, exec_ktime_ns: u64) -> bool {
        let Ok(mut m) = self.script_killed.lock() else { return false };
        let k = abi::dw_script_key { tgid, _pad: 0, exec_ktime_ns };
        m.get(&k, 0).is_ok() && m.remove(&k).is_ok()
    }

    /// Protects the namespace: its approvals first, then its entry, so the
    /// kernel never sees it protected without them. Replaces what was there.
    pub fn arm(&self, mntns_id: u64, main_tgid: u32, k: &KernelApprovals) -> Result<(), String> {
        let mut m = self.maps.lock().map_err(|_| "poisoned lock".to_string())?;
        let mut bits: HashMap<(u64, u64), u32> = HashMap::new();
        for a in &k.allows {
            for s in &a.sources {
                *bits.entry((mntns_id, allow_hash(self.seed, &a.text, *s))).or_default() |= a.kind.bit();
            }
        }
        for ((ns, hash), v) in &bits {
            let key = abi::dw_allow_key { mntns_id: *ns, hash: *hash };
            m.allow.insert(key, v, 0).map_err(|e| format!("protect_allow: {e}"))?;
        }
        let mut flags = 0;
        if k.all {
            flags |= abi::DW_PROTECT_ALLOW_ALL;
        }
        if !bits.is_empty() {
            flags |= abi::DW_PROTECT_HAS_ALLOW;
        }
        let v = abi::dw_protect { main_tgid, flags };
        m.modes.insert(mntns_id, v, 0).map_err(|e| format!("protect_mntns: {e}"))?;
        let new: HashSet<(u64, u64)> = bits.into_keys().collect();
        let old = m.keys.insert(mntns_id, new.clone()).unwrap_or_default();
        for (ns, hash) in old.difference(&new) {
            let _ = m.allow.remove(&abi::dw_allow_key { mntns_id: *ns, hash: *hash });
        }
        Ok(())
    }

    /// Stops protecting the namespace (its container is gone, or its mode changed).
    pub fn disarm(&self, mntns_id: u64) {
        let Ok(mut m) = self.maps.lock() else { return };
        let _ = m.modes.remove(&mntns_id);
        for (ns, hash) in m.keys.remove(&mntns_id).unwrap_or_default() {
            let _ = m.allow.remove(&abi::dw_allow_key { mntns_id: ns, hash });
        }
    }
}
