//! `radd keygen` and `radd repo init`.

use std::path::PathBuf;

use clap::{Args as ClapArgs, Subcommand};
use radd::crypto::Identity;
use radd::repository::Repository;

use super::{Args, load_config, print_json};

/// Arguments of `radd keygen`.
#[derive(Debug, ClapArgs)]
pub struct KeygenArgs {
    /// Identity file to create (mode 0600; never overwritten).
    #[arg(long)]
    pub identity: PathBuf,
}

/// `radd key …` commands: rotate the recipients of the repository.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Encrypt new objects also to this recipient.
    Add {
        /// age recipient (`age1…`).
        recipient: String,
    },
    /// Stop encrypting new objects to this recipient (run `radd key rewrap` to re-encrypt old ones).
    Remove {
        /// age recipient (`age1…`).
        recipient: String,
    },
    /// Re-encrypt every stored object to the current recipients (resumable; needs an identity
    /// that can still decrypt every object).
    Rewrap,
    /// Show the current recipients.
    List,
}

/// Runs a `radd key` command.
pub async fn key(args: &Args, command: &KeyCommand) -> anyhow::Result<()> {
    let need_identity = matches!(command, KeyCommand::Rewrap);
    let (config, repo) = super::open_repo(args, need_identity).await?;
    match command {
        KeyCommand::Add { recipient } | KeyCommand::Remove { recipient } => {
            let version = if matches!(command, KeyCommand::Add { .. }) {
                radd::keyset::add(&repo, recipient).await
            } else {
                radd::keyset::remove(&repo, recipient).await
            }
            .map_err(radd::Error::from)?;
            let reopened = radd::repository::Repository::open(&config, false).await.map_err(radd::Error::from)?;
            let recipients = reopened.recipients.to_strings();
            if args.json {
                return print_json(&serde_json::json!({ "key_set": version, "recipients": recipients }));
            }
            outln!("key set {version}: new objects are encrypted to {}", recipients.join(", "));
            outln!("run `radd key rewrap` to re-encrypt existing objects");
        }
        KeyCommand::Rewrap => {
            let bar = super::progress::Bar::start(args, "key rewrap", super::progress::Unit::Objects);
            let report = radd::keyset::rewrap(&repo, &config.backup.state_dir, &bar.progress()).await;
            bar.end(report.is_ok());
            let report = report.map_err(radd::Error::from)?;
            if args.json {
                return print_json(&report);
            }
            outln!(
                "rewrapped {} objects to key set {} ({} already done by an earlier run); each verified",
                report.rewrapped,
                report.key_set,
                report.resumed_past
            );
        }
        KeyCommand::List => {
            let recipients = repo.recipients.to_strings();
            if args.json {
                return print_json(&recipients);
            }
            for r in recipients {
                outln!("{r}");
            }
        }
    }
    Ok(())
}

/// `radd repo …` commands.
#[derive(Debug, Subcommand)]
pub enum RepoCommand {
    /// Create the repository (and the id key file if missing); refuses an existing one.
    Init,
}

/// Writes a new identity and prints its recipient on stdout.
pub fn keygen(args: &KeygenArgs) -> anyhow::Result<()> {
    let identity = Identity::generate();
    identity.save(&args.identity).map_err(radd::Error::from)?;
    for recipient in identity.recipients().to_strings() {
        outln!("{recipient}");
    }
    eprintln!(
        "identity written to {} (keep it only where restores run; put the recipient above in keys.recipients)",
        args.identity.display()
    );
    Ok(())
}

/// Runs a `radd repo` command.
pub async fn repo(args: &Args, command: &RepoCommand) -> anyhow::Result<()> {
    match command {
        RepoCommand::Init => {
            let config = load_config(args)?;
            let repo = Repository::init(&config).await.map_err(radd::Error::from)?;
            if args.json {
                print_json(&serde_json::json!({
                    "location": repo.location(),
                    "id": repo.meta.id,
                }))?;
            } else {
                outln!("initialised repository {} at {}", repo.meta.id, repo.location());
            }
            Ok(())
        }
    }
}
