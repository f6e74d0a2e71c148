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

/// Raises this process's soft limit on open files (`RLIMIT_NOFILE`) to its hard limit,
/// so that `serve` and `bench` can hold as many sockets as the machine allows rather
/// than the shell's default (often 1024). Best effort: when the limit cannot be read or
/// raised, the process carries on with the limit it has.
#[cfg(unix)]
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes into the `rlimit` we own and pass by a valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0
        || limit.rlim_cur >= limit.rlim_max
    {
        return;
    }
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: setrlimit only reads the `rlimit` we pass by a valid pointer; raising the
    // soft limit up to the hard one needs no privilege. A failure (macOS refuses an
    // unlimited hard limit for this resource) leaves the limit as it was.
    unsafe {
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
}

fn main() -> std::process::ExitCode {
    #[cfg(unix)]
    raise_open_file_limit();
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
