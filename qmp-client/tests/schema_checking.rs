//! Argument checking against the server's own schema: that it really runs against a real
//! QEMU (turned on by the builder or by `QMP_CHECK_ARGUMENTS`), and that against servers
//! without a usable schema (the mock) it never turns a working command into a failure.

use std::process::Command as Process;
use std::sync::{Arc, Mutex};

use qemu_launcher::qemu_or_skip;
use qmp_client::mock::MockServer;
use qmp_client::{CHECK_ARGUMENTS_ENV, Client, Error, ErrorClass};
use serde_json::json;

/// A misspelt member that QEMU itself refuses: `qom-list` takes `path`.
fn misspelt() -> serde_json::Value {
    json!({"pth": "/machine"})
}

/// Asserts that `error` is the checker's refusal of [`misspelt`], naming the path.
fn assert_refused_by_the_checker(error: &Error) {
    let Error::InvalidArguments { command, path, found, problems, .. } = error else {
        panic!("expected InvalidArguments, got {error:?}")
    };
    assert_eq!(command, "qom-list");
    assert_eq!(path, "arguments.pth");
    assert_eq!(found, "member \"pth\"");
    assert_eq!(problems[0].suggestion.as_deref(), Some("path"));
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["arguments.pth", "arguments.path"], "the missing member too");
    assert!(error.to_string().ends_with("nothing was sent"), "{error}");
}

#[tokio::test]
async fn the_builder_turns_checking_on_against_real_qemu() {
    let qemu = qemu_or_skip!();
    let checked = Client::builder().check_arguments(true).connect(qemu.qmp_path()).await.unwrap();
    let error = checked.execute("qom-list", misspelt()).await.unwrap_err();
    assert_refused_by_the_checker(&error);
    assert!(checked.schema().await.unwrap().is_some(), "QEMU's schema was loaded");
    // What the checker passes, QEMU runs.
    let listed = checked.execute("qom-list", json!({"path": "/machine"})).await.unwrap();
    assert!(listed.as_array().is_some_and(|a| !a.is_empty()), "{listed}");
    drop(checked);

    // Unchecked, the same command reaches QEMU, which refuses it in its own words.
    let unchecked =
        Client::builder().check_arguments(false).connect(qemu.qmp_path()).await.unwrap();
    let error = unchecked.execute("qom-list", misspelt()).await.unwrap_err();
    assert_eq!(error.qmp_error().map(|(class, _)| class), Some(&ErrorClass::GenericError));
}

/// The test the environment decides: run plainly (and `scripts/test` sets
/// `QMP_CHECK_ARGUMENTS=1`) and by [`the_environment_turns_checking_on_and_off`] with the
/// variable set either way.
#[tokio::test]
async fn the_default_builder_follows_the_environment() {
    let checking = std::env::var(CHECK_ARGUMENTS_ENV).is_ok_and(|v| v.trim() == "1");
    let qemu = qemu_or_skip!();
    let client = Client::connect(qemu.qmp_path()).await.unwrap();
    let error = client.execute("qom-list", misspelt()).await.unwrap_err();
    if checking {
        assert_refused_by_the_checker(&error);
    } else {
        assert_eq!(
            error.qmp_error(),
            Some((&ErrorClass::GenericError, "Parameter 'path' is missing")),
            "{error:?}"
        );
    }
}

#[test]
fn the_environment_turns_checking_on_and_off() {
    if !qemu_launcher::qemu_available_or_skip("the_environment_turns_checking_on_and_off") {
        return;
    }
    let this_test_binary = std::env::current_exe().unwrap();
    for value in ["1", "0"] {
        let output = Process::new(&this_test_binary)
            .args(["--exact", "the_default_builder_follows_the_environment", "--nocapture"])
            .env(CHECK_ARGUMENTS_ENV, value)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("1 passed"),
            "{CHECK_ARGUMENTS_ENV}={value}: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Counts the `tracing` warnings of this thread that mention the schema.
#[derive(Clone, Default)]
struct SchemaWarnings(Arc<Mutex<Vec<String>>>);

impl SchemaWarnings {
    fn texts(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write as _;
        let _ = write!(self.0, "{}={value:?} ", field.name());
    }
}

impl tracing::Subscriber for SchemaWarnings {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if *event.metadata().level() != tracing::Level::WARN {
            return;
        }
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        if fields.0.contains("schema") {
            self.0.lock().unwrap().push(fields.0);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// Runs commands with checking on against `server`: each must work as unchecked, with
/// exactly one warning about the schema on the connection.
async fn commands_work_unchecked(server: &MockServer) -> Vec<String> {
    let warnings = SchemaWarnings::default();
    let _guard = tracing::subscriber::set_default(warnings.clone());
    let client = Client::builder().check_arguments(true).connect(server.path()).await.unwrap();
    for _ in 0..3 {
        // Arguments QEMU's schema would refuse: the mock answers them all.
        let value = client.execute("query-status", json!({"bogus": 1})).await.unwrap();
        assert_eq!(value, json!({}));
    }
    assert!(client.schema().await.unwrap().is_none());
    let texts = warnings.texts();
    assert_eq!(texts.len(), 1, "one warning per connection: {texts:?}");
    texts
}

#[tokio::test]
async fn without_a_schema_commands_go_unchecked_with_one_warning() {
    // Not in query-commands: never asked for.
    let server = MockServer::builder().start();
    let warnings = commands_work_unchecked(&server).await;
    assert!(warnings[0].contains("unusable"), "{warnings:?}");
    assert!(!server.received_names().iter().any(|name| name == "query-qmp-schema"));

    // Listed, but refused, or answered with something that is no schema: asked once.
    let mut commands: Vec<&str> = qmp_client::mock::DEFAULT_COMMANDS.to_vec();
    commands.push("query-qmp-schema");
    for answer in ["error", "garbage"] {
        let server = MockServer::builder()
            .commands(commands.clone())
            .handler(move |conn, request| match (request.command.name.as_str(), answer) {
                ("query-qmp-schema", "error") => {
                    conn.error(&request.command, ErrorClass::GenericError, "no schema here");
                }
                ("query-qmp-schema", _) => conn.reply(&request.command, json!({"not": "a list"})),
                _ => conn.reply(&request.command, json!({})),
            })
            .start();
        commands_work_unchecked(&server).await;
        let asked = server.received_names().iter().filter(|n| *n == "query-qmp-schema").count();
        assert_eq!(asked, 1, "{answer}");
    }
}
