//! What a person watching training sees: a progress bar (plain lines when not
//! on a terminal), a loss CSV, and a loss-curve PNG.

use std::fs::{self, OpenOptions};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

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
pub struct LossLog {
    path: PathBuf,
}

impl LossLog {
    /// Opens (or creates) `path`, keeping only lines with step ≤ `keep_until`.
    pub fn open(path: &Path, keep_until: usize) -> std::io::Result<Self> {
        let kept: Vec<String> = match fs::read_to_string(path) {
            Ok(text) => text
                .lines()
                .skip(1)
                .filter(|l| {
                    l.split(',')
                        .next()
                        .and_then(|s| s.parse::<usize>().ok())
                        .is_some_and(|s| s <= keep_until)
                })
                .map(str::to_owned)
                .collect(),
            Err(_) => Vec::new(),
        };
        let mut text = String::from("step,loss,learning_rate,seconds\n");
        for line in kept {
            text.push_str(&line);
            text.push('\n');
        }
        fs::write(path, text)?;
        Ok(Self {
            path: path.to_path_buf(),
        })
    }

    /// Appends one line.
    pub fn append(&self, step: usize, loss: f64, lr: f64, seconds: f64) -> std::io::Result<()> {
        let mut file = OpenOptions::new().append(true).open(&self.path)?;
        writeln!(file, "{step},{loss:.6},{lr:.3e},{seconds:.1}")
    }

    /// `(step, loss)` pairs logged so far.
    pub fn points(&self) -> Vec<(f64, f64)> {
        fs::read_to_string(&self.path)
            .unwrap_or_default()
            .lines()
            .skip(1)
            .filter_map(|l| {
                let mut parts = l.split(',');
                Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
            })
            .collect()
    }
}

/// Draws `points` as a loss curve (log-scale loss, with a running mean) into an RGB image.
///
/// Axes are unlabelled; the CSV beside the picture has the numbers. Grid lines
/// mark each power of ten of the loss.
pub fn plot_loss(points: &[(f64, f64)], width: usize, height: usize) -> Vec<u8> {
    let mut rgb = vec![255u8; width * height * 3];
    let points: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|p| p.1 > 0.0 && p.1.is_finite())
        .collect();
    if points.len() < 2 {
        return rgb;
    }
    let margin = 10.0;
    let (x_max, x_min) = (points.last().unwrap().0, points[0].0);
    let logs: Vec<f64> = points.iter().map(|p| p.1.log10()).collect();
    let (y_min, y_max) = (
        logs.iter().cloned().fold(f64::MAX, f64::min).floor(),
        logs.iter().cloned().fold(f64::MIN, f64::max).ceil(),
    );
    let to_px = |x: f64, y: f64| {
        let px = margin + (x - x_min) / (x_max - x_min).max(1e-9) * (width as f64 - 2.0 * margin);
        let py = height as f64
            - margin
            - (y - y_min) / (y_max - y_min).max(1e-9) * (height as f64 - 2.0 * margin);
        (px, py)
    };
    let mut put = |x: f64, y: f64, c: [u8; 3]| {
        let (x, y) = (x.round() as i64, y.round() as i64);
        if x >= 0 && y >= 0 && (x as usize) < width && (y as usize) < height {
            let i = (y as usize * width + x as usize) * 3;
            rgb[i..i + 3].copy_from_slice(&c);
        }
    };
    let mut decade = y_min;
    while decade <= y_max {
        let (_, py) = to_px(x_min, decade);
        for x in 0..width {
            put(x as f64, py, [220, 220, 220]);
        }
        decade += 1.0;
    }
    let line =
        |put: &mut dyn FnMut(f64, f64, [u8; 3]), a: (f64, f64), b: (f64, f64), c: [u8; 3]| {
            let n = ((b.0 - a.0).abs().max((b.1 - a.1).abs()) as usize).max(1);
            for i in 0..=n {
                let t = i as f64 / n as f64;
                put(a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t, c);
            }
        };
    let raw: Vec<(f64, f64)> = points
        .iter()
        .zip(&logs)
        .map(|(p, &l)| to_px(p.0, l))
        .collect();
    for w in raw.windows(2) {
        line(&mut put, w[0], w[1], [170, 190, 230]);
    }
    let window = (points.len() / 30).max(1);
    let smooth: Vec<(f64, f64)> = (0..points.len())
        .map(|i| {
            let lo = i.saturating_sub(window);
            let mean = logs[lo..=i].iter().sum::<f64>() / (i - lo + 1) as f64;
            to_px(points[i].0, mean)
        })
        .collect();
    for w in smooth.windows(2) {
        line(&mut put, w[0], w[1], [20, 60, 200]);
    }
    rgb
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_drops_lines_past_the_resumed_step() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("loss.csv");
        let log = LossLog::open(&path, 0).unwrap();
        for step in [10, 20, 30] {
            log.append(step, 0.5, 1e-3, 1.0).unwrap();
        }
        let log = LossLog::open(&path, 20).unwrap();
        assert_eq!(log.points(), vec![(10.0, 0.5), (20.0, 0.5)]);
    }

    #[test]
    fn plot_draws_the_curve() {
        let points: Vec<(f64, f64)> = (1..100).map(|i| (i as f64, 1.0 / i as f64)).collect();
        let rgb = plot_loss(&points, 200, 100);
        let dark = rgb.chunks(3).filter(|p| p[2] == 200).count();
        assert!(dark > 100, "{dark} curve pixels");
    }
}
