//! Progress bars for long loops, hidden when stderr is not a terminal or when disabled.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Creates progress bars consistently; `Progress::hidden()` for library and test use.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    enabled: bool,
}

impl Progress {
    /// Bars on stderr, shown only on a terminal.
    pub fn stderr() -> Self {
        Self { enabled: true }
    }

    /// No bars at all.
    pub fn hidden() -> Self {
        Self { enabled: false }
    }

    /// A bar of `len` steps with a prefix.
    pub fn bar(&self, len: u64, prefix: &str) -> ProgressBar {
        if !self.enabled {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {elapsed_precise}<{eta_precise} {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(prefix.to_string());
        bar
    }
}
