//! HMP's error texts. `human-monitor-command` returns whatever HMP printed as a
//! *successful* reply, errors included; [`Client::hmp`](crate::Client::hmp) (and the
//! blocking client's) turns the texts in [`ERROR_SHAPES`] into
//! [`Error::Hmp`](crate::Error::Hmp) and returns anything else.
//!
//! Many HMP commands print text when they succeed: every `info ...`, `help`, `x`/`xp`
//! (memory dumps), `i` (port reads), `print`, `sum`, `calc_dirty_rate`, `drive_add`
//! (`OK`), `log` (its item list); most others print nothing. So only the known shapes count
//! as errors, matched on the first line (and the `Try "help ..."` line anywhere), and any
//! other text is returned as output. A new QEMU may word an error differently: an
//! unrecognised error then comes back as text, never a success turned into an error.

/// How an HMP error text is recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Pattern {
    /// The first line starts with this.
    Prefix(&'static str),
    /// The first line starts with this, in any letter case.
    PrefixAnyCase(&'static str),
    /// The first line starts with the first text and ends with the second.
    Around(&'static str, &'static str),
    /// Some line starts with this.
    Line(&'static str),
}

/// One known HMP error text.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct ErrorShape {
    /// How it is recognised.
    pub pattern: Pattern,
    /// A text QEMU printed (without its final line end).
    pub example: &'static str,
    /// The command line that printed it.
    pub produced_by: &'static str,
    /// The QEMU version it was seen on.
    pub seen_on: &'static str,
}

/// Every HMP error text this crate recognises, each seen on a real QEMU (the test
/// `every_hmp_error_shape_is_what_qemu_prints` in `tests/qemu.rs` produces each one
/// but the image-lock error, which needs another process holding the image).
pub static ERROR_SHAPES: &[ErrorShape] = &[
    ErrorShape {
        pattern: Pattern::Prefix("unknown command:"),
        example: "unknown command: 'no_such_hmp'",
        produced_by: "no_such_hmp",
        seen_on: "7.2.22",
    },
    ErrorShape {
        // Every command that reports a QMP-style error (`hmp_handle_error`).
        pattern: Pattern::Prefix("Error: "),
        example: "Error: Device 'nope' not found",
        produced_by: "device_del nope",
        seen_on: "7.2.22",
    },
    ErrorShape {
        pattern: Pattern::Around("Device '", "' not found"),
        example: "Device 'nope' not found",
        produced_by: "drive_del nope",
        seen_on: "7.2.22",
    },
    ErrorShape {
        pattern: Pattern::Around("Node ", " is in use"),
        example: "Node n1 is in use",
        produced_by: "drive_del n1 (a blockdev-add node a device uses)",
        seen_on: "7.2.22",
    },
    ErrorShape {
        pattern: Pattern::Prefix("Could not "),
        example: "Could not open '/nonexistent': No such file or directory",
        produced_by: "drive_add 0 if=none,id=x,file=/nonexistent",
        seen_on: "7.2.22",
    },
    ErrorShape {
        pattern: Pattern::Prefix("Failed to "),
        example: "Failed to get \"write\" lock",
        // Not reproduced by the real-QEMU test (see there): its text is unit-tested.
        produced_by: "drive_add 0 if=none,id=x,file=IMAGE,format=raw (an image in use)",
        seen_on: "7.2.22",
    },
    ErrorShape {
        // `Invalid boot device 'x'`, `invalid cache option`, `invalid parameter value: x`,
        // `invalid parameter: x`, `Invalid node-name: '1bad'`, `invalid CPU index`.
        pattern: Pattern::PrefixAnyCase("invalid "),
        example: "Invalid boot device 'x'",
        produced_by: "boot_set x",
        seen_on: "7.2.22",
    },
    ErrorShape {
        pattern: Pattern::Prefix("Duplicate ID "),
        example: "Duplicate ID 'drv0' for drive",
        produced_by: "drive_add 0 if=none,id=drv0,... (drv0 exists)",
        seen_on: "7.2.22",
    },
    ErrorShape {
        pattern: Pattern::Prefix("Unknown driver "),
        example: "Unknown driver 'nosuch'",
        produced_by: "drive_add 0 if=none,id=x,file=IMAGE,format=nosuch",
        seen_on: "7.2.22",
    },
    ErrorShape {
        pattern: Pattern::Prefix("A block device must be specified"),
        example: "A block device must be specified for \"file\"",
        produced_by: "drive_add 0 if=none,id=q,format=raw",
        seen_on: "7.2.22",
    },
    ErrorShape {
        pattern: Pattern::Prefix("Can't hot-add drive"),
        example: "Can't hot-add drive to type 1",
        produced_by: "drive_add 0 id=r2",
        seen_on: "7.2.22",
    },
    ErrorShape {
        // HMP's argument parser: the reason on the first line, this on the last.
        pattern: Pattern::Line("Try \"help "),
        example: "stop|s: extraneous characters at the end of line\r\nTry \"help stop\" for more information",
        produced_by: "stop x",
        seen_on: "7.2.22",
    },
];

impl Pattern {
    fn matches(self, first_line: &str, text: &str) -> bool {
        match self {
            Self::Prefix(prefix) => first_line.starts_with(prefix),
            Self::PrefixAnyCase(prefix) => first_line
                .get(..prefix.len())
                .is_some_and(|start| start.eq_ignore_ascii_case(prefix)),
            Self::Around(start, end) => {
                first_line.len() >= start.len() + end.len()
                    && first_line.starts_with(start)
                    && first_line.ends_with(end)
            }
            Self::Line(prefix) => text.lines().any(|line| line.starts_with(prefix)),
        }
    }
}

/// The known error shape `text` (HMP's output) has, if any.
pub fn error_shape(text: &str) -> Option<&'static ErrorShape> {
    let first_line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    ERROR_SHAPES.iter().find(|known| known.pattern.matches(first_line, text))
}

/// HMP's `text` as an error message, if it has one of the known error shapes: the text
/// without its trailing line end, its lines joined by `\n`.
pub fn error_message(text: &str) -> Option<String> {
    error_shape(text).map(|_| {
        let lines: Vec<&str> = text.lines().map(|line| line.trim_end_matches('\r')).collect();
        lines.join("\n").trim_end().to_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_example_is_recognised_by_its_own_shape() {
        for known in ERROR_SHAPES {
            let text = format!("{}\r\n", known.example);
            assert!(std::ptr::eq(error_shape(&text).unwrap(), known), "{known:?}");
            assert_eq!(
                error_message(&text).as_deref(),
                Some(known.example.replace("\r\n", "\n").as_str()),
                "{known:?}"
            );
        }
    }

    #[test]
    fn each_shape_as_qemu_prints_it() {
        let cases = [
            ("unknown command: 'nonsense_cmd'\r\n", "unknown command: 'nonsense_cmd'"),
            ("Error: Device 'nope' not found\r\n", "Error: Device 'nope' not found"),
            ("Device 'nope' not found\r\n", "Device 'nope' not found"),
            ("Node n1 is in use\r\n", "Node n1 is in use"),
            (
                "Could not open '/nonexistent': No such file or directory\r\n",
                "Could not open '/nonexistent': No such file or directory",
            ),
            (
                "Failed to get \"write\" lock\r\nIs another process using the image [/a.raw]?\r\n",
                "Failed to get \"write\" lock\nIs another process using the image [/a.raw]?",
            ),
            ("Invalid boot device 'x'\r\n", "Invalid boot device 'x'"),
            ("invalid cache option\r\n", "invalid cache option"),
            ("invalid parameter value: bogus\r\n", "invalid parameter value: bogus"),
            ("Duplicate ID 'drv0' for drive\r\n", "Duplicate ID 'drv0' for drive"),
            ("Unknown driver 'nosuch'\r\n", "Unknown driver 'nosuch'"),
            (
                "A block device must be specified for \"file\"\r\n",
                "A block device must be specified for \"file\"",
            ),
            ("Can't hot-add drive to type 1\r\n", "Can't hot-add drive to type 1"),
            (
                "loadvm: string expected\r\nTry \"help loadvm\" for more information\r\n",
                "loadvm: string expected\nTry \"help loadvm\" for more information",
            ),
        ];
        for (text, message) in cases {
            assert_eq!(error_message(text).as_deref(), Some(message), "{text:?}");
        }
    }

    #[test]
    fn output_of_successful_commands_is_not_an_error() {
        for text in [
            "",
            "OK\r\n",
            "7.2.22Debian 1:7.2+dfsg-7+deb12u18+b3\r\n",
            "  Bus  0, device   0, function 0:\r\n    Host bridge: PCI device 8086:1237\r\n",
            "VM status: paused (prelaunch)\r\n",
            "portl[0x0000] = 0x00000000\r\n",
            "Starting dirty rate measurement with period 1 seconds\r\n",
            // Not the shapes: an id with the words in it, a device found.
            "Device 'x' not found here, but\r\n",
            "drv0 (#block123): a.raw (raw)\r\n    Attached to: Device 'x' not found\r\n",
            "Node n1\r\n",
            "invalid\r\n",
        ] {
            assert_eq!(error_message(text), None, "{text:?}");
        }
    }
}
