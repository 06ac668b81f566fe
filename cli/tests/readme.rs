//! README.md's walkthrough, run as written against a fresh `herald serve` (only the port and the
//! `cargo run --release --` prefix are swapped for the test's), so the README cannot drift.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const KEY: &str = "hk_local_demo_key_0123456789abcdef";

fn walkthrough() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).expect("README.md");
    let start = readme.find("<!-- walkthrough:start -->").expect("walkthrough start marker");
    let end = readme.find("<!-- walkthrough:end -->").expect("walkthrough end marker");
    readme[start..end]
        .lines()
        .filter(|l| !l.starts_with("```") && !l.starts_with("<!--"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_readme_walkthrough_works_as_written() {
    let script = walkthrough();
    assert!(script.contains("export HERALD_API_KEY=") && script.contains("127.0.0.1:8080"));
    let serve_line = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    assert!(
        serve_line.contains(&format!("export HERALD_API_KEY={KEY}")),
        "the README's key is the one this test seeds"
    );

    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut server = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["serve", "--addr", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir.path())
        .env("HERALD_API_KEY", KEY)
        .env("HERALD_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while reqwest::blocking::get(format!("http://127.0.0.1:{port}/healthz")).is_err() {
        assert!(Instant::now() < deadline, "herald serve did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }

    let script = script
        .replace("http://127.0.0.1:8080", &format!("http://127.0.0.1:{port}"))
        .replace("cargo run --release --", env!("CARGO_BIN_EXE_herald"));
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .env("HERALD_URL", format!("http://127.0.0.1:{port}"))
        .env("HERALD_LOG", "warn")
        .output()
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the walkthrough failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    for expected in [
        r#""id":"welcome""#,
        r#""name":"Onboarding""#,
        r#""id":"ada""#,
        "request: req_",
        r#""state":"completed""#,
        r#""by_status":{"sent":2}"#,
        "Hi Ada, welcome to The Analytical Bakery!",
        "Hi Grace, welcome to Herald Coffee!",
        r#""code":"validation_failed""#,
        r#""field":"recipients[0].phone""#,
        r#""field":"recipients[1].email""#,
        r#""field":"messages[0].text""#,
        "state: completed",
        "lines: 4  imported: 3  created: 3  updated: 0  unchanged: 0  rejected: 1",
        "line 5: phone:",
        "sent: 3",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in the walkthrough's output:\n{stdout}\nstderr:\n{stderr}"
        );
    }
}

#[test]
fn keys_are_created_listed_and_revoked_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let herald = |args: &[&str]| {
        let out =
            Command::new(env!("CARGO_BIN_EXE_herald")).args(args).arg("--data-dir").arg(dir.path()).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, key, err) = herald(&["keys", "create", "--tenant", "acme"]);
    assert!(ok);
    let sid = herald::dialects::twilio::account_sid("acme");
    assert!(err.contains(&sid) && !key.contains(&sid), "the account SID goes to stderr: {err}");
    let key = key.trim().to_string();
    assert!(key.starts_with("hk_") && key.len() == 51, "{key}");
    let (ok, listed, _) = herald(&["keys", "list", "--tenant", "acme"]);
    assert!(ok && listed.contains(&key[..11]) && !listed.contains(&key), "list shows prefixes only: {listed}");
    assert!(listed.contains("active"));
    let (ok, _, err) = herald(&["keys", "revoke", "--tenant", "other", "--prefix", &key[..11]]);
    assert!(!ok && err.contains("no key with prefix"), "{err}");
    let (ok, _, err) = herald(&["keys", "revoke", "--tenant", "acme", "--prefix", &key[..11]]);
    assert!(ok, "{err}");
    let (_, listed, _) = herald(&["keys", "list", "--tenant", "acme"]);
    assert!(listed.contains("revoked"), "{listed}");
}

#[test]
fn a_malformed_tenant_is_refused_by_every_keys_command() {
    let dir = tempfile::tempdir().unwrap();
    let herald = |args: &[&str]| {
        let out =
            Command::new(env!("CARGO_BIN_EXE_herald")).args(args).arg("--data-dir").arg(dir.path()).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let rule = "tenant may contain only letters, digits, '_', '-', '.' and ':'";
    for args in [
        &["keys", "create", "--tenant", "has space"][..],
        &["keys", "list", "--tenant", "has space"][..],
        &["keys", "revoke", "--tenant", "has space", "--prefix", "hk_123456"][..],
    ] {
        let (ok, err) = herald(args);
        assert!(!ok && err.contains(rule), "{args:?}: {err}");
    }
    let (ok, err) = herald(&["keys", "list", "--tenant", ""]);
    assert!(!ok && err.contains("tenant must not be empty"), "{err}");
}
