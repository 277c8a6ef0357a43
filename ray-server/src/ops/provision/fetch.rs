//! Getting a model file that is missing: from `http(s)://` or `file://` into `<path>.part`,
//! resumed from where an earlier run stopped (an HTTP `Range` request, or a seek in the local
//! source), its SHA-256 checked, then renamed into place. A file whose digest is wrong never
//! reaches the destination.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::ops::progress::{Progress, Unit};

/// Why a fetch failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// The whole file arrived but its SHA-256 is not the expected one (the `.part` is
    /// removed).
    Digest {
        /// The digest the manifest gives.
        expected: String,
        /// The digest of what arrived.
        actual: String,
    },
    /// The source or the destination failed.
    Io(String),
}

/// What a fetch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fetched {
    /// The file's size.
    pub bytes: u64,
    /// Bytes already in the `.part` file that were kept (a resumed transfer).
    pub resumed_from: u64,
}

/// The partial file for `dest`: `<dest>.part`.
pub fn part_path(dest: &Path) -> PathBuf {
    let mut name = dest.as_os_str().to_owned();
    name.push(".part");
    PathBuf::from(name)
}

/// Fetches `url` to `dest` (label `id` in the progress line), checking `sha256`.
pub fn fetch(
    url: &str,
    dest: &Path,
    sha256: &str,
    id: &str,
    quiet: bool,
) -> Result<Fetched, FetchError> {
    let io = |what: &Path, e: std::io::Error| FetchError::Io(format!("{}: {e}", what.display()));
    let dir = dest
        .parent()
        .ok_or_else(|| FetchError::Io(format!("{} has no directory", dest.display())))?;
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let part = part_path(dest);
    let have = std::fs::metadata(&part).map_or(0, |m| m.len());
    let resumed_from = match url.strip_prefix("file://") {
        Some(source) => copy_local(Path::new(source), &part, have, id, quiet)?,
        None => download(url, &part, have, id, quiet)?,
    };
    let bytes = std::fs::metadata(&part).map_err(|e| io(&part, e))?.len();
    let mut progress =
        Progress::new(format!("sha256 {id}"), Some(bytes), 0, Unit::Bytes).quiet(quiet);
    let actual = crate::ops::stage::sha256_file_with(&part, Some(&mut progress))
        .map_err(|e| io(&part, e))?;
    progress.finish();
    if actual != sha256 {
        // Complete but wrong: nothing to resume from, so it goes.
        let _ = std::fs::remove_file(&part);
        return Err(FetchError::Digest {
            expected: sha256.to_string(),
            actual,
        });
    }
    std::fs::rename(&part, dest).map_err(|e| io(dest, e))?;
    if let Ok(dir) = std::fs::File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(Fetched {
        bytes,
        resumed_from,
    })
}

fn open_part(part: &Path, keep: bool) -> Result<std::fs::File, FetchError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.create(true).mode(0o644);
    if keep {
        options.append(true);
    } else {
        options.write(true).truncate(true);
    }
    options
        .open(part)
        .map_err(|e| FetchError::Io(format!("{}: {e}", part.display())))
}

/// Copies `source` into `part` from byte `have` on; returns the bytes kept.
fn copy_local(
    source: &Path,
    part: &Path,
    have: u64,
    id: &str,
    quiet: bool,
) -> Result<u64, FetchError> {
    let io = |what: &Path, e: std::io::Error| FetchError::Io(format!("{}: {e}", what.display()));
    let mut input = std::fs::File::open(source).map_err(|e| io(source, e))?;
    let size = input.metadata().map_err(|e| io(source, e))?.len();
    let keep = have > 0 && have <= size;
    let from = if keep { have } else { 0 };
    input
        .seek(SeekFrom::Start(from))
        .map_err(|e| io(source, e))?;
    let mut output = open_part(part, keep)?;
    let mut progress =
        Progress::new(format!("copy {id}"), Some(size), from, Unit::Bytes).quiet(quiet);
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = input.read(&mut buffer).map_err(|e| io(source, e))?;
        if read == 0 {
            break;
        }
        output.write_all(&buffer[..read]).map_err(|e| io(part, e))?;
        progress.advance(read as u64);
    }
    output.sync_all().map_err(|e| io(part, e))?;
    progress.finish();
    Ok(from)
}

/// Downloads `url` into `part`, asking for the bytes from `have` on; returns the bytes kept.
fn download(url: &str, part: &Path, have: u64, id: &str, quiet: bool) -> Result<u64, FetchError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| FetchError::Io(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(download_async(url, part, have, id, quiet))
}

async fn download_async(
    url: &str,
    part: &Path,
    have: u64,
    id: &str,
    quiet: bool,
) -> Result<u64, FetchError> {
    let fail = |e: reqwest::Error| FetchError::Io(format!("{url}: {e}"));
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .read_timeout(Duration::from_secs(60))
        .build()
        .map_err(fail)?;
    let mut request = client.get(url);
    if have > 0 {
        request = request.header(reqwest::header::RANGE, format!("bytes={have}-"));
    }
    let mut response = request.send().await.map_err(fail)?;
    let status = response.status();
    let keep = match status.as_u16() {
        206 if have > 0 => {
            // The range must start where the part file ends.
            let start = response
                .headers()
                .get(reqwest::header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("bytes "))
                .and_then(|v| v.split('-').next())
                .and_then(|v| v.parse::<u64>().ok());
            if start != Some(have) {
                return Err(FetchError::Io(format!(
                    "{url}: asked for bytes from {have}, the server sent another range"
                )));
            }
            true
        }
        // The part file already holds the whole file: check it as it is.
        416 if have > 0 => return Ok(have),
        200 => false,
        _ => {
            return Err(FetchError::Io(format!("{url}: HTTP {status}")));
        }
    };
    let from = if keep { have } else { 0 };
    let total = response.content_length().map(|length| length + from);
    let mut output = open_part(part, keep)?;
    let mut progress =
        Progress::new(format!("download {id}"), total, from, Unit::Bytes).quiet(quiet);
    let io = |e: std::io::Error| FetchError::Io(format!("{}: {e}", part.display()));
    while let Some(chunk) = response.chunk().await.map_err(fail)? {
        output.write_all(&chunk).map_err(io)?;
        progress.advance(chunk.len() as u64);
    }
    output.sync_all().map_err(io)?;
    progress.finish();
    Ok(from)
}
