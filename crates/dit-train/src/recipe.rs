//! The recipe: every stage the config lists (`[[stages]]`), in order, into one run
//! folder, resumable at any point.
//!
//! Each stage checkpoints as it goes (the autoencoder and decoder stages into
//! `train/stage-N/`, the DiT into `train/`); a finished stage is recorded in
//! `recipe.json` and its checkpoints removed. A run stopped anywhere and continued
//! with `--resume` skips the finished stages, continues the interrupted one from its
//! newest checkpoint, and ends with the same weights as a run that was never stopped:
//! every random draw of a stage is a function of the seed and the step.

use std::path::Path;
use std::time::Instant;

use anyhow::{Result, bail};
use burn::tensor::Device;
use dit_model::TrainedModel;
use dit_model::run::{RECIPE_FILE, TRAIN_DIR, stage_checkpoints, write_atomic};

use crate::checkpoint::latest_checkpoint;
use serde::{Deserialize, Serialize};

use crate::autoencoder::{self, DecoderRound};
use crate::config::{ExperimentConfig, Stage};
use crate::data::ClipSource;
use crate::fidelity::{FidelityLog, FidelityPoint, measure, measures_fidelity};
use crate::trainer::{self, DitReport, StageClock};

/// What a finished stage did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StageRecord {
    /// The stage's name (`autoencoder`, `decoder`, `dit`).
    pub stage: String,
    /// Its training seconds (including interrupted attempts it continued).
    pub seconds: f64,
    /// Its result in words, e.g. `PSNR 31.2 → 32.4 dB`.
    pub result: String,
    /// The autoencoder's reconstruction PSNR (dB) after the stage, for the stages that
    /// change it.
    pub psnr: Option<f64>,
    /// The CPU it ran on, with its core count (absent in older run folders).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
}

/// The finished stages of a run, in order (`recipe.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RecipeState {
    /// One record per finished stage.
    pub finished: Vec<StageRecord>,
}

impl RecipeState {
    /// Reads the state of a run folder (none finished when it has no `recipe.json`).
    pub fn read(run_dir: &Path) -> Result<Self> {
        let path = run_dir.join(RECIPE_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| anyhow::anyhow!("{} is not a recipe record: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => bail!("cannot read {}: {e}", path.display()),
        }
    }

    fn write(&self, run_dir: &Path) -> Result<()> {
        let json = serde_json::to_string_pretty(self).expect("records serialise to JSON");
        Ok(write_atomic(&run_dir.join(RECIPE_FILE), json.as_bytes())?)
    }

    /// Training seconds of all finished stages.
    pub fn seconds(&self) -> f64 {
        self.finished.iter().map(|s| s.seconds).sum()
    }
}

/// Runs the stages of `config` that `run_dir` has not finished, in order, on the first
/// of `devices` (the DiT's steps shared among all of them); returns the record of every
/// stage.
pub fn run(
    config: &ExperimentConfig,
    source: &ClipSource,
    run_dir: &Path,
    devices: &[Device],
) -> Result<RecipeState> {
    let Some(device) = devices.first() else {
        bail!("training needs a device");
    };
    let mut state = RecipeState::read(run_dir)?;
    let total = config.stages.len();
    for (done, stage) in state.finished.iter().zip(&config.stages) {
        if done.stage != stage.name() {
            bail!(
                "{} records a finished `{}` stage where the config lists `{}`: the run was made \
                 with another recipe",
                run_dir.join(RECIPE_FILE).display(),
                done.stage,
                stage.name()
            );
        }
    }
    if state.finished.len() > total {
        bail!(
            "{} records {} finished stages, the config lists {total}",
            run_dir.join(RECIPE_FILE).display(),
            state.finished.len()
        );
    }
    let finished = &config.stages[..state.finished.len()];
    let mut dit_trained = false;
    if let Some(index) = finished.iter().position(|s| *s == Stage::Dit) {
        dit_trained = true;
        // A finished DiT stage continues when the config now asks for more steps.
        let newest = latest_checkpoint(&run_dir.join(TRAIN_DIR))?;
        if newest.is_some_and(|(_, saved)| saved.step < config.dit_training.steps) {
            eprintln!(
                "stage {}/{total}: continue the DiT to {} steps",
                index + 1,
                config.dit_training.steps
            );
            let clock = StageClock {
                stage: index + 1,
                seconds_before: state.finished[..index].iter().map(|s| s.seconds).sum(),
            };
            let report = trainer::train(config, source, run_dir, devices, clock)?;
            state.finished[index] = dit_record(&report);
            state.write(run_dir)?;
        }
    }
    for (index, stage) in config.stages.iter().enumerate().skip(state.finished.len()) {
        let number = index + 1;
        eprintln!("stage {number}/{total}: {}", describe(stage));
        let checkpoints = stage_checkpoints(run_dir, number);
        let start = Instant::now();
        let record = match stage {
            Stage::Autoencoder => {
                FidelityLog::open(run_dir, number, 0)?;
                let report =
                    autoencoder::train(config, source, run_dir, device, Some(&checkpoints))?;
                StageRecord {
                    stage: stage.name().into(),
                    seconds: report.seconds + outside_loop(start, report.seconds),
                    result: format!(
                        "PSNR {:.2} dB, latent scale {:.4}{}",
                        report.psnr,
                        report.latent_scale,
                        report.reconstructed_class.map_or(String::new(), |r| format!(
                            "; class read on reconstructions of real clips {:.3} (ceiling {:.3})",
                            r.class, r.ceiling
                        ))
                    ),
                    psnr: Some(report.psnr),
                    machine: None,
                }
            }
            Stage::Decoder {
                steps,
                learning_rate,
                latent_noise,
                denoised_from,
            } => {
                let fidelity = FidelityLog::open(run_dir, number, 0)?;
                let round = DecoderRound {
                    steps: *steps,
                    learning_rate: *learning_rate,
                    latent_noise: *latent_noise,
                    denoised_from: *denoised_from,
                    decoder_steps_before: decoder_steps_before(config, index),
                    seconds_before: autoencoder_seconds(&state),
                    checkpoints: Some(checkpoints.clone()),
                };
                let (_, after) =
                    autoencoder::finetune_decoder(config, source, run_dir, device, &round)?;
                // From the record, not from the autoencoder on disk: a run stopped after
                // this stage saved its result, but before it was recorded, has the new one.
                let before = state.finished.iter().rev().find_map(|r| r.psnr);
                let trained = after.seconds - round.seconds_before;
                let mut seconds = trained + outside_loop(start, trained);
                if dit_trained && measures_fidelity(config) {
                    // The decoder changed what the trained DiT's samples look like.
                    let measured = Instant::now();
                    let point = measure_fidelity(
                        config,
                        run_dir,
                        device,
                        state.seconds() + seconds,
                        (number, stage.name(), *steps),
                    )?;
                    fidelity.append(&point)?;
                    seconds += measured.elapsed().as_secs_f64();
                }
                StageRecord {
                    stage: stage.name().into(),
                    seconds,
                    result: format!(
                        "PSNR {} → {:.2} dB",
                        before.map_or("?".into(), |p| format!("{p:.2}")),
                        after.psnr
                    ),
                    psnr: Some(after.psnr),
                    machine: None,
                }
            }
            Stage::Dit => {
                let clock = StageClock {
                    stage: number,
                    seconds_before: state.seconds(),
                };
                let report = trainer::train(config, source, run_dir, devices, clock)?;
                dit_trained = true;
                dit_record(&report)
            }
        };
        eprintln!(
            "stage {number}/{total} ({}): {} in {:.0} s",
            record.stage, record.result, record.seconds
        );
        let record = StageRecord {
            machine: Some(crate::memory::cpu_model()),
            ..record
        };
        state.finished.push(record);
        state.write(run_dir)?;
        if *stage != Stage::Dit {
            let _ = std::fs::remove_dir_all(&checkpoints);
        }
    }
    Ok(state)
}

/// The record of a finished DiT stage.
fn dit_record(report: &DitReport) -> StageRecord {
    StageRecord {
        stage: Stage::Dit.name().into(),
        seconds: report.seconds + report.encode_seconds,
        result: format!("{} steps, loss {:.4}", report.steps, report.final_loss),
        psnr: None,
        machine: None,
    }
}

/// Judges the run folder's model ([`measure`]) as a point of stage `(number, name, step)`
/// taken `seconds` into the run, and prints it.
fn measure_fidelity(
    config: &ExperimentConfig,
    run_dir: &Path,
    device: &Device,
    seconds: f64,
    (number, name, step): (usize, &str, usize),
) -> Result<FidelityPoint> {
    let model = TrainedModel::load(run_dir, device)?;
    let scores = measure(
        (&model).into(),
        config.dit_training.fidelity_sampling_steps,
        config.guidance,
        config.seed,
        device,
    )?;
    let point = FidelityPoint::new(seconds, number, name, step, scores);
    eprintln!("{}", point.summary());
    Ok(point)
}

/// Seconds of a stage spent outside its training loop (loading, evaluating): the time
/// since `start` less the loop's `trained` seconds (which, for a stage continued from a
/// checkpoint, include its earlier attempts: then this is an underestimate, at least 0).
fn outside_loop(start: Instant, trained: f64) -> f64 {
    (start.elapsed().as_secs_f64() - trained).max(0.0)
}

/// Decoder steps of the stages before stage `index` (0-based).
fn decoder_steps_before(config: &ExperimentConfig, index: usize) -> usize {
    config.stages[..index]
        .iter()
        .map(|s| match s {
            Stage::Decoder { steps, .. } => *steps,
            _ => 0,
        })
        .sum()
}

/// Training seconds of the finished autoencoder and decoder stages.
fn autoencoder_seconds(state: &RecipeState) -> f64 {
    state
        .finished
        .iter()
        .filter(|s| s.stage != Stage::Dit.name())
        .map(|s| s.seconds)
        .sum()
}

/// A stage in words.
fn describe(stage: &Stage) -> String {
    match stage {
        Stage::Autoencoder => "train the autoencoder".into(),
        Stage::Decoder {
            steps,
            learning_rate,
            latent_noise,
            denoised_from,
        } => format!(
            "fine-tune the decoder, {steps} steps, learning rate {learning_rate:e}, {}latent noise σ ≤ {latent_noise}",
            match denoised_from {
                0 => String::new(),
                t => format!("on the DiT's latents denoised from step ≤ {t}, "),
            }
        ),
        Stage::Dit => "train the DiT on the frozen encoder's latents".into(),
    }
}
