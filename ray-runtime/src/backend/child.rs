//! Children that never outlive the gateway.
//!
//! Two guards, because neither covers every case alone:
//!
//! - **A parent-death signal.** Each child is started through `setpriv --pdeathsig KILL`
//!   (util-linux), which asks the kernel to SIGKILL it when its parent goes, and then runs
//!   `llama-server` in its place (the setting survives the exec). The kernel's "parent" is the
//!   *thread* that forked, so every child is forked by one dedicated thread that lives as long
//!   as the gateway process ([`spawn_tied`]); a worker or blocking-pool thread that ends would
//!   take the child with it. A `kill -9` of the gateway ends that thread, so the kernel kills
//!   the children. Without `setpriv` on the `PATH` (or the usual sbin/bin directories) the
//!   child starts directly, and the gateway says so once.
//! - **Pid files.** Each running child is recorded in the state directory (`children/`, its
//!   pid and command line). At start, [`end_earlier_children`] ends any recorded process whose
//!   `/proc/<pid>/cmdline` is still exactly the recorded one (a reused pid is left alone), so a
//!   child that escaped (the gateway died between fork and `setpriv`'s `prctl`, or ran
//!   without `setpriv`) is ended by the next start.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

type Job = (
    Command,
    tokio::runtime::Handle,
    oneshot::Sender<std::io::Result<Child>>,
);

/// Where `setpriv` is, when it can be found.
pub fn setpriv() -> Option<&'static Path> {
    static FOUND: OnceLock<Option<PathBuf>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).collect())
                .unwrap_or_default();
            dirs.extend(["/usr/bin", "/bin", "/usr/sbin", "/sbin"].map(PathBuf::from));
            dirs.into_iter()
                .map(|d| d.join("setpriv"))
                .find(|p| p.is_file())
        })
        .as_deref()
}

/// Checks that `program` can be run (a path to an executable file, or a name found on the
/// `PATH`): started through `setpriv`, a missing program would otherwise show only as
/// `setpriv`'s exit status.
pub fn check_program(program: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let runnable = |path: &Path| {
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let found = if program.contains('/') {
        let path = Path::new(program);
        if !path.exists() {
            return Err(std::io::Error::from(rustix::io::Errno::NOENT));
        }
        runnable(path)
    } else {
        let found = std::env::var_os("PATH").is_some_and(|paths| {
            std::env::split_paths(&paths).any(|dir| runnable(&dir.join(program)))
        });
        if !found {
            return Err(std::io::Error::from(rustix::io::Errno::NOENT));
        }
        true
    };
    if found {
        Ok(())
    } else {
        Err(std::io::Error::from(rustix::io::Errno::ACCESS))
    }
}

/// The program and arguments that run `program args` tied to its parent: through
/// `setpriv --pdeathsig KILL` when it exists, else as is.
pub fn tied_command(program: &str, args: &[String]) -> (String, Vec<String>) {
    match setpriv() {
        Some(setpriv) => {
            let mut all = vec![
                "--pdeathsig".to_string(),
                "KILL".to_string(),
                "--".to_string(),
                program.to_string(),
            ];
            all.extend(args.iter().cloned());
            (setpriv.display().to_string(), all)
        }
        None => {
            static WARNED: OnceLock<()> = OnceLock::new();
            WARNED.get_or_init(|| {
                tracing::warn!(
                    "setpriv (util-linux) is not installed: a gateway killed with SIGKILL leaves \
                     its llama-server children running until its next start ends them"
                );
            });
            (program.to_string(), args.to_vec())
        }
    }
}

fn spawner() -> &'static mpsc::Sender<Job> {
    static SPAWNER: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (send, receive) = mpsc::channel::<Job>();
        // Never joined: it lives as long as the process, which is the point.
        let started = std::thread::Builder::new()
            .name("ray-child-spawner".into())
            .spawn(move || {
                while let Ok((mut command, handle, reply)) = receive.recv() {
                    let _entered = handle.enter();
                    let _ = reply.send(command.spawn());
                }
            });
        if let Err(error) = started {
            tracing::error!(error = %error, "cannot start the child-spawning thread");
        }
        send
    })
}

/// Spawns `command` from the gateway's child-spawning thread, so a parent-death signal set in
/// the child follows the gateway process rather than a thread that may end before it. Call it
/// from inside a Tokio runtime.
pub async fn spawn_tied(command: Command) -> std::io::Result<Child> {
    let (reply, answer) = oneshot::channel();
    let handle = tokio::runtime::Handle::current();
    if spawner().send((command, handle, reply)).is_err() {
        return Err(std::io::Error::other("the child-spawning thread is gone"));
    }
    answer
        .await
        .map_err(|_| std::io::Error::other("the child-spawning thread did not answer"))?
}

/// What a pid file records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PidRecord {
    /// The child's pid.
    pub pid: u32,
    /// Its command line as `/proc/<pid>/cmdline` shows it (after `setpriv` ran it).
    pub cmdline: Vec<String>,
}

/// The pid file of the child of `model` in `state_dir`.
pub fn pid_file(state_dir: &Path, model: &str) -> PathBuf {
    let safe: String = model
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    state_dir.join("children").join(format!("{safe}.pid.json"))
}

/// Records a running child.
pub fn write_pid_file(path: &Path, record: &PidRecord) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let bytes = serde_json::to_vec(record).map_err(std::io::Error::other)?;
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, bytes)?;
    std::fs::rename(&temp, path)
}

/// The command line of process `pid`, when it runs.
fn cmdline(pid: u32) -> Option<Vec<String>> {
    let bytes = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        bytes
            .split(|b| *b == 0)
            .filter(|part| !part.is_empty())
            .map(|part| String::from_utf8_lossy(part).into_owned())
            .collect(),
    )
}

/// Ends the children an earlier run of the gateway recorded in `state_dir` and left running
/// (SIGTERM, SIGKILL after a second), and removes their pid files. Returns the pids ended.
pub fn end_earlier_children(state_dir: &Path) -> Vec<u32> {
    let mut ended = Vec::new();
    let Ok(entries) = std::fs::read_dir(state_dir.join("children")) else {
        return ended;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let record: Option<PidRecord> = std::fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        if let Some(record) = record
            && record.pid != std::process::id()
            && cmdline(record.pid).is_some_and(|running| running == record.cmdline)
            && let Some(pid) = rustix::process::Pid::from_raw(record.pid as i32)
        {
            tracing::warn!(
                pid = record.pid,
                command = %record.cmdline.join(" "),
                "a llama-server child of an earlier gateway still runs; ending it"
            );
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            let gone = |pid: u32| cmdline(pid).is_none_or(|c| c != record.cmdline) || zombie(pid);
            let mut waited = Duration::ZERO;
            while !gone(record.pid) && waited < Duration::from_secs(1) {
                std::thread::sleep(Duration::from_millis(20));
                waited += Duration::from_millis(20);
            }
            if !gone(record.pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
            ended.push(record.pid);
        }
        let _ = std::fs::remove_file(&path);
    }
    ended
}

/// Whether `pid` is a zombie (ended, not yet reaped by its parent).
fn zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let after = stat.rsplit_once(')')?.1;
            after.split_whitespace().next().map(|s| s == "Z")
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_recorded_child_still_running_is_ended_and_a_reused_pid_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        // `spawn` can return while the kernel is still setting up the new program, when
        // `/proc/<pid>/cmdline` reads empty: wait for the command line the record names.
        let live = vec!["sleep".to_string(), "30".to_string()];
        for _ in 0..500 {
            if cmdline(pid).as_ref() == Some(&live) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(cmdline(pid).as_ref(), Some(&live), "sleep runs");
        write_pid_file(
            &pid_file(dir.path(), "a/b"),
            &PidRecord {
                pid,
                cmdline: live.clone(),
            },
        )
        .unwrap();
        // Another record names this test's own pid with another command: left alone.
        write_pid_file(
            &pid_file(dir.path(), "other"),
            &PidRecord {
                pid: std::process::id(),
                cmdline: vec!["llama-server".into()],
            },
        )
        .unwrap();
        assert_eq!(end_earlier_children(dir.path()), vec![pid]);
        let status = child.wait().unwrap();
        assert!(!status.success(), "{status:?}");
        assert_eq!(
            std::fs::read_dir(dir.path().join("children"))
                .unwrap()
                .count(),
            0,
            "pid files are removed"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tied_child_gets_the_death_signal_and_runs_its_program() {
        let Some(_) = setpriv() else {
            eprintln!("SKIPPED: setpriv is not installed");
            return;
        };
        let (program, args) = tied_command("sleep", &["30".to_string()]);
        let mut command = Command::new(program);
        command.args(args).kill_on_drop(true);
        let mut child = spawn_tied(command).await.unwrap();
        let pid = child.id().unwrap();
        // setpriv replaced itself with the program: the pid file's command is the program's.
        let mut seen = None;
        for _ in 0..100 {
            seen = cmdline(pid);
            if seen
                .as_ref()
                .is_some_and(|c| c.first().is_some_and(|p| p == "sleep"))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(seen.unwrap(), vec!["sleep".to_string(), "30".to_string()]);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        // The parent-death signal is not in /proc; it is checked end to end by killing a
        // gateway (ray-server/tests). Here: the child's parent is this process.
        let ppid = status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .unwrap()
            .trim()
            .parse::<u32>()
            .unwrap();
        assert_eq!(ppid, std::process::id());
        child.kill().await.unwrap();
    }
}
