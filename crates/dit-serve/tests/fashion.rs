//! The studio serving a model of Moving Fashion (an untrained one of that data's vocabulary
//! and run spec, so no training or data set is needed): its example prompts are Moving
//! Fashion captions of training compositions, it generates from them, and a Moving Shapes
//! word is a 400 naming the word.

mod common;

use burn::tensor::Device;
use dit_data::fashion::{FashionComposition, fashion_vocabulary};
use dit_model::run::{micro_spec, write_untrained_run};
use dit_model::{TextEncoderConfig, Tokenizer, TrainingData};
use serde_json::json;

/// A run folder of an untrained Moving Fashion model: 4 frames of 32×32.
fn fashion_run() -> tempfile::TempDir {
    let folder = tempfile::Builder::new()
        .prefix("dit-serve-fashion-")
        .tempdir()
        .unwrap();
    let device = Device::default();
    let tokenizer = Tokenizer::new(&fashion_vocabulary());
    let text = TextEncoderConfig::new(tokenizer.num_ids())
        .with_width(16)
        .with_depth(1)
        .with_heads(2)
        .with_max_words(14);
    let spec = micro_spec(text, false).with_data(Some(TrainingData::MovingFashion));
    write_untrained_run(folder.path(), &spec, &tokenizer, &device).unwrap();
    folder
}

#[test]
fn a_moving_fashion_model_offers_its_own_prompts_and_refuses_shapes() {
    let run = fashion_run();
    let (mut child, address, _) =
        common::start_studio(&["--checkpoint", run.path().to_str().unwrap()]);
    let agent = common::client();
    let vocabulary = common::get(&agent, &format!("http://{address}/api/vocabulary")).json();
    let examples: Vec<String> = vocabulary["examples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect();
    assert!(examples.len() >= 8, "{examples:?}");
    for e in &examples {
        let c = FashionComposition::parse_caption(e).unwrap_or_else(|| panic!("{e}"));
        assert!(!c.is_held_out(), "{e}");
    }
    assert!(
        vocabulary["words"]
            .as_array()
            .unwrap()
            .contains(&json!("sneaker"))
    );
    let url = format!("http://{address}/api/generate");
    let ok = common::post_json(&agent, &url, &json!({"prompt": examples[0], "steps": 2}));
    assert_eq!(ok.status, 200, "{}", ok.error());
    assert!(ok.body.starts_with(b"GIF89a"));
    let bad = common::post_json(
        &agent,
        &url,
        &json!({"prompt": "a red circle moving right"}),
    );
    assert_eq!(bad.status, 400);
    assert!(bad.error().contains("\"circle\""), "{}", bad.error());
    child.kill().unwrap();
    child.wait().unwrap();
}
