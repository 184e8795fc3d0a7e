//! `radd restore-point NAME`: a named point to restore to later (`radd restore latest --name
//! NAME`), taken before a risky change — a migration, a bulk delete, a deploy.

use clap::Args as ClapArgs;
use radd::events::Event;
use radd::{jobs, pg, restore};

use super::{Args, open_repo, operator, print_json};

/// Arguments of `radd restore-point`.
#[derive(Debug, ClapArgs)]
pub struct RestorePointArgs {
    /// The point's name (at most 63 bytes, no control characters; each name once per repository).
    pub name: String,
}

/// Creates the point on the source (the primary when `[postgres.primary]` is set, as the
/// heartbeat does: a standby cannot write WAL), switches WAL so the point is archived at once
/// rather than when the segment fills, records it in the repository and files a change event.
pub async fn run(args: &Args, a: &RestorePointArgs) -> anyhow::Result<()> {
    let (config, repo) = open_repo(args, false).await?;
    // Checked before connecting: a bad or taken name must not depend on the server being up.
    restore::points::validate_name(&a.name).map_err(radd::Error::from)?;
    let client = pg::connect(&config.postgres.writable()).await.map_err(radd::Error::from)?;
    let point = restore::points::create(&repo, &client, &a.name, operator()).await.map_err(radd::Error::from)?;
    let event = Event::change(
        "restore-point",
        format!("restore point {} created at LSN {} by {}", point.name, point.lsn, point.by),
    )
    .details(serde_json::to_value(&point).unwrap_or_default());
    jobs::record(&jobs::event_log(&config)?, &event)?;
    if args.json {
        return print_json(&point);
    }
    outln!(
        "restore point {} created at LSN {} on timeline {} ({}); WAL switched so it is archived now; restore to it with: radd restore latest --name {} --target DIR",
        point.name,
        point.lsn,
        point.timeline,
        point.time,
        shell_word(&point.name)
    );
    Ok(())
}

/// The name quoted for a shell when it needs it.
fn shell_word(name: &str) -> String {
    if name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        name.to_owned()
    } else {
        format!("'{}'", name.replace('\'', r"'\''"))
    }
}
