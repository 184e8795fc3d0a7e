//! Stops managed scratch instances whose TTL ran out (and removes creations whose radd process
//! died), every watch interval but at least every 30 s. The instances' state is on disk, so an
//! instance created before the daemon (re)started is reaped all the same.

use std::time::Duration;

use tokio::sync::watch;

use super::State;
use crate::jobs;
use crate::scratch::Selection;

/// Longest pause between two passes.
const MAX_PERIOD: Duration = Duration::from_secs(30);

/// Runs [`jobs::scratch_stop`] for expired instances every `every` (at most 30 s) until stop.
pub async fn reap_loop(state: State, every: Duration, mut stop: watch::Receiver<bool>) {
    let every = every.min(MAX_PERIOD);
    loop {
        let st = state.clone();
        // pg_ctl stop and the directory removal block: off the async threads.
        let pass = tokio::task::spawn_blocking(move || {
            jobs::scratch_stop(&st.config, &st.events, &Selection::Expired).map_err(|e| e.to_string())
        })
        .await;
        match pass {
            Ok(Ok((_, errors))) => {
                for error in errors {
                    tracing::error!(error = %error, "cannot stop an expired scratch instance; it keeps running");
                }
            }
            Ok(Err(error)) => {
                tracing::error!(error = %error, "scratch instances stopped, but their teardown events could not be recorded")
            }
            Err(error) => tracing::error!(error = %error, "the scratch reaper panicked"),
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}
