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

fn dit_train(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dit-train"))
        .args(args)
        .output()
        .unwrap()
}

/// A micro config with more DiT steps and frequent checkpoints.
fn long_micro(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(micro()).unwrap();
    let text = text
        .replacen(
            "[dit_training]\nsteps = 6\n",
            "[dit_training]\nsteps = 200\n",
            1,
        )
        .replacen("checkpoint_every = 3\n", "checkpoint_every = 2\n", 1);
    let path = dir.join("long.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn killed_training_resumes_to_the_same_weights() {
    let dir_guard = temp_dir("kill");
    let dir = dir_guard.path().to_path_buf();
    let config = long_micro(&dir);
    let straight = dir.join("straight");
    let killed = dir.join("killed");
    for run in [&straight, &killed] {
        let o = dit_train(&[
            "--config",
            config.to_str().unwrap(),
            "--out",
            run.to_str().unwrap(),
            "autoencoder",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    // Same autoencoder in both runs, so that only the DiT stage is compared.
    std::fs::copy(
        straight.join("autoencoder.bpk"),
        killed.join("autoencoder.bpk"),
    )
    .unwrap();
    std::fs::copy(
        straight.join("autoencoder.json"),
        killed.join("autoencoder.json"),
    )
    .unwrap();
    let o = dit_train(&["--resume", straight.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // SIGKILL at pseudo-random moments, resuming each time.
    let mut kills = 0;
    for delay_ms in [40u64, 170, 90, 260, 130, 60, 210] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dit-train"))
            .args(["--resume", killed.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            kills += 1;
        }
        child.wait().unwrap();
    }
    let o = dit_train(&["--resume", killed.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(kills >= 3, "only {kills} runs were killed before finishing");
    // Parameter values (burnpack files also hold parameter ids, which are random per process).
    let spec = dit_model::run::read_spec(&straight).unwrap();
    let device = burn::tensor::Device::default();
    let load = |path: PathBuf| {
        let dit = spec.model.dit.init(&device).unwrap();
        named_parameters(&load_module(dit, &path).unwrap())
    };
    for file in ["dit_ema.bpk", "train/step-0000200/dit.bpk"] {
        assert_eq!(
            load(straight.join(file)),
            load(killed.join(file)),
            "{file} differs"
        );
    }
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
                "autoencoder",
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
    let good = std::fs::read_to_string(micro()).unwrap();
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
            "is not a GIF file",
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
        let config = dir.join(name).join("config.toml");
        let text = good.replacen(
            "[data.shapes]",
            &format!(
                "[data]\nfolder = {:?}\n\n[data.shapes]",
                folder.display().to_string()
            ),
            1,
        );
        std::fs::write(&config, text).unwrap();
        let out = dir.join(name).join("run");
        expect_error(
            &[
                "--config",
                config.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
                "autoencoder",
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
