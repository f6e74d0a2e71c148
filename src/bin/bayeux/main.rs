//! The `bayeux` command: run a server, watch channels, drive the workbin demo.

mod assign;
mod bench;
mod demo;
mod listen;
mod serve;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "bayeux",
    version,
    about = "A CometD/Bayeux 1.0 server and client"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the Bayeux server (long-polling at /cometd).
    Serve(serve::ServeArgs),
    /// Subscribe to channels and print each message as one JSON line.
    Listen(listen::ListenArgs),
    /// Assign an interaction to an agent's workbin (the supervisor's POST).
    Assign(assign::AssignArgs),
    /// Run the workbin scenario end to end in one process and exit.
    Demo(demo::DemoArgs),
    /// Load-test any Bayeux long-polling server: throughput, latency, loss.
    Bench(bench::BenchArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The library's log events (queue overflows, ...) on stderr; RUST_LOG overrides.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bayeux: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Listen(args) => listen::run(args).await,
            Command::Assign(args) => assign::run(args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Bench(args) => bench::run(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bayeux: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
