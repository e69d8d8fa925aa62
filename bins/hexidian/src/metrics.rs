//! `GET /metrics`: OpenMetrics text (the `prometheus-client` encoder) of the state hexidian
//! keeps anyway: the broker's counters (counted once their journal entries are committed, so a
//! replayed run never counts twice), the queue, the stall, the links and the unbound-handset
//! workflow. Everything is read from memory once per scrape; nothing scans the journal, so a
//! scrape costs the same at any event size.

use broker_core::ports::{EventFeed, FeedHealth};
use broker_core::{BrokerStatus, LATENCY_BUCKETS, Latency};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::Health;

/// What one scrape shows, copied out of the shared state.
#[derive(Debug)]
struct Snapshot {
    feed: FeedHealth,
    feed_counts: guru3_client::client::FeedStatus,
    fetch_latency: Latency,
    omm_up: bool,
    omm_sessions: u64,
    omm_in_flight: i64,
    omm_failed: u64,
    omm_requests: Latency,
    stream_clients: usize,
    stream_dropped: u64,
    broker: Option<BrokerStatus>,
    unbound: Option<unbound_handsets::Status>,
    drift: Option<crate::drift::Report>,
    role: crate::ha::Role,
    takeovers: u64,
}

impl Snapshot {
    fn take(h: &Health) -> Self {
        Self {
            feed: h.feed.health(),
            feed_counts: h.feed.status(),
            fetch_latency: h.feed.fetch_latency(),
            omm_up: h.omm.is_up(),
            omm_sessions: h.omm.connects(),
            omm_in_flight: h.omm_stats.in_flight(),
            omm_failed: h.omm_stats.failed(),
            omm_requests: h.omm_stats.latency(),
            stream_clients: h.hub.clients(),
            stream_dropped: h.hub.dropped(),
            broker: h.broker_status(),
            unbound: h.unbound_status(),
            drift: h.drift_report(),
            role: h.ha.role(),
            takeovers: h.ha.takeovers(),
        }
    }
}

fn counter(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    v: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

fn counters(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    values: &[(&[(&str, &str)], u64)],
) -> Result<(), std::fmt::Error> {
    let probe = ConstCounter::new(0u64);
    let mut m = e.encode_descriptor(name, help, None, probe.metric_type())?;
    for (labels, v) in values {
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    v: i64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

fn histogram(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    l: &Latency,
) -> Result<(), std::fmt::Error> {
    let mut m = e.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
    let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
        .iter()
        .copied()
        .chain(std::iter::once(f64::MAX))
        .zip(l.buckets.iter().copied())
        .collect();
    // microseconds to seconds; exact far beyond any sum a process reaches
    #[allow(clippy::cast_precision_loss)]
    let sum = l.sum_us as f64 / 1e6;
    m.encode_histogram::<NoLabelSet>(sum, l.count, &buckets, None)
}

fn info(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    labels: Vec<(&'static str, String)>,
) -> Result<(), std::fmt::Error> {
    let i = Info::new(labels);
    i.encode(e.encode_descriptor(name, help, None, i.metric_type())?)
}

impl Collector for Snapshot {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        info(
            &mut e,
            "hexidian_build",
            "the running build",
            vec![("version", env!("CARGO_PKG_VERSION").to_owned())],
        )?;
        let roles = ["single", "starting", "standby", "active"];
        let labels: Vec<[(&str, &str); 1]> = roles.iter().map(|r| [("role", *r)]).collect();
        let probe = ConstGauge::new(0i64);
        let mut m = e.encode_descriptor(
            "hexidian_role",
            "1 for this instance's role: active (does the work), standby, starting, or single (no database shared)",
            None,
            probe.metric_type(),
        )?;
        for (r, l) in roles.iter().zip(&labels) {
            ConstGauge::new(i64::from(self.role.name() == *r)).encode(m.encode_family(l)?)?;
        }
        gauge(
            &mut e,
            "hexidian_epoch",
            "the leadership epoch this instance holds (active) or sees (standby); 0 before",
            self.role.epoch().unwrap_or(0),
        )?;
        counter(
            &mut e,
            "hexidian_takeovers",
            "times this instance became the active one",
            self.takeovers,
        )?;
        gauge(
            &mut e,
            "hexidian_guru3_websocket_up",
            "1 while GURU3's websocket is connected",
            i64::from(self.feed.push_connected),
        )?;
        counter(
            &mut e,
            "hexidian_guru3_websocket_connects",
            "GURU3 websocket connections opened (the first, then every reconnect)",
            self.feed_counts.websocket_connects,
        )?;
        counter(
            &mut e,
            "hexidian_guru3_fetches",
            "message fetches from GURU3",
            self.feed_counts.fetches,
        )?;
        histogram(
            &mut e,
            "hexidian_guru3_fetch_duration",
            "one fetch of GURU3's message queue",
            &self.fetch_latency,
        )?;
        gauge(
            &mut e,
            "hexidian_guru3_last_fetch_ok",
            "1 if the last fetch from GURU3 worked",
            i64::from(self.feed.last_fetch_ok),
        )?;
        gauge(
            &mut e,
            "hexidian_guru3_pending_acks",
            "acks not yet confirmed by GURU3",
            i64::try_from(self.feed.pending_acks).unwrap_or(i64::MAX),
        )?;
        gauge(
            &mut e,
            "hexidian_omm_link_up",
            "1 while the OM AXI session is open",
            i64::from(self.omm_up),
        )?;
        counter(
            &mut e,
            "hexidian_omm_sessions",
            "OM AXI sessions opened (the first, then every reconnect)",
            self.omm_sessions,
        )?;
        gauge(
            &mut e,
            "hexidian_omm_requests_in_flight",
            "OM AXI requests sent and not yet answered",
            self.omm_in_flight,
        )?;
        counter(
            &mut e,
            "hexidian_omm_requests_failed",
            "OM AXI requests refused, timed out or cut off",
            self.omm_failed,
        )?;
        histogram(
            &mut e,
            "hexidian_omm_request_duration",
            "one OM AXI request, from sending to its answer",
            &self.omm_requests,
        )?;
        gauge(
            &mut e,
            "hexidian_stream_clients",
            "clients of the status stream (/events, the status page)",
            i64::try_from(self.stream_clients).unwrap_or(i64::MAX),
        )?;
        counter(
            &mut e,
            "hexidian_stream_dropped",
            "status stream clients dropped because they did not read",
            self.stream_dropped,
        )?;
        if let Some(b) = &self.broker {
            counters(
                &mut e,
                "hexidian_messages",
                "GURU3 messages finished, by outcome (counted once committed)",
                &[
                    (&[("outcome", "done")], b.done),
                    (&[("outcome", "ignored")], b.ignored),
                    (&[("outcome", "dead")], b.dead),
                ],
            )?;
            {
                let probe = ConstCounter::new(0u64);
                let mut m = e.encode_descriptor(
                    "hexidian_messages_by_type",
                    "GURU3 messages finished, by message type and outcome",
                    None,
                    probe.metric_type(),
                )?;
                for (kind, o) in &b.by_type {
                    for (outcome, v) in [("done", o.done), ("ignored", o.ignored), ("dead", o.dead)]
                    {
                        let labels = [("type", kind.as_str()), ("outcome", outcome)];
                        ConstCounter::new(v).encode(m.encode_family(&labels)?)?;
                    }
                }
            }
            counter(
                &mut e,
                "hexidian_batches",
                "rounds of the broker",
                b.batches,
            )?;
            for (name, help, l) in [
                (
                    "hexidian_batch_duration",
                    "one round of the broker: PBX, OMM and state commit, acks excluded",
                    &b.timings.batch,
                ),
                (
                    "hexidian_pbx_transaction_duration",
                    "one PBX transaction",
                    &b.timings.pbx,
                ),
                (
                    "hexidian_omm_phase_duration",
                    "the OMM operations of a run of messages",
                    &b.timings.omm,
                ),
                (
                    "hexidian_state_commit_duration",
                    "one commit of journal and mirror",
                    &b.timings.state,
                ),
                (
                    "hexidian_ack_duration",
                    "acknowledging a round's messages to GURU3",
                    &b.timings.ack,
                ),
            ] {
                histogram(&mut e, name, help, l)?;
            }
            gauge(
                &mut e,
                "hexidian_backlog",
                "messages waiting for a retry",
                i64::try_from(b.backlog).unwrap_or(i64::MAX),
            )?;
            gauge(
                &mut e,
                "hexidian_dead_letters",
                "dead letters in the journal, also those from before this start",
                i64::try_from(b.journal_dead).unwrap_or(i64::MAX),
            )?;
            gauge(
                &mut e,
                "hexidian_dead_letters_unconfirmed",
                "failed messages held unacknowledged until their failure is known to be \
                 their own (the breaker's streak)",
                i64::try_from(b.unconfirmed_dead).unwrap_or(i64::MAX),
            )?;
            gauge(
                &mut e,
                "hexidian_stalled",
                "1 while the queue waits for a peer that cannot be asked or refuses hexidian",
                i64::from(b.stalled.is_some()),
            )?;
            gauge(
                &mut e,
                "hexidian_stall_refused",
                "1 while the stall is a refusal of hexidian's set-up (a grant, the OMM account)",
                i64::from(b.stalled.as_ref().is_some_and(|s| s.refused)),
            )?;
            if let Some(s) = &b.stalled {
                info(
                    &mut e,
                    "hexidian_stall",
                    "why the queue waits",
                    vec![
                        ("reason", s.reason.clone()),
                        ("message", s.message.to_string()),
                    ],
                )?;
            }
            gauge(
                &mut e,
                "hexidian_retrying",
                "1 while the head of the queue was refused for now and is retried",
                i64::from(b.retrying.is_some()),
            )?;
            gauge(
                &mut e,
                "hexidian_resync_in_progress",
                "1 between SYNC_STARTED and the end of its sweep",
                i64::from(b.sync_epoch.is_some()),
            )?;
        }
        if let Some(d) = self.drift.as_ref().filter(|d| d.skipped.is_none()) {
            gauge(
                &mut e,
                "hexidian_drift",
                "hexidian's own PBX rows and OMM users that differ from GURU3's extensions at \
                 the last periodic check",
                i64::try_from(d.owned).unwrap_or(i64::MAX),
            )?;
            gauge(
                &mut e,
                "hexidian_foreign_omm_users",
                "OMM users that are not hexidian's at the last periodic check",
                i64::try_from(d.foreign).unwrap_or(i64::MAX),
            )?;
        }
        if let Some(u) = &self.unbound {
            gauge(
                &mut e,
                "hexidian_temporary_handsets",
                "handsets on a temporary number",
                i64::try_from(u.temporary).unwrap_or(i64::MAX),
            )?;
            gauge(
                &mut e,
                "hexidian_assign_outbox",
                "ASSIGN_HANDSETs waiting to be sent to GURU3 (as the last outbox round counted)",
                i64::try_from(u.outbox).unwrap_or(i64::MAX),
            )?;
            counter(
                &mut e,
                "hexidian_temporary_numbers",
                "temporary numbers given to unbound handsets",
                u.temps_created,
            )?;
            counter(
                &mut e,
                "hexidian_handsets_returned",
                "known handsets sent back to their extension",
                u.returned,
            )?;
            counters(
                &mut e,
                "hexidian_binds",
                "token-call binds by result",
                &[
                    (&[("result", "bound")], u.bound),
                    (&[("result", "failed")], u.binds_failed),
                ],
            )?;
            counters(
                &mut e,
                "hexidian_webhook_rejections",
                "token calls refused before any work, by reason",
                &[
                    (&[("reason", "rate_limit")], u.rejected_rate),
                    (&[("reason", "key")], u.rejected_key),
                    (&[("reason", "caller")], u.rejected_caller),
                ],
            )?;
            counters(
                &mut e,
                "hexidian_assign_handset",
                "ASSIGN_HANDSET answers from GURU3",
                &[
                    (&[("result", "ok")], u.assigns_ok),
                    (&[("result", "nak")], u.assigns_nak),
                ],
            )?;
        }
        Ok(())
    }
}

/// The OpenMetrics text of one scrape.
pub(crate) fn render(h: &Health) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot::take(h)));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}
