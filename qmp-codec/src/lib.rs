//! Sans-IO framing and typed messages for the QEMU Monitor Protocol (QMP).
//!
//! * [`QmpCodec`] is a tokio-util [`Decoder`](tokio_util::codec::Decoder) of
//!   [`ServerMessage`]s and [`Encoder`](tokio_util::codec::Encoder) of [`Command`]s, for the
//!   client side of a QMP socket; [`ServerCodec`] is its mirror for mock servers and proxies.
//! * [`ServerMessage`] is the greeting, a success reply ([`Return`]), an error reply
//!   ([`ErrorReply`]) or an [`Event`]. Payloads stay [`serde_json::Value`]s for raw access.
//! * [`Error`] is one enum for everything; per-message errors are yielded *inside* `Ok` so a
//!   bad line never ends the stream, and memory is bounded by
//!   [`QmpCodec::max_frame_len`] whatever the peer sends.
//!
//! The crate does no I/O: it works on [`bytes::BytesMut`] buffers, so it can be driven by
//! tokio's `FramedRead`, by a blocking loop, or by a fuzzer.
//!
//! ```
//! use bytes::BytesMut;
//! use qmp_codec::{Command, QmpCodec, ServerMessage};
//! use tokio_util::codec::{Decoder, Encoder};
//!
//! let mut codec = QmpCodec::new();
//! let mut wire = BytesMut::from(
//!     &b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 22, \"minor\": 2, \"major\": 7}, \
//!        \"package\": \"\"}, \"capabilities\": [\"oob\"]}}\r\n{\"return\": {}, \"id\": 1}\r\n"[..],
//! );
//! let Some(Ok(ServerMessage::Greeting(greeting))) = codec.decode(&mut wire)? else { panic!() };
//! assert_eq!(greeting.version.qemu.to_string(), "7.2.22");
//! let Some(Ok(ServerMessage::Return(reply))) = codec.decode(&mut wire)? else { panic!() };
//! assert_eq!(reply.id, Some(1.into()));
//!
//! let mut out = BytesMut::new();
//! codec.encode(Command::new("qmp_capabilities").id(1), &mut out)?;
//! assert_eq!(&out[..], b"{\"execute\":\"qmp_capabilities\",\"id\":1}\r\n");
//! # Ok::<(), qmp_codec::Error>(())
//! ```
#![forbid(unsafe_code)]

mod codec;
mod error;
mod message;
mod types;

pub use codec::{
    DEFAULT_MAX_FRAME_LEN, JsonLinesCodec, OVERSIZE_EXCERPT_LEN, QmpCodec, ServerCodec,
};
pub use error::Error;
pub use message::{
    Capability, Command, ErrorClass, ErrorReply, Event, FromLine, Greeting, QemuVersion, QmpError,
    Return, ServerMessage, Timestamp, VersionInfo,
};
pub use types::{AddFdInfo, FdsetFdInfo, FdsetInfo};
