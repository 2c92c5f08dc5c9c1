//! Start-up shared by the three binaries: command-line errors as one line, and logging.

use std::io::IsTerminal;

use clap::error::ErrorKind;

/// Parses the command line; a usage error prints one line naming the problem and the
/// expected usage, then exits with `usage_exit`. Help and version print as usual.
pub fn parse_args<T: clap::Parser>(program: &str, usage_exit: i32) -> T {
    match T::try_parse() {
        Ok(args) => args,
        Err(e) => match e.kind() {
            ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
            _ => {
                eprintln!("{program}: {}", one_line(&e.render().to_string()));
                std::process::exit(usage_exit)
            }
        },
    }
}

/// clap's multi-line error as one line: the problem, then the usage.
fn one_line(rendered: &str) -> String {
    let mut problem = Vec::new();
    let mut usage = None;
    for line in rendered.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("Usage:") {
            usage = Some(rest.trim().to_string());
        } else if !line.starts_with("For more information") {
            problem.push(line.trim_start_matches("error:").trim().to_string());
        }
    }
    match usage {
        Some(usage) => format!("{}; usage: {usage}", problem.join(" ")),
        None => problem.join(" "),
    }
}

/// The tokio runtime of a binary (`worker_threads`: `None` for one per core); exits with
/// one line if it cannot be built.
pub fn runtime(program: &str, worker_threads: Option<usize>) -> tokio::runtime::Runtime {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = worker_threads {
        builder.worker_threads(threads);
    }
    builder.enable_all().build().unwrap_or_else(|e| {
        eprintln!("{program}: cannot start the runtime: {e}");
        std::process::exit(1)
    })
}

/// A secret given on the command line or in a file (`-` reads stdin), without surrounding
/// white space. A file keeps the secret out of the process list and the shell history.
pub fn read_secret(
    value: Option<String>,
    file: Option<&std::path::Path>,
) -> std::io::Result<String> {
    let text = match (value, file) {
        (Some(value), _) => value,
        (None, Some(path)) if path.as_os_str() == "-" => std::io::read_to_string(std::io::stdin())?,
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?,
        (None, None) => String::new(),
    };
    let secret = text.trim().to_string();
    if secret.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the token is empty",
        ));
    }
    Ok(secret)
}

/// Logs to stderr, filtered by `ZPANEL_LOG` (default `info`), coloured only on a terminal.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ZPANEL_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_clap_errors_into_one_line() {
        let rendered = "error: the following required arguments were not provided:\n  <COMMAND>...\n\nUsage: zpanel exec <HOST> -- <COMMAND>...\n\nFor more information, try '--help'.\n";
        assert_eq!(
            one_line(rendered),
            "the following required arguments were not provided: <COMMAND>...; usage: zpanel exec <HOST> -- <COMMAND>..."
        );
    }
}
