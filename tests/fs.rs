//! File-tree snapshots: exact round trips (checked by an independent walk), incremental reads,
//! small uploads for small changes, consistency hooks, and fs drills.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::common::env::{Backend, TestEnv, json, noise, stderr};

fn set_mtime(path: &Path, secs: i64, nsec: i64) {
    let t = nix::sys::time::TimeSpec::new(secs, nsec);
    nix::sys::stat::utimensat(nix::fcntl::AT_FDCWD, path, &t, &t, nix::sys::stat::UtimensatFlags::NoFollowSymlink)
        .expect("utimensat");
}

/// A tree with every kind of entry the issue names.
fn build_tree(root: &Path) {
    let d = |p: &str| root.join(p);
    std::fs::create_dir_all(d("dir/sub")).unwrap();
    std::fs::create_dir_all(d("empty")).unwrap();
    std::fs::create_dir_all(d("private")).unwrap();
    std::fs::write(d("dir/plain.txt"), b"hello radd\n").unwrap();
    std::fs::write(d("dir/sub/data.bin"), noise(3 << 20, 7)).unwrap();
    std::fs::write(d("name with spaces"), b"spaces").unwrap();
    std::fs::write(d("new\nline"), b"newline").unwrap();
    std::fs::write(root.join(OsStr::from_bytes(b"bytes-\xff\xfe-not-utf8")), b"latin").unwrap();
    std::os::unix::fs::symlink("dir/plain.txt", d("relative-link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", d("dangling-link")).unwrap();
    std::fs::hard_link(d("dir/plain.txt"), d("hard-1")).unwrap();
    std::fs::hard_link(d("dir/plain.txt"), d("private/hard-2")).unwrap();
    let sparse = std::fs::File::create(d("sparse")).unwrap();
    sparse.set_len(64 << 20).unwrap();
    drop(sparse);
    let mut f = std::fs::OpenOptions::new().write(true).open(d("sparse")).unwrap();
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(32 << 20)).unwrap();
    std::io::Write::write_all(&mut f, b"island in a sparse file").unwrap();
    drop(f);
    std::fs::set_permissions(d("dir/plain.txt"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::set_permissions(d("name with spaces"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(d("private"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::lchown(d("new\nline"), Some(1234), Some(5678)).unwrap();
    for (i, p) in ["dir/sub/data.bin", "name with spaces", "sparse", "relative-link", "empty"].iter().enumerate() {
        set_mtime(&d(p), 1_600_000_000 + i as i64 * 1000, 123_456_789);
    }
}

/// One line per entry from an independent walk: type, mode, owner, size, mtime, content
/// digest or link target, and the hard-link group (by inode, renamed to first path).
fn describe(root: &Path) -> BTreeMap<Vec<u8>, String> {
    let mut out = BTreeMap::new();
    let mut first_path_of_inode: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    let mut all: Vec<PathBuf> = Vec::new();
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if std::fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p.clone());
            }
            all.push(p);
        }
    }
    all.sort_by(|a, b| a.as_os_str().as_bytes().cmp(b.as_os_str().as_bytes()));
    for p in all {
        let m = std::fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().as_os_str().as_bytes().to_vec();
        let what = if m.file_type().is_symlink() {
            format!("link->{:?}", std::fs::read_link(&p).unwrap())
        } else if m.is_file() {
            let group = first_path_of_inode.entry(m.ino()).or_insert_with(|| rel.clone()).clone();
            let digest = radd::crypto::Digest::sha256(&std::fs::read(&p).unwrap());
            format!("file {} {digest} group={:?}", m.len(), String::from_utf8_lossy(&group))
        } else {
            "dir".to_owned()
        };
        let mtime = if m.is_dir() { String::new() } else { format!("{}.{:09}", m.mtime(), m.mtime_nsec()) };
        let mode = if m.file_type().is_symlink() { 0 } else { m.mode() & 0o7777 };
        out.insert(rel, format!("{what} mode={mode:o} owner={}:{} mtime={mtime}", m.uid(), m.gid()));
    }
    out
}

fn round_trip(backend: Backend) {
    let env = TestEnv::new(backend);
    let src = env.path().join("tree");
    build_tree(&src);
    let snap = json(&env.radd_push(&["--json", "backup", "fs", src.to_str().unwrap(), "--tag", "test"]));
    assert_eq!(snap["partial"], false, "{snap:#}");
    let target = env.path().join("restored");
    let out = env.radd(&["restore", snap["snapshot_id"].as_str().unwrap(), "--target", target.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let restored = target.join(src.strip_prefix("/").unwrap());
    let (want, got) = (describe(&src), describe(&restored));
    assert_eq!(want.len(), got.len(), "entry count differs");
    for (path, line) in &want {
        assert_eq!(got.get(path), Some(line), "entry {:?} differs", String::from_utf8_lossy(path));
    }
    let sparse = std::fs::metadata(restored.join("sparse")).unwrap();
    assert!(sparse.blocks() * 512 < 8 << 20, "sparse file restored dense: {} blocks", sparse.blocks());

    let listed = json(&env.radd_push(&["--json", "snapshots"]));
    assert_eq!(listed[0]["kind"], "fs");
    assert_eq!(listed[0]["tags"][0], "test");
    let ls = json(&env.radd(&["--json", "ls", "latest", &format!("{}/dir", src.strip_prefix("/").unwrap().display())]));
    assert!(
        ls.as_array()
            .unwrap()
            .iter()
            .any(|e| e["path"].as_str().unwrap().ends_with("dir/sub/data.bin") && e["type"] == "file"),
        "{ls:#}"
    );

    // --include restores a subset (with the directories above it).
    let partial = env.path().join("subset");
    let include = format!("{}/dir/sub", src.strip_prefix("/").unwrap().display());
    let out = env.radd(&["restore", "latest", "--target", partial.to_str().unwrap(), "--include", &include]);
    assert!(out.status.success(), "{}", stderr(&out));
    let base = partial.join(src.strip_prefix("/").unwrap());
    assert!(base.join("dir/sub/data.bin").is_file());
    assert!(!base.join("name with spaces").exists());
}

crate::backend_matrix! {
    /// Every kind of entry comes back exactly; `ls` and `--include` see the same tree.
    fn fs_tree_round_trips_exactly(backend) {
        round_trip(backend);
    }
}

#[test]
fn unchanged_tree_is_not_reread_and_one_byte_uploads_little() {
    let env = TestEnv::new(Backend::Local);
    let src = env.path().join("big");
    std::fs::create_dir(&src).unwrap();
    for i in 0..10u64 {
        std::fs::write(src.join(format!("f{i}")), noise(10 << 20, i + 1)).unwrap();
    }
    std::fs::write(src.join("large"), noise(100 << 20, 99)).unwrap();
    // The unchanged-file rule trusts only files whose mtime and ctime are more than a second
    // older than the parent snapshot's start: this wait is what the test is about.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let path = src.to_str().unwrap();
    let first = json(&env.radd_push(&["--json", "backup", "fs", path]));
    let second = json(&env.radd_push(&["--json", "backup", "fs", path]));
    let total = first["total_bytes"].as_u64().unwrap();
    assert!(total >= 200 << 20);
    let (read2, up2) = (second["read_bytes"].as_u64().unwrap(), second["uploaded_bytes"].as_u64().unwrap());
    eprintln!("fs: {total} B tree; unchanged re-run read {read2} B, uploaded {up2} B");
    assert!(read2 * 100 < total, "unchanged re-run read {read2} of {total} bytes");
    assert!(up2 * 100 < total, "unchanged re-run uploaded {up2} of {total} bytes");

    let mut f = std::fs::OpenOptions::new().write(true).open(src.join("large")).unwrap();
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(50 << 20)).unwrap();
    std::io::Write::write_all(&mut f, b"!").unwrap();
    drop(f);
    let third = json(&env.radd_push(&["--json", "backup", "fs", path]));
    let up3 = third["uploaded_bytes"].as_u64().unwrap();
    eprintln!("fs: one changed byte in a 100 MiB file uploaded {up3} B");
    assert!(up3 < 1_000_000, "one changed byte uploaded {up3} bytes");
    let diff = json(&env.radd(&[
        "--json",
        "diff",
        first["snapshot_id"].as_str().unwrap(),
        third["snapshot_id"].as_str().unwrap(),
    ]));
    // Only the changed file (the directories above the root may change metadata: the test
    // writes into them).
    let changes: Vec<_> =
        diff.as_array().unwrap().iter().filter(|c| c["path"].as_str().unwrap().contains("/big/")).collect();
    assert_eq!(changes.len(), 1, "{diff:#}");
    assert!(
        changes[0]["path"].as_str().unwrap().ends_with("big/large") && changes[0]["change"] == "modified",
        "{diff:#}"
    );
}

#[test]
fn failing_pre_hook_means_incident_no_snapshot_and_post_hook_still_runs() {
    let env = TestEnv::new(Backend::Local);
    let src = env.path().join("data");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("a"), b"a").unwrap();
    let marker = env.path().join("post-ran");
    let jobs = format!(
        "\n[[fs]]\nname = \"bad\"\npaths = [\"{src}\"]\npre = \"exit 7\"\npost = \"touch {m}\"\n\n[[fs]]\nname = \"good\"\npaths = [\"{src}\"]\npre = \"true\"\npost = \"touch {m}.good\"\n",
        src = src.display(),
        m = marker.display()
    );
    std::fs::write(&env.push_config, std::fs::read_to_string(&env.push_config).unwrap() + &jobs).unwrap();
    let out = env.radd_push(&["backup", "fs", "--job", "bad"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("pre-hook failed"), "{}", stderr(&out));
    assert!(marker.exists(), "post-hook must run after a failed pre-hook");
    assert_eq!(json(&env.radd_push(&["--json", "snapshots"])).as_array().unwrap().len(), 0);
    let events = json(&env.radd_push(&["--json", "events"]));
    let last = events.as_array().unwrap().last().unwrap().clone();
    assert_eq!((last["kind"].as_str(), last["source"].as_str()), (Some("incident"), Some("backup.fs.bad")), "{last:#}");

    let good = json(&env.radd_push(&["--json", "backup", "fs", "--job", "good"]));
    assert!(env.path().join("post-ran.good").exists());
    let hooks = good["hooks"].as_array().unwrap();
    assert_eq!(hooks.len(), 2);
    assert!(hooks.iter().all(|h| h["exit_code"] == 0), "{good:#}");
    let record = json(&env.radd_push(&["--json", "snapshots"]));
    assert_eq!(record[0]["hooks"][1]["phase"], "post", "hook results belong in the snapshot record");
}

#[test]
fn fs_drill_passes_then_names_the_path_of_a_corrupt_chunk() {
    let env = TestEnv::new(Backend::Local);
    let src = env.path().join("site");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("index.html"), noise(2 << 20, 3)).unwrap();
    assert!(env.radd_push(&["backup", "fs", src.to_str().unwrap()]).status.success());
    std::fs::write(
        env.path().join("drills/fs.toml"),
        "name = \"fs\"\nkind = \"fs\"\n[checks]\ncompare_source = true\n",
    )
    .unwrap();
    let report = json(&env.radd(&["--json", "drill", "run", "fs"]));
    assert_eq!(report["passed"], true, "{report:#}");
    let names: Vec<&str> = report["checks"].as_array().unwrap().iter().map(|c| c["check"].as_str().unwrap()).collect();
    assert_eq!(names, ["checksums", "entries", "compare_source"]);

    env.corrupt_a_pack();
    let out = env.radd(&["--json", "drill", "run", "fs"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let failed =
        report["checks"].as_array().unwrap().iter().find(|c| c["status"] == "failed").cloned().expect("a failed check");
    assert_eq!(failed["check"], "checksums");
    assert!(
        failed["detail"].as_str().unwrap().contains("site/index.html"),
        "the failing path must be named: {failed:#}"
    );
    let events = json(&env.radd(&["--json", "events"]));
    assert_eq!(events.as_array().unwrap().last().unwrap()["kind"], "incident");
    assert!(std::fs::read_dir(env.path().join("scratch")).map(|d| d.count()).unwrap_or(0) == 0, "scratch left behind");
}

/// The manifest's entries live in packs of their own: damage there is reported naming that
/// pack, never read as an empty or shorter snapshot.
#[test]
fn a_damaged_entry_stream_is_an_integrity_error_naming_its_pack() {
    let env = TestEnv::new(Backend::Local);
    let src = env.path().join("tree");
    std::fs::create_dir(&src).unwrap();
    for i in 0..50u64 {
        std::fs::write(src.join(format!("f{i}")), noise(64 << 10, i)).unwrap();
    }
    let snap = json(&env.radd_push(&["--json", "backup", "fs", src.to_str().unwrap()]))["snapshot_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let listed = json(&env.radd(&["--json", "ls", &snap]));
    assert_eq!(
        listed.as_array().unwrap().iter().filter(|e| e["path"].as_str().unwrap().contains("/tree/f")).count(),
        50,
        "{listed:#}"
    );

    // The entry stream is the small pack beside the 3 MiB of file content.
    let smallest = std::fs::read_dir(env.local_object("packs"))
        .unwrap()
        .filter_map(Result::ok)
        .min_by_key(|e| e.metadata().unwrap().len())
        .unwrap()
        .path();
    let mut data = std::fs::read(&smallest).unwrap();
    let middle = data.len() / 2;
    data[middle] ^= 0x01;
    std::fs::set_permissions(&smallest, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&smallest, data).unwrap();
    let pack = format!("packs/{}", smallest.file_name().unwrap().to_str().unwrap());

    let ls = env.radd(&["ls", &snap]);
    assert_eq!(ls.status.code(), Some(3), "{}", stderr(&ls));
    assert!(stderr(&ls).contains(&pack), "the damaged pack is named: {}", stderr(&ls));
    let verify = env.radd(&["verify"]);
    assert_eq!(verify.status.code(), Some(3), "{}", stderr(&verify));
    assert!(stderr(&verify).contains(&pack), "{}", stderr(&verify));
}

/// Repositories created before keyed BLAKE3 ids (format 1, HMAC-SHA256) keep working: backups,
/// dedup against their own chunks, restore and verify.
#[test]
fn a_format_1_repository_still_backs_up_restores_and_verifies() {
    let env = TestEnv::new(Backend::Local);
    env.make_format(1);

    let src = env.path().join("old");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("a"), noise(1 << 20, 1)).unwrap();
    let first = json(&env.radd_push(&["--json", "backup", "fs", src.to_str().unwrap()]));
    std::fs::write(src.join("b"), noise(1 << 20, 1)).unwrap();
    let second = json(&env.radd_push(&["--json", "backup", "fs", "--full-read", src.to_str().unwrap()]));
    assert_eq!(second["new_bytes"], 0, "same content, same HMAC ids: {second:#}");
    let target = env.path().join("back");
    let restore = env.radd(&["restore", second["snapshot_id"].as_str().unwrap(), "--target", target.to_str().unwrap()]);
    assert!(restore.status.success(), "{}", stderr(&restore));
    let restored = target.join(src.strip_prefix("/").unwrap());
    assert_eq!(std::fs::read(restored.join("b")).unwrap(), noise(1 << 20, 1));
    let verify = env.radd(&["verify", "--read-data"]);
    assert!(verify.status.success(), "{}", stderr(&verify));
    assert!(first["snapshot_id"].is_string());
}
