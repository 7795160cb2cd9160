//! Runs the fake FAL server standalone, e.g. to point a local image2model
//! server at it:
//!
//! ```text
//! cargo run -p image2model-examples --example fake_fal -- --port 8600 --latency-ms 2000
//! FAL_QUEUE_BASE_URL=http://127.0.0.1:8600 FAL_STORAGE_BASE_URL=http://127.0.0.1:8601 \
//!   FAL_API_KEY=fake-key-id:fake-key-secret cargo run -p image2model-http
//! ```
//!
//! Flags (or environment variables):
//! - `--port N` (`FAKE_FAL_PORT`): the queue port; storage listens on N+1
//!   (0, the default, picks free ports);
//! - `--key K` (`FAKE_FAL_KEY`): the accepted key;
//! - `--latency-ms N` (`FAKE_FAL_LATENCY_MS`): time in queue, and again in
//!   progress (default 500);
//! - `--scenario NAME` (`FAKE_FAL_SCENARIO`): one of the fake's scenarios
//!   (default `success`).

use std::time::Duration;

use anyhow::{Context, bail};
use image2model_core::testing::fake_fal::{DEFAULT_FAKE_KEY, FakeFal, FakeFalConfig, Scenario};
use tokio::net::TcpListener;

struct Args {
    port: u16,
    key: String,
    latency: Duration,
    scenario: Scenario,
}

fn usage() -> String {
    format!(
        "usage: fake_fal [--port N] [--key K] [--latency-ms N] [--scenario NAME]\nscenarios: {}",
        Scenario::NAMES.join(", ")
    )
}

fn parse_args() -> anyhow::Result<Args> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let mut port = env("FAKE_FAL_PORT");
    let mut key = env("FAKE_FAL_KEY");
    let mut latency = env("FAKE_FAL_LATENCY_MS");
    let mut scenario = env("FAKE_FAL_SCENARIO");
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let slot = match flag.as_str() {
            "--port" => &mut port,
            "--key" => &mut key,
            "--latency-ms" => &mut latency,
            "--scenario" => &mut scenario,
            "-h" | "--help" => {
                println!("{}", usage());
                std::process::exit(0);
            }
            other => bail!("unknown flag {other}\n{}", usage()),
        };
        *slot = Some(
            args.next()
                .with_context(|| format!("{flag} needs a value"))?,
        );
    }
    Ok(Args {
        port: port.map_or(Ok(0), |p| p.parse()).context("--port")?,
        key: key.unwrap_or_else(|| DEFAULT_FAKE_KEY.to_owned()),
        latency: Duration::from_millis(
            latency
                .map_or(Ok(500), |l| l.parse())
                .context("--latency-ms")?,
        ),
        scenario: scenario
            .as_deref()
            .unwrap_or("success")
            .parse()
            .map_err(anyhow::Error::msg)?,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let queue = TcpListener::bind(("127.0.0.1", args.port)).await?;
    let storage_port = if args.port == 0 { 0 } else { args.port + 1 };
    let storage = TcpListener::bind(("127.0.0.1", storage_port)).await?;
    let fake = FakeFal::start_on(
        queue,
        storage,
        FakeFalConfig {
            key: args.key,
            queue_time: args.latency,
            progress_time: args.latency,
            scenario: args.scenario.clone(),
            ..FakeFalConfig::default()
        },
    )?;
    println!("fake FAL running (scenario {:?})", args.scenario);
    println!("FAL_QUEUE_BASE_URL={}", fake.queue_base_url());
    println!("FAL_STORAGE_BASE_URL={}", fake.storage_base_url());
    println!("FAL_API_KEY={}", fake.key());
    println!("Ctrl-C to stop");
    tokio::signal::ctrl_c().await?;
    println!(
        "stopping: {} submits, {} status polls, {} results, {} cancels",
        fake.submits(),
        fake.status_polls(),
        fake.results(),
        fake.cancels()
    );
    fake.shutdown().await;
    Ok(())
}
