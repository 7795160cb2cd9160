//! What only the `image2model` binary uses: its commands (`serve`,
//! `convert`, `config check`, `doctor`, `backup`, `restore`) and its log set-up. The library never
//! imports from here; `main.rs` parses the command line and calls in.

pub mod backup;
pub mod config_check;
pub mod convert;
pub mod doctor;
pub mod logs;
pub mod serve;

use image2model_http::config::Config;

/// Reads the configuration, printing every error.
pub fn load_config() -> Option<Config> {
    match Config::from_env() {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("error: invalid configuration:");
            for problem in e.0 {
                eprintln!("  - {problem}");
            }
            None
        }
    }
}
