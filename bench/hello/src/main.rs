//! The smallest `lambda_runtime` function: answers every event with `{"hello": "world"}`.
//! `herald-bench lambda` starts it beside Herald's functions, built with the same profile; it is
//! written as the `lambda_runtime` documentation writes it (`#[tokio::main]`, the default runtime).

use lambda_runtime::{service_fn, LambdaEvent};
use serde_json::{json, Value};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::run(service_fn(|_: LambdaEvent<Value>| async {
        Ok::<_, lambda_runtime::Error>(json!({"hello": "world"}))
    }))
    .await
}
