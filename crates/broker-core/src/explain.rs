//! A dry run: what the broker would do with a run of messages, planned by the engine's own
//! planner against a copy-on-write view of the mirror. Nothing is written; secrets are never
//! part of a description.

use crate::model::{Command, Extension, Forward, Incoming, Kind, Member, MirrorEntry, Number};
use crate::plan::{self, DectOp, Mirror, MirrorMut};
use crate::ports::{SipChange, SipUserKind};

/// Which system a step changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Asterisk's rows in PostgreSQL (users, groups, routing).
    Pbx,
    /// The OMM (DECT users and handsets).
    Omm,
    /// hexidian's mirror of GURU3's desired state.
    Mirror,
}

impl Target {
    /// Label for text and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pbx => "pbx",
            Self::Omm => "omm",
            Self::Mirror => "mirror",
        }
    }
}

/// One planned change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The system it changes.
    pub target: Target,
    /// What it does, e.g. `upsert-user`.
    pub action: &'static str,
    /// The number it is about.
    pub number: String,
    /// The values it writes (never a secret).
    pub detail: String,
}

/// What the broker would decide for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Applied by the steps listed (none: the targets already hold it).
    Apply,
    /// Recorded and acked without effect.
    Ignored(String),
    /// Dead-lettered: it does not decode.
    Malformed(String),
    /// A resync marker, handled by the engine with the PBX's sync state.
    Sync(String),
}

/// The plan of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// GURU3 message id.
    pub id: i64,
    /// Wire type.
    pub kind: String,
    /// The number it is about, if any.
    pub number: Option<String>,
    /// The decision.
    pub decision: Decision,
    /// The mirror already holds what the message says: its PBX and OMM steps are re-checks
    /// that write only what a target has lost or changed behind hexidian's back.
    pub unchanged: bool,
    /// Its changes, in the order the engine makes them (PBX, then OMM, then the mirror).
    pub steps: Vec<Step>,
}

/// The resync state of the PBX: `(current epoch, in progress)`.
pub type SyncState = (i64, bool);

/// The overlay, remembering what each number held before the message being planned.
struct Recording<'m, 'b> {
    work: &'m mut plan::Overlay<'b>,
    before: Vec<(Number, Option<MirrorEntry>)>,
}

impl Recording<'_, '_> {
    fn note(&mut self, n: &Number) {
        if !self.before.iter().any(|(m, _)| m == n) {
            let prev = self.work.get(n).cloned();
            self.before.push((n.clone(), prev));
        }
    }

    fn before(&self, n: &Number) -> Option<&MirrorEntry> {
        self.before
            .iter()
            .find(|(m, _)| m == n)
            .and_then(|(_, e)| e.as_ref())
    }
}

impl MirrorMut for Recording<'_, '_> {
    fn get(&self, n: &Number) -> Option<&MirrorEntry> {
        self.work.get(n)
    }
    fn insert(&mut self, n: Number, e: MirrorEntry) {
        self.note(&n);
        self.work.insert(n, e);
    }
    fn remove(&mut self, n: &Number) {
        self.note(n);
        self.work.remove(n);
    }
    fn referring(&self, to: &Number, pred: &dyn Fn(&MirrorEntry) -> bool) -> Vec<Number> {
        self.work.referring(to, pred)
    }
}

/// Plans `msgs` in order, each against the mirror as the ones before it left it, exactly as
/// the engine plans a run: `mirror` is the stored mirror, `sync` the PBX's resync state (a
/// `SYNC_STARTED` in `msgs` opens the next epoch, a `SYNC_ENDED` closes it). Touches nothing.
pub fn explain(
    msgs: &[Incoming],
    mirror: impl IntoIterator<Item = (Number, MirrorEntry)>,
    sync: SyncState,
) -> Vec<Explanation> {
    let base: Mirror = mirror.into_iter().collect();
    let mut work = plan::Overlay::new(&base);
    let (mut current, mut open) = sync;
    let mut out = Vec::with_capacity(msgs.len());
    for msg in msgs {
        let mut x = Explanation {
            id: msg.id,
            kind: msg.kind.clone(),
            number: msg.number().map(String::from),
            decision: Decision::Apply,
            unchanged: false,
            steps: Vec::new(),
        };
        match &msg.command {
            Err(e) => x.decision = Decision::Malformed(e.clone()),
            Ok(Command::SyncStarted) => {
                x.decision = Decision::Sync(if open {
                    format!(
                        "resync epoch {current} is abandoned and epoch {} starts: every \
                         extension GURU3 does not re-send before SYNC_ENDED is removed then",
                        current + 1
                    )
                } else {
                    format!(
                        "resync epoch {} starts: every extension GURU3 does not re-send \
                         before SYNC_ENDED is removed then",
                        current + 1
                    )
                });
                current += 1;
                open = true;
            }
            Ok(Command::SyncEnded) => {
                x.decision = Decision::Sync(if open {
                    format!(
                        "resync epoch {current} ends: every user, group and OMM user hexidian \
                         owns that was not re-sent since it started is removed"
                    )
                } else {
                    "no resync is in progress: nothing to end".into()
                });
                open = false;
            }
            Ok(cmd) => {
                let mut rec = Recording {
                    work: &mut work,
                    before: Vec::new(),
                };
                let p = plan::plan(cmd, &mut rec, open.then_some(current));
                describe(&mut x, &p, &rec);
            }
        }
        out.push(x);
    }
    out
}

fn describe(x: &mut Explanation, p: &plan::Plan, rec: &Recording<'_, '_>) {
    if let Some(reason) = &p.ignored {
        x.decision = Decision::Ignored(reason.clone());
        return;
    }
    x.steps.extend(p.sip.iter().map(pbx_step));
    x.steps.extend(p.dect.iter().map(omm_step));
    x.unchanged = !p.mirror.is_empty();
    for (n, e) in &p.mirror {
        let before = rec.before(n);
        if before == e.as_ref() {
            continue;
        }
        match (before, e) {
            (Some(old), Some(new)) if same_but_epochs(old, new) => {
                let what = if new.members_epoch != old.members_epoch {
                    ("member list", new.members_epoch)
                } else {
                    ("extension", new.seen_epoch)
                };
                x.steps.push(step(
                    Target::Mirror,
                    "mark-seen",
                    n,
                    format!("{} re-sent unchanged in resync epoch {}", what.0, what.1),
                ));
            }
            _ => {
                x.unchanged = false;
                x.steps.push(mirror_step(n, e.as_ref()));
            }
        }
    }
}

fn same_but_epochs(a: &MirrorEntry, b: &MirrorEntry) -> bool {
    a.extension == b.extension && a.members == b.members
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn forward(f: Option<&Forward>) -> String {
    match f {
        Some(f) => format!("forward {} to {} after {} s", f.mode, f.target, f.delay_s),
        None => "no forward".into(),
    }
}

fn members(m: &[Member]) -> String {
    if m.is_empty() {
        return "no members".into();
    }
    let list: Vec<String> = m
        .iter()
        .map(|m| {
            let mut s = m.number.to_string();
            if !m.active {
                s.push_str(" (inactive)");
            }
            if m.delay_s > 0 {
                s.push_str(&format!(" after {} s", m.delay_s));
            }
            s
        })
        .collect();
    format!("members {}", list.join(", "))
}

fn step(target: Target, action: &'static str, number: &Number, detail: String) -> Step {
    Step {
        target,
        action,
        number: number.to_string(),
        detail,
    }
}

fn pbx_step(c: &SipChange) -> Step {
    match c {
        SipChange::UpsertUser {
            number,
            kind,
            name,
            password,
            premium,
            routing,
            forward: fwd,
        } => {
            // the password itself is never shown, only where it comes from
            let (label, pw) = match (kind, password.is_some()) {
                (SipUserKind::Sip, _) => ("SIP", "GURU3's password"),
                (SipUserKind::Dect | SipUserKind::Temp, true) => ("DECT", "a given password"),
                (SipUserKind::Dect, false) => {
                    ("DECT", "hexidian's own password (kept or generated)")
                }
                (SipUserKind::Temp, false) => ("temporary", "a generated password"),
            };
            step(
                Target::Pbx,
                "upsert-user",
                number,
                format!(
                    "{label} user {name:?} with {pw}; premium {}; call waiting {}, dial-out \
                     {}, trunk {}; {}",
                    yes_no(*premium),
                    yes_no(routing.call_waiting),
                    yes_no(routing.allow_dialout),
                    yes_no(routing.trunk),
                    forward(fwd.as_ref())
                ),
            )
        }
        SipChange::DeleteUser(n) => {
            step(Target::Pbx, "delete-user", n, "if hexidian owns it".into())
        }
        SipChange::Rename { old, new } => step(
            Target::Pbx,
            "rename",
            old,
            format!("to {new}, with every group membership and forward to it"),
        ),
        SipChange::UpsertGroup {
            number,
            name,
            short_name,
        } => step(
            Target::Pbx,
            "upsert-group",
            number,
            format!("group {name:?}, tag {short_name:?}"),
        ),
        SipChange::SetMembers {
            number,
            name,
            members: m,
        } => step(
            Target::Pbx,
            "set-members",
            number,
            format!("{name:?}: {}", members(m)),
        ),
        SipChange::NotGroup { number, name } => step(
            Target::Pbx,
            "drop-group",
            number,
            format!("{name:?} is no group: its group route goes, if there is one"),
        ),
        SipChange::DeleteExtension(n) => step(
            Target::Pbx,
            "delete-extension",
            n,
            "user, group and memberships hexidian owns".into(),
        ),
    }
}

fn omm_step(op: &DectOp) -> Step {
    match op {
        DectOp::Upsert {
            number,
            name,
            unchanged,
            ..
        } => step(
            Target::Omm,
            "upsert-user",
            number,
            if *unchanged {
                format!("{name:?}: unchanged in the mirror, written only if the OMM differs")
            } else {
                format!("{name:?}, with the token and hexidian's SIP password")
            },
        ),
        DectOp::Delete(n) => step(Target::Omm, "delete-user", n, "if hexidian owns it".into()),
        DectOp::Rename(old, new) => step(Target::Omm, "rename-user", old, format!("to {new}")),
        DectOp::Bind {
            number,
            handset,
            encryption,
        } => step(
            Target::Omm,
            "bind-handset",
            number,
            format!(
                "IPEI {} with its UAK, encryption {}",
                handset.ipei,
                if *encryption { "on" } else { "off" }
            ),
        ),
        DectOp::Release(n) => step(
            Target::Omm,
            "release-handset",
            n,
            "the handset is unbound from the user".into(),
        ),
    }
}

fn mirror_step(n: &Number, e: Option<&MirrorEntry>) -> Step {
    let Some(e) = e else {
        return step(Target::Mirror, "forget", n, String::new());
    };
    let mut detail = match &e.extension {
        Some(Extension {
            name,
            kind,
            forward: fwd,
            ..
        }) => {
            let handset = match kind {
                Kind::Dect {
                    handset: Some(h), ..
                } => format!(", handset {}", h.ipei),
                Kind::Dect { handset: None, .. } => ", no handset".into(),
                _ => String::new(),
            };
            format!(
                "{} {name:?}{handset}, {}",
                kind.label(),
                forward(fwd.as_ref())
            )
        }
        None => "no extension".into(),
    };
    if !e.members.is_empty() {
        detail.push_str(&format!("; {}", members(&e.members)));
    }
    step(Target::Mirror, "store", n, detail)
}
