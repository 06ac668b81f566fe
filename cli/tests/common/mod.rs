//! The real `herald` binary on a loopback port, for the tests that kill and restart it.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const KEY: &str = "hk_restart_test_key_0123456789abcdef";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn serve(dir: &std::path::Path, port: u16, delay_ms: u64) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["serve", "--addr", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir)
        .args(["--workers", "16", "--sandbox-delay-ms", &delay_ms.to_string()])
        .env("HERALD_API_KEY", KEY)
        .env("HERALD_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start herald serve");
    let deadline = Instant::now() + Duration::from_secs(20);
    while reqwest::blocking::get(format!("http://127.0.0.1:{port}/healthz")).is_err() {
        assert!(Instant::now() < deadline, "herald serve did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    Server(child)
}
