//! Prompt fidelity on Moving Fashion (docs/moving-fashion.md): generate clips for all 240
//! compositions, in the canonical caption and three designed paraphrases each, and judge
//! them with the photograph classifier (`dit_data::fashion_judge`), separately for the 220
//! training compositions and the 20 held-out ones, per class (with a confusion table) and
//! per phrasing group.
//!
//! A classifier is not perfect, so class accuracy is read against its **ceiling**: the
//! judge's class accuracy on real clips of the test photographs, which no model trained on.
//! The same real clips, through the autoencoder, measure how much of a photograph the
//! latent keeps (PSNR, and the judge's class accuracy on the reconstructions).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::tensor::{Device, Tensor, TensorData};
use dit_data::fashion::{FashionComposition, FashionPhrasing, Garment};
use dit_data::fashion_judge::{FashionJudgement, judge_fashion_clips};
use dit_data::moving_fashion::{MovingFashion, MovingFashionConfig};
use dit_data::{CaptionMode, Clip, Split, clip_to_tensor_data, psnr, video_to_clips};
use dit_model::classifier::PhotoClassifier;
use dit_model::run::{load_classifier, write_atomic};
use dit_model::{TrainedModel, VideoAutoencoder};
use serde::Serialize;

use crate::eval::{failure_lines, write_failures};
use crate::pipeline::{GenerateOptions, TextToVideo, generate};

/// Where the shipped judge of Moving Fashion is, from the repository's root.
pub const CLASSIFIER_DIR: &str = "checkpoints/fashion-classifier";

/// Real clips per composition for the ceiling and the autoencoder's measurements.
const REAL_CLIPS_PER_COMPOSITION: usize = 2;

/// What to evaluate.
#[derive(Debug, Clone)]
pub struct FashionEvalOptions {
    /// Seeds per (composition, caption).
    pub seeds: usize,
    /// Sampling settings (the seed is replaced per clip).
    pub sampling: GenerateOptions,
    /// Prompts denoised together.
    pub batch: usize,
    /// Fashion-MNIST's files (the test photographs make the real clips).
    pub photos: PathBuf,
    /// The classifier folder (`dit-train classifier`).
    pub classifier: PathBuf,
}

/// One generated clip and its verdict.
#[derive(Debug, Clone, Serialize)]
pub struct FashionVerdict {
    /// The prompt.
    pub prompt: String,
    /// What the prompt asks for (its canonical caption).
    pub expected: String,
    /// What the judge saw (`?` for a part it could not tell).
    pub judged: String,
    /// The class matched.
    pub garment: bool,
    /// The colour matched.
    pub colour: bool,
    /// The direction matched.
    pub direction: bool,
    /// Whether the composition is held out of training.
    pub held_out: bool,
    /// Label of the class asked for.
    pub asked_class: usize,
    /// Label of the class judged (`None`: no item).
    pub judged_class: Option<usize>,
    /// The prompt's phrasing groups: template, noun, verb, direction phrase.
    pub groups: [String; 4],
    /// Seed of the clip.
    pub seed: u64,
}

impl FashionVerdict {
    /// Class, colour and direction all right.
    pub fn joint(&self) -> bool {
        self.garment && self.colour && self.direction
    }
}

/// Accuracies over a set of verdicts.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct FashionScores {
    /// Clips judged.
    pub clips: usize,
    /// Fraction of the right class.
    pub garment: f64,
    /// Fraction of the right colour.
    pub colour: f64,
    /// Fraction of the right direction.
    pub direction: f64,
    /// Fraction with all three right.
    pub joint: f64,
}

impl FashionScores {
    /// Scores of `verdicts`.
    pub fn of<'a>(verdicts: impl Iterator<Item = &'a FashionVerdict>) -> Self {
        let v: Vec<&FashionVerdict> = verdicts.collect();
        let n = v.len().max(1) as f64;
        let frac = |f: fn(&FashionVerdict) -> bool| v.iter().filter(|x| f(x)).count() as f64 / n;
        Self {
            clips: v.len(),
            garment: frac(|x| x.garment),
            colour: frac(|x| x.colour),
            direction: frac(|x| x.direction),
            joint: frac(FashionVerdict::joint),
        }
    }
}

/// Scores of the clips of one class or one phrasing group.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NamedScores {
    /// The class (`sneaker`) or group (`noun: handbag`).
    pub name: String,
    /// Its clips of training compositions.
    pub train: FashionScores,
    /// Its clips of held-out compositions.
    pub held_out: FashionScores,
}

/// The evaluation report (`eval.json`).
#[derive(Debug, Clone, Serialize)]
pub struct FashionReport {
    /// The 220 training compositions.
    pub train: FashionScores,
    /// The 20 held-out compositions.
    pub held_out: FashionScores,
    /// The judge's class accuracy on real clips of test photographs: the ceiling.
    pub ceiling: f64,
    /// Colour and direction accuracy of the judge on those real clips.
    pub real_colour: f64,
    /// See `real_colour`.
    pub real_direction: f64,
    /// Autoencoder reconstruction PSNR (dB) on those real clips.
    pub autoencoder_psnr: f64,
    /// The judge's class accuracy on their reconstructions.
    pub reconstructed_class: f64,
    /// Per class, in label order.
    pub classes: Vec<NamedScores>,
    /// `confusion[asked][judged]` over all generated clips; column 10 counts clips with no
    /// item.
    pub confusion: Vec<Vec<usize>>,
    /// Per phrasing group.
    pub phrasing_groups: Vec<NamedScores>,
    /// The sampler, e.g. `DDIM (η = 0)`.
    pub sampler: String,
    /// Denoising steps.
    pub steps: usize,
    /// Guidance scale.
    pub guidance: f64,
    /// Seeds per prompt.
    pub seeds: usize,
    /// Seconds spent sampling and judging.
    pub sampling_seconds: f64,
    /// What the report misses of the bar ([`FASHION_BAR`]); empty when it passes.
    pub bar_misses: Vec<String>,
    /// Every clip's verdict.
    pub verdicts: Vec<FashionVerdict>,
}

/// The bar of a Moving Fashion checkpoint (docs/evaluation.md).
pub struct FashionBar {
    /// Class accuracy on the training compositions, as a fraction of the ceiling.
    pub train_class: f64,
    /// Class accuracy on the held-out compositions, as a fraction of the ceiling.
    pub held_out_class: f64,
    /// Colour accuracy on both.
    pub colour: f64,
    /// Direction accuracy on both.
    pub direction: f64,
    /// Class accuracy on the autoencoder's reconstructions, as a fraction of the ceiling.
    pub reconstructed_class: f64,
}

/// The bar of this project for Moving Fashion.
pub const FASHION_BAR: FashionBar = FashionBar {
    train_class: 0.8,
    held_out_class: 0.6,
    colour: 0.95,
    direction: 0.95,
    reconstructed_class: 0.95,
};

impl FashionBar {
    /// What `report` misses of the bar, one line each (empty: it passes).
    pub fn misses(&self, report: &FashionReport) -> Vec<String> {
        let mut misses = Vec::new();
        let mut check = |what: &str, value: f64, bar: f64| {
            if value < bar {
                misses.push(format!("{what} {value:.3} < {bar:.3}"));
            }
        };
        let ceiling = report.ceiling;
        check(
            "class, training compositions",
            report.train.garment,
            self.train_class * ceiling,
        );
        check(
            "class, held-out compositions",
            report.held_out.garment,
            self.held_out_class * ceiling,
        );
        for (name, s) in [("training", &report.train), ("held-out", &report.held_out)] {
            check(
                &format!("colour, {name} compositions"),
                s.colour,
                self.colour,
            );
            check(
                &format!("direction, {name} compositions"),
                s.direction,
                self.direction,
            );
        }
        check(
            "class on the autoencoder's reconstructions",
            report.reconstructed_class,
            self.reconstructed_class * ceiling,
        );
        misses
    }
}

/// The phrasings evaluated for the composition with index `i`: the canonical caption and
/// three designed paraphrases ([`FashionPhrasing::designed`]).
pub fn fashion_phrasings(i: usize) -> [FashionPhrasing; 4] {
    [
        FashionPhrasing::CANONICAL,
        FashionPhrasing::designed(i, 0),
        FashionPhrasing::designed(i, 1),
        FashionPhrasing::designed(i, 2),
    ]
}

/// What the judge saw, as a caption (`?` for a part it could not tell).
fn describe(j: &FashionJudgement) -> String {
    format!(
        "{} {} {}",
        j.colour.map_or("?", |x| x.name()),
        j.garment.map_or("?", |x| x.name()),
        j.direction.map_or("?", |x| x.name())
    )
}

/// Real clips of the test photographs made as `config` says:
/// [`REAL_CLIPS_PER_COMPOSITION`] per composition.
fn real_clips(
    config: &MovingFashionConfig,
    photos: &Path,
) -> Result<Vec<(FashionComposition, Clip)>> {
    let eval = MovingFashion::open(photos, config.clone(), 7, Split::Eval)?;
    Ok(FashionComposition::all()
        .into_iter()
        .flat_map(|c| (0..REAL_CLIPS_PER_COMPOSITION).map(move |k| (c, k)))
        .map(|(c, k)| (c, eval.clip_for(c, k, CaptionMode::Canonical).item.clip))
        .collect())
}

/// `clips` through the autoencoder (encode, take the mean, decode).
fn reconstruct(autoencoder: &VideoAutoencoder, clips: &[Clip], device: &Device) -> Vec<Clip> {
    let mut decoded = Vec::with_capacity(clips.len());
    for chunk in clips.chunks(16) {
        let [f, h, w] = [chunk[0].frames, chunk[0].height, chunk[0].width];
        let values: Vec<f32> = chunk.iter().flat_map(clip_to_tensor_data).collect();
        let video =
            Tensor::<5>::from_data(TensorData::new(values, [chunk.len(), 3, f, h, w]), device);
        let latent = autoencoder.encode(video).mean;
        decoded.extend(video_to_clips(autoencoder.decode(latent)));
    }
    decoded
}

/// The judge on real clips of the test photographs, and on their reconstructions by an
/// autoencoder: how much of a photograph its latent keeps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RealClipScores {
    /// Class accuracy on the real clips: the judge's ceiling.
    pub ceiling: f64,
    /// Colour accuracy on the real clips.
    pub colour: f64,
    /// Direction accuracy on the real clips.
    pub direction: f64,
    /// PSNR of the reconstructions (dB).
    pub autoencoder_psnr: f64,
    /// Class accuracy on the reconstructions.
    pub reconstructed_class: f64,
}

/// Judges real clips of the test photographs (made as `config` says), and their
/// reconstructions by `autoencoder`, with `classifier`.
pub fn judge_real_clips(
    autoencoder: &VideoAutoencoder,
    config: &MovingFashionConfig,
    photos: &Path,
    classifier: &PhotoClassifier,
    device: &Device,
) -> Result<RealClipScores> {
    let (compositions, clips): (Vec<FashionComposition>, Vec<Clip>) =
        real_clips(config, photos)?.into_iter().unzip();
    let [ceiling, colour, direction] = rates(
        &judge_fashion_clips(&clips, classifier, device),
        &compositions,
    );
    let reconstructed = reconstruct(autoencoder, &clips, device);
    let [reconstructed_class, _, _] = rates(
        &judge_fashion_clips(&reconstructed, classifier, device),
        &compositions,
    );
    Ok(RealClipScores {
        ceiling,
        colour,
        direction,
        autoencoder_psnr: psnr(&clips, &reconstructed),
        reconstructed_class,
    })
}

/// Fraction of `judged` whose class / colour / direction matches `compositions`.
fn rates(judged: &[FashionJudgement], compositions: &[FashionComposition]) -> [f64; 3] {
    let n = judged.len().max(1) as f64;
    let count = |f: &dyn Fn(&FashionJudgement, &FashionComposition) -> bool| {
        judged
            .iter()
            .zip(compositions)
            .filter(|(j, c)| f(j, c))
            .count() as f64
            / n
    };
    [
        count(&|j, c| j.matches(c).garment),
        count(&|j, c| j.matches(c).colour),
        count(&|j, c| j.matches(c).direction),
    ]
}

/// Scores of `verdicts` grouped by `key`, each split into training and held-out, in key
/// order.
fn named_scores(
    verdicts: &[FashionVerdict],
    keys: impl Fn(&FashionVerdict) -> Vec<(usize, String)>,
) -> Vec<NamedScores> {
    let mut groups: std::collections::BTreeMap<(usize, String), Vec<&FashionVerdict>> =
        Default::default();
    for v in verdicts {
        for key in keys(v) {
            groups.entry(key).or_default().push(v);
        }
    }
    groups
        .into_iter()
        .map(|((_, name), members)| NamedScores {
            name,
            train: FashionScores::of(members.iter().copied().filter(|v| !v.held_out)),
            held_out: FashionScores::of(members.iter().copied().filter(|v| v.held_out)),
        })
        .collect()
}

/// Generates and judges clips for all 240 compositions in each of [`fashion_phrasings`],
/// `seeds` seeds each, and measures the ceiling and the autoencoder on real clips.
pub fn evaluate_fashion(
    model: &TrainedModel,
    options: &FashionEvalOptions,
    device: &Device,
    mut progress: impl FnMut(usize, usize),
) -> Result<(FashionReport, Vec<(Clip, FashionVerdict)>)> {
    let (classifier, _) = load_classifier(&options.classifier, device).with_context(|| {
        format!(
            "Moving Fashion is judged by the photograph classifier; retrain it with `cargo run --release -p dit-train -- classifier --out {}`",
            options.classifier.display()
        )
    })?;
    // The run's clip shape at the data set's default speeds (the run folder keeps no more of
    // its data section).
    let config = MovingFashionConfig::new()
        .with_frames(model.spec.frames)
        .with_size(model.spec.size);
    let real = judge_real_clips(
        &model.autoencoder,
        &config,
        &options.photos,
        &classifier,
        device,
    )?;
    let mut jobs: Vec<(FashionComposition, FashionPhrasing, u64)> = Vec::new();
    for composition in FashionComposition::all() {
        for phrasing in fashion_phrasings(composition.index()) {
            for s in 0..options.seeds {
                jobs.push((composition, phrasing, options.sampling.seed + s as u64));
            }
        }
    }
    let start = std::time::Instant::now();
    let results = generate_and_judge(
        model.into(),
        &classifier,
        &jobs,
        &options.sampling,
        options.batch,
        device,
        &mut progress,
    )?;
    let sampling_seconds = start.elapsed().as_secs_f64();
    let verdicts: Vec<FashionVerdict> = results.iter().map(|r| r.1.clone()).collect();
    let mut confusion = vec![vec![0usize; Garment::ALL.len() + 1]; Garment::ALL.len()];
    for v in &verdicts {
        confusion[v.asked_class][v.judged_class.unwrap_or(Garment::ALL.len())] += 1;
    }
    let mut report = FashionReport {
        train: FashionScores::of(verdicts.iter().filter(|v| !v.held_out)),
        held_out: FashionScores::of(verdicts.iter().filter(|v| v.held_out)),
        ceiling: real.ceiling,
        real_colour: real.colour,
        real_direction: real.direction,
        autoencoder_psnr: real.autoencoder_psnr,
        reconstructed_class: real.reconstructed_class,
        classes: named_scores(&verdicts, |v| {
            vec![(
                v.asked_class,
                Garment::ALL[v.asked_class].name().to_string(),
            )]
        }),
        confusion,
        phrasing_groups: named_scores(&verdicts, |v| {
            v.groups.iter().cloned().enumerate().collect()
        }),
        sampler: options.sampling.sampler.to_string(),
        steps: options.sampling.steps,
        guidance: options.sampling.guidance,
        seeds: options.seeds,
        sampling_seconds,
        bar_misses: Vec::new(),
        verdicts,
    };
    report.bar_misses = FASHION_BAR.misses(&report);
    Ok((report, results))
}

/// A quick measure of prompt fidelity, for curves during training: every composition
/// once, composition `i` in phrasing `i mod 4` of [`fashion_phrasings`], one seed
/// (`sampling.seed`). Returns the scores on the training and the held-out compositions.
pub fn quick_fashion_scores(
    model: TextToVideo,
    classifier: &PhotoClassifier,
    sampling: &GenerateOptions,
    device: &Device,
) -> Result<(FashionScores, FashionScores)> {
    let jobs: Vec<_> = FashionComposition::all()
        .into_iter()
        .map(|c| {
            (
                c,
                fashion_phrasings(c.index())[c.index() % 4],
                sampling.seed,
            )
        })
        .collect();
    let results = generate_and_judge(
        model,
        classifier,
        &jobs,
        sampling,
        24,
        device,
        &mut |_, _| {},
    )?;
    let verdicts = results.iter().map(|r| &r.1);
    Ok((
        FashionScores::of(verdicts.clone().filter(|v| !v.held_out)),
        FashionScores::of(verdicts.filter(|v| v.held_out)),
    ))
}

/// Generates the clip of each job, `batch` prompts at a time (one batch per seed, so each
/// clip's noise follows from its own seed), and judges it.
fn generate_and_judge(
    model: TextToVideo,
    classifier: &PhotoClassifier,
    jobs: &[(FashionComposition, FashionPhrasing, u64)],
    sampling: &GenerateOptions,
    batch: usize,
    device: &Device,
    progress: &mut impl FnMut(usize, usize),
) -> Result<Vec<(Clip, FashionVerdict)>> {
    let mut results = Vec::with_capacity(jobs.len());
    for (done, chunk) in jobs.chunks(batch.max(1)).enumerate() {
        let mut by_seed: std::collections::BTreeMap<u64, Vec<_>> = Default::default();
        for job in chunk {
            by_seed.entry(job.2).or_default().push(job);
        }
        for (seed, group) in by_seed {
            let prompts: Vec<String> = group.iter().map(|(c, p, _)| c.caption(*p)).collect();
            let sampling = GenerateOptions {
                seed,
                ..sampling.clone()
            };
            let clips = generate(model, &prompts, &sampling, device, |_| {})?;
            let judged = judge_fashion_clips(&clips, classifier, device);
            for (((clip, (composition, phrasing, _)), prompt), j) in
                clips.into_iter().zip(group).zip(prompts).zip(judged)
            {
                let m = j.matches(composition);
                let verdict = FashionVerdict {
                    prompt,
                    expected: composition.canonical_caption(),
                    judged: describe(&j),
                    garment: m.garment,
                    colour: m.colour,
                    direction: m.direction,
                    held_out: composition.is_held_out(),
                    asked_class: composition.garment.label(),
                    judged_class: j.garment.map(Garment::label),
                    groups: composition.phrasing_groups(*phrasing),
                    seed,
                };
                results.push((clip, verdict));
            }
        }
        progress(((done + 1) * batch.max(1)).min(jobs.len()), jobs.len());
    }
    Ok(results)
}

/// The report as tables: the two splits, per class, the confusion table, per phrasing
/// group, the ceiling and the autoencoder, and the bar.
pub fn fashion_table(report: &FashionReport) -> String {
    let row = |name: &str, s: &FashionScores| {
        format!(
            "| {name} | {} | {:.3} | {:.3} | {:.3} | {:.3} |\n",
            s.clips, s.garment, s.colour, s.direction, s.joint
        )
    };
    let mut out = String::from(
        "| compositions | clips | class | colour | direction | joint |\n|---|---|---|---|---|---|\n",
    );
    out += &row("training (220)", &report.train);
    out += &row("held-out (20)", &report.held_out);
    out += "\n| class | clips | class (training) | class (held-out) | joint (training) | joint (held-out) |\n|---|---|---|---|---|---|\n";
    for c in &report.classes {
        out += &format!(
            "| {} | {} | {:.3} | {:.3} | {:.3} | {:.3} |\n",
            c.name,
            c.train.clips + c.held_out.clips,
            c.train.garment,
            c.held_out.garment,
            c.train.joint,
            c.held_out.joint
        );
    }
    out += "\nconfusion (rows: asked, columns: judged; – = no item)\n\n| asked |";
    for g in Garment::ALL {
        out += &format!(" {} |", g.name());
    }
    out += " – |\n|---|";
    out += &"---|".repeat(Garment::ALL.len() + 1);
    out += "\n";
    for (g, counts) in Garment::ALL.iter().zip(&report.confusion) {
        out += &format!("| {} |", g.name());
        for n in counts {
            out += &format!(" {n} |");
        }
        out += "\n";
    }
    out += "\n| phrasing group | clips | class | colour | direction | joint |\n|---|---|---|---|---|---|\n";
    for g in &report.phrasing_groups {
        let all = FashionScores::of(
            report
                .verdicts
                .iter()
                .filter(|v| v.groups.contains(&g.name)),
        );
        out += &row(&g.name, &all);
    }
    out += &format!(
        "\nceiling: the judge reads {:.3} of real clips of test photographs as their class (colour {:.3}, direction {:.3}); \
         autoencoder PSNR {:.2} dB on them, class {:.3} on its reconstructions; {} {} steps, guidance {}, {} seed(s) per prompt, {:.0} s\n",
        report.ceiling,
        report.real_colour,
        report.real_direction,
        report.autoencoder_psnr,
        report.reconstructed_class,
        report.steps,
        report.sampler,
        report.guidance,
        report.seeds,
        report.sampling_seconds
    );
    if report.bar_misses.is_empty() {
        out += "the checkpoint passes the Moving Fashion bar (docs/evaluation.md#moving-fashion)\n";
    } else {
        out += &format!(
            "the checkpoint misses the Moving Fashion bar (docs/evaluation.md#moving-fashion): {}\n",
            report.bar_misses.join("; ")
        );
    }
    out
}

/// Writes `eval.json` and `failures.png` (failed clips with their verdicts) into `dir`.
pub fn write_fashion_report(
    report: &FashionReport,
    results: &[(Clip, FashionVerdict)],
    dir: &Path,
) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    write_atomic(
        &dir.join("eval.json"),
        serde_json::to_string_pretty(report)?.as_bytes(),
    )?;
    let failures: Vec<(&Clip, [String; 3])> = results
        .iter()
        .filter(|(_, v)| !v.joint())
        .map(|(clip, v)| (clip, failure_text(v)))
        .collect();
    let settings = format!(
        "{} {} steps · guidance {}",
        report.steps, report.sampler, report.guidance
    );
    write_failures(
        &failures,
        results.len(),
        &settings,
        &dir.join("failures.png"),
    )
}

/// The lines beside a failed clip: the prompt and seed, what was asked, what was judged.
fn failure_text(v: &FashionVerdict) -> [String; 3] {
    let parts = [
        (v.garment, "class"),
        (v.colour, "colour"),
        (v.direction, "direction"),
    ];
    failure_lines(&v.prompt, v.seed, v.held_out, &v.expected, &v.judged, parts)
}
