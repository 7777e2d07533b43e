//! The `copra-lab` command: the argument parser and its types live here, in the binary; the
//! `copra_lab` library never sees clap.

mod cli;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    if let Err(err) = cli::run(cli) {
        // One line: the error and its causes, never a backtrace.
        let msg: Vec<String> = err.chain().map(|e| e.to_string()).collect();
        eprintln!("error: {}", msg.join(": ").replace('\n', " "));
        std::process::exit(1);
    }
}
