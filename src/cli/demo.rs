//! `radd demo`: the quick start. A throwaway cluster archives into a throwaway local repository;
//! radd takes a base backup, more rows are written, and the backup is restored, recovered and
//! counted. Everything lives in one temporary directory, removed at the end unless `--keep`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args as ClapArgs;
use radd::config::Config;
use radd::crypto::Identity;
use radd::pg::{self, ScratchCluster};
use radd::repository::Repository;
use radd::restore::{self, RecoveryTarget, RestoreOptions};
use radd::snapshot::{self, BackupOptions};

use super::{Args, human_bytes, print_json};
use radd::jobs::sh_quote;

/// Arguments of `radd demo`.
#[derive(Debug, ClapArgs)]
pub struct DemoArgs {
    /// Directory of the PostgreSQL binaries.
    #[arg(long, default_value = "/usr/lib/postgresql/15/bin")]
    pub pg_bin: PathBuf,
    /// Rows written before and again after the backup.
    #[arg(long, default_value_t = 100_000)]
    pub rows: i64,
    /// Keep the demo directory (repository, keys, clusters) for inspection.
    #[arg(long)]
    pub keep: bool,
}

/// What the demo proved.
#[derive(Debug, serde::Serialize)]
struct DemoReport {
    workdir: PathBuf,
    snapshot_id: String,
    backup_bytes: u64,
    uploaded_bytes: u64,
    rows_expected: i64,
    rows_restored: i64,
    restore_seconds: f64,
}

/// Runs the demo.
pub async fn run(args: &Args, a: &DemoArgs) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("radd-demo-").tempdir().context("creating the demo directory")?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    let root = dir.path().to_owned();
    let report = demo(&root, a).await;
    if a.keep {
        let kept = dir.keep();
        eprintln!("demo directory kept: {}", kept.display());
    }
    let report = report?;
    if args.json {
        return print_json(&report);
    }
    outln!(
        "demo passed: snapshot {} ({} backed up, {} uploaded encrypted), restored and recovered {} of {} rows in {:.1}s",
        report.snapshot_id,
        human_bytes(report.backup_bytes),
        human_bytes(report.uploaded_bytes),
        report.rows_restored,
        report.rows_expected,
        report.restore_seconds
    );
    Ok(())
}

// Long on purpose: the demo is a scripted walk-through (init, backup, archive, restore a copy, compare) that reads best as the one script it is.
async fn demo(root: &Path, a: &DemoArgs) -> anyhow::Result<DemoReport> {
    let exe = root.join("radd");
    std::fs::copy(std::env::current_exe()?, &exe).context("copying the radd binary for archive_command")?;
    let identity = Identity::generate();
    identity.save(&root.join("identity.key"))?;
    let config_path = root.join("radd.toml");
    std::fs::write(
        &config_path,
        format!(
            "[repository]\npath = \"repo\"\n\n[keys]\nrecipients = [\"{}\"]\nidentity_file = \"identity.key\"\nid_key_file = \"id.key\"\n",
            identity.recipients().to_strings()[0]
        ),
    )?;
    let mut config = Config::load(&config_path)?;
    let repo = Repository::init(&config).await?;
    eprintln!("repository initialised at {}", repo.location());

    std::fs::create_dir(root.join("source"))?;
    let mut source = ScratchCluster::new(&a.pg_bin, &root.join("source"))?;
    source.initdb()?;
    pg::hand_over(root)?;
    let archive_command = format!("{} --config {} wal-push %p", sh_quote(&exe), sh_quote(&config_path));
    source.start(
        &[
            ("wal_level", "replica".into()),
            ("archive_mode", "on".into()),
            ("archive_command", archive_command),
            ("fsync", "off".into()),
        ],
        &[],
    )?;
    config.postgres = source.connection();
    let client = pg::connect(&config.postgres).await?;
    client
        .batch_execute(&format!(
            "CREATE TABLE demo (id bigint PRIMARY KEY, note text);
             INSERT INTO demo SELECT g, md5(g::text) FROM generate_series(1, {}) g;",
            a.rows
        ))
        .await?;
    eprintln!("source cluster on port {} has {} rows; taking a base backup", source.port(), a.rows);
    config.backup.state_dir = root.join("state");
    let options = BackupOptions {
        postgres: config.postgres.clone(),
        backup: config.backup.clone(),
        full_read: false,
        progress: radd::progress::Progress::none(),
    };
    let backup = snapshot::backup_pg(&repo, &options).await?;
    client
        .batch_execute(&format!(
            "INSERT INTO demo SELECT g, md5(g::text) FROM generate_series({}, {}) g;",
            a.rows + 1,
            2 * a.rows
        ))
        .await?;
    let switched: String = client.query_one("SELECT pg_walfile_name(pg_switch_wal())", &[]).await?.get(0);
    wait_archived(&client, &switched).await?;
    eprintln!("{} more rows written and archived up to {switched}; restoring", a.rows);

    let repo = Repository::open(&config, true).await?;
    let target = root.join("restored");
    let restore_command = format!("{} --config {} wal-fetch %f %p", sh_quote(&exe), sh_quote(&config_path));
    let restored = restore::run(
        &repo,
        &RestoreOptions {
            snapshot: backup.snapshot_id.clone(),
            target: target.clone(),
            recovery: RecoveryTarget::Latest,
            allow_gap: false,
            timeline: None,
            restore_command,
            disable_archiving: true,
            include: Vec::new(),
            tablespaces: restore::TablespaceMapping::default(),
            config_dir: None,
            progress: radd::progress::Progress::none(),
        },
    )
    .await?;
    std::fs::create_dir(root.join("restored-run"))?;
    let mut copy = ScratchCluster::new(&a.pg_bin, &root.join("restored-run"))?.with_data_dir(&target);
    copy.start(&[], &[])?;
    copy.wait_promoted(Duration::from_secs(120)).await?;
    let copy_client = pg::connect(&copy.connection()).await?;
    let rows: i64 = copy_client.query_one("SELECT count(*) FROM demo", &[]).await?.get(0);
    if rows != 2 * a.rows {
        bail!("restored cluster has {rows} rows, expected {}", 2 * a.rows);
    }
    copy.stop()?;
    source.stop()?;
    Ok(DemoReport {
        workdir: root.to_owned(),
        snapshot_id: backup.snapshot_id,
        backup_bytes: backup.total_bytes,
        uploaded_bytes: backup.uploaded_bytes,
        rows_expected: 2 * a.rows,
        rows_restored: rows,
        restore_seconds: restored.duration_seconds,
    })
}

/// Waits until PostgreSQL reports `wal` as archived.
async fn wait_archived(client: &tokio_postgres::Client, wal: &str) -> anyhow::Result<()> {
    for _ in 0..600 {
        let row =
            client.query_one("SELECT coalesce(last_archived_wal, ''), failed_count FROM pg_stat_archiver", &[]).await?;
        let last: String = row.get(0);
        // Segments are archived in order; a `.backup` history file name starts with a segment name.
        if last.len() >= 24 && last[..24] >= *wal {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("WAL {wal} was not archived within 60 s; see the source cluster's log")
}
