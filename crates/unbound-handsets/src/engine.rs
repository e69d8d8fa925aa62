//! The workflow: temporary users for unbound handsets, known handsets back to their
//! extension, token calls validated at once and carried out after a delay, the
//! ASSIGN_HANDSET outbox, and the subscription mode kept open.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use broker_core::model::{Number, Secret, SharedDirectory};
use broker_core::ports::{
    Clock, PortError, PortErrorKind, PortResult, SipChange, SipOutcome, SipProvisioning,
    SipUserKind,
};
use futures_util::future::{Either, select};

use crate::ports::{AssignSink, DectEvent, HandsetState, Handsets, Lookup, PendingBind};
use crate::temp::{Blocklist, TempNumbers};
use crate::webhook::{RateLimiter, Reply, TokenCall, keys_match};

/// The ports the workflow runs on.
#[derive(Clone)]
pub struct WorkflowPorts {
    /// The OMM's handsets.
    pub handsets: Arc<dyn Handsets>,
    /// The PBX (temporary users).
    pub sip: Arc<dyn SipProvisioning>,
    /// Promised binds and the outbox.
    pub state: Arc<dyn HandsetState>,
    /// GURU3 (ASSIGN_HANDSET).
    pub guru3: Arc<dyn AssignSink>,
    /// Time.
    pub clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for WorkflowPorts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WorkflowPorts")
    }
}

/// Settings of the workflow.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Temporary numbers.
    pub temp: TempNumbers,
    /// Prefix of token numbers (`9955`), accepted with or without.
    pub token_prefix: String,
    /// Shared secret of the webhook (`X-Hexidian-Key`); `None` accepts any caller.
    pub key: Option<Secret>,
    /// Time between `OK` and moving the handset, so the prompt can play (default 2 s).
    pub bind_delay: Duration,
    /// Full scan of all handsets (default 5 min; events do the real work).
    pub scan_interval: Duration,
    /// Mode to keep the DECT system in (`Configured`), re-set on expiry (default none).
    pub subscription_mode: Option<String>,
    /// How often the mode is re-sent (default 15 s).
    pub mode_refresh: Duration,
    /// IPEIs never bound.
    pub blocklist: Blocklist,
    /// Token calls per caller and minute (default 6).
    pub per_caller_per_min: u32,
    /// Token calls per second in total (default 50).
    pub global_per_s: u32,
    /// Token calls per second from one peer address (default 20).
    pub per_peer_per_s: u32,
    /// How often the outbox is sent (default 2 s).
    pub outbox_interval: Duration,
    /// Temporary users at most (default 2,000): past it new handsets wait for a free slot.
    pub max_temporary: usize,
    /// A temporary user whose handset is gone or no longer subscribed is deleted (OMM and
    /// PBX) after this long (default 15 min; checked by every scan).
    pub temp_expiry: Duration,
}

impl Config {
    /// Defaults with temporary numbers `0100xxxx` and token prefix `9955`.
    pub fn new(temp: TempNumbers) -> Self {
        Self {
            temp,
            token_prefix: "9955".into(),
            key: None,
            bind_delay: Duration::from_secs(2),
            scan_interval: Duration::from_secs(300),
            subscription_mode: None,
            mode_refresh: Duration::from_secs(15),
            blocklist: Blocklist::default(),
            per_caller_per_min: 6,
            global_per_s: 50,
            per_peer_per_s: 20,
            outbox_interval: Duration::from_secs(2),
            max_temporary: 2000,
            temp_expiry: Duration::from_secs(15 * 60),
        }
    }
}

/// Counters for the health report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Status {
    /// Handsets on a temporary user.
    pub temporary: usize,
    /// Temporary users created since start.
    pub temps_created: u64,
    /// Handsets bound by token since start.
    pub bound: u64,
    /// Promised binds that could not be carried out and were ended.
    pub binds_failed: u64,
    /// Known handsets returned to their extension since start.
    pub returned: u64,
    /// ASSIGN_HANDSET answered OK / NAK.
    pub assigns_ok: u64,
    /// NAKs.
    pub assigns_nak: u64,
    /// Token calls refused by a rate limit (per address, per caller, in total).
    pub rejected_rate: u64,
    /// Token calls without the right webhook key.
    pub rejected_key: u64,
    /// Token calls from a caller that is not the temporary user of an unbound handset.
    pub rejected_caller: u64,
    /// The last failure, until the step that failed succeeds again.
    pub last_error: Option<String>,
    /// `ASSIGN_HANDSET`s waiting in the outbox, as the last outbox round counted them.
    pub outbox: u64,
    /// What happened to handsets lately, oldest first (at most [`ACTIVITY`]).
    pub activity: std::collections::VecDeque<Activity>,
    /// Entries ever added to `activity` (the `seq` of the newest).
    pub activities: u64,
}

/// How many entries [`Status::activity`] keeps.
pub const ACTIVITY: usize = 50;

/// Something that happened to a handset, as the status page lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Activity {
    /// Position among all entries since start (1, 2, …).
    pub seq: u64,
    /// `temporary` (got a temporary number), `returned` (a known handset back on its
    /// extension), `bound` (moved by a token call) or `bind failed`.
    pub what: &'static str,
    /// The handset's position in the OMM.
    pub ppn: u32,
    /// The temporary number, or the extension it went to.
    pub number: String,
    /// For a failed bind, why.
    pub detail: Option<String>,
}

impl Status {
    fn note(&mut self, what: &'static str, ppn: u32, number: &Number, detail: Option<String>) {
        self.activities += 1;
        if self.activity.len() >= ACTIVITY {
            self.activity.pop_front();
        }
        self.activity.push_back(Activity {
            seq: self.activities,
            what,
            ppn,
            number: number.to_string(),
            detail,
        });
    }
}

#[derive(Debug)]
struct Local {
    /// the step whose failure `status.last_error` shows
    failed_step: Option<&'static str>,
    /// periodic steps failing since their last success → failures
    failing: HashMap<&'static str, u64>,
    /// temporary number → ppn
    temps: HashMap<Number, u32>,
    limiter: RateLimiter,
    /// bind id → (bind, due)
    due: HashMap<i64, (PendingBind, Instant)>,
    /// bind id → failed attempts in a row (the back-off of the next)
    bind_failures: HashMap<i64, u32>,
    reserved_ppn: HashSet<u32>,
    reserved_ext: HashSet<Number>,
    /// temporary users without a usable handset, since when
    unused: HashMap<Number, Instant>,
    /// ppn → the temporary number last tried for it and not made: tried again (the same
    /// number) until made, so a failing OMM or PBX never leaves one user per attempt
    trying: HashMap<u32, Number>,
    /// the cap was hit and said so (said again once it was free in between)
    at_cap: bool,
    status: Status,
}

/// The unbound-handset workflow. Cheap to clone; [`run`](Self::run) drives it, and
/// [`token_call`](Self::token_call) answers the webhook (concurrently).
#[derive(Clone)]
pub struct Unbound {
    inner: Arc<Inner>,
}

struct Inner {
    ports: WorkflowPorts,
    config: Config,
    directory: SharedDirectory,
    local: Mutex<Local>,
}

impl std::fmt::Debug for Unbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unbound").finish_non_exhaustive()
    }
}

/// A handset and an extension reserved for a token call; released on drop unless kept (the
/// bind was recorded and scheduled).
struct Reservation<'a> {
    unbound: &'a Unbound,
    ppn: u32,
    extension: Option<Number>,
}

impl Reservation<'_> {
    fn keep(&mut self) {
        self.extension = None;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if let Some(ext) = self.extension.take() {
            let mut l = self.unbound.local();
            l.reserved_ext.remove(&ext);
            l.reserved_ppn.remove(&self.ppn);
        }
    }
}

/// The longest wait between two tries of a bind that fails for a passing reason.
const MAX_BIND_WAIT: Duration = Duration::from_secs(60);
/// ASSIGN_HANDSETs sent in one request.
const OUTBOX_BATCH: u32 = 10;

fn transient_or_error(e: &PortError) -> Reply {
    // a refused set-up (a missing grant or table) needs the phone team, not a redial
    if e.is_transient() && e.kind() != PortErrorKind::Refused {
        Reply::Retry
    } else {
        Reply::Error
    }
}

impl Unbound {
    /// A workflow over `ports`, reading GURU3's tokens and handsets from `directory`.
    pub fn new(ports: WorkflowPorts, config: Config, directory: SharedDirectory) -> Self {
        let now = ports.clock.now();
        let limiter = RateLimiter::new(config.per_caller_per_min, config.global_per_s, now)
            .per_peer(config.per_peer_per_s);
        Self {
            inner: Arc::new(Inner {
                ports,
                config,
                directory,
                local: Mutex::new(Local {
                    temps: HashMap::new(),
                    limiter,
                    due: HashMap::new(),
                    bind_failures: HashMap::new(),
                    reserved_ppn: HashSet::new(),
                    reserved_ext: HashSet::new(),
                    unused: HashMap::new(),
                    trying: HashMap::new(),
                    at_cap: false,
                    status: Status::default(),
                    failed_step: None,
                    failing: HashMap::new(),
                }),
            }),
        }
    }

    fn local(&self) -> MutexGuard<'_, Local> {
        self.inner.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counters.
    pub fn status(&self) -> Status {
        let l = self.local();
        let mut s = l.status.clone();
        s.temporary = l.temps.len();
        s
    }

    /// Handsets on a temporary number now: (temporary number, ppn), in number order, at
    /// most `limit`.
    pub fn temporaries(&self, limit: usize) -> Vec<(String, u32)> {
        let l = self.local();
        let mut t: Vec<(String, u32)> = l.temps.iter().map(|(n, p)| (n.to_string(), *p)).collect();
        t.sort_unstable();
        t.truncate(limit);
        t
    }

    fn failed(&self, what: &'static str, e: &PortError) {
        tracing::warn!(error = %e.report(), "{what}");
        let mut l = self.local();
        l.status.last_error = Some(format!("{what}: {}", e.report()));
        l.failed_step = Some(what);
    }

    /// A step that runs every few seconds failed: one WARN when it starts failing, then
    /// quiet until [`recovered`](Self::recovered) says how often it failed.
    fn failed_periodic(&self, what: &'static str, e: &PortError) {
        let mut l = self.local();
        let n = l.failing.entry(what).or_insert(0);
        *n += 1;
        if *n == 1 {
            tracing::warn!(error = %e.report(), "{what} (retried quietly until it works)");
        } else {
            tracing::debug!(error = %e.report(), failures = *n, "{what}");
        }
        l.status.last_error = Some(format!("{what}: {}", e.report()));
        l.failed_step = Some(what);
    }

    /// The step `what` succeeded: its earlier failure is no longer news.
    fn recovered(&self, what: &'static str) {
        let mut l = self.local();
        if let Some(n) = l.failing.remove(what) {
            tracing::info!(failures = n, "{what} works again");
        }
        if l.failed_step == Some(what) {
            l.failed_step = None;
            l.status.last_error = None;
        }
    }

    /// Answers a token call: validates at once, records the promised bind durably, and
    /// leaves the move for later (`check_only`: the same answer, no effect). Without a peer
    /// address (see [`token_call_from`](Self::token_call_from)) only the per-caller and
    /// global limits apply.
    pub async fn token_call(
        &self,
        key: Option<&[u8]>,
        call: Result<TokenCall, Reply>,
        check_only: bool,
    ) -> Reply {
        self.token_call_from(None, key, call, check_only).await
    }

    /// [`token_call`](Self::token_call) for a request from `peer`, which has a rate bucket
    /// of its own. The caller is checked before the token: a caller that is not the
    /// temporary user of an unbound handset gets the same answer whatever it dialled, so
    /// the webhook tells nobody which tokens exist. Cancel-safe: dropping the future never
    /// leaves the handset or the extension reserved.
    pub async fn token_call_from(
        &self,
        peer: Option<std::net::IpAddr>,
        key: Option<&[u8]>,
        call: Result<TokenCall, Reply>,
        check_only: bool,
    ) -> Reply {
        // each step either hands its result to the next or answers the call
        let decided = async {
            let now = self.inner.ports.clock.now();
            let call = self.admit(peer, key, call, now)?;
            let ppn = self.caller_handset(&call).await?;
            let extension = self.token_extension(&call)?;
            self.extension_free(ppn, &extension).await?;
            if check_only {
                return Ok(Reply::Ok);
            }
            let reservation = self.reserve(ppn, &extension)?;
            self.promise(reservation, call.caller, extension, now).await
        };
        let reply = match decided.await {
            Ok(reply) | Err(reply) => reply,
        };
        let mut l = self.local();
        match reply {
            Reply::TooMany => l.status.rejected_rate += 1,
            Reply::Unauthorized => l.status.rejected_key += 1,
            Reply::NotUnbound => l.status.rejected_caller += 1,
            _ => {}
        }
        reply
    }

    /// Rate limits (peer, then caller), the webhook key, a request that parsed.
    fn admit(
        &self,
        peer: Option<std::net::IpAddr>,
        key: Option<&[u8]>,
        call: Result<TokenCall, Reply>,
        now: Instant,
    ) -> Result<TokenCall, Reply> {
        if let Some(p) = peer {
            if !self.local().limiter.allow_peer(p, now) {
                return Err(Reply::TooMany);
            }
        }
        if let Some(k) = &self.inner.config.key {
            if !key.is_some_and(|p| keys_match(p, k.expose().as_bytes())) {
                return Err(Reply::Unauthorized);
            }
        }
        let call = call?;
        if !self.local().limiter.allow(&call.caller, now) {
            return Err(Reply::TooMany);
        }
        Ok(call)
    }

    /// The caller first: only the temporary user of an unbound handset may bind; its handset.
    async fn caller_handset(&self, call: &TokenCall) -> Result<u32, Reply> {
        let h = &self.inner.ports.handsets;
        let known = self.local().temps.get(&call.caller).copied();
        let ppn = match known {
            Some(p) => p,
            // not (yet) in the map, e.g. right after a restart: ask the OMM
            None if self.inner.config.temp.is_temp(&call.caller) => {
                match h.lookup(Lookup::User(call.caller.clone())).await {
                    Ok(Some(d)) if d.temp => {
                        self.local().temps.insert(call.caller.clone(), d.ppn);
                        d.ppn
                    }
                    Ok(_) => return Err(Reply::NotUnbound),
                    Err(e) => return Err(transient_or_error(&e)),
                }
            }
            None => return Err(Reply::NotUnbound),
        };
        match h.lookup(Lookup::Ppn(ppn)).await {
            Ok(Some(d)) if d.temp && d.user.as_ref() == Some(&call.caller) => Ok(ppn),
            Ok(_) => Err(Reply::NotUnbound),
            Err(e) => Err(transient_or_error(&e)),
        }
    }

    /// The DECT extension whose token was dialled (with or without the prefix).
    fn token_extension(&self, call: &TokenCall) -> Result<Number, Reply> {
        let d = self
            .inner
            .directory
            .read()
            .unwrap_or_else(|e| e.into_inner());
        call.candidates(&self.inner.config.token_prefix)
            .iter()
            .find_map(|t| d.by_token(t).cloned())
            .ok_or(Reply::UnknownToken)
    }

    /// The extension has no handset and no bind under way (the same caller again: its bind
    /// is already under way, `OK`).
    async fn extension_free(&self, ppn: u32, extension: &Number) -> Result<(), Reply> {
        {
            let l = self.local();
            if l.reserved_ppn.contains(&ppn) {
                return Err(if l.reserved_ext.contains(extension) {
                    Reply::Ok
                } else {
                    Reply::NotUnbound
                });
            }
            if l.reserved_ext.contains(extension) {
                return Err(Reply::AlreadyBound);
            }
        }
        match self
            .inner
            .ports
            .handsets
            .lookup(Lookup::User(extension.clone()))
            .await
        {
            Ok(Some(_)) => Err(Reply::AlreadyBound),
            Ok(None) => Ok(()),
            Err(e) => Err(transient_or_error(&e)),
        }
    }

    /// Reserves the handset and the extension (released on drop unless kept).
    fn reserve(&self, ppn: u32, extension: &Number) -> Result<Reservation<'_>, Reply> {
        let mut l = self.local();
        // a concurrent call may have reserved either since `extension_free` looked
        if l.reserved_ext.contains(extension) || l.reserved_ppn.contains(&ppn) {
            return Err(Reply::AlreadyBound);
        }
        l.reserved_ext.insert(extension.clone());
        l.reserved_ppn.insert(ppn);
        Ok(Reservation {
            unbound: self,
            ppn,
            extension: Some(extension.clone()),
        })
    }

    /// Records the promised bind durably and schedules it; only then is the answer `OK`.
    async fn promise(
        &self,
        mut reservation: Reservation<'_>,
        temp: Number,
        extension: Number,
        now: Instant,
    ) -> Result<Reply, Reply> {
        let ppn = reservation.ppn;
        match self
            .inner
            .ports
            .state
            .add_bind(ppn, temp.clone(), extension.clone())
            .await
        {
            Ok(id) => {
                broker_core::crash::point(broker_core::crash::BIND_RECORDED);
                let due = now + self.inner.config.bind_delay;
                let bind = PendingBind {
                    id,
                    ppn,
                    temp,
                    extension,
                };
                self.local().due.insert(id, (bind, due));
                reservation.keep();
                Ok(Reply::Ok)
            }
            Err(e) => {
                drop(reservation);
                self.failed("recording a bind", &e);
                Err(transient_or_error(&e))
            }
        }
    }

    /// Drives the workflow until `shutdown`: events, scans, due binds, the outbox and the
    /// subscription mode. Promised binds left by a crash are carried out first.
    pub async fn run(&self, shutdown: impl Future<Output = ()> + Send) {
        let clock = Arc::clone(&self.inner.ports.clock);
        let cfg = self.inner.config.clone();
        self.resume().await;
        let mut shutdown = std::pin::pin!(shutdown);
        let start = clock.now();
        let (mut next_scan, mut next_outbox, mut next_mode) = (start, start, start);
        loop {
            let tick = clock.sleep(Duration::from_millis(100));
            let event = self.inner.ports.handsets.next_event();
            match select(select(event, tick), shutdown.as_mut()).await {
                Either::Right(_) => return,
                Either::Left((Either::Left((ev, _)), _)) => self.on_event(ev).await,
                Either::Left((Either::Right(_), _)) => {}
            }
            let now = clock.now();
            self.run_due_binds(now).await;
            if now >= next_outbox {
                self.flush_outbox().await;
                next_outbox = now + cfg.outbox_interval;
            }
            if now >= next_mode {
                self.enforce_mode(None).await;
                next_mode = now + cfg.mode_refresh;
            }
            if now >= next_scan {
                // a bind recorded by a token call whose answer was abandoned is picked up
                self.resume().await;
                self.scan().await;
                next_scan = now + cfg.scan_interval;
            }
        }
    }

    /// Loads the binds promised before a restart; they are due at once.
    pub async fn resume(&self) {
        match self.inner.ports.state.pending_binds().await {
            Ok(binds) => {
                let now = self.inner.ports.clock.now();
                let mut l = self.local();
                for b in binds {
                    l.reserved_ppn.insert(b.ppn);
                    l.reserved_ext.insert(b.extension.clone());
                    l.due.insert(b.id, (b, now));
                }
            }
            Err(e) => self.failed("loading promised binds", &e),
        }
    }

    /// Carries out the binds whose delay has passed (what `run` does on every tick).
    pub async fn carry_out_due_binds(&self) {
        let now = self.inner.ports.clock.now();
        self.run_due_binds(now).await;
    }

    async fn on_event(&self, ev: DectEvent) {
        match ev {
            DectEvent::Device(ppn) => self.ensure(ppn).await,
            DectEvent::Mode(m) => self.enforce_mode(Some(m)).await,
            DectEvent::Rescan => {
                // a new session: the mode may have changed while the link was down
                self.enforce_mode(None).await;
                self.scan().await;
            }
        }
    }

    async fn enforce_mode(&self, seen: Option<String>) {
        let Some(want) = &self.inner.config.subscription_mode else {
            return;
        };
        if seen.as_deref().is_some_and(|m| m == want) {
            return;
        }
        if let Err(e) = self
            .inner
            .ports
            .handsets
            .set_subscription_mode(want.clone())
            .await
        {
            self.failed_periodic("setting the subscription mode", &e);
        } else {
            self.recovered("setting the subscription mode");
        }
    }

    /// Every handset: unbound ones get a temporary user; the temporary map is rebuilt.
    pub async fn scan(&self) {
        let devices = match self.inner.ports.handsets.devices().await {
            Ok(d) => d,
            Err(e) => return self.failed_periodic("scanning handsets", &e),
        };
        self.recovered("scanning handsets");
        {
            let mut l = self.local();
            l.temps = devices
                .iter()
                .filter(|d| d.temp)
                .filter_map(|d| Some((d.user.clone()?, d.ppn)))
                .collect();
        }
        self.expire_unused(&devices).await;
        for d in devices.iter().filter(|d| d.user.is_none() && d.subscribed) {
            self.ensure(d.ppn).await;
        }
    }

    /// Deletes temporary users whose handset left (or is no longer subscribed) for longer
    /// than `temp_expiry`; a temporary user in a promised bind is left alone.
    async fn expire_unused(&self, devices: &[crate::ports::Device]) {
        let temps = match self.inner.ports.handsets.temp_users().await {
            Ok(t) => t,
            Err(e) => return self.failed("listing temporary users", &e),
        };
        self.remove_pbx_orphans(&temps).await;
        let now = self.inner.ports.clock.now();
        let expiry = self.inner.config.temp_expiry;
        let mut expired = Vec::new();
        {
            let mut l = self.local();
            let listed: HashSet<&Number> = temps.iter().map(|(n, _)| n).collect();
            l.unused.retain(|n, _| listed.contains(n));
            for (n, ppn) in &temps {
                let used = ppn.is_some_and(|p| devices.iter().any(|d| d.ppn == p && d.subscribed));
                let binding = l.due.values().any(|(b, _)| &b.temp == n);
                if used || binding {
                    l.unused.remove(n);
                    continue;
                }
                let since = *l.unused.entry(n.clone()).or_insert(now);
                if now.saturating_duration_since(since) >= expiry {
                    expired.push(n.clone());
                }
            }
        }
        for n in expired {
            let p = &self.inner.ports;
            let r = match p.handsets.remove_temp(n.clone()).await {
                Ok(()) => p
                    .sip
                    .apply(vec![SipChange::DeleteUser(n.clone())])
                    .await
                    .and_then(|r| r.into_iter().next().unwrap_or(Ok(SipOutcome::Done(false)))),
                Err(e) => Err(e),
            };
            match r {
                Ok(_) => {
                    tracing::info!(number = %n, "unused temporary user deleted");
                    let mut l = self.local();
                    l.unused.remove(&n);
                    l.temps.remove(&n);
                }
                Err(e) => self.failed("deleting an unused temporary user", &e),
            }
        }
    }

    /// Deletes temporary PBX users that have no temporary OMM user (`omm`, just listed) and
    /// are not being made: what a crash between the two writes, or a failed clean-up, left.
    /// Nobody can use such a row: only the OMM user would hand its password to a handset.
    async fn remove_pbx_orphans(&self, omm: &[crate::ports::TempUser]) {
        let pbx = match self.inner.ports.sip.temp_users().await {
            Ok(p) => p,
            Err(e) => return self.failed("listing temporary PBX users", &e),
        };
        let orphans: Vec<Number> = {
            let l = self.local();
            pbx.into_iter()
                .filter(|n| !omm.iter().any(|(o, _)| o == n))
                .filter(|n| !l.trying.values().any(|t| t == n))
                .filter(|n| !l.due.values().any(|(b, _)| &b.temp == n))
                .collect()
        };
        for n in orphans {
            let r = self
                .inner
                .ports
                .sip
                .apply(vec![SipChange::DeleteUser(n.clone())])
                .await
                .and_then(|r| r.into_iter().next().unwrap_or(Ok(SipOutcome::Done(false))));
            match r {
                Ok(_) => {
                    tracing::info!(number = %n, "temporary PBX user without its OMM user deleted")
                }
                Err(e) => return self.failed("deleting a temporary PBX user", &e),
            }
        }
    }

    /// A device appeared or changed: give it a temporary user if it is unbound.
    pub async fn ensure(&self, ppn: u32) {
        if self.local().reserved_ppn.contains(&ppn) {
            return;
        }
        let h = &self.inner.ports.handsets;
        let dev = match h.lookup(Lookup::Ppn(ppn)).await {
            Ok(Some(d)) => d,
            Ok(None) => return,
            Err(e) => return self.failed("looking up a handset", &e),
        };
        if let Some(u) = &dev.user {
            let mut l = self.local();
            l.trying.remove(&ppn);
            if dev.temp {
                l.temps.insert(u.clone(), ppn);
            }
            return;
        }
        if !dev.subscribed || self.inner.config.blocklist.blocks(&dev.ipei) {
            self.local().trying.remove(&ppn);
            return;
        }
        // a handset GURU3 knows goes straight back to its extension
        let known = {
            let d = self
                .inner
                .directory
                .read()
                .unwrap_or_else(|e| e.into_inner());
            d.by_ipei(&dev.ipei).cloned()
        };
        if let Some(ext) = known {
            // never a temporary number for a handset GURU3 knows: the broker may be binding it
            // right now (it creates the device, then attaches it); a failure is retried by the
            // next event or scan
            match h.move_to(ppn, ext.clone()).await {
                Ok(()) => {
                    tracing::info!(ppn, ipei = %dev.ipei, extension = %ext, "known handset returned to its extension");
                    let mut l = self.local();
                    l.status.returned += 1;
                    l.status.note("returned", ppn, &ext, None);
                }
                Err(e) => self.failed("returning a known handset", &e),
            }
            return;
        }
        {
            let mut l = self.local();
            if l.temps.len() >= self.inner.config.max_temporary {
                if !l.at_cap {
                    l.at_cap = true;
                    tracing::warn!(
                        cap = self.inner.config.max_temporary,
                        "temporary users at their cap: new handsets wait until one is bound or expires"
                    );
                }
                l.status.last_error = Some("temporary users at their cap".into());
                return;
            }
            l.at_cap = false;
        }
        // the number a failed attempt left first: made again, not one more
        let retry = self.local().trying.get(&ppn).cloned();
        if let Some(n) = retry {
            match self.give_temp(ppn, &n).await {
                Ok(()) => return self.made_temp(ppn, &dev.ipei, n),
                Err(e) if e.kind() == PortErrorKind::Conflict => {
                    self.local().trying.remove(&ppn);
                }
                Err(e) => return self.failed("giving a temporary number", &e),
            }
        }
        for _ in 0..8 {
            let n = self.inner.config.temp.generate();
            let taken = self.local().temps.contains_key(&n)
                || self
                    .inner
                    .directory
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .is_dect(&n);
            if taken {
                continue;
            }
            match self.inner.ports.sip.exists(n.clone()).await {
                Ok(false) => {}
                Ok(true) => continue,
                Err(e) => return self.failed("checking a temporary number", &e),
            }
            self.local().trying.insert(ppn, n.clone());
            match self.give_temp(ppn, &n).await {
                Ok(()) => return self.made_temp(ppn, &dev.ipei, n),
                Err(e) if e.kind() == PortErrorKind::Conflict => {
                    self.local().trying.remove(&ppn);
                    continue;
                }
                Err(e) => return self.failed("giving a temporary number", &e),
            }
        }
    }

    fn made_temp(&self, ppn: u32, ipei: &str, n: Number) {
        tracing::info!(ppn, ipei = %ipei, number = %n, "unbound handset got a temporary number");
        let mut l = self.local();
        l.trying.remove(&ppn);
        l.status.temps_created += 1;
        l.status.note("temporary", ppn, &n, None);
        l.temps.insert(n, ppn);
    }

    async fn give_temp(&self, ppn: u32, n: &Number) -> PortResult<()> {
        let sip = &self.inner.ports.sip;
        let out = sip
            .apply(vec![SipChange::UpsertUser {
                number: n.clone(),
                kind: SipUserKind::Temp,
                name: "Unbound Handset".into(),
                password: None,
                premium: false,
                routing: Default::default(),
                forward: None,
            }])
            .await?;
        let password = match out.into_iter().next() {
            Some(Ok(SipOutcome::User(pw) | SipOutcome::NewUser(pw))) => pw,
            Some(Err(e)) => return Err(e),
            _ => return Err(PortError::transient("no outcome for the temporary user")),
        };
        broker_core::crash::point(broker_core::crash::TEMP_PBX);
        if let Err(e) = self
            .inner
            .ports
            .handsets
            .give_temp(ppn, n.clone(), password)
            .await
        {
            // do not leave a PBX user without its handset
            let _ = sip.apply(vec![SipChange::DeleteUser(n.clone())]).await;
            return Err(e);
        }
        broker_core::crash::point(broker_core::crash::TEMP_GIVEN);
        Ok(())
    }

    async fn run_due_binds(&self, now: Instant) {
        let due: Vec<PendingBind> = self
            .local()
            .due
            .values()
            .filter(|(_, t)| *t <= now)
            .map(|(b, _)| b.clone())
            .collect();
        for b in due {
            match self.bind(&b).await {
                Ok(()) => {
                    let mut l = self.local();
                    l.due.remove(&b.id);
                    l.bind_failures.remove(&b.id);
                    l.reserved_ppn.remove(&b.ppn);
                    l.reserved_ext.remove(&b.extension);
                    l.temps.remove(&b.temp);
                    l.status.bound += 1;
                    l.status.note("bound", b.ppn, &b.extension, None);
                    drop(l);
                    self.recovered("carrying out a bind");
                    tracing::info!(ppn = b.ppn, extension = %b.extension, "handset bound by token call");
                }
                Err(e) if e.is_transient() || self.still_planned(&b.extension) => {
                    // a peer is away or busy, or refuses hexidian's set-up, or the extension's
                    // OMM user is still to be created by a message that waits: again later,
                    // 1 s, 2 s, 4 s … at most a minute apart
                    self.failed("carrying out a bind", &e);
                    let mut l = self.local();
                    let n = l.bind_failures.entry(b.id).or_insert(0);
                    *n = n.saturating_add(1);
                    let wait = Duration::from_secs(1u64 << (*n - 1).min(6)).min(MAX_BIND_WAIT);
                    if let Some(entry) = l.due.get_mut(&b.id) {
                        entry.1 = now + wait;
                    }
                }
                Err(e) => {
                    // it will never work (the extension is gone, the OMM refuses the move):
                    // the bind ends, the handset keeps its temporary number and may dial again
                    if let Err(d) = self.inner.ports.state.drop_bind(b.id).await {
                        self.failed("ending a bind that cannot be carried out", &d);
                        continue;
                    }
                    let mut l = self.local();
                    l.due.remove(&b.id);
                    l.bind_failures.remove(&b.id);
                    l.reserved_ppn.remove(&b.ppn);
                    l.reserved_ext.remove(&b.extension);
                    l.status.binds_failed += 1;
                    l.status
                        .note("bind failed", b.ppn, &b.extension, Some(e.report()));
                    l.status.last_error = Some(format!("a bind failed for good: {}", e.report()));
                    l.failed_step = Some("carrying out a bind");
                    drop(l);
                    tracing::error!(
                        ppn = b.ppn,
                        extension = %b.extension,
                        error = %e.report(),
                        "a promised bind cannot be carried out; the handset keeps its temporary number"
                    );
                }
            }
        }
    }

    /// Whether a message changing `extension` is still being applied (a bind to it fails
    /// until then, and must wait rather than end).
    fn still_planned(&self, extension: &Number) -> bool {
        self.inner
            .directory
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_planned(extension)
    }

    /// Moves the handset, deletes the temporary PBX user, queues ASSIGN_HANDSET. Each step is
    /// idempotent, so a bind interrupted anywhere completes when it is run again.
    async fn bind(&self, b: &PendingBind) -> PortResult<()> {
        let p = &self.inner.ports;
        p.handsets.move_to(b.ppn, b.extension.clone()).await?;
        broker_core::crash::point(broker_core::crash::BIND_MOVED);
        let dev = p
            .handsets
            .lookup(Lookup::Ppn(b.ppn))
            .await?
            .ok_or_else(|| PortError::transient("the handset vanished during the bind"))?;
        let r = p
            .sip
            .apply(vec![SipChange::DeleteUser(b.temp.clone())])
            .await?;
        if let Some(Err(e)) = r.into_iter().next() {
            return Err(e);
        }
        p.state
            .finish_bind(b.id, dev.ipei, dev.uak, b.extension.clone())
            .await?;
        broker_core::crash::point(broker_core::crash::BIND_FINISHED);
        Ok(())
    }

    /// Sends queued ASSIGN_HANDSETs, ten at a time.
    pub async fn flush_outbox(&self) {
        let p = &self.inner.ports;
        let assigns = match p.state.pending_assigns(OUTBOX_BATCH).await {
            Ok(a) => {
                self.recovered("reading the outbox");
                a
            }
            Err(e) => return self.failed_periodic("reading the outbox", &e),
        };
        // a short batch is the whole outbox; only a full one needs counting
        let depth = if assigns.len() < OUTBOX_BATCH as usize {
            Ok(assigns.len() as u64)
        } else {
            p.state.outbox_depth().await
        };
        match depth {
            Ok(n) => self.local().status.outbox = n,
            Err(e) => return self.failed_periodic("reading the outbox", &e),
        }
        if assigns.is_empty() {
            return;
        }
        match p.guru3.submit(assigns).await {
            Ok(results) => {
                broker_core::crash::point(broker_core::crash::ASSIGN_SENT);
                self.recovered("sending ASSIGN_HANDSET");
                for r in results {
                    let ok = r.ok;
                    if !ok {
                        tracing::warn!(id = r.id, text = %r.text, "guru3 refused ASSIGN_HANDSET");
                    }
                    if let Err(e) = p.state.finish_assign(r).await {
                        self.failed("recording an ASSIGN_HANDSET result", &e);
                    }
                    let mut l = self.local();
                    l.status.outbox = l.status.outbox.saturating_sub(1);
                    if ok {
                        l.status.assigns_ok += 1;
                    } else {
                        l.status.assigns_nak += 1;
                    }
                }
            }
            Err(e) => self.failed_periodic("sending ASSIGN_HANDSET", &e),
        }
    }
}
