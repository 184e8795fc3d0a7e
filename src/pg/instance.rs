//! The own configuration of a restored copy (a drill's scratch instance, a managed `--scratch`
//! instance): it starts the restored data directory with settings of its own, whatever the
//! source's layout, so it never depends on (or writes into) anything of production's.
//!
//! The source's postgresql.conf may live outside the data directory (Debian), name production's
//! data directory, pid file or log directory, require passwords radd does not have, or point at
//! TLS files of another host. The copy keeps the restored server's own settings (memory,
//! `max_connections` — which recovery checks against the WAL —, extensions), included from the
//! restored postgresql.conf when there is one, and overrides on the command line (which wins over
//! every file, postgresql.auto.conf too) what ties the instance to a place: its data directory,
//! pg_hba.conf/pg_ident.conf, no pid file outside the scratch directory, no log collector, no
//! TLS, no archiving, no streaming from production's primary.

use std::path::Path;

use super::conf::quote;

/// Who may connect to the copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Trust on the private Unix socket, nothing on TCP: a drill's checks, which never wait on a
    /// password they do not have, and no one else can log in.
    SocketOnly,
    /// Also 127.0.0.1 with the restored roles' own passwords (md5, which accepts SCRAM secrets):
    /// an ad-hoc copy people query, not open to every local user.
    LoopbackPassword,
}

/// Writes `postgresql.conf`, `pg_hba.conf` and `pg_ident.conf` of the instance (described by
/// `label` in their comments) into `run_dir`; returns the `-c` settings to start `data_dir` with.
pub fn own_config(
    run_dir: &Path,
    data_dir: &Path,
    label: &str,
    access: Access,
) -> std::io::Result<Vec<(&'static str, String)>> {
    let conf = run_dir.join("postgresql.conf");
    let hba = run_dir.join("pg_hba.conf");
    let ident = run_dir.join("pg_ident.conf");
    std::fs::write(
        &conf,
        format!(
            "# {label}: the restored server's settings, if it has a postgresql.conf;\n\
             # radd's own (data directory, pg_hba.conf, port, logging, recovery) are given on the command line.\n\
             include_if_exists = {}\n",
            quote(&data_dir.join("postgresql.conf").display().to_string())
        ),
    )?;
    let hba_lines = match access {
        Access::SocketOnly => "# its private Unix socket only (no TCP)\nlocal all all trust\n",
        Access::LoopbackPassword => {
            "# no password on the private Unix socket (its directory is 0700),\n\
             # the restored roles' own passwords on 127.0.0.1 (md5 also accepts SCRAM secrets).\n\
             local all all trust\nhost all all 127.0.0.1/32 md5\n"
        }
    };
    std::fs::write(&hba, format!("# {label}\n{hba_lines}"))?;
    std::fs::write(&ident, "")?;
    Ok(vec![
        ("config_file", conf.display().to_string()),
        ("data_directory", data_dir.display().to_string()),
        ("hba_file", hba.display().to_string()),
        ("ident_file", ident.display().to_string()),
        ("external_pid_file", String::new()),
        ("logging_collector", "off".into()),
        ("ssl", "off".into()),
        // No JIT: a copy needs none, and radd's systemd unit denies W+X memory.
        ("jit", "off".into()),
        // The source's socket group may not exist here; the socket directory is private anyway.
        ("unix_socket_group", String::new()),
        ("unix_socket_permissions", "0700".into()),
        ("archive_mode", "off".into()),
        // Never stream from (or hold a slot on) production's primary, whatever the restored
        // postgresql.auto.conf says: the archive is the only source.
        ("primary_conninfo", String::new()),
        ("primary_slot_name", String::new()),
    ])
}
