//! Arbitrary JSON values for the targets that check a JSON reader against serde_json
//! (`args_json`, `shell_line`). Each includes this file with `#[path]`: the fuzz crate is
//! binaries only.

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use serde_json::{Map, Number, Value};

/// A value at most `depth` containers deep: every JSON kind, with numbers unsigned,
/// negative and fractional.
pub fn value(u: &mut Unstructured, depth: u32) -> Result<Value> {
    let pick = if depth == 0 { u.int_in_range(0..=5)? } else { u.int_in_range(0..=7)? };
    Ok(match pick {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => Value::from(u.arbitrary::<u64>()?),
        3 => Value::from(u.arbitrary::<i64>()?),
        4 => Number::from_f64(u.arbitrary()?).map_or(Value::Null, Value::Number),
        5 => Value::String(u.arbitrary()?),
        6 => {
            let count = u.int_in_range(0..=4)?;
            Value::Array((0..count).map(|_| value(u, depth - 1)).collect::<Result<_>>()?)
        }
        _ => Value::Object(object(u, depth - 1)?),
    })
}

/// An object of up to four members whose values are at most `depth` containers deep.
pub fn object(u: &mut Unstructured, depth: u32) -> Result<Map<String, Value>> {
    let count = u.int_in_range(0..=4)?;
    let mut map = Map::new();
    for _ in 0..count {
        map.insert(u.arbitrary()?, value(u, depth)?);
    }
    Ok(map)
}
