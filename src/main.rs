//! The `op-sidecar` binary: parse the command line, validate the config, set up logging, run until signalled.

use std::process::ExitCode;

use clap::Parser;
use op_sidecar::config::{Cli, Command, Config, LogFormat, EXIT_CONFIG};
use op_sidecar::election::AccessError;
use op_sidecar::rpc::auth::SecretError;
use op_sidecar::tls::TlsError;
use tokio::signal::unix::{signal, SignalKind};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            let ctl = std::env::args().nth(1).as_deref() == Some("ctl");
            // `ctl` with no command did not do what a script asked: usage, not success.
            if ctl && e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                let _ = e.print();
                return ExitCode::from(op_sidecar::ctl::EXIT_USAGE);
            }
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // One clear line: clap's first line names the flag; usage follows on request.
            let msg = e.to_string();
            eprintln!("{}", msg.lines().next().unwrap_or("invalid command line"));
            // `ctl` promises scripts exit code 2 for usage errors.
            if ctl {
                return ExitCode::from(op_sidecar::ctl::EXIT_USAGE);
            }
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    let (args, print_only) = match cli.command {
        Command::Run(a) => (a, false),
        Command::Config(a) => (a, true),
        Command::Ctl(a) => return run_ctl(a),
    };
    let config = match Config::from_args(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    if print_only {
        println!(
            "{}",
            serde_json::to_string_pretty(&config.to_json()).unwrap_or_default()
        );
        return ExitCode::SUCCESS;
    }
    init_tracing(config.log_format, &config.log_level);
    for line in args.conductor_only.replaced() {
        tracing::warn!("{line}");
    }
    keep_large_buffers_mmapped();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "op-sidecar failed");
            eprintln!("error: {e:#}");
            // Wrong TLS files (etcd's or our own), credentials, permissions or JWT secret: a
            // configuration error.
            let config_error = e.chain().any(|c| {
                c.downcast_ref::<AccessError>()
                    .is_some_and(AccessError::is_config)
                    || c.is::<SecretError>()
                    || c.is::<TlsError>()
            });
            if config_error {
                ExitCode::from(EXIT_CONFIG as u8)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn run_ctl(args: op_sidecar::ctl::CtlArgs) -> ExitCode {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => ExitCode::from(rt.block_on(op_sidecar::ctl::run(args))),
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            ExitCode::from(op_sidecar::ctl::EXIT_FAILED)
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    tracing::info!(version = op_sidecar::status::VERSION, config = %config.to_json(), "configuration");
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    // SIGHUP would kill the process without resigning; it is a graceful stop instead (a
    // supervisor restarts it with the new configuration: there is no in-place reload).
    let mut hup = signal(SignalKind::hangup())?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
            _ = hup.recv() => tracing::info!("SIGHUP received: stopping gracefully; restart to apply a new configuration"),
        }
        // A second signal during the graceful shutdown exits at once.
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
                _ = hup.recv() => {}
            }
            eprintln!("second signal: exiting immediately");
            std::process::exit(130);
        });
    };
    op_sidecar::app::run(config, shutdown).await
}

/// Request bodies and payload chunks of multi-MB blocks (a 10 MiB block is a 21 MB request)
/// must go back to the OS when freed. glibc raises its mmap threshold after the first large
/// free, after which such buffers come from its per-thread heaps and stay there: a leader
/// committing a mix with 10 MiB blocks kept ~150 MiB of RSS. A fixed threshold keeps every
/// buffer from 1 MiB up in its own mapping, released on free.
fn keep_large_buffers_mmapped() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before the runtime starts any
    // thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

fn init_tracing(format: LogFormat, level: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // Colour codes only for a person at a terminal, never into journald or a log file.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
