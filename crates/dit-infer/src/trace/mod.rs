//! `dit-infer trace`: one prompt through the whole pipeline, step by step, from the
//! model's real tensors, as a page of eleven sections.
//!
//! The sections follow the pipeline: the input clip, its spacetime patches, the
//! encoder's latent, forward diffusion at step t, the conditioning, each block's adaLN
//! values, self-attention of one token, the MLP's activations, the predicted target (the
//! training loss of this example), the sampler's path, and the decoded clip. Each is made
//! by one function of [`sections`]; [`trace`] runs them and returns the page in memory
//! ([`TracePage`]): the studio serves its [HTML](TracePage::html), the command line
//! [writes](TracePage::write) it with every picture as a file and the numbers behind them
//! in `trace.json`.

mod pictures;
mod sections;

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use burn::tensor::{Device, Tensor, TensorData};
use dit_data::clip_to_tensor_data;
use dit_data::figure::{Image, Picture};
use dit_data::video::{encode_gif, read_clip};
use dit_model::TrainedModel;
use dit_model::noise::gaussian;
use dit_model::run::write_atomic;
use dit_model::seed::{Stream, rng_for};
use serde_json::{Value, json};

use crate::pipeline::{GenerateOptions, prompt_input};

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

/// A picture of the page: its file name (`.png` or `.gif`), caption and encoded bytes.
pub struct Figure {
    /// The file it is written to, and named by on the page.
    pub file: String,
    /// What it shows.
    pub caption: String,
    /// The PNG or GIF file's bytes.
    pub bytes: Vec<u8>,
}

impl Figure {
    /// `image` as the PNG `file`.
    fn png(image: &Image, file: &str, caption: impl Into<String>) -> Result<Self> {
        Ok(Self {
            file: file.into(),
            caption: caption.into(),
            bytes: image.png().map_err(anyhow::Error::msg)?,
        })
    }

    /// The picture's MIME type, from its file name.
    fn mime(&self) -> &'static str {
        if self.file.ends_with(".gif") {
            "image/gif"
        } else {
            "image/png"
        }
    }
}

/// A table of a section: column names and rows of cells.
pub struct Table {
    /// Column names.
    pub header: Vec<String>,
    /// Rows of cells, as many as the header has columns.
    pub rows: Vec<Vec<String>>,
}

/// One section of the page.
pub struct Section {
    /// "N. What it shows".
    pub title: String,
    /// The explanation, with the traced numbers in it.
    pub text: String,
    /// Its pictures.
    pub figures: Vec<Figure>,
    /// Its table, if it has one.
    pub table: Option<Table>,
    /// The numbers behind it, under their key in `trace.json` (`None`: no numbers).
    pub numbers: Option<(&'static str, Value)>,
}

/// The traced page, in memory.
pub struct TracePage {
    /// The traced prompt.
    pub prompt: String,
    /// The sections, in the pipeline's order.
    pub sections: Vec<Section>,
}

impl TracePage {
    /// The numbers behind the pictures (what `trace.json` holds): each section's, under
    /// its key, and the prompt.
    pub fn numbers(&self) -> Value {
        let mut numbers: serde_json::Map<String, Value> = self
            .sections
            .iter()
            .filter_map(|s| s.numbers.clone())
            .map(|(key, value)| (key.to_string(), value))
            .collect();
        numbers.insert("prompt".into(), json!(self.prompt));
        Value::Object(numbers)
    }

    /// The page: one file with every section and its pictures embedded as data URIs, so
    /// that it opens from disk or from the studio alike.
    pub fn html(&self) -> String {
        let mut html = String::new();
        // Writing into a String cannot fail.
        let _ = write!(
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
            title = escape(&self.prompt)
        );
        for section in &self.sections {
            let _ = write!(
                html,
                "<section>\n<h2>{}</h2>\n<p>{}</p>\n",
                escape(&section.title),
                escape(&section.text)
            );
            for figure in &section.figures {
                let _ = writeln!(
                    html,
                    "<figure><img src=\"data:{mime};base64,{}\" alt=\"{caption}\"><figcaption>{caption} \
                     (<code>{file}</code>)</figcaption></figure>",
                    base64::engine::general_purpose::STANDARD.encode(&figure.bytes),
                    mime = figure.mime(),
                    caption = escape(&figure.caption),
                    file = escape(&figure.file)
                );
            }
            if let Some(table) = &section.table {
                html.push_str("<table>\n<tr>");
                for h in &table.header {
                    let _ = write!(html, "<th>{}</th>", escape(h));
                }
                html.push_str("</tr>\n");
                for row in &table.rows {
                    html.push_str("<tr>");
                    for cell in row {
                        let _ = write!(html, "<td>{}</td>", escape(cell));
                    }
                    html.push_str("</tr>\n");
                }
                html.push_str("</table>\n");
            }
            html.push_str("</section>\n");
        }
        html.push_str("</body>\n</html>\n");
        html
    }

    /// Writes the folder `out`: `index.html`, every picture as its file and `trace.json`.
    /// `out` is replaced whole once everything is written; a failed write leaves it as it
    /// was.
    pub fn write(&self, out: &Path) -> Result<()> {
        let partial = out.with_extension("partial");
        let _ = fs::remove_dir_all(&partial);
        fs::create_dir_all(&partial)
            .with_context(|| format!("cannot create {}", partial.display()))?;
        let written = (|| -> Result<()> {
            for figure in self.sections.iter().flat_map(|s| &s.figures) {
                write_atomic(&partial.join(&figure.file), &figure.bytes)?;
            }
            let numbers = serde_json::to_string_pretty(&self.numbers()).expect("numbers serialise");
            write_atomic(&partial.join("trace.json"), numbers.as_bytes())?;
            write_atomic(&partial.join("index.html"), self.html().as_bytes())?;
            if out.exists() {
                fs::remove_dir_all(out)
                    .with_context(|| format!("cannot replace {}", out.display()))?;
            }
            fs::rename(&partial, out).with_context(|| format!("cannot write {}", out.display()))
        })();
        if written.is_err() {
            let _ = fs::remove_dir_all(&partial);
        }
        written
    }
}

/// Escapes text for HTML.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
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

/// Mean and standard deviation of `v`.
fn mean_std(v: &[f32]) -> (f32, f32) {
    let n = v.len().max(1) as f32;
    let mean = v.iter().sum::<f32>() / n;
    (
        mean,
        (v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / n).sqrt(),
    )
}

/// Traces `options.prompt` through `model`: every option is checked first, then the
/// training view of one clip at step t (sections 1–9), then sampling (10–11).
pub fn trace(model: &TrainedModel, options: &TraceOptions, device: &Device) -> Result<TracePage> {
    let spec = &model.spec;
    let dit_config = &spec.model.dit;
    let process = spec.diffusion.process();
    let steps_total = process.steps();
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
    let prompt = prompt_input(model.into(), std::slice::from_ref(&options.prompt), device)?;
    options
        .sampling
        .validate(&process)
        .map_err(anyhow::Error::from)?;
    let (clip, clip_source) = match &options.video {
        Some(path) => (
            read_clip(path, spec.frames, spec.size)?,
            format!("the clip {}", path.display()),
        ),
        None => sections::training_clip(spec, &options.prompt, options.sampling.seed)?,
    };

    // The training view: the clip's latent, noised at step t, through the traced DiT.
    let (f, s) = (spec.frames, spec.size);
    let video = Tensor::<5>::from_data(
        TensorData::new(clip_to_tensor_data(&clip), [1, 3, f, s, s]),
        device,
    );
    let x0 = model.autoencoder.encode(video).mean * spec.latent_scale; // [1, C, F, h, w]
    let noise = gaussian(
        &mut rng_for(options.sampling.seed, Stream::TraceNoise, 0),
        x0.dims(),
        device,
    );
    let level = process.level_of_step(t);
    let x_t = process.noise(x0.clone(), noise.clone(), &[level]);
    let words = sections::prompt_words(model, &options.prompt, &prompt)?;
    let text = model.dit.encode_text(prompt);
    // The network reads the step itself (for a flow, σ·T = t).
    let timestep = Tensor::<1>::from_floats([process.timestep(level) as f32], device);
    let (output, dit_trace) = model.dit.forward_traced(x_t, timestep, &text);
    let target = process.target(x0.clone(), noise.clone(), &[level]);

    let (sampling, generated) = sections::sampling(model, options, device)?;
    Ok(TracePage {
        prompt: options.prompt.clone(),
        sections: vec![
            sections::input_clip(&clip, &clip_source)?,
            sections::patches(spec, &clip)?,
            sections::visual_encoder(spec, x0.clone())?,
            sections::forward_diffusion(model, &process, t, x0, noise)?,
            sections::conditioning(model, t, &words, text.pooled, &dit_trace)?,
            sections::adaln(&dit_trace)?,
            sections::attention(dit_config, &dit_trace, token)?,
            sections::mlp(dit_config, &dit_trace)?,
            sections::output_and_loss(model, process.prediction(), t, output, target)?,
            sampling,
            sections::decoded_clip(&generated, options)?,
        ],
    })
}

/// The generated clip as the page's GIF.
fn gif_figure(clip: &dit_data::Clip, caption: String) -> Result<Figure> {
    Ok(Figure {
        file: "11-clip.gif".into(),
        caption,
        bytes: encode_gif(clip, 4, 12).map_err(anyhow::Error::msg)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::generate;
    use base64::engine::general_purpose::STANDARD;
    use dit_data::{CaptionMode, Composition, MovingShapes, MovingShapesConfig};
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
        let page = trace(&model, &options("a red circle moving right"), &device).unwrap();
        page.write(&out).unwrap();
        let numbers = page.numbers();
        let html = fs::read_to_string(out.join("index.html")).unwrap();
        assert_eq!(html, page.html(), "the written page is the page in memory");
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
        // Every picture is also written as its file, byte for byte.
        for figure in page.sections.iter().flat_map(|s| &s.figures) {
            assert_eq!(fs::read(out.join(&figure.file)).unwrap(), figure.bytes);
        }
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
        let options = options("a blue square moving up");
        let numbers = trace(&model, &options, &device).unwrap().numbers();
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
        let numbers = trace(&fresh, &options("a green triangle moving left"), &device)
            .unwrap()
            .numbers();
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
    fn bad_options_are_errors() {
        let device = Device::default();
        let model = shipped(&device);
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
            let err = trace(&model, &options, &device).err().expect("an error");
            assert!(format!("{err:#}").contains(needle), "{err:#}");
        }
    }
}
