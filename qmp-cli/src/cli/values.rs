//! Parsers for option values, run by clap: a value they refuse is a usage error (status 2)
//! reported before the command connects to anything or opens anything.
//!
//! Each parser takes any string and never panics (a property test feeds them arbitrary
//! text); what they accept is ready to use as it is: a duration can be added to any clock
//! reading without overflow, a name makes a valid device id, a queue count fits a tap.

use std::path::PathBuf;
use std::time::Duration;

use hostdev::tap::MAX_TAP_QUEUES;
use qmp_hotplug::{DeviceId, MAX_NIC_QUEUES, SECTOR_SIZE, parse_size};

/// The longest duration any option takes: a year. Longer values (`--timeout 1e19`) are
/// taken as this, so that every deadline `now + duration` exists; a year is "no deadline"
/// for every practical purpose.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// The most queues `--queues` takes: a tap opened here has at most [`MAX_TAP_QUEUES`], a
/// NIC at most [`MAX_NIC_QUEUES`].
pub(crate) const MAX_QUEUES: usize =
    if MAX_TAP_QUEUES < MAX_NIC_QUEUES { MAX_TAP_QUEUES } else { MAX_NIC_QUEUES };

/// Parses `--tls-dir`: an existing directory holding `ca-cert.pem`, made absolute (QEMU
/// would read a relative one from its own working directory).
pub(crate) fn parse_tls_dir(text: &str) -> Result<PathBuf, String> {
    let dir =
        std::fs::canonicalize(text).map_err(|error| format!("TLS directory '{text}': {error}"))?;
    if !dir.is_dir() {
        return Err(format!("TLS directory '{text}' is not a directory"));
    }
    if !dir.join("ca-cert.pem").is_file() {
        return Err(format!("TLS directory '{text}' has no ca-cert.pem (the server's CA)"));
    }
    if dir.to_str().is_none() {
        return Err(format!("TLS directory '{text}' is not UTF-8"));
    }
    Ok(dir)
}

/// Parses a disk size (`64M`, `1G`, bytes): positive, whole 512-byte sectors.
pub(crate) fn parse_disk_size(text: &str) -> Result<u64, String> {
    let size = parse_size(text)?;
    if size == 0 || size % SECTOR_SIZE != 0 {
        return Err(format!("'{text}' is not a positive multiple of {SECTOR_SIZE} bytes"));
    }
    Ok(size)
}

/// Parses a number of seconds (`--timeout`, `--wait`): positive and finite; fractions
/// allowed; at least a nanosecond; values over [`MAX_DURATION`] saturate to it.
pub(crate) fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 =
        text.trim().parse().map_err(|_| format!("'{text}' is not a number of seconds"))?;
    if !seconds.is_finite() {
        return Err(format!("'{text}' is not a finite number of seconds"));
    }
    if seconds <= 0.0 {
        return Err(format!("the number of seconds must be more than 0, not {text}"));
    }
    // Finite and positive: only values over `Duration::MAX` fail, and those saturate too.
    let duration = Duration::try_from_secs_f64(seconds).unwrap_or(MAX_DURATION);
    Ok(duration.clamp(Duration::from_nanos(1), MAX_DURATION))
}

/// Parses `--name`: the name part of a device id, by qmp-hotplug's own rules (1 to
/// `qmp_hotplug::MAX_NAME_LEN` ASCII letters, digits or `_`).
pub(crate) fn parse_device_name(text: &str) -> Result<String, String> {
    DeviceId::check_name(text).map_err(|e| e.to_string())?;
    Ok(text.to_owned())
}

/// Parses `--scsi-controller`: a QEMU device id (an ASCII letter, then letters, digits,
/// `_`, `.` or `-`); whether QEMU has it, and of which kind, the add checks.
pub(crate) fn parse_qemu_id(text: &str) -> Result<String, String> {
    let good = text.starts_with(|c: char| c.is_ascii_alphabetic())
        && text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if good {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "'{text}' is not a QEMU id (an ASCII letter, then letters, digits, '_', '.' or '-')"
        ))
    }
}

/// Parses `--queues`: 1 to [`MAX_QUEUES`].
pub(crate) fn parse_queues(text: &str) -> Result<usize, String> {
    let out_of_range = || {
        format!(
            "'{text}' is not a queue count from 1 to {MAX_QUEUES} (a tap has at most \
             {MAX_TAP_QUEUES} queues)"
        )
    };
    let queues: usize = text.trim().parse().map_err(|_| out_of_range())?;
    if (1..=MAX_QUEUES).contains(&queues) { Ok(queues) } else { Err(out_of_range()) }
}

/// Parses `--mac`: six hexadecimal byte pairs separated by `:` or `-`, as QEMU's `mac`
/// property takes them, of a unicast address that is not all zeros (a guest replaces any
/// other by a random one). Returned in QEMU's own spelling, `52:54:00:12:34:56`.
pub(crate) fn parse_mac(text: &str) -> Result<String, String> {
    let malformed =
        || format!("'{text}' is not a MAC address like 52:54:00:12:34:56 (six hex byte pairs)");
    let separator = if text.contains('-') { '-' } else { ':' };
    let bytes = text
        .split(separator)
        .map(|pair| {
            let hex = pair.len() == 2 && pair.bytes().all(|b| b.is_ascii_hexdigit());
            if hex {
                u8::from_str_radix(pair, 16).map_err(|_| malformed())
            } else {
                Err(malformed())
            }
        })
        .collect::<Result<Vec<u8>, String>>()?;
    if bytes.len() != 6 {
        return Err(malformed());
    }
    if bytes[0] & 1 == 1 {
        return Err(format!("{text} is a multicast address; a NIC needs a unicast one"));
    }
    if bytes.iter().all(|&b| b == 0) {
        return Err(format!("{text} is not a usable NIC address"));
    }
    let pairs: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(pairs.join(":"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use qmp_hotplug::DeviceKind;
    use qmp_hotplug::NbdExport;

    /// Text shaped like a number, in every spelling `f64` parses and more.
    fn number_like() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<f64>().prop_map(|f| f.to_string()),
            any::<f64>().prop_map(|f| format!("{f:e}")),
            "[ +-]?[0-9]{0,25}(\\.[0-9]{0,12})?([eE][+-]?[0-9]{1,4})? ?",
            "(inf|infinity|nan|NaN|-inf|\\+inf|0x10|1_000)",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn no_text_makes_a_value_parser_panic(text in any::<String>()) {
            let _ = parse_seconds(&text);
            let _ = parse_device_name(&text);
            let _ = parse_queues(&text);
            let _ = parse_mac(&text);
            let _ = NbdExport::parse_uri(&text);
            let _ = parse_disk_size(&text);
        }

        #[test]
        fn every_accepted_duration_makes_a_deadline(text in number_like()) {
            if let Ok(duration) = parse_seconds(&text) {
                prop_assert!(duration > Duration::ZERO && duration <= MAX_DURATION, "{text}");
                prop_assert!(std::time::Instant::now().checked_add(duration).is_some());
                prop_assert!(tokio::time::Instant::now().checked_add(duration).is_some());
            }
        }

        #[test]
        fn accepted_values_are_usable_as_they_are(
            queues in "[+-]?[0-9]{1,6}",
            mac in "[0-9a-fA-F]{2}([:-][0-9a-fA-FgG]{1,2}){4,6}",
            name in "[a-zA-Z0-9_-]{0,16}",
        ) {
            if let Ok(n) = parse_queues(&queues) {
                prop_assert!((1..=MAX_QUEUES).contains(&n));
            }
            if let Ok(canonical) = parse_mac(&mac) {
                prop_assert_eq!(canonical.len(), 17);
                prop_assert_eq!(parse_mac(&canonical), Ok(canonical.clone()));
                prop_assert_eq!(canonical.to_ascii_lowercase(), canonical);
            }
            if let Ok(name) = parse_device_name(&name) {
                prop_assert!(DeviceId::new(DeviceKind::Disk, &name, 31).is_ok());
            }
        }

        #[test]
        fn uris_of_any_shape_parse_or_say_why(
            uri in "nbd(\\+unix)?://(\\[[0-9a-f:]{0,8}\\]|[a-z0-9.:]{0,10})(:[0-9a-z]{0,6})?(/[a-z?=&/]{0,10})?",
        ) {
            if let Err(why) = NbdExport::parse_uri(&uri) {
                prop_assert!(why.to_string().contains(&uri), "{why}");
            }
        }
    }

    #[test]
    fn seconds_are_positive_finite_and_saturate() {
        assert_eq!(parse_seconds("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_seconds("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_seconds(" 3 "), Ok(Duration::from_secs(3)));
        for bad in ["0", "-0", "-1", "nan", "NaN", "inf", "-inf", "1e400", "soon", ""] {
            assert!(parse_seconds(bad).is_err(), "{bad}");
        }
        for huge in ["1e19", "1e300", "18446744073709551616", "31536001"] {
            assert_eq!(parse_seconds(huge), Ok(MAX_DURATION), "{huge}");
        }
        assert_eq!(parse_seconds("1e-300"), Ok(Duration::from_nanos(1)));
        // The point of the cap: a deadline always exists.
        assert!(std::time::Instant::now().checked_add(MAX_DURATION).is_some());
        assert!(tokio::time::Instant::now().checked_add(MAX_DURATION).is_some());
    }

    #[test]
    fn names_follow_the_device_id_rules() {
        assert_eq!(parse_device_name("web_1").as_deref(), Ok("web_1"));
        assert!(parse_device_name(&"x".repeat(qmp_hotplug::MAX_NAME_LEN)).is_ok());
        for bad in ["", "bad-name", "a b", "ünï", &"x".repeat(qmp_hotplug::MAX_NAME_LEN + 1)] {
            let why = parse_device_name(bad).unwrap_err();
            assert!(why.contains("invalid device name"), "{bad}: {why}");
        }
    }

    #[test]
    fn queues_fit_a_tap_and_a_nic() {
        assert_eq!(parse_queues("1"), Ok(1));
        assert_eq!(parse_queues(&MAX_QUEUES.to_string()), Ok(MAX_QUEUES));
        assert_eq!(MAX_QUEUES, MAX_TAP_QUEUES.min(MAX_NIC_QUEUES));
        for bad in ["0", "-1", "100000", &(MAX_QUEUES + 1).to_string(), "two", "1.5"] {
            assert!(parse_queues(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn macs_are_six_unicast_bytes() {
        assert_eq!(parse_mac("52:54:00:AB:cd:01").as_deref(), Ok("52:54:00:ab:cd:01"));
        assert_eq!(parse_mac("52-54-00-ab-cd-01").as_deref(), Ok("52:54:00:ab:cd:01"));
        for bad in [
            "",
            "zz",
            "52:54:00:12:34",
            "52:54:00:12:34:56:78",
            "52:54:00:12:34:5g",
            "52:54:00:12:34:+5",
            "52:54-00:12:34:56",
            "525400123456",
            "01:00:5e:00:00:01",
            "ff:ff:ff:ff:ff:ff",
            "00:00:00:00:00:00",
        ] {
            assert!(parse_mac(bad).is_err(), "{bad}");
        }
    }
}
