//! The trace's eleven sections, one function each, in the pipeline's order. Each returns
//! its [`Section`]: text with the traced numbers, pictures, a table, and the numbers for
//! `trace.json`.

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::tensor::{Device, Tensor};
use dit_data::fashion::FashionComposition;
use dit_data::figure::{Image, LineChart, Picture, YScale};
use dit_data::idx::fashion_mnist_dir;
use dit_data::moving_fashion::{MovingFashion, MovingFashionConfig};
use dit_data::{
    CaptionMode, Clip, Composition, MovingShapes, MovingShapesConfig, Split, judge_clip,
};
use dit_model::{
    DitConfig, DitTrace, ForwardProcess, Prediction, PromptInput, RunSpec, TrainedModel,
    TrainingData,
};
use serde_json::{Value, json};

use super::pictures::{grid, latent_grid, outline, sequential};
use super::{Figure, Section, Table, TraceOptions, gif_figure, mean_std, rounded, values};
use crate::pipeline::{GenerateOptions, decode_latent, generate};

/// A training clip of the composition `prompt` names, from the data set the model was
/// trained on, and where it came from in words.
pub(super) fn training_clip(spec: &RunSpec, prompt: &str, seed: u64) -> Result<(Clip, String)> {
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

/// The words (or WordPiece tokens) the DiT reads of `prompt`, with their ids.
pub(super) fn prompt_words(
    model: &TrainedModel,
    prompt: &str,
    input: &PromptInput,
) -> Result<Vec<(String, i64)>> {
    match (input, &model.frozen_text) {
        (PromptInput::Frozen(_), Some(encoder)) => Ok(encoder
            .pieces(prompt)?
            .into_iter()
            .map(|(id, piece)| (piece, id as i64))
            .collect()),
        (PromptInput::Words(tokens), _) => Ok(values(tokens.clone().float())?
            .iter()
            .map(|&v| {
                let id = v as i64;
                let word = match id {
                    0 => "(padding)".to_string(),
                    id => model.tokenizer.words()[id as usize - 1].clone(),
                };
                (word, id)
            })
            .collect()),
        (PromptInput::Frozen(_), None) => bail!("frozen prompt features without their encoder"),
    }
}

/// Section 1, the input clip.
pub(super) fn input_clip(clip: &Clip, source: &str) -> Result<Section> {
    Ok(Section {
        title: "1. The input clip".into(),
        text: format!(
            "{source}: {} frames of {}×{} pixels, RGB, shown left to right. Training \
             reads clips like this one; the trace follows it through every step.",
            clip.frames, clip.width, clip.height
        ),
        figures: vec![Figure::png(
            &Image::frames(clip, 4, 4),
            "01-clip.png",
            "the frames, magnified 4×",
        )?],
        table: None,
        numbers: None,
    })
}

/// Section 2, spacetime patches: the patch grid drawn over the frames.
pub(super) fn patches(spec: &RunSpec, clip: &Clip) -> Result<Section> {
    let config = &spec.model.dit;
    let [gf, gr, gc] = config.grid();
    let down = spec.size / config.latent_size; // pixels per latent cell
    let patch_px = down * config.patch_size;
    let (scale, gap) = (4, 4);
    let mut patched = Image::frames(clip, scale, gap);
    for f in 0..clip.frames {
        let x0 = f * (clip.width * scale + gap);
        for y in 0..patched.height() as usize {
            for x in 0..clip.width * scale {
                let on_line = (x / scale) % patch_px == 0 || (y / scale) % patch_px == 0;
                if on_line && (x % scale == 0 || y % scale == 0) {
                    patched.fill_rect(x0 + x..x0 + x + 1, y..y + 1, [255, 255, 255]);
                }
            }
        }
    }
    let tokens = gf * gr * gc;
    Ok(Section {
        title: "2. Spacetime patches".into(),
        text: format!(
            "The DiT sees the clip as tokens: each is a patch of {pf}×{ps}×{ps} latent cells \
             (frames × rows × columns), {pf} frame(s) of {patch_px}×{patch_px} pixels. The \
             grid is {gf} × {gr} × {gc} = {tokens} tokens, each embedded into {hidden} \
             numbers, with a fixed 3D sine-cosine position added.",
            pf = config.patch_frames,
            ps = config.patch_size,
            hidden = config.hidden
        ),
        figures: vec![Figure::png(
            &patched,
            "02-patches.png",
            format!("the patch grid over the frames ({patch_px}×{patch_px} pixels)"),
        )?],
        table: None,
        numbers: Some((
            "patches",
            json!({"grid": [gf, gr, gc], "tokens": tokens, "patch_latent": [config.patch_frames, config.patch_size, config.patch_size], "patch_pixels": patch_px}),
        )),
    })
}

/// The shape `[C, F, h, w]` of one clip's latent `[1, C, F, h, w]`.
fn latent_shape(latent: &Tensor<5>) -> [usize; 4] {
    let [_, c, f, h, w] = latent.dims();
    [c, f, h, w]
}

/// Section 3, the visual encoder: the clip's latent `x0` `[1, C, F, h, w]`, channel by
/// channel.
pub(super) fn visual_encoder(spec: &RunSpec, x0: Tensor<5>) -> Result<Section> {
    let shape = latent_shape(&x0);
    let x0 = values(x0)?;
    let per_channel: Vec<Value> = (0..shape[0])
        .map(|c| {
            let n = shape[1] * shape[2] * shape[3];
            let (mean, std) = mean_std(&x0[c * n..(c + 1) * n]);
            json!({"channel": c, "mean": mean, "std": std})
        })
        .collect();
    let s = spec.size;
    Ok(Section {
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
        figures: vec![Figure::png(
            &latent_grid(&x0, shape, 8)?,
            "03-latent.png",
            "each latent channel of each frame",
        )?],
        table: None,
        numbers: Some((
            "latent",
            json!({"shape": shape, "scale": spec.latent_scale, "channels": per_channel}),
        )),
    })
}

/// Section 4, forward diffusion: `x0` noised with `noise` at step `t`, and decoded at five
/// steps.
pub(super) fn forward_diffusion(
    model: &TrainedModel,
    process: &ForwardProcess,
    t: usize,
    x0: Tensor<5>,
    noise: Tensor<5>,
) -> Result<Section> {
    let steps_total = process.steps();
    let shape = latent_shape(&x0);
    let noised =
        |step: usize| process.noise(x0.clone(), noise.clone(), &[process.level_of_step(step)]);
    let strip: Vec<(String, Vec<Image>)> = (0..5)
        .map(|i| {
            let step = i * (steps_total - 1) / 4;
            let decoded = decode_latent(model.into(), noised(step));
            (
                format!("t = {step}"),
                vec![Image::frames(&decoded[0], 2, 2)],
            )
        })
        .collect();
    let level = process.level_of_step(t);
    let (signal, noise_level) = process.coefficients(level);
    let pictures = [
        ("noise ε".to_string(), values(noise.clone())?),
        ("x_t".to_string(), values(noised(t))?),
    ]
    .into_iter()
    .map(|(label, v)| Ok((label, vec![latent_grid(&v, shape, 6)?])))
    .collect::<Result<Vec<_>>>()?;
    Ok(Section {
        title: "4. Forward diffusion".into(),
        text: format!(
            "Training picks a step t and mixes the latent with Gaussian noise: {}. At \
             t = {t} the clean latent keeps a weight of {signal:.3} and the noise gets \
             {noise_level:.3}. The strip decodes the noised latent at five steps from 0 to T − 1 \
             = {}: the clip dissolves into noise.",
            process.formula(level),
            steps_total - 1
        ),
        figures: vec![
            Figure::png(
                &grid(&pictures, &[], 4)?,
                "04-noise.png",
                format!("the noise and the noised latent at t = {t}"),
            )?,
            Figure::png(
                &grid(&strip, &[], 4)?,
                "04-strip.png",
                "the noised latent, decoded, at five steps",
            )?,
        ],
        table: None,
        numbers: Some((
            "diffusion",
            json!({"t": t, "steps": steps_total, "prediction": format!("{:?}", process.prediction()), "signal": signal, "noise": noise_level}),
        )),
    })
}

/// Values against their index, for a chart.
fn index_series(v: &[f32]) -> Vec<(f64, f64)> {
    v.iter()
        .enumerate()
        .map(|(i, x)| (i as f64, *x as f64))
        .collect()
}

/// Section 5, the prompt's words and the conditioning c = step embedding + pooled
/// prompt.
pub(super) fn conditioning(
    model: &TrainedModel,
    t: usize,
    words: &[(String, i64)],
    pooled: Tensor<2>,
    trace: &DitTrace,
) -> Result<Section> {
    let config = &model.spec.model.dit;
    let pooled = values(pooled)?;
    let t_embedding = values(trace.t_embedding.clone())?;
    let c = values(trace.c.clone())?;
    let chart = LineChart::new(
        "The conditioning c = step embedding + pooled prompt",
        "dimension",
        "value",
    )
    .y_scale(YScale::Linear)
    .smooth(false)
    .series("pooled prompt", index_series(&pooled))
    .series(format!("embedding of step {t}"), index_series(&t_embedding))
    .series("c", index_series(&c));
    let text = match config.text.pretrained {
        None => format!(
            "The prompt is split into words and looked up in the vocabulary ({} ids, 0 is \
             padding), padded to {} positions. The text encoder turns them into per-word \
             features and one pooled vector of {} numbers; the step t = {t} becomes a \
             sinusoidal embedding through an MLP. Their sum c conditions every block.",
            model.tokenizer.num_ids(),
            config.text.max_words,
            config.hidden
        ),
        Some(pretrained) => format!(
            "The prompt is split into WordPiece tokens of {name}'s vocabulary and read by \
             {name}, frozen: {width} numbers per token and their unit-length mean. The DiT \
             projects each token to {} numbers (for cross-attention) and the mean to one \
             pooled vector of {} numbers; the step t = {t} becomes a sinusoidal embedding \
             through an MLP. Their sum c conditions every block.",
            config.text.width,
            config.hidden,
            name = pretrained.name(),
            width = pretrained.width(),
        ),
    };
    let (names, ids): (Vec<&str>, Vec<i64>) = words.iter().map(|(w, id)| (w.as_str(), *id)).unzip();
    Ok(Section {
        title: "5. The prompt and the timestep".into(),
        text,
        figures: vec![Figure::png(
            &chart.render(900, 360)?.image,
            "05-conditioning.png",
            "the pooled prompt, the step embedding and c, dimension by dimension",
        )?],
        table: Some(Table {
            header: vec!["position".into(), "word".into(), "id".into()],
            rows: words
                .iter()
                .enumerate()
                .map(|(i, (w, id))| vec![i.to_string(), w.clone(), id.to_string()])
                .collect(),
        }),
        numbers: Some((
            "conditioning",
            json!({"words": names, "ids": ids, "pooled": rounded(&pooled), "t_embedding": rounded(&t_embedding), "c": rounded(&c)}),
        )),
    })
}

/// Section 6, adaLN-Zero: each block's six modulation vectors.
pub(super) fn adaln(trace: &DitTrace) -> Result<Section> {
    const PARTS: [&str; 6] = [
        "shift (attention)",
        "scale (attention)",
        "gate (attention)",
        "shift (MLP)",
        "scale (MLP)",
        "gate (MLP)",
    ];
    let mut pictures = Vec::new();
    let mut numbers = Vec::new();
    for (b, block) in trace.blocks.iter().enumerate() {
        let mut chart = LineChart::new(format!("Block {b}: adaLN-Zero values"), "channel", "value")
            .y_scale(YScale::Linear)
            .smooth(false);
        let mut parts = serde_json::Map::new();
        for (name, part) in PARTS.iter().zip(&block.modulation) {
            let v = values(part.clone())?;
            chart = chart.series(*name, index_series(&v));
            parts.insert((*name).into(), json!(rounded(&v)));
        }
        pictures.push(chart.render(900, 300)?.image);
        numbers.push(Value::Object(parts));
    }
    Ok(Section {
        title: "6. adaLN-Zero: how c steers each block".into(),
        text: "From c, each block regresses six vectors: a shift and a scale applied to the \
               normalised tokens before attention and before the MLP, and a gate that scales \
               each branch's output before it is added back. The regression starts at zero, so \
               a new block is the identity; these are the trained values for this prompt and step."
            .into(),
        figures: vec![Figure::png(
            &Image::stacked(&pictures),
            "06-adaln.png",
            "shift, scale and gate per channel, block by block",
        )?],
        table: None,
        numbers: Some(("adaln", Value::Array(numbers))),
    })
}

/// Section 7, self-attention: every head's weights of the query `token` over all tokens.
pub(super) fn attention(
    config: &DitConfig,
    trace: &DitTrace,
    token: [usize; 3],
) -> Result<Section> {
    const CELL: usize = 12;
    let [gf, gr, gc] = config.grid();
    let tokens = gf * gr * gc;
    let query = (token[0] * gr + token[1]) * gc + token[2];
    let mut rows = Vec::new();
    let mut maps = Vec::new();
    for (b, block) in trace.blocks.iter().enumerate() {
        let weights = values(block.attention.clone())?; // [1, heads, tokens, tokens]
        for h in 0..config.heads {
            let start = (h * tokens + query) * tokens;
            let row = &weights[start..start + tokens];
            let max = row.iter().fold(0f32, |m, x| m.max(*x));
            let cells: Vec<Image> = (0..gf)
                .map(|fr| {
                    let mut cell =
                        sequential(&row[fr * gr * gc..(fr + 1) * gr * gc], gr, gc, CELL, max);
                    if fr == token[0] {
                        outline(&mut cell, token[2] * CELL, token[1] * CELL, CELL);
                    }
                    cell
                })
                .collect();
            rows.push((format!("block {b}, head {h}"), cells));
            maps.push(json!({"block": b, "head": h, "weights": rounded(row), "sum": row.iter().sum::<f32>()}));
        }
    }
    let columns: Vec<String> = (0..gf).map(|fr| format!("frame {fr}")).collect();
    Ok(Section {
        title: "7. Self-attention".into(),
        text: format!(
            "Every token attends to all {tokens} tokens of the clip, across space and \
             time. For the token at frame {}, row {}, column {} of the patch grid (outlined), \
             each row shows one head's weights over all tokens, drawn on the grid \
             (darker = more weight; each row sums to 1).",
            token[0], token[1], token[2]
        ),
        figures: vec![Figure::png(
            &grid(&rows, &columns, 3)?,
            "07-attention.png",
            "attention weights of the chosen token, per block and head",
        )?],
        table: None,
        numbers: Some((
            "attention",
            json!({"token": token, "query_index": query, "maps": maps}),
        )),
    })
}

/// Section 8, the pointwise MLP: statistics of each block's hidden activations.
pub(super) fn mlp(config: &DitConfig, trace: &DitTrace) -> Result<Section> {
    let mut rows = Vec::new();
    let mut numbers = Vec::new();
    for (b, block) in trace.blocks.iter().enumerate() {
        let v = values(block.mlp_hidden.clone())?;
        let (mean, std) = mean_std(&v);
        let positive = v.iter().filter(|x| **x > 0.0).count() as f32 / v.len() as f32;
        let max = v.iter().fold(f32::MIN, |m, x| m.max(*x));
        rows.push(vec![
            b.to_string(),
            format!("{mean:.4}"),
            format!("{std:.4}"),
            format!("{positive:.3}"),
            format!("{max:.3}"),
        ]);
        numbers.push(json!({"block": b, "mean": mean, "std": std, "fraction_positive": positive, "max": max}));
    }
    let (hidden, mlp_hidden) = (config.hidden, config.mlp_hidden());
    Ok(Section {
        title: "8. The pointwise MLP".into(),
        text: format!(
            "After attention, each token alone goes through an MLP {hidden} → {mlp_hidden} → \
             {hidden} with a GELU. The table gives the statistics of the {mlp_hidden} hidden \
             activations over all tokens."
        ),
        figures: Vec::new(),
        table: Some(Table {
            header: ["block", "mean", "std", "fraction > 0", "max"]
                .map(String::from)
                .to_vec(),
            rows,
        }),
        numbers: Some(("mlp", Value::Array(numbers))),
    })
}

/// Section 9, the DiT's `output` against the training `target` at step `t`, and their
/// MSE.
pub(super) fn output_and_loss(
    model: &TrainedModel,
    prediction: Prediction,
    t: usize,
    output: Tensor<5>,
    target: Tensor<5>,
) -> Result<Section> {
    let shape = latent_shape(&output);
    let output = values(output)?;
    let target = values(target)?;
    let mse = output
        .iter()
        .zip(&target)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum::<f64>()
        / output.len() as f64;
    let what = prediction.describe();
    let picture = grid(
        &[
            ("predicted".into(), vec![latent_grid(&output, shape, 6)?]),
            ("true".into(), vec![latent_grid(&target, shape, 6)?]),
        ],
        &[],
        4,
    )?;
    let trainable = model.dit.num_params();
    let frozen = model.autoencoder.num_params();
    Ok(Section {
        title: "9. The output and the loss".into(),
        text: format!(
            "A final adaLN layer maps each token back to its patch, and unpatchify reassembles \
             the latent: the DiT's prediction of the {what}. Training minimises the mean \
             squared error against the true one: for this example at t = {t} it is {mse:.5}. \
             Training updates the DiT's {trainable} parameters; the autoencoder's {frozen} \
             stay frozen."
        ),
        figures: vec![Figure::png(
            &picture,
            "09-output.png",
            format!("the predicted and the true {what}"),
        )?],
        table: None,
        numbers: Some((
            "output",
            json!({"target": what, "mse": mse, "trainable_parameters": trainable, "frozen_parameters": frozen}),
        )),
    })
}

/// Section 10, sampling, with the options' guidance and without: x_t and x̂₀ at five
/// steps. Also returns the guided clip.
pub(super) fn sampling(
    model: &TrainedModel,
    options: &TraceOptions,
    device: &Device,
) -> Result<(Section, Clip)> {
    let total = options.sampling.steps;
    let mut shown: Vec<usize> = [1, total / 4, total / 2, 3 * total / 4, total]
        .into_iter()
        .filter(|&d| d >= 1)
        .collect();
    shown.dedup();
    let prompts = std::slice::from_ref(&options.prompt);
    let mut figures = Vec::new();
    let mut numbers = Vec::new();
    let mut guided_clip = None;
    for (guidance, name) in [(options.sampling.guidance, "guided"), (1.0, "unguided")] {
        let sampling = GenerateOptions {
            guidance,
            ..options.sampling.clone()
        };
        let mut states = Vec::new();
        let clips = generate(model.into(), prompts, &sampling, device, |step| {
            if shown.contains(&step.done) {
                states.push((
                    step.done,
                    step.timestep,
                    step.latent.clone(),
                    step.predicted_clean.clone(),
                ));
            }
        })?;
        let decoded =
            |latent: Tensor<5>| Image::frames(&decode_latent(model.into(), latent)[0], 2, 2);
        let mut rows = Vec::new();
        for (done, timestep, latent, clean) in states {
            rows.push((
                format!("step {done}/{total}, t = {timestep:.0}: x_t"),
                vec![decoded(latent)],
            ));
            rows.push(("x̂₀".into(), vec![decoded(clean)]));
            numbers.push(json!({"guidance": guidance, "step": done, "timestep": timestep}));
        }
        figures.push(Figure::png(
            &grid(&rows, &[], 4)?,
            &format!("10-sampling-{name}.png"),
            format!("x_t and x̂₀ along the sampler's path, guidance {guidance}"),
        )?);
        if guided_clip.is_none() {
            guided_clip = clips.into_iter().next();
        }
    }
    let section = Section {
        title: "10. Sampling".into(),
        text: format!(
            "Generation runs the process backwards: from pure noise, {total} {} steps each ask \
             the DiT for its prediction, which implies a clean latent x̂₀, and move x_t towards \
             it. Rows show the noisy latent x_t and the predicted x̂₀ (both decoded) at five of \
             the steps, with classifier-free guidance {} (the conditional prediction pushed away \
             from the unconditional one) and without (guidance 1).",
            options.sampling.sampler, options.sampling.guidance
        ),
        figures,
        table: None,
        numbers: Some((
            "sampling",
            json!({"sampler": options.sampling.sampler.to_string(), "steps": total, "seed": options.sampling.seed, "shown": numbers}),
        )),
    };
    Ok((
        section,
        guided_clip.context("the sampler returned no clip")?,
    ))
}

/// Section 11, the decoded clip, as the pixel judge sees it.
pub(super) fn decoded_clip(generated: &Clip, options: &TraceOptions) -> Result<Section> {
    let judged = judge_clip(generated);
    let seen = format!(
        "{} {} moving {}",
        judged.colour.map_or("?", |c| c.name()),
        judged.shape.map_or("?", |s| s.name()),
        judged.direction.map_or("?", |d| d.name())
    );
    Ok(Section {
        title: "11. The decoder: latent → frames → clip".into(),
        text: format!(
            "The last latent is divided by the scale factor and decoded frame by frame; the \
             frames make the clip. The project's pixel judge sees: {seen}."
        ),
        figures: vec![
            gif_figure(
                generated,
                format!(
                    "\"{}\", guidance {}",
                    options.prompt, options.sampling.guidance
                ),
            )?,
            Figure::png(
                &Image::frames(generated, 4, 4),
                "11-frames.png",
                "its frames",
            )?,
        ],
        table: None,
        numbers: Some(("generated", json!({"judged": seen}))),
    })
}
