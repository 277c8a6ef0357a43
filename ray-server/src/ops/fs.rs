//! What the operator tools share: writing a file atomically, and reporting a config that would
//! not load, one line per problem.

use std::path::Path;

use ray_core::config::{ConfigError, Diagnostic};

/// Writes `contents` to `path` through a temporary file in the same directory and a rename,
/// so a reader never sees half a file.
pub fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{name}.ray-{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// Prints a load error as `name: path: message` lines on stderr.
pub fn report_error(name: &str, error: &ConfigError) {
    match error {
        ConfigError::Invalid { diagnostics, .. } => {
            for diagnostic in diagnostics {
                eprintln!("{}", diagnostic_line(name, diagnostic));
            }
        }
        other => eprintln!("{other}"),
    }
}

/// One diagnostic as `name: path: message`, warnings marked.
pub fn diagnostic_line(name: &str, diagnostic: &Diagnostic) -> String {
    if diagnostic.is_error() {
        format!("{name}: {diagnostic}")
    } else {
        format!("{name}: warning: {diagnostic}")
    }
}
