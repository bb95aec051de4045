//! Signaling metrics. Registered into the relay's registry by the app; label values come only
//! from closed enums, and every combination is created at start so dashboards see zeros.

use crate::auth::TokenError;
use crate::limits::LimitCounters;
use crate::protocol::{ClientMessageKind, ErrorCode};
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use std::collections::HashMap;

pub struct SignalingMetrics {
    pub connections: IntGauge,
    /// Open HTTP connections (of every kind, WebSockets included).
    pub http_connections: IntGauge,
    pub connections_total: IntCounter,
    messages: HashMap<ClientMessageKind, IntCounter>,
    errors: HashMap<ErrorCode, IntCounter>,
    token_rejections: HashMap<&'static str, IntCounter>,
    pub limits: LimitCounters,
    origin_refusals: IntCounter,
    /// WHIP and WHEP requests answered, by method and HTTP status (`http_media_request`).
    whip_requests: IntCounterVec,
    whep_requests: IntCounterVec,
    /// Open WHIP and WHEP sessions.
    pub whip_sessions: IntGauge,
    pub whep_sessions: IntGauge,
}

impl SignalingMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let connections = IntGauge::new(
            "tern_signaling_connections",
            "Open signaling WebSocket connections.",
        )?;
        let http_connections = IntGauge::new(
            "tern_http_connections",
            "Open HTTP connections (plain and TLS, WebSockets included).",
        )?;
        registry.register(Box::new(http_connections.clone()))?;
        let connections_total = IntCounter::new(
            "tern_signaling_connections_total",
            "Signaling WebSocket connections accepted since start.",
        )?;
        let messages_vec = IntCounterVec::new(
            Opts::new(
                "tern_signaling_messages_total",
                "Well-formed client messages received, by message type.",
            ),
            &["type"],
        )?;
        let errors_vec = IntCounterVec::new(
            Opts::new(
                "tern_signaling_errors_total",
                "Error replies sent to clients, by error code.",
            ),
            &["code"],
        )?;
        let rejections_vec = IntCounterVec::new(
            Opts::new(
                "tern_signaling_token_rejections_total",
                "Connections refused before the WebSocket upgrade, by token reason code.",
            ),
            &["reason"],
        )?;
        let origin_refusals = IntCounter::new(
            "tern_signaling_origin_refusals_total",
            "HTTP requests refused because their Origin is not allowed.",
        )?;
        registry.register(Box::new(origin_refusals.clone()))?;
        let requests = |name: &str, what: &str| -> prometheus::Result<IntCounterVec> {
            let family = IntCounterVec::new(
                Opts::new(
                    name,
                    format!(
                        "{what} requests answered, by method (post, patch, delete) and HTTP status."
                    ),
                ),
                &["method", "status"],
            )?;
            registry.register(Box::new(family.clone()))?;
            // The successful answers exist from the start, so the family is there before any
            // request.
            for (method, status) in [("post", "201"), ("patch", "204"), ("delete", "200")] {
                family.with_label_values(&[method, status]);
            }
            Ok(family)
        };
        let whip_requests = requests("tern_whip_requests_total", "WHIP")?;
        let whep_requests = requests("tern_whep_requests_total", "WHEP")?;
        let whip_sessions = IntGauge::new("tern_whip_sessions", "Open WHIP sessions.")?;
        registry.register(Box::new(whip_sessions.clone()))?;
        let whep_sessions = IntGauge::new("tern_whep_sessions", "Open WHEP sessions.")?;
        registry.register(Box::new(whep_sessions.clone()))?;
        registry.register(Box::new(connections.clone()))?;
        registry.register(Box::new(connections_total.clone()))?;
        registry.register(Box::new(messages_vec.clone()))?;
        registry.register(Box::new(errors_vec.clone()))?;
        registry.register(Box::new(rejections_vec.clone()))?;
        Ok(SignalingMetrics {
            connections,
            http_connections,
            connections_total,
            messages: ClientMessageKind::ALL
                .iter()
                .map(|k| (*k, messages_vec.with_label_values(&[k.as_str()])))
                .collect(),
            errors: ErrorCode::ALL
                .iter()
                .map(|c| (*c, errors_vec.with_label_values(&[c.as_str()])))
                .collect(),
            token_rejections: TokenError::ALL
                .iter()
                .map(|e| (e.code(), rejections_vec.with_label_values(&[e.code()])))
                .collect(),
            limits: LimitCounters::register(registry)?,
            origin_refusals,
            whip_requests,
            whep_requests,
            whip_sessions,
            whep_sessions,
        })
    }

    pub fn message(&self, kind: ClientMessageKind) {
        if let Some(counter) = self.messages.get(&kind) {
            counter.inc();
        }
    }

    pub fn error(&self, code: ErrorCode) {
        if let Some(counter) = self.errors.get(&code) {
            counter.inc();
        }
    }

    pub fn token_rejected(&self, reason: TokenError) {
        if let Some(counter) = self.token_rejections.get(reason.code()) {
            counter.inc();
        }
    }
}

impl SignalingMetrics {
    pub fn origin_refused(&self) {
        self.origin_refusals.inc();
    }

    /// One WHIP (`whep`: WHEP) request answered with `status` (a three-digit code: a bounded
    /// label).
    pub fn http_media_request(&self, whep: bool, method: &'static str, status: u16) {
        let status = status.to_string();
        let family = if whep {
            &self.whep_requests
        } else {
            &self.whip_requests
        };
        family.with_label_values(&[method, status.as_str()]).inc();
    }
}
