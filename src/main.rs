//! The `backsweep` binary: everything lives in the library; see [`backsweep::cli`].

fn main() -> std::process::ExitCode {
    backsweep::cli::main()
}
