//! Fixed work for instruction counting, run under callgrind by
//! `scripts/bench-schema-callgrind` as `MODE ROUNDS`. MODE is `value` (`serde_json` parse of
//! the real 207 KB schema reply), `schema` (`Schema::from_slice` of it), or the bench name of
//! one of the typical checks in `common/typical.rs` (the schema is built once, then the check
//! repeated). The script runs each mode at two round counts and divides the difference,
//! which removes start-up. Seconds are for `benches/schema.rs`.

use std::hint::black_box;

use qmp_schema::Schema;
use serde_json::Value;

#[path = "common/typical.rs"]
mod typical;

const SCHEMA: &[u8] = include_bytes!("../tests/data/qemu-7.2-schema.json");

fn main() {
    // cargo passes `--bench` (and harness flags under `cargo test`): skip flags.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let mode = args.first().map_or("value", String::as_str);
    let rounds: usize = args.get(1).and_then(|r| r.parse().ok()).unwrap_or(1);
    match mode {
        "value" => {
            for _ in 0..rounds {
                black_box(serde_json::from_slice::<Value>(black_box(SCHEMA)).unwrap());
            }
        }
        "schema" => {
            for _ in 0..rounds {
                black_box(Schema::from_slice(black_box(SCHEMA)).unwrap());
            }
        }
        check => {
            let schema = Schema::from_slice(SCHEMA).unwrap();
            let Some((_, command, arguments)) =
                typical::typical_checks().into_iter().find(|(name, ..)| *name == check)
            else {
                panic!("unknown mode {check}: value, schema or a typical check's name")
            };
            for _ in 0..rounds {
                black_box(schema.check(black_box(command), Some(black_box(&arguments))));
            }
        }
    }
}
