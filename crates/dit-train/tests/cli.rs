//! The `dit-train` command: killed at random moments and resumed, it ends
//! with the same weights as an uninterrupted run; bad configs are one-line errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use dit_model::run::load_module;
use dit_model::weights::named_parameters;

fn micro() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/micro.toml")
}

fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("dit-train-cli-{name}-"))
        .tempdir()
        .unwrap()
}

/// Writes `dir/config.toml`: the micro recipe trained on the clip folder `folder`.
fn write_folder_config(dir: &Path, folder: &Path) -> PathBuf {
    let micro = std::fs::read_to_string(micro()).unwrap();
    let text = micro.replacen(
        "[data.shapes]",
        &format!(
            "[data]\nfolder = {:?}\n\n[data.shapes]",
            folder.display().to_string()
        ),
        1,
    );
    let config = dir.join("config.toml");
    std::fs::write(&config, text).unwrap();
    config
}

fn dit_train(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dit-train"))
        .args(args)
        .output()
        .unwrap()
}

/// The micro recipe with every kind of stage (autoencoder, a noisy decoder round, the
/// DiT, a decoder round on the DiT's denoised latents), long enough and checkpointed
/// often enough to be killed inside each stage.
fn recipe_micro(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(micro()).unwrap();
    let text = text
        .replacen(
            "[autoencoder_training]\nsteps = 3\n",
            "[autoencoder_training]\nsteps = 40\n",
            1,
        )
        .replacen(
            "[dit_training]\nsteps = 6\n",
            "[dit_training]\nsteps = 60\n",
            1,
        )
        .replacen("checkpoint_every = 3\n", "checkpoint_every = 2\n", 1)
        .replacen("fidelity_every = 3\n", "fidelity_every = 20\n", 1);
    let stages = text.find("[[stages]]").unwrap();
    let text = format!(
        "{}{}",
        &text[..stages],
        r#"[[stages]]
stage = "autoencoder"

[[stages]]
stage = "decoder"
steps = 30
learning_rate = 0.001
latent_noise = 0.3

[[stages]]
stage = "dit"

[[stages]]
stage = "decoder"
steps = 30
learning_rate = 0.0005
latent_noise = 0.1
denoised_from = 300
"#
    );
    let path = dir.join("recipe.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// What must be equal between two runs of one recipe: the weights files byte for byte,
/// every parameter value (named, so a difference is readable), and every number of the logs
/// and reports except the times.
fn run_contents(run: &Path) -> Vec<(String, String)> {
    let spec = dit_model::run::read_spec(run).unwrap();
    let device = burn::tensor::Device::default();
    let mut contents = Vec::new();
    for file in [
        "autoencoder.bpk",
        "dit_ema.bpk",
        "train/step-0000060/dit.bpk",
    ] {
        let bytes = std::fs::read(run.join(file)).unwrap();
        let hash = dit_model::param_ids::fnv1a(&bytes);
        contents.push((
            format!("{file} (bytes)"),
            format!("{} bytes, FNV-1a {hash:016x}", bytes.len()),
        ));
    }
    let ae = spec.model.autoencoder.init(&device).unwrap();
    let ae = load_module(ae, &run.join("autoencoder.bpk")).unwrap();
    contents.push((
        "autoencoder.bpk".into(),
        format!("{:?}", named_parameters(&ae)),
    ));
    for file in ["dit_ema.bpk", "train/step-0000060/dit.bpk"] {
        let dit = spec.model.dit.init(&device).unwrap();
        let dit = load_module(dit, &run.join(file)).unwrap();
        contents.push((file.into(), format!("{:?}", named_parameters(&dit))));
    }
    // Loss logs: step and loss of each line (not the notes of resumptions, not the times).
    for file in ["autoencoder_loss.csv", "decoder_loss.csv", "loss.csv"] {
        let text = std::fs::read_to_string(run.join(file)).unwrap();
        let lines: Vec<String> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split(',').take(2).collect::<Vec<_>>().join(","))
            .collect();
        contents.push((file.into(), lines.join("\n")));
    }
    // fidelity.csv without its first column (seconds).
    let text = std::fs::read_to_string(run.join("fidelity.csv")).unwrap();
    let lines: Vec<&str> = text.lines().map(|l| l.split_once(',').unwrap().1).collect();
    contents.push(("fidelity.csv".into(), lines.join("\n")));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("autoencoder.json")).unwrap())
            .unwrap();
    contents.push((
        "autoencoder.json".into(),
        format!(
            "{} {} {} {}",
            report["psnr"], report["latent_scale"], report["steps"], report["decoder_steps"]
        ),
    ));
    let recipe: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("recipe.json")).unwrap()).unwrap();
    for stage in recipe["finished"].as_array().unwrap() {
        contents.push((
            "recipe.json".into(),
            format!("{} {}", stage["stage"], stage["result"]),
        ));
    }
    contents
}

/// Asserts two [`run_contents`] are equal, naming the files that differ.
fn assert_same(got: &[(String, String)], expected: &[(String, String)], what: &str) {
    let differ: Vec<String> = got
        .iter()
        .zip(expected)
        .filter(|(a, b)| a != b)
        .map(|(a, b)| {
            let short = |t: &str| t.chars().take(300).collect::<String>();
            format!(
                "{}:\n  got      {}\n  expected {}",
                a.0,
                short(&a.1),
                short(&b.1)
            )
        })
        .collect();
    let names = |entries: &[(String, String)]| -> Vec<String> {
        entries.iter().map(|(name, _)| name.clone()).collect()
    };
    assert!(
        differ.is_empty() && got.len() == expected.len(),
        "{what}: {}\n  entries got      {:?}\n  entries expected {:?}",
        differ.join("\n"),
        names(got),
        names(expected)
    );
}

#[test]
fn the_recipe_runs_every_stage_and_a_killed_run_resumes_bit_identically() {
    let dir_guard = temp_dir("recipe");
    let dir = dir_guard.path().to_path_buf();
    let config = recipe_micro(&dir);
    let fresh = |run: &Path| {
        vec![
            "--config".to_string(),
            config.to_str().unwrap().to_string(),
            "--out".to_string(),
            run.to_str().unwrap().to_string(),
        ]
    };
    let straight = dir.join("straight");
    let again = dir.join("again");
    for run in [&straight, &again] {
        let args = fresh(run);
        let o = dit_train(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{stderr}");
        for stage in 1..=4 {
            assert!(stderr.contains(&format!("stage {stage}/4 (")), "{stderr}");
        }
    }
    let expected = run_contents(&straight);
    assert_same(
        &run_contents(&again),
        &expected,
        "the same seed gave another run",
    );
    // Stages 1, 2 and 4 leave no checkpoints once finished; fidelity was measured during
    // the DiT (steps 20, 40, 60) and after the decoder round that follows it.
    assert!(!straight.join("train/stage-1").exists());
    let fidelity = std::fs::read_to_string(straight.join("fidelity.csv")).unwrap();
    let points: Vec<(&str, &str)> = fidelity
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[1], f[3])
        })
        .collect();
    assert_eq!(
        points,
        [("3", "20"), ("3", "40"), ("3", "60"), ("4", "30")],
        "{fidelity}"
    );
    assert!(straight.join("fidelity.png").is_file());

    let killed = dir.join("killed");
    let kills = kill_and_resume(&config, &killed);
    assert!(kills >= 4, "only {kills} runs were killed before finishing");
    assert_same(
        &run_contents(&killed),
        &expected,
        "the killed run ended elsewhere",
    );
}

/// Runs the four-stage recipe `config` into `killed`, killing it (SIGKILL) inside each
/// stage, as soon as its first checkpoint is written, and then at pseudo-random moments,
/// and resuming it each time until it finishes; returns how many runs were killed.
fn kill_and_resume(config: &Path, killed: &Path) -> usize {
    let fresh = vec![
        "--config".to_string(),
        config.to_str().unwrap().to_string(),
        "--out".to_string(),
        killed.to_str().unwrap().to_string(),
    ];
    let resume = vec!["--resume".to_string(), killed.to_str().unwrap().to_string()];
    let mut kills = 0;
    let mut start = |args: &[String], kill_when: &dyn Fn() -> bool, timeout_ms: u64| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dit-train"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let begun = std::time::Instant::now();
        while child.try_wait().unwrap().is_none() {
            if kill_when() || begun.elapsed() > Duration::from_millis(timeout_ms) {
                child.kill().unwrap();
                kills += 1;
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        child.wait().unwrap();
    };
    let never = || false;
    let exists = |path: &'static str| {
        let path = killed.join(path);
        move || path.exists()
    };
    start(&fresh, &exists("train/stage-1/latest"), 60_000);
    start(&resume, &exists("train/stage-2/latest"), 60_000);
    start(&resume, &exists("train/latest"), 60_000);
    start(&resume, &exists("train/stage-4/latest"), 60_000);
    for delay_ms in [150u64, 40, 260, 90] {
        start(&resume, &never, delay_ms);
    }
    let o = dit_train(&resume.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    kills
}

/// The recipe with each DiT step shared between two replicas (on the CPU's one device):
/// a run killed inside every stage ends bit-identical to one never stopped, and its losses
/// are the one-device run's up to the order in which gradients are summed.
#[test]
fn a_two_device_recipe_resumes_bit_identically_and_follows_the_one_device_run() {
    let dir_guard = temp_dir("two-devices");
    let dir = dir_guard.path().to_path_buf();
    let config = recipe_micro(&dir);
    let text = std::fs::read_to_string(&config).unwrap();
    let two = dir.join("two.toml");
    std::fs::write(
        &two,
        text.replacen("[dit_training]\n", "[dit_training]\ndevices = 2\n", 1),
    )
    .unwrap();
    let straight = train_straight(&two, &dir);
    assert_resumes_bit_identically(
        &two,
        &dir,
        &straight,
        "the killed two-device run ended elsewhere",
    );

    let one = dir.join("one");
    let o = dit_train(&[
        "--config",
        config.to_str().unwrap(),
        "--out",
        one.to_str().unwrap(),
        "--devices",
        "1",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let losses = |run: &Path| -> Vec<f64> {
        std::fs::read_to_string(run.join("loss.csv"))
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .skip(1)
            .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
            .collect()
    };
    let (a, b) = (losses(&one), losses(&straight));
    assert_eq!(a.len(), 60);
    assert_eq!(a.len(), b.len());
    for (step, (a, b)) in a.iter().zip(&b).enumerate() {
        assert!(
            (a - b).abs() <= 1e-3 * a.abs().max(1e-3),
            "step {}: loss {a} on one device, {b} on two",
            step + 1
        );
    }
}

/// Trains `config` into `dir/straight` in one uninterrupted run and returns that folder.
fn train_straight(config: &Path, dir: &Path) -> PathBuf {
    let straight = dir.join("straight");
    let o = dit_train(&[
        "--config",
        config.to_str().unwrap(),
        "--out",
        straight.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    straight
}

/// Runs `config` into `dir/killed`, killed inside every stage, and checks it ends as
/// `straight` did.
fn assert_resumes_bit_identically(config: &Path, dir: &Path, straight: &Path, what: &str) {
    let killed = dir.join("killed");
    let kills = kill_and_resume(config, &killed);
    assert!(kills >= 4, "only {kills} runs were killed before finishing");
    assert_same(&run_contents(&killed), &run_contents(straight), what);
}

/// The four-stage micro recipe on Moving Fashion (4 frames of a 32×32 canvas, the
/// photographs barely moving): it trains, measures its fidelity with the shipped
/// classifier, and a run killed inside every stage ends bit-identical to one never stopped.
/// Skipped without Fashion-MNIST, unless `DIT_REQUIRE_FASHION_MNIST` is set.
#[test]
fn a_moving_fashion_recipe_trains_and_a_killed_run_resumes_bit_identically() {
    if !Path::new(dit_data::idx::FASHION_MNIST_DIR).is_dir()
        && std::env::var_os("DIT_REQUIRE_FASHION_MNIST").is_none()
    {
        eprintln!("skipped: no Fashion-MNIST (apt-get install dataset-fashion-mnist)");
        return;
    }
    let dir_guard = temp_dir("fashion");
    let dir = dir_guard.path().to_path_buf();
    let text = std::fs::read_to_string(recipe_micro(&dir)).unwrap();
    let (data, rest) = (
        text.find("[data.shapes]").unwrap(),
        text.find("[model.autoencoder]").unwrap(),
    );
    let text = format!(
        "{}[data.fashion]\nframes = 4\nsize = 32\nmin_speed = 1.0\nmax_speed = 1.0\nparaphrase_probability = 0.5\n\n{}",
        &text[..data],
        &text[rest..]
    )
    .replacen("max_words = 12\n", "max_words = 14\n", 1)
    // The autoencoder learns through the shipped perceptual network, found from this
    // crate's folder as from anywhere.
    .replacen(
        "[autoencoder_training]\n",
        "[autoencoder_training]\nperceptual_weight = 10.0\nperceptual_network = \"checkpoints/fashion-features\"\n",
        1,
    );
    let config = dir.join("fashion.toml");
    std::fs::write(&config, text).unwrap();
    let straight = train_straight(&config, &dir);
    let spec = dit_model::run::read_spec(&straight).unwrap();
    assert_eq!(spec.training_data(), dit_model::TrainingData::MovingFashion);
    let vocab = std::fs::read_to_string(straight.join("vocab.json")).unwrap();
    assert!(
        vocab.contains("\"sneaker\"") && !vocab.contains("\"circle\""),
        "{vocab}"
    );
    // The autoencoder's reconstructions of real clips of test photographs are judged, next
    // to the clips themselves (the judge's ceiling, which no training changes).
    let report = dit_model::run::read_autoencoder_report(&straight).unwrap();
    let judged = report.reconstructed_class.expect("reconstructions judged");
    assert!(
        judged.ceiling > 0.85 && (0.0..=1.0).contains(&judged.class),
        "{judged:?}"
    );
    let recipe = std::fs::read_to_string(straight.join("recipe.json")).unwrap();
    assert!(
        recipe.contains("class read on reconstructions of real clips"),
        "{recipe}"
    );
    // Fidelity, judged by the classifier, at DiT steps 20, 40 and 60 and after the last stage.
    let fidelity = std::fs::read_to_string(straight.join("fidelity.csv")).unwrap();
    assert_eq!(fidelity.lines().count(), 5, "{fidelity}");
    assert_resumes_bit_identically(
        &config,
        &dir,
        &straight,
        "the killed Moving Fashion run ended elsewhere",
    );
}

/// The four-stage micro recipe with the DiT conditioned on the frozen all-MiniLM-L6-v2
/// (cross-attention to its token states): it trains, `model.json` names the encoder, and a
/// run killed inside every stage ends bit-identical to one never stopped (the captions'
/// features are encoded again on each resume). Skipped without the weights, unless
/// `DIT_REQUIRE_MINILM` is set.
#[test]
fn a_minilm_recipe_trains_and_a_killed_run_resumes_bit_identically() {
    if !dit_model::minilm::model_dir()
        .join("model.safetensors")
        .is_file()
        && std::env::var_os("DIT_REQUIRE_MINILM").is_none()
    {
        eprintln!("skipped: no all-MiniLM-L6-v2 (scripts/fetch-minilm.sh)");
        return;
    }
    let dir_guard = temp_dir("minilm");
    let dir = dir_guard.path().to_path_buf();
    let text = std::fs::read_to_string(recipe_micro(&dir))
        .unwrap()
        .replacen("cross_attention = false\n", "cross_attention = true\n", 1)
        .replacen(
            "[model.dit.text]\n",
            "[model.dit.text]\npretrained = \"all-MiniLM-L6-v2\"\n",
            1,
        );
    let config = dir.join("minilm.toml");
    std::fs::write(&config, text).unwrap();
    let straight = train_straight(&config, &dir);
    let spec = dit_model::run::read_spec(&straight).unwrap();
    assert_eq!(
        spec.model.dit.text.pretrained,
        Some(dit_model::frozen_text::PretrainedText::MiniLmL6V2)
    );
    let names = std::fs::read_to_string(straight.join("model.json")).unwrap();
    assert!(names.contains("\"all-MiniLM-L6-v2\""), "{names}");
    assert_resumes_bit_identically(
        &config,
        &dir,
        &straight,
        "the killed MiniLM run ended elsewhere",
    );
}

/// Waits until `run`'s lock file names `pid` (the process holds the lock), for up to 60 s.
fn wait_for_lock(run: &Path, pid: u32) {
    let start = std::time::Instant::now();
    let lock = run.join(dit_model::run::LOCK_FILE);
    while std::fs::read_to_string(&lock).ok() != Some(format!("{pid}\n")) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no lock by {pid}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_second_dit_train_on_a_folder_in_use_stops_at_once_and_a_killed_one_blocks_nothing() {
    let dir_guard = temp_dir("lock");
    let dir = dir_guard.path();
    let config = recipe_micro(dir);
    let run = dir.join("run");
    let (config, run_arg) = (config.to_str().unwrap(), run.to_str().unwrap());
    let spawn = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_dit-train"))
            .args(args)
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut first = spawn(&["--config", config, "--out", run_arg]);
    wait_for_lock(&run, first.id());
    // A second writer, resuming the folder or starting afresh in it, stops at once.
    for args in [
        vec!["--resume", run_arg],
        vec!["--config", config, "--out", run_arg],
    ] {
        let start = std::time::Instant::now();
        let o = dit_train(&args);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{stderr}");
        let error = stderr.lines().last().unwrap_or_default();
        assert!(
            error.starts_with("error: ")
                && error.contains(&format!("is in use by process {} (", first.id()))
                && error.contains("dit-train --config"),
            "{stderr}"
        );
        assert!(start.elapsed() < Duration::from_secs(10));
    }
    // SIGKILL leaves the lock file, but the kernel has released the lock: a resume goes on.
    first.kill().unwrap();
    first.wait().unwrap();
    let mut resumed = spawn(&["--resume", run_arg]);
    wait_for_lock(&run, resumed.id());
    resumed.kill().unwrap();
    resumed.wait().unwrap();
}

fn expect_error(args: &[&str], needle: &str) {
    let o = dit_train(args);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{args:?} succeeded");
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    assert!(
        stderr.contains(needle),
        "{args:?}: expected {needle:?} in {stderr}"
    );
}

#[test]
fn bad_configs_are_one_line_errors() {
    let dir_guard = temp_dir("configs");
    let dir = dir_guard.path().to_path_buf();
    let good = std::fs::read_to_string(micro()).unwrap();
    let cases = [
        ("invalid", "seed = [".to_string(), "is not valid TOML"),
        (
            "wrong-type",
            good.replacen("hidden = 32", "hidden = \"wide\"", 1),
            "invalid type",
        ),
        (
            "missing",
            good.replacen("hidden = 32\n", "", 1),
            "missing field `hidden`",
        ),
        (
            "zero",
            good.replacen("hidden = 32", "hidden = 0", 1),
            "model.dit.hidden",
        ),
        (
            "negative",
            good.replacen(
                "depth = 1\nheads = 2\nmlp_ratio",
                "depth = -1\nheads = 2\nmlp_ratio",
                1,
            ),
            "depth",
        ),
        (
            "heads",
            good.replacen("heads = 2\nmlp_ratio", "heads = 3\nmlp_ratio", 1),
            "must divide hidden",
        ),
        (
            "patch",
            good.replacen("patch_size = 2", "patch_size = 3", 1),
            "must divide latent_size",
        ),
        (
            "patch-frames",
            good.replacen("patch_frames = 1", "patch_frames = 3", 1),
            "must divide latent_frames",
        ),
        (
            "minilm-without-cross-attention",
            good.replacen(
                "[model.dit.text]\n",
                "[model.dit.text]\npretrained = \"all-MiniLM-L6-v2\"\n",
                1,
            ),
            "cross_attention` must be true with text.pretrained",
        ),
        (
            "unknown-encoder",
            good.replacen(
                "[model.dit.text]\n",
                "[model.dit.text]\npretrained = \"t5-xxl\"\n",
                1,
            ),
            "unknown variant `t5-xxl`, expected `all-MiniLM-L6-v2`",
        ),
        (
            "devices",
            good.replacen("[dit_training]\n", "[dit_training]\ndevices = 3\n", 1),
            "must split evenly between the 3 devices",
        ),
        (
            "no-devices",
            good.replacen("[dit_training]\n", "[dit_training]\ndevices = 0\n", 1),
            "dit_training.devices",
        ),
        (
            "level-shift",
            good.replacen("[dit_training]\n", "[dit_training]\nlevel_shift = 0.0\n", 1),
            "dit_training.level_shift",
        ),
        (
            "unknown",
            good.replacen("seed = 0", "seed = 0\nlearning_rat = 1", 1),
            "learning_rat",
        ),
        (
            "latent",
            good.replacen("[model.dit]\n", "[model.dit]\nlatent_size = 16\n", 1),
            "dit.latent_size",
        ),
        (
            "perceptual-network-missing",
            good.replacen(
                "[autoencoder_training]\n",
                "[autoencoder_training]\nperceptual_weight = 1.0\nperceptual_network = \"/nonexistent/net\"\n",
                1,
            ),
            "train one with `cargo run --release -p dit-train -- --seed 1 classifier",
        ),
        (
            "perceptual-network-is-the-judge",
            good.replacen(
                "[autoencoder_training]\n",
                "[autoencoder_training]\nperceptual_weight = 1.0\nperceptual_network = \"checkpoints/fashion-classifier\"\n",
                1,
            ),
            "is the judge's own network",
        ),
        (
            "folder",
            good.replacen(
                "[data.shapes]",
                "[data]\nfolder = \"/nonexistent/clips\"\n\n[data.shapes]",
                1,
            ),
            "captions",
        ),
    ];
    for (name, text, needle) in cases {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        expect_error(
            &[
                "--config",
                path.to_str().unwrap(),
                "--out",
                dir.join(name).to_str().unwrap(),
            ],
            needle,
        );
    }
    expect_error(&["--config", "/nonexistent/config.toml"], "cannot be read");
    expect_error(&["--resume", dir.to_str().unwrap()], "is not a run folder");
}

/// Writes a 32×32 animated GIF of `frames` frames (a grey square moving right).
fn write_gif(path: &Path, frames: usize) {
    let mut clip = dit_data::Clip::black(frames, 32, 32);
    for f in 0..frames {
        for y in 8..20 {
            for x in 2 * f + 4..2 * f + 16 {
                clip.set_pixel(f, y, x, [200, 200, 200]);
            }
        }
    }
    dit_data::video::write_gif(&clip, path, 1, 10).unwrap();
}

#[test]
fn bad_data_folders_are_one_line_errors() {
    let dir_guard = temp_dir("folders");
    let dir = dir_guard.path().to_path_buf();
    let line = |video: &str| {
        format!("{{\"video\": \"{video}\", \"caption\": \"a grey box moving right\"}}\n")
    };
    // (case, captions.jsonl, files to write: (name, frames or None for junk bytes), expected text)
    type Files = &'static [(&'static str, Option<usize>)];
    let cases: [(&str, String, Files, &str); 5] = [
        (
            "malformed",
            "{\"video\": \"a.gif\", \"caption\"\n".into(),
            &[],
            "malformed JSON line",
        ),
        ("missing-video", line("nowhere.gif"), &[], "does not exist"),
        (
            "not-gif",
            line("a.gif"),
            &[("a.gif", None)],
            "is not a GIF or MP4 file",
        ),
        (
            "few-frames",
            line("a.gif"),
            &[("a.gif", Some(2))],
            "has 2 frames, the clips need at least 4",
        ),
        ("empty", String::new(), &[], "lists no clips"),
    ];
    for (name, captions, files, needle) in cases {
        let folder = dir.join(name).join("clips");
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("captions.jsonl"), captions).unwrap();
        for (file, frames) in files {
            match frames {
                Some(n) => write_gif(&folder.join(file), *n),
                None => std::fs::write(folder.join(file), b"not a picture at all").unwrap(),
            }
        }
        let config = write_folder_config(&dir.join(name), &folder);
        let out = dir.join(name).join("run");
        expect_error(
            &[
                "--config",
                config.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
            needle,
        );
    }
}

/// Sets every float parameter to NaN.
struct Poison;

impl burn::module::ModuleMapper for Poison {
    fn map_float<const D: usize>(
        &mut self,
        param: burn::module::Param<burn::tensor::Tensor<D>>,
    ) -> burn::module::Param<burn::tensor::Tensor<D>> {
        param.map(|t| t.mul_scalar(f32::NAN))
    }
}

#[test]
fn a_nan_loss_stops_training_and_keeps_the_last_checkpoint() {
    let dir_guard = temp_dir("nan");
    let dir = dir_guard.path().to_path_buf();
    let run = dir.join("run");
    let text = std::fs::read_to_string(micro()).unwrap().replacen(
        "[dit_training]\nsteps = 6\n",
        "[dit_training]\nsteps = 3\n",
        1,
    );
    let config = dir.join("micro.toml");
    std::fs::write(&config, text).unwrap();
    let o = dit_train(&[
        "--config",
        config.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // A poisoned autoencoder makes every latent, and so the loss of step 4, NaN.
    let spec = dit_model::run::read_spec(&run).unwrap();
    let device = burn::tensor::Device::default();
    let ae = spec.model.autoencoder.init(&device).unwrap();
    let ae = load_module(ae, &run.join("autoencoder.bpk")).unwrap();
    use burn::module::Module;
    dit_model::run::save_module(&ae.map(&mut Poison), &run.join("autoencoder.bpk")).unwrap();

    let o = dit_train(&["--resume", run.to_str().unwrap(), "--dit-steps", "6"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("the loss became NaN at step 4") && stderr.contains("last good checkpoint"),
        "{stderr}"
    );
    // The step-3 checkpoint is still the newest, complete and loadable.
    let latest = std::fs::read_to_string(run.join("train/latest")).unwrap();
    assert_eq!(latest.trim(), "step-0000003");
    let dit = spec.model.dit.init(&device).unwrap();
    let loaded = load_module(dit, &run.join("train/step-0000003/dit.bpk")).unwrap();
    assert!(
        named_parameters(&loaded)
            .iter()
            .all(|(_, values)| values.iter().all(|v| v.is_finite()))
    );
    assert!(!run.join("train/step-0000004").exists());
}

/// CRC-32 (ISO-HDLC, the one PNG chunks carry) of `bytes`.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A 70-byte PNG whose header claims `side × side` RGB pixels.
fn png_claiming(side: u32) -> Vec<u8> {
    let chunk = |kind: &[u8], data: &[u8]| {
        let mut out = (data.len() as u32).to_be_bytes().to_vec();
        let body = [kind, data].concat();
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32(&body).to_be_bytes());
        out
    };
    let mut header = side.to_be_bytes().to_vec();
    header.extend_from_slice(&side.to_be_bytes());
    header.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB
    let empty_zlib = [0x78, 0x9C, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01];
    [
        b"\x89PNG\r\n\x1a\n".to_vec(),
        chunk(b"IHDR", &header),
        chunk(b"IDAT", &empty_zlib),
        chunk(b"IEND", &[]),
    ]
    .concat()
}

/// A GIF with a `width × height` canvas and `frames` frames of one black pixel each.
fn gif_of(width: u16, height: u16, frames: usize) -> Vec<u8> {
    let mut out = b"GIF89a".to_vec();
    out.extend_from_slice(&width.to_le_bytes());
    out.extend_from_slice(&height.to_le_bytes());
    out.extend_from_slice(&[0x80, 0, 0]); // a global table of 2 colours
    out.extend_from_slice(&[0, 0, 0, 255, 255, 255]);
    for _ in 0..frames {
        out.extend_from_slice(&[0x2C, 0, 0, 0, 0, 1, 0, 1, 0, 0]); // a 1×1 frame at (0, 0)
        // LZW, minimum code size 2: clear, colour 0, end of information.
        out.extend_from_slice(&[2, 2, 0x44, 0x01, 0]);
    }
    out.push(0x3B);
    out
}

/// Clip files that are small on disk but would need gigabytes decoded are refused from
/// their headers, with a one-line error naming the file and the limit, under a 2 GiB
/// address-space limit and in a few seconds.
#[test]
fn oversized_clips_are_refused_before_decoding() {
    let dir_guard = temp_dir("oversized");
    let dir = dir_guard.path().to_path_buf();
    let canvas = "a canvas of 65535×65535 pixels is over the limit of 4096 pixels a side";
    let cases = [
        ("canvas-gif", "a.gif", gif_of(65535, 65535, 1), canvas),
        ("canvas-png", "frames/000.png", png_claiming(65535), canvas),
        (
            "many-frames",
            "a.gif",
            gif_of(1, 1, 100_000),
            "a clip of more than 10000 frames is over the limit of 10000 frames",
        ),
    ];
    for (name, file, bytes, needle) in cases {
        let folder = dir.join(name).join("clips");
        let path = folder.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &bytes).unwrap();
        if file.starts_with("frames/") {
            // As many frames as the clips need, so that the first is decoded.
            for i in 1..4 {
                std::fs::write(folder.join(format!("frames/00{i}.png")), &bytes).unwrap();
            }
        }
        let video = file.split('/').next().unwrap();
        std::fs::write(
            folder.join("captions.jsonl"),
            format!("{{\"video\": \"{video}\", \"caption\": \"a red circle moving right\"}}\n"),
        )
        .unwrap();
        let config = write_folder_config(&dir.join(name), &folder);
        let start = std::time::Instant::now();
        let o = Command::new("sh")
            .arg("-c")
            .arg("ulimit -v 2097152 && exec \"$0\" \"$@\"")
            .arg(env!("CARGO_BIN_EXE_dit-train"))
            .args(["--config", config.to_str().unwrap()])
            .args(["--out", dir.join(name).join("run").to_str().unwrap()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{name} succeeded");
        assert!(!stderr.contains("panicked"), "{name} panicked: {stderr}");
        assert!(stderr.contains(needle), "{name}: {stderr}");
        assert!(
            stderr.contains(file.rsplit('/').next().unwrap()),
            "{stderr}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{name}: {:?}",
            start.elapsed()
        );
    }
}

/// A config far too large for the machine is refused from its memory estimate, before
/// anything is trained or written.
#[test]
fn a_config_that_cannot_fit_is_refused_at_once() {
    let dir_guard = temp_dir("huge");
    let dir = dir_guard.path().to_path_buf();
    let text =
        std::fs::read_to_string(micro())
            .unwrap()
            .replacen("hidden = 32\n", "hidden = 65536\n", 1);
    let text = text.replacen(
        "depth = 1\nheads = 2\nmlp_ratio",
        "depth = 64\nheads = 2\nmlp_ratio",
        1,
    );
    let config = dir.join("huge.toml");
    std::fs::write(&config, text).unwrap();
    let run = dir.join("run");
    let start = std::time::Instant::now();
    let o = dit_train(&[
        "--config",
        config.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert!(
        stderr.contains("memory estimate:") && stderr.contains("TiB"),
        "{stderr}"
    );
    assert!(stderr.contains("this config needs about"), "{stderr}");
    assert!(!run.exists());
    // A small config passes the same check, and --max-memory lowers the limit.
    let o = dit_train(&[
        "--config",
        micro().to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--max-memory",
        "0.01",
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(stderr.contains("more than --max-memory"), "{stderr}");
    assert!(!run.exists());
    // The seed's scale (DiT-B/2 on 256×256 clips) prints its estimate and needs a large GPU.
    let seed_scale = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/dit-b-2-256.toml");
    let o = dit_train(&[
        "--config",
        seed_scale.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--max-memory",
        "32",
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        stderr.contains("memory estimate: 50.3 GiB (DiT: 133.2 M parameters"),
        "{stderr}"
    );
    assert!(
        stderr.contains("more than --max-memory (32.0 GiB)"),
        "{stderr}"
    );
    assert!(!run.exists());
}

/// An MP4 file with one track of `media` and `samples` samples of junk bytes.
fn mp4_with(media: mp4::MediaConfig, track_type: mp4::TrackType, samples: u32) -> Vec<u8> {
    let mut writer = mp4::Mp4Writer::write_start(
        std::io::Cursor::new(Vec::new()),
        &mp4::Mp4Config {
            major_brand: (*b"isom").into(),
            minor_version: 512,
            compatible_brands: vec![(*b"isom").into()],
            timescale: 1000,
        },
    )
    .unwrap();
    writer
        .add_track(&mp4::TrackConfig {
            track_type,
            timescale: 1000,
            language: "und".into(),
            media_conf: media,
        })
        .unwrap();
    for i in 0..samples {
        let sample = mp4::Mp4Sample {
            start_time: u64::from(i) * 125,
            duration: 125,
            rendering_offset: 0,
            is_sync: true,
            bytes: vec![0, 0, 0, 2, 0x65, 0x88].into(),
        };
        writer.write_sample(1, &sample).unwrap();
    }
    writer.write_end().unwrap();
    writer.into_writer().into_inner()
}

/// MP4 clips, good and bad, in a data folder read by `dit-train`: good ones train the micro
/// recipe; each bad one is a one-line error naming the file.
#[test]
fn mp4_clips_train_and_bad_mp4_files_are_one_line_errors() {
    let dir_guard = temp_dir("mp4");
    let dir = dir_guard.path().to_path_buf();
    // Moving Shapes clips written as MP4 (4 frames of 32×32, magnified ×2).
    let shapes = dit_data::MovingShapesConfig::new().with_frames(4);
    let clip = |caption: &str, index: usize| {
        let composition = dit_data::Composition::parse_caption(caption).unwrap();
        let mode = dit_data::CaptionMode::Canonical;
        dit_data::MovingShapes::clip_for(&shapes, composition, 0, index, mode).clip
    };
    let folder_with = |name: &str, files: &[(&str, Vec<u8>)]| {
        let folder = dir.join(name).join("clips");
        std::fs::create_dir_all(&folder).unwrap();
        let mut captions = String::new();
        for (file, bytes) in files {
            std::fs::write(folder.join(file), bytes).unwrap();
            captions +=
                &format!("{{\"video\": \"{file}\", \"caption\": \"a red ball rolling right\"}}\n");
        }
        std::fs::write(folder.join("captions.jsonl"), captions).unwrap();
        write_folder_config(&dir.join(name), &folder)
    };
    let mp4_of = |clip: &dit_data::Clip| {
        let path = dir.join("encoded.mp4");
        dit_data::video::write_mp4(clip, &path, 2, 8).unwrap();
        std::fs::read(path).unwrap()
    };

    let good: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| {
            (
                format!("{i}.mp4"),
                mp4_of(&clip("a red circle moving right", i)),
            )
        })
        .collect();
    let files: Vec<(&str, Vec<u8>)> = good.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    let config = folder_with("good", &files);
    // Every frame from the first, at the clips' own pace.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replacen("[data]\n", "[data]\nframe_stride = 1\n", 1),
    )
    .unwrap();
    let run = dir.join("good").join("run");
    let o = dit_train(&[
        "--config",
        config.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(run.join("dit_ema.bpk").is_file());
    // The closing hint samples a caption of the run's own (the shapes' words are not its own).
    assert!(
        stderr.contains("--prompt \"a red ball rolling right\""),
        "{stderr}"
    );

    let whole = good[0].1.clone();
    let avc = mp4::MediaConfig::AvcConfig(mp4::AvcConfig {
        width: 64,
        height: 64,
        seq_param_set: vec![0x67, 0x42, 0xC0, 0x0A],
        pic_param_set: vec![0x68, 0xCE, 0x3C, 0x80],
    });
    let hevc = mp4::MediaConfig::HevcConfig(mp4::HevcConfig {
        width: 64,
        height: 64,
    });
    let aac = mp4::MediaConfig::AacConfig(mp4::AacConfig::default());
    let two_frames = {
        let mut short = clip("a red circle moving right", 9);
        short.frames = 2;
        short.pixels.truncate(2 * 32 * 32 * 3);
        mp4_of(&short)
    };
    let cases: [(&str, Vec<u8>, &str); 6] = [
        (
            "truncated",
            whole[..whole.len() / 2].to_vec(),
            "cannot decode",
        ),
        (
            "random",
            b"\0\0\0\x18ftypisom not a movie at all".to_vec(),
            "cannot decode",
        ),
        (
            "audio-only",
            mp4_with(aac, mp4::TrackType::Audio, 4),
            "has no video track",
        ),
        (
            "no-frames",
            mp4_with(avc, mp4::TrackType::Video, 0),
            "has 0 frames, the clips need at least 4",
        ),
        (
            "hevc",
            mp4_with(hevc, mp4::TrackType::Video, 4),
            "not H.264",
        ),
        (
            "short",
            two_frames,
            "has 2 frames, the clips need at least 4",
        ),
    ];
    for (name, bytes, needle) in cases {
        let config = folder_with(name, &[("clip.mp4", bytes)]);
        let out = dir.join(name).join("run");
        expect_error(
            &[
                "--config",
                config.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
            needle,
        );
        let o = dit_train(&[
            "--config",
            config.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(stderr.contains("clip.mp4"), "{name}: {stderr}");
    }
}

#[test]
fn a_flow_recipe_trains_and_samples_with_euler() {
    let dir_guard = temp_dir("flow");
    let dir = dir_guard.path().to_path_buf();
    let text = std::fs::read_to_string(micro())
        .unwrap()
        .replacen("prediction = \"Epsilon\"", "prediction = \"Flow\"", 1)
        .replacen("min_snr_gamma = 5.0", "min_snr_gamma = 0.0", 1);
    let config = dir.join("flow.toml");
    std::fs::write(&config, &text).unwrap();
    let run = dir.join("run");
    let o = dit_train(&[
        "--config",
        config.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Its fidelity was measured with the Euler sampler, and it samples with it.
    assert!(run.join("fidelity.csv").is_file());
    let device = burn::tensor::Device::default();
    let model = dit_model::TrainedModel::load(&run, &device).unwrap();
    assert_eq!(model.spec.diffusion.prediction, dit_model::Prediction::Flow);
    let options = |sampler| dit_infer::pipeline::GenerateOptions {
        steps: 4,
        sampler,
        guidance: 2.0,
        seed: 0,
        prompt_offset: 0,
    };
    let prompts = ["a red circle moving right".to_string()];
    let generate = |sampler| {
        dit_infer::pipeline::generate(
            (&model).into(),
            &prompts,
            &options(sampler),
            &device,
            |_| {},
        )
    };
    let clips = generate(dit_model::sampler::SamplerKind::Euler).unwrap();
    assert_eq!((clips.len(), clips[0].frames, clips[0].width), (1, 4, 32));
    let err = generate(dit_model::sampler::SamplerKind::Ddim { eta: 0.0 }).unwrap_err();
    assert!(err.to_string().contains("--sampler euler"), "{err}");
    // A min-SNR weight is refused for a flow.
    let weighted = text.replacen("min_snr_gamma = 0.0", "min_snr_gamma = 5.0", 1);
    std::fs::write(&config, weighted).unwrap();
    expect_error(
        &[
            "--config",
            config.to_str().unwrap(),
            "--out",
            dir.join("w").to_str().unwrap(),
        ],
        "dit_training.min_snr_gamma",
    );
}
