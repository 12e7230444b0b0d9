//! Arbitrary client bytes through the server-side codec (what a mock server or proxy reads):
//! no panic, bounded buffer, and every decoded command re-encodes to an equal command.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use qmp_codec::{Command, QmpCodec, ServerCodec};
use tokio_util::codec::{Decoder, Encoder};

const MAX: usize = 512;

fuzz_target!(|data: &[u8]| {
    let mut codec = ServerCodec::with_max_frame_len(MAX);
    let mut buf = BytesMut::from(data);
    let mut commands: Vec<Command> = Vec::new();
    while let Some(item) = codec.decode(&mut buf).unwrap() {
        assert!(buf.len() <= data.len());
        if let Ok(command) = item {
            commands.push(command);
        }
    }
    assert!(buf.len() <= MAX + 2);
    let _ = codec.decode_eof(&mut buf);

    let mut wire = BytesMut::new();
    for command in &commands {
        QmpCodec::new().encode(command, &mut wire).unwrap();
    }
    let mut codec = ServerCodec::new();
    for command in &commands {
        assert_eq!(&codec.decode(&mut wire).unwrap().unwrap().unwrap(), command);
    }
});
