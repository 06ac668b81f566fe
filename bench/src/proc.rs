//! Processes under measurement: `herald serve` started on a free port with its own data
//! directory, and peak resident memory read from `/proc`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const KEY: &str = "hk_bench_0123456789abcdef0123456789abcdef";

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().expect("address").port()
}

/// Peak resident set (`VmHWM`) of a live process, in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU seconds (user and system) a live process's threads have used, summed by thread name
/// (`herald-db-write`, `tokio-rt-worker`, …): where a phase's time went.
pub fn thread_cpu_seconds(pid: u32) -> std::collections::BTreeMap<String, f64> {
    let ticks = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<f64>().ok())
        .unwrap_or(100.0);
    let mut by_name = std::collections::BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
        let (Ok(comm), Ok(stat)) =
            (std::fs::read_to_string(task.path().join("comm")), std::fs::read_to_string(task.path().join("stat")))
        else {
            continue;
        };
        // The fields after the command's closing parenthesis: state is the first, utime the 12th.
        let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, f)| f.split_whitespace().collect()).unwrap_or_default();
        let used: f64 = fields.get(11..13).unwrap_or_default().iter().filter_map(|v| v.parse::<f64>().ok()).sum();
        *by_name.entry(comm.trim().to_string()).or_insert(0.0) += used / ticks;
    }
    by_name
}

/// A running `herald serve`; killed when dropped.
pub struct Serve {
    child: Child,
    pub addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl Serve {
    pub async fn start(bin_dir: &Path, args: &[&str], env: &[(&str, String)]) -> Result<Serve, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let port = free_port();
        let exe = bin_dir.join("herald");
        let mut cmd = Command::new(&exe);
        cmd.args(["serve", "--addr", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--tenant-rps", "1000000000", "--tenant-recipients-per-minute", "1000000000000"])
            .args(args)
            .env("HERALD_API_KEY", KEY)
            .env("HERALD_LOG", "error")
            .stdout(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().map_err(|e| format!("cannot start {}: {e} (build it first)", exe.display()))?;
        let serve = Serve { child, addr: ([127, 0, 0, 1], port).into(), _dir: dir };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while http.get(format!("{}/healthz", serve.base())).send().await.is_err() {
            if Instant::now() > deadline {
                return Err("herald serve did not come up".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(serve)
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn peak_rss_kib(&self) -> Option<u64> {
        peak_rss_kib(self.child.id())
    }

    pub fn thread_cpu_seconds(&self) -> std::collections::BTreeMap<String, f64> {
        thread_cpu_seconds(self.child.id())
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value at quantile `q` (0–1) of sorted `values`.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    quantile(&values, 0.5)
}
