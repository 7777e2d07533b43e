//! The `copra-lab` command: a thin layer over the `copra_lab` library.

use clap::Parser;

fn main() {
    let cli = copra_lab::cli::Cli::parse();
    if let Err(err) = copra_lab::cli::run(cli) {
        // One line: the error and its causes, never a backtrace.
        let msg: Vec<String> = err.chain().map(|e| e.to_string()).collect();
        eprintln!("error: {}", msg.join(": "));
        std::process::exit(1);
    }
}
