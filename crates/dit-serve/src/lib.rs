//! `dit-serve`: a local web studio and HTTP API for a trained text-to-video DiT.
//!
//! - [`jobs`]: the model on worker threads behind a bounded queue, with per-step
//!   previews of the predicted clean clip;
//! - [`api`]: the routes (the studio page, `POST /api/generate`, job streams, traces).
//!
//! The server binds 127.0.0.1 unless told otherwise, refuses work with `503` when its
//! queue is full, and stops gracefully on Ctrl-C.

pub mod api;
pub mod jobs;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

pub use api::{Studio, router};
pub use jobs::{ModelInfo, Queue};

/// Serves `studio` on `listener` until `shutdown` completes, then lets requests in
/// flight finish.
pub async fn serve(
    listener: TcpListener,
    studio: Arc<Studio>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(studio))
        .with_graceful_shutdown(shutdown)
        .await
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
