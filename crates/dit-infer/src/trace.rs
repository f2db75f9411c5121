//! `dit-infer trace`: one prompt through the whole pipeline, step by step, from the
//! model's real tensors. It writes a self-contained page (`index.html`, pictures
//! embedded, opens from disk), each picture as a PNG, the generated clip as a GIF, and
//! the numbers behind them in `trace.json`.
//!
//! The sections follow the pipeline: the input clip, its spacetime patches, the
//! encoder's latent, forward diffusion at step t, the conditioning, each block's adaLN
//! values, self-attention of one token, the MLP's activations, the predicted noise (the
//! training loss of this example), the sampler's path, and the decoded clip.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use dit_data::fashion::FashionComposition;
use dit_data::figure::{Align, Image, LineChart, TextStyle, YScale, draw_text, text_width};
use dit_data::idx::fashion_mnist_dir;
use dit_data::moving_fashion::{MovingFashion, MovingFashionConfig};
use dit_data::video::{read_clip, write_gif};
use dit_data::{
    CaptionMode, Clip, Composition, MovingShapes, MovingShapesConfig, Split, clip_to_tensor_data,
    judge_clip,
};
use dit_model::noise::gaussian;
use dit_model::seed::{Stream, rng_for};
use dit_model::{PromptInput, RunSpec, TrainedModel, TrainingData};
use serde_json::{Value, json};

use crate::pipeline::{GenerateOptions, decode_latent, generate, prompt_input};

/// What to trace.
#[derive(Debug, Clone)]
pub struct TraceOptions {
    /// The prompt.
    pub prompt: String,
    /// A clip to trace instead of a training clip of the prompt's composition.
    pub video: Option<PathBuf>,
    /// The diffusion step of the training view (default: the middle one).
    pub t: Option<usize>,
    /// The query token of the attention maps, `[frame, row, column]` of the patch grid
    /// (default: the middle one).
    pub token: Option<[usize; 3]>,
    /// The sampler's settings for the generation sections.
    pub sampling: GenerateOptions,
}

/// A picture of the page: its file name and caption.
struct Figure {
    file: String,
    caption: String,
}

/// One section of the page.
struct Section {
    title: String,
    text: String,
    figures: Vec<Figure>,
    table: Option<(Vec<String>, Vec<Vec<String>>)>,
}

/// The values of a tensor, in row-major order.
fn values<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("cannot read a tensor: {e:?}"))
}

/// Rounds for JSON (6 significant digits are plenty to read).
fn rounded(v: &[f32]) -> Vec<f64> {
    v.iter().map(|x| (*x as f64 * 1e6).round() / 1e6).collect()
}

// ------------------------------------------------------------------------------------------
// Pictures
// ------------------------------------------------------------------------------------------

const WHITE: [u8; 3] = [255, 255, 255];

fn blank(width: usize, height: usize) -> Image {
    Image {
        width,
        height,
        rgb: WHITE.repeat(width * height),
    }
}

/// Copies `src` into `dst` with its top left at `(x0, y0)` (clipped).
fn blit(dst: &mut Image, src: &Image, x0: usize, y0: usize) {
    for y in 0..src.height.min(dst.height.saturating_sub(y0)) {
        for x in 0..src.width.min(dst.width.saturating_sub(x0)) {
            let s = (y * src.width + x) * 3;
            let d = ((y0 + y) * dst.width + x0 + x) * 3;
            dst.rgb[d..d + 3].copy_from_slice(&src.rgb[s..s + 3]);
        }
    }
}

/// The frames of a clip side by side, each pixel `scale×scale`, `gap` pixels apart.
fn frames_strip(clip: &Clip, scale: usize, gap: usize) -> Image {
    let (w, h) = (clip.width * scale, clip.height * scale);
    let mut image = blank(clip.frames * (w + gap) - gap, h);
    for f in 0..clip.frames {
        for y in 0..h {
            for x in 0..w {
                let d = (y * image.width + f * (w + gap) + x) * 3;
                image.rgb[d..d + 3].copy_from_slice(&clip.pixel(f, y / scale, x / scale));
            }
        }
    }
    image
}

/// A `rows × cols` map of `values`, each value a `scale×scale` square: blue below zero,
/// white at zero, red above, saturated at `±range`.
fn diverging(values: &[f32], rows: usize, cols: usize, scale: usize, range: f32) -> Image {
    let colour = |v: f32| {
        let a = (v / range.max(1e-12)).clamp(-1.0, 1.0);
        let fade = |c: f32| (255.0 * (1.0 - a.abs()) + c * a.abs()).round() as u8;
        if a >= 0.0 {
            [fade(200.0), fade(30.0), fade(30.0)]
        } else {
            [fade(30.0), fade(70.0), fade(200.0)]
        }
    };
    map(values, rows, cols, scale, colour)
}

/// A `rows × cols` map of non-negative `values`, white at 0 to dark violet at `max`.
fn sequential(values: &[f32], rows: usize, cols: usize, scale: usize, max: f32) -> Image {
    let colour = |v: f32| {
        let a = (v / max.max(1e-12)).clamp(0.0, 1.0);
        let mix = |lo: f32, hi: f32| (lo + (hi - lo) * a).round() as u8;
        [mix(255.0, 60.0), mix(255.0, 20.0), mix(255.0, 110.0)]
    };
    map(values, rows, cols, scale, colour)
}

fn map(
    values: &[f32],
    rows: usize,
    cols: usize,
    scale: usize,
    colour: impl Fn(f32) -> [u8; 3],
) -> Image {
    let mut image = blank(cols * scale, rows * scale);
    for r in 0..rows {
        for c in 0..cols {
            let rgb = colour(values[r * cols + c]);
            for y in r * scale..(r + 1) * scale {
                for x in c * scale..(c + 1) * scale {
                    let d = (y * image.width + x) * 3;
                    image.rgb[d..d + 3].copy_from_slice(&rgb);
                }
            }
        }
    }
    image
}

/// Cells in rows, each row with a label on its left, and column labels on top.
fn grid(rows: &[(String, Vec<Image>)], columns: &[String], gap: usize) -> Result<Image> {
    const SIZE: f32 = 13.0;
    let label_w = rows
        .iter()
        .map(|(l, _)| text_width(l, SIZE))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .max()
        .unwrap_or(0)
        + 8;
    let cell_w = rows
        .iter()
        .flat_map(|(_, c)| c.iter().map(|i| i.width))
        .max()
        .unwrap_or(1);
    let cell_h = rows
        .iter()
        .flat_map(|(_, c)| c.iter().map(|i| i.height))
        .max()
        .unwrap_or(1);
    let ncols = rows.iter().map(|(_, c)| c.len()).max().unwrap_or(0);
    let header = if columns.is_empty() { 0 } else { 20 };
    let mut image = blank(
        label_w + ncols * (cell_w + gap) + gap,
        header + rows.len() * (cell_h + gap) + gap,
    );
    for (i, name) in columns.iter().enumerate() {
        let x = label_w + i * (cell_w + gap) + cell_w / 2;
        draw_text(
            &mut image,
            name,
            (x as i64, 2),
            TextStyle::new(SIZE).anchor(Align::Middle, Align::Start),
        )?;
    }
    for (r, (label, cells)) in rows.iter().enumerate() {
        let y = header + r * (cell_h + gap) + gap;
        draw_text(
            &mut image,
            label,
            (label_w as i64 - 6, (y + cell_h / 2) as i64),
            TextStyle::new(SIZE).anchor(Align::End, Align::Middle),
        )?;
        for (c, cell) in cells.iter().enumerate() {
            blit(&mut image, cell, label_w + c * (cell_w + gap), y);
        }
    }
    Ok(image)
}

/// Images one above the other.
fn stack(images: &[Image]) -> Image {
    let width = images.iter().map(|i| i.width).max().unwrap_or(1);
    let mut out = blank(width, images.iter().map(|i| i.height).sum::<usize>().max(1));
    let mut y = 0;
    for image in images {
        blit(&mut out, image, 0, y);
        y += image.height;
    }
    out
}

/// Mean and standard deviation of `v`.
fn mean_std(v: &[f32]) -> (f32, f32) {
    let n = v.len().max(1) as f32;
    let mean = v.iter().sum::<f32>() / n;
    (
        mean,
        (v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / n).sqrt(),
    )
}

/// Largest absolute value (at least a tiny positive number).
fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(1e-12f32, |m, x| m.max(x.abs()))
}

/// The latent `[C, F, h, w]` (one clip) as a grid: a row per channel, a column per frame.
fn latent_grid(latent: &[f32], [c, f, h, w]: [usize; 4], scale: usize) -> Result<Image> {
    let range = max_abs(latent);
    let rows: Vec<(String, Vec<Image>)> = (0..c)
        .map(|ch| {
            let cells = (0..f)
                .map(|fr| {
                    let start = (ch * f + fr) * h * w;
                    diverging(&latent[start..start + h * w], h, w, scale, range)
                })
                .collect();
            (format!("channel {ch}"), cells)
        })
        .collect();
    let columns: Vec<String> = (0..f).map(|fr| format!("frame {fr}")).collect();
    grid(&rows, &columns, 3)
}

// ------------------------------------------------------------------------------------------
// The trace
// ------------------------------------------------------------------------------------------

/// A training clip of the composition `prompt` names, from the data set the model was
/// trained on, and where it came from in words.
fn training_clip(spec: &RunSpec, prompt: &str, seed: u64) -> Result<(Clip, String)> {
    let missing = |data: &str| {
        anyhow::anyhow!(
            "the prompt names no {data} colour, object and direction: give the clip to trace with --video"
        )
    };
    if spec.training_data() == TrainingData::MovingFashion {
        let composition =
            FashionComposition::parse_caption(prompt).ok_or_else(|| missing("Moving Fashion"))?;
        let config = MovingFashionConfig::new()
            .with_frames(spec.frames)
            .with_size(spec.size);
        let train = MovingFashion::open(&fashion_mnist_dir(), config, seed, Split::Train)?;
        let item = train.clip_for(composition, 0, CaptionMode::Canonical);
        let source = format!(
            "a Moving Fashion training clip of {} (training photograph {}, seed {seed})",
            composition.canonical_caption(),
            item.photo
        );
        return Ok((item.item.clip, source));
    }
    let composition = Composition::parse_caption(prompt).ok_or_else(|| missing("Moving Shapes"))?;
    let shapes = MovingShapesConfig::new()
        .with_frames(spec.frames)
        .with_size(spec.size);
    let item = MovingShapes::clip_for(&shapes, composition, seed, 0, CaptionMode::Canonical);
    let source = format!(
        "a Moving Shapes training clip of {} (seed {seed})",
        composition.canonical_caption()
    );
    Ok((item.clip, source))
}

/// Writes the trace of `options.prompt` through `model` into the folder `out` (replaced
/// whole when the trace is complete; a failed trace leaves `out` as it was). Returns the
/// numbers written to `trace.json`.
pub fn trace(
    model: &TrainedModel,
    options: &TraceOptions,
    out: &Path,
    device: &Device,
) -> Result<Value> {
    let spec = &model.spec;
    let dit_config = &spec.model.dit;
    let process = spec.diffusion.process();
    let steps_total = process.steps();
    let prediction = process.prediction();
    let t = options.t.unwrap_or(steps_total / 2);
    if t >= steps_total {
        bail!("--t must be below {steps_total} (the model's diffusion steps), got {t}");
    }
    let [gf, gr, gc] = dit_config.grid();
    let token = options.token.unwrap_or([gf / 2, gr / 2, gc / 2]);
    if token[0] >= gf || token[1] >= gr || token[2] >= gc {
        bail!(
            "--token {},{},{} is outside the patch grid of {gf} frames × {gr} rows × {gc} columns",
            token[0],
            token[1],
            token[2]
        );
    }
    let query = (token[0] * gr + token[1]) * gc + token[2];
    let prompts = vec![options.prompt.clone()];
    let prompt = prompt_input(model.into(), &prompts, device)?;
    options
        .sampling
        .validate(&process)
        .map_err(anyhow::Error::from)?;

    // 1. The clip.
    let (clip, clip_source) = match &options.video {
        Some(path) => (
            read_clip(path, spec.frames, spec.size)?,
            format!("the clip {}", path.display()),
        ),
        None => training_clip(spec, &options.prompt, options.sampling.seed)?,
    };

    let partial = out.with_extension("partial");
    let _ = fs::remove_dir_all(&partial);
    fs::create_dir_all(&partial).with_context(|| format!("cannot create {}", partial.display()))?;
    let mut sections = Vec::new();
    let mut numbers = serde_json::Map::new();
    let save = |image: &Image, name: &str| -> Result<String> {
        image.write_png(&partial.join(name))?;
        Ok(name.to_string())
    };

    let strip = frames_strip(&clip, 4, 4);
    sections.push(Section {
        title: "1. The input clip".into(),
        text: format!(
            "{clip_source}: {} frames of {}×{} pixels, RGB, shown left to right. Training \
             reads clips like this one; the trace follows it through every step.",
            clip.frames, clip.width, clip.height
        ),
        figures: vec![Figure {
            file: save(&strip, "01-clip.png")?,
            caption: "the frames, magnified 4×".into(),
        }],
        table: None,
    });

    // 2. Spacetime patches.
    let down = spec.size / dit_config.latent_size; // pixels per latent cell
    let patch_px = down * dit_config.patch_size;
    let mut patched = strip;
    for f in 0..clip.frames {
        let x0 = f * (clip.width * 4 + 4);
        for y in 0..patched.height {
            for x in 0..clip.width * 4 {
                let on_line = (x / 4) % patch_px == 0 || (y / 4) % patch_px == 0;
                if on_line && (x % 4 == 0 || y % 4 == 0) {
                    let d = (y * patched.width + x0 + x) * 3;
                    patched.rgb[d..d + 3].copy_from_slice(&[255, 255, 255]);
                }
            }
        }
    }
    let tokens_count = gf * gr * gc;
    sections.push(Section {
        title: "2. Spacetime patches".into(),
        text: format!(
            "The DiT sees the clip as tokens: each is a patch of {pf}×{ps}×{ps} latent cells \
             (frames × rows × columns), {pf} frame(s) of {patch_px}×{patch_px} pixels. The \
             grid is {gf} × {gr} × {gc} = {tokens_count} tokens, each embedded into {hidden} \
             numbers, with a fixed 3D sine-cosine position added.",
            pf = dit_config.patch_frames,
            ps = dit_config.patch_size,
            hidden = dit_config.hidden
        ),
        figures: vec![Figure {
            file: save(&patched, "02-patches.png")?,
            caption: format!("the patch grid over the frames ({patch_px}×{patch_px} pixels)"),
        }],
        table: None,
    });
    numbers.insert(
        "patches".into(),
        json!({"grid": [gf, gr, gc], "tokens": tokens_count, "patch_latent": [dit_config.patch_frames, dit_config.patch_size, dit_config.patch_size], "patch_pixels": patch_px}),
    );

    // 3. The visual encoder.
    let (f, s) = (spec.frames, spec.size);
    let video = Tensor::<5>::from_data(
        TensorData::new(clip_to_tensor_data(&clip), [1, 3, f, s, s]),
        device,
    );
    let x0 = model.autoencoder.encode(video).mean * spec.latent_scale; // [1, C, F, h, w]
    let shape = {
        let d = x0.dims();
        [d[1], d[2], d[3], d[4]]
    };
    let x0_values = values(x0.clone())?;
    let latent_picture = latent_grid(&x0_values, shape, 8)?;
    let per_channel: Vec<Value> = (0..shape[0])
        .map(|c| {
            let n = shape[1] * shape[2] * shape[3];
            let v = &x0_values[c * n..(c + 1) * n];
            let (mean, std) = mean_std(v);
            json!({"channel": c, "mean": mean, "std": std})
        })
        .collect();
    sections.push(Section {
        title: "3. The visual encoder".into(),
        text: format!(
            "The frozen encoder maps each {s}×{s}×3 frame to a {h}×{h}×{c} latent ({ratio}× \
             fewer numbers); the DiT works only here. Latents are multiplied by the scale \
             factor {scale:.4} so that they have unit variance. Blue is negative, red positive.",
            h = shape[2],
            c = shape[0],
            ratio = (s * s * 3) / (shape[2] * shape[3] * shape[0]),
            scale = spec.latent_scale
        ),
        figures: vec![Figure {
            file: save(&latent_picture, "03-latent.png")?,
            caption: "each latent channel of each frame".into(),
        }],
        table: None,
    });
    numbers.insert(
        "latent".into(),
        json!({"shape": shape, "scale": spec.latent_scale, "channels": per_channel}),
    );

    // 4. Forward diffusion at step t.
    let mut rng = rng_for(options.sampling.seed, Stream::TraceNoise, 0);
    let noise = gaussian(&mut rng, x0.dims(), device);
    let level = process.level_of_step(t);
    let noised =
        |step: usize| process.noise(x0.clone(), noise.clone(), &[process.level_of_step(step)]);
    let x_t = noised(t);
    let strip_steps: Vec<usize> = [0, 1, 2, 3, 4]
        .iter()
        .map(|i| i * (steps_total - 1) / 4)
        .collect();
    let mut strip_rows = Vec::new();
    for &step in &strip_steps {
        let decoded = decode_latent(model.into(), noised(step));
        strip_rows.push((format!("t = {step}"), vec![frames_strip(&decoded[0], 2, 2)]));
    }
    let noising = grid(&strip_rows, &[], 4)?;
    let (signal, noise_level) = process.coefficients(level);
    let formula = process.formula(level);
    let noise_values = values(noise.clone())?;
    let x_t_values = values(x_t.clone())?;
    let noise_picture = grid(
        &[
            (
                "noise ε".into(),
                vec![latent_grid(&noise_values, shape, 6)?],
            ),
            ("x_t".into(), vec![latent_grid(&x_t_values, shape, 6)?]),
        ],
        &[],
        4,
    )?;
    sections.push(Section {
        title: "4. Forward diffusion".into(),
        text: format!(
            "Training picks a step t and mixes the latent with Gaussian noise: {formula}. At \
             t = {t} the clean latent keeps a weight of {signal:.3} and the noise gets \
             {noise_level:.3}. The strip decodes the noised latent at five steps from 0 to T − 1 \
             = {}: the clip dissolves into noise.",
            steps_total - 1
        ),
        figures: vec![
            Figure {
                file: save(&noise_picture, "04-noise.png")?,
                caption: format!("the noise and the noised latent at t = {t}"),
            },
            Figure {
                file: save(&noising, "04-strip.png")?,
                caption: "the noised latent, decoded, at five steps".into(),
            },
        ],
        table: None,
    });
    numbers.insert(
        "diffusion".into(),
        json!({"t": t, "steps": steps_total, "prediction": format!("{prediction:?}"), "signal": signal, "noise": noise_level}),
    );

    // 5. The prompt and the conditioning.
    let (words, ids): (Vec<String>, Vec<i64>) = match (&prompt, &model.frozen_text) {
        (PromptInput::Frozen(_), Some(encoder)) => encoder
            .pieces(&options.prompt)?
            .into_iter()
            .map(|(id, piece)| (piece, id as i64))
            .unzip(),
        (PromptInput::Words(tokens), _) => values(tokens.clone().float())?
            .iter()
            .map(|&v| {
                let id = v as i64;
                let word = match id {
                    0 => "(padding)".to_string(),
                    id => model.tokenizer.words()[id as usize - 1].clone(),
                };
                (word, id)
            })
            .unzip(),
        (PromptInput::Frozen(_), None) => bail!("frozen prompt features without their encoder"),
    };
    let text = model.dit.encode_text(prompt);
    // The network reads the step itself (for a flow, σ·T = t).
    let t_tensor = Tensor::<1>::from_floats([process.timestep(level) as f32], device);
    let (output, dit_trace) = model.dit.forward_traced(x_t, t_tensor, &text);
    let pooled = values(text.pooled)?;
    let t_embedding = values(dit_trace.t_embedding.clone())?;
    let c = values(dit_trace.c.clone())?;
    let index_series = |v: &[f32]| -> Vec<(f64, f64)> {
        v.iter()
            .enumerate()
            .map(|(i, x)| (i as f64, *x as f64))
            .collect()
    };
    let conditioning = LineChart::new(
        "The conditioning c = step embedding + pooled prompt",
        "dimension",
        "value",
    )
    .y_scale(YScale::Linear)
    .smooth(false)
    .series("pooled prompt", index_series(&pooled))
    .series(format!("embedding of step {t}"), index_series(&t_embedding))
    .series("c", index_series(&c));
    let conditioning_picture = conditioning.render(900, 360)?.image;
    let word_rows: Vec<Vec<String>> = words
        .iter()
        .zip(&ids)
        .enumerate()
        .map(|(i, (w, id))| vec![i.to_string(), w.clone(), id.to_string()])
        .collect();
    sections.push(Section {
        title: "5. The prompt and the timestep".into(),
        text: match dit_config.text.pretrained {
            None => format!(
                "The prompt is split into words and looked up in the vocabulary ({} ids, 0 is \
                 padding), padded to {} positions. The text encoder turns them into per-word \
                 features and one pooled vector of {} numbers; the step t = {t} becomes a \
                 sinusoidal embedding through an MLP. Their sum c conditions every block.",
                model.tokenizer.num_ids(),
                dit_config.text.max_words,
                dit_config.hidden
            ),
            Some(pretrained) => format!(
                "The prompt is split into WordPiece tokens of {name}'s vocabulary and read by \
                 {name}, frozen: {width} numbers per token and their unit-length mean. The DiT \
                 projects each token to {} numbers (for cross-attention) and the mean to one \
                 pooled vector of {} numbers; the step t = {t} becomes a sinusoidal embedding \
                 through an MLP. Their sum c conditions every block.",
                dit_config.text.width,
                dit_config.hidden,
                name = pretrained.name(),
                width = pretrained.width(),
            ),
        },
        figures: vec![Figure {
            file: save(&conditioning_picture, "05-conditioning.png")?,
            caption: "the pooled prompt, the step embedding and c, dimension by dimension".into(),
        }],
        table: Some((
            vec!["position".into(), "word".into(), "id".into()],
            word_rows,
        )),
    });
    numbers.insert(
        "conditioning".into(),
        json!({"words": words, "ids": ids, "pooled": rounded(&pooled), "t_embedding": rounded(&t_embedding), "c": rounded(&c)}),
    );

    // 6. adaLN-Zero.
    const PARTS: [&str; 6] = [
        "shift (attention)",
        "scale (attention)",
        "gate (attention)",
        "shift (MLP)",
        "scale (MLP)",
        "gate (MLP)",
    ];
    let mut adaln_pictures = Vec::new();
    let mut adaln_numbers = Vec::new();
    for (b, block) in dit_trace.blocks.iter().enumerate() {
        let mut chart = LineChart::new(format!("Block {b}: adaLN-Zero values"), "channel", "value")
            .y_scale(YScale::Linear)
            .smooth(false);
        let mut parts = serde_json::Map::new();
        for (name, part) in PARTS.iter().zip(&block.modulation) {
            let v = values(part.clone())?;
            chart = chart.series(*name, index_series(&v));
            parts.insert((*name).into(), json!(rounded(&v)));
        }
        adaln_pictures.push(chart.render(900, 300)?.image);
        adaln_numbers.push(Value::Object(parts));
    }
    sections.push(Section {
        title: "6. adaLN-Zero: how c steers each block".into(),
        text: "From c, each block regresses six vectors: a shift and a scale applied to the \
               normalised tokens before attention and before the MLP, and a gate that scales \
               each branch's output before it is added back. The regression starts at zero, so \
               a new block is the identity; these are the trained values for this prompt and step."
            .into(),
        figures: vec![Figure {
            file: save(&stack(&adaln_pictures), "06-adaln.png")?,
            caption: "shift, scale and gate per channel, block by block".into(),
        }],
        table: None,
    });
    numbers.insert("adaln".into(), Value::Array(adaln_numbers));

    // 7. Self-attention of one token.
    let heads = dit_config.heads;
    let mut attention_rows = Vec::new();
    let mut attention_numbers = Vec::new();
    for (b, block) in dit_trace.blocks.iter().enumerate() {
        let weights = values(block.attention.clone())?; // [1, heads, tokens, tokens]
        for h in 0..heads {
            let start = (h * tokens_count + query) * tokens_count;
            let row = &weights[start..start + tokens_count];
            let max = row.iter().fold(0f32, |m, x| m.max(*x));
            let cells: Vec<Image> = (0..gf)
                .map(|fr| {
                    let mut cell =
                        sequential(&row[fr * gr * gc..(fr + 1) * gr * gc], gr, gc, 12, max);
                    if fr == token[0] {
                        outline(&mut cell, token[1] * 12, token[2] * 12, 12);
                    }
                    cell
                })
                .collect();
            attention_rows.push((format!("block {b}, head {h}"), cells));
            attention_numbers.push(json!({"block": b, "head": h, "weights": rounded(row), "sum": row.iter().sum::<f32>()}));
        }
    }
    let columns: Vec<String> = (0..gf).map(|fr| format!("frame {fr}")).collect();
    sections.push(Section {
        title: "7. Self-attention".into(),
        text: format!(
            "Every token attends to all {tokens_count} tokens of the clip, across space and \
             time. For the token at frame {}, row {}, column {} of the patch grid (outlined), \
             each row shows one head's weights over all tokens, drawn on the grid \
             (darker = more weight; each row sums to 1).",
            token[0], token[1], token[2]
        ),
        figures: vec![Figure {
            file: save(&grid(&attention_rows, &columns, 3)?, "07-attention.png")?,
            caption: "attention weights of the chosen token, per block and head".into(),
        }],
        table: None,
    });
    numbers.insert(
        "attention".into(),
        json!({"token": token, "query_index": query, "maps": attention_numbers}),
    );

    // 8. The MLP.
    let mut mlp_rows = Vec::new();
    let mut mlp_numbers = Vec::new();
    for (b, block) in dit_trace.blocks.iter().enumerate() {
        let v = values(block.mlp_hidden.clone())?;
        let n = v.len() as f32;
        let (mean, std) = mean_std(&v);
        let positive = v.iter().filter(|x| **x > 0.0).count() as f32 / n;
        let max = v.iter().fold(f32::MIN, |m, x| m.max(*x));
        mlp_rows.push(vec![
            b.to_string(),
            format!("{mean:.4}"),
            format!("{std:.4}"),
            format!("{positive:.3}"),
            format!("{max:.3}"),
        ]);
        mlp_numbers.push(json!({"block": b, "mean": mean, "std": std, "fraction_positive": positive, "max": max}));
    }
    sections.push(Section {
        title: "8. The pointwise MLP".into(),
        text: format!(
            "After attention, each token alone goes through an MLP {} → {} → {} with a GELU. \
             The table gives the statistics of the {} hidden activations over all tokens.",
            dit_config.hidden,
            dit_config.mlp_hidden(),
            dit_config.hidden,
            dit_config.mlp_hidden()
        ),
        figures: Vec::new(),
        table: Some((
            vec![
                "block".into(),
                "mean".into(),
                "std".into(),
                "fraction > 0".into(),
                "max".into(),
            ],
            mlp_rows,
        )),
    });
    numbers.insert("mlp".into(), Value::Array(mlp_numbers));

    // 9. The output and the loss.
    let target = process.target(x0.clone(), noise.clone(), &[level]);
    let output_values = values(output)?;
    let target_values = values(target)?;
    let mse = output_values
        .iter()
        .zip(&target_values)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum::<f64>()
        / output_values.len() as f64;
    let what = prediction.describe();
    let output_picture = grid(
        &[
            (
                "predicted".into(),
                vec![latent_grid(&output_values, shape, 6)?],
            ),
            ("true".into(), vec![latent_grid(&target_values, shape, 6)?]),
        ],
        &[],
        4,
    )?;
    let trainable = model.dit.num_params();
    let frozen = model.autoencoder.num_params();
    sections.push(Section {
        title: "9. The output and the loss".into(),
        text: format!(
            "A final adaLN layer maps each token back to its patch, and unpatchify reassembles \
             the latent: the DiT's prediction of the {what}. Training minimises the mean \
             squared error against the true one: for this example at t = {t} it is {mse:.5}. \
             Training updates the DiT's {trainable} parameters; the autoencoder's {frozen} \
             stay frozen."
        ),
        figures: vec![Figure {
            file: save(&output_picture, "09-output.png")?,
            caption: format!("the predicted and the true {what}"),
        }],
        table: None,
    });
    numbers.insert(
        "output".into(),
        json!({"target": what, "mse": mse, "trainable_parameters": trainable, "frozen_parameters": frozen}),
    );

    // 10. Sampling, with and without guidance; 11. the decoded clip.
    let total = options.sampling.steps;
    let mut shown: Vec<usize> = [1, total / 4, total / 2, 3 * total / 4, total]
        .into_iter()
        .filter(|&d| d >= 1)
        .collect();
    shown.dedup();
    let mut sampling_pictures = Vec::new();
    let mut sampling_numbers = Vec::new();
    let mut final_clip = None;
    for guidance in [options.sampling.guidance, 1.0] {
        let sampling = GenerateOptions {
            guidance,
            ..options.sampling.clone()
        };
        let mut states = Vec::new();
        let clips = generate(model.into(), &prompts, &sampling, device, |step| {
            if shown.contains(&step.done) {
                states.push((
                    step.done,
                    step.timestep,
                    step.latent.clone(),
                    step.predicted_clean.clone(),
                ));
            }
        })?;
        let mut rows = Vec::new();
        for (done, timestep, latent, clean) in states {
            let decode = |l: Tensor<5>| decode_latent(model.into(), l);
            rows.push((
                format!("step {done}/{total}, t = {timestep:.0}: x_t"),
                vec![frames_strip(&decode(latent)[0], 2, 2)],
            ));
            rows.push(("x̂₀".into(), vec![frames_strip(&decode(clean)[0], 2, 2)]));
            sampling_numbers
                .push(json!({"guidance": guidance, "step": done, "timestep": timestep}));
        }
        sampling_pictures.push((guidance, grid(&rows, &[], 4)?));
        if final_clip.is_none() {
            final_clip = clips.into_iter().next();
        }
    }
    sections.push(Section {
        title: "10. Sampling".into(),
        text: format!(
            "Generation runs the process backwards: from pure noise, {total} {} steps each ask \
             the DiT for its prediction, which implies a clean latent x̂₀, and move x_t towards \
             it. Rows show the noisy latent x_t and the predicted x̂₀ (both decoded) at five of \
             the steps, with classifier-free guidance {} (the conditional prediction pushed away \
             from the unconditional one) and without (guidance 1).",
            options.sampling.sampler, options.sampling.guidance
        ),
        figures: sampling_pictures
            .iter()
            .enumerate()
            .map(|(i, (g, picture))| {
                Ok(Figure {
                    file: save(
                        picture,
                        &format!("10-sampling-{}.png", ["guided", "unguided"][i]),
                    )?,
                    caption: format!("x_t and x̂₀ along the sampler's path, guidance {g}"),
                })
            })
            .collect::<Result<_>>()?,
        table: None,
    });
    numbers.insert(
        "sampling".into(),
        json!({"sampler": options.sampling.sampler.to_string(), "steps": total, "seed": options.sampling.seed, "shown": sampling_numbers}),
    );

    let generated = final_clip.context("the sampler returned no clip")?;
    write_gif(&generated, &partial.join("11-clip.gif"), 4, 12)?;
    let judged = judge_clip(&generated);
    let seen = format!(
        "{} {} moving {}",
        judged.colour.map_or("?", |c| c.name()),
        judged.shape.map_or("?", |s| s.name()),
        judged.direction.map_or("?", |d| d.name())
    );
    sections.push(Section {
        title: "11. The decoder: latent → frames → clip".into(),
        text: format!(
            "The last latent is divided by the scale factor and decoded frame by frame; the \
             frames make the clip. The project's pixel judge sees: {seen}."
        ),
        figures: vec![
            Figure {
                file: "11-clip.gif".into(),
                caption: format!(
                    "\"{}\", guidance {}",
                    options.prompt, options.sampling.guidance
                ),
            },
            Figure {
                file: save(&frames_strip(&generated, 4, 4), "11-frames.png")?,
                caption: "its frames".into(),
            },
        ],
        table: None,
    });
    numbers.insert("generated".into(), json!({"judged": seen}));
    numbers.insert("prompt".into(), json!(options.prompt));

    let numbers = Value::Object(numbers);
    fs::write(
        partial.join("trace.json"),
        serde_json::to_string_pretty(&numbers).expect("numbers serialise"),
    )?;
    let html = page(&options.prompt, &sections, &partial)?;
    fs::write(partial.join("index.html"), html)?;
    if out.exists() {
        fs::remove_dir_all(out).with_context(|| format!("cannot replace {}", out.display()))?;
    }
    fs::rename(&partial, out).with_context(|| format!("cannot write {}", out.display()))?;
    Ok(numbers)
}

/// Draws a dark square outline of `size` at `(x, y)`.
fn outline(image: &mut Image, x: usize, y: usize, size: usize) {
    for i in 0..size {
        for (px, py) in [
            (x + i, y),
            (x + i, y + size - 1),
            (x, y + i),
            (x + size - 1, y + i),
        ] {
            if px < image.width && py < image.height {
                let d = (py * image.width + px) * 3;
                image.rgb[d..d + 3].copy_from_slice(&[230, 160, 0]);
            }
        }
    }
}

/// Escapes text for HTML.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The page: every section with its pictures embedded as data URIs.
fn page(prompt: &str, sections: &[Section], dir: &Path) -> Result<String> {
    let mut html = String::new();
    write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>Trace: {title}</title>\n<style>\n\
         body {{ font-family: sans-serif; max-width: 1000px; margin: 2em auto; line-height: 1.5; color: #222; }}\n\
         figure {{ margin: 1em 0; }} img {{ max-width: 100%; image-rendering: pixelated; }}\n\
         figcaption {{ color: #555; font-size: 0.9em; }}\n\
         table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 2px 8px; text-align: right; }}\n\
         </style>\n</head>\n<body>\n<h1>Inside the DiT: \u{201c}{title}\u{201d}</h1>\n\
         <p>Each section is one step of the pipeline, drawn from the model's real tensors. \
         The numbers behind the pictures are in <code>trace.json</code>.</p>\n",
        title = escape(prompt)
    )?;
    for section in sections {
        write!(
            html,
            "<section>\n<h2>{}</h2>\n<p>{}</p>\n",
            escape(&section.title),
            escape(&section.text)
        )?;
        for figure in &section.figures {
            let bytes = fs::read(dir.join(&figure.file))?;
            let mime = if figure.file.ends_with(".gif") {
                "image/gif"
            } else {
                "image/png"
            };
            writeln!(
                html,
                "<figure><img src=\"data:{mime};base64,{}\" alt=\"{caption}\"><figcaption>{caption} \
                 (<code>{file}</code>)</figcaption></figure>",
                base64::engine::general_purpose::STANDARD.encode(bytes),
                caption = escape(&figure.caption),
                file = escape(&figure.file)
            )?;
        }
        if let Some((header, rows)) = &section.table {
            html.push_str("<table>\n<tr>");
            for h in header {
                write!(html, "<th>{}</th>", escape(h))?;
            }
            html.push_str("</tr>\n");
            for row in rows {
                html.push_str("<tr>");
                for cell in row {
                    write!(html, "<td>{}</td>", escape(cell))?;
                }
                html.push_str("</tr>\n");
            }
            html.push_str("</table>\n");
        }
        html.push_str("</section>\n");
    }
    html.push_str("</body>\n</html>\n");
    Ok(html)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;
    use dit_model::sampler::SamplerKind;

    fn shipped(device: &Device) -> TrainedModel {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../checkpoints/tiny");
        TrainedModel::load(&dir, device).unwrap()
    }

    fn options(prompt: &str) -> TraceOptions {
        TraceOptions {
            prompt: prompt.into(),
            video: None,
            t: Some(400),
            token: None,
            sampling: GenerateOptions {
                steps: 8,
                sampler: SamplerKind::Ddim { eta: 0.0 },
                guidance: 3.0,
                seed: 0,
                prompt_offset: 0,
            },
        }
    }

    /// The `data:` URIs of a page, decoded.
    fn embedded(html: &str) -> Vec<(String, Vec<u8>)> {
        html.split("src=\"data:")
            .skip(1)
            .map(|rest| {
                let (mime, rest) = rest.split_once(";base64,").unwrap();
                let data = &rest[..rest.find('"').unwrap()];
                (mime.to_string(), STANDARD.decode(data).unwrap())
            })
            .collect()
    }

    #[test]
    fn the_page_has_every_section_and_every_picture_decodes() {
        let device = Device::default();
        let model = shipped(&device);
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("trace");
        let numbers = trace(&model, &options("a red circle moving right"), &out, &device).unwrap();
        let html = fs::read_to_string(out.join("index.html")).unwrap();
        assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));
        assert_eq!(html.matches("<section>").count(), 11);
        assert_eq!(html.matches("</section>").count(), 11);
        for n in 1..=11 {
            assert!(
                html.contains(&format!("<h2>{n}. ")),
                "section {n} is missing"
            );
        }
        let pictures = embedded(&html);
        assert_eq!(pictures.len(), 13);
        for (mime, bytes) in pictures {
            let format = if mime == "image/gif" {
                image::ImageFormat::Gif
            } else {
                image::ImageFormat::Png
            };
            let decoded = image::load_from_memory_with_format(&bytes, format).unwrap();
            assert!(decoded.width() > 0 && decoded.height() > 0);
        }
        let json: Value =
            serde_json::from_str(&fs::read_to_string(out.join("trace.json")).unwrap()).unwrap();
        assert_eq!(json, numbers);
        assert_eq!(json["patches"]["tokens"], 128);
        // Every attention row is a distribution over the 128 tokens.
        let maps = json["attention"]["maps"].as_array().unwrap();
        assert_eq!(maps.len(), 4 * 4);
        for map in maps {
            assert!((map["sum"].as_f64().unwrap() - 1.0).abs() < 1e-4);
            assert_eq!(map["weights"].as_array().unwrap().len(), 128);
        }
        // The shipped model draws what it was asked for.
        assert_eq!(json["generated"]["judged"], "red circle moving right");
    }

    #[test]
    fn the_traced_loss_is_the_models_loss_on_the_same_inputs() {
        let device = Device::default();
        let model = shipped(&device);
        let dir = tempfile::tempdir().unwrap();
        let options = options("a blue square moving up");
        let numbers = trace(&model, &options, &dir.path().join("t"), &device).unwrap();
        // The same step rebuilt from public pieces: clip, encoder, seeded noise, q_sample.
        let spec = &model.spec;
        let composition = Composition::parse_caption(&options.prompt).unwrap();
        let shapes = MovingShapesConfig::new()
            .with_frames(spec.frames)
            .with_size(spec.size);
        let clip = MovingShapes::clip_for(&shapes, composition, 0, 0, CaptionMode::Canonical).clip;
        let (f, s) = (spec.frames, spec.size);
        let video = Tensor::<5>::from_data(
            TensorData::new(clip_to_tensor_data(&clip), [1, 3, f, s, s]),
            &device,
        );
        let x0 = model.autoencoder.encode(video).mean * spec.latent_scale;
        let noise = gaussian(&mut rng_for(0, Stream::TraceNoise, 0), x0.dims(), &device);
        let process = spec.diffusion.process();
        let level = process.level_of_step(400);
        let x_t = process.noise(x0.clone(), noise.clone(), &[level]);
        let prompt = prompt_input(
            (&model).into(),
            std::slice::from_ref(&options.prompt),
            &device,
        )
        .unwrap();
        let text = model.dit.encode_text(prompt);
        let out = model
            .dit
            .forward(x_t, Tensor::from_floats([400.0], &device), &text);
        let target = process.target(x0, noise, &[level]);
        let mse = (out - target).powi_scalar(2).mean().into_scalar::<f32>() as f64;
        let traced = numbers["output"]["mse"].as_f64().unwrap();
        assert!(
            (traced - mse).abs() < 1e-5 * mse.max(1.0),
            "{traced} vs {mse}"
        );
        assert!(mse > 0.0);
    }

    #[test]
    fn the_last_predicted_clean_latent_is_the_sampled_one() {
        // Deterministic DDIM ends on its last x̂₀; every step is reported once, in order.
        let device = Device::default();
        let model = shipped(&device);
        let prompts = ["a cyan square moving left".to_string()];
        let options = options(&prompts[0]).sampling;
        let mut seen = Vec::new();
        let mut last = None;
        let clips = generate((&model).into(), &prompts, &options, &device, |step| {
            seen.push((step.done, step.total));
            last = Some(step.predicted_clean.clone());
        })
        .unwrap();
        assert_eq!(seen, (1..=8).map(|d| (d, 8)).collect::<Vec<_>>());
        let decoded = dit_data::video_to_clips(
            model
                .autoencoder
                .decode(last.unwrap() / model.spec.latent_scale),
        );
        assert_eq!(decoded[0], clips[0]);
    }

    #[test]
    fn a_fresh_model_has_zero_gates() {
        let device = Device::default();
        let shipped = shipped(&device);
        let fresh = TrainedModel {
            dit: shipped.spec.model.dit.init(&device).unwrap(),
            ..shipped
        };
        let dir = tempfile::tempdir().unwrap();
        let numbers = trace(
            &fresh,
            &options("a green triangle moving left"),
            &dir.path().join("t"),
            &device,
        )
        .unwrap();
        // adaLN-Zero: the regression of all six vectors starts at zero, so a new block is the
        // identity.
        let blocks = numbers["adaln"].as_array().unwrap();
        assert_eq!(blocks.len(), fresh.spec.model.dit.depth);
        for block in blocks {
            let parts = block.as_object().unwrap();
            assert_eq!(parts.len(), 6, "{:?}", parts.keys());
            for (name, values) in parts {
                let values = values.as_array().unwrap();
                assert_eq!(values.len(), fresh.spec.model.dit.hidden, "{name}");
                assert!(values.iter().all(|v| v.as_f64() == Some(0.0)), "{name}");
            }
        }
    }

    #[test]
    fn bad_options_are_errors_and_leave_no_folder() {
        let device = Device::default();
        let model = shipped(&device);
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("t");
        let cases: Vec<(TraceOptions, &str)> = vec![
            (
                TraceOptions {
                    token: Some([8, 0, 0]),
                    ..options("a red circle moving right")
                },
                "outside the patch grid",
            ),
            (
                TraceOptions {
                    t: Some(1000),
                    ..options("a red circle moving right")
                },
                "--t must be below 1000",
            ),
            (options("a red ball"), "--video"),
            (options("a red zebra moving right"), "zebra"),
        ];
        for (options, needle) in cases {
            let err = trace(&model, &options, &out, &device).unwrap_err();
            assert!(format!("{err:#}").contains(needle), "{err:#}");
            assert!(!out.exists() && !out.with_extension("partial").exists());
        }
    }
}
