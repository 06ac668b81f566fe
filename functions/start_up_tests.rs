// The start-up tests of both functions, included by `functions/{ingest,send}/tests/start_up.rs`
// with the constants `BIN` (the binary under test) and `NAME` (its Lambda function name): each
// binary can only be named from its own package's tests.

use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::process::Command;
use tokio::sync::mpsc;

/// A runtime API that never hands out an event: it only reports each `GET …/invocation/next`.
async fn runtime_api() -> (String, mpsc::UnboundedReceiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                if head.starts_with(b"GET /2018-06-01/runtime/invocation/next ") {
                    let _ = tx.send(());
                }
                // Held open and never answered, as a runtime with no event does.
                std::future::pending::<()>().await;
                drop(socket);
            });
        }
    });
    (addr, rx)
}

fn lambda(runtime_api: &str, aws_endpoint: &str) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", runtime_api)
        .env("AWS_LAMBDA_FUNCTION_NAME", NAME)
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_ENDPOINT_URL", aws_endpoint)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("TABLE_NAME", "herald")
        .env("QUEUE_URL", "http://127.0.0.1:9/queue/jobs")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

#[tokio::test]
async fn the_first_event_is_asked_for_before_aws_is_reached() {
    let (api, mut next) = runtime_api().await;
    // An AWS endpoint that accepts connections and never answers: a start that waits on AWS
    // (reading the provider secret) never gets as far as the runtime API.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    let mut child = lambda(&api, &endpoint)
        .env("PROVIDER_SECRETS_ARN", "arn:aws:secretsmanager:us-east-1:123456789012:secret:herald")
        .spawn()
        .unwrap();
    let asked = tokio::time::timeout(Duration::from_secs(10), next.recv()).await;
    let _ = child.start_kill();
    assert!(matches!(asked, Ok(Some(()))), "the function did not ask for an event while AWS was silent");
}

#[tokio::test]
async fn a_missing_table_name_stops_start_up_and_is_named() {
    let (api, mut next) = runtime_api().await;
    let mut cmd = lambda(&api, "http://127.0.0.1:9");
    cmd.env_remove("TABLE_NAME");
    let out = tokio::time::timeout(Duration::from_secs(10), cmd.output()).await.expect("exits").unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("TABLE_NAME"), "{stderr}");
    assert!(next.try_recv().is_err(), "no event is asked for without a table");
}
