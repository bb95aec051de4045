//! An idle relay costs nothing: its media workers sleep until a datagram, a command or a timer
//! is due. (A worker that lost track of its socket's readiness spins at 100 % of a core and
//! still forwards everything, so only its CPU shows it; the benchmark found one.) In a test
//! binary of its own, so that no other test's relay runs threads in this process meanwhile.

mod common;

use common::*;

/// CPU ticks (user + system) each of this process's `tern-node-*` threads has used.
fn node_thread_ticks() -> Vec<u64> {
    let mut ticks = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let path = task.path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if !name.starts_with("tern-node-") {
            continue;
        }
        let stat = std::fs::read_to_string(path.join("stat")).unwrap_or_default();
        // Fields after the command name's closing parenthesis; utime and stime are 14 and 15.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        if let (Some(user), Some(system)) = (fields.get(11), fields.get(12)) {
            ticks.push(user.parse::<u64>().unwrap_or(0) + system.parse::<u64>().unwrap_or(0));
        }
    }
    ticks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_workers_sleep_until_a_datagram_arrives() {
    // A worker that lost track of its socket's readiness spins at 100 % of a core; an idle one
    // wakes for its timers only. Two participants are connected (legs, timers) but send nothing.
    let relay = start_relay(|c| c.media.workers = 2).await;
    let _alice = Client::connect(&relay, "idle", "alice").await;
    let mut bob = Client::connect(&relay, "idle", "bob").await;
    bob.wait_subscribed().await;
    let before = node_thread_ticks();
    assert_eq!(before.len(), 2, "two tern-node threads in this process");
    let ticks_per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    let started = std::time::Instant::now();
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let used: u64 = node_thread_ticks()
        .iter()
        .zip(&before)
        .map(|(after, before)| after - before)
        .sum();
    let share = used as f64 / ticks_per_s as f64 / elapsed;
    // Spinning is about 1.0 per thread; idle is well under 0.05.
    assert!(
        share < 0.3,
        "the idle workers used {:.0} % of a core",
        share * 100.0
    );
}
