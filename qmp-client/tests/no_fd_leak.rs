//! No descriptor is leaked by the client's fd commands, on success or failure. One test in
//! its own binary, so no other test opens descriptors meanwhile.

use qmp_client::mock::MockServer;
use qmp_client::{Client, Error};
use serde_json::json;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn fd_commands_leak_nothing() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let server = MockServer::builder()
            .handler(|conn, request| match request.command.name.as_str() {
                "add-fd" => conn.reply(&request.command, json!({"fdset-id": 0, "fd": 10})),
                "getfd"
                    if request
                        .command
                        .arguments
                        .as_ref()
                        .is_some_and(|a| a["fdname"] == "refuse") =>
                {
                    conn.error(&request.command, "GenericError", "refused");
                }
                _ => conn.reply(&request.command, json!({})),
            })
            .start();
        // Warm up: runtime, socket and first-use allocations are not leaks.
        let warm = Client::connect(server.path()).await.unwrap();
        let (r, w) = nix::unistd::pipe().unwrap();
        warm.get_fd("warm", &w).await.unwrap();
        drop((warm, r, w));
        tokio::task::yield_now().await;
        let before = open_fds();

        let client = Client::connect(server.path()).await.unwrap();
        let (read_end, write_end) = nix::unistd::pipe().unwrap();
        for n in 0..1000 {
            match n % 4 {
                0 => client.get_fd("fd", &write_end).await.unwrap(),
                1 => drop(client.add_fd(&write_end, None, None).await.unwrap()),
                2 => assert!(client.get_fd("refuse", &write_end).await.is_err()),
                _ => client.close_fd("fd").await.unwrap(),
            }
        }
        // A connection that has ended refuses without leaking the duplicate it made.
        client.close().await;
        for _ in 0..100 {
            assert!(matches!(client.get_fd("late", &write_end).await, Err(Error::Disconnected(_))));
        }
        // Over a stream that cannot carry descriptors.
        let stream = tokio::net::UnixStream::connect(server.path()).await.unwrap();
        let plain = Client::builder().connect_stream(stream).await.unwrap();
        for _ in 0..100 {
            assert!(matches!(
                plain.get_fd("x", &write_end).await,
                Err(Error::FdPassingUnsupported)
            ));
        }
        plain.close().await;
        drop((client, read_end, write_end));
        // The mock server closes each connection once it sees our end go.
        for _ in 0..1000 {
            if open_fds() == before {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(open_fds(), before, "descriptors leaked");
    });
}
