//! `mock-qmp SOCKET...`: the benchmark's mock QMP server ([`qmp_bench::mock_server`], which
//! is `qmp_client::mock` configured for it), listening on every given unix socket path
//! until killed.
//!
//! One thread (a current-thread tokio runtime), so on a 2-core machine the client under
//! test keeps the other core. Raises `RLIMIT_NOFILE` to its hard limit first, for the
//! idle-connection measurement.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let paths: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    if paths.is_empty() || paths.iter().any(|p| p.to_str().is_some_and(|s| s.starts_with('-'))) {
        eprintln!("usage: mock-qmp SOCKET...");
        return ExitCode::from(2);
    }
    if let Err(e) = qmp_bench::raise_nofile_limit() {
        eprintln!("mock-qmp: cannot raise RLIMIT_NOFILE: {e}");
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("mock-qmp: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: std::io::Result<()> = runtime.block_on(async {
        let mut servers = Vec::new();
        for path in &paths {
            // Bound before serving, so a bad path fails at once.
            let server = qmp_bench::mock_server()
                .start_at(path)
                .map_err(|e| std::io::Error::other(format!("bind {}: {e}", path.display())))?;
            servers.push(server);
        }
        std::future::pending().await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mock-qmp: {e}");
            ExitCode::FAILURE
        }
    }
}
