//! The workflow's ports: what it needs from the OMM (its handsets), from its durable state
//! (promised binds, the `ASSIGN_HANDSET` outbox) and from GURU3 (the outbox's receiver). The
//! PBX and the clock are the broker's ports ([`broker_core::ports`]); the workflow's own are
//! here, next to their only consumer.

use broker_core::model::{Number, Secret};
use broker_core::ports::{BoxFuture, PortResult};

/// GURU3's receiver of the outbox.
pub trait AssignSink: Send + Sync + 'static {
    /// Sends `ASSIGN_HANDSET` messages; GURU3's verdict for each, in order.
    fn submit(&self, assigns: Vec<Assign>) -> BoxFuture<'_, PortResult<Vec<AssignResult>>>;
}

/// `ASSIGN_HANDSET`: tell GURU3 that a handset now belongs to a DECT extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assign {
    /// Our durable outbox id (echoed back by GURU3).
    pub id: i64,
    /// The handset's IPEI.
    pub ipei: String,
    /// Its UAK.
    pub uak: Secret,
    /// The extension.
    pub extension: Number,
}

/// GURU3's answer to one [`Assign`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignResult {
    /// The outbox id.
    pub id: i64,
    /// `OK` (true) or `NAK`.
    pub ok: bool,
    /// GURU3's text (empty on OK).
    pub text: String,
}

/// A DECT handset as the unbound-handset workflow sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// OMM device id.
    pub ppn: u32,
    /// IPEI.
    pub ipei: String,
    /// UAK (for `ASSIGN_HANDSET`).
    pub uak: Secret,
    /// Subscribed to the DECT system.
    pub subscribed: bool,
    /// Number of the user it is attached to.
    pub user: Option<Number>,
    /// That user is one of hexidian's temporary users.
    pub temp: bool,
}

/// Which handset to look up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// By device id.
    Ppn(u32),
    /// The handset attached to this user number.
    User(Number),
}

/// Something happened on the DECT system.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DectEvent {
    /// A device appeared or changed (subscribed, bound, unbound).
    Device(u32),
    /// The subscription mode changed.
    Mode(String),
    /// The link (re)connected or events were lost: rescan.
    Rescan,
}

/// A temporary user and the device attached to it, if any.
pub type TempUser = (Number, Option<u32>);

/// The DECT system's handsets (the unbound-handset workflow's view of the OMM).
pub trait Handsets: Send + Sync + 'static {
    /// The next event (waits; cancel-safe).
    fn next_event(&self) -> BoxFuture<'_, DectEvent>;
    /// Every device.
    fn devices(&self) -> BoxFuture<'_, PortResult<Vec<Device>>>;
    /// One device.
    fn lookup(&self, which: Lookup) -> BoxFuture<'_, PortResult<Option<Device>>>;
    /// Creates the temporary user `number` (tagged as temporary) and attaches the handset.
    fn give_temp(
        &self,
        ppn: u32,
        number: Number,
        sip_password: Secret,
    ) -> BoxFuture<'_, PortResult<()>>;
    /// Moves the handset to the user of `extension`; a temporary user it leaves is deleted.
    fn move_to(&self, ppn: u32, extension: Number) -> BoxFuture<'_, PortResult<()>>;
    /// Sets the DECT subscription mode (`Off`, `Configured`, `Wildcard`).
    fn set_subscription_mode(&self, mode: String) -> BoxFuture<'_, PortResult<()>>;
    /// Every temporary user, with the device attached to it (if any).
    fn temp_users(&self) -> BoxFuture<'_, PortResult<Vec<TempUser>>>;
    /// Deletes the temporary user `number` (only a temporary one; gone already is fine).
    fn remove_temp(&self, number: Number) -> BoxFuture<'_, PortResult<()>>;
}

/// A bind promised to a caller and not yet carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingBind {
    /// Durable id.
    pub id: i64,
    /// The handset.
    pub ppn: u32,
    /// Its temporary number.
    pub temp: Number,
    /// The extension it goes to.
    pub extension: Number,
}

/// Durable state of the unbound-handset workflow: promised binds and the ASSIGN_HANDSET outbox.
pub trait HandsetState: Send + Sync + 'static {
    /// Records a promised bind (before the caller hears `OK`). A handset has at most one:
    /// recording another returns the first one's id, retargeted.
    fn add_bind(&self, ppn: u32, temp: Number, extension: Number)
    -> BoxFuture<'_, PortResult<i64>>;
    /// Binds not yet carried out.
    fn pending_binds(&self) -> BoxFuture<'_, PortResult<Vec<PendingBind>>>;
    /// Forgets a bind that cannot be carried out; queues nothing.
    fn drop_bind(&self, id: i64) -> BoxFuture<'_, PortResult<()>>;
    /// Marks a bind done and queues its `ASSIGN_HANDSET` (ipei, uak), atomically.
    fn finish_bind(
        &self,
        id: i64,
        ipei: String,
        uak: Secret,
        extension: Number,
    ) -> BoxFuture<'_, PortResult<()>>;
    /// Queued `ASSIGN_HANDSET`s.
    fn pending_assigns(&self, limit: u32) -> BoxFuture<'_, PortResult<Vec<Assign>>>;
    /// How many `ASSIGN_HANDSET`s are queued.
    fn outbox_depth(&self) -> BoxFuture<'_, PortResult<u64>>;
    /// Records GURU3's verdict (never retried blindly after a NAK).
    fn finish_assign(&self, result: AssignResult) -> BoxFuture<'_, PortResult<()>>;
}
