//! `herald soak` as a test: provider faults of every kind, store and queue faults, and SIGKILLs,
//! then lost = 0 and duplicates within the crash window (0 without kills). The command itself
//! fails when either is broken.

use std::process::Command;

fn soak(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_herald")).arg("soak").args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "soak failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

#[test]
fn faults_and_kills_lose_nothing() {
    let out = soak(&["--recipients", "800", "--fault-rate", "0.3", "--kills", "2", "--timeout", "120"]);
    assert!(out.contains("lost 0 "), "{out}");
    for kind in ["429", "5xx", "garbage", "reset", "timeout"] {
        assert!(out.contains(&format!("{kind} ")), "no {kind} fault was injected: {out}");
    }
}

#[test]
fn faults_without_kills_send_nothing_twice() {
    let out = soak(&["--recipients", "500", "--fault-rate", "0.3", "--kills", "0", "--timeout", "120"]);
    assert!(out.contains("lost 0  duplicated 0 "), "{out}");
    assert!(out.contains("sent 500"), "every row sent despite the faults: {out}");
}

#[test]
fn store_and_queue_faults_with_provider_faults_and_kills_lose_nothing() {
    let out = soak(&[
        "--recipients",
        "600",
        "--fault-rate",
        "0.2",
        "--store-fault-rate",
        "0.05",
        "--kills",
        "2",
        "--timeout",
        "120",
    ]);
    assert!(out.contains("lost 0 "), "{out}");
    let line =
        out.lines().find(|l| l.contains("store faults:")).unwrap_or_else(|| panic!("no store faults line: {out}"));
    let counts: Vec<u64> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    assert_eq!(counts.len(), 4, "{line}");
    assert!(counts.iter().all(|n| *n > 0), "every kind of store and queue fault was injected: {line}");
}
