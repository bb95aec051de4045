//! Who joins: R rooms of P publishers and S subscribers, in the order they join, with the
//! streams each one should receive.

/// One generated participant.
#[derive(Debug, Clone)]
pub struct ParticipantSpec {
    /// Position in the join order; also picks the driver thread.
    pub index: usize,
    pub room: String,
    pub identity: String,
    /// `Some(n)` for the n-th publisher of the whole run: it sends streams `2n` (Opus) and
    /// `2n + 1` (VP8).
    pub publisher: Option<u32>,
    /// The streams of everybody else who publishes in the room.
    pub expected_streams: Vec<u32>,
    /// How many participants receive each of this participant's streams (if it publishes).
    pub receivers_per_stream: u64,
}

impl ParticipantSpec {
    pub fn is_subscriber(&self) -> bool {
        self.publisher.is_none()
    }
}

pub fn audio_stream(publisher: u32) -> u32 {
    2 * publisher
}

pub fn video_stream(publisher: u32) -> u32 {
    2 * publisher + 1
}

#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub rooms: u32,
    pub publishers: u32,
    pub subscribers: u32,
    pub audio_only: bool,
}

impl Shape {
    /// Streams each publisher sends.
    pub fn kinds(&self) -> u64 {
        if self.audio_only { 1 } else { 2 }
    }

    /// (receiver, stream) pairs the run should deliver.
    pub fn streams_expected(&self) -> u64 {
        let (p, s) = (u64::from(self.publishers), u64::from(self.subscribers));
        u64::from(self.rooms) * p * self.kinds() * (p - 1 + s)
    }
}

/// Everybody, in join order: the publishers of every room first (so subscribers find media
/// when they arrive and their join time means something), then the subscribers, one room after
/// the other in turn so every room fills at the same pace.
pub fn participants(shape: Shape, prefix: &str) -> Vec<ParticipantSpec> {
    let room_name = |r: u32| format!("{prefix}-r{r}");
    let streams_of_room = |room: u32, except: Option<u32>| -> Vec<u32> {
        (0..shape.publishers)
            .map(|p| room * shape.publishers + p)
            .filter(|&n| Some(n) != except)
            .flat_map(|n| {
                let video = (!shape.audio_only).then(|| video_stream(n));
                std::iter::once(audio_stream(n)).chain(video)
            })
            .collect()
    };
    let receivers = u64::from(shape.publishers - 1 + shape.subscribers);
    let mut out = Vec::new();
    for room in 0..shape.rooms {
        for p in 0..shape.publishers {
            let n = room * shape.publishers + p;
            out.push(ParticipantSpec {
                index: out.len(),
                room: room_name(room),
                identity: format!("{}-pub{p}", room_name(room)),
                publisher: Some(n),
                expected_streams: streams_of_room(room, Some(n)),
                receivers_per_stream: receivers,
            });
        }
    }
    for s in 0..shape.subscribers {
        for room in 0..shape.rooms {
            out.push(ParticipantSpec {
                index: out.len(),
                room: room_name(room),
                identity: format!("{}-sub{s}", room_name(room)),
                publisher: None,
                expected_streams: streams_of_room(room, None),
                receivers_per_stream: 0,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everybody_expects_the_others_publishers() {
        let shape = Shape {
            rooms: 2,
            publishers: 2,
            subscribers: 3,
            audio_only: false,
        };
        let all = participants(shape, "t");
        assert_eq!(all.len(), 10);
        assert!(all[..4].iter().all(|p| p.publisher.is_some()));
        assert_eq!(all[4].room, "t-r0");
        assert_eq!(all[5].room, "t-r1");
        // Publisher 1 (room 0) receives publisher 0; subscribers of room 1 receive 2 and 3.
        assert_eq!(all[1].expected_streams, vec![0, 1]);
        assert_eq!(all[5].expected_streams, vec![4, 5, 6, 7]);
        assert_eq!(all[0].receivers_per_stream, 4);
        let pairs: usize = all.iter().map(|p| p.expected_streams.len()).sum();
        assert_eq!(pairs as u64, shape.streams_expected());
        assert!(all.iter().enumerate().all(|(i, p)| p.index == i));
    }

    #[test]
    fn audio_only_halves_the_streams() {
        let shape = Shape {
            rooms: 1,
            publishers: 1,
            subscribers: 2,
            audio_only: true,
        };
        let all = participants(shape, "t");
        assert_eq!(all[1].expected_streams, vec![0]);
        assert!(all[0].expected_streams.is_empty());
        assert_eq!(shape.streams_expected(), 2);
    }
}
