//! The generation queue: the model lives on worker threads, requests wait in a bounded
//! queue, and each job reports its progress through a [`watch`] channel.
//!
//! A worker loads the checkpoint once and then serves jobs one after another. A full
//! queue refuses new work at once ([`QueueFull`]) instead of making requests wait without
//! bound. Progress is a single latest state, not a log: a slow reader of a job's previews
//! skips to the newest one, so memory does not grow with slow clients.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use burn::tensor::Device;
use dit_data::Clip;
use dit_data::video::{ClipFormat, FRAMES_PER_SECOND, encode_clip};
use dit_infer::pipeline::{GenerateOptions, decode_latent, generate};
use dit_infer::trace::{TraceOptions, trace};
use dit_model::{Backend, RunSpec, Tokenizer, TrainedModel};
use tokio::sync::{oneshot, watch};

/// Pixel magnification of the clips the studio serves (a 32-pixel frame becomes 128).
pub const CLIP_SCALE: usize = 4;
/// Pixel magnification of the streamed previews (the page enlarges them).
pub const PREVIEW_SCALE: usize = 1;

/// A generation request, checked against the model (see `api::parse_request`).
#[derive(Debug, Clone)]
pub struct Request {
    /// The prompt.
    pub prompt: String,
    /// Steps, sampler, guidance and seed.
    pub options: GenerateOptions,
}

/// Where a job stands.
#[derive(Debug, Clone)]
pub enum Progress {
    /// Waiting for a worker.
    Queued,
    /// Denoising: step `done` of `total`, with the predicted clean clip x̂₀ of that step.
    Step {
        /// Steps done.
        done: usize,
        /// Steps of the job.
        total: usize,
        /// The decoded x̂₀ as an animated GIF data URI.
        preview: Arc<str>,
    },
    /// Finished.
    Done(Arc<Output>),
    /// Failed after it was accepted (the message says why).
    Failed(String),
}

impl Progress {
    /// Whether nothing more will follow.
    pub fn is_final(&self) -> bool {
        matches!(self, Progress::Done(_) | Progress::Failed(_))
    }
}

/// A finished generation.
#[derive(Debug)]
pub struct Output {
    /// The clip's frames.
    pub clip: Clip,
    /// The clip as an animated GIF ([`CLIP_SCALE`]×, [`FRAMES_PER_SECOND`]).
    pub gif: Vec<u8>,
    /// Seconds from the moment a worker took the job to the encoded clip.
    pub seconds: f64,
}

/// Work for a worker.
enum Work {
    /// Generate a clip; `previews` asks for a decoded x̂₀ after the steps.
    Generate {
        request: Request,
        previews: bool,
        progress: watch::Sender<Progress>,
    },
    /// Trace a request through the pipeline: the page of `dit-infer trace`.
    Trace {
        request: Request,
        reply: oneshot::Sender<Result<String, String>>,
    },
}

/// The queue was full: try again after about `retry_after_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull {
    /// A guess of when a place frees up.
    pub retry_after_seconds: u64,
}

/// What the request handlers know of the model without touching it.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// The checkpoint folder.
    pub checkpoint: PathBuf,
    /// The run's spec (schedule length, prediction, default guidance, prompt length).
    pub spec: RunSpec,
    /// The tokenizer (the known words).
    pub tokenizer: Tokenizer,
    /// The backend the workers run on.
    pub backend: Backend,
}

/// The handle of the worker pool.
pub struct Queue {
    sender: SyncSender<Work>,
    /// Jobs accepted and not yet taken by a worker.
    waiting: Arc<AtomicUsize>,
    /// Places in the queue.
    capacity: usize,
    /// Mean seconds a job took (for `Retry-After`), in milliseconds.
    mean_millis: Arc<AtomicUsize>,
}

impl Queue {
    /// Starts `workers` threads, each loading the checkpoint once, behind a queue of
    /// `capacity` places. Returns when every worker has loaded the model, or the first
    /// loading error.
    pub fn start(
        checkpoint: &Path,
        backend: Backend,
        workers: usize,
        capacity: usize,
    ) -> Result<(Queue, ModelInfo)> {
        anyhow::ensure!(workers >= 1, "--workers must be at least 1");
        anyhow::ensure!(capacity >= 1, "--queue must be at least 1");
        let (sender, receiver) = sync_channel::<Work>(capacity);
        let receiver = Arc::new(Mutex::new(receiver));
        let waiting = Arc::new(AtomicUsize::new(0));
        let mean_millis = Arc::new(AtomicUsize::new(1000));
        let mut info = None;
        for index in 0..workers {
            let (loaded_tx, loaded_rx) = std::sync::mpsc::channel();
            let receiver = Arc::clone(&receiver);
            let waiting = Arc::clone(&waiting);
            let mean_millis = Arc::clone(&mean_millis);
            let checkpoint = checkpoint.to_path_buf();
            thread::Builder::new()
                .name(format!("dit-serve worker {index}"))
                .spawn(move || {
                    let loaded = backend.device().map_err(anyhow::Error::msg).and_then(|d| {
                        TrainedModel::load(&checkpoint, &d)
                            .with_context(|| format!("cannot load {}", checkpoint.display()))
                            .map(|m| (m, d))
                    });
                    match loaded {
                        Ok((model, device)) => {
                            let _ = loaded_tx.send(Ok(ModelInfo {
                                checkpoint: checkpoint.clone(),
                                spec: model.spec.clone(),
                                tokenizer: model.tokenizer.clone(),
                                backend,
                            }));
                            work(&model, &device, &receiver, &waiting, &mean_millis);
                        }
                        Err(e) => {
                            let _ = loaded_tx.send(Err(e));
                        }
                    }
                })
                .context("cannot start a worker thread")?;
            let loaded = loaded_rx
                .recv()
                .context("a worker stopped while loading the model")??;
            info.get_or_insert(loaded);
        }
        let queue = Queue {
            sender,
            waiting,
            capacity,
            mean_millis,
        };
        Ok((queue, info.expect("at least one worker")))
    }

    /// Jobs waiting for a worker.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Places in the queue.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn submit(&self, work: Work) -> Result<(), QueueFull> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        match self.sender.try_send(work) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                let mean = self.mean_millis.load(Ordering::Relaxed) as u64;
                let queued = self.capacity as u64 + 1;
                Err(QueueFull {
                    retry_after_seconds: (queued * mean).div_ceil(1000).max(1),
                })
            }
        }
    }

    /// Queues a generation; its progress arrives on the returned channel, ending in
    /// [`Progress::Done`] or [`Progress::Failed`].
    pub fn generate(
        &self,
        request: Request,
        previews: bool,
    ) -> Result<watch::Receiver<Progress>, QueueFull> {
        let (progress, receiver) = watch::channel(Progress::Queued);
        self.submit(Work::Generate {
            request,
            previews,
            progress,
        })?;
        Ok(receiver)
    }

    /// Queues the trace of a request; the page arrives on the returned channel.
    pub fn trace(
        &self,
        request: Request,
    ) -> Result<oneshot::Receiver<Result<String, String>>, QueueFull> {
        let (reply, receiver) = oneshot::channel();
        self.submit(Work::Trace { request, reply })?;
        Ok(receiver)
    }
}

/// A worker's loop: take the next job until the queue is dropped.
fn work(
    model: &TrainedModel,
    device: &Device,
    receiver: &Mutex<Receiver<Work>>,
    waiting: &AtomicUsize,
    mean_millis: &AtomicUsize,
) {
    loop {
        let next = receiver.lock().map(|r| r.recv());
        let Ok(Ok(work)) = next else { return };
        waiting.fetch_sub(1, Ordering::SeqCst);
        let start = Instant::now();
        match work {
            Work::Generate {
                request,
                previews,
                progress,
            } => {
                // A panic inside the model is reported as this job's failure; the worker
                // goes on with the next job.
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run_generation(model, device, &request, previews, &progress)
                }));
                let state = match result {
                    Ok(Ok(output)) => Progress::Done(Arc::new(output)),
                    Ok(Err(e)) => Progress::Failed(format!("{e:#}")),
                    Err(_) => Progress::Failed("internal error: the generation panicked".into()),
                };
                progress.send_replace(state);
            }
            Work::Trace { request, reply } => {
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run_trace(model, device, &request)
                }));
                let page = match result {
                    Ok(Ok(page)) => Ok(page),
                    Ok(Err(e)) => Err(format!("{e:#}")),
                    Err(_) => Err("internal error: the trace panicked".into()),
                };
                let _ = reply.send(page);
            }
        }
        // An exponential mean of job times, for Retry-After.
        let millis = start.elapsed().as_millis() as usize;
        let old = mean_millis.load(Ordering::Relaxed);
        mean_millis.store((3 * old + millis) / 4, Ordering::Relaxed);
    }
}

/// A clip as a `data:` URI of an animated GIF.
fn gif_data_uri(clip: &Clip, scale: usize) -> Result<String> {
    let gif =
        encode_clip(clip, ClipFormat::Gif, scale, FRAMES_PER_SECOND).map_err(anyhow::Error::msg)?;
    Ok(format!("data:image/gif;base64,{}", STANDARD.encode(gif)))
}

fn run_generation(
    model: &TrainedModel,
    device: &Device,
    request: &Request,
    previews: bool,
    progress: &watch::Sender<Progress>,
) -> Result<Output> {
    let start = Instant::now();
    // A preview (decoding x̂₀, encoding a GIF) costs about three denoising steps of `tiny`
    // on two CPU cores. Previews take at most half the time: the next one is due once as
    // much time has passed since the last one as that one took. So a fast machine
    // previews every step, a slow one every few.
    let mut last_preview: Option<(Instant, Duration)> = None;
    let mut preview_error = None;
    let prompts = [request.prompt.clone()];
    let clips = generate(model.into(), &prompts, &request.options, device, |step| {
        let due = last_preview.is_none_or(|(end, cost)| end.elapsed() >= cost);
        // Nobody watching (the page closed): no previews to make.
        if !previews || !due || step.done == step.total || progress.is_closed() {
            return;
        }
        let preview_start = Instant::now();
        let clip = &decode_latent(model.into(), step.predicted_clean.clone())[0];
        match gif_data_uri(clip, PREVIEW_SCALE) {
            Ok(uri) => {
                progress.send_replace(Progress::Step {
                    done: step.done,
                    total: step.total,
                    preview: uri.into(),
                });
                last_preview = Some((Instant::now(), preview_start.elapsed()));
            }
            Err(e) => preview_error = Some(e),
        }
    })?;
    if let Some(e) = preview_error {
        return Err(e.context("cannot encode a preview"));
    }
    let clip = clips.into_iter().next().context("no clip was generated")?;
    let gif = encode_clip(&clip, ClipFormat::Gif, CLIP_SCALE, FRAMES_PER_SECOND)
        .map_err(anyhow::Error::msg)?;
    Ok(Output {
        clip,
        gif,
        seconds: start.elapsed().as_secs_f64(),
    })
}

fn run_trace(model: &TrainedModel, device: &Device, request: &Request) -> Result<String> {
    let options = TraceOptions {
        prompt: request.prompt.clone(),
        video: None,
        t: None,
        token: None,
        sampling: request.options.clone(),
    };
    Ok(trace(model, &options, device)?.html())
}
