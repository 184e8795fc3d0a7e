//! Terminal progress bars for long commands (backup, restore, verify --read-data, key rewrap):
//! the indicatif side of [`radd::progress::Progress`], which the library advances.
//!
//! A bar shows only when stderr is a terminal and neither `--json` nor `--log-format json` is
//! given: redirected stderr (journald, a file, a pipe) gets no carriage returns, escapes or bar
//! characters, whatever the command. The library only bumps atomic counters; a thread here reads
//! them ten times a second and redraws. While a bar is up, log lines are written through
//! [`LogWriter`], which lifts the bar for the line so it does not tear it. A command that
//! succeeded leaves its bar's last state (total, average rate) on the terminal; one that failed
//! clears it, so the error stands alone.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::sync::mpsc::{RecvTimeoutError, Sender, channel};
use std::thread::JoinHandle;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use radd::progress::{Progress, ProgressState as Counters};

use super::{Args, human_bytes};

/// How often the bar reads the counters.
const POLL: Duration = Duration::from_millis(100);

/// The bar currently on the terminal, for [`LogWriter`]; at most one at a time.
static ACTIVE: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// What a bar counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Bytes, shown as KiB/MiB/GiB with a byte rate.
    Bytes,
    /// Objects, shown as counts with a per-second rate.
    Objects,
}

/// Whether this run may draw bars: stderr is a terminal and the output is not JSON.
pub fn enabled(args: &Args) -> bool {
    !args.json && args.log_format != "json" && std::io::stderr().is_terminal()
}

/// A bar on stderr while it lives (or nothing, when bars are off). [`Bar::end`] stops it;
/// dropping it clears the line. Either way results printed next start on a line of their own.
pub struct Bar {
    progress: Progress,
    /// `true`: leave the last state on the terminal; closed: clear it.
    stop: Option<Sender<bool>>,
    drawer: Option<JoinHandle<()>>,
}

impl Bar {
    /// No bar: a handle that counts nothing.
    pub fn off() -> Self {
        Self { progress: Progress::none(), stop: None, drawer: None }
    }

    /// Starts a bar labelled `label` counting `unit`, if [`enabled`]; otherwise [`Bar::off`].
    pub fn start(args: &Args, label: &'static str, unit: Unit) -> Self {
        if !enabled(args) {
            return Self::off();
        }
        let progress = Progress::counting();
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()).with_prefix(label);
        bar.set_style(style(unit, false));
        if let Ok(mut active) = ACTIVE.lock() {
            *active = Some(bar.clone());
        }
        let (stop, stopped) = channel::<bool>();
        let counters = progress.clone();
        let drawer = std::thread::Builder::new().name("radd-progress".into()).spawn(move || {
            let leave = loop {
                let state = counters.state().unwrap_or_default();
                show(&bar, unit, &state);
                if state.finished {
                    break true;
                }
                match stopped.recv_timeout(POLL) {
                    Err(RecvTimeoutError::Timeout) => {}
                    Ok(leave) => break leave,
                    Err(RecvTimeoutError::Disconnected) => break false,
                }
            };
            show(&bar, unit, &counters.state().unwrap_or_default());
            if leave {
                bar.set_message("");
                // At its real position (`finish` would claim the total was reached); the
                // cursor stays at the end of the bar's line: results start on the next.
                bar.abandon();
                let _ = writeln!(std::io::stderr());
            } else {
                bar.finish_and_clear();
            }
            if let Ok(mut active) = ACTIVE.lock() {
                *active = None;
            }
        });
        match drawer {
            Ok(drawer) => Self { progress, stop: Some(stop), drawer: Some(drawer) },
            Err(error) => {
                tracing::debug!(error = %error, "cannot start the progress bar thread; no bar");
                if let Ok(mut active) = ACTIVE.lock() {
                    *active = None;
                }
                Self::off()
            }
        }
    }

    /// The handle to pass to the library (a no-op one when no bar shows).
    pub fn progress(&self) -> Progress {
        self.progress.clone()
    }

    /// Stops the bar after the command's work: a success leaves its last state on the
    /// terminal, a failure clears it.
    pub fn end(mut self, succeeded: bool) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(succeeded);
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(drawer) = self.drawer.take() {
            let _ = drawer.join();
        }
    }
}

/// Brings the bar up to date with the counters (the bar style once a total is known).
fn show(bar: &ProgressBar, unit: Unit, state: &Counters) {
    if let Some(total) = state.total
        && bar.length() != Some(total)
    {
        if bar.length().is_none() {
            bar.set_style(style(unit, true));
        }
        bar.set_length(total);
    }
    bar.set_position(state.done);
    if bar.message() != state.message {
        bar.set_message(state.message.clone());
    }
}

/// The bar's look: a spinner with bytes and rate until the total is known, then a bar with
/// done/total, rate and ETA, as wide as the terminal (a longer line would wrap and leave a
/// copy on every redraw). Colours follow console's rules (none with `NO_COLOR`).
fn style(unit: Unit, sized: bool) -> ProgressStyle {
    let template = match (unit, sized) {
        (Unit::Bytes, true) => "{prefix} [{wide_bar:.cyan/blue}] {done}/{total} {rate} ETA {eta} {msg}",
        (Unit::Bytes, false) => "{spinner} {prefix} {done} {rate} {elapsed} {msg}",
        (Unit::Objects, true) => "{prefix} [{wide_bar:.cyan/blue}] {pos}/{len} objects {per_sec} ETA {eta} {msg}",
        (Unit::Objects, false) => "{spinner} {prefix} {pos} objects {per_sec} {elapsed} {msg}",
    };
    let style = match ProgressStyle::with_template(template) {
        Ok(style) => style,
        Err(error) => {
            tracing::debug!(error = %error, "progress bar template refused; using the default look");
            ProgressStyle::default_bar()
        }
    };
    style
        .progress_chars("=> ")
        .with_key("done", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = w.write_str(&human_bytes(s.pos()));
        })
        .with_key("total", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = w.write_str(&human_bytes(s.len().unwrap_or(0)));
        })
        .with_key("rate", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
            // Per-second rates of a few bytes are rounding noise: whole bytes suffice.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let rate = s.per_sec().max(0.0) as u64;
            let _ = write!(w, "{}/s", human_bytes(rate));
        })
}

/// tracing's writer: stderr, with the active bar (if any) lifted while a log line is written.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bar = ACTIVE.lock().ok().and_then(|active| active.clone());
        match bar {
            Some(bar) => bar.suspend(|| std::io::stderr().write_all(buf)).map(|()| buf.len()),
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
