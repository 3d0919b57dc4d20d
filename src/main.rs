//! The `icefall` binary: parse flags, run, print a summary or a one-line error.
//!
//! Exit codes: 0 done; 1 internal error; 2 bad flags, config file, environment variable or core
//! placement; 3 Kafka (unreachable broker, unknown topic or partition, fetch failure); 4 storage
//! (warehouse not writable, upload failed); 5 catalog or table; 6 the drain after SIGINT/SIGTERM
//! did not finish within `--drain-timeout`; 7 a value that cannot be decoded, with no dead-letter
//! destination; 8 fenced by another writer (static mode; a `--group` member starts again from the
//! table instead). A second SIGINT/SIGTERM exits at once with 130. In every non-zero case what
//! was not committed is still in Kafka and is read again by the next run.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use icefall::app::one_line;
use icefall::config::layers::{self, LayerError};
use icefall::config::{Command, LogFormat};
use icefall::runtime::Control;

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ICEFALL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
}

fn install_signals(control: &Control) -> anyhow::Result<()> {
    let stop = control.stop_flag();
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal while stopping exits at once; Kafka still holds what was not written.
        signal_hook::flag::register_conditional_shutdown(sig, 130, stop.clone())?;
        signal_hook::flag::register(sig, stop.clone())?;
    }
    Ok(())
}

/// Once a stop signal has come, gives the drain `timeout`, then exits 6.
fn drain_watchdog(stop: Arc<std::sync::atomic::AtomicBool>, timeout: Duration) {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(timeout);
        eprintln!(
            "icefall: error: --drain-timeout {timeout:?}: the final commit did not finish in time; \
             exiting (what was not committed is still in Kafka and is read again next run)"
        );
        std::process::exit(6);
    });
}

fn main() -> ExitCode {
    icefall::runtime::tune_malloc();
    let env = |k: &str| std::env::var(k).ok();
    let layered = match layers::parse(std::env::args_os().collect(), &env) {
        Ok(l) => l,
        Err(LayerError::Clap(e)) => e.exit(),
        Err(LayerError::Config(e)) => {
            eprintln!("icefall: error: {}", one_line(&e));
            return ExitCode::from(2);
        }
    };
    let command = &layered.cli.command;
    let replay = matches!(command, Command::ReplayDropped(_));
    let check = matches!(command, Command::Config(_));
    let maintain = matches!(command, Command::Maintain(_));
    let validated = match maintain {
        true => command.run_args().validate_for_maintain(),
        false => command.run_args().validate(),
    };
    let cfg = match validated {
        Ok(c) => c,
        Err(e) => {
            eprintln!("icefall: error: {}", one_line(&layered.explain(e)));
            return ExitCode::from(2);
        }
    };
    if check {
        print!("{}", layered.effective_toml());
        return ExitCode::SUCCESS;
    }
    init_logging(cfg.log_format);
    let fail = |e: icefall::app::Error| {
        eprintln!("icefall: error: {}", one_line(&e));
        ExitCode::from(e.exit_code() as u8)
    };
    if maintain {
        return match icefall::app::maintain::maintain(&cfg) {
            Ok(pass) => {
                println!("{}", pass.line());
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        };
    }
    if replay {
        return match icefall::replay::replay(cfg) {
            Ok(summary) => {
                println!("{}", summary.line());
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        };
    }
    let control = Control::new();
    if let Err(e) = install_signals(&control) {
        eprintln!("icefall: error: cannot install signal handlers: {e:#}");
        return ExitCode::from(1);
    }
    drain_watchdog(control.stop_flag(), cfg.drain_timeout);
    match icefall::app::run(cfg, control.clone()) {
        Ok(summary) => {
            if control.stop_flag().load(Ordering::Acquire) {
                tracing::info!("stopped by signal after flushing what was routed");
            }
            println!("{}", summary.line());
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}
