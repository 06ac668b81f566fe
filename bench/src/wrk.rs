//! HTTP load with `wrk` (Debian's package; `scripts/bench.sh` installs it): the same generator
//! for Herald and for the hello-world baseline, so their figures compare. Each connection posts
//! bodies from a file, one per line, in turn, so requests are not all alike.

use serde_json::{json, Value};
use std::io::Write;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

/// One `wrk` run.
pub struct Wrk<'a> {
    pub addr: SocketAddr,
    pub path: &'a str,
    pub key: &'a str,
    pub connections: usize,
    pub duration: Duration,
    /// Request bodies, each on one line (JSON has no raw newline).
    pub bodies: &'a [String],
}

/// What `wrk --latency` reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    pub requests: u64,
    pub seconds: f64,
    pub requests_per_second: f64,
    pub non_2xx: u64,
    pub socket_errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Figures {
    pub fn to_json(&self, recipients_per_request: u64) -> Value {
        json!({
            "requests": self.requests,
            "errors": self.non_2xx + self.socket_errors,
            "requests_per_second": self.requests_per_second,
            "recipients_per_second": self.requests_per_second * recipients_per_request as f64,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "max_ms": self.max_ms,
        })
    }
}

impl Wrk<'_> {
    /// A 2 s warm-up run (discarded), then the measured one.
    pub fn run(&self) -> Result<Figures, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let bodies = dir.path().join("bodies");
        let mut f = std::fs::File::create(&bodies).map_err(|e| e.to_string())?;
        for b in self.bodies {
            writeln!(f, "{b}").map_err(|e| e.to_string())?;
        }
        let script = dir.path().join("post.lua");
        std::fs::write(&script, lua(&bodies.display().to_string(), self.key)).map_err(|e| e.to_string())?;
        self.wrk(&script, Duration::from_secs(2))?;
        parse(&self.wrk(&script, self.duration)?)
    }

    fn wrk(&self, script: &std::path::Path, duration: Duration) -> Result<String, String> {
        let out = Command::new("wrk")
            .args(["-t2", &format!("-c{}", self.connections), &format!("-d{}s", duration.as_secs()), "--latency"])
            .arg("-s")
            .arg(script)
            .arg(format!("http://{}{}", self.addr, self.path))
            .output()
            .map_err(|e| format!("cannot run wrk: {e} (scripts/bench.sh installs it)"))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            return Err(format!("wrk failed: {}{text}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(text)
    }
}

fn lua(bodies: &str, key: &str) -> String {
    format!(
        r#"wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.headers["x-api-key"] = "{key}"
local bodies = {{}}
for line in io.lines("{bodies}") do bodies[#bodies + 1] = line end
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, bodies[(n % #bodies) + 1])
end
"#
    )
}

/// Reads `wrk --latency`'s report.
pub fn parse(text: &str) -> Result<Figures, String> {
    let field = |prefix: &str| text.lines().map(str::trim).find_map(|l| l.strip_prefix(prefix)).map(str::trim);
    let percentile = |p: &str| field(p).and_then(duration_ms).ok_or(format!("no {p} latency in wrk's report:\n{text}"));
    let summary = text.lines().map(str::trim).find(|l| l.contains(" requests in "));
    let summary = summary.ok_or(format!("no request count in wrk's report:\n{text}"))?;
    let mut words = summary.split_whitespace();
    let requests = words.next().and_then(|n| n.parse().ok()).ok_or("bad request count")?;
    let seconds = words.nth(2).map(|s| s.trim_end_matches(',')).and_then(duration_ms).ok_or("bad duration")? / 1000.0;
    let socket_errors = field("Socket errors:")
        .map_or(0, |s| s.split(',').filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok()).sum());
    let max =
        text.lines().map(str::trim).find_map(|l| l.strip_prefix("Latency")).and_then(|l| l.split_whitespace().nth(2));
    Ok(Figures {
        requests,
        seconds,
        requests_per_second: field("Requests/sec:").and_then(|s| s.parse().ok()).ok_or("no Requests/sec")?,
        non_2xx: field("Non-2xx or 3xx responses:").map_or(Ok(0), |s| s.parse().map_err(|_| "bad non-2xx count"))?,
        socket_errors,
        p50_ms: percentile("50%")?,
        p99_ms: percentile("99%")?,
        max_ms: max.and_then(duration_ms).unwrap_or(f64::NAN),
    })
}

/// `9.42ms`, `812.00us`, `1.02s`, `2.00m` in milliseconds.
fn duration_ms(s: &str) -> Option<f64> {
    let split = s.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "Running 10s test @ http://127.0.0.1:8080/v1/broadcasts
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    10.12ms    5.13ms  60.08ms   71.41%
    Req/Sec     1.59k   174.13     2.01k    73.00%
  Latency Distribution
     50%  812.00us
     75%   12.65ms
     90%   16.52ms
     99%    1.02s
  31755 requests in 10.01s, 8.11MB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 12
Requests/sec:   3172.37
Transfer/sec:    829.43KB
";

    #[test]
    fn reads_wrks_report() {
        let f = parse(REPORT).unwrap();
        assert_eq!(f.requests, 31755);
        assert!((f.seconds - 10.01).abs() < 1e-9);
        assert_eq!(f.requests_per_second, 3172.37);
        assert_eq!((f.non_2xx, f.socket_errors), (12, 5));
        assert_eq!((f.p50_ms, f.p99_ms, f.max_ms), (0.812, 1020.0, 60.08));
    }

    #[test]
    fn a_report_without_figures_is_an_error() {
        assert!(parse("unable to connect to 127.0.0.1:1 Connection refused").is_err());
    }
}
