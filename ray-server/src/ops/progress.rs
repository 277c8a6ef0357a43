//! Progress of a long step (a download, the checksum of a big file, a bench phase), on stderr
//! so a JSON report on stdout stays clean: on a terminal one line redrawn in place (done, total,
//! rate, time left), otherwise a plain line every few seconds that a log keeps readably.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How often a terminal line is redrawn.
const REDRAW: Duration = Duration::from_millis(200);
/// How often a plain line is written when stderr is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// What is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Bytes, shown in MiB.
    Bytes,
    /// Requests (or any count), shown as a number.
    Items,
}

/// One step's progress display.
#[derive(Debug)]
pub struct Progress {
    label: String,
    total: Option<u64>,
    done: u64,
    start_at: u64,
    unit: Unit,
    started: Instant,
    last: Option<Instant>,
    terminal: bool,
    quiet: bool,
    drawn: bool,
}

fn amount(unit: Unit, value: f64) -> String {
    match unit {
        Unit::Bytes => format!("{:.1} MiB", value / 1_048_576.0),
        Unit::Items => format!("{value:.0}"),
    }
}

fn duration(seconds: f64) -> String {
    let seconds = seconds.max(0.0).round() as u64;
    if seconds >= 3600 {
        format!("{}h{:02}m", seconds / 3600, (seconds % 3600) / 60)
    } else if seconds >= 60 {
        format!("{}m{:02}s", seconds / 60, seconds % 60)
    } else {
        format!("{seconds}s")
    }
}

impl Progress {
    /// Starts showing `label`, of `total` units when known, already `done` (a resumed
    /// download). `quiet` shows nothing at all.
    pub fn new(label: impl Into<String>, total: Option<u64>, done: u64, unit: Unit) -> Progress {
        Progress {
            label: label.into(),
            total,
            done,
            start_at: done,
            unit,
            started: Instant::now(),
            last: None,
            terminal: std::io::stderr().is_terminal(),
            quiet: false,
            drawn: false,
        }
    }

    /// Shows nothing (for `--json` runs that want stderr silent, or tests).
    pub fn quiet(mut self, quiet: bool) -> Progress {
        self.quiet = quiet;
        self
    }

    /// Counts `n` more units done, redrawing when it is time.
    pub fn advance(&mut self, n: u64) {
        self.done += n;
        let now = Instant::now();
        let due = match self.last {
            None => now.duration_since(self.started) >= REDRAW,
            Some(last) => {
                now.duration_since(last) >= if self.terminal { REDRAW } else { PLAIN_EVERY }
            }
        };
        if due {
            self.last = Some(now);
            self.draw(false);
        }
    }

    /// The line as it stands: done, total, rate and time left.
    pub fn line(&self) -> String {
        let elapsed = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = (self.done - self.start_at) as f64 / elapsed;
        let mut line = format!("{}: {}", self.label, amount(self.unit, self.done as f64));
        if let Some(total) = self.total {
            let percent = if total == 0 {
                100.0
            } else {
                self.done as f64 * 100.0 / total as f64
            };
            line.push_str(&format!(
                " of {} ({percent:.0}%)",
                amount(self.unit, total as f64)
            ));
        }
        let per = match self.unit {
            Unit::Bytes => format!("{}/s", amount(self.unit, rate)),
            Unit::Items => format!("{rate:.1}/s"),
        };
        line.push_str(&format!(", {per}"));
        if let Some(total) = self.total
            && rate > 0.0
            && total > self.done
        {
            line.push_str(&format!(
                ", {} left",
                duration((total - self.done) as f64 / rate)
            ));
        }
        line
    }

    fn draw(&mut self, last: bool) {
        if self.quiet {
            return;
        }
        let mut err = std::io::stderr().lock();
        if self.terminal {
            let _ = write!(err, "\r\x1b[2K{}", self.line());
            if last {
                let _ = writeln!(err);
            }
        } else {
            let _ = writeln!(err, "{}", self.line());
        }
        let _ = err.flush();
        self.drawn = true;
    }

    /// Ends the display: the last line, with the time taken, when anything was shown or the
    /// step took long enough to matter.
    pub fn finish(mut self) {
        if self.drawn || self.started.elapsed() >= REDRAW {
            let elapsed = duration(self.started.elapsed().as_secs_f64());
            self.label = format!("{} (done in {elapsed})", self.label);
            self.total = self.total.map(|_| self.done);
            self.draw(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_says_done_total_rate_and_time_left() {
        let mut progress = Progress::new("download m", Some(10 << 20), 0, Unit::Bytes).quiet(true);
        progress.advance(5 << 20);
        let line = progress.line();
        assert!(
            line.starts_with("download m: 5.0 MiB of 10.0 MiB (50%), "),
            "{line}"
        );
        assert!(line.contains(" MiB/s") && line.ends_with(" left"), "{line}");
        assert_eq!(duration(3725.0), "1h02m");
        assert_eq!(duration(75.0), "1m15s");
        let items = Progress::new("bench", None, 3, Unit::Items).quiet(true);
        assert!(items.line().starts_with("bench: 3, "), "{}", items.line());
    }
}
