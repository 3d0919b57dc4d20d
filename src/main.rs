//! The `icefall` binary: parse flags, run, print a summary or a one-line error.
//!
//! Exit codes: 0 done; 1 internal error; 2 bad flags, config or core placement; 3 Kafka
//! (unreachable broker, unknown topic or partition, fetch failure); 4 storage (warehouse not
//! writable, upload failed). A second SIGINT/SIGTERM exits at once with 130.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use clap::Parser;
use icefall::config::{Cli, Command};
use icefall::runtime::Control;

/// Records are allocated on fetch cores and freed on shard cores. glibc's malloc frees another
/// thread's memory under that thread's arena lock, so the two roles fought over it; mimalloc
/// frees across threads without a lock (end to end 270k → 460k+ records/s, BENCHMARKS.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ICEFALL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rskafka=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

/// The error and its causes on one line.
fn one_line(err: &dyn std::error::Error) -> String {
    let mut line = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !line.contains(&s) {
            line.push_str(": ");
            line.push_str(&s);
        }
        cur = e.source();
    }
    line.replace('\n', " ")
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let (args, replay) = match cli.command {
        Command::Run(args) => (args, false),
        Command::ReplayDropped(args) => (args, true),
    };
    let cfg = match args.validate() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("icefall: error: {}", one_line(&e));
            return ExitCode::from(2);
        }
    };
    let fail = |e: icefall::app::Error| {
        eprintln!("icefall: error: {}", one_line(&e));
        ExitCode::from(e.exit_code() as u8)
    };
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
