//! Preview sheets during training: the EMA model samples a fixed set of prompts
//! every `preview_every` steps, so a run can be watched as it learns.

use std::path::{Path, PathBuf};

use anyhow::Result;
use burn::tensor::Device;
use dit_data::figure::write_prompt_sheet;
use dit_infer::pipeline::{GenerateOptions, TextToVideo, generate};
use dit_model::run::preview_path;

/// Denoising steps of a preview (fewer than generation's default: previews are frequent).
const PREVIEW_STEPS: usize = 25;

/// Samples `prompts` with `model` and writes their sheet for `step` into the run folder.
pub(crate) fn write_preview(
    model: TextToVideo<'_>,
    prompts: &[String],
    guidance: f64,
    seed: u64,
    run_dir: &Path,
    step: usize,
    device: &Device,
) -> Result<PathBuf> {
    let options = GenerateOptions {
        steps: PREVIEW_STEPS,
        sampler: model.spec.diffusion.process().default_sampler(),
        guidance,
        seed,
        prompt_offset: 0,
    };
    let clips = generate(model, prompts, &options, device, |_| {})?;
    let path = preview_path(run_dir, step);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let header = format!(
        "training step {step} · EMA weights · seed {seed} · {PREVIEW_STEPS} DDIM steps · guidance {guidance}"
    );
    write_prompt_sheet(&path, &header, &clips, prompts, 2)?;
    Ok(path)
}
