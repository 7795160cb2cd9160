//! `image2model config check`: the effective configuration, secrets
//! redacted, and every problem found (exit 1 when there is one).

use std::process::ExitCode;

/// Prints the configuration and its problems (production's checks, and
/// whether the generators can be built).
pub fn run() -> ExitCode {
    let Some(config) = super::load_config() else {
        return ExitCode::FAILURE;
    };
    print!("{config}");
    let mut problems = config.problems();
    if let Err(e) = image2model_http::wiring::generators(&config) {
        problems.push(e.to_string());
    }
    if config.api_key.is_none() {
        println!(
            "\nnote: API_KEY is unset: `serve` generates a development key at start-up (refused in production)"
        );
    }
    if problems.is_empty() {
        println!("\nno problems found ({})", config.environment.as_str());
        ExitCode::SUCCESS
    } else {
        println!("\nproblems:");
        for p in &problems {
            println!("  - {p}");
        }
        ExitCode::FAILURE
    }
}
