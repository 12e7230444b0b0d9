//! The limits of QEMU's JSON parser, checked on a command's encoded bytes before it is sent.
//!
//! QEMU's monitor parser (`qobject/json-streamer.c`) refuses a message whose nesting goes
//! deeper than 1024, that has more than 2^21 tokens, or whose tokens add up to 64 MiB or
//! more. Its answer carries no `id` (QEMU never parsed far enough to see one), and the rest
//! of the refused message then yields one more such error per leftover token; so a command
//! QEMU would refuse here is refused by the client instead, and nothing is sent.
//!
//! The check is on the bytes as encoded, the way QEMU counts: every `{`, `}`, `[`, `]`,
//! `:`, `,`, string, number and keyword is one token, its text counts towards the size, and
//! whitespace is neither. It costs nothing for a command of up to 1024 bytes (no limit can
//! be reached), a bracket count for a longer one, and a full scan only when that count
//! could reach the nesting limit or the command has more bytes than the token limit.

use std::fmt;

/// One limit of QEMU's JSON parser, as [`Error::ExceedsParserLimit`](crate::Error) names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParserLimit {
    /// Objects and arrays open at once, over the whole message (QEMU: `MAX_NESTING`):
    /// `{"execute": .., "arguments": {"a": <1022 nested arrays>}}` is the deepest QEMU 7.2
    /// takes.
    NestingDepth,
    /// Tokens in the message (QEMU: `MAX_TOKEN_COUNT`).
    TokenCount,
    /// Bytes of all the message's tokens together, that is its encoded size without
    /// whitespace (QEMU: `MAX_TOKEN_SIZE`, checked against the running total).
    TokenBytes,
}

impl ParserLimit {
    /// The most QEMU 7.2 accepts.
    pub const fn max(self) -> u64 {
        match self {
            Self::NestingDepth => MAX_NESTING as u64,
            Self::TokenCount => MAX_TOKEN_COUNT as u64,
            Self::TokenBytes => MAX_TOKEN_BYTES as u64,
        }
    }
}

impl fmt::Display for ParserLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NestingDepth => "JSON nesting depth",
            Self::TokenCount => "JSON token count",
            Self::TokenBytes => "JSON token bytes",
        })
    }
}

const MAX_NESTING: usize = 1024;
const MAX_TOKEN_COUNT: usize = 1 << 21;
/// QEMU refuses a token when the total so far plus it plus one exceeds 64 MiB.
const MAX_TOKEN_BYTES: usize = (64 << 20) - 1;

/// Checks one encoded command (`bytes`, its line terminator included or not) against the
/// parser's limits: the first one exceeded, with what was found.
pub(crate) fn check(bytes: &[u8]) -> Result<(), (ParserLimit, u64)> {
    if bytes.len() <= MAX_NESTING {
        // Depth needs an opening byte per level, tokens at least a byte each.
        return Ok(());
    }
    let openings = bytes.iter().filter(|&&b| b == b'{' || b == b'[').count();
    if openings <= MAX_NESTING && bytes.len() <= MAX_TOKEN_COUNT {
        // Token bytes are at most the bytes, and the bytes are far below 64 MiB.
        return Ok(());
    }
    let scan = scan(bytes);
    if scan.max_depth > MAX_NESTING {
        return Err((ParserLimit::NestingDepth, scan.max_depth as u64));
    }
    if scan.tokens > MAX_TOKEN_COUNT {
        return Err((ParserLimit::TokenCount, scan.tokens as u64));
    }
    if scan.token_bytes > MAX_TOKEN_BYTES {
        return Err((ParserLimit::TokenBytes, scan.token_bytes as u64));
    }
    Ok(())
}

/// What QEMU's lexer would count in one message.
#[derive(Debug, Default, PartialEq, Eq)]
struct Scan {
    tokens: usize,
    token_bytes: usize,
    max_depth: usize,
}

/// Counts tokens, their bytes and the deepest nesting in `bytes`, which are well-formed
/// JSON as the client encodes it (the scan stays bounded and panic-free on anything).
fn scan(bytes: &[u8]) -> Scan {
    let mut scan = Scan::default();
    let mut depth = 0_usize;
    let mut at = 0;
    while let Some(&byte) = bytes.get(at) {
        let start = at;
        at += 1;
        match byte {
            b' ' | b'\t' | b'\r' | b'\n' => continue,
            b'{' | b'[' => {
                depth += 1;
                scan.max_depth = scan.max_depth.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b':' | b',' => {}
            b'"' => {
                // To the closing quote, stepping over escapes.
                while let Some(&b) = bytes.get(at) {
                    at += 1;
                    match b {
                        b'\\' => at += 1,
                        b'"' => break,
                        _ => {}
                    }
                }
                at = at.min(bytes.len());
            }
            _ => {
                // A number or keyword: up to the next structural byte or whitespace.
                while bytes.get(at).is_some_and(|b| {
                    !matches!(b, b'{' | b'}' | b'[' | b']' | b':' | b',' | b'"' | b' ')
                        && !matches!(b, b'\t' | b'\r' | b'\n')
                }) {
                    at += 1;
                }
            }
        }
        scan.tokens += 1;
        scan.token_bytes += at - start;
    }
    scan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> String {
        format!(
            r#"{{"execute":"query-status","arguments":{{"a":{}0{}}},"id":12}}"#,
            "[".repeat(depth - 2),
            "]".repeat(depth - 2)
        )
    }

    #[test]
    fn the_scan_counts_as_qemus_lexer() {
        let text = br#"{"execute":"x","arguments":{"s":"a\"b\\","n":-1.5e3,"t":true,"l":[null,{}]},"id":7}"#;
        let counted = scan(text);
        // { "execute" : "x" , "arguments" : { "s" : "a\"b\\" , "n" : -1.5e3 , "t" : true ,
        // "l" : [ null , { } ] } , "id" : 7 }
        assert_eq!(counted.tokens, 34);
        assert_eq!(counted.token_bytes, text.len());
        assert_eq!(counted.max_depth, 4);
        let spaced = scan(b"{ \"a\" : [ 1 , 2 ] }\r\n");
        assert_eq!((spaced.tokens, spaced.token_bytes, spaced.max_depth), (9, 11, 2));
    }

    #[test]
    fn nesting_is_refused_one_over_qemus_limit() {
        assert_eq!(scan(nested(1024).as_bytes()).max_depth, 1024);
        assert_eq!(check(nested(1024).as_bytes()), Ok(()));
        assert_eq!(check(nested(1025).as_bytes()), Err((ParserLimit::NestingDepth, 1025)));
        // Brackets inside strings are not nesting.
        let quoted = format!(r#"{{"execute":"x","arguments":{{"a":"{}"}}}}"#, "[".repeat(5000));
        assert_eq!(check(quoted.as_bytes()), Ok(()));
    }

    #[test]
    fn tokens_are_refused_one_over_qemus_limit() {
        // `{"execute":"x","arguments":{"a":[0,...,0],"b":B},"id":1}` has 22 + 2k tokens
        // with `B` = `[]`, 21 + 2k with `B` = `0`.
        let message = |k: usize, b: &str| {
            let zeros = vec!["0"; k].join(",");
            format!(r#"{{"execute":"x","arguments":{{"a":[{zeros}],"b":{b}}},"id":1}}"#)
        };
        let k = ((1 << 21) - 22) / 2;
        assert_eq!(scan(message(k, "[]").as_bytes()).tokens, 1 << 21);
        assert_eq!(check(message(k, "[]").as_bytes()), Ok(()));
        let over = message(k + 1, "0");
        assert_eq!(check(over.as_bytes()), Err((ParserLimit::TokenCount, (1 << 21) + 1)));
    }

    #[test]
    fn token_bytes_are_refused_at_64_mib() {
        let frame = r#"{"execute":"x","arguments":{"a":""},"id":1}"#;
        let message = |total: usize| {
            let text = "x".repeat(total - frame.len());
            format!(r#"{{"execute":"x","arguments":{{"a":"{text}"}},"id":1}}"#) + "\r\n"
        };
        assert_eq!(check(message((64 << 20) - 1).as_bytes()), Ok(()));
        assert_eq!(check(message(64 << 20).as_bytes()), Err((ParserLimit::TokenBytes, 64 << 20)));
    }

    #[test]
    fn small_and_shallow_commands_are_not_scanned_and_garbage_never_panics() {
        assert_eq!(check(b"{\"execute\":\"stop\",\"id\":1}\r\n"), Ok(()));
        for bytes in [&b"\"unterminated \\"[..], b"\\", b"{{{{", b"]]]]", b"1e", b"\"\\"] {
            let _ = scan(bytes);
        }
    }
}
