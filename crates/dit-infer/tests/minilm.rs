//! `dit-infer` on a model that conditions on the frozen all-MiniLM-L6-v2: any text is a
//! prompt (the trained encoder's vocabulary check does not apply), long text is cut with a
//! note, and a missing model folder is a one-line error saying how to fetch it. Needs the
//! weights (`scripts/fetch-minilm.sh`); skipped without them unless `DIT_REQUIRE_MINILM` is
//! set.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use burn::tensor::Device;
use dit_data::vocabulary;
use dit_model::frozen_text::PretrainedText;
use dit_model::run::{micro_spec, write_untrained_run};
use dit_model::{TextEncoderConfig, Tokenizer};

fn model_dir() -> Option<PathBuf> {
    let dir = dit_model::minilm::model_dir();
    if !dir.join("model.safetensors").is_file() && std::env::var_os("DIT_REQUIRE_MINILM").is_none()
    {
        eprintln!("skipped: no {} (scripts/fetch-minilm.sh)", dir.display());
        return None;
    }
    Some(dir)
}

/// A run folder with an untrained 4-frame model conditioned on all-MiniLM-L6-v2.
fn run_folder() -> tempfile::TempDir {
    let folder = tempfile::Builder::new()
        .prefix("dit-infer-minilm-")
        .tempdir()
        .unwrap();
    let tokenizer = Tokenizer::new(&vocabulary());
    let text = TextEncoderConfig::new(tokenizer.num_ids())
        .with_width(16)
        .with_pretrained(Some(PretrainedText::MiniLmL6V2));
    let spec = micro_spec(text, true);
    write_untrained_run(folder.path(), &spec, &tokenizer, &Device::default()).unwrap();
    folder
}

fn dit_infer(args: &[&str], minilm_dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dit-infer"))
        .args(args)
        .env("DIT_MINILM_DIR", minilm_dir)
        .output()
        .unwrap()
}

#[test]
fn any_text_is_a_prompt_and_long_text_is_cut_with_a_note() {
    let Some(minilm) = model_dir() else { return };
    let run_guard = run_folder();
    let run = run_guard.path();
    let spec = std::fs::read_to_string(run.join("model.json")).unwrap();
    assert!(spec.contains("\"all-MiniLM-L6-v2\""), "{spec}");

    let out = run.join("sora.gif");
    let args = |prompt: &'static str, out: &Path| -> Vec<String> {
        [
            "--checkpoint",
            run.to_str().unwrap(),
            "--prompt",
            prompt,
            "--steps",
            "2",
            "--out",
            out.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec()
    };
    let run_with = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        dit_infer(&args, &minilm)
    };
    // Words no Moving Shapes caption has, punctuation and an emoji.
    let o = run_with(args(
        "sora is sky — a maroon globe, gliding north! 🚀",
        &out,
    ));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::metadata(&out).unwrap().len() > 0);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!stderr.contains("note:"), "{stderr}");

    // The same prompt and seed make the same bytes.
    let again = run.join("again.gif");
    let o = run_with(args(
        "sora is sky — a maroon globe, gliding north! 🚀",
        &again,
    ));
    assert!(o.status.success());
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&again).unwrap());

    // 150 words are more than 128 tokens: generated from the first 126 pieces, with a note.
    let long: &'static str = Box::leak(vec!["sky"; 150].join(" ").into_boxed_str());
    let o = run_with(args(long, &run.join("long.gif")));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("note: prompt 0 is longer than 128 tokens"),
        "{stderr}"
    );

    // Only a prompt without a word is refused.
    let o = run_with(args(" ?! ", &run.join("empty.gif")));
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("the prompt is empty"), "{stderr}");

    // A prompts file is checked before the first clip: nothing is written.
    let file = run.join("prompts.txt");
    std::fs::write(&file, "sora is sky\na maroon globe\n?!\n").unwrap();
    let clips = run.join("clips");
    let o = run_with(
        [
            "--checkpoint",
            run.to_str().unwrap(),
            "--prompts-file",
            file.to_str().unwrap(),
            "--out-dir",
            clips.to_str().unwrap(),
            "--steps",
            "2",
        ]
        .map(String::from)
        .to_vec(),
    );
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("prompt 2"), "{stderr}");
    assert!(!clips.exists() || std::fs::read_dir(&clips).unwrap().next().is_none());

    // The trace page reads the prompt as WordPiece tokens.
    let page = run.join("trace");
    let o = run_with(
        [
            "trace",
            "--checkpoint",
            run.to_str().unwrap(),
            "--prompt",
            "a red circle moving left",
            "--steps",
            "2",
            "--out",
            page.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let html = std::fs::read_to_string(page.join("index.html")).unwrap();
    assert!(
        html.contains("WordPiece") && html.contains("[CLS]"),
        "no WordPiece table"
    );
}

/// `eval --unseen-words` generates and judges the 144 unseen-word prompts and reports each
/// word; a model with its own vocabulary refuses the measurement in one line.
#[test]
fn eval_judges_the_unseen_word_prompts() {
    let Some(minilm) = model_dir() else { return };
    let run_guard = run_folder();
    let run = run_guard.path();
    let report = run.join("eval");
    let args = [
        "eval",
        "--unseen-words",
        "--checkpoint",
        run.to_str().unwrap(),
        "--seeds",
        "1",
        "--steps",
        "1",
        "--report-dir",
        report.to_str().unwrap(),
    ];
    let o = dit_infer(&args, &minilm);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("| colour: crimson |"), "{stdout}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("unseen.json")).unwrap())
            .unwrap();
    assert_eq!(json["verdicts"].as_array().unwrap().len(), 144);
    assert_eq!(json["train"]["clips"], 132);
    assert_eq!(json["held_out"]["clips"], 12);
    // 12 colour words, 6 nouns, 8 motion phrases, 2 templates.
    assert_eq!(json["words"].as_array().unwrap().len(), 28);

    let words_model = tempfile::tempdir().unwrap();
    let tokenizer = Tokenizer::new(&vocabulary());
    let text = TextEncoderConfig::new(tokenizer.num_ids())
        .with_width(16)
        .with_depth(1)
        .with_heads(2)
        .with_max_words(12);
    let spec = micro_spec(text, false);
    write_untrained_run(words_model.path(), &spec, &tokenizer, &Device::default()).unwrap();
    let mut args = args;
    args[3] = words_model.path().to_str().unwrap();
    let o = dit_infer(&args, &minilm);
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("unseen-word prompts need a model on a pretrained encoder"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

#[test]
fn a_missing_encoder_is_a_one_line_error_that_says_how_to_fetch_it() {
    let run_guard = run_folder();
    let run = run_guard.path();
    let out = run.join("x.gif");
    let o = dit_infer(
        &[
            "--checkpoint",
            run.to_str().unwrap(),
            "--prompt",
            "sora is sky",
            "--out",
            out.to_str().unwrap(),
        ],
        Path::new("/nonexistent/all-MiniLM-L6-v2"),
    );
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("all-MiniLM-L6-v2") && stderr.contains("scripts/fetch-minilm.sh"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(!out.exists());
}

/// The shipped `checkpoints/minilm`: a prompt in its captions' words comes out as asked (the
/// pixel judge reads its colour, shape and direction), and words it never saw still make a clip.
#[test]
fn the_shipped_minilm_checkpoint_draws_what_the_prompt_says() {
    let Some(minilm) = model_dir() else { return };
    let checkpoint = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../checkpoints/minilm");
    let dir = tempfile::Builder::new()
        .prefix("dit-infer-minilm-shipped-")
        .tempdir()
        .unwrap();
    for (prompt, judged) in [
        ("a blue circle moving left", true),
        ("the yellow triangle slides down", true),
        ("sora is sky", false),
    ] {
        let out = dir.path().join("clip.gif");
        let o = dit_infer(
            &[
                "--checkpoint",
                checkpoint.to_str().unwrap(),
                "--prompt",
                prompt,
                "--out",
                out.to_str().unwrap(),
            ],
            &minilm,
        );
        assert!(
            o.status.success(),
            "{prompt:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let clip = dit_data::video::read_clip(&out, 8, 32).unwrap();
        if judged {
            let wanted = dit_data::Composition::parse_caption(prompt).unwrap();
            let verdict = dit_data::judge_clip(&clip);
            assert!(
                verdict.matches(&wanted).all(),
                "{prompt:?}: judged {:?}, {:?}, {:?}",
                verdict.colour,
                verdict.shape,
                verdict.direction
            );
        }
    }
}
