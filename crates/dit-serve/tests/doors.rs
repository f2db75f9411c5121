//! The studio's doors through the real binary and raw TCP: it answers only its own names
//! (DNS rebinding), and a thousand idle connections neither keep a request from being served
//! nor cost it more descriptors than its connection limit.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Child;
use std::time::{Duration, Instant};

/// The studio as a child process, killed when dropped.
struct Studio {
    child: Child,
    address: SocketAddr,
}

impl Studio {
    /// Starts `dit-serve --port 0` with `args`.
    fn start(args: &[&str]) -> Self {
        let (child, address, _) = common::start_studio(args);
        Self {
            child,
            address: address.parse().unwrap(),
        }
    }

    /// Open file descriptors of the server process.
    fn descriptors(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .unwrap()
            .count()
    }

    /// Sends `request` on a new connection; the status and body of the answer.
    fn request(&self, request: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(self.address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        let status = answer
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        (status, body)
    }

    /// `GET path` with these extra header lines, on a connection closed after it.
    fn get(&self, path: &str, headers: &str) -> (u16, String) {
        self.request(&format!(
            "GET {path} HTTP/1.1\r\n{headers}Connection: close\r\n\r\n"
        ))
    }
}

impl Drop for Studio {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn only_the_studios_own_names_are_answered() {
    let studio = Studio::start(&["--allow-host", "studio.lan"]);
    let port = studio.address.port();
    let host = |name: &str| format!("Host: {name}:{port}\r\n");
    for name in ["127.0.0.1", "localhost", "studio.lan", "Studio.LAN"] {
        let (status, body) = studio.get("/health", &host(name));
        assert_eq!(status, 200, "{name}: {body}");
    }
    // A page of another site reaching the studio by DNS rebinding names its own host.
    let (status, body) = studio.get("/health", &host("evil.example.com"));
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("evil.example.com") && body.contains("--allow-host"),
        "{body}"
    );
    let generate = "{\"prompt\": \"a red circle moving right\", \"steps\": 2}";
    let (status, _) = studio.request(&format!(
        "POST /api/generate HTTP/1.1\r\n{}Origin: http://evil.example.com\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{generate}",
        host("127.0.0.1"),
        generate.len()
    ));
    assert_eq!(status, 403);
    let (status, _) = studio.get("/health", &format!("{}Origin: null\r\n", host("localhost")));
    assert_eq!(status, 403);
    // Another address of the machine than the one listened on, and no Host at all.
    let (status, _) = studio.get("/health", &host("127.0.0.2"));
    assert_eq!(status, 403);
    let (status, _) = studio.request("GET /health HTTP/1.0\r\n\r\n");
    assert_eq!(status, 403);
    // The studio's own page, fetched as a browser does, is answered.
    let (status, body) = studio.get(
        "/api/vocabulary",
        &format!("{}Origin: http://localhost:{port}\r\n", host("localhost")),
    );
    assert_eq!(status, 200, "{body}");
}

#[test]
fn a_thousand_idle_connections_neither_block_requests_nor_exhaust_descriptors() {
    let studio = Studio::start(&["--max-connections", "64", "--header-timeout", "2"]);
    let port = studio.address.port();
    let before = studio.descriptors();
    // A thousand connections that send nothing, or half a request, and wait.
    let idle: Vec<TcpStream> = (0..1000)
        .map(|i| {
            let mut stream = TcpStream::connect(studio.address).unwrap();
            if i % 2 == 1 {
                stream
                    .write_all(b"GET /health HTTP/1.1\r\nHost: loc")
                    .unwrap();
            }
            stream
        })
        .collect();
    // A request behind all of them is answered at once.
    let start = Instant::now();
    let (status, body) = studio.get("/health", &format!("Host: 127.0.0.1:{port}\r\n"));
    let answered = start.elapsed();
    assert_eq!(status, 200, "{body}");
    assert!(answered < Duration::from_secs(2), "{answered:?}");
    // The server holds at most its limit of connections (and a few of its own files).
    let during = studio.descriptors();
    assert!(
        during <= before + 64 + 2,
        "{during} descriptors, {before} before"
    );
    // Connections that send no whole request within the header timeout are closed.
    std::thread::sleep(Duration::from_secs(3));
    let mut survivor = idle.into_iter().last().unwrap();
    survivor
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut rest = Vec::new();
    let _ = survivor.read_to_end(&mut rest);
    let closed = studio.descriptors();
    eprintln!(
        "descriptors: {before} before, {during} with 1000 idle connections, {closed} after; \
         the request behind them answered in {:?}",
        answered
    );
    assert!(
        closed <= before + 2,
        "{closed} descriptors, {before} before"
    );
}
