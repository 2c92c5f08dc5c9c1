//! The top processes on demand (`Open{processes}`), with a summary sample measured over
//! the same time. A process's CPU share needs two measurements: the table keeps the last
//! one between requests, and measures twice, [`SECOND_MEASUREMENT`] apart, when it has none
//! recent enough to stand for "now".

use std::cmp::Ordering;
use std::time::{Duration, Instant};

use sysinfo::{
    Process, ProcessRefreshKind, ProcessStatus, ProcessesToUpdate, System, UpdateKind, Users,
};
use zpanel_proto::{ProcessInfo, ProcessList, ProcessListing, ProcessSort};

use super::collect::Collector;

/// The wait between the two measurements of a table with none recent.
const SECOND_MEASUREMENT: Duration = Duration::from_millis(200);
/// A previous measurement older than this is not "now": the table measures twice.
const RECENT: Duration = Duration::from_secs(30);
/// Processes listed when the request says 0, and at most.
const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 500;
/// The longest command line answered, in bytes.
const MAX_COMMAND: usize = 1024;

/// Every process's previous measurement, kept between requests.
pub struct ProcessTable {
    system: System,
    /// The summary, measured with the processes.
    collector: Collector,
    users: Users,
    measured: Option<Instant>,
}

impl ProcessTable {
    pub fn new() -> ProcessTable {
        // sysinfo would keep every process's stat file open between refreshes otherwise
        sysinfo::set_open_files_limit(0);
        ProcessTable {
            system: System::new(),
            collector: Collector::new(),
            users: Users::new(),
            measured: None,
        }
    }

    /// The host now and its top processes, as `request` asks. Blocks for
    /// [`SECOND_MEASUREMENT`] when the previous measurement is missing or old.
    pub fn list(&mut self, request: &ProcessList) -> ProcessListing {
        if self.measured.is_none_or(|at| at.elapsed() > RECENT) {
            self.collector = Collector::new();
            self.refresh();
            std::thread::sleep(SECOND_MEASUREMENT);
        }
        self.refresh();
        let summary = self.collector.sample();
        self.users.refresh();
        let limit = match request.limit as usize {
            0 => DEFAULT_LIMIT,
            limit => limit.min(MAX_LIMIT),
        };
        let mut processes: Vec<&Process> = self.system.processes().values().collect();
        let order = match request.sort() {
            ProcessSort::Cpu => by_cpu,
            ProcessSort::Memory => by_memory,
        };
        processes.sort_by(|a, b| order(a, b).then(a.pid().cmp(&b.pid())));
        ProcessListing {
            summary: Some(summary),
            total: u32::try_from(self.system.processes().len()).unwrap_or(u32::MAX),
            processes: processes
                .into_iter()
                .take(limit)
                .map(|process| self.describe(process))
                .collect(),
        }
    }

    fn refresh(&mut self) {
        let what = ProcessRefreshKind::nothing()
            .with_cpu()
            .with_memory()
            .with_user(UpdateKind::OnlyIfNotSet)
            .with_cmd(UpdateKind::OnlyIfNotSet)
            .without_tasks();
        self.system
            .refresh_processes_specifics(ProcessesToUpdate::All, true, what);
        self.measured = Some(Instant::now());
    }

    fn describe(&self, process: &Process) -> ProcessInfo {
        let name = process.name().to_string_lossy().into_owned();
        let command = process
            .cmd()
            .iter()
            .map(|arg| arg.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        // a kernel thread has no command line: named in brackets, as ps does
        let command = if command.is_empty() {
            format!("[{name}]")
        } else {
            truncate(command, MAX_COMMAND)
        };
        let user = process
            .user_id()
            .and_then(|uid| self.users.get_user_by_id(uid))
            .map(|user| user.name().to_string())
            .or_else(|| process.user_id().map(|uid| uid.to_string()))
            .unwrap_or_default();
        ProcessInfo {
            pid: process.pid().as_u32(),
            parent_pid: process.parent().map_or(0, sysinfo::Pid::as_u32),
            name,
            user,
            cpu_percent: f64::from(process.cpu_usage()),
            memory: process.memory(),
            command,
            state: state(process.status()),
            started_at: i64::try_from(process.start_time()).unwrap_or(0),
        }
    }
}

fn by_cpu(a: &&Process, b: &&Process) -> Ordering {
    b.cpu_usage()
        .total_cmp(&a.cpu_usage())
        .then(b.memory().cmp(&a.memory()))
}

fn by_memory(a: &&Process, b: &&Process) -> Ordering {
    b.memory()
        .cmp(&a.memory())
        .then(b.cpu_usage().total_cmp(&a.cpu_usage()))
}

/// The kernel's word for a process state (`/proc/PID/status`).
fn state(status: ProcessStatus) -> String {
    let word = match status {
        ProcessStatus::Run => "running",
        ProcessStatus::Sleep => "sleeping",
        ProcessStatus::Idle => "idle",
        ProcessStatus::UninterruptibleDiskSleep => "disk sleep",
        ProcessStatus::Stop => "stopped",
        ProcessStatus::Tracing => "tracing stop",
        ProcessStatus::Zombie => "zombie",
        ProcessStatus::Dead => "dead",
        ProcessStatus::Wakekill => "wakekill",
        ProcessStatus::Waking => "waking",
        ProcessStatus::Parked => "parked",
        ProcessStatus::LockBlocked => "lock blocked",
        ProcessStatus::Suspended => "suspended",
        ProcessStatus::Unknown(_) => "unknown",
    };
    word.to_string()
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_top_processes_of_this_machine_include_this_test() {
        let mut table = ProcessTable::new();
        let by_memory = ProcessList {
            sort: ProcessSort::Memory as i32,
            limit: 500,
        };
        let listing = table.list(&by_memory);
        let summary = listing.summary.expect("a summary");
        assert!(summary.memory_total > 0 && summary.processes >= 1);
        assert!(listing.total as usize >= listing.processes.len());
        let own = listing
            .processes
            .iter()
            .find(|p| p.pid == std::process::id())
            .expect("this test's process is listed");
        assert!(own.memory > 0 && own.started_at > 0 && own.parent_pid > 0);
        assert!(!own.user.is_empty() && !own.command.is_empty());
        assert!(
            ["running", "sleeping"].contains(&own.state.as_str()),
            "{own:?}"
        );
        let memory: Vec<u64> = listing.processes.iter().map(|p| p.memory).collect();
        assert!(memory.is_sorted_by(|a, b| a >= b), "{memory:?}");

        let by_cpu = ProcessList {
            sort: ProcessSort::Cpu as i32,
            limit: 0,
        };
        let listing = table.list(&by_cpu);
        assert!(listing.processes.len() <= DEFAULT_LIMIT);
        let cpu: Vec<f64> = listing.processes.iter().map(|p| p.cpu_percent).collect();
        assert!(cpu.is_sorted_by(|a, b| a >= b), "{cpu:?}");
        assert!(cpu.iter().all(|c| c.is_finite() && *c >= 0.0));
    }

    #[test]
    fn long_commands_are_cut_at_a_character() {
        assert_eq!(truncate("héllo".into(), 2), "h");
        assert_eq!(truncate("héllo".into(), 3), "hé");
        assert_eq!(truncate("short".into(), 1024), "short");
    }
}
