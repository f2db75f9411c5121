//! The HTTP API against a real server on 127.0.0.1 (a random port) with the shipped
//! checkpoint, through a real HTTP client.

mod common;

use std::sync::Arc;
use std::thread;

use base64::Engine as _;
use common::{client, events, get, judged_correct, post, post_json, shipped};
use dit_model::Backend;
use dit_serve::{Queue, ServeOptions, Studio, serve};
use serde_json::json;
use tokio::sync::oneshot;

/// A server on its own thread; stopped (gracefully) when dropped.
struct Server {
    base: String,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<std::io::Result<()>>>,
}

impl Server {
    fn start(queue_places: usize) -> Server {
        let (queue, info) = Queue::start(&shipped(), Backend::default_compiled(), 1, queue_places)
            .expect("the shipped checkpoint loads");
        let studio = Arc::new(Studio::new(info, queue));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                serve(listener, studio, &ServeOptions::default(), async {
                    let _ = stopped.await;
                })
                .await
            })
        });
        Server {
            base,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Stops the server and waits for it; the result of `serve`.
    fn stop(mut self) -> std::io::Result<()> {
        let _ = self.stop.take().unwrap().send(());
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[test]
fn a_good_prompt_returns_a_clip_the_judge_scores_correct() {
    let server = Server::start(4);
    let agent = client();
    let health = get(&agent, &server.url("/health"));
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok");

    for caption in ["a red circle moving right", "a yellow triangle moving up"] {
        let answer = post_json(
            &agent,
            &server.url("/api/generate"),
            &json!({ "prompt": caption }),
        );
        assert_eq!(
            answer.status,
            200,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
        assert_eq!(answer.content_type, "image/gif");
        assert!(judged_correct(&answer.body, caption), "{caption}");
    }

    // Every field, and the same request twice gives the same clip.
    let request = json!({"prompt": "a blue square moving left", "seed": 3, "steps": 30,
                         "guidance": 3.0, "sampler": "ddim", "eta": 0.0});
    let first = post_json(&agent, &server.url("/api/generate"), &request);
    let again = post_json(&agent, &server.url("/api/generate"), &request);
    assert_eq!(first.status, 200);
    assert_eq!(first.body, again.body);
    assert!(judged_correct(&first.body, "a blue square moving left"));

    // MP4 when asked for it: an ISO media file (its first box is `ftyp`).
    let mp4 = agent
        .post(server.url("/api/generate"))
        .header("Content-Type", "application/json")
        .header("Accept", "video/mp4")
        .send(request.to_string())
        .unwrap();
    assert_eq!(mp4.status().as_u16(), 200);
    assert_eq!(mp4.headers()["content-type"], "video/mp4");
    let bytes = mp4.into_body().read_to_vec().unwrap();
    assert_eq!(&bytes[4..8], b"ftyp");

    let vocabulary = get(&agent, &server.url("/api/vocabulary")).json();
    let words: Vec<&str> = vocabulary["words"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    for word in ["red", "circle", "moving", "right", "leftward"] {
        assert!(words.contains(&word), "{word}");
    }
    assert_eq!(vocabulary["max_steps"], 1000);
    assert!(!vocabulary["examples"].as_array().unwrap().is_empty());
    server.stop().unwrap();
}

#[test]
fn bad_requests_get_a_4xx_with_a_one_line_json_error() {
    let server = Server::start(4);
    let agent = client();
    let generate = server.url("/api/generate");
    let long_prompt = "a ".repeat(50_000);
    let cases: Vec<(&str, u16, String, &str)> =
        vec![
        (
            "unknown word",
            400,
            json!({"prompt": "a red blob moving right"}).to_string(),
            "unknown word(s) \"blob\"",
        ),
        ("empty prompt", 400, json!({"prompt": ""}).to_string(), "the prompt is empty"),
        (
            "punctuation only",
            400,
            json!({"prompt": "?!"}).to_string(),
            "the prompt is empty",
        ),
        (
            "100 kB prompt",
            413,
            json!({ "prompt": long_prompt }).to_string(),
            "larger than 4096 bytes",
        ),
        (
            "300-character prompt",
            400,
            json!({"prompt": "a ".repeat(150)}).to_string(),
            "at most 200 are allowed",
        ),
        (
            "too many words",
            400,
            json!({"prompt": "a red circle moving right a red circle moving right a red circle"})
                .to_string(),
            "at most 12 are allowed",
        ),
        (
            "steps 0",
            400,
            json!({"prompt": "a red circle moving right", "steps": 0}).to_string(),
            "--steps must be between 1 and 1000",
        ),
        (
            "steps 100,000",
            400,
            json!({"prompt": "a red circle moving right", "steps": 100_000}).to_string(),
            "--steps must be between 1 and 1000",
        ),
        (
            "negative steps",
            422,
            json!({"prompt": "a red circle moving right", "steps": -5}).to_string(),
            "steps",
        ),
        (
            "negative guidance",
            400,
            json!({"prompt": "a red circle moving right", "guidance": -1.0}).to_string(),
            "--cfg must be a finite number",
        ),
        (
            "unknown sampler",
            400,
            json!({"prompt": "a red circle moving right", "sampler": "heun"}).to_string(),
            "unknown sampler `heun`",
        ),
        (
            "eta out of range",
            400,
            json!({"prompt": "a red circle moving right", "eta": 2.0}).to_string(),
            "--eta must be in [0, 1]",
        ),
        (
            "unknown field",
            422,
            json!({"prompt": "a red circle moving right", "frames": 9}).to_string(),
            "unknown field `frames`",
        ),
        ("no prompt", 422, json!({"seed": 1}).to_string(), "missing field `prompt`"),
        ("malformed JSON", 400, "{\"prompt\": ".into(), "EOF while parsing"),
        ("not an object", 422, "[1, 2]".into(), "invalid type"),
    ];
    for (what, status, body, message) in &cases {
        let answer = post(&agent, &generate, "application/json", body);
        assert_eq!(
            answer.status,
            *status,
            "{what}: {}",
            String::from_utf8_lossy(&answer.body)
        );
        let error = answer.error();
        assert!(
            error.contains(message),
            "{what}: {error:?} lacks {message:?}"
        );
    }

    // The studio's job route checks the same way.
    let answer = post_json(
        &agent,
        &server.url("/api/jobs"),
        &json!({"prompt": "a red blob"}),
    );
    assert_eq!(answer.status, 400);
    assert!(answer.error().contains("\"blob\""));

    // The unknown-word message is the command line's (`dit-infer` prints `error: ` and it).
    let answer = post_json(
        &agent,
        &generate,
        &json!({"prompt": "a red blob moving right"}),
    );
    let spec = dit_model::run::read_spec(&shipped()).unwrap();
    let model = dit_model::TrainedModel::load(&shipped(), &Default::default()).unwrap();
    let cli_line = dit_infer::pipeline::check_prompt(
        &model.tokenizer,
        spec.model.dit.text.max_words,
        "a red blob moving right",
        0,
    )
    .map_err(anyhow::Error::from)
    .unwrap_err();
    assert_eq!(answer.error(), format!("{cli_line:#}"));

    let wrong_type = post(
        &agent,
        &generate,
        "text/plain",
        "{\"prompt\": \"a red circle\"}",
    );
    assert_eq!(wrong_type.status, 415);
    assert!(
        wrong_type
            .error()
            .contains("Content-Type: application/json")
    );

    let get_generate = get(&agent, &generate);
    assert_eq!(get_generate.status, 405);
    get_generate.error();
    for path in [
        "/nothing",
        "/api/jobs/999/clip.gif",
        "/api/jobs/abc/events",
        "/api/jobs/7/trace",
    ] {
        let answer = get(&agent, &server.url(path));
        assert_eq!(answer.status, 404, "{path}");
        answer.error();
    }
    // Still healthy.
    assert_eq!(get(&agent, &server.url("/health")).status, 200);
}

#[test]
fn thirty_two_concurrent_requests_are_all_answered_and_the_server_stays_healthy() {
    let server = Arc::new(Server::start(2));
    // All 32 are sent at once, and each generation is long enough (100 steps) that they
    // arrive while the first is running, however busy the machine.
    let start = Arc::new(std::sync::Barrier::new(32));
    let handles: Vec<_> = (0..32)
        .map(|i| {
            let url = server.url("/api/generate");
            let start = Arc::clone(&start);
            thread::spawn(move || {
                let body = json!({"prompt": "a green square moving down", "seed": i, "steps": 100});
                let agent = client();
                start.wait();
                post_json(&agent, &url, &body)
            })
        })
        .collect();
    let answers: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let ok = answers.iter().filter(|a| a.status == 200).count();
    let busy: Vec<_> = answers.iter().filter(|a| a.status == 503).collect();
    assert_eq!(ok + busy.len(), 32, "only 200 and 503");
    assert!(ok >= 3, "one running and two queued are served, got {ok}");
    assert!(!busy.is_empty(), "a queue of 2 cannot take 32 at once");
    for answer in &busy {
        let seconds: u64 = answer.retry_after.as_deref().unwrap().parse().unwrap();
        assert!(seconds >= 1);
        assert!(answer.error().contains("queue is full"));
    }
    for answer in answers.iter().filter(|a| a.status == 200) {
        assert_eq!(answer.content_type, "image/gif");
    }
    let agent = client();
    let health = get(&agent, &server.url("/health")).json();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["queue"]["waiting"], 0);
    let after = post_json(
        &agent,
        &server.url("/api/generate"),
        &json!({"prompt": "a red circle moving right"}),
    );
    assert_eq!(after.status, 200);
}

#[test]
fn a_job_streams_previews_of_the_clean_clip_then_the_clip_and_its_trace() {
    let server = Server::start(4);
    let agent = client();
    let request = json!({"prompt": "a magenta circle moving left", "steps": 40, "seed": 1});
    let started = post_json(&agent, &server.url("/api/jobs"), &request);
    assert_eq!(started.status, 202);
    let job = started.json();
    let stream = events(&agent, &server.url(job["events"].as_str().unwrap()));

    let (last, steps) = stream.split_last().expect("events");
    assert_eq!(last.0, "done", "{stream:?}");
    let steps: Vec<_> = steps.iter().filter(|(name, _)| name == "step").collect();
    assert!(!steps.is_empty(), "previews arrive while denoising");
    let done: Vec<u64> = steps
        .iter()
        .map(|(_, d)| d["done"].as_u64().unwrap())
        .collect();
    assert!(done.windows(2).all(|w| w[0] < w[1]), "{done:?}");
    assert_eq!(done[0], 1, "the first step is always shown");
    for (_, data) in &steps {
        assert_eq!(data["total"], 40);
        let uri = data["preview"].as_str().unwrap();
        let gif = uri
            .strip_prefix("data:image/gif;base64,")
            .expect("a GIF data URI");
        let gif = base64::engine::general_purpose::STANDARD
            .decode(gif)
            .unwrap();
        assert_eq!(&gif[..6], b"GIF89a");
    }

    // The clip is the one the synchronous API makes of the same request.
    let clip = get(&agent, &server.url(last.1["clip"].as_str().unwrap()));
    assert_eq!(clip.status, 200);
    assert_eq!(clip.content_type, "image/gif");
    let direct = post_json(&agent, &server.url("/api/generate"), &request);
    assert_eq!(clip.body, direct.body);
    assert!(judged_correct(&clip.body, "a magenta circle moving left"));
    let mp4 = get(&agent, &server.url(last.1["mp4"].as_str().unwrap()));
    assert_eq!((mp4.status, mp4.content_type.as_str()), (200, "video/mp4"));

    // A stream opened after the end replays the final state.
    let replay = events(&agent, &server.url(job["events"].as_str().unwrap()));
    assert_eq!(replay.len(), 1);
    assert_eq!(replay[0].0, "done");

    // "How it was made": the trace page of this prompt and these settings.
    let trace = get(&agent, &server.url(job["trace"].as_str().unwrap()));
    assert_eq!(trace.status, 200);
    assert!(trace.content_type.starts_with("text/html"));
    let page = String::from_utf8(trace.body).unwrap();
    for title in ["1. The input clip", "7. Self-attention", "11. "] {
        assert!(page.contains(title), "{title}");
    }
    assert!(page.contains("a magenta circle moving left"));
}

#[test]
fn a_stop_lets_the_request_in_flight_finish() {
    let server = Server::start(4);
    let url = server.url("/api/generate");
    let request = thread::spawn(move || {
        post_json(
            &client(),
            &url,
            &json!({"prompt": "a cyan triangle moving right", "steps": 200}),
        )
    });
    // The worker takes the job at once; 200 steps take over a second.
    thread::sleep(std::time::Duration::from_millis(300));
    server.stop().unwrap();
    let answer = request.join().unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.content_type, "image/gif");
}
