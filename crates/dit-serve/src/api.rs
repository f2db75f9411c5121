//! The HTTP surface: the studio page, the JSON API and the job streams.
//!
//! | route | answer |
//! |---|---|
//! | `GET /` | the studio page |
//! | `GET /health` | `{"status": "ok", …}` with the queue's state |
//! | `GET /api/vocabulary` | the known words, example prompts, defaults and limits |
//! | `POST /api/generate` | the clip of a JSON request, `image/gif` (or `video/mp4`) |
//! | `POST /api/jobs` | `202` and the job's URLs; the page's way to generate |
//! | `GET /api/jobs/{id}/events` | server-sent events: `queued`, `step` (x̂₀ previews), `done` or `failed` |
//! | `GET /api/jobs/{id}/clip.gif`, `clip.mp4` | the finished clip |
//! | `GET /api/jobs/{id}/trace` | the `dit-infer trace` page of the job's prompt and settings |
//!
//! Every error is JSON, `{"error": "one line"}`, with a 4xx status for bad requests (the
//! same line the command line gives) and `503` with `Retry-After` when the queue is full.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use dit_data::Composition;
use dit_data::fashion::FashionComposition;
use dit_data::video::{ClipFormat, FRAMES_PER_SECOND, encode_clip};
use dit_infer::pipeline::{DEFAULT_STEPS, GenerateError, GenerateOptions, check_prompts};
use dit_model::TrainingData;
use dit_model::sampler::SamplerKind;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use crate::jobs::{CLIP_SCALE, ModelInfo, Output, Progress, Queue, QueueFull, Request};

/// Largest request body, in bytes.
pub const MAX_BODY_BYTES: usize = 4096;
/// Longest prompt, in characters (a caption has at most a dozen words).
pub const MAX_PROMPT_CHARS: usize = 200;
/// Finished jobs kept for their clip and trace links; older ones are forgotten.
pub const KEPT_JOBS: usize = 64;

/// The studio's page: plain HTML, CSS and JavaScript, no build step.
const STUDIO_PAGE: &str = include_str!("studio.html");

/// What the handlers share.
pub struct Studio {
    /// The model's words, spec and checkpoint.
    pub info: ModelInfo,
    /// The workers.
    pub queue: Queue,
    jobs: Mutex<Jobs>,
}

/// Recent jobs of the page, by id.
#[derive(Default)]
struct Jobs {
    next_id: u64,
    recent: VecDeque<(u64, Arc<Job>)>,
}

/// A job started by the page.
struct Job {
    request: Request,
    progress: watch::Receiver<Progress>,
    /// The trace page, once made.
    trace: Mutex<Option<Arc<str>>>,
}

impl Studio {
    /// The studio of a started queue.
    pub fn new(info: ModelInfo, queue: Queue) -> Self {
        Self {
            info,
            queue,
            jobs: Mutex::new(Jobs::default()),
        }
    }

    fn job(&self, id: u64) -> Result<Arc<Job>, ApiError> {
        let jobs = self.jobs.lock().expect("jobs lock");
        jobs.recent
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, job)| Arc::clone(job))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("no job {id} (the studio keeps the last {KEPT_JOBS})"),
                )
            })
    }

    fn remember(&self, job: Job) -> u64 {
        let mut jobs = self.jobs.lock().expect("jobs lock");
        let id = jobs.next_id;
        jobs.next_id += 1;
        jobs.recent.push_back((id, Arc::new(job)));
        while jobs.recent.len() > KEPT_JOBS {
            jobs.recent.pop_front();
        }
        id
    }
}

/// The router of the studio.
pub fn router(studio: Arc<Studio>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/health", get(health))
        .route("/api/vocabulary", get(vocabulary_handler))
        .route("/api/generate", post(generate_handler))
        .route("/api/jobs", post(start_job))
        .route("/api/jobs/{id}/events", get(job_events))
        .route("/api/jobs/{id}/clip.gif", get(job_gif))
        .route("/api/jobs/{id}/clip.mp4", get(job_mp4))
        .route("/api/jobs/{id}/trace", get(job_trace))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such page") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "this method is not allowed here",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(refuse_oversized))
        .with_state(studio)
}

/// Declared bodies up to this size are read and dropped before the 413 answer; larger ones
/// are refused unread.
const DRAINED_BODY_BYTES: u64 = 1 << 20;

/// Answers a request whose declared body (`Content-Length`) is over [`MAX_BODY_BYTES`] with
/// 413 and `Connection: close`, after reading the body and dropping it when it is at most
/// [`DRAINED_BODY_BYTES`] (for at most 5 s). A server that closes while the client is still
/// sending makes the client's system reset the connection, which loses the answer; letting
/// the client finish first, in bounded time and memory, gets it the message.
async fn refuse_oversized(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(bytes) if bytes > MAX_BODY_BYTES as u64 => {
            if bytes <= DRAINED_BODY_BYTES {
                let body = axum::body::to_bytes(request.into_body(), DRAINED_BODY_BYTES as usize);
                let _ = tokio::time::timeout(std::time::Duration::from_secs(5), body).await;
            }
            let mut response = ApiError::too_large().into_response();
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
        _ => next.run(request).await,
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// An error answer: a status and a one-line message, sent as `{"error": message}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    /// An answer of `status` with `message`.
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 413: a request body over [`MAX_BODY_BYTES`].
    fn too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
        )
    }
}

impl From<QueueFull> for ApiError {
    fn from(full: QueueFull) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!(
                "the generation queue is full; try again in {} s",
                full.retry_after_seconds
            ),
            retry_after: Some(full.retry_after_seconds),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let message = match &rejection {
            JsonRejection::MissingJsonContentType(_) => {
                "the request body must be JSON, sent with Content-Type: application/json".into()
            }
            JsonRejection::BytesRejection(_)
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                return Self::too_large();
            }
            _ => rejection.body_text(),
        };
        Self::new(rejection.status(), message)
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::new(StatusCode::NOT_FOUND, rejection.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(json!({ "error": self.message }))).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

/// The JSON body of `POST /api/generate` and `POST /api/jobs`; all but `prompt` optional.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateBody {
    /// The prompt, e.g. "a red circle moving right".
    pub prompt: String,
    /// Seed of the noise (default 0).
    pub seed: Option<u64>,
    /// Denoising steps (default 50).
    pub steps: Option<usize>,
    /// Classifier-free guidance scale (default: the checkpoint's).
    pub guidance: Option<f64>,
    /// `ddim`, `ddpm` or `euler` (default: the checkpoint's).
    pub sampler: Option<String>,
    /// DDIM's η in [0, 1] (default 0).
    pub eta: Option<f64>,
}

/// Checks a request body against the model, with the command line's messages.
pub fn parse_request(info: &ModelInfo, body: GenerateBody) -> Result<Request, ApiError> {
    let chars = body.prompt.chars().count();
    if chars > MAX_PROMPT_CHARS {
        return Err(ApiError::bad_request(format!(
            "the prompt has {chars} characters, at most {MAX_PROMPT_CHARS} are allowed"
        )));
    }
    let process = info.spec.diffusion.process();
    let sampler = match body.sampler.as_deref() {
        None => process.default_sampler(),
        Some(name) => name.parse().map_err(ApiError::bad_request)?,
    };
    let sampler = sampler.with_eta(body.eta.unwrap_or(0.0));
    let options = GenerateOptions {
        steps: body.steps.unwrap_or(DEFAULT_STEPS),
        sampler,
        guidance: body.guidance.unwrap_or(info.spec.guidance),
        seed: body.seed.unwrap_or(0),
        prompt_offset: 0,
    };
    let one_line =
        |e: GenerateError| ApiError::bad_request(format!("{:#}", anyhow::Error::from(e)));
    check_prompts(
        &info.spec,
        &info.tokenizer,
        std::slice::from_ref(&body.prompt),
    )
    .map_err(one_line)?;
    options.validate(&process).map_err(one_line)?;
    Ok(Request {
        prompt: body.prompt,
        options,
    })
}

// ---------------------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------------------

async fn page() -> Html<&'static str> {
    Html(STUDIO_PAGE)
}

async fn health(State(studio): State<Arc<Studio>>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "checkpoint": studio.info.checkpoint.display().to_string(),
        "backend": studio.info.backend.name(),
        "queue": {"waiting": studio.queue.waiting(), "capacity": studio.queue.capacity()},
    }))
}

async fn vocabulary_handler(State(studio): State<Arc<Studio>>) -> Json<Value> {
    let info = &studio.info;
    let mut words: Vec<&str> = info.tokenizer.words().iter().map(String::as_str).collect();
    words.sort_unstable();
    // Canonical captions of the training compositions of the data the model learned.
    let captions: Vec<String> = match info.spec.training_data() {
        TrainingData::MovingFashion => FashionComposition::training()
            .iter()
            .step_by(23)
            .map(FashionComposition::canonical_caption)
            .collect(),
        _ => Composition::training()
            .iter()
            .step_by(7)
            .map(Composition::canonical_caption)
            .collect(),
    };
    let examples: Vec<String> = captions
        .into_iter()
        .filter(|c| info.tokenizer.encode(c, usize::MAX).is_ok())
        .collect();
    let process = info.spec.diffusion.process();
    let samplers: Vec<&str> = SamplerKind::ALL
        .into_iter()
        .filter(|&k| process.check_sampler(k).is_ok())
        .map(SamplerKind::name)
        .collect();
    let pretrained = info.spec.model.dit.text.pretrained;
    Json(json!({
        "words": words,
        "text_encoder": pretrained.map_or("trained with the model", |p| p.name()),
        "any_text": pretrained.is_some(),
        "max_words": match pretrained {
            None => info.spec.model.dit.text.max_words,
            Some(_) => dit_model::minilm::MAX_TOKENS,
        },
        "max_prompt_chars": MAX_PROMPT_CHARS,
        "examples": examples,
        "defaults": {
            "steps": DEFAULT_STEPS,
            "guidance": info.spec.guidance,
            "seed": 0,
            "sampler": process.default_sampler().name(),
        },
        "max_steps": info.spec.diffusion.steps,
        "samplers": samplers,
    }))
}

/// Whether the client asked for MP4 rather than GIF.
fn wants_mp4(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim().starts_with("video/mp4")))
}

/// The answer carrying a finished job's clip; MP4 is encoded on a blocking thread, off the
/// threads that serve connections.
async fn clip_response(output: Arc<Output>, format: ClipFormat) -> Result<Response, ApiError> {
    let failed = |e: String| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode MP4: {e}"),
        )
    };
    let (bytes, mime) = match format {
        ClipFormat::Mp4 => {
            let clip = Arc::clone(&output);
            let encoded = tokio::task::spawn_blocking(move || {
                encode_clip(&clip.clip, ClipFormat::Mp4, CLIP_SCALE, FRAMES_PER_SECOND)
            })
            .await
            .map_err(|e| failed(e.to_string()))?;
            (encoded.map_err(failed)?, "video/mp4")
        }
        _ => (output.gif.clone(), "image/gif"),
    };
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(mime)),
            (
                header::HeaderName::from_static("x-generation-seconds"),
                HeaderValue::from_str(&format!("{:.3}", output.seconds)).expect("a number"),
            ),
        ],
        Bytes::from(bytes),
    )
        .into_response())
}

/// Waits for the end of a job.
async fn finished(mut progress: watch::Receiver<Progress>) -> Result<Arc<Output>, ApiError> {
    let state = progress
        .wait_for(Progress::is_final)
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the worker stopped"))?
        .clone();
    match state {
        Progress::Done(output) => Ok(output),
        Progress::Failed(message) => Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)),
        _ => unreachable!("wait_for returns a final state"),
    }
}

async fn generate_handler(
    State(studio): State<Arc<Studio>>,
    headers: HeaderMap,
    body: Result<Json<GenerateBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let request = parse_request(&studio.info, body?.0)?;
    let progress = studio.queue.generate(request, false)?;
    let output = finished(progress).await?;
    let format = if wants_mp4(&headers) {
        ClipFormat::Mp4
    } else {
        ClipFormat::Gif
    };
    clip_response(output, format).await
}

async fn start_job(
    State(studio): State<Arc<Studio>>,
    body: Result<Json<GenerateBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let request = parse_request(&studio.info, body?.0)?;
    let progress = studio.queue.generate(request.clone(), true)?;
    let id = studio.remember(Job {
        request,
        progress,
        trace: Mutex::new(None),
    });
    let urls = json!({
        "id": id,
        "events": format!("/api/jobs/{id}/events"),
        "clip": format!("/api/jobs/{id}/clip.gif"),
        "mp4": format!("/api/jobs/{id}/clip.mp4"),
        "trace": format!("/api/jobs/{id}/trace"),
    });
    Ok((StatusCode::ACCEPTED, Json(urls)).into_response())
}

/// The server-sent event of a job state.
fn event(id: u64, state: &Progress) -> Event {
    let (name, data) = match state {
        Progress::Queued => ("queued", json!({})),
        Progress::Step {
            done,
            total,
            preview,
        } => (
            "step",
            json!({"done": done, "total": total, "preview": &**preview}),
        ),
        Progress::Done(output) => (
            "done",
            json!({
                "clip": format!("/api/jobs/{id}/clip.gif"),
                "mp4": format!("/api/jobs/{id}/clip.mp4"),
                "trace": format!("/api/jobs/{id}/trace"),
                "seconds": output.seconds,
            }),
        ),
        Progress::Failed(message) => ("failed", json!({"error": message})),
    };
    Event::default().event(name).data(data.to_string())
}

async fn job_events(
    State(studio): State<Arc<Studio>>,
    id: Result<Path<u64>, PathRejection>,
) -> Result<Sse<impl tokio_stream::Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let Path(id) = id?;
    let mut progress = studio.job(id)?.progress.clone();
    // A small channel: a client that reads slowly holds up this task, which then skips
    // to the newest state (watch keeps only that one).
    let (sender, receiver) = mpsc::channel(2);
    tokio::spawn(async move {
        loop {
            let state = progress.borrow_and_update().clone();
            if sender.send(Ok(event(id, &state))).await.is_err() || state.is_final() {
                return;
            }
            if progress.changed().await.is_err() {
                return;
            }
        }
    });
    Ok(Sse::new(ReceiverStream::new(receiver)).keep_alive(KeepAlive::default()))
}

async fn job_clip(studio: &Studio, id: u64, format: ClipFormat) -> Result<Response, ApiError> {
    let job = studio.job(id)?;
    let output = finished(job.progress.clone()).await?;
    clip_response(output, format).await
}

async fn job_gif(
    State(studio): State<Arc<Studio>>,
    id: Result<Path<u64>, PathRejection>,
) -> Result<Response, ApiError> {
    job_clip(&studio, id?.0, ClipFormat::Gif).await
}

async fn job_mp4(
    State(studio): State<Arc<Studio>>,
    id: Result<Path<u64>, PathRejection>,
) -> Result<Response, ApiError> {
    job_clip(&studio, id?.0, ClipFormat::Mp4).await
}

async fn job_trace(
    State(studio): State<Arc<Studio>>,
    id: Result<Path<u64>, PathRejection>,
) -> Result<Response, ApiError> {
    let job = studio.job(id?.0)?;
    if let Some(page) = job.trace.lock().expect("trace lock").clone() {
        return Ok(Html(page.to_string()).into_response());
    }
    let reply = studio.queue.trace(job.request.clone())?;
    let page = reply
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the worker stopped"))?
        .map_err(|message| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message))?;
    let page: Arc<str> = page.into();
    *job.trace.lock().expect("trace lock") = Some(Arc::clone(&page));
    Ok(Html(page.to_string()).into_response())
}
