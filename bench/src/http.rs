//! Part 2: ingest over HTTP. `wrk` posts single-recipient and 1,000-recipient sends to a release
//! `herald serve` (embedded store and queue, sandbox provider, its workers delivering meanwhile),
//! then the same single-recipient load to `hello-http`, a hello-world axum server that only
//! parses the body: Herald's ceiling on this machine, measured in the same run. Then serve's peak
//! RSS (part 5).

use serde_json::{json, Value};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::proc::{free_port, Serve, KEY};
use crate::wrk::Wrk;

#[derive(clap::Args)]
pub struct Args {
    /// Seconds each load runs (after a 2 s warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Connections for single-recipient sends.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Connections for 1,000-recipient sends.
    #[arg(long, default_value_t = 4)]
    bulk_connections: usize,
}

pub async fn run(args: Args, bin_dir: &Path) -> Result<Value, String> {
    let singles: Vec<String> = (0..10_000).map(|i| crate::broadcast_body(i, 1)).collect();
    let bulks: Vec<String> = (0..10).map(|i| crate::broadcast_body(i * 1000, 1000)).collect();
    let load = |addr, connections, bodies| Wrk {
        addr,
        path: "/v1/broadcasts",
        key: KEY,
        connections,
        duration: Duration::from_secs(args.seconds),
        bodies,
    };

    let serve = Serve::start(bin_dir, &[], &[]).await?;
    let single = load(serve.addr, args.connections, &singles).run()?;
    println!("http single: {single:?}");
    let bulk = load(serve.addr, args.bulk_connections, &bulks).run()?;
    println!("http bulk: {bulk:?}");
    let rss = serve.peak_rss_kib().ok_or("cannot read herald serve's peak RSS")?;
    drop(serve);

    let hello = Hello::start(bin_dir).await?;
    let ceiling = load(hello.addr, args.connections, &singles).run()?;
    println!("http hello: {ceiling:?}");
    drop(hello);

    if single.requests == 0 || bulk.requests == 0 {
        return Err("no request succeeded".into());
    }
    Ok(json!({
        "generator": "wrk",
        "single": single.to_json(1),
        "bulk": bulk.to_json(1000),
        "hello": ceiling.to_json(1),
        "single_to_hello": single.requests_per_second / ceiling.requests_per_second,
        "serve_peak_rss_kib": rss,
        "connections": args.connections,
        "bulk_connections": args.bulk_connections,
        "seconds": args.seconds,
    }))
}

/// A running `hello-http`; killed when dropped.
struct Hello {
    child: Child,
    addr: std::net::SocketAddr,
}

impl Hello {
    async fn start(bin_dir: &Path) -> Result<Hello, String> {
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let exe = bin_dir.join("hello-http");
        let child = Command::new(&exe)
            .arg(addr.to_string())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e} (build it first)", exe.display()))?;
        let hello = Hello { child, addr };
        let deadline = Instant::now() + Duration::from_secs(10);
        while reqwest::get(format!("http://{addr}/healthz")).await.is_err() {
            if Instant::now() > deadline {
                return Err("hello-http did not come up".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(hello)
    }
}

impl Drop for Hello {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
