//! `image2model doctor`: prints [`image2model_http::doctor::diagnose`]'s
//! findings, each problem and warning with what to do; exits 1 when there
//! is a problem (2 when the configuration cannot even be read).

use std::path::PathBuf;
use std::process::ExitCode;

use image2model_http::doctor::{DoctorOptions, Severity, diagnose};

/// Runs the checks and prints the findings.
pub async fn run(env_file: Option<PathBuf>) -> ExitCode {
    if let Some(file) = &env_file
        && let Err(e) = dotenvy::from_path(file)
    {
        eprintln!("error: {}: {e}", file.display());
        return ExitCode::from(2);
    }
    let Some(config) = super::load_config() else {
        return ExitCode::from(2);
    };
    let findings = diagnose(
        &config,
        &DoctorOptions {
            env_file,
            ..DoctorOptions::default()
        },
    )
    .await;
    for f in &findings {
        println!("[{}] {}: {}", f.severity.as_str(), f.check, f.message);
        if let Some(fix) = &f.fix {
            println!("    fix: {fix}");
        }
    }
    let problems = findings
        .iter()
        .filter(|f| f.severity == Severity::Problem)
        .count();
    let warnings = findings
        .iter()
        .filter(|f| f.severity == Severity::Warning)
        .count();
    println!("\n{problems} problem(s), {warnings} warning(s)");
    if problems == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
