//! The stand-in collect-bulk endpoint as a program, for demos and for driving the extension by
//! hand. Prints `listening on URL` once ready and serves until SIGTERM or SIGINT.

#![forbid(unsafe_code)]

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use dex_stand_in::{Behavior, StandIn, StandInConfig, SPEC_FORMS};
use tokio::signal::unix::{signal, SignalKind};

const USAGE: &str = "usage: dex-stand-in --service-key KEY [--port PORT] [--latency-ms N] \
[--keep-alive-timeout-ms N] [--default SPEC] [--behavior COMPANY_ID=SPEC]... [--no-record]";

struct Options {
    config: StandInConfig,
    behaviors: Vec<(String, Behavior)>,
}

fn main() -> ExitCode {
    let options = match parse_args(std::env::args().skip(1)) {
        Ok(Some(options)) => options,
        Ok(None) => {
            println!("{USAGE}\nSPEC is one of: {SPEC_FORMS}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("dex-stand-in: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match serve(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("dex-stand-in: {error}");
            ExitCode::FAILURE
        }
    }
}

fn serve(options: Options) -> std::io::Result<()> {
    let stand_in = StandIn::start(options.config)?;
    for (company_id, behavior) in options.behaviors {
        stand_in.set_behavior(&company_id, behavior);
    }
    let signals = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    signals.block_on(async {
        // Handlers are installed before announcing readiness, so a prompt SIGTERM still stops
        // the server cleanly.
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut stdout = std::io::stdout();
        writeln!(stdout, "listening on {}", stand_in.url())?;
        stdout.flush()?;
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        Ok::<(), std::io::Error>(())
    })?;
    stand_in.stop();
    Ok(())
}

/// The options, or `None` when help was asked for.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Options>, String> {
    let mut config = StandInConfig::default();
    let mut service_key = None;
    let mut behaviors = Vec::new();
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--port" => config.port = parse_number(&arg, &value()?)?,
            "--service-key" => service_key = Some(value()?),
            "--latency-ms" => {
                config.latency = Duration::from_millis(parse_number(&arg, &value()?)?)
            }
            "--keep-alive-timeout-ms" => {
                config.keep_alive_timeout =
                    Some(Duration::from_millis(parse_number(&arg, &value()?)?))
            }
            "--default" => config.default_behavior = parse_spec(&value()?)?,
            "--behavior" => {
                let assignment = value()?;
                let (company_id, spec) = assignment.split_once('=').ok_or_else(|| {
                    format!("--behavior expects COMPANY_ID=SPEC, got `{assignment}`")
                })?;
                behaviors.push((company_id.to_owned(), parse_spec(spec)?));
            }
            "--no-record" => config.record_requests = false,
            "-h" | "--help" => return Ok(None),
            _ => return Err(format!("unknown argument `{arg}`")),
        }
    }
    config.service_key = service_key.ok_or("--service-key is required")?;
    Ok(Some(Options { config, behaviors }))
}

fn parse_number<T: std::str::FromStr>(arg: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{arg} expects a number, got `{value}`"))
}

fn parse_spec(spec: &str) -> Result<Behavior, String> {
    spec.parse().map_err(|error| format!("{error}"))
}
