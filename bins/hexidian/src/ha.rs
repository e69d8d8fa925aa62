//! Active and standby ([`hexidian_state::leader`]) in the process: the instance's role as the
//! admin endpoints show it, and the gate every OMM write and GURU3 ack passes right before it
//! is made (the database's fence cannot reach those peers).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hexidian_state::leader::Lease;

/// How long a confirmed epoch counts as current for the gate (one confirmation serves a burst
/// of OMM writes; a process paused longer asks again, its monotonic clock having moved on).
const RECHECK: Duration = Duration::from_millis(100);

/// Leadership settings (`[ha]`).
#[derive(Debug, Clone)]
pub struct HaSettings {
    /// This instance's name, unique among the instances on one database.
    pub instance: String,
    /// How long an active that stopped renewing its lease keeps leadership before a standby
    /// ends its connections and takes over.
    pub lease: Duration,
}

impl Default for HaSettings {
    fn default() -> Self {
        Self {
            instance: default_instance(),
            lease: Duration::from_secs(3),
        }
    }
}

/// `<host>-<pid>-<n>`: unique on one database as long as host names are.
pub fn default_instance() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(20)
        .collect();
    let host = if host.is_empty() {
        "hexidian".into()
    } else {
        host
    };
    format!(
        "{host}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed) + 1
    )
}

/// What this instance is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// No database to share (in-memory store): always active, nobody else.
    Single,
    /// Before the first look at the database.
    Starting,
    /// Another instance is active.
    Standby {
        /// Its name (empty when none is, or unknown).
        active: String,
        /// Its epoch.
        epoch: i64,
    },
    /// This one.
    Active {
        /// Its epoch.
        epoch: i64,
    },
}

impl Role {
    /// `single`, `starting`, `standby` or `active`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Single => "single",
            Self::Starting => "starting",
            Self::Standby { .. } => "standby",
            Self::Active { .. } => "active",
        }
    }

    /// The epoch this instance holds or sees.
    pub fn epoch(&self) -> Option<i64> {
        match self {
            Self::Active { epoch } | Self::Standby { epoch, .. } => Some(*epoch),
            _ => None,
        }
    }

    /// Whether this instance does the work.
    pub fn works(&self) -> bool {
        matches!(self, Self::Single | Self::Active { .. })
    }
}

/// The instance's role and its write gate.
#[derive(Debug)]
pub struct Ha {
    instance: String,
    role: Mutex<Role>,
    takeovers: AtomicU64,
    lease: Mutex<Option<Arc<Lease>>>,
    confirmed: Mutex<Option<Instant>>,
}

impl Ha {
    /// An instance called `instance`, starting (`single`: it shares no database).
    pub fn new(instance: &str, single: bool) -> Arc<Self> {
        Arc::new(Self {
            instance: instance.to_owned(),
            role: Mutex::new(if single { Role::Single } else { Role::Starting }),
            takeovers: AtomicU64::new(0),
            lease: Mutex::new(None),
            confirmed: Mutex::new(None),
        })
    }

    /// This instance's name.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Its role now.
    pub fn role(&self) -> Role {
        self.role.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How often it became active.
    pub fn takeovers(&self) -> u64 {
        self.takeovers.load(Ordering::Relaxed)
    }

    fn set_role(&self, role: Role) {
        *self.role.lock().unwrap_or_else(|e| e.into_inner()) = role;
    }

    /// Another instance is active (as last seen).
    pub fn standby(&self, active: String, epoch: i64) {
        self.set_role(Role::Standby { active, epoch });
    }

    /// This instance became active with `lease`: the gate opens.
    pub fn activate(&self, lease: Arc<Lease>) {
        let epoch = lease.epoch();
        *self.lease.lock().unwrap_or_else(|e| e.into_inner()) = Some(lease);
        *self.confirmed.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        self.takeovers.fetch_add(1, Ordering::Relaxed);
        self.set_role(Role::Active { epoch });
    }

    /// This instance's lock connection came back with its epoch unchanged.
    pub fn resumed(&self, lease: Arc<Lease>) {
        *self.lease.lock().unwrap_or_else(|e| e.into_inner()) = Some(lease);
    }

    /// This instance lost leadership: the gate closes at once.
    pub fn step_down(&self) {
        let epoch = self.role().epoch().unwrap_or_default();
        *self.lease.lock().unwrap_or_else(|e| e.into_inner()) = None;
        *self.confirmed.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.set_role(Role::Standby {
            active: String::new(),
            epoch,
        });
    }

    /// Whether this instance may write to the OMM or ack to GURU3 now: always when single;
    /// when active, if the database confirmed its epoch within the last 100 ms (else it is
    /// asked now); never otherwise.
    pub async fn may_write(&self) -> bool {
        if self.role() == Role::Single {
            return true;
        }
        let lease = self.lease.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(lease) = lease else {
            return false;
        };
        let fresh = self
            .confirmed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| t.elapsed() < RECHECK);
        if fresh {
            return true;
        }
        let current = lease.still_current().await;
        let mut confirmed = self.confirmed.lock().unwrap_or_else(|e| e.into_inner());
        *confirmed = current.then(Instant::now);
        current
    }

    /// `"ha"` of `/readyz` and the status stream.
    pub fn json(&self) -> serde_json::Value {
        let role = self.role();
        serde_json::json!({
            "instance": self.instance,
            "role": role.name(),
            "epoch": role.epoch(),
            "active": match &role {
                Role::Standby { active, .. } if !active.is_empty() => Some(active.clone()),
                Role::Active { .. } | Role::Single => Some(self.instance.clone()),
                _ => None,
            },
            "takeovers": self.takeovers(),
        })
    }
}

/// The OMM link's write gate.
#[derive(Debug)]
pub struct OmmGate(pub Arc<Ha>);

impl omm_provision::WriteGate for OmmGate {
    fn open(&self) -> std::pin::Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        Box::pin(self.0.may_write())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_name_themselves_and_default_names_differ() {
        assert_eq!(Role::Single.name(), "single");
        assert!(Role::Single.works() && Role::Active { epoch: 1 }.works());
        let s = Role::Standby {
            active: "b".into(),
            epoch: 4,
        };
        assert!(!s.works());
        assert_eq!(s.epoch(), Some(4));
        let (a, b) = (default_instance(), default_instance());
        assert_ne!(a, b);
        assert!(hexidian_state::leader::valid_instance_name(&a), "{a}");
    }

    #[tokio::test]
    async fn the_gate_is_open_when_single_and_shut_when_standby() {
        let single = Ha::new("x", true);
        assert!(single.may_write().await);
        let ha = Ha::new("x", false);
        assert!(!ha.may_write().await, "starting");
        ha.standby("y".into(), 3);
        assert!(!ha.may_write().await);
        assert_eq!(ha.json()["active"], "y");
        assert_eq!(ha.json()["role"], "standby");
    }
}
