//! `radd ls` and `radd diff`: read manifests (needs the identity) and list or compare entries.

use std::collections::BTreeMap;

use clap::Args as ClapArgs;
use radd::snapshot::{self, Entry, EntryKind};
use serde::Serialize;

use super::{Args, human_bytes, open_repo, print_json};

/// Arguments of `radd ls`.
#[derive(Debug, ClapArgs)]
pub struct LsArgs {
    /// Snapshot (`latest`, id or prefix).
    pub snapshot: String,
    /// Only this path and what is below it (relative, as stored: e.g. `srv/data`).
    pub path: Option<String>,
}

/// Arguments of `radd diff`.
#[derive(Debug, ClapArgs)]
pub struct DiffArgs {
    /// Older snapshot.
    pub a: String,
    /// Newer snapshot.
    pub b: String,
}

/// One listed entry (the `--json` wire format of `ls`).
#[derive(Debug, Serialize)]
struct Listed<'a> {
    path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    raw_path: Option<&'a String>,
    #[serde(rename = "type")]
    kind: &'static str,
    mode: String,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<String>,
    /// For a tablespace's link `pg_tblspc/<oid>`: the tablespace (oid, name, location).
    #[serde(skip_serializing_if = "Option::is_none")]
    tablespace: Option<&'a radd::pg::Tablespace>,
}

fn kind_name(kind: &EntryKind) -> &'static str {
    match kind {
        EntryKind::Dir => "dir",
        EntryKind::File { .. } => "file",
        EntryKind::Symlink { .. } => "symlink",
        EntryKind::Hardlink { .. } => "hardlink",
    }
}

fn below(entry: &Entry, prefix: Option<&str>) -> bool {
    match prefix.map(|p| p.trim_matches('/')) {
        None | Some("") => true,
        Some(p) => entry.path == p || entry.path.starts_with(&format!("{p}/")),
    }
}

/// Lists a snapshot's entries.
pub async fn ls(args: &Args, a: &LsArgs) -> anyhow::Result<()> {
    let (_, repo) = open_repo(args, true).await?;
    let record = snapshot::resolve(&repo, &a.snapshot).await.map_err(radd::Error::from)?;
    let manifest = snapshot::load_manifest(&repo, &record).await.map_err(radd::Error::from)?;
    let tablespaces = record.pg.as_ref().map(|pg| pg.tablespaces.as_slice()).unwrap_or_default();
    let tablespace_of = |e: &Entry| {
        let oid: u32 = e.path.strip_prefix("pg_tblspc/")?.parse().ok()?;
        tablespaces.iter().find(|t| t.oid == oid)
    };
    let listed: Vec<Listed> = manifest
        .entries
        .iter()
        .filter(|e| below(e, a.path.as_deref()))
        .map(|e| Listed {
            path: &e.path,
            raw_path: e.raw_path.as_ref(),
            kind: kind_name(&e.kind),
            mode: format!("{:04o}", e.mode),
            uid: e.uid,
            gid: e.gid,
            size: e.size,
            mtime: e.mtime,
            target: match &e.kind {
                EntryKind::Symlink { target, .. } => Some(target.clone()),
                EntryKind::Hardlink { entry } => manifest.entries.get(*entry).map(|f| f.path.clone()),
                _ => None,
            },
            tablespace: tablespace_of(e),
        })
        .collect();
    if args.json {
        return print_json(&listed);
    }
    for l in listed {
        let time = chrono::DateTime::from_timestamp(l.mtime, 0)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_default();
        let mut arrow = l.target.map(|t| format!(" -> {t}")).unwrap_or_default();
        if let Some(t) = l.tablespace {
            arrow.push_str(&format!(" [tablespace {:?}]", t.name));
        }
        outln!(
            "{:<8} {} {:>5}:{:<5} {:>10} {} {:?}{arrow}",
            l.kind,
            l.mode,
            l.uid,
            l.gid,
            human_bytes(l.size),
            time,
            l.path
        );
    }
    Ok(())
}

/// What changed for one path between two snapshots.
#[derive(Debug, Serialize)]
struct Change {
    path: String,
    change: &'static str,
}

fn content(manifest: &snapshot::Manifest, e: &Entry) -> Option<(snapshot::FileSum, u64)> {
    match &e.kind {
        EntryKind::File { sum, .. } => Some((*sum, e.size)),
        EntryKind::Hardlink { entry } => manifest.entries.get(*entry).and_then(|f| content(manifest, f)),
        _ => None,
    }
}

/// Compares two snapshots path by path: added, removed, modified (content or type),
/// metadata (mode, owner, mtime).
pub async fn diff(args: &Args, a: &DiffArgs) -> anyhow::Result<()> {
    let (_, repo) = open_repo(args, true).await?;
    let mut manifests = Vec::new();
    for wanted in [&a.a, &a.b] {
        let record = snapshot::resolve(&repo, wanted).await.map_err(radd::Error::from)?;
        manifests.push(snapshot::load_manifest(&repo, &record).await.map_err(radd::Error::from)?);
    }
    let index = |m: &snapshot::Manifest| -> BTreeMap<String, usize> {
        m.entries.iter().enumerate().map(|(i, e)| (e.raw_path.clone().unwrap_or_else(|| e.path.clone()), i)).collect()
    };
    let (old, new) = (index(&manifests[0]), index(&manifests[1]));
    let mut changes = Vec::new();
    for (key, &i) in &old {
        let e = &manifests[0].entries[i];
        match new.get(key).map(|&j| &manifests[1].entries[j]) {
            None => changes.push(Change { path: e.path.clone(), change: "removed" }),
            Some(n) => {
                let modified = kind_name(&e.kind) != kind_name(&n.kind)
                    || content(&manifests[0], e) != content(&manifests[1], n)
                    || matches!((&e.kind, &n.kind), (EntryKind::Symlink { target: t1, .. }, EntryKind::Symlink { target: t2, .. }) if t1 != t2);
                let metadata =
                    (e.mode, e.uid, e.gid, e.mtime, e.mtime_nsec) != (n.mode, n.uid, n.gid, n.mtime, n.mtime_nsec);
                if modified {
                    changes.push(Change { path: e.path.clone(), change: "modified" });
                } else if metadata {
                    changes.push(Change { path: e.path.clone(), change: "metadata" });
                }
            }
        }
    }
    for (key, &j) in &new {
        if !old.contains_key(key) {
            changes.push(Change { path: manifests[1].entries[j].path.clone(), change: "added" });
        }
    }
    changes.sort_by(|x, y| x.path.cmp(&y.path));
    if args.json {
        return print_json(&changes);
    }
    for c in &changes {
        let mark = match c.change {
            "added" => "+",
            "removed" => "-",
            "modified" => "M",
            _ => "m",
        };
        outln!("{mark} {:?}", c.path);
    }
    Ok(())
}
