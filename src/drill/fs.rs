//! File-tree drills: restore the latest (or chosen) fs snapshot into a scratch directory, check
//! every entry against its manifest, and optionally compare files unchanged since the snapshot
//! with the live tree.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Instant;

use super::run::{Shared, choose_snapshot, record};
use super::{CheckStatus, DrillOptions};
use crate::repository::Repository;
use crate::restore::{self, RecoveryTarget, RestoreOptions};
use crate::snapshot::{self, EntryKind, FileSummer, Manifest, SnapshotKind};

/// Runs the fs drill's steps, recording each check.
// Long on purpose: the fs drill steps in their fixed order, each recording its check; split, the order would be spread over many functions.
pub async fn steps(repo: &Repository, options: &DrillOptions, scratch: &Path, progress: &Shared) {
    let def = &options.definition;
    let t = Instant::now();
    let snap = match choose_snapshot(repo, &def.snapshot, SnapshotKind::Fs).await {
        Ok(s) => s,
        Err(e) => return record(progress, "snapshot", CheckStatus::Failed, e.to_string(), t),
    };
    if let Ok(mut p) = progress.lock() {
        p.snapshot_id = Some(snap.id.clone());
    }
    let target = scratch.join("tree");
    let restore_options = RestoreOptions {
        snapshot: snap.id.clone(),
        target: target.clone(),
        recovery: RecoveryTarget::Latest,
        allow_gap: false,
        timeline: None,
        restore_command: String::new(),
        disable_archiving: false,
        include: Vec::new(),
        tablespaces: restore::TablespaceMapping::default(),
        config_dir: None,
        progress: crate::progress::Progress::none(),
    };
    match restore::run(repo, &restore_options).await {
        Ok(r) => record(
            progress,
            "checksums",
            CheckStatus::Passed,
            format!(
                "{} files, {} bytes match their manifest SHA-256 ({} packs read for {} distinct)",
                r.files, r.bytes, r.packs_read, r.packs_distinct
            ),
            t,
        ),
        Err(e) => return record(progress, "checksums", CheckStatus::Failed, e.to_string(), t),
    }
    let t = Instant::now();
    let manifest = match snapshot::load_manifest(repo, &snap).await {
        Ok(m) => m,
        Err(e) => return record(progress, "entries", CheckStatus::Failed, e.to_string(), t),
    };
    let problems = check_entries(&manifest, &target);
    if problems.is_empty() {
        record(
            progress,
            "entries",
            CheckStatus::Passed,
            format!("all {} entries match the manifest (type, mode, size, link target, mtime)", manifest.entries.len()),
            t,
        );
    } else {
        record(
            progress,
            "entries",
            CheckStatus::Failed,
            format!("{} mismatches, first: {}", problems.len(), problems[0]),
            t,
        );
    }
    if snap.partial {
        record(
            progress,
            "complete",
            CheckStatus::Failed,
            format!("snapshot is partial: {}", manifest.unreadable.join("; ")),
            t,
        );
    }
    if def.checks.compare_source {
        let t = Instant::now();
        let (compared, differing) = compare_source(&manifest);
        if differing.is_empty() {
            record(
                progress,
                "compare_source",
                CheckStatus::Passed,
                format!("{compared} files unchanged since the snapshot match the live tree"),
                t,
            );
        } else {
            record(
                progress,
                "compare_source",
                CheckStatus::Failed,
                format!(
                    "{} of {compared} unchanged files differ from the live tree, first: {}",
                    differing.len(),
                    differing[0]
                ),
                t,
            );
        }
    }
}

/// Every restored entry against its manifest entry; returns one line per mismatch.
fn check_entries(manifest: &Manifest, root: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    for entry in &manifest.entries {
        let path = root.join(entry.os_path());
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) => {
                problems.push(format!("{}: {e}", entry.path));
                continue;
            }
        };
        let type_ok = match &entry.kind {
            EntryKind::Dir => meta.is_dir(),
            EntryKind::File { .. } | EntryKind::Hardlink { .. } => meta.is_file(),
            EntryKind::Symlink { target, raw_target } => {
                meta.file_type().is_symlink()
                    && std::fs::read_link(&path)
                        .is_ok_and(|t| t.as_os_str() == snapshot::decode_os(target, raw_target.as_ref()))
            }
        };
        let mode_ok =
            matches!(entry.kind, EntryKind::Symlink { .. }) || meta.permissions().mode() & 0o7777 == entry.mode;
        let size_ok = !meta.is_file() || meta.len() == entry.size;
        let mtime_ok = meta.is_dir() || (meta.mtime(), meta.mtime_nsec()) == (entry.mtime, i64::from(entry.mtime_nsec));
        if !(type_ok && mode_ok && size_ok && mtime_ok) {
            problems.push(format!("{}: restored entry differs (type ok {type_ok}, mode ok {mode_ok}, size ok {size_ok}, mtime ok {mtime_ok})", entry.path));
        }
    }
    problems
}

/// Files whose live size and mtime still equal the snapshot's must have its content.
fn compare_source(manifest: &Manifest) -> (usize, Vec<String>) {
    let mut compared = 0;
    let mut differing = Vec::new();
    for entry in &manifest.entries {
        let EntryKind::File { sum: expected, .. } = &entry.kind else { continue };
        let live = Path::new("/").join(entry.os_path());
        let Ok(meta) = std::fs::metadata(&live) else { continue };
        if meta.len() != entry.size || (meta.mtime(), meta.mtime_nsec()) != (entry.mtime, i64::from(entry.mtime_nsec)) {
            continue;
        }
        compared += 1;
        let mut summer = FileSummer::like(expected);
        let read = std::fs::File::open(&live).and_then(|mut f| {
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = std::io::Read::read(&mut f, &mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                summer.update(&buf[..n]);
            }
        });
        if read.is_err() || summer.finish() != *expected {
            differing.push(live.display().to_string());
        }
    }
    (compared, differing)
}
