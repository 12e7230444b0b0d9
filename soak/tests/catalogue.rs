//! The README's bad-input catalogue cannot rot: every test it names must exist, as a test,
//! in the file it names, and it keeps at least 60 entries, each with a test.

use std::path::Path;

const SECTION: &str = "## Bad-input catalogue";

/// The named tests (`path::name`) of each numbered row of the catalogue's table.
fn catalogue_rows(readme: &str) -> Vec<(u32, Vec<(String, String)>)> {
    let start = readme.find(SECTION).expect("the README has a bad-input catalogue");
    let section = &readme[start + SECTION.len()..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    let mut rows = Vec::new();
    for line in section.lines() {
        let cells: Vec<&str> = line.split(" | ").collect();
        let Some(number) = line.strip_prefix("| ").and_then(|rest| rest.split(' ').next()) else {
            continue;
        };
        let Ok(number) = number.parse::<u32>() else { continue };
        let last = cells.last().expect("a table row has cells").trim_end_matches(" |");
        let tests = last
            .split('`')
            .skip(1)
            .step_by(2)
            .map(|named| {
                let (path, name) = named
                    .rsplit_once("::")
                    .unwrap_or_else(|| panic!("entry {number}: `{named}` is not file::test_name"));
                (path.to_owned(), name.to_owned())
            })
            .collect();
        rows.push((number, tests));
    }
    rows
}

/// Whether `source` defines `name` as a test: `fn name(` with a test attribute (`#[test]`,
/// also inside `proptest!`, or `#[tokio::test]`) in the few lines before it.
fn defines_test(source: &str, name: &str) -> bool {
    let lines: Vec<&str> = source.lines().collect();
    lines.iter().enumerate().any(|(index, line)| {
        let defines =
            line.trim_start().trim_start_matches("async ").starts_with(&format!("fn {name}("));
        defines
            && lines[index.saturating_sub(4)..index]
                .iter()
                .any(|before| before.contains("#[test]") || before.contains("::test"))
    })
}

#[test]
fn every_catalogued_test_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let rows = catalogue_rows(&readme);
    assert!(rows.len() >= 60, "the catalogue has {} entries, fewer than 60", rows.len());
    let mut missing = Vec::new();
    for (expected, (number, tests)) in (1..).zip(&rows) {
        assert_eq!(*number, expected, "entries are numbered 1, 2, 3...");
        assert!(!tests.is_empty(), "entry {number} names no test");
        for (path, name) in tests {
            match std::fs::read_to_string(root.join(path)) {
                Ok(source) if defines_test(&source, name) => {}
                Ok(_) => missing.push(format!("entry {number}: no test {name} in {path}")),
                Err(error) => missing.push(format!("entry {number}: {path}: {error}")),
            }
        }
    }
    assert!(
        missing.is_empty(),
        "the catalogue names tests that do not exist:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_check_notices_a_missing_test_and_a_missing_file() {
    let readme = format!(
        "{SECTION}\n\n| # | side | x | y | test |\n| --- |\n\
         | 1 | server | a | b | `soak/tests/catalogue.rs::every_catalogued_test_exists` |\n\
         | 2 | host | a | b | `soak/tests/catalogue.rs::no_such_test`; `nowhere.rs::x` |\n\n## Next\n| 3 | no |\n"
    );
    let rows = catalogue_rows(&readme);
    assert_eq!(rows.len(), 2, "rows after the section do not count");
    let source = include_str!("catalogue.rs");
    assert!(defines_test(source, &rows[0].1[0].1));
    assert!(!defines_test(source, &rows[1].1[0].1));
    assert!(!defines_test(source, "catalogue_rows"), "a helper is no test");
    assert_eq!(rows[1].1[1], ("nowhere.rs".to_owned(), "x".to_owned()));
}
