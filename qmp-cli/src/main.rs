//! `qmp`: a command-line QMP client (work in progress).
#![forbid(unsafe_code)]

fn main() {}
