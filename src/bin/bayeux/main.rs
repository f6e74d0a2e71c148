//! The `bayeux` command: run a server, watch channels, drive the workbin demo.

mod assign;
mod bench;
mod demo;
mod errors;
mod hash_password;
mod listen;
mod logging;
mod publish;
mod serve;
mod settings;
mod signals;

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
    #[command(flatten)]
    log: logging::LogArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the Bayeux server and the workbin demo API (at http://127.0.0.1:8080/cometd).
    // Boxed: its many options would make every other variant as large.
    Serve(Box<serve::ServeArgs>),
    /// Subscribe to channels and print each message as one JSON line.
    Listen(listen::ListenArgs),
    /// Publish one message (JSON) on a channel and exit.
    Publish(publish::PublishArgs),
    /// Assign an interaction to an agent's workbin (the supervisor's POST).
    Assign(assign::AssignArgs),
    /// Print a users file line with an Argon2 hash of a password (read from stdin).
    HashPassword(hash_password::HashPasswordArgs),
    /// Run the workbin scenario end to end in one process and exit.
    Demo(demo::DemoArgs),
    /// Load-test any Bayeux long-polling server: throughput, latency, loss.
    Bench(Box<bench::BenchArgs>),
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
    // The library's log events and the commands' own on stderr. `serve` logs at `info`
    // (its start-up lines, sessions that expire, refused handshakes...); the other
    // commands print what they have to say themselves, and log warnings only.
    let default_level = match cli.command {
        Command::Serve(_) => "info",
        _ => "warn",
    };
    if let Err(e) = logging::init(&cli.log, default_level) {
        eprintln!("bayeux: {e}");
        return std::process::ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bayeux: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(*args).await,
            Command::Listen(args) => listen::run(args).await,
            Command::Publish(args) => publish::run(args).await,
            Command::Assign(args) => assign::run(args).await,
            Command::HashPassword(args) => hash_password::run(args),
            Command::Demo(args) => demo::run(args).await,
            Command::Bench(args) => bench::run(*args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bayeux: {e}");
            // A mistake in the flags or the config file: status 2, as clap's own.
            if e.is::<settings::UsageError>() {
                std::process::ExitCode::from(2)
            } else {
                std::process::ExitCode::FAILURE
            }
        }
    }
}
