//! all-MiniLM-L6-v2 in Burn against an independent reference: BERT written in NumPy (float64)
//! on the same weights, with the tokenizer.json read by Hugging Face's Python `tokenizers`
//! (`scripts/reference/minilm_reference.py` → `tests/fixtures/minilm/reference.json`), on 22
//! sentences: punctuation, accents, unknown and made-up words, other scripts, an empty prompt
//! and one of 150 words that is cut to 128 tokens. Needs the weights
//! (`scripts/fetch-minilm.sh`); skipped without them unless `DIT_REQUIRE_MINILM` is set.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use dit_model::Backend;
use dit_model::minilm::{MAX_TOKENS, MiniLm, MiniLmTokenizer};
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn model_dir() -> Option<PathBuf> {
    let dir = root().join("models/all-MiniLM-L6-v2");
    if !dir.join("model.safetensors").is_file() && std::env::var_os("DIT_REQUIRE_MINILM").is_none()
    {
        eprintln!("skipped: no {} (scripts/fetch-minilm.sh)", dir.display());
        return None;
    }
    Some(dir)
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[test]
fn tokens_states_and_pooled_vectors_match_the_reference() {
    let Some(dir) = model_dir() else { return };
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/fixtures/minilm/reference.json")).unwrap(),
    )
    .unwrap();
    let dims: Vec<usize> = reference["dims"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect();
    let cases = reference["cases"].as_array().unwrap();
    assert!(cases.len() >= 20);
    let device = Device::default();
    let tokenizer = MiniLmTokenizer::load(&dir).unwrap();
    let model = MiniLm::load(&dir, &device).unwrap();
    let mut ids = Vec::new();
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let (got, cut) = tokenizer.encode(text).unwrap();
        let expected: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(got, expected, "{text:?}");
        assert_eq!(cut, got.len() == MAX_TOKENS, "{text:?}");
        ids.push(got);
    }
    // All sentences in one padded batch: padding must change nothing.
    let (batch, mask) = MiniLmTokenizer::batch(&ids, &device);
    let states = model.forward(batch, mask.clone());
    let pooled = MiniLm::pool(states.clone(), mask);
    let normalised = MiniLm::normalise(pooled.clone());
    let [_, n, h] = states.dims();
    let states: Vec<f32> = states.into_data().try_to_vec().unwrap();
    let pooled: Vec<f32> = pooled.into_data().try_to_vec().unwrap();
    let normalised: Vec<f32> = normalised.into_data().try_to_vec().unwrap();
    let mut worst = 0.0f32;
    let tolerance = Backend::of(&device).map_or(1e-4, Backend::parity_tolerance);
    for (i, case) in cases.iter().enumerate() {
        let text = case["text"].as_str().unwrap();
        let mut check = |got: f32, want: f32, what: &str| {
            let diff = (got - want).abs();
            worst = worst.max(diff);
            assert!(diff <= tolerance, "{text:?} {what}: {got} vs {want}");
        };
        for (j, want) in floats(&case["pooled"]).into_iter().enumerate() {
            check(pooled[i * h + j], want, &format!("pooled[{j}]"));
        }
        for (j, want) in floats(&case["normalised"]).into_iter().enumerate() {
            check(normalised[i * h + j], want, &format!("normalised[{j}]"));
        }
        for (t, row) in case["states"].as_array().unwrap().iter().enumerate() {
            for (&d, want) in dims.iter().zip(floats(row)) {
                check(
                    states[(i * n + t) * h + d],
                    want,
                    &format!("token {t} dim {d}"),
                );
            }
        }
    }
    eprintln!("largest difference from the reference: {worst:e}");
}

#[test]
fn a_missing_model_says_how_to_fetch_it() {
    let dir = tempfile::tempdir().unwrap();
    let err = MiniLm::load(dir.path(), &Device::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("scripts/fetch-minilm.sh"), "{err}");
    let err = MiniLmTokenizer::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("scripts/fetch-minilm.sh"), "{err}");
}
