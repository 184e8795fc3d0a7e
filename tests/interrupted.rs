//! Work killed with -9 leaves nothing that blocks or fills the disk (issue 13, items 5 and 8): a
//! rerun of a killed restore into the same target succeeds and removes the dead run's staging.

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use crate::common::env::{Backend, TestEnv, radd_binary, sql, stderr, switch_and_wait_archived};

fn staging_dirs(env: &TestEnv, name: &str) -> Vec<String> {
    std::fs::read_dir(env.path())
        .expect("test dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!(".{name}.radd-restore-")))
        .collect()
}

#[test]
fn a_restore_killed_midway_can_be_rerun_into_the_same_target() {
    let env = TestEnv::new(Backend::Local);
    let source = env.source_cluster();
    sql(
        &source,
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) || md5((g + 1)::text) AS v FROM generate_series(1, 600000) g",
    );
    let backup = env.radd_push(&["backup", "pg"]);
    assert!(backup.status.success(), "backup: {}", stderr(&backup));
    switch_and_wait_archived(&source);

    let target = env.path().join("restored");
    let mut child = std::process::Command::new(radd_binary())
        .arg("--config")
        .arg(&env.config)
        .args(["restore", "latest", "--target", target.to_str().unwrap()])
        .envs(env.env.iter().map(|(k, v)| (k, v)))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start restore");
    let staging = env.path().join(format!(".restored.radd-restore-{}", child.id()));
    // Kill it once it has written part of the data directory.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !staging.join("base").exists() {
        assert!(Instant::now() < deadline, "the restore never started writing into {}", staging.display());
        assert!(
            child.try_wait().expect("poll restore").is_none(),
            "the restore finished before it could be killed; make the table larger"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().expect("kill -9 the restore");
    let status = child.wait().expect("reap restore");
    assert_eq!(status.signal(), Some(9), "the restore was killed: {status:?}");
    assert!(!target.exists(), "a killed restore must not leave a target that looks restored");
    assert_eq!(staging_dirs(&env, "restored").len(), 1, "the killed run left its staging");

    let restored = env.restore_and_start("latest", "restored", &[]);
    assert_eq!(sql(&restored, "SELECT count(*) FROM t"), "600000");
    assert!(
        staging_dirs(&env, "restored").is_empty(),
        "the rerun removed the dead run's staging: {:?}",
        staging_dirs(&env, "restored")
    );
}
