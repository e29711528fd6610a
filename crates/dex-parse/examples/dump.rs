//! Prints the JSON for a DEX file: `cargo run -p dex-parse --example dump -- FILE`.

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: dump FILE");
        return ExitCode::FAILURE;
    };
    let raw = match std::fs::read(&path) {
        Ok(raw) => raw,
        Err(err) => {
            eprintln!("{}: {err}", path.to_string_lossy());
            return ExitCode::FAILURE;
        }
    };
    match dex_parse::parse_json(&raw).map(|json| serde_json::to_string_pretty(&json)) {
        Ok(Ok(text)) => match writeln!(std::io::stdout(), "{text}") {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::FAILURE,
        },
        Ok(Err(err)) => {
            eprintln!("{err}");
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("{err}");
            ExitCode::FAILURE
        }
    }
}
