//! Arbitrary bytes as one server message: no panic, and whatever parses survives a round
//! trip through its wire form unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qmp_codec::ServerMessage;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = ServerMessage::from_slice(data) {
        let wire = serde_json::to_vec(&message).unwrap();
        let again = ServerMessage::from_slice(&wire).unwrap();
        assert_eq!(again, message);
    }
});
