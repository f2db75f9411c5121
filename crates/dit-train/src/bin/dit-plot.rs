//! `dit-plot`: redraws the charts of run folders from their logs (`loss.csv`,
//! `autoencoder_loss.csv`, `decoder_loss.csv`, `fidelity.csv` → the `.png` beside each),
//! e.g. after a change to how charts are drawn: `cargo run --release -p dit-train --bin dit-plot
//! -- checkpoints/tiny`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use dit_model::run::FIDELITY_FILE;
use dit_train::fidelity::write_chart;
use dit_train::progress::replot;

/// Redraw the loss and fidelity charts of run folders.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Run folders (or shipped checkpoints) holding loss logs.
    #[arg(required = true)]
    runs: Vec<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    for run in &args.runs {
        let fidelity = run.join(FIDELITY_FILE).is_file().then(|| write_chart(run));
        match replot(run).and_then(|mut written| {
            written.extend(fidelity.transpose()?);
            Ok(written)
        }) {
            Ok(written) => written
                .iter()
                .for_each(|p| println!("wrote {}", p.display())),
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
