//! The real `image2model` binary as a child process, for what only a process
//! can show: a kill -9, a global metrics recorder.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::USER_KEY;

/// A running server; killed when dropped, so a failing test leaves nothing.
pub struct ServerProcess {
    pub child: Child,
    pub base: String,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free right now on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `image2model serve` on `port` with SQLite and local files under
/// `data`, the test user key, and `env` on top; waits until `/health` answers.
pub async fn start(port: u16, data: &Path, env: &[(&str, String)]) -> ServerProcess {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_image2model"));
    cmd.args(["serve", "--bind", &format!("127.0.0.1:{port}")])
        .current_dir(data)
        .env("API_KEY", USER_KEY)
        .env(
            "DATABASE_URL",
            format!("sqlite://{}", data.join("jobs.db").display()),
        )
        .env(
            "STORAGE_URL",
            format!("file://{}", data.join("blobs").display()),
        )
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let server = ServerProcess {
        child: cmd.spawn().expect("the image2model binary starts"),
        base: format!("http://127.0.0.1:{port}"),
    };
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(r) = client.get(format!("{}/health", server.base)).send().await
            && r.status() == 200
        {
            return server;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the server did not become healthy");
}
