//! End-to-end tests of the `dit-infer` command on a small untrained model:
//! what a user gets, and the one-line errors for what a user can get wrong.

use std::path::Path;
use std::process::{Command, Output};

use burn::tensor::Device;
use dit_data::vocabulary;
use dit_model::run::{AUTOENCODER_FILE, DIT_FILE, micro_spec, write_untrained_run};
use dit_model::{TextEncoderConfig, Tokenizer};

fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("dit-infer-{name}-"))
        .tempdir()
        .unwrap()
}

/// A run folder with an untrained 4-frame model (what matters here is the plumbing).
fn run_folder(name: &str) -> tempfile::TempDir {
    let folder = temp_dir(name);
    let dir = folder.path();
    let device = Device::default();
    let tokenizer = Tokenizer::new(&vocabulary());
    let text = TextEncoderConfig::new(tokenizer.num_ids())
        .with_width(16)
        .with_depth(1)
        .with_heads(2)
        .with_max_words(12);
    let spec = micro_spec(text, false);
    write_untrained_run(dir, &spec, &tokenizer, &device).unwrap();
    folder
}

fn dit_infer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dit-infer"))
        .args(args)
        .output()
        .unwrap()
}

fn gif_frames(path: &Path) -> (u16, u16, usize) {
    let mut options = gif::DecodeOptions::new();
    options.set_color_output(gif::ColorOutput::RGBA);
    let mut decoder = options
        .read_info(std::fs::File::open(path).unwrap())
        .unwrap();
    let (w, h) = (decoder.width(), decoder.height());
    let mut frames = 0;
    while decoder.read_next_frame().unwrap().is_some() {
        frames += 1;
    }
    (w, h, frames)
}

#[test]
fn writes_a_gif_with_the_configured_frames_and_size() {
    let run_guard = run_folder("gif");
    let run = run_guard.path().to_path_buf();
    let out = run.join("clip.gif");
    let sheet = run.join("sheet.png");
    let frames = run.join("frames");
    let o = dit_infer(&[
        "--checkpoint",
        run.to_str().unwrap(),
        "--prompt",
        "A red circle, moving right!",
        "--out",
        out.to_str().unwrap(),
        "--steps",
        "3",
        "--scale",
        "1",
        "--sheet",
        sheet.to_str().unwrap(),
        "--frames",
        frames.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(gif_frames(&out), (32, 32, 4));
    assert!(sheet.is_file());
    assert_eq!(std::fs::read_dir(&frames).unwrap().count(), 4);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("wrote") && stdout.contains("sampled 1 clip(s) with 3 DDIM"),
        "{stdout}"
    );
}

#[test]
fn batch_mode_writes_one_gif_per_line_and_matches_single_prompts() {
    let run_guard = run_folder("batch");
    let run = run_guard.path().to_path_buf();
    let prompts = run.join("prompts.txt");
    std::fs::write(
        &prompts,
        "a red circle moving right\n\na blue box sliding to the left\n",
    )
    .unwrap();
    let out_dir = run.join("out");
    let o = dit_infer(&[
        "--checkpoint",
        run.to_str().unwrap(),
        "--prompts-file",
        prompts.to_str().unwrap(),
        "--out-dir",
        out_dir.to_str().unwrap(),
        "--steps",
        "3",
        "--scale",
        "1",
        "--sampler",
        "ddpm",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(gif_frames(&out_dir.join("000.gif")).2, 4);
    assert_eq!(gif_frames(&out_dir.join("001.gif")).2, 4);
    assert!(!out_dir.join("002.gif").exists());
    // DDIM is deterministic: the same seed gives the same file, alone or in a batch.
    let single = run.join("single.gif");
    let args = |out: &str| {
        vec![
            "--checkpoint".to_string(),
            run.display().to_string(),
            "--prompt".into(),
            "a red circle moving right".into(),
            "--out".into(),
            out.to_string(),
            "--steps".into(),
            "3".into(),
            "--seed".into(),
            "5".into(),
        ]
    };
    let again = run.join("again.gif");
    for out in [&single, &again] {
        let o = Command::new(env!("CARGO_BIN_EXE_dit-infer"))
            .args(args(out.to_str().unwrap()))
            .output()
            .unwrap();
        assert!(o.status.success());
    }
    assert_eq!(
        std::fs::read(&single).unwrap(),
        std::fs::read(&again).unwrap()
    );
}

/// Runs `dit-infer` expecting a one-line error containing `needle`.
fn expect_error(args: &[&str], needle: &str) {
    let o = dit_infer(args);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{args:?} succeeded");
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    assert!(
        stderr.contains(needle),
        "{args:?}: expected {needle:?} in {stderr}"
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() <= 3, "{args:?}: not a short error: {stderr}");
}

#[test]
fn bad_input_is_a_clear_error() {
    let run_guard = run_folder("errors");
    let run = run_guard.path().to_path_buf();
    let ckpt = run.to_str().unwrap().to_string();
    let out = run.join("x.gif");
    let out = out.to_str().unwrap();
    let long = "red ".repeat(5000);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--prompt", "a purple circle moving right"],
            "unknown word(s) \"purple\"",
        ),
        (vec!["--prompt", ""], "the prompt is empty"),
        (vec!["--prompt", "   "], "the prompt is empty"),
        (vec!["--prompt", "?!..."], "the prompt is empty"),
        (
            vec!["--prompt", "a red 🚀 moving up"],
            "unknown word(s) \"🚀\"",
        ),
        (vec!["--prompt", &long], "at most 12 are allowed"),
        (
            vec!["--prompt", "a red circle moving up", "--steps", "0"],
            "--steps must be between 1 and 1000",
        ),
        (
            vec!["--prompt", "a red circle moving up", "--cfg", "-1"],
            "--cfg must be a finite number",
        ),
        (
            vec!["--prompt", "a red circle moving up", "--eta", "2"],
            "--eta must be in [0, 1]",
        ),
        (
            vec!["--prompt", "a red circle moving up", "--sampler", "heun"],
            "unknown sampler",
        ),
    ];
    for (args, needle) in cases {
        let mut all = vec!["--checkpoint", &ckpt, "--out", out];
        all.extend(args);
        expect_error(&all, needle);
    }
    let prompt = ["--prompt", "a red circle moving up"];
    expect_error(
        &[
            &["--checkpoint", "/nonexistent/run", "--out", out][..],
            &prompt,
        ]
        .concat(),
        "does not exist",
    );
    expect_error(
        &[
            &["--checkpoint", &ckpt, "--out", "/nonexistent/dir/x.gif"][..],
            &prompt,
        ]
        .concat(),
        "does not exist",
    );
}

/// Damages a run folder.
type Breaker = fn(&Path);

#[test]
fn broken_checkpoints_are_a_clear_error() {
    let prompt = ["--prompt", "a red circle moving up", "--steps", "2"];
    let cases: [(&str, Breaker, &str); 5] = [
        (
            "missing-file",
            |d| std::fs::remove_file(d.join(DIT_FILE)).unwrap(),
            "has no dit_ema.bpk",
        ),
        (
            "random-bytes",
            |d| std::fs::write(d.join(DIT_FILE), b"\x00\x01not a burnpack file at all").unwrap(),
            "dit_ema.bpk",
        ),
        (
            "truncated",
            |d| {
                let bytes = std::fs::read(d.join(AUTOENCODER_FILE)).unwrap();
                std::fs::write(d.join(AUTOENCODER_FILE), &bytes[..bytes.len() / 2]).unwrap();
            },
            "autoencoder.bpk",
        ),
        (
            "other-config",
            |d| {
                let text = std::fs::read_to_string(d.join("model.json")).unwrap();
                std::fs::write(
                    d.join("model.json"),
                    text.replace("\"hidden\": 32", "\"hidden\": 48"),
                )
                .unwrap();
            },
            "dit_ema.bpk",
        ),
        (
            "corrupt-spec",
            |d| std::fs::write(d.join("model.json"), "{ not json").unwrap(),
            "model.json",
        ),
    ];
    for (name, break_it, needle) in cases {
        let run_guard = run_folder(name);
        let run = run_guard.path().to_path_buf();
        break_it(&run);
        let out = run.join("x.gif");
        expect_error(
            &[
                &[
                    "--checkpoint",
                    run.to_str().unwrap(),
                    "--out",
                    out.to_str().unwrap(),
                ][..],
                &prompt,
            ]
            .concat(),
            needle,
        );
    }
}

/// The README's first command, end to end: the shipped checkpoint turns the prompt into
/// a clip that the pixel judge reads as that prompt.
#[test]
fn the_shipped_checkpoint_generates_what_the_prompt_says() {
    let dir = temp_dir("shipped");
    let out = dir.path().join("out.gif");
    let prompt = "a red circle moving right";
    let o = dit_infer(&["--prompt", prompt, "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // 8 frames of 32×32, written magnified ×4.
    assert_eq!(gif_frames(&out), (128, 128, 8));
    let clip = dit_data::video::read_clip(&out, 8, 32).unwrap();
    let wanted = dit_data::Composition::parse_caption(prompt).unwrap();
    let judged = dit_data::judge_clip(&clip);
    assert!(
        judged.matches(&wanted).all(),
        "judged {:?}, {:?}, {:?}",
        judged.colour,
        judged.shape,
        judged.direction
    );
}

/// Lists the files of `dir` that are not hidden (temporary files start with a dot).
fn visible_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    files.sort();
    files
}

/// Every option is checked before anything is written: a failed run leaves no file, and
/// never replaces a good one.
#[test]
fn failed_runs_leave_no_output_and_keep_a_good_one() {
    let run_guard = run_folder("atomic");
    let run = run_guard.path().to_path_buf();
    let ckpt = run.to_str().unwrap().to_string();
    let out_dir = run.join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let prompt = ["--prompt", "a red circle moving up"];
    let cases: [(&[&str], &str, &str); 6] = [
        (&["--cfg", "nan"], "x.gif", "--cfg must be a finite number"),
        (
            &["--steps", "5000"],
            "x.gif",
            "--steps must be between 1 and 1000",
        ),
        (&["--eta", "2"], "x.gif", "--eta must be in [0, 1]"),
        (&[], "x.txt", "unknown clip format `txt`"),
        (&[], "x", "has no extension"),
        (&["--sheet", "s.gif"], "x.gif", "must be a .png file"),
    ];
    for (options, name, needle) in cases {
        let out = out_dir.join(name);
        let mut args = vec!["--checkpoint", &ckpt, "--out", out.to_str().unwrap()];
        args.extend(prompt);
        args.extend(options);
        expect_error(&args, needle);
        assert_eq!(
            visible_files(&out_dir),
            Vec::<std::path::PathBuf>::new(),
            "{name}"
        );
    }
    // A good clip, then a failed run aimed at the same file: the clip stays as it was.
    let good = out_dir.join("good.gif");
    let mut args = vec!["--checkpoint", &ckpt, "--out", good.to_str().unwrap()];
    args.extend(prompt);
    args.extend(["--steps", "2"]);
    assert!(dit_infer(&args).status.success());
    let before = std::fs::read(&good).unwrap();
    args.extend(["--cfg", "nan"]);
    expect_error(&args, "--cfg must be a finite number");
    assert_eq!(std::fs::read(&good).unwrap(), before);
    // A .png output is the clip's frames side by side.
    let strip = out_dir.join("strip.png");
    let mut args = vec!["--checkpoint", &ckpt, "--out", strip.to_str().unwrap()];
    args.extend(prompt);
    args.extend(["--steps", "2", "--scale", "1"]);
    assert!(dit_infer(&args).status.success());
    let png = image::open(&strip).unwrap();
    // 4 frames of 32×32 with a 2-pixel gutter around each.
    assert_eq!((png.width(), png.height()), (4 * 34 + 2, 36));
}

/// A batch killed at any moment leaves only complete clips under their names.
#[test]
fn a_killed_batch_leaves_only_complete_clips() {
    let run_guard = run_folder("killed");
    let run = run_guard.path().to_path_buf();
    let prompts = run.join("prompts.txt");
    std::fs::write(&prompts, "a red circle moving right\n".repeat(2000)).unwrap();
    for (attempt, delay_ms) in [150u64, 400, 900].into_iter().enumerate() {
        let out_dir = run.join(format!("out-{attempt}"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_dit-infer"))
            .args(["--checkpoint", run.to_str().unwrap()])
            .args(["--prompts-file", prompts.to_str().unwrap()])
            .args(["--out-dir", out_dir.to_str().unwrap()])
            .args(["--steps", "1", "--scale", "1", "--batch-size", "4"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        if !out_dir.exists() {
            continue;
        }
        for file in visible_files(&out_dir) {
            assert_eq!(
                gif_frames(&file).2,
                4,
                "{} is not a whole clip",
                file.display()
            );
        }
    }
}

/// A prompts file of 50,000 lines is generated chunk by chunk in bounded memory: the run
/// succeeds under a 4 GiB address-space limit and writes every clip.
#[test]
fn fifty_thousand_prompts_in_bounded_memory() {
    let run_guard = run_folder("many");
    let run = run_guard.path().to_path_buf();
    let prompts = run.join("prompts.txt");
    let lines = [
        "a red circle moving right\n",
        "a blue square moving up\n",
        "a green triangle moving left\n",
    ];
    std::fs::write(
        &prompts,
        lines
            .iter()
            .cycle()
            .take(50_000)
            .copied()
            .collect::<String>(),
    )
    .unwrap();
    let out_dir = run.join("out");
    let o = Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 4194304 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_dit-infer"))
        .args(["--checkpoint", run.to_str().unwrap()])
        .args(["--prompts-file", prompts.to_str().unwrap()])
        .args(["--out-dir", out_dir.to_str().unwrap()])
        .args([
            "--steps",
            "1",
            "--cfg",
            "1",
            "--scale",
            "1",
            "--batch-size",
            "512",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let files = visible_files(&out_dir);
    assert_eq!(files.len(), 50_000);
    assert_eq!(files[0].file_name().unwrap(), "00000.gif");
    assert_eq!(gif_frames(&files[49_999]).2, 4);
}

/// What Debian's `ffprobe` reads of a video file's first video stream: codec, width,
/// height, frame rate and counted frames; `None` where ffprobe is not installed (CI
/// installs it, and there a missing ffprobe fails the test).
fn ffprobe(path: &Path) -> Option<String> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-count_frames"])
        .args([
            "-show_entries",
            "stream=codec_name,width,height,r_frame_rate,nb_read_frames",
        ])
        .args(["-of", "csv=p=0"])
        .arg(path)
        .output();
    match out {
        Ok(o) => {
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            Some(String::from_utf8_lossy(&o.stdout).trim().to_string())
        }
        Err(_) if std::env::var_os("CI").is_none() => {
            eprintln!("ffprobe is not installed: the independent reader check is skipped");
            None
        }
        Err(e) => panic!("CI must have ffprobe (.ci/run installs ffmpeg): {e}"),
    }
}

/// `--out clip.mp4` and `--format mp4` write H.264 in MP4 that an independent reader takes:
/// ffprobe sees the codec, the size, the rate and every frame.
#[test]
fn mp4_outputs_are_h264_that_ffprobe_reads() {
    let run_guard = run_folder("mp4");
    let run = run_guard.path().to_path_buf();
    let out = run.join("clip.mp4");
    let o = dit_infer(&[
        "--checkpoint",
        run.to_str().unwrap(),
        "--prompt",
        "a red circle moving right",
        "--out",
        out.to_str().unwrap(),
        "--steps",
        "2",
        "--fps",
        "10",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // 4 frames of 32×32, magnified ×4.
    let clip = dit_data::video::read_clip(&out, 4, 32).unwrap();
    assert_eq!(clip.frames, 4);
    if let Some(probe) = ffprobe(&out) {
        assert_eq!(probe, "h264,128,128,10/1,4");
    }
    let prompts = run.join("prompts.txt");
    std::fs::write(
        &prompts,
        "a red circle moving right\na blue square moving up\n",
    )
    .unwrap();
    let out_dir = run.join("batch");
    let o = dit_infer(&[
        "--checkpoint",
        run.to_str().unwrap(),
        "--prompts-file",
        prompts.to_str().unwrap(),
        "--out-dir",
        out_dir.to_str().unwrap(),
        "--format",
        "mp4",
        "--steps",
        "2",
        "--scale",
        "1",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for name in ["000.mp4", "001.mp4"] {
        if let Some(probe) = ffprobe(&out_dir.join(name)) {
            assert_eq!(probe, "h264,32,32,8/1,4");
        }
    }
}

#[test]
fn trace_writes_a_page_and_refuses_bad_options() {
    let dir = temp_dir("trace");
    let out = dir.path().join("trace");
    let out_arg = out.to_str().unwrap();
    let o = dit_infer(&[
        "trace",
        "--prompt",
        "a magenta triangle moving down",
        "--out",
        out_arg,
        "--steps",
        "10",
        "--token",
        "1,0,3",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert_eq!(html.matches("<section>").count(), 11);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("trace.json")).unwrap()).unwrap();
    assert_eq!(json["attention"]["token"], serde_json::json!([1, 0, 3]));
    assert_eq!(json["sampling"]["steps"], 10);
    // A clip from outside: x264's default output (High profile, B-frames).
    let x264 =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/mp4/high-bframes.mp4");
    let given = dir.path().join("given");
    let o = dit_infer(&[
        "trace",
        "--prompt",
        "a red circle moving left",
        "--video",
        x264.to_str().unwrap(),
        "--out",
        given.to_str().unwrap(),
        "--steps",
        "2",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(given.join("index.html").is_file());
    for (args, needle) in [
        (vec!["--token", "1,2"], "expected FRAME,ROW,COLUMN"),
        (vec!["--token", "0,4,0"], "outside the patch grid"),
        (vec!["--t", "5000"], "--t must be below 1000"),
        (vec!["--steps", "0"], "--steps must be between"),
    ] {
        let mut all = vec![
            "trace",
            "--prompt",
            "a red circle moving left",
            "--out",
            out_arg,
        ];
        all.extend(args);
        expect_error(&all, needle);
    }
    // The good trace is still there.
    assert!(out.join("index.html").is_file());
}
