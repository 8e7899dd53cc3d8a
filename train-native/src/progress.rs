//! The training progress display: a bar with loss, lr, images/s and ETA on a terminal; plain
//! lines on stdout otherwise (logs, CI), so nothing a run reports is lost when piped.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar over optimisation steps that degrades to printed lines off a terminal.
pub struct Progress {
    bar: ProgressBar,
    tty: bool,
}

impl Progress {
    /// A bar over `total` steps.
    pub fn new(total: usize) -> Self {
        let bar = ProgressBar::new(total as u64);
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  eta {eta}")
                .expect("valid progress template"),
        );
        Self {
            bar,
            tty: std::io::stderr().is_terminal(),
        }
    }

    /// Continues from `step` (a resumed run).
    pub fn set_position(&self, step: usize) {
        self.bar.set_position(step as u64);
    }

    /// One step done.
    pub fn inc(&self) {
        self.bar.inc(1);
    }

    /// The bar's short status (`short`) on a terminal; the full line (`long`) otherwise.
    pub fn status(&self, short: String, long: String) {
        if self.tty {
            self.bar.set_message(short);
        } else {
            println!("{long}");
        }
    }

    /// A line that must stay visible (end of an epoch, a checkpoint).
    pub fn line(&self, text: String) {
        if self.tty {
            self.bar.println(text);
        } else {
            println!("{text}");
        }
    }

    /// Leaves the bar as it is (the run stopped with an error).
    pub fn abandon(&self) {
        self.bar.abandon();
    }

    /// Removes the bar (the run finished).
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
