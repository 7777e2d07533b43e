//! The `copra-lab` command: the argument parser and its types live here, in the binary; the
//! `copra_lab` library never sees clap.

mod cli;

use clap::Parser;

fn main() {
    restore_sigpipe();
    let cli = cli::Cli::parse();
    if let Err(err) = cli::run(cli) {
        // One line: the error and its causes, never a backtrace.
        let msg: Vec<String> = err.chain().map(|e| e.to_string()).collect();
        eprintln!("error: {}", msg.join(": ").replace('\n', " "));
        std::process::exit(1);
    }
}

/// Lets a closed pipe end the process quietly, as for any Unix tool (`copra-lab tasks | head -1`):
/// Rust ignores SIGPIPE, so a print to a closed pipe would panic instead. The C library's
/// `signal` has no safe wrapper in std and the project has no libc dependency, hence the
/// declaration.
#[cfg(unix)]
fn restore_sigpipe() {
    extern "C" {
        fn signal(signum: i32, handler: usize) -> usize;
    }
    const SIGPIPE: i32 = 13; // the same number on Linux and macOS
    const SIG_DFL: usize = 0;
    // SAFETY: resets one signal to its default disposition before any thread is started.
    unsafe {
        signal(SIGPIPE, SIG_DFL);
    }
}

/// Nothing to do where there is no SIGPIPE.
#[cfg(not(unix))]
fn restore_sigpipe() {}
