//! The core driven by hand, with fake time: every input is a call, every output is polled.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use qmp_codec::{Command, ErrorClass, ServerCodec, ServerMessage};
use serde_json::{Value, json};
use tokio_util::codec::Decoder;

use super::*;

fn msg(text: &str) -> Result<ServerMessage, qmp_codec::Error> {
    ServerMessage::from_slice(text.as_bytes())
}

const GREETING_OOB: &str = r#"{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian"}, "capabilities": ["oob"]}}"#;
const GREETING_PLAIN: &str = r#"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 0, "major": 5}, "package": ""}, "capabilities": []}}"#;

fn id_of(command: &Command) -> u64 {
    command.id.as_ref().and_then(Value::as_u64).unwrap()
}

/// Writes everything the session has to send, as a transport that takes it all would,
/// and returns the commands those bytes hold.
fn sent<W>(s: &mut Session<W>) -> Vec<Command> {
    let mut wire = BytesMut::new();
    while let Some(transmit) = s.poll_transmit() {
        wire.extend_from_slice(transmit.bytes);
        let count = transmit.bytes.len();
        s.transmitted(count);
    }
    decode_commands(&mut wire)
}

fn decode_commands(wire: &mut BytesMut) -> Vec<Command> {
    let mut codec = ServerCodec::new();
    let commands = std::iter::from_fn(|| codec.decode(wire).unwrap().map(Result::unwrap)).collect();
    assert!(wire.is_empty(), "whole commands only");
    commands
}

/// The one command the session has to send.
fn sent_one<W>(s: &mut Session<W>) -> Command {
    let mut commands = sent(s);
    assert_eq!(commands.len(), 1, "{commands:?}");
    commands.remove(0)
}

/// A session taken through greeting, negotiation and `query-commands` at `t0`.
fn ready(config: SessionConfig, t0: Instant) -> Session<&'static str> {
    let mut s = Session::new(config, t0);
    s.handle_message(msg(GREETING_OOB));
    let caps = sent_one(&mut s);
    s.handle_message(msg(&format!(r#"{{"return": {{}}, "id": {}}}"#, id_of(&caps))));
    let query = sent_one(&mut s);
    assert_eq!(query.name, "query-commands");
    let names = r#"[{"name": "query-status"}, {"name": "stop"}, {"name": "cont"}, {"name": "migrate-pause"}, {"name": "getfd"}, {"name": "query-commands"}]"#;
    s.handle_message(msg(&format!(r#"{{"return": {names}, "id": {}}}"#, id_of(&query))));
    assert_eq!(s.phase(), Phase::Ready);
    s
}

fn completions<W>(s: &mut Session<W>) -> Vec<Completion<W>> {
    std::iter::from_fn(|| s.poll_completion()).collect()
}

#[test]
fn handshake_negotiates_oob_and_loads_the_command_cache() {
    let t0 = Instant::now();
    let mut s: Session<()> = Session::new(SessionConfig::default(), t0);
    assert_eq!(s.phase(), Phase::AwaitingGreeting);
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    assert!(s.poll_transmit().is_none(), "nothing is sent before the greeting");

    s.handle_message(msg(GREETING_OOB));
    assert_eq!(s.greeting().unwrap().version.qemu.to_string(), "7.2.22");
    let caps = sent_one(&mut s);
    assert_eq!(
        serde_json::to_value(&caps).unwrap(),
        json!({"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}, "id": 0})
    );
    assert_eq!(s.phase(), Phase::Negotiating);
    assert!(s.start_command(Request::new("stop"), (), t0).is_err(), "not ready yet");

    s.handle_message(msg(r#"{"return": {}, "id": 0}"#));
    let query = sent_one(&mut s);
    assert_eq!(
        serde_json::to_value(&query).unwrap(),
        json!({"execute": "query-commands", "id": 1})
    );
    s.handle_message(msg(r#"{"return": [{"name": "stop"}, {"name": "query-commands"}], "id": 1}"#));
    assert_eq!(s.phase(), Phase::Ready);
    assert!(s.oob_enabled());
    assert!(s.supports("stop") && !s.supports("cont"));
    assert_eq!(s.commands(), ["query-commands", "stop"]);
    assert_eq!(s.poll_timeout(), None, "no deadline once ready and idle");
    assert!(completions(&mut s).is_empty(), "internal commands never surface");
}

#[test]
fn oob_is_not_requested_when_not_offered_or_not_wanted() {
    let t0 = Instant::now();
    let mut s: Session<()> = Session::new(SessionConfig::default(), t0);
    s.handle_message(msg(GREETING_PLAIN));
    assert_eq!(
        serde_json::to_value(sent_one(&mut s)).unwrap(),
        json!({"execute": "qmp_capabilities", "id": 0})
    );
    assert!(!s.oob_enabled());

    let config = SessionConfig { enable_oob: false, ..SessionConfig::default() };
    let mut s: Session<()> = Session::new(config, t0);
    s.handle_message(msg(GREETING_OOB));
    assert_eq!(sent_one(&mut s).arguments, None);
    assert!(!s.oob_enabled());
}

#[test]
fn anything_but_a_greeting_first_is_a_protocol_error() {
    let t0 = Instant::now();
    for first in [
        Ok(r#"{"return": {}}"#),
        Ok(r#"{"event": "STOP", "timestamp": {"seconds": 1, "microseconds": 1}}"#),
        Err(qmp_codec::Error::InvalidJson {
            source: serde_json::from_str::<Value>("x").unwrap_err(),
            line: Bytes::from_static(b"x"),
        }),
    ] {
        let mut s: Session<()> = Session::new(SessionConfig::default(), t0);
        s.handle_message(first.map_or_else(Err, msg));
        assert_eq!(s.phase(), Phase::Closed);
        assert!(matches!(s.close_error(), Some(Error::Protocol(_))), "{:?}", s.close_error());
        assert!(s.poll_transmit().is_none());
    }
}

#[test]
fn greeting_and_negotiation_time_out_on_the_fake_clock() {
    let t0 = Instant::now();
    let config =
        SessionConfig { handshake_timeout: Duration::from_secs(2), ..SessionConfig::default() };
    let mut s: Session<()> = Session::new(config.clone(), t0);
    s.handle_timeout(t0 + Duration::from_millis(1999));
    assert_eq!(s.phase(), Phase::AwaitingGreeting);
    s.handle_timeout(t0 + Duration::from_secs(2));
    assert!(
        matches!(s.close_error(), Some(Error::GreetingTimeout(d)) if *d == Duration::from_secs(2))
    );

    let mut s: Session<()> = Session::new(config, t0);
    s.handle_message(msg(GREETING_OOB));
    let _ = sent(&mut s);
    s.handle_timeout(t0 + Duration::from_secs(3));
    assert!(
        matches!(s.close_error(), Some(Error::Timeout { command, .. }) if command == "qmp_capabilities")
    );
}

#[test]
fn refused_negotiation_closes_the_session() {
    let t0 = Instant::now();
    let mut s: Session<()> = Session::new(SessionConfig::default(), t0);
    s.handle_message(msg(GREETING_OOB));
    let _ = sent(&mut s);
    s.handle_message(msg(r#"{"error": {"class": "GenericError", "desc": "nope"}, "id": 0}"#));
    assert!(matches!(s.close_error(), Some(Error::Protocol(why)) if why.contains("nope")));
}

#[test]
fn replies_in_any_order_reach_their_own_waiters() {
    let t0 = Instant::now();
    let mut s = ready(SessionConfig::default(), t0);
    let a = s.start_command(Request::new("query-status"), "a", t0).unwrap();
    let b = s.start_command(Request::new("stop"), "b", t0).unwrap();
    let c = s.start_command(Request::new("cont"), "c", t0).unwrap();
    assert_eq!(s.in_flight(), 3);
    s.handle_message(msg(&format!(r#"{{"return": "C", "id": {c}}}"#)));
    s.handle_message(msg(&format!(
        r#"{{"id": {b}, "error": {{"class": "GenericError", "desc": "B failed"}}}}"#
    )));
    s.handle_message(msg(&format!(r#"{{"return": "A", "id": {a}}}"#)));
    let done = completions(&mut s);
    let order: Vec<&str> = done.iter().map(|c| c.waiter).collect();
    assert_eq!(order, ["c", "b", "a"]);
    assert_eq!(done[0].result.as_ref().unwrap(), "C");
    assert!(
        matches!(&done[1].result, Err(Error::Qmp { command, class: ErrorClass::GenericError, desc }) if command == "stop" && desc == "B failed")
    );
    assert_eq!(done[2].result.as_ref().unwrap(), "A");
    assert_eq!(s.in_flight(), 0);
}

#[test]
fn unknown_and_missing_ids_are_counted_never_fatal() {
    let t0 = Instant::now();
    let mut s = ready(SessionConfig::default(), t0);
    let cmd = s.start_command(Request::new("stop"), "x", t0).unwrap();
    s.handle_message(msg(r#"{"return": {}, "id": 999}"#));
    s.handle_message(msg(r#"{"return": {}, "id": "not-ours"}"#));
    s.handle_message(msg(r#"{"return": {}}"#));
    s.handle_message(msg(
        r#"{"error": {"class": "GenericError", "desc": "QMP input lacks member 'execute'"}}"#,
    ));
    assert_eq!(s.stats().unmatched_replies, 4);
    assert!(completions(&mut s).is_empty());
    s.handle_message(msg(&format!(r#"{{"return": 1, "id": {cmd}}}"#)));
    assert_eq!(completions(&mut s)[0].result.as_ref().unwrap(), 1);
}

#[test]
fn commands_unknown_to_the_server_fail_before_anything_is_registered() {
    let t0 = Instant::now();
    let mut s = ready(SessionConfig::default(), t0);
    let err = s.start_command(Request::new("device_add"), "x", t0).unwrap_err();
    assert!(matches!(err, Error::CommandNotSupported { command } if command == "device_add"));
    assert_eq!(s.in_flight(), 0);
    assert!(sent(&mut s).is_empty(), "nothing was queued");
}

#[test]
fn refresh_commands_goes_through_the_session_and_replaces_the_cache() {
    let t0 = Instant::now();
    let mut s = ready(SessionConfig::default(), t0);
    assert!(!s.supports("device_add"));
    let id = s.refresh_commands("refresh", t0).unwrap();
    let query = sent_one(&mut s);
    assert_eq!((query.name.as_str(), id_of(&query)), ("query-commands", id));
    assert_eq!(s.in_flight(), 1);
    s.handle_message(msg(&format!(
        r#"{{"return": [{{"name": "device_add"}}, {{"name": "query-commands"}}], "id": {id}}}"#
    )));
    let done = completions(&mut s);
    assert_eq!((done[0].waiter, done[0].result.as_ref().unwrap()), ("refresh", &Value::Null));
    assert_eq!(s.commands(), ["device_add", "query-commands"]);
    assert!(s.start_command(Request::new("device_add"), "x", t0).is_ok());

    // A reply that is not a command list fails the refresh and leaves the cache alone.
    let id = s.refresh_commands("bad", t0).unwrap();
    s.handle_message(msg(&format!(r#"{{"return": {{"not": "a list"}}, "id": {id}}}"#)));
    let done = completions(&mut s);
    assert!(matches!(&done[0].result, Err(Error::Protocol(_))), "{:?}", done[0].result);
    assert!(s.supports("device_add"));
}

#[test]
fn a_timed_out_command_fails_and_its_late_reply_is_discarded() {
    let t0 = Instant::now();
    let mut s = ready(SessionConfig::default(), t0);
    let slow = s
        .start_command(Request::new("query-status").timeout(Duration::from_secs(5)), "slow", t0)
        .unwrap();
    let other = s
        .start_command(Request::new("stop").timeout(Duration::from_secs(60)), "other", t0)
        .unwrap();
    let untimed = s.start_command(Request::new("cont"), "untimed", t0).unwrap();
    assert_eq!(sent(&mut s).len(), 3);
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(5)));

    s.handle_timeout(t0 + Duration::from_secs(4));
    assert!(completions(&mut s).is_empty());
    s.handle_timeout(t0 + Duration::from_secs(5));
    let done = completions(&mut s);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].waiter, "slow");
    let err = done[0].result.as_ref().unwrap_err();
    assert!(
        matches!(err, Error::Timeout { command, timeout } if command == "query-status" && *timeout == Duration::from_secs(5))
    );
    assert!(err.outcome_unknown());
    assert!(err.to_string().contains("outcome is unknown"));
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(60)));

    // The late reply is recognised as late, and the connection stays in sync.
    s.handle_message(msg(&format!(r#"{{"return": {{}}, "id": {slow}}}"#)));
    assert_eq!(s.stats().late_replies, 1);
    assert_eq!(s.stats().unmatched_replies, 0);
    s.handle_message(msg(&format!(r#"{{"return": "u", "id": {untimed}}}"#)));
    s.handle_message(msg(&format!(r#"{{"return": "o", "id": {other}}}"#)));
    let waiters: Vec<&str> = completions(&mut s).iter().map(|c| c.waiter).collect();
    assert_eq!(waiters, ["untimed", "other"]);
    assert_eq!(s.poll_timeout(), None, "answered commands leave no deadline behind");
}

#[test]
fn the_default_timeout_applies_to_commands_without_their_own() {
    let t0 = Instant::now();
    let config = SessionConfig {
        default_command_timeout: Some(Duration::from_secs(1)),
        ..SessionConfig::default()
    };
    let mut s = ready(config, t0);
    s.start_command(Request::new("stop"), "x", t0).unwrap();
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(1)));
}

#[test]
fn a_cancelled_command_gives_its_waiter_back_and_its_reply_is_discarded() {
    let t0 = Instant::now();
    let mut s = ready(SessionConfig::default(), t0);
    let cmd =
        s.start_command(Request::new("stop").timeout(Duration::from_secs(1)), "x", t0).unwrap();
    assert_eq!(sent(&mut s).len(), 1);
    assert_eq!(s.cancel(cmd), Some("x"));
    assert_eq!(s.cancel(cmd), None);
    assert_eq!(s.poll_timeout(), None);
    s.handle_message(msg(&format!(r#"{{"return": {{}}, "id": {cmd}}}"#)));
    assert!(completions(&mut s).is_empty());
    assert_eq!(s.stats().late_replies, 1);
}

#[test]
fn closing_fails_everything_in_flight_and_everything_after() {
    let t0 = Instant::now();
    let mut s = ready(SessionConfig::default(), t0);
    for waiter in ["a", "b", "c"] {
        s.start_command(Request::new("query-status"), waiter, t0).unwrap();
    }
    s.handle_closed(DisconnectReason::Eof);
    let done = completions(&mut s);
    assert_eq!(done.len(), 3);
    assert!(
        done.iter().all(|c| matches!(c.result, Err(Error::Disconnected(DisconnectReason::Eof))))
    );
    assert!(matches!(
        s.start_command(Request::new("stop"), "d", t0),
        Err(Error::Disconnected(DisconnectReason::Eof))
    ));
    assert_eq!(s.poll_timeout(), None);
    // A second close does not overwrite the first reason.
    s.handle_closed(DisconnectReason::Closed);
    assert!(matches!(s.close_error(), Some(Error::Disconnected(DisconnectReason::Eof))));
    s.handle_message(msg(r#"{"return": {}, "id": 0}"#));
    assert!(completions(&mut s).is_empty());
}

#[test]
fn the_event_queue_is_bounded_and_reports_what_it_dropped() {
    let t0 = Instant::now();
    let config = SessionConfig { event_queue_capacity: 3, ..SessionConfig::default() };
    let mut s = ready(config, t0);
    for n in 0..5 {
        s.handle_message(msg(&format!(
            r#"{{"event": "E{n}", "timestamp": {{"seconds": 1, "microseconds": {n}}}}}"#
        )));
    }
    let items: Vec<EventItem> = std::iter::from_fn(|| s.poll_event()).collect();
    assert_eq!(items[0], EventItem::Lagged(2));
    let names: Vec<&str> = items[1..]
        .iter()
        .map(|i| match i {
            EventItem::Event(e) => e.event.as_str(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(names, ["E2", "E3", "E4"]);
    assert_eq!((s.stats().events, s.stats().events_dropped), (5, 2));
}

#[test]
fn an_unreadable_reply_that_still_shows_its_id_fails_its_command() {
    let t0 = Instant::now();
    let mut s = ready(SessionConfig::default(), t0);
    let big = s.start_command(Request::new("query-status"), "big", t0).unwrap();
    let odd = s.start_command(Request::new("stop"), "odd", t0).unwrap();
    let kept = s.start_command(Request::new("cont"), "kept", t0).unwrap();
    s.handle_message(Err(qmp_codec::Error::FrameTooLong {
        max_frame_len: 10,
        len: 100,
        head: Bytes::from_static(b"{\"return\": [1, 2"),
        tail: Bytes::from(format!("3, 4], \"id\": {big}}}")),
    }));
    s.handle_message(msg(&format!(
        r#"{{"return": 1, "error": {{"class": "GenericError", "desc": ""}}, "id": {odd}}}"#
    )));
    // Garbage that names no command costs nothing but a count.
    s.handle_message(msg("[1, 2]"));
    let done = completions(&mut s);
    let summary: Vec<(&str, bool)> =
        done.iter().map(|c| (c.waiter, matches!(c.result, Err(Error::BadReply { .. })))).collect();
    assert_eq!(summary, [("big", true), ("odd", true)]);
    assert_eq!(s.stats().bad_frames, 3);
    assert_eq!(s.in_flight(), 1);
    assert_eq!(s.phase(), Phase::Ready);
    let _ = kept;
}

#[test]
fn exec_oob_needs_oob_negotiated() {
    let t0 = Instant::now();
    let mut s = ready(SessionConfig::default(), t0);
    s.start_command(Request::new("migrate-pause").oob(true), "x", t0).unwrap();
    let cmd = sent_one(&mut s);
    assert!(cmd.oob);
    assert_eq!(serde_json::to_value(&cmd).unwrap()["exec-oob"], "migrate-pause");

    let mut s = ready(SessionConfig { enable_oob: false, ..SessionConfig::default() }, t0);
    assert!(matches!(
        s.start_command(Request::new("migrate-pause").oob(true), "x", t0),
        Err(Error::InvalidRequest(_))
    ));
}

#[test]
fn commands_are_encoded_in_order_into_one_batch() {
    let t0 = Instant::now();
    let mut s = ready(SessionConfig::default(), t0);
    let a = s.start_command(Request::new("query-status"), "a", t0).unwrap();
    let arguments = json!({"fdname": "fd\"0"});
    let b = s.start_command(Request::new("stop").arguments(&arguments).unwrap(), "b", t0).unwrap();
    let transmit = s.poll_transmit().unwrap();
    assert!(transmit.fds.is_empty());
    let mut expected = BytesMut::new();
    Command::new("query-status").id(a).encode(&mut expected);
    Command::new("stop")
        .arguments(arguments.as_object().cloned().unwrap())
        .id(b)
        .encode(&mut expected);
    assert_eq!(transmit.bytes, &expected[..], "both commands, as the codec encodes them");
    assert_eq!((s.queued(), s.in_flight()), (2, 2));
    let count = transmit.bytes.len();
    s.transmitted(count);
    assert!(s.poll_transmit().is_none());
    assert_eq!((s.queued(), s.in_flight()), (0, 2));
}

#[test]
fn a_command_given_up_before_it_was_written_is_never_sent() {
    let t0 = Instant::now();
    let config = SessionConfig {
        default_command_timeout: Some(Duration::from_secs(1)),
        ..SessionConfig::default()
    };
    let mut s = ready(config, t0);
    let cancelled = s.start_command(Request::new("stop"), "cancelled", t0).unwrap();
    let kept = s.start_command(Request::new("cont"), "kept", t0).unwrap();
    let late = s
        .start_command(Request::new("query-status").timeout(Duration::from_millis(500)), "late", t0)
        .unwrap();
    assert_eq!(s.cancel(cancelled), Some("cancelled"));
    s.handle_timeout(t0 + Duration::from_millis(500));
    let done = completions(&mut s);
    assert_eq!(done.len(), 1);
    let error = done[0].result.as_ref().unwrap_err();
    assert!(
        matches!(error, Error::NotSent { command, .. } if command == "query-status"),
        "{error}"
    );
    assert!(!error.outcome_unknown(), "never sent: the outcome is known");
    assert_eq!(s.stats().withdrawn, 2);
    let on_wire: Vec<u64> = sent(&mut s).iter().map(id_of).collect();
    assert_eq!(on_wire, [kept], "only the command nobody gave up on goes out");
    // A reply to a withdrawn id is one nobody asked for, not a late one.
    s.handle_message(msg(&format!(r#"{{"return": {{}}, "id": {late}}}"#)));
    assert_eq!((s.stats().unmatched_replies, s.stats().late_replies), (1, 0));
}

#[test]
fn a_command_partly_written_is_finished_whatever_happens_to_its_caller() {
    let t0 = Instant::now();
    let mut s = ready(SessionConfig::default(), t0);
    let first = s.start_command(Request::new("stop"), "first", t0).unwrap();
    let second = s.start_command(Request::new("cont"), "second", t0).unwrap();
    let mut wire = BytesMut::new();
    let transmit = s.poll_transmit().unwrap();
    wire.extend_from_slice(&transmit.bytes[..5]);
    s.transmitted(5);
    assert_eq!(s.cancel(first), Some("first"), "the caller gets its waiter back");
    assert_eq!(s.cancel(second), Some("second"));
    assert_eq!(s.stats().withdrawn, 1, "only the untouched one is withdrawn");
    while let Some(transmit) = s.poll_transmit() {
        wire.extend_from_slice(transmit.bytes);
        let count = transmit.bytes.len();
        s.transmitted(count);
    }
    let on_wire: Vec<u64> = decode_commands(&mut wire).iter().map(id_of).collect();
    assert_eq!(on_wire, [first], "the started command is finished, nothing half-written");
    s.handle_message(msg(&format!(r#"{{"return": {{}}, "id": {first}}}"#)));
    assert_eq!(s.stats().late_replies, 1);
}

#[test]
fn the_outgoing_queue_is_bounded() {
    let t0 = Instant::now();
    let mut s = ready(SessionConfig { max_queued_commands: 2, ..SessionConfig::default() }, t0);
    s.start_command(Request::new("stop"), "a", t0).unwrap();
    s.start_command(Request::new("cont"), "b", t0).unwrap();
    assert!(s.queue_is_full());
    let error = s.start_command(Request::new("query-status"), "c", t0).unwrap_err();
    assert!(
        matches!(&error, Error::QueueFull { command, capacity: 2 } if command == "query-status"),
        "{error}"
    );
    assert!(matches!(s.refresh_commands("r", t0), Err(Error::QueueFull { .. })));
    assert_eq!(s.in_flight(), 2, "the refused ones were not registered");
    // Written commands make room, even before they are answered.
    s.transmitted(5);
    assert!(s.queue_is_full(), "a partly written command still waits in the queue");
    let rest = s.poll_transmit().unwrap().bytes.len();
    s.transmitted(rest);
    assert!(!s.queue_is_full());
    s.start_command(Request::new("query-status"), "c", t0).unwrap();
}

/// The ids of the whole commands in `bytes`.
fn ids_in(bytes: &[u8]) -> Vec<u64> {
    decode_commands(&mut BytesMut::from(bytes)).iter().map(id_of).collect()
}

/// One end of a socket pair to pass, and the other end, which sees EOF once every copy of
/// the first is closed.
fn descriptor() -> (std::os::fd::OwnedFd, std::os::unix::net::UnixStream) {
    let (passed, kept) = std::os::unix::net::UnixStream::pair().unwrap();
    kept.set_nonblocking(true).unwrap();
    (passed.into(), kept)
}

fn closed(kept: &std::os::unix::net::UnixStream) -> bool {
    use std::io::Read;
    matches!((&*kept).read(&mut [0; 1]), Ok(0))
}

#[test]
fn a_command_with_descriptors_is_alone_in_its_write() {
    let t0 = Instant::now();
    let mut s = ready(SessionConfig::default(), t0);
    let (fd, kept) = descriptor();
    let before = s.start_command(Request::new("stop"), "before", t0).unwrap();
    let with_fd = Request::new("getfd").arguments(json!({"fdname": "a"})).unwrap().fd(fd);
    let getfd = s.start_command(with_fd, "getfd", t0).unwrap();
    let after = s.start_command(Request::new("cont"), "after", t0).unwrap();
    let also_after = s.start_command(Request::new("cont"), "also after", t0).unwrap();

    let transmit = s.poll_transmit().unwrap();
    assert!(transmit.fds.is_empty());
    assert_eq!(ids_in(transmit.bytes), [before], "what comes before goes first, on its own");
    let count = transmit.bytes.len();
    s.transmitted(count);

    let transmit = s.poll_transmit().unwrap();
    assert_eq!(transmit.fds.len(), 1);
    assert_eq!(ids_in(transmit.bytes), [getfd], "the command with the descriptor, alone");
    let mut wire = BytesMut::from(&transmit.bytes[..1]);
    assert!(!closed(&kept));
    s.transmitted(1);
    assert!(closed(&kept), "the session lets go of the descriptor once it went");

    let transmit = s.poll_transmit().unwrap();
    assert!(transmit.fds.is_empty(), "descriptors go with the first byte only");
    wire.extend_from_slice(transmit.bytes);
    let count = transmit.bytes.len();
    s.transmitted(count);
    let on_wire: Vec<u64> = decode_commands(&mut wire).iter().map(id_of).collect();
    assert_eq!(on_wire, [getfd, after, also_after], "its rest first, then the others");
    assert!(s.poll_transmit().is_none());
}

#[test]
fn refused_descriptors_fail_only_their_command() {
    let t0 = Instant::now();
    let mut s = ready(SessionConfig::default(), t0);
    let (fd, kept) = descriptor();
    let with_fd = Request::new("getfd").arguments(json!({"fdname": "a"})).unwrap().fd(fd);
    let getfd = s.start_command(with_fd, "getfd", t0).unwrap();
    let next = s.start_command(Request::new("stop"), "next", t0).unwrap();
    assert_eq!(s.poll_transmit().unwrap().fds.len(), 1);
    s.transmit_failed(Error::FdPassing(std::sync::Arc::new(std::io::Error::other("refused"))));
    let done = completions(&mut s);
    assert_eq!((done[0].id, done[0].waiter), (getfd, "getfd"));
    assert!(matches!(done[0].result, Err(Error::FdPassing(_))));
    let on_wire: Vec<u64> = sent(&mut s).iter().map(id_of).collect();
    assert_eq!(on_wire, [next]);
    assert_eq!(s.phase(), Phase::Ready);
    assert!(closed(&kept), "the refused descriptor is closed");
}

#[test]
fn ids_are_found_in_raw_reply_bytes() {
    assert_eq!(find_id(br#"{"return": [], "id": 42}"#), Some(42));
    assert_eq!(find_id(br#"{"id": 7, "error": {"class"#), Some(7));
    assert_eq!(find_id(br#"{"id":3}"#), Some(3));
    assert_eq!(find_id(br#"{"return": {"id": 1}, "id": 2}"#), Some(2));
    assert_eq!(find_id(br#"{"return": "x"}"#), None);
    assert_eq!(find_id(br#"{"id": "text"}"#), None);
    assert_eq!(find_id(b""), None);
}

const NESTING_ERROR: &str =
    r#"{"error": {"class": "GenericError", "desc": "JSON nesting depth limit exceeded"}}"#;
const LEFTOVER_ERROR: &str =
    r#"{"error": {"class": "GenericError", "desc": "JSON parse error, expecting value"}}"#;

#[test]
fn an_error_without_id_fails_the_one_written_command_definitely() {
    let t0 = Instant::now();
    let mut s = ready(SessionConfig::default(), t0);
    let written = s.start_command(Request::new("query-status"), "written", t0).unwrap();
    assert_eq!(sent(&mut s).len(), 1);
    let queued = s.start_command(Request::new("stop"), "queued", t0).unwrap();
    s.handle_message(msg(NESTING_ERROR));
    let done = completions(&mut s);
    assert_eq!(done.len(), 1, "the command not written yet is not touched");
    assert_eq!((done[0].id, done[0].waiter), (written, "written"));
    let error = done[0].result.as_ref().unwrap_err();
    assert!(
        matches!(error, Error::Qmp { command, class: ErrorClass::GenericError, desc }
            if command == "query-status" && desc == "JSON nesting depth limit exceeded"),
        "{error:?}"
    );
    assert!(!error.outcome_unknown(), "a definite error: QEMU never ran it");
    assert_eq!((s.stats().parse_errors, s.stats().unmatched_replies), (1, 1));
    // The queued one goes out and is answered normally.
    assert_eq!(id_of(&sent_one(&mut s)), queued);
    s.handle_message(msg(&format!(r#"{{"return": {{}}, "id": {queued}}}"#)));
    assert_eq!(completions(&mut s)[0].waiter, "queued");
}

#[test]
fn an_error_without_id_among_several_written_commands_leaves_each_outcome_unknown() {
    let t0 = Instant::now();
    let mut s = ready(SessionConfig::default(), t0);
    let ids: Vec<u64> = ["a", "b", "c"]
        .into_iter()
        .map(|waiter| s.start_command(Request::new("query-status"), waiter, t0).unwrap())
        .collect();
    // Only part of the third command is written.
    let mut wire = BytesMut::new();
    let transmit = s.poll_transmit().unwrap();
    let partial = transmit.bytes.len() - 5;
    wire.extend_from_slice(&transmit.bytes[..partial]);
    s.transmitted(partial);
    let unwritten = s.start_command(Request::new("stop"), "d", t0).unwrap();

    s.handle_message(msg(NESTING_ERROR));
    let done = completions(&mut s);
    let waiters: Vec<&str> = done.iter().map(|c| c.waiter).collect();
    assert_eq!(waiters, ["a", "b", "c"], "in id order, the unwritten one left alone");
    for completion in &done {
        let error = completion.result.as_ref().unwrap_err();
        assert!(
            matches!(error, Error::Unattributed { among: 3, desc, .. } if desc == "JSON nesting depth limit exceeded"),
            "{error:?}"
        );
        assert!(error.outcome_unknown());
        assert!(error.to_string().contains("one of 3 QMP commands"), "{error}");
    }
    assert_eq!(s.in_flight(), 1);
    // Their replies, if they still come, are late; the unwritten command is served.
    s.handle_message(msg(&format!(r#"{{"return": {{}}, "id": {}}}"#, ids[1])));
    assert_eq!(s.stats().late_replies, 1);
    // The partly written command is finished on the wire, then the unwritten one follows.
    while let Some(transmit) = s.poll_transmit() {
        wire.extend_from_slice(transmit.bytes);
        let count = transmit.bytes.len();
        s.transmitted(count);
    }
    let on_wire: Vec<u64> = decode_commands(&mut wire).iter().map(id_of).collect();
    assert_eq!(on_wire, [ids[0], ids[1], ids[2], unwritten]);
    s.handle_message(msg(&format!(r#"{{"return": 4, "id": {unwritten}}}"#)));
    assert_eq!(completions(&mut s)[0].result.as_ref().unwrap(), 4);
}

#[test]
fn leftover_errors_of_an_unparsable_command_never_pass_for_a_later_ones() {
    let t0 = Instant::now();
    let mut s = ready(SessionConfig::default(), t0);
    let bad = s.start_command(Request::new("query-status"), "bad", t0).unwrap();
    assert_eq!(sent(&mut s).len(), 1);
    s.handle_message(msg(NESTING_ERROR));
    assert!(matches!(completions(&mut s)[0].result, Err(Error::Qmp { .. })));
    // Leftovers with nothing written: counted, nothing failed.
    s.handle_message(msg(LEFTOVER_ERROR));
    assert!(completions(&mut s).is_empty());

    // A command written while QEMU may still be echoing: an error now could be a leftover
    // of `bad` or its own, so its outcome is unknown.
    let next = s.start_command(Request::new("stop"), "next", t0).unwrap();
    assert_eq!(sent(&mut s).len(), 1);
    s.handle_message(msg(LEFTOVER_ERROR));
    let done = completions(&mut s);
    assert!(matches!(done[0].result, Err(Error::Unattributed { among: 2, .. })), "{done:?}");
    // An out-of-band reply may overtake the leftovers: it closes nothing.
    let oob = s.start_command(Request::new("migrate-pause").oob(true), "oob", t0).unwrap();
    sent(&mut s);
    s.handle_message(msg(&format!(r#"{{"return": {{}}, "id": {oob}}}"#)));
    completions(&mut s);
    let third = s.start_command(Request::new("cont"), "third", t0).unwrap();
    sent(&mut s);
    s.handle_message(msg(LEFTOVER_ERROR));
    assert!(matches!(completions(&mut s)[0].result, Err(Error::Unattributed { .. })));
    // An in-band reply to a command written after all of them: QEMU is past the leftovers.
    s.handle_message(msg(&format!(r#"{{"return": {{}}, "id": {next}}}"#)));
    s.handle_message(msg(&format!(r#"{{"return": {{}}, "id": {third}}}"#)));
    let last = s.start_command(Request::new("query-status"), "last", t0).unwrap();
    sent(&mut s);
    s.handle_message(msg(&format!(r#"{{"return": {{}}, "id": {last}}}"#)));
    assert_eq!(completions(&mut s)[0].waiter, "last");
    let definite = s.start_command(Request::new("stop"), "definite", t0).unwrap();
    sent(&mut s);
    s.handle_message(msg(NESTING_ERROR));
    let done = completions(&mut s);
    assert_eq!(done[0].id, definite);
    assert!(matches!(done[0].result, Err(Error::Qmp { .. })), "{done:?}");
    assert_eq!(s.stats().parse_errors, 5);
    assert!(bad < next);
}

#[test]
fn an_error_without_id_for_a_command_given_up_on_fails_nothing_else() {
    let t0 = Instant::now();
    let mut s = ready(SessionConfig::default(), t0);
    let abandoned = s.start_command(Request::new("stop"), "gone", t0).unwrap();
    sent(&mut s);
    assert_eq!(s.cancel(abandoned), Some("gone"));
    s.handle_message(msg(NESTING_ERROR));
    assert!(completions(&mut s).is_empty());
    assert_eq!(s.stats().late_replies, 1, "it was the abandoned command's answer");

    // With a live command written too, it cannot be told whose it is.
    let gone = s.start_command(Request::new("stop"), "gone", t0).unwrap();
    sent(&mut s);
    s.cancel(gone);
    // (An in-band reply after the first error's command closes its echo.)
    let live = s.start_command(Request::new("cont"), "live", t0).unwrap();
    sent(&mut s);
    s.handle_message(msg(NESTING_ERROR));
    let done = completions(&mut s);
    assert_eq!(done[0].id, live);
    assert!(matches!(done[0].result, Err(Error::Unattributed { among: 3, .. })), "{done:?}");
}

#[test]
fn an_error_without_id_during_the_handshake_ends_the_session() {
    let t0 = Instant::now();
    let mut s: Session<()> = Session::new(SessionConfig::default(), t0);
    s.handle_message(msg(GREETING_OOB));
    sent_one(&mut s);
    s.handle_message(msg(NESTING_ERROR));
    assert_eq!(s.phase(), Phase::Closed);
    let error = s.close_error().unwrap();
    assert!(error.to_string().contains("JSON nesting depth limit exceeded"), "{error}");
}

#[test]
fn commands_over_qemus_parser_limits_are_refused_before_anything_is_queued() {
    let t0 = Instant::now();
    let mut s = ready(SessionConfig::default(), t0);
    let nested = |depth: usize| {
        let mut value = json!(0);
        for _ in 0..depth {
            value = json!([value]);
        }
        value
    };
    // The message's own object and `arguments` are two levels more.
    let value = nested(1023);
    let request = Request::new("query-status").arguments(json!({"a": value})).unwrap();
    let error = s.start_command(request, "deep", t0).unwrap_err();
    assert!(
        matches!(&error, Error::ExceedsParserLimit { command, limit: crate::ParserLimit::NestingDepth, found: 1025 } if command == "query-status"),
        "{error:?}"
    );
    assert!(error.to_string().contains("over QEMU's limit of 1024"), "{error}");
    assert_eq!((s.in_flight(), s.queued()), (0, 0));
    assert!(sent(&mut s).is_empty(), "nothing was queued");
    // One level less goes, and the refused command left no gap in the ids.
    let request = Request::new("query-status").arguments(json!({"a": nested(1022)})).unwrap();
    let id = s.start_command(request, "deepest", t0).unwrap();
    assert_eq!(id, 2, "the ids go on from the handshake's 0 and 1");
    let transmit = s.poll_transmit().unwrap();
    assert!(transmit.bytes.ends_with(b"]]]]},\"id\":2}\r\n"), "one whole command");
    let len = transmit.bytes.len();
    s.transmitted(len);
    assert!(s.poll_transmit().is_none());
}

#[test]
fn durations_saturate_instead_of_overflowing() {
    let t0 = Instant::now();
    let config = SessionConfig {
        handshake_timeout: Duration::MAX,
        default_command_timeout: Some(Duration::MAX),
        ..SessionConfig::default()
    };
    let s: Session<&str> = Session::new(config.clone(), t0);
    assert!(s.poll_timeout().unwrap() > t0 + Duration::from_secs(50 * 365 * 24 * 3600));
    let mut s = ready(config, t0);
    s.start_command(Request::new("stop"), "default", t0).unwrap();
    s.start_command(Request::new("cont").timeout(Duration::MAX), "own", t0).unwrap();
    let far = s.poll_timeout().unwrap();
    assert!(far > t0 + Duration::from_secs(50 * 365 * 24 * 3600));
    s.handle_timeout(t0 + Duration::from_secs(3600));
    assert!(completions(&mut s).is_empty());
    assert_eq!(deadline_after(t0, Duration::from_secs(1)), t0 + Duration::from_secs(1));
}

/// QEMU 7.2's `query-qmp-schema` reply.
const SCHEMA_REPLY: &str = include_str!("../../../qmp-schema/tests/data/qemu-7.2-schema.json");

/// A session that lists `query-qmp-schema` and checks arguments (or not).
fn checking(check_arguments: bool, t0: Instant) -> Session<&'static str> {
    let mut s = Session::new(SessionConfig { check_arguments, ..SessionConfig::default() }, t0);
    s.handle_message(msg(GREETING_OOB));
    let caps = sent_one(&mut s);
    s.handle_message(msg(&format!(r#"{{"return": {{}}, "id": {}}}"#, id_of(&caps))));
    let query = sent_one(&mut s);
    let names = [
        "query-qmp-schema",
        "query-status",
        "blockdev-add",
        "device_add",
        "query-commands",
        "x-not-in-the-schema",
    ];
    let list: Vec<Value> = names.iter().map(|n| json!({"name": n})).collect();
    s.handle_message(msg(&json!({"return": list, "id": id_of(&query)}).to_string()));
    assert_eq!(s.phase(), Phase::Ready);
    s
}

/// The schema reply for command `id`.
fn schema_reply(id: u64) -> String {
    let body = SCHEMA_REPLY.trim_end().strip_suffix('}').unwrap();
    format!(r#"{body}, "id": {id}}}"#)
}

#[test]
fn the_schema_is_loaded_once_for_every_waiter_and_then_checks_arguments() {
    let t0 = Instant::now();
    let mut s = checking(true, t0);
    assert!(s.needs_schema());
    assert!(s.load_schema("first").unwrap());
    assert!(s.load_schema("second").unwrap(), "the second waits for the same request");
    let request = sent_one(&mut s);
    assert_eq!((request.name.as_str(), request.arguments.as_ref()), ("query-qmp-schema", None));
    s.handle_message(msg(&schema_reply(id_of(&request))));
    let done = completions(&mut s);
    let waiters: Vec<&str> = done.iter().map(|c| c.waiter).collect();
    assert_eq!(waiters, ["first", "second"]);
    assert!(done.iter().all(|c| c.result.as_ref().unwrap().is_null()));
    assert!(!s.needs_schema() && s.schema().is_some());
    assert!(!s.load_schema("third").unwrap(), "settled: no more waiting");
    assert_eq!(s.in_flight(), 0, "the schema request is the session's own");

    let typo = json!({"driver": "raw", "node-name": "d0",
                      "file": {"driver": "file", "filenme": "/dev/fdset/0"}});
    let request = Request::new("blockdev-add").arguments(typo).unwrap();
    let error = s.start_command(request, "typo", t0).unwrap_err();
    let Error::InvalidArguments { command, path, expected, found, suggestion, problems } = &error
    else {
        panic!("{error:?}")
    };
    assert_eq!(command, "blockdev-add");
    assert_eq!(path, "arguments.file.filenme");
    assert_eq!(found, "member \"filenme\"");
    assert_eq!(suggestion.as_deref(), Some("filename"));
    assert!(!expected.is_empty());
    assert_eq!(problems.len(), 2);
    assert_eq!(
        error.to_string(),
        "blockdev-add: arguments.file.filenme: unexpected member (did you mean \"filename\"?); \
         arguments.file.filename: missing (required for driver \"file\"), expected str; \
         nothing was sent"
    );
    assert!(sent(&mut s).is_empty() && s.in_flight() == 0, "nothing was queued");

    // Valid, not checkable (device_add's properties), and unknown to the schema but
    // listed by query-commands: all sent.
    let good = json!({"driver": "raw", "node-name": "d0",
                      "file": {"driver": "file", "filename": "/dev/fdset/0"}});
    s.start_command(Request::new("blockdev-add").arguments(good).unwrap(), "good", t0).unwrap();
    let free_form = json!({"driver": "virtio-net-pci", "netdev": "n0", "bogus-property": 1});
    s.start_command(Request::new("device_add").arguments(free_form).unwrap(), "dev", t0).unwrap();
    s.start_command(Request::new("x-not-in-the-schema"), "x", t0).unwrap();
    assert_eq!(sent(&mut s).len(), 3);
}

#[test]
fn without_a_usable_schema_commands_go_unchecked() {
    let t0 = Instant::now();
    // Not listed: settled at once, nothing sent.
    let mut s = ready(SessionConfig { check_arguments: true, ..SessionConfig::default() }, t0);
    assert!(s.needs_schema());
    assert!(!s.load_schema("w").unwrap());
    assert!(!s.needs_schema() && s.schema().is_none());
    assert!(sent(&mut s).is_empty());
    let wrong = json!({"no-such-argument": 1});
    s.start_command(Request::new("query-status").arguments(wrong.clone()).unwrap(), "w", t0)
        .unwrap();

    for reply in [
        r#"{"error": {"class": "GenericError", "desc": "nope"}, "id": ID}"#,
        r#"{"return": {}, "id": ID}"#,
        r#"{"return": [{"name": "x", "meta-type": "command", "arg-type": "404"}], "id": ID}"#,
    ] {
        let mut s = checking(true, t0);
        assert!(s.load_schema("w").unwrap());
        let id = id_of(&sent_one(&mut s));
        s.handle_message(msg(&reply.replace("ID", &id.to_string())));
        assert_eq!(completions(&mut s)[0].result.as_ref().unwrap(), &Value::Null, "{reply}");
        assert!(s.schema_settled() && s.schema().is_none(), "{reply}");
        let request = Request::new("query-status").arguments(wrong.clone()).unwrap();
        s.start_command(request, "w", t0).unwrap();
    }

    // Checking off: the schema can still be loaded for probes, and checks nothing.
    let mut s = checking(false, t0);
    assert!(!s.needs_schema());
    assert!(s.load_schema("probe").unwrap());
    let id = id_of(&sent_one(&mut s));
    s.handle_message(msg(&schema_reply(id)));
    assert!(s.schema().unwrap().has("blockdev-add/arg-type/+file/aio").unwrap());
    s.start_command(Request::new("query-status").arguments(wrong).unwrap(), "w", t0).unwrap();
}

#[test]
fn schema_waiters_learn_of_the_end_of_the_connection() {
    let t0 = Instant::now();
    let mut s = checking(true, t0);
    assert!(s.load_schema("w").unwrap());
    s.handle_closed(DisconnectReason::Eof);
    let done = completions(&mut s);
    assert!(matches!(done[0].result, Err(Error::Disconnected(DisconnectReason::Eof))));
    assert!(s.load_schema("late").is_err());

    // An error without an id that may be the schema request's: checking is off, and the
    // waiters go on.
    let mut s = checking(true, t0);
    assert!(s.load_schema("w").unwrap());
    sent(&mut s);
    s.handle_message(msg(NESTING_ERROR));
    assert_eq!(completions(&mut s)[0].result.as_ref().unwrap(), &Value::Null);
    assert!(s.schema_settled() && s.schema().is_none());
}
