//! The layering the README describes, kept true (issue 17 item 1): every `crate::` path in a
//! module of the library names a module of a lower layer (or its own). `ErrorKind` is a leaf
//! every layer may use; the aggregate `crate::Error` belongs to the top (jobs, daemon). A test,
//! not a convention: an import against the order fails here with the file and line.

use std::path::Path;

/// Low to high. A module may use the ones before it.
const ORDER: &[&str] = &[
    "dio",
    "crypto",
    "progress",
    "faults",
    "pg",
    "config",
    "codec",
    "repo",
    "repository",
    "keyset",
    "archive",
    "snapshot",
    "restore",
    "verify",
    "retention",
    "scratch",
    "drill",
    "events",
    "metrics",
    "preflight",
    "jobs",
    "daemon",
];

/// Modules allowed to use the aggregate error.
const AGGREGATE_USERS: &[&str] = &["jobs", "daemon"];

/// Top-level modules named by `crate::…` paths in `line` (also `use crate::{a, b}`).
fn referenced(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            out.extend(group[..end].split(',').map(|p| p.trim().split("::").next().unwrap_or("").to_owned()));
        } else {
            let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(rest.len());
            let name = &rest[..end];
            // `crate::error::ErrorKind`, `crate::ErrorKind`: the leaf kind, not the aggregate.
            if (name == "error" && rest[end..].starts_with("::ErrorKind")) || name == "ErrorKind" {
                out.push("error::ErrorKind".to_owned());
            } else if name == "Error" || name == "Result" {
                out.push("error".to_owned());
            } else {
                out.push(name.to_owned());
            }
        }
    }
    out
}

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every violation as "file:line: module -> used".
fn violations(src: &Path) -> Vec<String> {
    let mut all = Vec::new();
    files(src, &mut all);
    let mut found = Vec::new();
    for path in all {
        let relative = path.strip_prefix(src).expect("below src");
        let top = relative
            .components()
            .next()
            .expect("a component")
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        let Some(rank) = ORDER.iter().position(|m| *m == top) else { continue };
        let text = std::fs::read_to_string(&path).expect("read source");
        let mut in_tests = false;
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("#[cfg(test)]") {
                // Unit tests may reach anywhere (they build fixtures); they sit at the end of a file.
                in_tests = true;
            }
            if in_tests || code.starts_with("//") {
                continue;
            }
            for used in referenced(code) {
                let allowed = match used.as_str() {
                    "error::ErrorKind" | "" => true,
                    "error" => AGGREGATE_USERS.contains(&top.as_str()),
                    other => other == top || ORDER.iter().position(|m| *m == other).is_some_and(|r| r < rank),
                };
                if !allowed {
                    found.push(format!("{}:{}: {top} -> {used}", relative.display(), n + 1));
                }
            }
        }
    }
    found
}

#[test]
fn imports_point_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs");
    for line in lib.lines().filter_map(|l| l.strip_prefix("pub mod ")) {
        let module = line.trim_end_matches(';');
        assert!(
            ORDER.contains(&module) || ["error", "cli"].contains(&module),
            "module {module} of lib.rs has no place in the layer order of tests/architecture.rs"
        );
    }
    let found = violations(&src);
    assert!(found.is_empty(), "imports against the layer order ({}):\n{}", ORDER.join(" < "), found.join("\n"));
}

#[test]
fn the_check_sees_a_violation() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("pg")).expect("mkdir");
    std::fs::write(
        dir.path().join("pg/mod.rs"),
        "use crate::config::Config;\nuse crate::error::ErrorKind;\nuse crate::{crypto, snapshot};\n",
    )
    .expect("write");
    std::fs::write(dir.path().join("repo.rs"), "fn f() -> crate::Result<()> { Ok(()) }\n").expect("write");
    let found = violations(dir.path());
    assert_eq!(found.len(), 3, "{found:#?}");
    assert!(
        found.iter().any(|v| v.contains("pg -> config"))
            && found.iter().any(|v| v.contains("pg -> snapshot"))
            && found.iter().any(|v| v.contains("repo -> error")),
        "{found:#?}"
    );
}

/// Runs `cargo <args>` on the crate and fails the test with its output and `fix` unless it
/// succeeds: the style and lint gates below.
fn cargo_gate(args: &[&str], component: &str, fix: &str) {
    let out = std::process::Command::new(env!("CARGO"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|e| panic!("run cargo {} (rustup component {component}): {e}", args[0]));
    assert!(
        out.status.success(),
        "cargo {} found problems; {fix}:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One style, checked (issue 17 item 6): `cargo fmt --check` with the checked-in rustfmt.toml
/// passes on the whole crate (library, binary, tests, examples).
#[test]
fn the_crate_is_formatted() {
    cargo_gate(&["fmt", "--check"], "rustfmt", "run `cargo fmt`");
}

/// The lints, checked (issue 17 item 6): `cargo clippy --all-targets -- -D warnings` is clean,
/// with `unwrap()`/`expect()` denied outside tests (src/lib.rs, src/main.rs; clippy.toml allows
/// them in tests). In the default target directory, so the build scripts' outputs (aws-lc's C
/// library) are reused: `cargo test` releases its lock once the tests are built.
#[test]
fn clippy_finds_nothing() {
    cargo_gate(
        &["clippy", "--all-targets", "--quiet", "--", "-D", "warnings"],
        "clippy",
        "fix them (or allow one case with a comment saying why)",
    );
}
