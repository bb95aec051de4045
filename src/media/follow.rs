//! Which room tracks a WHEP viewer's m-lines carry.
//!
//! A WHEP session is negotiated once, with a fixed set of receive-only m-lines (usually one
//! audio, one video), and WHEP has no way to renegotiate. So instead of adding m-lines as tracks
//! come and go, as the WebSocket protocol does, each m-line is pointed at one track at a time
//! and re-pointed when the followed publisher's tracks change; the sink keeps one continuous
//! stream (see [`super::room::Room::attach_continuing`]).
//!
//! Plain, deterministic code: the node lists the room's tracks and applies what comes out.

use super::codec::MediaKind;
use super::ids::{ParticipantId, TrackId};
use super::room::TrackSource;

/// Whom a viewer watches, from the `POST /whep/{room}` query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Follow {
    /// The room's longest-present publisher, and the next one when it leaves.
    Room,
    /// The participant with this identity (from its token), whenever it publishes: a
    /// broadcaster that reconnects is followed again.
    Identity(String),
    /// This track, and its publisher's tracks of the other kind.
    Track(TrackId),
}

/// A track of the room as [`pick`] sees it.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub track: TrackId,
    pub owner: ParticipantId,
    pub identity: &'a str,
    /// Order of presence: smaller joined earlier.
    pub joined: u128,
    pub kind: MediaKind,
    pub source: TrackSource,
}

/// For each m-line (by its kind, in order), the track it should carry now.
///
/// `fits(line, candidate)`: whether the m-line's negotiated codec can carry the track (a WHEP
/// m-line's codec is fixed by its one answer). `current` is the publisher followed so far, kept
/// while it publishes anything, so a viewer of the whole room is not moved to whoever joins.
pub fn pick(
    follow: &Follow,
    lines: &[MediaKind],
    candidates: &[Candidate<'_>],
    current: Option<ParticipantId>,
    fits: impl Fn(usize, &Candidate<'_>) -> bool,
) -> (Option<ParticipantId>, Vec<Option<TrackId>>) {
    let owner = match follow {
        Follow::Track(track) => candidates
            .iter()
            .find(|c| c.track == *track)
            .map(|c| c.owner),
        Follow::Identity(identity) => candidates
            .iter()
            .filter(|c| c.identity == identity)
            // A replaced identity (the same token joining again) is the newer participant.
            .max_by_key(|c| (c.joined, c.owner))
            .map(|c| c.owner),
        Follow::Room => current
            .filter(|owner| candidates.iter().any(|c| c.owner == *owner))
            .or_else(|| {
                // Whoever can fill a video m-line first, so a viewer gets a picture if anyone
                // sends one; then anyone at all.
                let fills_video = |c: &&Candidate<'_>| {
                    c.kind == MediaKind::Video
                        && lines
                            .iter()
                            .enumerate()
                            .any(|(i, k)| *k == MediaKind::Video && fits(i, c))
                };
                let earliest = |it: &mut dyn Iterator<Item = &Candidate<'_>>| {
                    it.min_by_key(|c| (c.joined, c.owner)).map(|c| c.owner)
                };
                earliest(&mut candidates.iter().filter(fills_video))
                    .or_else(|| earliest(&mut candidates.iter()))
            }),
    };
    let Some(owner) = owner else {
        return (None, vec![None; lines.len()]);
    };
    let mut tracks: Vec<&Candidate<'_>> = candidates.iter().filter(|c| c.owner == owner).collect();
    // The named track first, then camera before screen share.
    tracks.sort_by_key(|c| {
        let named = matches!(follow, Follow::Track(t) if *t == c.track);
        (!named, source_rank(c.source), c.track)
    });
    let mut taken: Vec<TrackId> = Vec::new();
    let chosen = lines
        .iter()
        .enumerate()
        .map(|(i, kind)| {
            let track = tracks
                .iter()
                .find(|c| c.kind == *kind && !taken.contains(&c.track) && fits(i, c))?
                .track;
            taken.push(track);
            Some(track)
        })
        .collect();
    (Some(owner), chosen)
}

fn source_rank(source: TrackSource) -> u8 {
    match source {
        TrackSource::Camera | TrackSource::Microphone => 0,
        TrackSource::Screen => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUDIO: MediaKind = MediaKind::Audio;
    const VIDEO: MediaKind = MediaKind::Video;

    fn track(
        id: u64,
        owner: u64,
        identity: &'static str,
        joined: u128,
        source: TrackSource,
    ) -> Candidate<'static> {
        let kind = match source {
            TrackSource::Microphone => AUDIO,
            TrackSource::Camera | TrackSource::Screen => VIDEO,
        };
        Candidate {
            track: TrackId(id),
            owner: ParticipantId(owner),
            identity,
            joined,
            kind,
            source,
        }
    }

    fn room() -> Vec<Candidate<'static>> {
        vec![
            track(1, 10, "early", 1, TrackSource::Microphone),
            track(2, 20, "stage", 2, TrackSource::Screen),
            track(3, 20, "stage", 2, TrackSource::Camera),
            track(4, 20, "stage", 2, TrackSource::Microphone),
            track(5, 30, "late", 3, TrackSource::Camera),
        ]
    }

    fn any(_: usize, _: &Candidate<'_>) -> bool {
        true
    }

    #[test]
    fn the_room_is_the_earliest_publisher_with_video_kept_while_it_publishes() {
        let lines = [AUDIO, VIDEO];
        let (owner, tracks) = pick(&Follow::Room, &lines, &room(), None, any);
        // "early" only has audio: the earliest with a picture is followed, camera first.
        assert_eq!(owner, Some(ParticipantId(20)));
        assert_eq!(tracks, vec![Some(TrackId(4)), Some(TrackId(3))]);
        // Someone earlier with video would not take over from the one followed.
        let mut more = room();
        more.push(track(6, 5, "earlier", 0, TrackSource::Camera));
        let (owner, _) = pick(&Follow::Room, &lines, &more, owner, any);
        assert_eq!(owner, Some(ParticipantId(20)));
        // The followed one leaves: the next one with video.
        let rest: Vec<_> = room().into_iter().filter(|c| c.owner.0 != 20).collect();
        let (owner, tracks) = pick(&Follow::Room, &lines, &rest, owner, any);
        assert_eq!(owner, Some(ParticipantId(30)));
        assert_eq!(tracks, vec![None, Some(TrackId(5))]);
        // Audio only is better than nothing.
        let (owner, tracks) = pick(&Follow::Room, &lines, &room()[..1], None, any);
        assert_eq!(
            (owner, tracks),
            (Some(ParticipantId(10)), vec![Some(TrackId(1)), None])
        );
    }

    #[test]
    fn two_video_lines_take_the_camera_and_the_screen_share() {
        let (_, tracks) = pick(&Follow::Room, &[VIDEO, AUDIO, VIDEO], &room(), None, any);
        assert_eq!(
            tracks,
            vec![Some(TrackId(3)), Some(TrackId(4)), Some(TrackId(2))]
        );
    }

    #[test]
    fn an_identity_is_followed_and_a_named_track_comes_first() {
        let lines = [AUDIO, VIDEO];
        let (owner, tracks) = pick(&Follow::Identity("late".into()), &lines, &room(), None, any);
        assert_eq!(
            (owner, tracks),
            (Some(ParticipantId(30)), vec![None, Some(TrackId(5))])
        );
        let (_, tracks) = pick(&Follow::Track(TrackId(2)), &lines, &room(), None, any);
        assert_eq!(tracks, vec![Some(TrackId(4)), Some(TrackId(2))]);
        // Not (or no longer) in the room: nothing, rather than someone else.
        let (owner, tracks) = pick(&Follow::Identity("gone".into()), &lines, &room(), None, any);
        assert_eq!((owner, tracks), (None, vec![None, None]));
        let (owner, _) = pick(&Follow::Track(TrackId(99)), &lines, &room(), None, any);
        assert_eq!(owner, None);
        // The same identity twice (a reconnecting broadcaster): the newer participant.
        let mut again = room();
        again.push(track(7, 31, "late", 9, TrackSource::Camera));
        let (owner, _) = pick(&Follow::Identity("late".into()), &lines, &again, None, any);
        assert_eq!(owner, Some(ParticipantId(31)));
    }

    #[test]
    fn a_line_only_takes_a_track_its_codec_carries() {
        // The video m-line cannot carry participant 20's camera (another codec): its screen
        // share goes there instead; nobody's video fits a line that fits nothing.
        let fits = |_: usize, c: &Candidate<'_>| c.track != TrackId(3);
        let (owner, tracks) = pick(&Follow::Room, &[VIDEO], &room(), None, fits);
        assert_eq!(
            (owner, tracks),
            (Some(ParticipantId(20)), vec![Some(TrackId(2))])
        );
        let none = |_: usize, c: &Candidate<'_>| c.kind == AUDIO;
        let (owner, tracks) = pick(&Follow::Room, &[AUDIO, VIDEO], &room(), None, none);
        assert_eq!(
            (owner, tracks),
            (Some(ParticipantId(10)), vec![Some(TrackId(1)), None])
        );
    }
}
