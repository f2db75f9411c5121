//! The server's doors: which requests it answers and how many connections it keeps.
//!
//! - **Host names.** A web page on any site can make the browser send requests to a local
//!   server, and by DNS rebinding (its own name re-pointed at 127.0.0.1) read the answers as
//!   its own. The `Host` header still carries the page's name, so the studio answers only the
//!   address it listens on, `localhost`, and the names `--allow-host` adds; an `Origin` from
//!   anywhere else is refused too. Other requests get `403` and a message that names the fix.
//! - **Connections.** A client may take at most [`ServeOptions::header_timeout`] to send a
//!   request's headers (on a new connection, and between the requests of a kept-alive one),
//!   and at most [`ServeOptions::max_connections`] connections are open at once: a new one
//!   takes the place of the oldest that has sent nothing yet, so idle connections cannot
//!   crowd out requests, and descriptors stay bounded.

use std::collections::VecDeque;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use hyper::server::conn::http1;
use hyper::service::{Service, service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot};

use crate::api::ApiError;

/// How the server guards its doors.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Host names answered beyond the listening address and `localhost` (`*`: any name).
    pub allowed_hosts: Vec<String>,
    /// Longest wait for a request's headers before the connection is closed.
    pub header_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            allowed_hosts: Vec::new(),
            header_timeout: Duration::from_secs(10),
            max_connections: 256,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then lets the requests in flight
/// finish; requests are checked by [`HostPolicy`] and connections limited as `options` say.
///
/// When all [`ServeOptions::max_connections`] are open, a new connection takes the place of the
/// oldest that has not yet sent a request; when every open connection has sent one, the new
/// one is held (and the next ones wait in the kernel's queue) until one closes.
pub async fn serve_guarded(
    listener: TcpListener,
    app: Router,
    options: &ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let policy = Arc::new(HostPolicy::new(
        listener.local_addr()?,
        &options.allowed_hosts,
    ));
    let app =
        TowerToHyperService::new(app.layer(middleware::from_fn_with_state(policy, check_host)));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(options.header_timeout);
    let slots = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let waiting = Arc::new(Waiting::default());
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    for id in 0u64.. {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of descriptors, say: the connections in hand close in time.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // A place for it: a free one, or the place of the oldest connection that has sent
        // nothing; when every open connection has sent a request, it waits for one to close.
        let slot = match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                waiting.close_oldest();
                tokio::select! {
                    slot = Arc::clone(&slots).acquire_owned() => slot.expect("never closed"),
                    () = &mut shutdown => break,
                }
            }
        };
        let closed = waiting.add(id);
        let (app, started) = (app.clone(), Arc::clone(&waiting));
        let service = service_fn(move |request| {
            started.remove(id);
            app.call(request)
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        let waiting = Arc::clone(&waiting);
        tokio::spawn(async move {
            // A client that goes away or times out is no error of the server's; a connection
            // closed to make room ends here too.
            tokio::select! {
                _ = connection => {}
                Ok(()) = closed => {}
            }
            waiting.remove(id);
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// The open connections that have not yet sent a request, oldest first: those closed to make
/// room for new ones.
#[derive(Default)]
struct Waiting {
    connections: Mutex<VecDeque<(u64, oneshot::Sender<()>)>>,
}

impl Waiting {
    /// Adds connection `id`; the receiver completes when it is to be closed.
    fn add(&self, id: u64) -> oneshot::Receiver<()> {
        let (close, closed) = oneshot::channel();
        self.lock().push_back((id, close));
        closed
    }

    /// Removes connection `id` (it sent a request, or closed).
    fn remove(&self, id: u64) {
        self.lock().retain(|(other, _)| *other != id);
    }

    /// Closes the oldest waiting connection, if there is one.
    fn close_oldest(&self) {
        if let Some((_, close)) = self.lock().pop_front() {
            let _ = close.send(());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(u64, oneshot::Sender<()>)>> {
        self.connections
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Which `Host` (and `Origin`) names the server answers.
#[derive(Debug)]
pub struct HostPolicy {
    /// The address the server listens on.
    listening: IpAddr,
    /// Names allowed beyond it and `localhost`, lower-cased.
    names: Vec<String>,
    /// Whether `*` allowed any name.
    any: bool,
}

impl HostPolicy {
    /// The policy of a server listening on `address` that also answers `allowed` names.
    pub fn new(address: SocketAddr, allowed: &[String]) -> Self {
        Self {
            listening: address.ip(),
            names: allowed.iter().map(|n| n.to_ascii_lowercase()).collect(),
            any: allowed.iter().any(|n| n == "*"),
        }
    }

    /// Whether a request naming `host` (a `Host` header's value: a name or address, and
    /// perhaps a port) is answered.
    pub fn allows(&self, host: &str) -> bool {
        let name = strip_port(host).to_ascii_lowercase();
        if let Ok(ip) = name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            // An address cannot be re-pointed; it must be the one listened on.
            return ip == self.listening || self.listening.is_unspecified();
        }
        let local = name == "localhost" || name.ends_with(".localhost");
        self.any
            || self.names.contains(&name)
            || (local && (self.listening.is_loopback() || self.listening.is_unspecified()))
    }
}

/// `host` without a trailing `:port` (an IPv6 address keeps its brackets).
fn strip_port(host: &str) -> &str {
    if let Some(inside) = host.strip_prefix('[') {
        return inside.find(']').map_or(host, |end| &host[..end + 2]);
    }
    match host.rsplit_once(':') {
        // A bare IPv6 address has several colons and no port.
        Some((name, _)) if !name.contains(':') => name,
        _ => host,
    }
}

/// The host of an `Origin` header (`scheme://host[:port]`), if it has one.
fn origin_host(origin: &str) -> Option<&str> {
    origin.split_once("://").map(|(_, host)| host)
}

/// Refuses a request whose `Host` or `Origin` names another server, with `403`.
async fn check_host(
    State(policy): State<Arc<HostPolicy>>,
    request: Request,
    next: Next,
) -> Response {
    match refusal(&policy, request.headers()) {
        Some(message) => ApiError::new(StatusCode::FORBIDDEN, message).into_response(),
        None => next.run(request).await,
    }
}

/// Why a request with `headers` is refused, if it is.
fn refusal(policy: &HostPolicy, headers: &HeaderMap) -> Option<String> {
    let value = |name| {
        headers
            .get(name)
            .map(|v| v.to_str().map_err(|_| "not text"))
    };
    match value(header::HOST) {
        None => return Some("the request has no Host header".into()),
        Some(Err(_)) => return Some("the Host header is not text".into()),
        Some(Ok(host)) if !policy.allows(host) => {
            return Some(format!(
                "this server does not answer the name `{host}` (a page elsewhere reaching it by \
                 DNS rebinding would look the same); start it with `--allow-host {}` to allow it",
                strip_port(host)
            ));
        }
        Some(Ok(_)) => {}
    }
    match value(header::ORIGIN) {
        Some(Ok(origin)) if origin_host(origin).is_none_or(|host| !policy.allows(host)) => {
            Some(format!(
                "requests from pages of `{origin}` are refused (start the server with \
                 `--allow-host` naming that page's host to allow them)"
            ))
        }
        Some(Err(_)) => Some("the Origin header is not text".into()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(address: &str, allowed: &[&str]) -> HostPolicy {
        let allowed: Vec<String> = allowed.iter().map(|s| s.to_string()).collect();
        HostPolicy::new(address.parse().unwrap(), &allowed)
    }

    #[test]
    fn a_loopback_server_answers_its_address_and_localhost_only() {
        let local = policy("127.0.0.1:8080", &[]);
        for host in [
            "127.0.0.1:8080",
            "127.0.0.1",
            "localhost:8080",
            "LocalHost",
            "studio.localhost:8080",
        ] {
            assert!(local.allows(host), "{host}");
        }
        for host in [
            "evil.example.com",
            "evil.example.com:8080",
            "127.0.0.2:8080",
            "[::1]:8080",
            "localhost.example.com",
            "",
        ] {
            assert!(!local.allows(host), "{host}");
        }
        let v6 = policy("[::1]:8080", &[]);
        assert!(v6.allows("[::1]:8080") && v6.allows("[::1]") && v6.allows("localhost"));
        assert!(!v6.allows("127.0.0.1:8080"));
    }

    #[test]
    fn allowed_names_and_any_address_of_an_unspecified_bind() {
        let open = policy("0.0.0.0:8080", &["Studio.Lan"]);
        assert!(open.allows("192.168.1.20:8080") && open.allows("studio.lan:8080"));
        assert!(open.allows("localhost:8080"));
        assert!(!open.allows("evil.example.com"));
        let any = policy("10.0.0.5:8080", &["*"]);
        assert!(any.allows("whatever.example.com") && any.allows("10.0.0.5"));
        assert!(
            !any.allows("10.0.0.6"),
            "an address must still be the listened one"
        );
        // A non-loopback server does not answer `localhost`.
        assert!(!policy("10.0.0.5:8080", &[]).allows("localhost"));
    }

    #[test]
    fn foreign_hosts_and_origins_are_refused_with_the_fix() {
        let local = policy("127.0.0.1:8080", &[]);
        let headers = |pairs: &[(&'static str, &str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(*name, value.parse().unwrap());
            }
            map
        };
        assert_eq!(
            refusal(&local, &headers(&[("host", "127.0.0.1:8080")])),
            None
        );
        assert_eq!(
            refusal(
                &local,
                &headers(&[
                    ("host", "localhost:8080"),
                    ("origin", "http://localhost:8080")
                ])
            ),
            None
        );
        let message = refusal(&local, &headers(&[("host", "evil.example.com:8080")])).unwrap();
        assert!(
            message.contains("--allow-host evil.example.com"),
            "{message}"
        );
        let message = refusal(
            &local,
            &headers(&[
                ("host", "127.0.0.1:8080"),
                ("origin", "http://evil.example.com"),
            ]),
        )
        .unwrap();
        assert!(message.contains("http://evil.example.com"), "{message}");
        assert!(
            refusal(
                &local,
                &headers(&[("host", "127.0.0.1"), ("origin", "null")])
            )
            .is_some()
        );
        assert!(refusal(&local, &headers(&[])).is_some());
    }
}
