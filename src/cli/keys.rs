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
        println!("{recipient}");
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
                    "location": repo.store.location(),
                    "id": repo.meta.id,
                }))?;
            } else {
                println!("initialised repository {} at {}", repo.meta.id, repo.store.location());
            }
            Ok(())
        }
    }
}
