//! What the server tests share: an HTTP client that reads error statuses as answers, and
//! the judge's verdict on a served clip.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Lines, Read};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use dit_data::video::gif_from_bytes;
use dit_data::{Composition, judge_clip};
use dit_model::run::read_spec;

/// A client that returns 4xx/5xx answers instead of failing on them.
pub fn client() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

/// An answer read whole.
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub retry_after: Option<String>,
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// The `error` of a JSON error answer, checked to be one non-empty line.
    pub fn error(&self) -> String {
        assert!(
            self.content_type.starts_with("application/json"),
            "error answers are JSON, got {} ({:?})",
            self.content_type,
            String::from_utf8_lossy(&self.body)
        );
        let message = self.json()["error"]
            .as_str()
            .expect("an `error` string")
            .to_string();
        assert!(
            !message.is_empty() && !message.contains('\n'),
            "{message:?}"
        );
        message
    }
}

fn read(response: ureq::http::Response<ureq::Body>) -> Answer {
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    let status = response.status().as_u16();
    let content_type = header("content-type").unwrap_or_default();
    let retry_after = header("retry-after");
    let mut body = Vec::new();
    response
        .into_body()
        .into_reader()
        .read_to_end(&mut body)
        .expect("the body is read");
    Answer {
        status,
        content_type,
        retry_after,
        body,
    }
}

/// `GET url`.
pub fn get(agent: &ureq::Agent, url: &str) -> Answer {
    read(agent.get(url).call().expect("an answer"))
}

/// `DELETE url`.
pub fn delete(agent: &ureq::Agent, url: &str) -> Answer {
    read(agent.delete(url).call().expect("an answer"))
}

/// `POST url` with `body` and a content type.
pub fn post(agent: &ureq::Agent, url: &str, content_type: &str, body: &str) -> Answer {
    read(
        agent
            .post(url)
            .header("Content-Type", content_type)
            .send(body)
            .expect("an answer"),
    )
}

/// `POST url` with a JSON body.
pub fn post_json(agent: &ureq::Agent, url: &str, body: &serde_json::Value) -> Answer {
    post(agent, url, "application/json", &body.to_string())
}

/// The events of a server-sent event stream, `(name, data)`, until it ends.
pub fn events(agent: &ureq::Agent, url: &str) -> Vec<(String, serde_json::Value)> {
    let response = agent.get(url).call().expect("an answer");
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let reader = BufReader::new(response.into_body().into_reader());
    let mut out = Vec::new();
    let (mut name, mut data) = (String::new(), String::new());
    for line in reader.lines() {
        let line = line.expect("a line");
        if let Some(v) = line.strip_prefix("event:") {
            name = v.trim().to_string();
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.trim_start());
        } else if line.is_empty() && !data.is_empty() {
            out.push((
                std::mem::take(&mut name),
                serde_json::from_str(&std::mem::take(&mut data)).expect("JSON data"),
            ));
        }
    }
    out
}

/// A run folder of an untrained 4-frame Moving Shapes model that conditions on the frozen
/// all-MiniLM-L6-v2.
pub fn minilm_run() -> tempfile::TempDir {
    use dit_model::frozen_text::PretrainedText;
    use dit_model::{TextEncoderConfig, Tokenizer};
    let run = tempfile::Builder::new()
        .prefix("dit-serve-minilm-")
        .tempdir()
        .unwrap();
    let tokenizer = Tokenizer::new(&dit_data::vocabulary());
    let text = TextEncoderConfig::new(tokenizer.num_ids())
        .with_width(16)
        .with_pretrained(Some(PretrainedText::MiniLmL6V2));
    let spec = dit_model::run::micro_spec(text, true);
    dit_model::run::write_untrained_run(run.path(), &spec, &tokenizer, &Default::default())
        .unwrap();
    run
}

/// The shipped checkpoint.
pub fn shipped() -> std::path::PathBuf {
    dit_infer::default_checkpoint()
}

/// Whether the judge sees `caption`'s composition in a served GIF.
pub fn judged_correct(gif: &[u8], caption: &str) -> bool {
    let spec = read_spec(&shipped()).expect("the shipped spec");
    let clip = gif_from_bytes(gif, Path::new("served.gif"), spec.frames, spec.size)
        .expect("a GIF of the model's frames");
    let composition = Composition::parse_caption(caption).expect("a Moving Shapes caption");
    judge_clip(&clip).matches(&composition).all()
}

/// Starts the `dit-serve` binary on a free port of 127.0.0.1 with `args`: the child, the
/// address it prints first (`127.0.0.1:PORT`) and the rest of what it prints.
pub fn start_studio(args: &[&str]) -> (Child, String, Lines<BufReader<ChildStdout>>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dit-serve"))
        .args(["--port", "0"])
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("dit-serve starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().expect("a line").unwrap();
    let address = first
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http://"))
        .unwrap_or_else(|| panic!("no address in {first:?}"))
        .trim_end_matches('/')
        .to_string();
    (child, address, lines)
}
