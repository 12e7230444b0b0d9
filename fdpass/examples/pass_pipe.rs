//! Passes a pipe's write end over a socket pair, writes through the received copy, and
//! reads the text back from the pipe's read end.
//!
//! Run with `cargo run -p fdpass --example pass_pipe`.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (sender, receiver) = UnixStream::pair()?;
    let (pipe_read, pipe_write) = nix::unistd::pipe()?;

    // Bytes and descriptor in one sendmsg, as QEMU's `getfd` wants them.
    fdpass::send_all_with_fds(&sender, b"here is a pipe\n", &[pipe_write.as_fd()])?;
    // The copy in flight is now the pipe's only write end.
    drop(pipe_write);

    let mut buf = [0; 64];
    let (n, fds) = fdpass::recv_with_fds(&receiver, &mut buf, 1)?;
    let [write_end] = <[_; 1]>::try_from(fds).map_err(|fds| format!("{} fds", fds.len()))?;
    println!("received {:?} and one descriptor", String::from_utf8_lossy(&buf[..n]));

    // Writing through the received descriptor, then dropping it, closes the last writer.
    File::from(write_end).write_all(b"hello through a passed fd")?;
    let mut text = String::new();
    File::from(pipe_read).read_to_string(&mut text)?;
    println!("read from the pipe: {text:?}");
    assert_eq!(text, "hello through a passed fd");
    Ok(())
}
