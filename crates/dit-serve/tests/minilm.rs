//! The studio serving a model that conditions on the frozen all-MiniLM-L6-v2 (an untrained
//! one: the plumbing is what matters): it says which encoder the model reads prompts with,
//! accepts words no training caption has, and refuses only an empty prompt. Needs the
//! weights (`scripts/fetch-minilm.sh`); skipped without them unless `DIT_REQUIRE_MINILM` is
//! set.

mod common;

use serde_json::json;

#[test]
fn a_minilm_model_takes_any_words_and_says_so() {
    let dir = dit_model::minilm::model_dir();
    if !dir.join("model.safetensors").is_file() && std::env::var_os("DIT_REQUIRE_MINILM").is_none()
    {
        eprintln!("skipped: no {} (scripts/fetch-minilm.sh)", dir.display());
        return;
    }
    let run = common::minilm_run();
    let (mut child, address, _) =
        common::start_studio(&["--checkpoint", run.path().to_str().unwrap()]);
    let agent = common::client();
    let vocabulary = common::get(&agent, &format!("http://{address}/api/vocabulary")).json();
    assert_eq!(vocabulary["text_encoder"], json!("all-MiniLM-L6-v2"));
    assert_eq!(vocabulary["any_text"], json!(true));
    assert_eq!(vocabulary["max_words"], json!(128));
    let url = format!("http://{address}/api/generate");
    let ok = common::post_json(&agent, &url, &json!({"prompt": "sora is sky", "steps": 2}));
    assert_eq!(ok.status, 200, "{}", ok.error());
    assert!(ok.body.starts_with(b"GIF89a"));
    let empty = common::post_json(&agent, &url, &json!({"prompt": "   ", "steps": 2}));
    assert_eq!(empty.status, 400);
    child.kill().unwrap();
    child.wait().unwrap();
}
