//! `promgate`: parses the command line and hands over to the library.

fn main() -> std::process::ExitCode {
    match promgate::cli::main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("promgate: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
