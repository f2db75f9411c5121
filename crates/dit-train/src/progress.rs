//! What a person watching training sees: a progress bar (plain lines when not
//! on a terminal), a loss CSV, and its chart (drawn by [`dit_data::figure`]).

use std::fs::{self, OpenOptions};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use dit_data::figure::{LineChart, Mark};
use dit_model::run::{
    AUTOENCODER_LOSS_LOG, DECODER_LOSS_LOG, DIT_LOSS_LOG, loss_paths, write_atomic,
};
use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar over training steps with loss, steps/s and ETA.
pub struct Progress {
    bar: Option<ProgressBar>,
    label: &'static str,
    total: usize,
    start: Instant,
    start_step: usize,
}

impl Progress {
    /// A bar for steps `start..total`.
    pub fn new(label: &'static str, start: usize, total: usize) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{elapsed_precise}] {bar:30} {pos}/{len} {per_sec} ETA {eta} {msg}",
                )
                .expect("valid template"),
            );
            bar.set_prefix(label);
            bar.set_position(start as u64);
            bar
        });
        Self {
            bar,
            label,
            total,
            start: Instant::now(),
            start_step: start,
        }
    }

    /// Marks `step` done; `message` (e.g. the loss) is shown on the bar, and
    /// printed as a line when `log` is set and there is no terminal.
    pub fn update(&self, step: usize, message: &str, log: bool) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(step as u64);
                bar.set_message(message.to_string());
            }
            None if log => {
                let done = step - self.start_step;
                let rate = done as f64 / self.start.elapsed().as_secs_f64().max(1e-9);
                let eta = (self.total - step) as f64 / rate.max(1e-9);
                eprintln!(
                    "{} step {step}/{} {message} ({rate:.2} steps/s, ETA {eta:.0} s)",
                    self.label, self.total
                );
            }
            None => {}
        }
    }

    /// Prints a line without breaking the bar.
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    /// Seconds since the bar started.
    pub fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// `step,loss,learning_rate,seconds` lines in a CSV file, kept consistent with
/// checkpoints: on resume, lines past the resumed step are dropped.
///
/// A line `# at step N: TEXT` notes that something began after step `N` (a resumption, a
/// fine-tuning round); the loss chart draws it as a mark. Readers skip lines that start
/// with `#`, so logs written before such notes existed read the same.
pub struct LossLog {
    path: PathBuf,
}

/// What a loss log holds: its `(step, loss)` points and its notes as chart marks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LossRecord {
    /// `(step, loss)` in file order.
    pub points: Vec<(f64, f64)>,
    /// Where something began, and what.
    pub marks: Vec<Mark>,
}

const HEADER: &str = "step,loss,learning_rate,seconds";
const NOTE: &str = "# at step ";

/// The step of a data line or of a note line.
fn line_step(line: &str) -> Option<usize> {
    match line.strip_prefix(NOTE) {
        Some(note) => note.split_once(':')?.0.trim().parse().ok(),
        None => line.split(',').next()?.trim().parse().ok(),
    }
}

/// The `(step, loss)` of a data line.
fn data_point(line: &str) -> Option<(f64, f64)> {
    let mut parts = line.split(',');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

impl LossRecord {
    /// Parses the text of a loss log; lines that are neither data nor notes are skipped.
    pub fn parse(text: &str) -> Self {
        let mut record = Self::default();
        for line in text.lines() {
            if let Some(note) = line.strip_prefix(NOTE) {
                if let Some((step, label)) = note.split_once(':')
                    && let Ok(step) = step.trim().parse::<f64>()
                {
                    record.marks.push(Mark {
                        x: step,
                        label: label.trim().to_string(),
                    });
                }
                continue;
            }
            record.points.extend(data_point(line));
        }
        record
    }

    /// Reads the loss log at `path`.
    pub fn read(path: &Path) -> std::io::Result<Self> {
        Ok(Self::parse(&fs::read_to_string(path)?))
    }
}

impl LossLog {
    /// Opens (or creates) `path`, keeping only lines with step ≤ `keep_until`; with
    /// `begins`, notes that it begins after step `keep_until` (replacing an earlier note of
    /// that step, left by an attempt that was interrupted).
    pub fn open(path: &Path, keep_until: usize, begins: Option<&str>) -> std::io::Result<Self> {
        let kept: Vec<String> = match fs::read_to_string(path) {
            Ok(text) => text
                .lines()
                .filter(|l| match line_step(l) {
                    Some(step) if l.starts_with('#') && begins.is_some() => step < keep_until,
                    Some(step) => step <= keep_until,
                    None => false,
                })
                .map(str::to_owned)
                .collect(),
            Err(_) => Vec::new(),
        };
        let mut text = format!("{HEADER}\n");
        for line in kept {
            text.push_str(&line);
            text.push('\n');
        }
        if let Some(what) = begins {
            // One line, whatever the caller wrote.
            let what = what.replace(['\n', '\r'], " ");
            text.push_str(&format!("{NOTE}{keep_until}: {what}\n"));
        }
        // Atomically: a run killed while rewriting must not lose the lines it keeps (a
        // truncated log would stay truncated when the run resumes).
        write_atomic(path, text.as_bytes()).map_err(std::io::Error::other)?;
        Ok(Self {
            path: path.to_path_buf(),
        })
    }

    /// Appends one line.
    pub fn append(&self, step: usize, loss: f64, lr: f64, seconds: f64) -> std::io::Result<()> {
        let mut file = OpenOptions::new().append(true).open(&self.path)?;
        writeln!(file, "{step},{loss:.6},{lr:.3e},{seconds:.1}")
    }

    /// What is logged so far (empty if the file cannot be read).
    pub fn record(&self) -> LossRecord {
        LossRecord::read(&self.path).unwrap_or_default()
    }
}

/// The loss logs a run folder can hold, and how each is charted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossChart {
    /// Stage 2: `loss.csv`, `loss.png`.
    Dit,
    /// Stage 1: `autoencoder_loss.csv`, `autoencoder_loss.png`.
    Autoencoder,
    /// Decoder fine-tuning, all rounds: `decoder_loss.csv`, `decoder_loss.png`.
    Decoder,
}

/// Size of a loss chart in pixels.
pub const LOSS_CHART_SIZE: (usize, usize) = (800, 440);

impl LossChart {
    /// Every kind, in training order.
    pub const ALL: [LossChart; 3] = [LossChart::Autoencoder, LossChart::Decoder, LossChart::Dit];

    /// The file stem of its CSV and PNG in the run folder.
    pub fn log_name(self) -> &'static str {
        match self {
            LossChart::Dit => DIT_LOSS_LOG,
            LossChart::Autoencoder => AUTOENCODER_LOSS_LOG,
            LossChart::Decoder => DECODER_LOSS_LOG,
        }
    }

    /// The chart of `record`.
    pub fn chart(self, record: LossRecord) -> LineChart {
        let (title, x_label, y_label) = match self {
            LossChart::Dit => (
                "DiT training loss (stage 2)",
                "training step",
                "diffusion loss, MSE",
            ),
            LossChart::Autoencoder => (
                "Autoencoder training (stage 1)",
                "training step",
                "reconstruction MSE",
            ),
            LossChart::Decoder => (
                "Decoder fine-tuning, encoder frozen (all rounds)",
                "decoder step",
                "reconstruction MSE",
            ),
        };
        LineChart::new(title, x_label, y_label)
            .series("loss", record.points)
            .marks(record.marks)
    }

    /// Draws the chart of the run folder's log of this kind over its PNG; returns the PNG's
    /// path.
    pub fn write(self, run_dir: &Path) -> anyhow::Result<PathBuf> {
        let (csv, png) = loss_paths(run_dir, self.log_name());
        let record = LossRecord::read(&csv)
            .with_context(|| format!("cannot read loss log {}", csv.display()))?;
        let (w, h) = LOSS_CHART_SIZE;
        self.chart(record).write(&png, w, h)?;
        Ok(png)
    }
}

/// Redraws the chart of every loss log in `run_dir`; returns the PNGs written.
pub fn replot(run_dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let present: Vec<LossChart> = LossChart::ALL
        .into_iter()
        .filter(|kind| loss_paths(run_dir, kind.log_name()).0.is_file())
        .collect();
    if present.is_empty() {
        anyhow::bail!(
            "{} holds no loss log (loss.csv, autoencoder_loss.csv, decoder_loss.csv)",
            run_dir.display()
        );
    }
    present
        .into_iter()
        .map(|kind| kind.write(run_dir))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_drops_lines_past_the_resumed_step_and_notes_the_resumption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("loss.csv");
        let log = LossLog::open(&path, 0, None).unwrap();
        for step in [10, 20, 30] {
            log.append(step, 0.5, 1e-3, 1.0).unwrap();
        }
        let log = LossLog::open(&path, 20, Some("resumed")).unwrap();
        log.append(30, 0.25, 1e-3, 1.0).unwrap();
        let record = log.record();
        assert_eq!(record.points, vec![(10.0, 0.5), (20.0, 0.5), (30.0, 0.25)]);
        let mark = |x: f64, label: &str| Mark {
            x,
            label: label.into(),
        };
        assert_eq!(record.marks, vec![mark(20.0, "resumed")]);
        // Resumed again at the same step (an interrupted attempt): one note, not two;
        // resumed earlier: the later note and points go.
        LossLog::open(&path, 20, Some("resumed")).unwrap();
        assert_eq!(LossRecord::read(&path).unwrap().marks.len(), 1);
        let record = LossLog::open(&path, 10, Some("resumed\nagain"))
            .unwrap()
            .record();
        assert_eq!(record.points, vec![(10.0, 0.5)]);
        assert_eq!(record.marks, vec![mark(10.0, "resumed again")]);
        // Without a note, earlier notes are kept.
        let record = LossLog::open(&path, 10, None).unwrap().record();
        assert_eq!(record.marks, vec![mark(10.0, "resumed again")]);
    }

    #[test]
    fn logs_without_notes_read_as_before() {
        let record = LossRecord::parse(
            "step,loss,learning_rate,seconds\n25,0.968933,6.250e-5,14.4\n50,0.762662,1.250e-4,29.2\n",
        );
        assert_eq!(record.points, vec![(25.0, 0.968933), (50.0, 0.762662)]);
        assert!(record.marks.is_empty());
        // The shipped logs parse, with the notes written into them.
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../checkpoints/tiny");
        let dit = LossRecord::read(&shipped.join("loss.csv")).unwrap();
        assert_eq!(dit.points.len(), 320);
        assert!(dit.marks.is_empty());
        let decoder = LossRecord::read(&shipped.join("decoder_loss.csv")).unwrap();
        assert_eq!(decoder.points.len(), 80);
        assert_eq!(decoder.marks.len(), 1);
        assert_eq!(decoder.marks[0].x, 0.0);
        assert!(
            decoder.marks[0].label.contains("DiT-denoised"),
            "{:?}",
            decoder.marks
        );
    }

    #[test]
    fn replot_draws_every_log_of_a_run_folder() {
        let dir = tempfile::tempdir().unwrap();
        let err = replot(dir.path()).unwrap_err().to_string();
        assert!(err.contains("no loss log"), "{err}");
        let log = LossLog::open(&dir.path().join("loss.csv"), 0, None).unwrap();
        for step in 1..=40 {
            log.append(step * 10, 1.0 / step as f64, 1e-3, 1.0).unwrap();
        }
        LossLog::open(
            &dir.path().join("decoder_loss.csv"),
            0,
            Some("clean latents"),
        )
        .unwrap();
        let written = replot(dir.path()).unwrap();
        assert_eq!(
            written,
            [
                dir.path().join("decoder_loss.png"),
                dir.path().join("loss.png")
            ]
        );
        let (w, h) = LOSS_CHART_SIZE;
        let chart = LossChart::Dit
            .chart(LossRecord::read(&dir.path().join("loss.csv")).unwrap())
            .render(w, h)
            .unwrap();
        assert!(chart.layout.log_y && chart.layout.smoothing_window > 1);
        assert_eq!(chart.layout.y_ticks, [0.05, 0.1, 0.2, 0.5, 1.0]);
        // An empty log (a run that logged nothing yet) is a chart with a note.
        let empty = LossChart::Decoder
            .chart(LossRecord::read(&dir.path().join("decoder_loss.csv")).unwrap())
            .render(w, h)
            .unwrap();
        assert!(empty.layout.note.is_some());
    }
}
