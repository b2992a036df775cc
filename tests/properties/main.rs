//! Property-based tests (proptest) of the code that reads untrusted input: the
//! ring-buffer record decoder (`event::decode`), the cgroup-path parser
//! (`enrich::cgroup`), the config loader (`Config::from_yaml_with`) and the image
//! reference parser (`enrich::image`), and the drift policy (`policy:`). No
//! privileges, no BPF, no containers.
//!
//! Each property runs [`DEFAULT_CASES`] generated cases (a bounded CI budget);
//! `PROPTEST_CASES=N cargo test --test properties` runs N instead. No failure
//! persistence files are written: a failing case is printed shrunk to its minimum,
//! and a real bug found that way is kept as a plain unit test beside the code it
//! fixes (see the README's Tests section).

mod cgroup;
mod config;
mod decode;
mod image;
mod policy;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

/// Cases per property when `PROPTEST_CASES` is not set.
pub const DEFAULT_CASES: u32 = 512;

/// The runner configuration every property uses: [`DEFAULT_CASES`] (or
/// `PROPTEST_CASES`), no `proptest-regressions/` files in the source tree, and
/// a seed that is printed (shown with a failing test's output) so that
/// `PROPTEST_RNG_SEED=<seed>` replays the run.
pub fn config() -> Config {
    use std::hash::{BuildHasher, Hasher};
    let mut c = Config::default(); // reads PROPTEST_CASES, PROPTEST_RNG_SEED, ...
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = DEFAULT_CASES;
    }
    c.failure_persistence = None;
    let seed = match c.rng_seed {
        RngSeed::Fixed(seed) => seed,
        RngSeed::Random => std::collections::hash_map::RandomState::new().build_hasher().finish(),
    };
    c.rng_seed = RngSeed::Fixed(seed);
    println!("proptest: {} cases, PROPTEST_RNG_SEED={seed}", c.cases);
    c
}

/// `n` lowercase hex characters.
pub fn hex(n: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(b"0123456789abcdef".as_slice()), n)
        .prop_map(|v| String::from_utf8(v).expect("ascii"))
}

/// Any text, from a mix that finds edges: printable ASCII, any Unicode, and
/// strings built from `tokens` (the grammar's own pieces, so generated inputs get
/// deep into the parser instead of failing at the first character).
pub fn text_from(tokens: &'static [&'static str], max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::string::string_regex(&format!("[ -~]{{0,{max}}}")).expect("regex"),
        proptest::collection::vec(any::<char>(), 0..=max).prop_map(|v| v.into_iter().collect()),
        proptest::collection::vec(proptest::sample::select(tokens), 0..=max / 2).prop_map(|v| v.concat()),
    ]
}
