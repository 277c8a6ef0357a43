//! Pure parsers for the files pressure signals come from: `/proc/self/status`,
//! `/proc/self/cgroup`, PSI files, and cgroup v1 and v2 interface files. Each takes the file's
//! text and returns what it could read; malformed text yields `None` (or skips the bad line),
//! never a panic.

/// A cgroup limit: a byte (or microsecond) count, or no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    /// `max` (v2), `-1` or a value near `i64::MAX` (v1).
    Unlimited,
    /// A finite limit.
    Value(u64),
}

impl Limit {
    /// The finite limit, if there is one.
    pub(crate) fn value(self) -> Option<u64> {
        match self {
            Limit::Unlimited => None,
            Limit::Value(value) => Some(value),
        }
    }
}

/// cgroup v1 writes "no limit" as the largest page-aligned `i64`; anything this large is
/// no limit on any machine.
const V1_UNLIMITED_FLOOR: u64 = 1 << 62;

/// The `VmRSS:` line of `/proc/<pid>/status`, in bytes.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut parts = line.split_whitespace().skip(1);
    let value: u64 = parts.next()?.parse().ok()?;
    let factor = match parts.next().unwrap_or("kB") {
        "kB" | "KB" | "kb" => 1024,
        "mB" | "MB" => 1024 * 1024,
        "B" => 1,
        _ => return None,
    };
    value.checked_mul(factor)
}

/// A single unsigned number (`memory.current`, `memory.usage_in_bytes`, ...).
pub(crate) fn parse_u64(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// A v2 limit file (`memory.max`, `memory.high`, `memory.swap.max`): a number or `max`.
pub(crate) fn parse_limit(text: &str) -> Option<Limit> {
    match text.trim() {
        "max" => Some(Limit::Unlimited),
        other => other.parse().ok().map(Limit::Value),
    }
}

/// A v1 limit file (`memory.limit_in_bytes`, `cpu.cfs_quota_us`): a number, where `-1` and
/// values near `i64::MAX` mean no limit.
pub(crate) fn parse_v1_limit(text: &str) -> Option<Limit> {
    let text = text.trim();
    if text == "-1" {
        return Some(Limit::Unlimited);
    }
    let value: u64 = text.parse().ok()?;
    Some(if value >= V1_UNLIMITED_FLOOR {
        Limit::Unlimited
    } else {
        Limit::Value(value)
    })
}

/// Lines of `key value` (`memory.events`, `memory.stat`, `cpu.stat`, `memory.oom_control`):
/// the value of `key`, if a well-formed line has it.
pub(crate) fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut parts = line.split_whitespace();
        (parts.next()? == key).then_some(())?;
        let value = parts.next()?.parse().ok()?;
        parts.next().is_none().then_some(value)
    })
}

/// One line of a PSI file: `some avg10=0.12 avg60=0.05 avg300=0.01 total=12345`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct PsiLine {
    /// Share of the last 10 s, in percent.
    pub(crate) avg10: f64,
    /// Share of the last 60 s, in percent.
    pub(crate) avg60: f64,
    /// Share of the last 300 s, in percent.
    pub(crate) avg300: f64,
    /// Total stall time, in microseconds.
    pub(crate) total_usec: u64,
}

/// A PSI file (`/proc/pressure/memory`, `<cgroup>/cpu.pressure`): the `some` line and, when
/// present, the `full` line.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Psi {
    /// At least one task stalled.
    pub(crate) some: Option<PsiLine>,
    /// All non-idle tasks stalled at once.
    pub(crate) full: Option<PsiLine>,
}

/// Parses a PSI file; `None` if it has neither a well-formed `some` nor `full` line.
pub(crate) fn parse_psi(text: &str) -> Option<Psi> {
    let mut psi = Psi::default();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let kind = parts.next();
        let Some(parsed) = parse_psi_fields(parts) else {
            continue;
        };
        match kind {
            Some("some") => psi.some = Some(parsed),
            Some("full") => psi.full = Some(parsed),
            _ => {}
        }
    }
    (psi.some.is_some() || psi.full.is_some()).then_some(psi)
}

fn parse_psi_fields<'a>(fields: impl Iterator<Item = &'a str>) -> Option<PsiLine> {
    let (mut avg10, mut avg60, mut avg300, mut total) = (None, None, None, None);
    for field in fields {
        let (key, value) = field.split_once('=')?;
        match key {
            "avg10" => avg10 = Some(percent(value)?),
            "avg60" => avg60 = Some(percent(value)?),
            "avg300" => avg300 = Some(percent(value)?),
            "total" => total = Some(value.parse().ok()?),
            _ => {}
        }
    }
    Some(PsiLine {
        avg10: avg10?,
        avg60: avg60?,
        avg300: avg300?,
        total_usec: total?,
    })
}

/// A PSI percentage: finite and within 0 to 100.
fn percent(text: &str) -> Option<f64> {
    let value: f64 = text.parse().ok()?;
    (value.is_finite() && (0.0..=100.0).contains(&value)).then_some(value)
}

/// Where `/proc/self/cgroup` places this process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CgroupPaths {
    /// The v2 (unified) path, from the `0::/path` line.
    pub(crate) unified: Option<String>,
    /// The v1 memory controller's path.
    pub(crate) memory: Option<String>,
    /// The v1 cpu controller's path, and the directory name the controller is mounted under
    /// (`cpu`, `cpu,cpuacct`, ...).
    pub(crate) cpu: Option<(String, String)>,
}

/// Parses `/proc/self/cgroup`: lines of `hierarchy-id:controllers:path`. Paths must be
/// absolute and may not climb out with `..`; anything else is ignored.
pub(crate) fn parse_proc_cgroup(text: &str) -> CgroupPaths {
    let mut paths = CgroupPaths::default();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if !path.starts_with('/') || path.split('/').any(|part| part == "..") {
            continue;
        }
        if id == "0" && controllers.is_empty() {
            paths.unified = Some(path.to_string());
            continue;
        }
        let names: Vec<&str> = controllers.split(',').collect();
        if names.contains(&"memory") {
            paths.memory = Some(path.to_string());
        }
        if names.contains(&"cpu") {
            paths.cpu = Some((controllers.to_string(), path.to_string()));
        }
    }
    paths
}

/// `cpu.max`: `"$QUOTA $PERIOD"`, where the quota may be `max`.
pub(crate) fn parse_cpu_max(text: &str) -> Option<(Limit, u64)> {
    let mut parts = text.split_whitespace();
    let quota = parse_limit(parts.next()?)?;
    let period: u64 = parts.next()?.parse().ok()?;
    (parts.next().is_none() && period > 0).then_some((quota, period))
}

#[cfg(test)]
mod tests;
