//! Property tests: whatever is encoded comes back out of the decoder, however the byte
//! stream is cut into reads, and bad lines in between cost only themselves.

use bytes::BytesMut;
use proptest::prelude::*;
use qmp_codec::{
    Capability, Command, Error, ErrorClass, ErrorReply, Event, Greeting, JsonLinesCodec,
    QemuVersion, QmpCodec, QmpError, Return, ServerCodec, ServerMessage, Timestamp, VersionInfo,
};
use serde_json::{Map, Value};
use tokio_util::codec::{Decoder, Encoder};

fn json_value() -> impl Strategy<Value = Value> {
    // Any string, including newlines, CR, quotes and non-ASCII: the encoder must escape them.
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn json_object() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map("[a-z-]{1,12}", json_value(), 0..5)
        .prop_map(|m| m.into_iter().collect())
}

fn server_message() -> impl Strategy<Value = ServerMessage> {
    let id = || prop::option::of(json_value());
    prop_oneof![
        (any::<(u32, u32, u32)>(), any::<String>(), prop::collection::vec("[a-z-]{1,10}", 0..4))
            .prop_map(|((major, minor, micro), package, caps)| {
                ServerMessage::Greeting(Greeting {
                    version: VersionInfo { qemu: QemuVersion::new(major, minor, micro), package },
                    capabilities: caps.iter().map(|c| Capability::from(c.as_str())).collect(),
                })
            }),
        (json_value(), id()).prop_map(|(value, id)| ServerMessage::Return(Return { value, id })),
        ("[A-Za-z]{1,20}", any::<String>(), id()).prop_map(|(class, desc, id)| {
            ServerMessage::Error(ErrorReply {
                error: QmpError { class: ErrorClass::from(class.as_str()), desc },
                id,
            })
        }),
        ("[A-Z_]{1,20}", prop::option::of(json_value()), any::<(i64, i64)>()).prop_map(
            |(event, data, (seconds, microseconds))| {
                ServerMessage::Event(Event {
                    event,
                    data,
                    timestamp: Timestamp { seconds, microseconds },
                })
            }
        ),
    ]
}

fn command() -> impl Strategy<Value = Command> {
    (
        "[a-z_-]{1,30}",
        prop::option::of(json_object()),
        prop::option::of(json_value()),
        any::<bool>(),
    )
        .prop_map(|(name, arguments, id, oob)| Command { name, arguments, id, oob })
}

/// Cuts `wire` at the given points (taken modulo its length) and decodes piece by piece.
fn decode_cut<D>(mut codec: D, wire: &[u8], cuts: &[usize]) -> Vec<Result<D::Item, D::Error>>
where
    D: Decoder,
{
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
    points.push(wire.len());
    points.sort_unstable();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut start = 0;
    for end in points {
        buf.extend_from_slice(&wire[start..end]);
        start = end;
        while let Some(item) = codec.decode(&mut buf).transpose() {
            out.push(item);
        }
    }
    while let Some(item) = codec.decode_eof(&mut buf).transpose() {
        out.push(item);
        if out.last().is_some_and(Result::is_err) {
            break;
        }
    }
    out
}

/// Encodes every item, one line each.
fn encode_all<T, E>(mut encoder: E, items: &[T]) -> BytesMut
where
    E: for<'a> Encoder<&'a T, Error = Error>,
{
    let mut wire = BytesMut::new();
    for item in items {
        encoder.encode(item, &mut wire).unwrap();
    }
    wire
}

/// [`decode_cut`] for a stream that must hold nothing but good messages.
fn decode_all<T>(decoder: JsonLinesCodec<T, impl Sized>, wire: &[u8], cuts: &[usize]) -> Vec<T>
where
    T: qmp_codec::FromLine,
{
    decode_cut(decoder, wire, cuts).into_iter().map(|item| item.unwrap().unwrap()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn server_messages_survive_any_chunking(
        messages in prop::collection::vec(server_message(), 0..12),
        cuts in prop::collection::vec(any::<usize>(), 0..40),
    ) {
        let wire = encode_all(ServerCodec::new(), &messages);
        prop_assert_eq!(decode_all(QmpCodec::new(), &wire, &cuts), messages);
    }

    #[test]
    fn replies_in_qemus_own_layout_parse_to_the_same_message(
        value in json_value(),
        id in prop::option::of(any::<u64>()),
        qemu_spacing in any::<bool>(),
    ) {
        // QEMU writes `{"return": VALUE, "id": N}`; the codec reads that shape on a short
        // path (spaces or not), which must agree with the message it came from.
        let (colon, comma) = if qemu_spacing { (": ", ", ") } else { (":", ",") };
        let line = match id {
            Some(id) => format!("{{\"return\"{colon}{value}{comma}\"id\"{colon}{id}}}"),
            None => format!("{{\"return\"{colon}{value}}}"),
        };
        let expected = ServerMessage::Return(Return { value, id: id.map(Value::from) });
        prop_assert_eq!(ServerMessage::from_slice(line.as_bytes()).unwrap(), expected);
    }

    #[test]
    fn events_in_qemus_own_layout_parse_to_the_same_message(
        event in "[A-Z_]{1,20}",
        data in prop::option::of(json_value()),
        (seconds, microseconds) in any::<(i64, i64)>(),
        order in 0..6_usize,
        qemu_spacing in any::<bool>(),
    ) {
        // QEMU writes `{"timestamp": {...}, "event": ..., "data": ...}`; the codec reads
        // events on a short path in any member order, which must agree with the message.
        let (colon, comma) = if qemu_spacing { (": ", ", ") } else { (":", ",") };
        let mut members = vec![
            format!("\"event\"{colon}\"{event}\""),
            format!(
                "\"timestamp\"{colon}{{\"seconds\"{colon}{seconds}{comma}\"microseconds\"{colon}{microseconds}}}"
            ),
        ];
        if let Some(data) = &data {
            members.push(format!("\"data\"{colon}{data}"));
        }
        let count = members.len();
        members.rotate_left(order % count);
        if order >= 3 {
            members.swap(0, 1);
        }
        let line = format!("{{{}}}", members.join(comma));
        let expected = ServerMessage::Event(Event {
            event,
            data,
            timestamp: Timestamp { seconds, microseconds },
        });
        prop_assert_eq!(ServerMessage::from_slice(line.as_bytes()).unwrap(), expected);
    }

    #[test]
    fn commands_survive_any_chunking(
        commands in prop::collection::vec(command(), 0..12),
        cuts in prop::collection::vec(any::<usize>(), 0..40),
    ) {
        let wire = encode_all(QmpCodec::new(), &commands);
        prop_assert_eq!(decode_all(ServerCodec::new(), &wire, &cuts), commands);
    }

    #[test]
    fn garbage_lines_cost_only_themselves(
        items in prop::collection::vec(
            prop_oneof![
                server_message().prop_map(Ok),
                // Starts with a byte no JSON text starts with; never contains a newline.
                "#[^\n]{0,60}".prop_map(|text| Err(text.into_bytes())),
                // Not UTF-8 at all.
                prop::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..40)
                    .prop_map(|mut bytes| { bytes.insert(0, 0xff); Err(bytes) }),
            ],
            0..12,
        ),
        cuts in prop::collection::vec(any::<usize>(), 0..40),
        max_frame_len in 16usize..4096,
    ) {
        let mut wire = BytesMut::new();
        let mut expected = Vec::new();
        for item in &items {
            match item {
                Ok(message) => {
                    let before = wire.len();
                    ServerCodec::new().encode(message, &mut wire).unwrap();
                    let len = wire.len() - before - 2;
                    expected.push(if len > max_frame_len { Err(()) } else { Ok(message.clone()) });
                }
                Err(garbage) => {
                    wire.extend_from_slice(garbage);
                    wire.extend_from_slice(b"\r\n");
                    expected.push(Err(()));
                }
            }
        }
        let decoded: Vec<Result<ServerMessage, ()>> =
            decode_cut(QmpCodec::with_max_frame_len(max_frame_len), &wire, &cuts)
                .into_iter()
                .map(|item| item.unwrap().map_err(|e: Error| assert!(e.is_frame_error())))
                .collect();
        prop_assert_eq!(decoded, expected);
    }
}
