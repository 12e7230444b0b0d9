//! The codec against a real QEMU: a tokio `UnixStream` framed with `QmpCodec`.
//! Fails (not skips) when QEMU is missing and `QMP_REQUIRE_QEMU=1`.

use futures::{SinkExt, StreamExt};
use qemu_launcher::qemu_or_skip;
use qmp_codec::{Capability, Command, ErrorClass, QemuVersion, QmpCodec, ServerMessage};
use serde_json::json;
use tokio::net::UnixStream;
use tokio_util::codec::Framed;

type Transport = Framed<UnixStream, QmpCodec>;

async fn next(transport: &mut Transport) -> ServerMessage {
    transport.next().await.expect("QEMU closed the socket").expect("I/O error").expect("bad frame")
}

/// Sends `command` and returns its reply, checking the id; events in between are returned too.
async fn call(transport: &mut Transport, command: Command) -> (ServerMessage, Vec<ServerMessage>) {
    let id = command.id.clone().expect("give the command an id");
    transport.send(command).await.unwrap();
    let mut events = Vec::new();
    loop {
        let message = next(transport).await;
        if let ServerMessage::Event(_) = message {
            events.push(message);
        } else {
            assert_eq!(message.id(), Some(&id), "reply to another command: {message:?}");
            return (message, events);
        }
    }
}

#[tokio::test]
async fn greeting_negotiation_queries_and_a_real_error() {
    let qemu = qemu_or_skip!();
    let stream = UnixStream::connect(qemu.qmp_path()).await.unwrap();
    let mut transport = Framed::new(stream, QmpCodec::new());

    let ServerMessage::Greeting(greeting) = next(&mut transport).await else {
        panic!("no greeting")
    };
    assert!(greeting.version.qemu >= QemuVersion::new(7, 0, 0), "{:?}", greeting.version);
    assert!(greeting.capabilities.contains(&Capability::Oob), "unix monitors offer oob");

    let (reply, _) = call(&mut transport, Command::new("qmp_capabilities").id(1)).await;
    assert_eq!(
        reply,
        ServerMessage::Return(qmp_codec::Return { value: json!({}), id: Some(json!(1)) })
    );

    let (ServerMessage::Return(commands), _) =
        call(&mut transport, Command::new("query-commands").id("cmds")).await
    else {
        panic!("query-commands failed")
    };
    let names: Vec<&str> =
        commands.value.as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert!(names.len() > 100, "{} commands", names.len());
    for expected in ["qmp_capabilities", "query-pci", "getfd", "add-fd", "device_add", "device_del"]
    {
        assert!(names.contains(&expected), "{expected} missing");
    }

    let (ServerMessage::Return(pci), _) =
        call(&mut transport, Command::new("query-pci").id(3)).await
    else {
        panic!("query-pci failed")
    };
    let devices = pci.value[0]["devices"].as_array().unwrap();
    let slots: Vec<u64> = devices.iter().map(|d| d["slot"].as_u64().unwrap()).collect();
    assert!(slots.contains(&0) && slots.contains(&1), "host bridge and PIIX3: {slots:?}");
    assert_eq!(devices[0]["class_info"]["desc"], "Host bridge");

    let (ServerMessage::Error(error), _) =
        call(&mut transport, Command::new("no-such-command").id(json!({"n": 4}))).await
    else {
        panic!("an unknown command must fail")
    };
    assert_eq!(error.error.class, ErrorClass::CommandNotFound);
    assert_eq!(error.error.desc, "The command no-such-command has not been found");

    let (ServerMessage::Error(error), _) = call(
        &mut transport,
        Command::new("query-pci").arguments(json!({"bogus": 1}).as_object().unwrap().clone()).id(5),
    )
    .await
    else {
        panic!("a bad argument must fail")
    };
    assert_eq!(error.error.class, ErrorClass::GenericError);
    assert_eq!(error.error.desc, "Parameter 'bogus' is unexpected");

    // Events arrive between replies and decode as events.
    let (_, events) = call(&mut transport, Command::new("stop").id(6)).await;
    let (_, after_cont) = call(&mut transport, Command::new("cont").id(7)).await;
    // RESUME may come after cont's reply; one more round trip flushes it.
    let (_, after_status) = call(&mut transport, Command::new("query-status").id(8)).await;
    let names: Vec<String> = [events, after_cont, after_status]
        .into_iter()
        .flatten()
        .map(|e| match e {
            ServerMessage::Event(e) => e.event,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(names, ["STOP", "RESUME"]);
}

#[tokio::test]
async fn protocol_errors_without_id_and_eof_when_qemu_dies() {
    let mut qemu = qemu_or_skip!();
    let stream = UnixStream::connect(qemu.qmp_path()).await.unwrap();
    let mut transport = Framed::new(stream, QmpCodec::new());
    assert!(matches!(next(&mut transport).await, ServerMessage::Greeting(_)));

    // QEMU answers garbage with an error that carries no id.
    transport.get_mut().try_write(b"{\"arguments\": {}}\r\n").unwrap();
    let ServerMessage::Error(error) = next(&mut transport).await else { panic!() };
    assert_eq!(error.id, None);
    assert_eq!(error.error.desc, "QMP input lacks member 'execute'");

    qemu.kill().unwrap();
    // After the kill the stream ends: EOF, or a reset when the kernel closes a socket with
    // unread input. Never a half message.
    match transport.next().await {
        None => {}
        Some(Err(qmp_codec::Error::Io(e))) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("expected the end of the stream, got {other:?}"),
    }
}
