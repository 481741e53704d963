//! The fuzz targets' inputs replayed on stable, in the suite: every seed (fuzz/seeds/TARGET/),
//! every input a fuzz run kept (fuzz/corpus/TARGET/, when present locally), every crash found
//! and fixed (fuzz/regressions/TARGET-*), and a fixed-seed batch of mutations of the seeds, so
//! CI checks the parsers' promises on every change without nightly. See scripts/fuzz.sh.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code may panic

use std::path::{Path, PathBuf};

use moodle_edge::internals::fuzzing;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// A small xorshift generator: the same mutations on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Flips, inserts, deletes and duplicates bytes, as a fuzzer's first steps do.
fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut out = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(5) {
            0 if !out.is_empty() => {
                let i = at.min(out.len() - 1);
                out[i] ^= 1 << rng.below(8);
            }
            1 => out.insert(at, b"\r\n:;,-=\"%\0 \t0aZ\x7f\xff"[rng.below(16)]),
            2 if at < out.len() => {
                out.remove(at);
            }
            3 => {
                let end = (at + rng.below(16)).min(out.len());
                let piece = out[at..end].to_vec();
                out.splice(at..at, piece);
            }
            _ => out.truncate(at),
        }
    }
    out
}

#[test]
fn every_seed_corpus_entry_and_regression_replays_cleanly() {
    let dir = fuzz_dir();
    for target in fuzzing::TARGETS {
        let mut inputs = files(&dir.join("seeds").join(target));
        assert!(!inputs.is_empty(), "no seeds for {target}");
        inputs.extend(files(&dir.join("corpus").join(target)));
        for input in inputs {
            let data = std::fs::read(&input).unwrap();
            assert!(fuzzing::run(target, &data), "unknown target {target}");
        }
    }
    for input in files(&dir.join("regressions")) {
        let name = input.file_name().unwrap().to_string_lossy().into_owned();
        let target = fuzzing::TARGETS
            .iter()
            .find(|t| name.starts_with(&format!("{t}-")))
            .unwrap_or_else(|| panic!("{name}: a regression file is named TARGET-..."));
        fuzzing::run(target, &std::fs::read(&input).unwrap());
    }
}

#[test]
fn fixed_seed_mutations_of_the_seeds_keep_every_promise() {
    let dir = fuzz_dir();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for target in fuzzing::TARGETS {
        let seeds: Vec<Vec<u8>> = files(&dir.join("seeds").join(target))
            .iter()
            .map(|p| std::fs::read(p).unwrap())
            .collect();
        let rounds = match *target {
            "webservice_params" | "config_yaml" | "saml_metadata" => 300,
            "mnet_envelope" | "mnet_xmlrpc" | "saml_response_shape" | "saml_redirect" => 1000,
            _ => 2000,
        };
        for i in 0..rounds {
            let data = mutate(&seeds[i % seeds.len()], &mut rng);
            fuzzing::run(target, &data);
        }
    }
}
