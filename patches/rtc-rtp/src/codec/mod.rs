/// AV1 payload format ([RFC 9628]).
pub mod av1;
/// G.711 and G.722 payload formats, which need no fragmentation.
pub mod g7xx;
/// H.264 payload format ([RFC 6184]): STAP-A aggregation and FU-A fragmentation.
pub mod h264;
/// H.265/HEVC payload format ([RFC 7798]).
pub mod h265;
/// Opus payload format ([RFC 7587]), one packet per frame.
pub mod opus;
/// SMPTE ST 336 (KLV) payload ([RFC 6597]).
pub mod smpte336m;
/// VP8 payload format ([RFC 7741]).
pub mod vp8;
/// VP9 payload format (draft-ietf-payload-vp9).
pub mod vp9;
