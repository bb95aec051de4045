//! Which media worker holds which room. Every worker is a node of its own (its rooms, legs and
//! UDP port); signaling routes a join to the worker that holds its room, and places a new room
//! on the least-loaded worker. The map is touched on joins, room creation and room closing,
//! never per packet.
//!
//! The map is the authority, and a worker confirms it: a worker that creates a room claims it
//! here, and one that closes a room releases it. A join routed to a worker just as that worker
//! closed the room (and another worker was chosen for the room meanwhile) finds the claim
//! refused; the worker refuses the join and signaling routes it again. So a room never lives on
//! two workers at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Where a room is, and whether its worker has confirmed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    worker: usize,
    /// The worker created the room (until then signaling has only chosen the worker).
    claimed: bool,
}

#[derive(Debug)]
pub struct Placement {
    rooms: Mutex<HashMap<String, Entry>>,
    max_rooms: usize,
}

/// Why no worker was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeFull;

impl Placement {
    /// Placement for a relay that holds at most `max_rooms` rooms in all.
    pub fn new(max_rooms: usize) -> Self {
        Placement {
            rooms: Mutex::new(HashMap::new()),
            max_rooms,
        }
    }

    fn rooms(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The worker holding `room`, if any.
    pub fn find(&self, room: &str) -> Option<usize> {
        self.rooms().get(room).map(|entry| entry.worker)
    }

    /// The worker for `room`: the one holding it, else the least loaded of those not `busy`
    /// (`load` per worker, lowest wins, ties to the lowest index; a busy worker only when all
    /// are), which is remembered until it claims the room or
    /// [`forget_unclaimed`](Self::forget_unclaimed) is called. Whether a busy worker still
    /// takes the join is the caller's decision (a resume, say, is never turned away).
    pub fn route(&self, room: &str, load: &[u64], busy: &[bool]) -> Result<usize, NodeFull> {
        let mut rooms = self.rooms();
        if let Some(entry) = rooms.get(room) {
            return Ok(entry.worker);
        }
        if rooms.len() >= self.max_rooms || load.is_empty() {
            return Err(NodeFull);
        }
        let mut placed = vec![0u64; load.len()];
        for entry in rooms.values() {
            if let Some(count) = placed.get_mut(entry.worker) {
                *count += 1;
            }
        }
        let worker = least_loaded(load, &placed, busy);
        rooms.insert(
            room.to_owned(),
            Entry {
                worker,
                claimed: false,
            },
        );
        Ok(worker)
    }

    /// `worker` created `room`: true when the room is placed there (or nowhere yet), false
    /// when it belongs to another worker now.
    pub fn claim(&self, room: &str, worker: usize) -> bool {
        let mut rooms = self.rooms();
        let entry = rooms.entry(room.to_owned()).or_insert(Entry {
            worker,
            claimed: false,
        });
        if entry.worker != worker {
            return false;
        }
        entry.claimed = true;
        true
    }

    /// `worker` closed `room`.
    pub fn release(&self, room: &str, worker: usize) {
        let mut rooms = self.rooms();
        if rooms.get(room).is_some_and(|entry| entry.worker == worker) {
            rooms.remove(room);
        }
    }

    /// A join or creation routed to `worker` failed before the room existed there: the choice
    /// is dropped unless the worker claimed the room meanwhile.
    pub fn forget_unclaimed(&self, room: &str, worker: usize) {
        let mut rooms = self.rooms();
        if rooms
            .get(room)
            .is_some_and(|entry| entry.worker == worker && !entry.claimed)
        {
            rooms.remove(room);
        }
    }

    /// Rooms placed, per worker (for the admin API and tests).
    pub fn rooms_per_worker(&self, workers: usize) -> Vec<usize> {
        let mut counts = vec![0; workers];
        for entry in self.rooms().values() {
            if let Some(count) = counts.get_mut(entry.worker) {
                *count += 1;
            }
        }
        counts
    }
}

/// The worker with the fewest participants plus rooms among those not busy: participants are
/// what costs CPU, and the room count is current where the participant counts (published every
/// 250 ms) lag, so a burst of new rooms is spread rather than piled on one worker. A busy worker
/// (over its measured load limit) is chosen only when every worker is.
fn least_loaded(participants: &[u64], rooms: &[u64], busy: &[bool]) -> usize {
    (0..participants.len())
        .min_by_key(|&i| {
            let busy = busy.get(i).copied().unwrap_or(false);
            (busy, participants[i] + rooms[i], i)
        })
        .unwrap_or(0)
}

/// Which of the relay's media workers a node is, and the room map they share.
#[derive(Debug, Clone)]
pub struct WorkerPlace {
    pub placement: Arc<Placement>,
    pub index: usize,
    pub workers: usize,
}

impl WorkerPlace {
    /// The only worker of a relay (tests, simulations).
    pub fn single(max_rooms: usize) -> Self {
        WorkerPlace {
            placement: Arc::new(Placement::new(max_rooms)),
            index: 0,
            workers: 1,
        }
    }

    /// Makes `id` name a participant of this worker: signaling routes a session by its
    /// participant id modulo the number of workers, so no table is needed.
    pub fn participant_id(&self, random: u64) -> u64 {
        let workers = self.workers.max(1) as u64;
        random - random % workers + self.index as u64
    }

    /// The worker a participant id belongs to.
    pub fn worker_of(participant: u64, workers: usize) -> usize {
        (participant % workers.max(1) as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_rooms_go_to_the_least_loaded_worker_and_stay_there() {
        let placement = Placement::new(10);
        assert_eq!(placement.route("a", &[5, 0, 3], &[]), Ok(1));
        // Worker 1 now has a room: with equal participants the next room goes elsewhere.
        assert_eq!(placement.route("b", &[0, 0, 0], &[]), Ok(0));
        assert_eq!(placement.route("c", &[0, 0, 0], &[]), Ok(2));
        // A known room is routed to its worker whatever the load.
        assert_eq!(placement.route("a", &[0, 100, 0], &[]), Ok(1));
        assert_eq!(placement.find("a"), Some(1));
        assert_eq!(placement.rooms_per_worker(3), vec![1, 1, 1]);
    }

    #[test]
    fn a_room_closed_while_a_join_was_on_its_way_never_lives_on_two_workers() {
        let placement = Placement::new(10);
        assert_eq!(placement.route("r", &[0, 1], &[]), Ok(0));
        assert!(placement.claim("r", 0));
        // A join is routed to worker 0; worker 0 closes the room before handling it.
        placement.release("r", 0);
        // Meanwhile another join places the room anew, on worker 1.
        assert_eq!(placement.route("r", &[5, 0], &[]), Ok(1));
        // Worker 0 handles the first join: its claim is refused, so it refuses the join, and
        // signaling routes it again, to worker 1.
        assert!(!placement.claim("r", 0));
        assert_eq!(placement.route("r", &[5, 0], &[]), Ok(1));
        assert!(placement.claim("r", 1));
        // A stale release by worker 0 does not remove worker 1's room.
        placement.release("r", 0);
        assert_eq!(placement.find("r"), Some(1));
    }

    #[test]
    fn a_failed_first_join_leaves_nothing_behind_but_a_claimed_room_stays() {
        let placement = Placement::new(10);
        assert_eq!(placement.route("r", &[0], &[]), Ok(0));
        placement.forget_unclaimed("r", 0);
        assert_eq!(placement.find("r"), None);
        assert_eq!(placement.route("r", &[0], &[]), Ok(0));
        assert!(placement.claim("r", 0));
        placement.forget_unclaimed("r", 0);
        assert_eq!(placement.find("r"), Some(0));
    }

    #[test]
    fn the_node_wide_room_limit_counts_every_worker() {
        let placement = Placement::new(2);
        assert!(placement.route("a", &[0, 0], &[]).is_ok());
        assert!(placement.route("b", &[0, 0], &[]).is_ok());
        assert_eq!(placement.route("c", &[0, 0], &[]), Err(NodeFull));
        assert!(
            placement.route("a", &[0, 0], &[]).is_ok(),
            "a known room is still routed"
        );
        placement.release("a", placement.find("a").unwrap());
        assert!(placement.route("c", &[0, 0], &[]).is_ok());
    }

    #[test]
    fn new_rooms_avoid_busy_workers_unless_every_worker_is_busy() {
        let placement = Placement::new(10);
        // Worker 0 has the fewest participants but is over its load limit.
        assert_eq!(
            placement.route("a", &[1, 4, 3], &[true, false, false]),
            Ok(2)
        );
        // A known room stays where it is, busy or not: the caller decides about the join.
        assert_eq!(
            placement.route("a", &[0, 0, 0], &[false, false, true]),
            Ok(2)
        );
        // All busy: the least loaded of them, and the caller refuses.
        assert_eq!(placement.route("b", &[1, 4, 3], &[true, true, true]), Ok(0));
        placement.forget_unclaimed("b", 0);
        assert_eq!(placement.find("b"), None);
    }
}
