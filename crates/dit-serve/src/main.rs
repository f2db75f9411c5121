//! `dit-serve`: the local web studio of a trained text-to-video DiT.

/// mimalloc, keeping freed memory for reuse (see `dit_infer::allocator`).
#[global_allocator]
static ALLOCATOR: dit_infer::allocator::Allocator = dit_infer::allocator::Allocator {};

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use dit_infer::default_checkpoint;
use dit_model::Backend;
use dit_serve::{Queue, ServeOptions, Studio, serve, shutdown_signal};

/// Serve a web studio and an HTTP API for generating videos from prompts.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address to listen on (127.0.0.1: this machine only).
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port to listen on (0: any free port, printed at start).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Run folder of a trained model (default: the shipped checkpoint).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Backend among those compiled in (flex, ndarray, wgpu, vulkan, cuda).
    #[arg(long)]
    backend: Option<Backend>,
    /// Worker threads, each with its own copy of the model.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Requests that may wait for a worker; more are answered 503 with Retry-After.
    #[arg(long, default_value_t = 8)]
    queue: usize,
    /// A host name to answer besides the listening address and localhost (repeatable; `*`:
    /// any name). Requests naming others are refused, as DNS rebinding would send them.
    #[arg(long = "allow-host", value_name = "NAME")]
    allow_hosts: Vec<String>,
    /// Seconds a client may take to send a request's headers before it is disconnected.
    #[arg(long, default_value_t = 10)]
    header_timeout: u64,
    /// Most connections open at once; more wait until one closes.
    #[arg(long, default_value_t = 256)]
    max_connections: usize,
}

fn run(args: Args) -> Result<()> {
    if args.header_timeout == 0 {
        anyhow::bail!("--header-timeout must be at least 1 second");
    }
    if args.max_connections == 0 {
        anyhow::bail!("--max-connections must be at least 1");
    }
    let options = ServeOptions {
        allowed_hosts: args.allow_hosts,
        header_timeout: Duration::from_secs(args.header_timeout),
        max_connections: args.max_connections,
    };
    let checkpoint = args.checkpoint.unwrap_or_else(default_checkpoint);
    let backend = args.backend.unwrap_or_else(Backend::default_compiled);
    let (queue, info) = Queue::start(&checkpoint, backend, args.workers, args.queue)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind((args.host, args.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
        let address = listener.local_addr()?;
        println!(
            "dit-serve: studio at http://{address}/ ({} on {backend}; Ctrl-C stops)",
            info.checkpoint.display()
        );
        let studio = Arc::new(Studio::new(info, queue));
        serve(listener, studio, &options, shutdown_signal()).await?;
        println!("dit-serve: stopped");
        Ok(())
    })
}

fn main() -> ExitCode {
    dit_infer::allocator::keep_freed_memory();
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
