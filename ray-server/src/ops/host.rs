//! The host as the operator tools see it (doctor, stage-model, swap-plan): every file is read below a root directory (`/` on a real box,
//! a fabricated tree in tests), so each check can be tried against host states this machine
//! does not have.

use std::io::Read as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Directories systemd searches for an `ExecStart=` command given without a path.
const SEARCH_PATH: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// A view of a host below `root`.
#[derive(Debug, Clone)]
pub struct Host {
    root: PathBuf,
}

/// Memory and swap from `/proc/meminfo`, in MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemInfo {
    /// `MemTotal`.
    pub total_mib: u64,
    /// `MemAvailable`.
    pub available_mib: u64,
    /// `SwapTotal`.
    pub swap_total_mib: u64,
    /// `SwapFree`.
    pub swap_free_mib: u64,
}

/// A user from `/etc/passwd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The name.
    pub name: String,
    /// The uid.
    pub uid: u32,
    /// The primary gid.
    pub gid: u32,
    /// Supplementary groups from `/etc/group`.
    pub groups: Vec<u32>,
}

/// What a command printed, or why it did not finish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// It ran to its end.
    Finished {
        /// Whether it exited 0.
        success: bool,
        /// stdout then stderr.
        output: String,
    },
    /// It did not finish in time and was killed.
    TimedOut,
    /// It could not be started.
    Failed(String),
}

impl Host {
    /// The host below `root`.
    pub fn new(root: impl Into<PathBuf>) -> Host {
        Host { root: root.into() }
    }

    /// Whether this is the machine itself (root `/`).
    pub fn is_real(&self) -> bool {
        self.root == Path::new("/")
    }

    /// Where the absolute host path `path` is found.
    pub fn path(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    /// Reads a text file.
    pub fn read(&self, path: &str) -> std::io::Result<String> {
        std::fs::read_to_string(self.path(path))
    }

    /// `metadata` of a host path (following symlinks).
    pub fn metadata(&self, path: &str) -> std::io::Result<std::fs::Metadata> {
        std::fs::metadata(self.path(path))
    }

    /// Whether a host path exists.
    pub fn exists(&self, path: &str) -> bool {
        self.path(path).exists()
    }

    /// `/proc/meminfo`.
    pub fn meminfo(&self) -> Option<MemInfo> {
        let text = self.read("/proc/meminfo").ok()?;
        let field = |name: &str| -> Option<u64> {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
                .map(|kib| kib / 1024)
        };
        Some(MemInfo {
            total_mib: field("MemTotal")?,
            available_mib: field("MemAvailable").unwrap_or(0),
            swap_total_mib: field("SwapTotal").unwrap_or(0),
            swap_free_mib: field("SwapFree").unwrap_or(0),
        })
    }

    /// `vm.swappiness`.
    pub fn swappiness(&self) -> Option<u32> {
        self.read("/proc/sys/vm/swappiness")
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// CPUs: the cgroup's `cpu.max` quota when set, else the processors in `/proc/cpuinfo`.
    pub fn cpu_count(&self) -> Option<u32> {
        let online = self
            .read("/proc/cpuinfo")
            .ok()
            .map(|text| {
                text.lines()
                    .filter(|l| l.starts_with("processor") && l.contains(':'))
                    .count() as u32
            })
            .filter(|n| *n > 0);
        let quota = self.read("/sys/fs/cgroup/cpu.max").ok().and_then(|text| {
            let mut parts = text.split_whitespace();
            let quota: f64 = parts.next()?.parse().ok()?;
            let period: f64 = parts.next()?.parse().ok()?;
            (period > 0.0).then(|| (quota / period).ceil().max(1.0) as u32)
        });
        match (online, quota) {
            (Some(cpus), Some(quota)) => Some(cpus.min(quota)),
            (cpus, quota) => cpus.or(quota),
        }
    }

    /// The user called `name` (or with uid `name`) in `/etc/passwd`, with its groups.
    pub fn user(&self, name: &str) -> Option<User> {
        let passwd = self.read("/etc/passwd").ok()?;
        let by_uid: Option<u32> = name.parse().ok();
        let mut user = passwd.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() < 4 {
                return None;
            }
            let uid: u32 = fields[2].parse().ok()?;
            let matches = fields[0] == name || by_uid == Some(uid);
            matches.then(|| User {
                name: fields[0].to_string(),
                uid,
                gid: fields[3].parse().unwrap_or(uid),
                groups: Vec::new(),
            })
        })?;
        if let Ok(groups) = self.read("/etc/group") {
            for line in groups.lines() {
                let fields: Vec<&str> = line.split(':').collect();
                if fields.len() >= 4
                    && fields[3].split(',').any(|member| member == user.name)
                    && let Ok(gid) = fields[2].parse()
                {
                    user.groups.push(gid);
                }
            }
        }
        Some(user)
    }

    /// Whether `user` may read the host path (and traverse the directories to it below the
    /// root). Root may read anything.
    pub fn readable_by(&self, path: &str, user: &User) -> bool {
        self.allowed(path, user, 0o4) && self.traversable(path, user)
    }

    /// Whether `user` may execute the host path.
    pub fn executable_by(&self, path: &str, user: &User) -> bool {
        self.allowed(path, user, 0o1) && self.traversable(path, user)
    }

    fn allowed(&self, path: &str, user: &User, bit: u32) -> bool {
        let Ok(meta) = self.metadata(path) else {
            return false;
        };
        if user.uid == 0 {
            return bit != 0o1 || meta.mode() & 0o111 != 0;
        }
        let mode = meta.mode();
        if meta.uid() == user.uid {
            mode & (bit << 6) != 0
        } else if meta.gid() == user.gid || user.groups.contains(&meta.gid()) {
            mode & (bit << 3) != 0
        } else {
            mode & bit != 0
        }
    }

    fn traversable(&self, path: &str, user: &User) -> bool {
        let mut current = String::new();
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        for part in parts.iter().take(parts.len().saturating_sub(1)) {
            current.push('/');
            current.push_str(part);
            if !self.allowed(&current, user, 0o1) {
                return false;
            }
        }
        true
    }

    /// Free MiB for unprivileged writers on the file system holding the host path (or its
    /// nearest existing parent).
    pub fn free_mib(&self, path: &str) -> Option<u64> {
        let mut candidate = self.path(path);
        loop {
            if candidate.exists() {
                let stat = rustix::fs::statvfs(&candidate).ok()?;
                return Some(stat.f_bavail.saturating_mul(stat.f_frsize) / (1024 * 1024));
            }
            if !candidate.pop() {
                return None;
            }
        }
    }

    /// Resolves a command as systemd would: a path is taken as it is; a bare name is looked up
    /// in systemd's fixed search path. Returns the host path.
    pub fn resolve_command(&self, command: &str) -> Option<String> {
        if command.contains('/') {
            return Some(command.to_string());
        }
        SEARCH_PATH
            .iter()
            .map(|dir| format!("{dir}/{command}"))
            .find(|path| self.exists(path))
    }

    /// Runs the host executable `path` with `args`, for at most `limit`.
    pub fn run(&self, path: &str, args: &[&str], limit: Duration) -> RunOutcome {
        let child = Command::new(self.path(path))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(child) => child,
            Err(error) => return RunOutcome::Failed(error.to_string()),
        };
        // Read the pipes on their own threads so a chatty child cannot block on a full pipe.
        let readers: Vec<_> = [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        .map(|mut pipe| {
            std::thread::spawn(move || {
                let mut text = Vec::new();
                let _ = std::io::Read::by_ref(&mut pipe)
                    .take(4 << 20)
                    .read_to_end(&mut text);
                String::from_utf8_lossy(&text).into_owned()
            })
        })
        .collect();
        let started = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if started.elapsed() < limit => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(None) | Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
            }
        };
        let output: String = readers
            .into_iter()
            .map(|reader| reader.join().unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n");
        match status {
            Some(status) => RunOutcome::Finished {
                success: status.success(),
                output,
            },
            None => RunOutcome::TimedOut,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn proc_files_and_users_are_read_below_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let host = Host::new(dir.path());
        std::fs::create_dir_all(host.path("/proc/sys/vm")).unwrap();
        std::fs::create_dir_all(host.path("/etc")).unwrap();
        std::fs::create_dir_all(host.path("/sys/fs/cgroup")).unwrap();
        std::fs::write(
            host.path("/proc/meminfo"),
            "MemTotal:        4001036 kB\nMemFree: 1 kB\nMemAvailable:    3000000 kB\nSwapTotal:       1048572 kB\nSwapFree:         524288 kB\n",
        )
        .unwrap();
        std::fs::write(host.path("/proc/sys/vm/swappiness"), "60\n").unwrap();
        std::fs::write(
            host.path("/proc/cpuinfo"),
            "processor\t: 0\nmodel name\t: x\n\nprocessor\t: 1\n",
        )
        .unwrap();
        std::fs::write(host.path("/sys/fs/cgroup/cpu.max"), "max 100000\n").unwrap();
        std::fs::write(
            host.path("/etc/passwd"),
            "root:x:0:0:root:/root:/bin/bash\nray:x:999:998::/var/lib/ray:/usr/sbin/nologin\n",
        )
        .unwrap();
        std::fs::write(
            host.path("/etc/group"),
            "ray:x:998:\nmodels:x:1001:ray,bob\n",
        )
        .unwrap();
        let memory = host.meminfo().unwrap();
        assert_eq!(memory.total_mib, 3907);
        assert_eq!(memory.swap_total_mib, 1023);
        assert_eq!(memory.swap_free_mib, 512);
        assert_eq!(host.swappiness(), Some(60));
        assert_eq!(host.cpu_count(), Some(2));
        std::fs::write(host.path("/sys/fs/cgroup/cpu.max"), "50000 100000\n").unwrap();
        assert_eq!(host.cpu_count(), Some(1));
        let ray = host.user("ray").unwrap();
        assert_eq!(
            (ray.uid, ray.gid, ray.groups.clone()),
            (999, 998, vec![1001])
        );
        assert_eq!(host.user("999").unwrap().name, "ray");
        assert!(host.user("nobody").is_none());
        assert!(!host.is_real());
    }

    #[test]
    fn commands_are_run_with_a_time_limit() {
        let dir = tempfile::tempdir().unwrap();
        let host = Host::new(dir.path());
        std::fs::create_dir_all(host.path("/bin")).unwrap();
        let script = host.path("/bin/tool");
        std::fs::write(&script, "#!/bin/sh\necho \"--flag $1\"\n").unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        assert_eq!(host.resolve_command("tool").as_deref(), Some("/bin/tool"));
        match host.run("/bin/tool", &["--help"], Duration::from_secs(10)) {
            RunOutcome::Finished { success, output } => {
                assert!(success);
                assert!(output.contains("--flag --help"), "{output}");
            }
            other => panic!("{other:?}"),
        }
        std::fs::write(&script, "#!/bin/sh\nexec sleep 30\n").unwrap();
        assert_eq!(
            host.run("/bin/tool", &[], Duration::from_millis(200)),
            RunOutcome::TimedOut
        );
        assert!(matches!(
            host.run("/bin/missing", &[], Duration::from_secs(1)),
            RunOutcome::Failed(_)
        ));
    }
}
