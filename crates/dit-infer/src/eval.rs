//! Prompt fidelity: generate clips for every Moving Shapes composition, in the
//! canonical caption and three designed paraphrases each, and judge them from
//! their pixels alone (`dit_data::judge`), separately for the 66 training
//! compositions and the 6 held-out ones, and per phrasing group (template,
//! noun, verb, direction phrase).

use std::path::Path;

use anyhow::Result;
use burn::tensor::{Device, Tensor, TensorData};
use dit_data::figure::ContactSheet;
use dit_data::{
    CaptionMode, Clip, Composition, MovingShapes, MovingShapesConfig, Phrasing,
    clip_to_tensor_data, judge_clip, psnr, video_to_clips,
};
use dit_model::TrainedModel;
use dit_model::run::write_atomic;
use serde::Serialize;

use crate::pipeline::{GenerateOptions, TextToVideo, generate};

/// One generated clip and its verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// The prompt.
    pub prompt: String,
    /// What the prompt asks for.
    pub expected: String,
    /// What the judge saw (`"?"` for a part it could not tell).
    pub judged: String,
    /// Colour, shape, direction matched.
    pub colour: bool,
    /// Shape matched.
    pub shape: bool,
    /// Direction matched.
    pub direction: bool,
    /// Whether the composition is held out of training.
    pub held_out: bool,
    /// The prompt's phrasing groups: template, noun, verb, direction phrase
    /// ([`Composition::phrasing_groups`]).
    pub groups: [String; 4],
    /// Area variation of the object across frames.
    pub area_variation: f32,
    /// Seed of the clip.
    pub seed: u64,
}

/// Accuracies over a set of verdicts.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Scores {
    /// Clips judged.
    pub clips: usize,
    /// Fraction with the right colour.
    pub colour: f64,
    /// Fraction with the right shape.
    pub shape: f64,
    /// Fraction with the right direction.
    pub direction: f64,
    /// Fraction with all three right.
    pub joint: f64,
    /// Mean std/mean of the object's area across frames (0 = rigid).
    pub area_variation: f64,
}

impl Scores {
    /// Scores of `verdicts`.
    pub fn of<'a>(verdicts: impl Iterator<Item = &'a Verdict>) -> Self {
        let v: Vec<&Verdict> = verdicts.collect();
        let n = v.len().max(1) as f64;
        let frac = |f: fn(&Verdict) -> bool| v.iter().filter(|x| f(x)).count() as f64 / n;
        Scores {
            clips: v.len(),
            colour: frac(|x| x.colour),
            shape: frac(|x| x.shape),
            direction: frac(|x| x.direction),
            joint: frac(|x| x.colour && x.shape && x.direction),
            area_variation: v.iter().map(|x| x.area_variation as f64).sum::<f64>() / n,
        }
    }
}

/// Accuracies of the clips whose prompts share one phrasing group.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GroupScores {
    /// The group, e.g. `noun: box` or `template: a {shape} in {colour} {verb-ing} {direction}`.
    pub group: String,
    /// Its clips' accuracies.
    pub scores: Scores,
    /// Prompts of its failed clips (colour, shape or direction wrong), with their seeds.
    pub failures: Vec<String>,
}

/// Scores per phrasing group, in group order (templates, nouns, verbs, directions,
/// each alphabetically).
pub fn group_scores(verdicts: &[Verdict]) -> Vec<GroupScores> {
    let mut groups: std::collections::BTreeMap<(usize, &str), Vec<&Verdict>> = Default::default();
    for v in verdicts {
        for (part, group) in v.groups.iter().enumerate() {
            groups.entry((part, group.as_str())).or_default().push(v);
        }
    }
    groups
        .into_iter()
        .map(|((_, group), members)| GroupScores {
            group: group.to_string(),
            scores: Scores::of(members.iter().copied()),
            failures: members
                .iter()
                .filter(|v| !(v.colour && v.shape && v.direction))
                .map(|v| format!("{} (seed {})", v.prompt, v.seed))
                .collect(),
        })
        .collect()
}

/// The evaluation report (`eval.json`).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The 66 training compositions.
    pub train: Scores,
    /// The 6 held-out compositions.
    pub held_out: Scores,
    /// Autoencoder reconstruction PSNR (dB) on clips rendered for the 72 compositions.
    pub autoencoder_psnr: f64,
    /// Joint accuracy of the judge on those reconstructions: the ceiling the
    /// autoencoder puts on the DiT's fidelity.
    pub autoencoder_joint: f64,
    /// The sampler, e.g. `DDIM (η = 0)`.
    pub sampler: String,
    /// Denoising steps.
    pub steps: usize,
    /// Guidance scale.
    pub guidance: f64,
    /// Seeds per prompt.
    pub seeds: usize,
    /// Seconds spent sampling.
    pub sampling_seconds: f64,
    /// Accuracies per phrasing group (all 72 compositions).
    pub phrasing_groups: Vec<GroupScores>,
    /// What the report misses of the project's bar ([`BAR`]); empty when it passes.
    pub bar_misses: Vec<String>,
    /// Every clip's verdict.
    pub verdicts: Vec<Verdict>,
}

/// What to evaluate.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Seeds per (composition, caption).
    pub seeds: usize,
    /// Sampling settings (the seed is replaced per clip).
    pub sampling: GenerateOptions,
    /// Prompts denoised together.
    pub batch: usize,
}

fn describe(c: Option<Composition>, j: &dit_data::Judgement) -> String {
    match c {
        Some(c) => c.canonical_caption(),
        None => format!(
            "{} {} {}",
            j.colour.map_or("?", |x| x.name()),
            j.shape.map_or("?", |x| x.name()),
            j.direction.map_or("?", |x| x.name())
        ),
    }
}

/// PSNR of the autoencoder on clips rendered for every composition, and the
/// joint accuracy of the judge on its reconstructions (1.0 on the rendered clips).
pub(crate) fn autoencoder_check(model: &TrainedModel, device: &Device) -> (f64, f64) {
    let shapes = MovingShapesConfig::new()
        .with_frames(model.spec.frames)
        .with_size(model.spec.size);
    let compositions = Composition::all();
    let clips: Vec<Clip> = compositions
        .iter()
        .map(|&c| MovingShapes::clip_for(&shapes, c, 7, 0, CaptionMode::Canonical).clip)
        .collect();
    let mut decoded = Vec::with_capacity(clips.len());
    let (f, s) = (model.spec.frames, model.spec.size);
    for chunk in clips.chunks(24) {
        let values: Vec<f32> = chunk.iter().flat_map(clip_to_tensor_data).collect();
        let video =
            Tensor::<5>::from_data(TensorData::new(values, [chunk.len(), 3, f, s, s]), device);
        decoded.extend(video_to_clips(
            model
                .autoencoder
                .decode(model.autoencoder.encode(video).mean),
        ));
    }
    let matched = compositions
        .iter()
        .zip(&decoded)
        .filter(|(c, clip)| judge_clip(clip).matches(c).all())
        .count();
    (psnr(&clips, &decoded), matched as f64 / clips.len() as f64)
}

/// The phrasings evaluated for the composition with index `i`: the canonical
/// caption and three designed paraphrases ([`Phrasing::designed`]), so that every
/// template, noun, verb and direction phrase of the spec is measured.
pub fn eval_phrasings(i: usize) -> [Phrasing; 4] {
    [
        Phrasing::CANONICAL,
        Phrasing::designed(i, 0),
        Phrasing::designed(i, 1),
        Phrasing::designed(i, 2),
    ]
}

/// One clip to generate and judge.
struct Job {
    composition: Composition,
    prompt: String,
    groups: [String; 4],
    seed: u64,
}

impl Job {
    /// The clip of `composition` in `phrasing`, from `seed`.
    fn phrased(composition: Composition, phrasing: Phrasing, seed: u64) -> Self {
        Self {
            composition,
            prompt: composition.caption(phrasing),
            groups: composition.phrasing_groups(phrasing),
            seed,
        }
    }
}

/// Generates and judges clips for all 72 compositions, in each of
/// [`eval_phrasings`], `seeds` seeds each.
pub fn evaluate(
    model: &TrainedModel,
    options: &EvalOptions,
    device: &Device,
    progress: impl FnMut(usize, usize),
) -> Result<(Report, Vec<(Clip, Verdict)>)> {
    let mut jobs = Vec::new();
    for composition in Composition::all() {
        for phrasing in eval_phrasings(composition.index()) {
            for s in 0..options.seeds {
                jobs.push(Job::phrased(
                    composition,
                    phrasing,
                    options.sampling.seed + s as u64,
                ));
            }
        }
    }
    let start = std::time::Instant::now();
    let results = judge_jobs(model.into(), &jobs, options, device, progress)?;
    let sampling_seconds = start.elapsed().as_secs_f64();
    let verdicts: Vec<Verdict> = results.iter().map(|r| r.1.clone()).collect();
    let (autoencoder_psnr, autoencoder_joint) = autoencoder_check(model, device);
    let mut report = Report {
        train: Scores::of(verdicts.iter().filter(|v| !v.held_out)),
        held_out: Scores::of(verdicts.iter().filter(|v| v.held_out)),
        autoencoder_psnr,
        autoencoder_joint,
        sampler: options.sampling.sampler.to_string(),
        steps: options.sampling.steps,
        guidance: options.sampling.guidance,
        seeds: options.seeds,
        sampling_seconds,
        phrasing_groups: group_scores(&verdicts),
        bar_misses: Vec::new(),
        verdicts,
    };
    report.bar_misses = BAR.misses(&report);
    Ok((report, results))
}

/// What the unseen-word evaluation reports (`unseen.json`).
#[derive(Debug, Clone, Serialize)]
pub struct UnseenReport {
    /// The prompts of the 66 training compositions.
    pub train: Scores,
    /// The prompts of the 6 held-out compositions.
    pub held_out: Scores,
    /// Accuracies per unseen word (colour word, noun, motion phrase) and per template.
    pub words: Vec<GroupScores>,
    /// The sampler.
    pub sampler: String,
    /// Denoising steps.
    pub steps: usize,
    /// Guidance scale.
    pub guidance: f64,
    /// Seeds per prompt.
    pub seeds: usize,
    /// Seconds spent sampling.
    pub sampling_seconds: f64,
    /// Every clip's verdict.
    pub verdicts: Vec<Verdict>,
}

/// The target joint accuracy on unseen-word prompts (issue #29; the trained encoder refuses
/// them).
pub const UNSEEN_TARGET_JOINT: f64 = 0.6;

/// Generates and judges the unseen-word prompts of every composition
/// ([`dit_data::unseen::unseen_prompts`]), `seeds` seeds each. Only a model that reads
/// prompts through a pretrained text encoder can read them.
pub fn evaluate_unseen(
    model: &TrainedModel,
    options: &EvalOptions,
    device: &Device,
    progress: impl FnMut(usize, usize),
) -> Result<(UnseenReport, Vec<(Clip, Verdict)>)> {
    if model.frozen_text.is_none() {
        anyhow::bail!(
            "this checkpoint reads prompts with its own text encoder, which knows only the {} words of its training captions: unseen-word prompts need a model on a pretrained encoder (text.pretrained)",
            model.tokenizer.words().len()
        );
    }
    let mut jobs = Vec::new();
    for prompt in dit_data::unseen::unseen_prompts() {
        for s in 0..options.seeds {
            jobs.push(Job {
                composition: prompt.composition,
                prompt: prompt.prompt.clone(),
                groups: prompt.groups.clone(),
                seed: options.sampling.seed + s as u64,
            });
        }
    }
    let start = std::time::Instant::now();
    let results = judge_jobs(model.into(), &jobs, options, device, progress)?;
    let sampling_seconds = start.elapsed().as_secs_f64();
    let verdicts: Vec<Verdict> = results.iter().map(|r| r.1.clone()).collect();
    let report = UnseenReport {
        train: Scores::of(verdicts.iter().filter(|v| !v.held_out)),
        held_out: Scores::of(verdicts.iter().filter(|v| v.held_out)),
        words: group_scores(&verdicts),
        sampler: options.sampling.sampler.to_string(),
        steps: options.sampling.steps,
        guidance: options.sampling.guidance,
        seeds: options.seeds,
        sampling_seconds,
        verdicts,
    };
    Ok((report, results))
}

/// The unseen-word report as a table.
pub fn unseen_table(report: &UnseenReport) -> String {
    let mut out = String::from(
        "| unseen-word prompts | clips | colour | shape | direction | joint |\n|---|---|---|---|---|---|\n",
    );
    let mut row = |name: &str, s: &Scores| {
        out += &format!(
            "| {name} | {} | {:.3} | {:.3} | {:.3} | {:.3} |\n",
            s.clips, s.colour, s.shape, s.direction, s.joint
        );
    };
    row("training compositions (66)", &report.train);
    row("held-out compositions (6)", &report.held_out);
    for g in &report.words {
        row(&g.group, &g.scores);
    }
    out += &format!(
        "\n{} {} steps, guidance {}, {} seed(s) per prompt, sampling {:.0} s; target: joint ≥ {UNSEEN_TARGET_JOINT} on both\n",
        report.steps, report.sampler, report.guidance, report.seeds, report.sampling_seconds
    );
    out
}

/// Writes `unseen.json` and `unseen-failures.png` into `dir`.
pub fn write_unseen_report(
    report: &UnseenReport,
    results: &[(Clip, Verdict)],
    dir: &Path,
) -> Result<()> {
    let settings = format!(
        "{} {} steps · guidance {}",
        report.steps, report.sampler, report.guidance
    );
    write_json_and_failures(report, results, &settings, dir, "unseen")
}

/// A quick measure of prompt fidelity, for curves during training: every composition
/// once, composition `i` in phrasing `i mod 4` of [`eval_phrasings`], one seed
/// (`options.sampling.seed`). Returns the scores on the training and the held-out
/// compositions.
pub fn quick_scores(
    model: TextToVideo,
    options: &EvalOptions,
    device: &Device,
) -> Result<(Scores, Scores)> {
    let jobs: Vec<Job> = Composition::all()
        .into_iter()
        .map(|composition| {
            let phrasing = eval_phrasings(composition.index())[composition.index() % 4];
            Job::phrased(composition, phrasing, options.sampling.seed)
        })
        .collect();
    let results = judge_jobs(model, &jobs, options, device, |_, _| {})?;
    let verdicts = results.iter().map(|r| &r.1);
    Ok((
        Scores::of(verdicts.clone().filter(|v| !v.held_out)),
        Scores::of(verdicts.filter(|v| v.held_out)),
    ))
}

/// Generates the clip of each job, `options.batch` prompts at a time, and judges it.
fn judge_jobs(
    model: TextToVideo,
    jobs: &[Job],
    options: &EvalOptions,
    device: &Device,
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<(Clip, Verdict)>> {
    let mut results = Vec::with_capacity(jobs.len());
    for (done, chunk) in jobs.chunks(options.batch.max(1)).enumerate() {
        // One batch per seed, so that each clip's noise follows from its own seed.
        let mut by_seed: std::collections::BTreeMap<u64, Vec<&Job>> = Default::default();
        for job in chunk {
            by_seed.entry(job.seed).or_default().push(job);
        }
        for (seed, group) in by_seed {
            let prompts: Vec<String> = group.iter().map(|j| j.prompt.clone()).collect();
            let sampling = GenerateOptions {
                seed,
                ..options.sampling.clone()
            };
            let clips = generate(model, &prompts, &sampling, device, |_| {})?;
            for ((clip, job), prompt) in clips.into_iter().zip(group).zip(prompts) {
                let judgement = judge_clip(&clip);
                let m = judgement.matches(&job.composition);
                let verdict = Verdict {
                    prompt,
                    expected: job.composition.canonical_caption(),
                    judged: describe(judgement.composition(), &judgement),
                    colour: m.colour,
                    shape: m.shape,
                    direction: m.direction,
                    held_out: job.composition.is_held_out(),
                    groups: job.groups.clone(),
                    area_variation: judgement.area_variation,
                    seed,
                };
                results.push((clip, verdict));
            }
        }
        progress(
            ((done + 1) * options.batch.max(1)).min(jobs.len()),
            jobs.len(),
        );
    }
    Ok(results)
}

/// The project's bar for a checkpoint (docs/evaluation.md): joint accuracy on the
/// training and the held-out compositions, colour and direction accuracy in every
/// phrasing group, and the autoencoder's PSNR.
pub struct Bar {
    /// Joint accuracy on the training compositions.
    pub train_joint: f64,
    /// Joint accuracy on the held-out compositions.
    pub held_out_joint: f64,
    /// Colour accuracy in each phrasing group.
    pub group_colour: f64,
    /// Direction accuracy in each phrasing group.
    pub group_direction: f64,
    /// Reconstruction PSNR (dB).
    pub psnr: f64,
}

/// The bar of this project.
pub const BAR: Bar = Bar {
    train_joint: 0.95,
    held_out_joint: 0.85,
    group_colour: 0.98,
    group_direction: 0.97,
    psnr: 32.0,
};

impl Bar {
    /// What `report` misses of the bar, one line each (empty: it passes).
    pub fn misses(&self, report: &Report) -> Vec<String> {
        let mut misses = Vec::new();
        let mut check = |what: String, value: f64, bar: f64| {
            if value < bar {
                misses.push(format!("{what} {value:.3} < {bar}"));
            }
        };
        check(
            "joint, training compositions".into(),
            report.train.joint,
            self.train_joint,
        );
        check(
            "joint, held-out compositions".into(),
            report.held_out.joint,
            self.held_out_joint,
        );
        for g in &report.phrasing_groups {
            check(
                format!("colour, {}", g.group),
                g.scores.colour,
                self.group_colour,
            );
            check(
                format!("direction, {}", g.group),
                g.scores.direction,
                self.group_direction,
            );
        }
        check(
            "autoencoder PSNR (dB)".into(),
            report.autoencoder_psnr,
            self.psnr,
        );
        misses
    }
}

/// The report as a table.
pub fn table(report: &Report) -> String {
    let row = |name: &str, s: &Scores| {
        format!(
            "| {name:<22} | {:>5} | {:>6.3} | {:>6.3} | {:>9.3} | {:>6.3} | {:>14.3} |\n",
            s.clips, s.colour, s.shape, s.direction, s.joint, s.area_variation
        )
    };
    let mut out = String::from(
        "| compositions           | clips | colour |  shape | direction |  joint | area variation |\n|---|---|---|---|---|---|---|\n",
    );
    out += &row("training (66)", &report.train);
    out += &row("held-out (6)", &report.held_out);
    out += "\n| phrasing group | clips | colour | shape | direction | joint |\n|---|---|---|---|---|---|\n";
    for g in &report.phrasing_groups {
        let s = &g.scores;
        out += &format!(
            "| {} | {} | {:.3} | {:.3} | {:.3} | {:.3} |\n",
            g.group, s.clips, s.colour, s.shape, s.direction, s.joint
        );
    }
    out += &format!(
        "\nautoencoder PSNR {:.2} dB, judged joint accuracy of its reconstructions {:.3}; {} {} steps, guidance {}, {} seed(s) per prompt, sampling {:.0} s\n",
        report.autoencoder_psnr,
        report.autoencoder_joint,
        report.steps,
        report.sampler,
        report.guidance,
        report.seeds,
        report.sampling_seconds
    );
    if report.bar_misses.is_empty() {
        out += "the checkpoint passes the bar (docs/evaluation.md#the-bar)\n";
    } else {
        out += &format!(
            "the checkpoint misses the bar (docs/evaluation.md#the-bar): {}\n",
            report.bar_misses.join("; ")
        );
    }
    out
}

/// Most failed clips `failures.png` shows.
pub const MAX_FAILURES_SHOWN: usize = 48;

/// Writes `eval.json` and `failures.png` into `dir`: up to [`MAX_FAILURES_SHOWN`] failed
/// clips, one per row, each with its prompt and seed, what it asked for and what the judge
/// saw (naming the parts that were wrong).
pub fn write_report(report: &Report, results: &[(Clip, Verdict)], dir: &Path) -> Result<()> {
    let settings = format!(
        "{} {} steps · guidance {}",
        report.steps, report.sampler, report.guidance
    );
    write_json_and_failures(report, results, &settings, dir, "eval")
}

/// Writes `report` as `dir/<name>.json` and the sheet of `results`' failed clips as
/// `dir/failures.png` (for `eval`) or `dir/<name>-failures.png`.
fn write_json_and_failures(
    report: &impl Serialize,
    results: &[(Clip, Verdict)],
    settings: &str,
    dir: &Path,
    name: &str,
) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    write_atomic(
        &dir.join(format!("{name}.json")),
        serde_json::to_string_pretty(report)?.as_bytes(),
    )?;
    let failures: Vec<(&Clip, [String; 3])> = results
        .iter()
        .filter(|(_, v)| !(v.colour && v.shape && v.direction))
        .map(|(clip, v)| (clip, failure_text(v)))
        .collect();
    let sheet = if name == "eval" {
        "failures.png".to_string()
    } else {
        format!("{name}-failures.png")
    };
    write_failures(&failures, results.len(), settings, &dir.join(sheet))
}

/// Writes the sheet of failed clips to `path` (nothing when none failed): up to
/// [`MAX_FAILURES_SHOWN`] rows, each a clip with its three lines of text, under a header
/// that counts them among `total` and names the sampling `settings`.
pub(crate) fn write_failures(
    failures: &[(&Clip, [String; 3])],
    total: usize,
    settings: &str,
    path: &Path,
) -> Result<()> {
    if failures.is_empty() {
        return Ok(());
    }
    let shown = failures.len().min(MAX_FAILURES_SHOWN);
    let mut sheet = ContactSheet::new(2).header(format!(
        "{} of {total} clips failed{} · {settings}",
        failures.len(),
        if shown < failures.len() {
            format!(" (the first {shown} shown)")
        } else {
            String::new()
        },
    ));
    for (clip, text) in &failures[..shown] {
        sheet = sheet.row(clip, text.clone());
    }
    sheet.write(path)?;
    Ok(())
}

/// The lines beside a failed clip: the prompt and seed, what was asked, what was judged.
fn failure_text(v: &Verdict) -> [String; 3] {
    let parts = [
        (v.colour, "colour"),
        (v.shape, "shape"),
        (v.direction, "direction"),
    ];
    failure_lines(&v.prompt, v.seed, v.held_out, &v.expected, &v.judged, parts)
}

/// The three lines beside a failed clip of either data set: the prompt, seed and whether
/// the composition is held out; what was asked; what was judged, naming the wrong `parts`
/// (each `(right, name)`).
pub(crate) fn failure_lines<const N: usize>(
    prompt: &str,
    seed: u64,
    held_out: bool,
    expected: &str,
    judged: &str,
    parts: [(bool, &str); N],
) -> [String; 3] {
    let wrong: Vec<&str> = parts
        .into_iter()
        .filter(|(right, _)| !right)
        .map(|(_, part)| part)
        .collect();
    let held_out = if held_out { " · held out" } else { "" };
    [
        format!("\"{prompt}\" · seed {seed}{held_out}"),
        format!("asked: {expected}"),
        format!("judged: {judged} (wrong: {})", wrong.join(", ")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use dit_data::{Colour, Direction, Shape};

    fn verdict(colour: bool, shape: bool, direction: bool) -> Verdict {
        Verdict {
            prompt: "a box in red moving down".into(),
            expected: "a red square moving down".into(),
            judged: "a red circle moving down".into(),
            colour,
            shape,
            direction,
            held_out: false,
            groups: Composition::new(Colour::Red, Shape::Square, Direction::Down)
                .phrasing_groups(Phrasing::designed(1, 1)),
            area_variation: 0.0,
            seed: 1,
        }
    }

    #[test]
    fn phrasing_groups_count_each_clip_in_its_four_groups() {
        let c = Composition::new(Colour::Blue, Shape::Circle, Direction::Left);
        let canonical = c.phrasing_groups(Phrasing::CANONICAL);
        let disc = Phrasing {
            template: 1,
            shape_word: 2,
            verb: 2,
            direction_phrase: 1,
        };
        let with = |phrasing: Phrasing, colour: bool, direction: bool, seed: u64| Verdict {
            prompt: c.caption(phrasing),
            groups: c.phrasing_groups(phrasing),
            seed,
            ..verdict(colour, true, direction)
        };
        let verdicts = vec![
            with(Phrasing::CANONICAL, true, true, 0),
            with(Phrasing::CANONICAL, true, false, 1),
            with(disc, false, true, 0),
            with(disc, true, true, 1),
        ];
        let groups = group_scores(&verdicts);
        // 4 groups per phrasing, none shared between the two phrasings.
        assert_eq!(groups.len(), 8);
        let find = |name: &str| groups.iter().find(|g| g.group == name).expect(name);
        let canonical_template = find(&canonical[0]);
        assert_eq!(
            canonical_template.group,
            "template: a {colour} {shape} {verb-ing} {direction}"
        );
        assert_eq!(canonical_template.scores.clips, 2);
        assert_eq!(canonical_template.scores.direction, 0.5);
        assert_eq!(canonical_template.scores.colour, 1.0);
        assert_eq!(
            canonical_template.failures,
            ["a blue circle moving left (seed 1)"]
        );
        let noun = find("noun: disc");
        assert_eq!((noun.scores.colour, noun.scores.joint), (0.5, 0.5));
        assert_eq!(
            noun.failures,
            ["the disc is blue and slides to the left (seed 0)"]
        );
        assert_eq!(find("verb: sliding").scores, noun.scores);
        assert_eq!(find("direction: to the left").scores.clips, 2);
        // Groups come in order: templates, nouns, verbs, directions.
        let kinds: Vec<&str> = groups
            .iter()
            .map(|g| g.group.split(':').next().unwrap())
            .collect();
        assert_eq!(
            kinds,
            [
                "template",
                "template",
                "noun",
                "noun",
                "verb",
                "verb",
                "direction",
                "direction"
            ]
        );
    }

    #[test]
    fn the_bar_names_every_measure_it_misses() {
        let scores = |x: f64| Scores {
            clips: 10,
            colour: x,
            shape: x,
            direction: x,
            joint: x,
            area_variation: 0.0,
        };
        let group = |name: &str, colour: f64, direction: f64| GroupScores {
            group: name.into(),
            scores: Scores {
                colour,
                direction,
                ..scores(1.0)
            },
            failures: Vec::new(),
        };
        let mut report = Report {
            train: scores(0.95),
            held_out: scores(0.85),
            autoencoder_psnr: 32.0,
            autoencoder_joint: 1.0,
            sampler: "DDIM (η = 0)".into(),
            steps: 50,
            guidance: 3.0,
            seeds: 2,
            sampling_seconds: 1.0,
            phrasing_groups: vec![
                group("noun: box", 0.98, 0.97),
                group("verb: going", 1.0, 1.0),
            ],
            bar_misses: Vec::new(),
            verdicts: Vec::new(),
        };
        // Exactly at the bar passes.
        assert!(BAR.misses(&report).is_empty());
        report.train = scores(0.94);
        report.autoencoder_psnr = 31.9;
        report.phrasing_groups[0] = group("noun: box", 0.97, 0.96);
        assert_eq!(
            BAR.misses(&report),
            [
                "joint, training compositions 0.940 < 0.95",
                "colour, noun: box 0.970 < 0.98",
                "direction, noun: box 0.960 < 0.97",
                "autoencoder PSNR (dB) 31.900 < 32",
            ]
        );
    }

    #[test]
    fn failures_sheet_says_what_was_asked_and_what_was_judged() {
        assert_eq!(
            failure_text(&verdict(true, false, true)),
            [
                "\"a box in red moving down\" · seed 1",
                "asked: a red square moving down",
                "judged: a red circle moving down (wrong: shape)",
            ]
        );
        let held_out = Verdict {
            held_out: true,
            ..verdict(false, true, false)
        };
        let text = failure_text(&held_out);
        assert!(text[0].ends_with("· held out"), "{}", text[0]);
        assert!(
            text[2].ends_with("(wrong: colour, direction)"),
            "{}",
            text[2]
        );

        let tmp = tempfile::tempdir().unwrap();
        let clip = Clip::black(2, 8, 8);
        let mut results = vec![(clip.clone(), verdict(true, true, true))];
        let verdicts: Vec<Verdict> = results.iter().map(|r| r.1.clone()).collect();
        let report = Report {
            train: Scores::of(verdicts.iter()),
            held_out: Scores::of(verdicts.iter()),
            autoencoder_psnr: 30.0,
            autoencoder_joint: 1.0,
            sampler: "DDIM (η = 0)".into(),
            steps: 50,
            guidance: 3.0,
            seeds: 1,
            sampling_seconds: 1.0,
            phrasing_groups: group_scores(&verdicts),
            bar_misses: Vec::new(),
            verdicts,
        };
        // Nothing failed: no sheet.
        write_report(&report, &results, tmp.path()).unwrap();
        assert!(tmp.path().join("eval.json").is_file());
        assert!(!tmp.path().join("failures.png").exists());
        results.push((clip, verdict(true, false, true)));
        write_report(&report, &results, tmp.path()).unwrap();
        assert!(tmp.path().join("failures.png").is_file());
    }
}
