//! CPU time of a process or of some of its threads, from `/proc/PID/stat`
//! (`utime` + `stime`, in clock ticks of `sysconf(_SC_CLK_TCK)`, normally
//! 100 per second: a reading is good to 10 ms, so a measurement divides
//! the difference of two readings over a window of seconds).

use std::time::Duration;

/// `utime` + `stime` of one `stat` line (a process's or a thread's).
fn stat_cpu(stat: &str) -> Option<Duration> {
    // The command name is in parentheses and may hold spaces or parentheses
    // itself: the fields that follow start after the last `)`. `utime` and
    // `stime` are fields 14 and 15 of the line, 12 and 13 after the name.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(ticks(utime + stime))
}

fn ticks(n: u64) -> Duration {
    let per_second = rustix::param::clock_ticks_per_second().max(1);
    Duration::from_secs(n / per_second)
        + Duration::from_nanos((n % per_second) * 1_000_000_000 / per_second)
}

/// The CPU time (user + system, every thread, living or ended) `pid` has
/// used so far; `None` once it has exited.
#[must_use]
pub fn process_cpu(pid: u32) -> Option<Duration> {
    stat_cpu(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The CPU time this process has used so far.
#[must_use]
pub fn own_cpu() -> Duration {
    process_cpu(std::process::id()).unwrap_or_default()
}

/// The CPU time used so far by this process's living threads named `name`
/// (e.g. the workers of a runtime built with `thread_name`; names are cut
/// to 15 bytes by the kernel, so `name` should be shorter).
#[must_use]
pub fn own_threads_cpu(name: &str) -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    tasks
        .filter_map(|t| {
            let dir = t.ok()?.path();
            let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
            if comm.trim_end() != name {
                return None;
            }
            stat_cpu(&std::fs::read_to_string(dir.join("stat")).ok()?)
        })
        .sum()
}

/// Steps of the [`yardstick`]'s workload.
pub const YARDSTICK_STEPS: u64 = 50_000_000;

/// How fast this machine runs one thread of plain integer work now: the
/// shortest wall time over five runs of [`YARDSTICK_STEPS`] dependent
/// multiply-adds (release build: 312–322 ms on session 16's machine while
/// it was otherwise idle, about 600 ms with both cores busy; 55 ms on
/// session 17's), so it means something only when nothing else runs.
///
/// It tells whether the machine was slow or busy during a run, not how
/// much CPU the server will take: the server's CPU goes mostly to system
/// calls and thread wake-ups, whose cost in a virtual machine moves apart
/// from a core's integer speed (session 17's machine ran this 5.7 times
/// faster than session 16's and the server's CPU per item only 2 times;
/// docs/BENCHMARKS.md, "Session 16" and "Session 17"). Compare sessions by
/// the server's CPU beside the harness's, with this as a sanity check.
#[must_use]
pub fn yardstick() -> Duration {
    (0..5)
        .map(|_| workload_time(YARDSTICK_STEPS))
        .min()
        .unwrap_or_default()
}

/// The wall time of `steps` dependent multiply-adds on this thread.
fn workload_time(steps: u64) -> Duration {
    let started = std::time::Instant::now();
    let mut x = 1u64;
    for i in 0..steps {
        x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i));
    }
    std::hint::black_box(x);
    started.elapsed()
}

/// The CPU time every core of the machine has spent busy so far (the first
/// line of `/proc/stat`: user, nice, system, irq, softirq and steal; guest
/// time is within user): with the readings above, what other processes
/// took while a measurement ran.
#[must_use]
pub fn machine_busy() -> Option<Duration> {
    machine_busy_of(&std::fs::read_to_string("/proc/stat").ok()?)
}

fn machine_busy_of(stat: &str) -> Option<Duration> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_ascii_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy = [0, 1, 2, 5, 6, 7]
        .iter()
        .map(|&i| f.get(i).copied().unwrap_or(0))
        .sum();
    Some(ticks(busy))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_times_follow_the_name_even_with_parentheses_in_it() {
        let line =
            "4242 (tokio (x) 1) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 1234 0 0";
        assert_eq!(stat_cpu(line), Some(ticks(300)));
        assert_eq!(stat_cpu("garbage"), None);
    }

    #[test]
    fn the_yardstick_grows_with_its_workload() {
        let best = |steps| {
            (0..5)
                .map(|_| workload_time(steps))
                .min()
                .unwrap_or_default()
        };
        // A hundredth of the yardstick's work: quick in a debug build.
        let one = best(YARDSTICK_STEPS / 100);
        let eight = best(YARDSTICK_STEPS / 100 * 8);
        assert!(one > Duration::ZERO);
        assert!(
            eight > one * 2,
            "eight times the work took {eight:?}, once took {one:?}"
        );
    }

    #[test]
    fn the_machine_busy_time_leaves_idle_and_iowait_out() {
        let stat = "cpu  100 2 30 5000 40 1 3 4 0 0\ncpu0 50 1 15 2500 20 1 1 2 0 0\n";
        assert_eq!(machine_busy_of(stat), Some(ticks(140)));
        assert!(machine_busy().is_some());
    }

    #[test]
    fn own_cpu_time_grows_with_work() {
        let before = own_cpu();
        let t0 = std::time::Instant::now();
        let mut x = 0u64;
        while t0.elapsed() < Duration::from_millis(100) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        assert!(own_cpu() > before);
        assert!(process_cpu(u32::MAX).is_none());
    }
}
