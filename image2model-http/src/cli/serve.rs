//! `image2model serve`: the server and/or the worker until SIGTERM or
//! Ctrl-C.

use std::net::SocketAddr;
use std::process::ExitCode;

use image2model_http::{App, ServeRole};
use secrecy::{ExposeSecret, SecretString};
use tokio_util::sync::CancellationToken;

/// Runs `role`, listening on `bind` (else `BIND_ADDR`); the exit code is 2
/// for a configuration refused at start, 1 for any other failure.
pub async fn run(bind: Option<SocketAddr>, role: ServeRole) -> ExitCode {
    let Some(mut config) = super::load_config() else {
        return ExitCode::from(2);
    };
    let _logs = super::logs::init_tracing(&config, false);
    if let Some(bind) = bind {
        config.bind_addr = bind;
    }
    let problems = if config.is_production() {
        config.problems()
    } else {
        config.fatal_problems()
    };
    if !problems.is_empty() {
        eprintln!("error: refusing to start:");
        for p in &problems {
            eprintln!("  - {p}");
        }
        return ExitCode::from(2);
    }
    if config.api_key.is_none() && !config.is_production() && role != ServeRole::Worker {
        // Development without a key: make one so the server is usable, and
        // show it once (stderr, not the log, so it never lands in log files).
        let key = random_key();
        eprintln!(
            "No API_KEY set: generated a development key for this run:\n\n    API_KEY={}\n\nSend it as `Authorization: Bearer <key>` (or paste it into the web page). Set API_KEY to keep one across restarts.\n",
            key.expose_secret()
        );
        config.api_key = Some(key);
    }
    tracing::info!(config = %config.to_redacted_json(), "configuration");
    let listener = match tokio::net::TcpListener::bind(config.bind_addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", config.bind_addr);
            return ExitCode::FAILURE;
        }
    };
    let metrics_addr = config.metrics_addr;
    let app = match App::builder(config).role(role).build().await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = CancellationToken::new();
    if let Some(addr) = metrics_addr
        && let Err(e) = image2model_http::metrics::serve(
            addr,
            app.state().pipeline.clone(),
            app.state().disk_path.clone(),
            shutdown.clone(),
        )
    {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            wait_for_signal().await;
            tracing::info!("shutdown requested");
            shutdown.cancel();
        }
    });
    match app.run(listener, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let sigterm = async {
            match term.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            () = sigterm => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

fn random_key() -> SecretString {
    use rand::Rng;
    let bytes: [u8; 24] = rand::rng().random();
    SecretString::from(hex::encode(bytes))
}
