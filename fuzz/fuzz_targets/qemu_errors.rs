//! QEMU's error texts, through both tables that recognise them: qmp-hotplug's
//! `qemu_errors` (QMP `GenericError` descriptions and HMP texts whose subject matters) and
//! qmp-client's HMP error check (`hmp::ERROR_SHAPES`). The input is the text, and the
//! subject built into every entry's fixed text.
//!
//! Checked: no panic; whatever matches carries the entry's fixed text where the entry says
//! (checked against a model written here, not by calling the matcher again); the client's
//! first matching shape is the one reported; its message has the fixed text, no CRLF and
//! no trailing blank; every entry's fixed text around any subject (that does not itself
//! hold the closing text) gives that subject back; every HMP `drive_del` error is an error
//! to the client; and each table's samples match their own entries. The first two bytes
//! also cut a slice out of every HMP shape's fixed text, for the texts that almost match.
#![no_main]

use std::sync::Once;

use libfuzzer_sys::fuzz_target;
use qmp_client::hmp::{self, ERROR_SHAPES, Pattern};
use qmp_codec::ErrorClass;
use qmp_hotplug::qemu_errors::{ALL, Channel, KnownError};

static SAMPLES: Once = Once::new();

/// Each entry of both tables recognises its own sample.
fn samples_match_their_entries() {
    for entry in ALL {
        let subject = entry.subject(entry.sample);
        assert!(subject.is_some_and(|s| !s.is_empty()), "{}: {:?}", entry.name, entry.sample);
        if entry.channel == Channel::Hmp {
            let output = format!("{}\r\n", entry.sample);
            assert!(entry.is_hmp_about(&output, subject.unwrap()), "{}", entry.name);
        } else {
            assert!(entry.matches(&ErrorClass::GenericError, entry.sample), "{}", entry.name);
        }
    }
    for shape in ERROR_SHAPES {
        let text = format!("{}\r\n", shape.example);
        let found = hmp::error_shape(&text).expect(shape.example);
        assert!(std::ptr::eq(found, shape), "{:?} is {:?}'s", shape.example, found.pattern);
    }
}

/// `text` as one of `entry`'s: what `subject` found must sit between the fixed texts.
fn check_known_error(entry: &KnownError, text: &str) {
    let (before, after) = entry.around_subject();
    let subject = entry.subject(text);
    if let Some(subject) = subject {
        assert!(!subject.is_empty(), "{}: empty subject in {text:?}", entry.name);
        let rest = text.strip_prefix(before).expect("a subject follows the text before it");
        assert!(rest.starts_with(subject), "{}: {subject:?} not first in {text:?}", entry.name);
        if !after.is_empty() {
            assert_eq!(rest.find(after), Some(subject.len()), "{}: {text:?}", entry.name);
        }
    }
    let is_qmp = entry.channel == Channel::GenericError;
    assert_eq!(entry.matches(&ErrorClass::GenericError, text), is_qmp && subject.is_some());
    assert!(!entry.matches(&ErrorClass::DeviceNotFound, text), "another class never matches");
    if let Some(subject) = entry.subject(text.trim()) {
        if entry.is_hmp_about(text, subject) {
            assert_eq!(entry.channel, Channel::Hmp);
            assert_eq!(text.trim(), format!("{before}{subject}{after}"), "{}", entry.name);
        }
    }
}

/// The entry's fixed text around `subject` gives `subject` back, unless `subject` holds
/// the closing text itself; an HMP one is about exactly `subject`, and an error to the
/// client's check.
fn check_built(entry: &KnownError, subject: &str) {
    let (before, after) = entry.around_subject();
    let built = format!("{before}{subject}{after}");
    let closes_at_end =
        after.is_empty() || format!("{subject}{after}").find(after) == Some(subject.len());
    if subject.is_empty() || !closes_at_end {
        return;
    }
    assert_eq!(entry.subject(&built), Some(subject), "{}: {built:?}", entry.name);
    if entry.channel == Channel::Hmp {
        let output = format!("{built}\r\n");
        if built.trim() == built {
            assert!(entry.is_hmp_about(&output, subject), "{}: {output:?}", entry.name);
        }
        if !subject.contains('\n') {
            assert!(hmp::error_shape(&output).is_some(), "not an HMP error: {output:?}");
        }
    }
}

/// HMP's first line as the client reads it: up to the first `\n`, without trailing `\r`s.
fn first_line(text: &str) -> &str {
    text.split('\n').next().unwrap_or("").trim_end_matches('\r')
}

/// A model of one shape's match, from its documentation.
fn shape_matches(pattern: Pattern, text: &str) -> bool {
    let first = first_line(text);
    match pattern {
        Pattern::Prefix(prefix) => first.starts_with(prefix),
        Pattern::PrefixAnyCase(prefix) => first
            .as_bytes()
            .get(..prefix.len())
            .is_some_and(|start| start.eq_ignore_ascii_case(prefix.as_bytes())),
        Pattern::Around(start, end) => {
            first.len() >= start.len() + end.len()
                && first.starts_with(start)
                && first.ends_with(end)
        }
        Pattern::Line(prefix) => text.split('\n').any(|line| line.starts_with(prefix)),
        _ => unreachable!("a pattern this target does not know: {pattern:?}"),
    }
}

fn check_hmp(text: &str) {
    let expected = ERROR_SHAPES.iter().find(|shape| shape_matches(shape.pattern, text));
    let found = hmp::error_shape(text);
    assert_eq!(found.map(|s| s.example), expected.map(|s| s.example), "{text:?}");
    let message = hmp::error_message(text);
    assert_eq!(message.is_some(), found.is_some());
    let (Some(shape), Some(message)) = (found, message) else { return };
    assert!(!message.contains("\r\n"), "{message:?}");
    assert_eq!(message.trim_end(), message);
    let has = match shape.pattern {
        Pattern::Prefix(prefix) => message.starts_with(prefix.trim_end()),
        Pattern::PrefixAnyCase(prefix) => {
            let prefix = prefix.trim_end();
            message
                .as_bytes()
                .get(..prefix.len())
                .is_some_and(|s| s.eq_ignore_ascii_case(prefix.as_bytes()))
        }
        Pattern::Around(start, end) => message.starts_with(start) && message.contains(end),
        Pattern::Line(prefix) => message.contains(prefix.trim_end()),
        _ => unreachable!(),
    };
    assert!(has, "{message:?} lacks {:?}'s text", shape.pattern);
}

fuzz_target!(|data: &[u8]| {
    SAMPLES.call_once(samples_match_their_entries);
    let Ok(text) = std::str::from_utf8(data) else { return };
    check_hmp(text);
    for entry in &ALL {
        check_known_error(entry, text);
        check_built(entry, text);
    }
    // Each shape's fixed texts with a slice cut out where the input says: the texts that
    // almost match (an overlapping start and end, a shortened prefix).
    if let [from, to, ..] = data {
        for shape in ERROR_SHAPES {
            let fixed = match shape.pattern {
                Pattern::Around(start, end) => format!("{start}{end}"),
                Pattern::Prefix(text) | Pattern::PrefixAnyCase(text) | Pattern::Line(text) => {
                    text.to_owned()
                }
                _ => continue,
            };
            let from = usize::from(*from) % (fixed.len() + 1);
            let to = (from + usize::from(*to) % 4).min(fixed.len());
            if fixed.is_char_boundary(from) && fixed.is_char_boundary(to) {
                check_hmp(&format!("{}{}\r\n", &fixed[..from], &fixed[to..]));
            }
        }
    }
    for shape in ERROR_SHAPES {
        if let Pattern::Prefix(prefix) | Pattern::PrefixAnyCase(prefix) = shape.pattern {
            let built = format!("{prefix}{text}");
            assert!(hmp::error_shape(&built).is_some(), "{built:?}");
            check_hmp(&built);
        }
    }
});
