//! The baseline: a minimal blocking QMP loop on a raw unix socket. No JSON parsing: a
//! reply is the next line containing `"return"` (QEMU and the mock put nothing else that
//! way), an event is a line containing `"event"`.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

/// One raw QMP connection.
#[derive(Debug)]
pub struct RawQmp {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
    line: Vec<u8>,
    out: Vec<u8>,
    next_id: u64,
}

/// What a line read from the server was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    /// A successful reply.
    Return,
    /// An event.
    Event,
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

impl RawQmp {
    /// Connects, reads the greeting and sends `qmp_capabilities`, asking for `oob` if `oob`.
    ///
    /// # Errors
    /// On I/O errors, a missing greeting or a refused negotiation.
    pub fn connect(path: &Path, oob: bool) -> io::Result<Self> {
        let stream = UnixStream::connect(path)?;
        let reader = BufReader::with_capacity(64 * 1024, stream.try_clone()?);
        let mut raw = Self { stream, reader, line: Vec::new(), out: Vec::new(), next_id: 0 };
        raw.read_line()?;
        if !raw.line.starts_with(b"{\"QMP\"") {
            return Err(io::Error::other(format!(
                "not a QMP greeting: {}",
                String::from_utf8_lossy(&raw.line)
            )));
        }
        let capabilities: &[u8] = if oob {
            b"{\"execute\":\"qmp_capabilities\",\"arguments\":{\"enable\":[\"oob\"]}}\r\n"
        } else {
            b"{\"execute\":\"qmp_capabilities\"}\r\n"
        };
        raw.stream.write_all(capabilities)?;
        raw.read_reply()?;
        Ok(raw)
    }

    /// Appends `{"execute":"query-status","id":N}\r\n` to the output buffer.
    pub fn queue_query_status(&mut self) {
        self.next_id += 1;
        // Formatted into a buffer first: `write!` on the socket would be one syscall per piece.
        let _ = write!(self.out, "{{\"execute\":\"query-status\",\"id\":{}}}\r\n", self.next_id);
    }

    /// Appends `x-bench-events {"count": count}` to the output buffer.
    pub fn queue_bench_events(&mut self, count: u64) {
        self.next_id += 1;
        let _ = write!(
            self.out,
            "{{\"execute\":\"x-bench-events\",\"arguments\":{{\"count\":{count}}},\"id\":{}}}\r\n",
            self.next_id
        );
    }

    /// Writes everything queued in one `write_all`.
    ///
    /// # Errors
    /// The socket's write error.
    pub fn flush(&mut self) -> io::Result<()> {
        self.stream.write_all(&self.out)?;
        self.out.clear();
        Ok(())
    }

    fn read_line(&mut self) -> io::Result<()> {
        self.line.clear();
        if self.reader.read_until(b'\n', &mut self.line)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "server closed the socket"));
        }
        Ok(())
    }

    /// Reads the next reply or event; an error reply or anything else is an error.
    ///
    /// # Errors
    /// On I/O errors, EOF, an error reply or an unknown line.
    pub fn read(&mut self) -> io::Result<Line> {
        self.read_line()?;
        if self.line.starts_with(b"{\"event\"") || self.line.starts_with(b"{\"timestamp\"") {
            return Ok(Line::Event);
        }
        if contains(&self.line, b"\"return\"") {
            return Ok(Line::Return);
        }
        if contains(&self.line, b"\"event\"") {
            return Ok(Line::Event);
        }
        Err(io::Error::other(format!(
            "unexpected QMP message: {}",
            String::from_utf8_lossy(&self.line)
        )))
    }

    /// Reads lines until a reply, skipping events.
    ///
    /// # Errors
    /// As [`RawQmp::read`].
    pub fn read_reply(&mut self) -> io::Result<()> {
        while self.read()? != Line::Return {}
        Ok(())
    }

    /// One `query-status` round trip.
    ///
    /// # Errors
    /// As [`RawQmp::read`].
    pub fn round_trip(&mut self) -> io::Result<()> {
        self.queue_query_status();
        self.flush()?;
        self.read_reply()
    }

    /// Runs `n` `query-status`, `k` in flight: `k` written at once, then one more per reply.
    ///
    /// # Errors
    /// As [`RawQmp::read`].
    pub fn pipelined(&mut self, n: u64, k: u64) -> io::Result<()> {
        let mut sent = 0;
        while sent < n.min(k) {
            self.queue_query_status();
            sent += 1;
        }
        self.flush()?;
        for _ in 0..n {
            self.read_reply()?;
            if sent < n {
                self.queue_query_status();
                self.flush()?;
                sent += 1;
            }
        }
        Ok(())
    }

    /// Asks for `count` events and reads until the reply; returns the events read.
    ///
    /// # Errors
    /// As [`RawQmp::read`].
    pub fn events(&mut self, count: u64) -> io::Result<u64> {
        self.queue_bench_events(count);
        self.flush()?;
        let mut events = 0;
        while self.read()? == Line::Event {
            events += 1;
        }
        Ok(events)
    }
}
