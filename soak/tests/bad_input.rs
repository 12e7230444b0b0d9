//! Entries of the README's bad-input catalogue that had no test before it: absurd durations
//! from a caller, and descriptor exhaustion on the host.

use std::time::Duration;

use qmp_client::mock::MockServer;
use qmp_client::{Client, Request};
use serde_json::json;

/// A server that answers every command with `{}` after `delay`.
fn answering_after(delay: Duration) -> MockServer {
    MockServer::builder()
        .handler(move |conn, request| conn.reply_after(delay, &request.command, json!({})))
        .start()
}

#[tokio::test]
async fn a_duration_max_command_timeout_waits_instead_of_panicking() {
    let server = answering_after(Duration::from_millis(50));
    let client = Client::connect(server.path()).await.unwrap();
    let request = Request::new("query-status").timeout(Duration::MAX);
    assert_eq!(client.call(request).await.unwrap(), json!({}));
    assert!(!client.is_closed(), "the connection goes on");
}

#[tokio::test]
async fn duration_max_as_default_and_handshake_timeout_wait_instead_of_panicking() {
    let server = answering_after(Duration::from_millis(50));
    let client = Client::builder()
        .handshake_timeout(Duration::MAX)
        .default_command_timeout(Some(Duration::MAX))
        .connect(server.path())
        .await
        .unwrap();
    assert_eq!(client.execute("query-status", ()).await.unwrap(), json!({}));
}

#[test]
fn the_blocking_client_takes_duration_max_too() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let server = runtime.block_on(async { answering_after(Duration::from_millis(50)) });
    let mut client = qmp_client::blocking::Client::connect(server.path()).unwrap();
    let request = Request::new("query-status").timeout(Duration::MAX);
    assert_eq!(client.call(request).unwrap(), json!({}));
    let nothing = client.next_event(Duration::from_millis(10));
    assert!(nothing.is_err(), "no event within 10 ms: {nothing:?}");
}
