//! Reading the server under test from `/proc`: its resident memory (VmRSS, `/proc/PID/status`)
//! for the bytes-per-connection figure, and its CPU time (utime + stime, `/proc/PID/stat`) for the
//! server CPU per delivery. Several processes (the nodes of a cluster) are summed.

/// VmRSS of process `pid` ("self" for this process) in KiB, or `None` if it cannot be read.
pub fn vm_rss_kb(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss_kb(&status)
}

fn parse_vm_rss_kb(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
}

/// utime + stime of process `pid` (all its threads, living and exited) in clock ticks.
pub fn cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_ticks(&stat)
}

/// Fields 14 and 15 of `/proc/PID/stat`, counted after the command name's closing parenthesis (the
/// name itself may hold spaces and parentheses).
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // After the name: field 3 (state) is the first; utime and stime are fields 14 and 15.
    let mut fields = after_name.split_whitespace().skip(14 - 3);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second of the `/proc` CPU counters.
fn ticks_per_sec() -> u64 {
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100)
}

const MICROS_PER_SEC: u64 = 1_000_000;

/// The server process(es) under test.
#[derive(Debug, Clone, Default)]
pub struct ServerProcesses {
    pids: Vec<String>,
}

impl ServerProcesses {
    pub fn new(pids: &[u32]) -> Self {
        Self {
            pids: pids.iter().map(u32::to_string).collect(),
        }
    }

    /// Summed VmRSS in KiB; `None` without processes or when one cannot be read.
    pub fn rss_kb(&self) -> Option<u64> {
        self.sum(vm_rss_kb)
    }

    /// Summed CPU time in microseconds (at the counters' tick resolution, usually 10 ms).
    pub fn cpu_micros(&self) -> Option<u64> {
        let per_tick = MICROS_PER_SEC / ticks_per_sec();
        self.sum(cpu_ticks).map(|t| t * per_tick)
    }

    /// CPU time in microseconds of each process, by pid (`None` for one that cannot be read): the
    /// cross-node cases split the server side's cost between the nodes and each Redis process.
    pub fn cpu_micros_each(&self) -> Vec<(String, Option<u64>)> {
        let per_tick = MICROS_PER_SEC / ticks_per_sec();
        self.pids
            .iter()
            .map(|pid| (pid.clone(), cpu_ticks(pid).map(|t| t * per_tick)))
            .collect()
    }

    fn sum(&self, read: impl Fn(&str) -> Option<u64>) -> Option<u64> {
        if self.pids.is_empty() {
            return None;
        }
        self.pids.iter().map(|pid| read(pid)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vm_rss_line() {
        let status = "Name:\tbaseline\nVmPeak:\t  9000 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss_kb(status), Some(12345));
        assert_eq!(parse_vm_rss_kb("Name:\tx\n"), None);
    }

    #[test]
    fn reads_own_rss() {
        assert!(vm_rss_kb("self").is_some_and(|kb| kb > 0));
    }

    #[test]
    fn parses_utime_and_stime_after_an_awkward_name() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime …
        let stat = "4242 (a) b (c) S 1 4242 4242 0 -1 4194560 100 0 0 0 731 269 0 0 20 0 3 0 1 0";
        assert_eq!(parse_cpu_ticks(stat), Some(1000));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn counts_own_cpu_time() {
        let me = ServerProcesses::new(&[std::process::id()]);
        let before = me.cpu_micros().expect("own /proc/PID/stat");
        // Spin until the counter moves (it ticks every 10 ms of CPU); a counter that never moves
        // fails after a generous bound.
        let give_up = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut x = 0u64;
        while me.cpu_micros().unwrap() == before && std::time::Instant::now() < give_up {
            for _ in 0..100_000 {
                x = x.wrapping_add(std::hint::black_box(1));
            }
        }
        std::hint::black_box(x);
        assert!(
            me.cpu_micros().unwrap() > before,
            "a busy loop costs CPU time"
        );
        assert_eq!(ServerProcesses::new(&[]).cpu_micros(), None);
        let each = me.cpu_micros_each();
        assert_eq!(each.len(), 1);
        assert_eq!(each[0].0, std::process::id().to_string());
        assert!(each[0].1.is_some_and(|us| us > 0));
        assert!(me.rss_kb().is_some());
    }
}
