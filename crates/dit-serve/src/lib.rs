//! `dit-serve`: a local web studio and HTTP API for a trained text-to-video DiT.
//!
//! - [`jobs`]: the model on worker threads behind a bounded queue, with per-step
//!   previews of the predicted clean clip;
//! - [`api`]: the routes (the studio page, `POST /api/generate`, job streams, traces);
//! - [`doors`]: the `Host` and `Origin` names it answers, the header timeout and the
//!   connection limit.
//!
//! The server binds 127.0.0.1 unless told otherwise, refuses work with `503` when its
//! queue is full, and stops gracefully on Ctrl-C.

pub mod api;
pub mod doors;
pub mod jobs;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

pub use api::{Studio, router};
pub use doors::ServeOptions;
pub use jobs::{ModelInfo, Queue};

/// Serves `studio` on `listener` until `shutdown` completes, then lets requests in
/// flight finish; `options` say which names it answers and how it limits connections.
pub async fn serve(
    listener: TcpListener,
    studio: Arc<Studio>,
    options: &ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    doors::serve_guarded(listener, router(studio), options, shutdown).await
}

/// Completes on Ctrl-C (SIGINT) or, on Unix, SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}
