//! The scratch instance's own configuration: a drill starts the restored data directory with
//! settings of its own, whatever the source's layout, so it never depends on (or writes into)
//! anything of production's.
//!
//! The source's postgresql.conf may live outside the data directory (Debian), name production's
//! data directory, pid file or log directory, require passwords the drill does not have, or
//! point at TLS files of another host. The drill keeps the restored server's own settings
//! (memory, `max_connections` — which recovery checks against the WAL —, extensions), included
//! from the restored postgresql.conf when there is one, and overrides on the command line (which
//! wins over every file, postgresql.auto.conf too) what ties the instance to a place: its data
//! directory, pg_hba.conf/pg_ident.conf (trust on the instance's private socket, nothing on TCP:
//! the drill never waits on a password it does not have, and no one else can log in), no pid file
//! outside the scratch directory, logging to the scratch log, no TLS.

use std::path::Path;

use crate::pg::conf::quote;

/// Writes `postgresql.conf`, `pg_hba.conf` and `pg_ident.conf` of the instance into `run_dir`;
/// returns the `-c` settings to start `data_dir` with.
pub fn own_settings(run_dir: &Path, data_dir: &Path) -> std::io::Result<Vec<(&'static str, String)>> {
    let conf = run_dir.join("postgresql.conf");
    let hba = run_dir.join("pg_hba.conf");
    let ident = run_dir.join("pg_ident.conf");
    std::fs::write(
        &conf,
        format!(
            "# radd drill scratch instance: the restored server's settings, if it has a postgresql.conf;\n\
             # the drill's own (data directory, pg_hba.conf, port, logging) are given on the command line.\n\
             include_if_exists = {}\n",
            quote(&data_dir.join("postgresql.conf").display().to_string())
        ),
    )?;
    std::fs::write(&hba, "# radd drill scratch instance: its private Unix socket only (no TCP), for the drill's checks\nlocal all all trust\n")?;
    std::fs::write(&ident, "")?;
    Ok(vec![
        ("config_file", conf.display().to_string()),
        ("data_directory", data_dir.display().to_string()),
        ("hba_file", hba.display().to_string()),
        ("ident_file", ident.display().to_string()),
        ("external_pid_file", String::new()),
        ("logging_collector", "off".into()),
        ("ssl", "off".into()),
        // No JIT: a short-lived check needs none, and radd's systemd unit denies W+X memory.
        ("jit", "off".into()),
        // The source's socket group may not exist here; the socket directory is private anyway.
        ("unix_socket_group", String::new()),
        ("unix_socket_permissions", "0700".into()),
    ])
}
