//! `qmp events [--filter NAME]... [--count N]`.

use std::pin::pin;

use qmp_client::{DisconnectReason, Error, EventFilter, EventItem};

use crate::cli::{EventsArgs, GlobalArgs};
use crate::exit::Failure;
use crate::output;

/// Prints matching events, one JSON object per line, until `--count`, `--timeout` (in
/// total), Ctrl-C or the end of the connection.
///
/// # Errors
/// Status 3 when the connection ends, or when `--timeout` passes before `--count` events.
pub(crate) async fn run(global: &GlobalArgs, args: &EventsArgs) -> Result<(), Failure> {
    // The listening deadline counts from the start, so connecting is part of it. `--timeout`
    // is at most a year, so the deadline exists; were it ever out of the clock's range,
    // there would be none.
    let deadline = global.timeout.and_then(|t| tokio::time::Instant::now().checked_add(t));
    let client = crate::connect::connect(global).await?;
    let filter = if args.filter.is_empty() {
        EventFilter::all()
    } else {
        EventFilter::names(args.filter.iter().cloned())
    };
    let mut subscription = client.subscribe(filter);
    let mut interrupted = pin!(async {
        // Without a Ctrl-C handler (cannot happen on Linux), Ctrl-C just kills the process.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    });
    let mut expired = pin!(async {
        match deadline {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    });
    let mut seen: u64 = 0;
    loop {
        tokio::select! {
            item = subscription.recv() => match item {
                Some(EventItem::Event(event)) => {
                    output::print_line(&output::event_json(&event))?;
                    seen += 1;
                    if args.count.is_some_and(|count| seen >= count) {
                        return Ok(());
                    }
                }
                Some(EventItem::Lagged(n)) => {
                    output::print_stderr(&format!(
                        "qmp: lagged: {n} events dropped (the output could not keep up)"
                    ));
                }
                Some(EventItem::Gap(reason)) => {
                    output::print_stderr(&format!(
                        "qmp: gap: the connection was lost and re-established ({reason}); \
                         events in between were missed"
                    ));
                }
                // A marker this version does not know: nothing to print.
                Some(_) => {}
                None => {
                    let error = client
                        .close_error()
                        .unwrap_or(Error::Disconnected(DisconnectReason::Eof));
                    return Err(Failure::from_client(&error));
                }
            },
            () = &mut expired => {
                return match args.count {
                    Some(count) => Err(Failure::connection(format!(
                        "timed out: {seen} of {count} events within {:?}",
                        global.command_timeout()
                    ))),
                    None => Ok(()),
                };
            }
            () = &mut interrupted => return Ok(()),
        }
    }
}
