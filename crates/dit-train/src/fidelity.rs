//! Prompt fidelity against wall-clock time, a product of every run: during training
//! the EMA model is judged on a small fixed prompt set ([`dit_infer::eval::quick_scores`])
//! and each measurement is a row of `fidelity.csv`, drawn as `fidelity.png`.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::tensor::Device;
use dit_data::figure::{LineChart, YScale};
use dit_infer::default_classifier;
use dit_infer::eval::{EvalOptions, Scores, quick_scores};
use dit_infer::fashion_eval::{FashionScores, quick_fashion_scores};
use dit_infer::pipeline::{GenerateOptions, TextToVideo};
use dit_model::TrainingData;
use dit_model::run::{
    CLASSIFIER_FILE, FIDELITY_CHART, FIDELITY_FILE, load_classifier, read_spec, write_atomic,
};

use crate::config::ExperimentConfig;

/// Size of the chart in pixels.
const CHART_SIZE: (usize, usize) = (800, 440);

const HEADER: &str =
    "seconds,stage,stage_name,step,train_joint,held_out_joint,colour,object,direction";

/// Accuracies on one split of either built-in data set; the object is the shape (Moving
/// Shapes) or the class (Moving Fashion).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SplitScores {
    /// Clips judged.
    pub clips: usize,
    /// Fraction with colour, object and direction right.
    pub joint: f64,
    /// Fraction of the right colour.
    pub colour: f64,
    /// Fraction of the right shape or class.
    pub object: f64,
    /// Fraction of the right direction.
    pub direction: f64,
}

impl From<Scores> for SplitScores {
    fn from(s: Scores) -> Self {
        Self {
            clips: s.clips,
            joint: s.joint,
            colour: s.colour,
            object: s.shape,
            direction: s.direction,
        }
    }
}

impl From<FashionScores> for SplitScores {
    fn from(s: FashionScores) -> Self {
        Self {
            clips: s.clips,
            joint: s.joint,
            colour: s.colour,
            object: s.garment,
            direction: s.direction,
        }
    }
}

/// One measurement: where in the run it was taken, and the scores.
#[derive(Debug, Clone, PartialEq)]
pub struct FidelityPoint {
    /// Seconds of training since the run began (all stages).
    pub seconds: f64,
    /// Stage number (1-based, as the config lists them).
    pub stage: usize,
    /// The stage's name (`dit`, `decoder`).
    pub stage_name: String,
    /// Steps of that stage done.
    pub step: usize,
    /// Joint accuracy (colour, object and direction right) on the training compositions.
    pub train_joint: f64,
    /// Joint accuracy on the held-out compositions.
    pub held_out_joint: f64,
    /// Colour accuracy over all compositions.
    pub colour: f64,
    /// Shape (Moving Shapes) or class (Moving Fashion) accuracy over all compositions.
    pub object: f64,
    /// Direction accuracy over all compositions.
    pub direction: f64,
}

impl FidelityPoint {
    /// A point from the scores of [`measure`].
    pub fn new(
        seconds: f64,
        stage: usize,
        stage_name: &str,
        step: usize,
        (train, held_out): (SplitScores, SplitScores),
    ) -> Self {
        let n = (train.clips + held_out.clips).max(1) as f64;
        let all = |f: fn(&SplitScores) -> f64| {
            (f(&train) * train.clips as f64 + f(&held_out) * held_out.clips as f64) / n
        };
        Self {
            seconds,
            stage,
            stage_name: stage_name.to_string(),
            step,
            train_joint: train.joint,
            held_out_joint: held_out.joint,
            colour: all(|s| s.colour),
            object: all(|s| s.object),
            direction: all(|s| s.direction),
        }
    }

    /// The point in words, for progress lines.
    pub fn summary(&self) -> String {
        format!(
            "fidelity joint {:.3} (training) / {:.3} (held out), colour {:.3}, direction {:.3}",
            self.train_joint, self.held_out_joint, self.colour, self.direction
        )
    }

    fn to_line(&self) -> String {
        format!(
            "{:.1},{},{},{},{:.4},{:.4},{:.4},{:.4},{:.4}",
            self.seconds,
            self.stage,
            self.stage_name,
            self.step,
            self.train_joint,
            self.held_out_joint,
            self.colour,
            self.object,
            self.direction
        )
    }

    fn parse(line: &str) -> Option<Self> {
        let f: Vec<&str> = line.split(',').collect();
        let [
            seconds,
            stage,
            stage_name,
            step,
            train,
            held,
            colour,
            object,
            direction,
        ] = f[..]
        else {
            return None;
        };
        Some(Self {
            seconds: seconds.parse().ok()?,
            stage: stage.parse().ok()?,
            stage_name: stage_name.to_string(),
            step: step.parse().ok()?,
            train_joint: train.parse().ok()?,
            held_out_joint: held.parse().ok()?,
            colour: colour.parse().ok()?,
            object: object.parse().ok()?,
            direction: direction.parse().ok()?,
        })
    }
}

/// Whether a run measures its fidelity: its data must be a built-in data set, whose
/// compositions and captions the measurement asks for (a folder of clips has its own
/// vocabulary and subjects); Moving Fashion also needs its judge, the shipped classifier.
pub fn measures_fidelity(config: &ExperimentConfig) -> bool {
    match config.data.training_data() {
        TrainingData::MovingShapes => true,
        TrainingData::MovingFashion => default_classifier().join(CLASSIFIER_FILE).is_file(),
        TrainingData::Folder => false,
    }
}

/// Judges `model` on every composition once ([`quick_scores`], [`quick_fashion_scores`])
/// with `steps` steps of its default sampler (DDIM, or Euler for a flow), the run's
/// guidance and seed.
pub fn measure(
    model: TextToVideo,
    steps: usize,
    guidance: f64,
    seed: u64,
    device: &Device,
) -> Result<(SplitScores, SplitScores)> {
    let sampling = GenerateOptions {
        steps,
        sampler: model.spec.diffusion.process().default_sampler(),
        guidance,
        seed,
        prompt_offset: 0,
    };
    if model.spec.training_data() == TrainingData::MovingFashion {
        let (classifier, _) = load_classifier(&default_classifier(), device)?;
        let (train, held_out) = quick_fashion_scores(model, &classifier, &sampling, device)?;
        return Ok((train.into(), held_out.into()));
    }
    let options = EvalOptions {
        seeds: 1,
        sampling,
        batch: 24,
    };
    let (train, held_out) = quick_scores(model, &options, device)?;
    Ok((train.into(), held_out.into()))
}

/// `fidelity.csv` of a run folder, kept consistent with the checkpoints.
pub struct FidelityLog {
    run_dir: PathBuf,
}

impl FidelityLog {
    /// Opens (or creates) the log of `run_dir`, keeping only the points taken up to
    /// step `step` of stage `stage`: a stage that continues from a checkpoint, or starts
    /// again, drops what its interrupted attempt measured after that.
    pub fn open(run_dir: &Path, stage: usize, step: usize) -> Result<Self> {
        let path = run_dir.join(FIDELITY_FILE);
        let kept: Vec<FidelityPoint> = read_points(&path)
            .unwrap_or_default()
            .into_iter()
            .filter(|p| (p.stage, p.step) <= (stage, step))
            .collect();
        let mut text = format!("{HEADER}\n");
        for point in &kept {
            text.push_str(&point.to_line());
            text.push('\n');
        }
        // Atomically: a run killed while rewriting must not lose the points it keeps.
        write_atomic(&path, text.as_bytes())?;
        Ok(Self {
            run_dir: run_dir.to_path_buf(),
        })
    }

    /// Appends a point and redraws the chart.
    pub fn append(&self, point: &FidelityPoint) -> Result<()> {
        let path = self.run_dir.join(FIDELITY_FILE);
        let mut file = OpenOptions::new()
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        writeln!(file, "{}", point.to_line())?;
        write_chart(&self.run_dir)?;
        Ok(())
    }
}

/// The points of a fidelity log.
pub fn read_points(path: &Path) -> std::io::Result<Vec<FidelityPoint>> {
    Ok(fs::read_to_string(path)?
        .lines()
        .skip(1)
        .filter_map(FidelityPoint::parse)
        .collect())
}

/// The chart of `points`: accuracies against minutes of training, from the start of the
/// run. For Moving Shapes (`data`), the object is the shape and the bar's joint accuracy on
/// the training compositions is a line; for Moving Fashion the object is the class (its bar
/// is a fraction of the judge's ceiling, drawn by `dit-infer eval`, not here).
pub fn chart(points: &[FidelityPoint], data: TrainingData) -> LineChart {
    let series = |f: fn(&FidelityPoint) -> f64| -> Vec<(f64, f64)> {
        points.iter().map(|p| (p.seconds / 60.0, f(p))).collect()
    };
    let end = points.iter().fold(1.0f64, |m, p| m.max(p.seconds / 60.0));
    let mut chart = LineChart::new(
        "Prompt fidelity during training (EMA model, every composition, one clip each)",
        "minutes of training, all stages",
        "fraction of clips judged right",
    )
    .y_scale(YScale::Linear)
    .smooth(false);
    let object = if data == TrainingData::MovingFashion {
        "class"
    } else {
        let bar = dit_infer::eval::BAR.train_joint;
        chart = chart.series(
            format!("the bar: joint {bar} on the training compositions"),
            vec![(0.0, bar), (end, bar)],
        );
        "shape"
    };
    chart
        .series("joint, training compositions", series(|p| p.train_joint))
        .series("joint, held-out compositions", series(|p| p.held_out_joint))
        .series("colour", series(|p| p.colour))
        .series(object, series(|p| p.object))
        .series("direction", series(|p| p.direction))
}

/// Draws `fidelity.png` of a run folder from its `fidelity.csv`.
pub fn write_chart(run_dir: &Path) -> Result<PathBuf> {
    let csv = run_dir.join(FIDELITY_FILE);
    let points = read_points(&csv).with_context(|| format!("cannot read {}", csv.display()))?;
    let png = run_dir.join(FIDELITY_CHART);
    let (w, h) = CHART_SIZE;
    let data = read_spec(run_dir).map_or(TrainingData::MovingShapes, |s| s.training_data());
    chart(&points, data).write(&png, w, h)?;
    Ok(png)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(stage: usize, step: usize, joint: f64) -> FidelityPoint {
        FidelityPoint {
            seconds: (stage * 100 + step) as f64,
            stage,
            stage_name: "dit".into(),
            step,
            train_joint: joint,
            held_out_joint: joint / 2.0,
            colour: 1.0,
            object: joint,
            direction: 0.5,
        }
    }

    #[test]
    fn points_combine_scores_and_round_trip_through_the_file() {
        let scores = |clips, x: f64| Scores {
            clips,
            colour: x,
            shape: x,
            direction: x,
            joint: x,
            area_variation: 0.0,
        };
        // 66 training clips all right, 6 held-out clips all wrong: 66/72 overall.
        let p = FidelityPoint::new(
            12.0,
            3,
            "dit",
            500,
            (scores(66, 1.0).into(), scores(6, 0.0).into()),
        );
        assert_eq!((p.train_joint, p.held_out_joint), (1.0, 0.0));
        assert!((p.colour - 66.0 / 72.0).abs() < 1e-12);
        assert_eq!(
            FidelityPoint::parse(&p.to_line()).unwrap().to_line(),
            p.to_line()
        );
    }

    #[test]
    fn the_chart_draws_the_bar_and_the_shape_for_moving_shapes_and_the_class_for_fashion() {
        let points = [point(2, 10, 0.25)];
        let shapes = chart(&points, TrainingData::MovingShapes);
        assert_eq!(
            shapes.series_names(),
            [
                "the bar: joint 0.95 on the training compositions",
                "joint, training compositions",
                "joint, held-out compositions",
                "colour",
                "shape",
                "direction"
            ]
        );
        let fashion = chart(&points, TrainingData::MovingFashion);
        assert_eq!(
            fashion.series_names(),
            [
                "joint, training compositions",
                "joint, held-out compositions",
                "colour",
                "class",
                "direction"
            ]
        );
    }

    #[test]
    fn reopening_drops_points_past_the_resumed_step() {
        let dir = tempfile::tempdir().unwrap();
        let log = FidelityLog::open(dir.path(), 1, 0).unwrap();
        for p in [point(2, 10, 0.25), point(2, 20, 0.5), point(3, 5, 0.75)] {
            log.append(&p).unwrap();
        }
        assert!(dir.path().join(FIDELITY_CHART).is_file());
        // Stage 2 resumed from its step-10 checkpoint: its later point and stage 3 go.
        FidelityLog::open(dir.path(), 2, 10).unwrap();
        let points = read_points(&dir.path().join(FIDELITY_FILE)).unwrap();
        assert_eq!(points, vec![point(2, 10, 0.25)]);
    }
}
