//! DECT users and their handsets: create, update, rename, delete, bind, release.
//!
//! Every step first asks the [`Map`](crate::map): with the OMM read, an unchanged user or an
//! already bound handset costs no request at all, a new user one `CreatePPUser`, and a number
//! the OMM does not hold nothing. Where the map is wrong after all (the OMM changed behind
//! the events' back), the OMM's own refusal (`EExist`, `ENoEnt`) sends the step back to
//! asking the OMM, once.

use omm_axi::{
    Client, ErrorCode, Ipei, PpDevice, PpUser, RelType, Secret, SecretValue, Sensitive,
    SubscriptionState, Uid,
};

use crate::keys::Held;
use crate::map::{DevRow, Known, UserRow};
use crate::{Error, Link, Result};

/// A DECT user as provisioning wants it.
#[derive(Debug, Clone)]
pub struct UserSpec {
    /// Number (`num`, `addId`, `sipAuthId`).
    pub number: String,
    /// Display name, already fit for the OMM.
    pub name: String,
    /// SIP password of the user's PBX account.
    pub sip_password: Secret,
    /// Written into `hierarchy2` when given (at most 16 characters; any account that may
    /// read users would see it).
    pub token: Option<Secret>,
    /// Nothing changed on the caller's side (a resync re-checks it): a user that already
    /// holds every visible field is not written again.
    pub unchanged: bool,
}

/// A handset to bind.
#[derive(Debug, Clone)]
pub struct HandsetSpec {
    /// IPEI in any form the OMM's parser takes.
    pub ipei: String,
    /// Its UAK (for a device the OMM does not know yet).
    pub uak: Sensitive,
    /// The device's `encrypt`.
    pub encryption: bool,
}

impl Link {
    pub(crate) fn owns(&self, u: &UserRow) -> bool {
        *u.hierarchy1 == *self.tags.owner
    }

    pub(crate) fn is_temp(&self, u: &UserRow) -> bool {
        *u.hierarchy2 == *self.tags.temp
    }

    /// Notes a user the OMM answered with; its row.
    pub(crate) fn note_user(&self, u: &PpUser) -> UserRow {
        let mut map = self.map();
        map.user(u);
        match map.by_uid(u.uid().get()) {
            Known::Yes(row) => row,
            _ => UserRow::default(),
        }
    }

    pub(crate) fn note_device(&self, d: &PpDevice) -> DevRow {
        let mut map = self.map();
        map.device(d);
        match map.by_ppn(d.ppn().get()) {
            Known::Yes(row) => row,
            _ => DevRow::default(),
        }
    }

    /// The user of `num`: from the map, or asked (and noted).
    pub(crate) async fn user_by_number(&self, c: &Client, num: &str) -> Result<Option<UserRow>> {
        let known = self.map().by_number(num);
        match known {
            Known::Yes(u) => Ok(Some(u)),
            Known::No => Ok(None),
            Known::Unknown => self.ask_user_by_number(c, num).await,
        }
    }

    /// Asks the OMM for the user of `num` (the map may be wrong); notes the answer.
    pub(crate) async fn ask_user_by_number(
        &self,
        c: &Client,
        num: &str,
    ) -> Result<Option<UserRow>> {
        match c.fetch_user_by_number(num).await? {
            Some(u) => Ok(Some(self.note_user(&u))),
            None => {
                // whatever the map held under this number is gone
                let stale = self.map().by_number(num);
                if let Known::Yes(row) = stale {
                    self.map().user_gone(row.uid);
                }
                Ok(None)
            }
        }
    }

    pub(crate) async fn user_by_uid(&self, c: &Client, uid: u32) -> Result<Option<UserRow>> {
        let known = self.map().by_uid(uid);
        match known {
            Known::Yes(u) => Ok(Some(u)),
            Known::No => Ok(None),
            Known::Unknown => Ok(c
                .fetch_user(Uid::new(uid))
                .await?
                .map(|u| self.note_user(&u))),
        }
    }

    pub(crate) async fn device_by_ppn(&self, c: &Client, ppn: u32) -> Result<Option<DevRow>> {
        let known = self.map().by_ppn(ppn);
        match known {
            Known::Yes(d) => Ok(Some(d)),
            Known::No => Ok(None),
            Known::Unknown => Ok(c
                .fetch_device(omm_axi::Ppn::new(ppn))
                .await?
                .map(|d| self.note_device(&d))),
        }
    }

    /// Re-reads a user after its handset's key was taken: from a complete map (which every
    /// serialised change updates before it lets go), or from the OMM if a change of that
    /// handset ran since `generation` was read.
    async fn reread_user(
        &self,
        c: &Client,
        user: UserRow,
        generation: u64,
    ) -> Result<Option<UserRow>> {
        if self.map().is_complete() {
            return Ok(match self.map().by_uid(user.uid) {
                Known::Yes(u) => Some(u),
                _ => None,
            });
        }
        if self.keys.handset_generation(user.ppn) == generation {
            return Ok(Some(user));
        }
        self.ask_user_by_number(c, &user.num).await
    }

    /// The user of `num` (whose key `held` holds), with its handset held too. While the
    /// number is held nobody can attach a handset to it (every attach holds its user's
    /// number), only take its handset away; so one read after holding the handset is current.
    async fn user_with_handset(
        &self,
        held: &mut Held<'_>,
        c: &Client,
        num: &str,
    ) -> Result<Option<UserRow>> {
        let Some(user) = self.user_by_number(c, num).await? else {
            return Ok(None);
        };
        if user.ppn == 0 {
            return Ok(Some(user));
        }
        let generation = self.keys.handset_generation(user.ppn);
        held.add(user.ppn).await;
        self.reread_user(c, user, generation).await
    }

    fn not_owned(&self, number: &str) -> Error {
        Error::NotOwned {
            number: number.to_owned(),
            owner: self.tags.owner.clone(),
        }
    }

    fn owned_only(&self, number: &str, user: Option<UserRow>) -> Result<Option<UserRow>> {
        match user {
            Some(u) if self.owns(&u) => Ok(Some(u)),
            Some(_) => Err(self.not_owned(number)),
            None => Ok(None),
        }
    }

    pub(crate) fn fill(&self, u: &mut PpUser, spec: &UserSpec) {
        u.name = Some(spec.name.clone());
        u.num = Some(spec.number.clone());
        u.add_id = Some(spec.number.clone());
        u.sip_auth_id = Some(spec.number.clone());
        u.sip_pw = Some(SecretValue::from(spec.sip_password.clone()));
        u.hierarchy1 = Some(self.tags.owner.clone());
        // hierarchy fields hold at most 16 characters
        u.hierarchy2 = Some(
            spec.token
                .as_ref()
                .map(Secret::expose)
                .filter(|t| t.len() <= 16)
                .unwrap_or_default()
                .to_owned(),
        );
    }

    /// Whether an OMM user already holds every visible field `fill` would write (the SIP
    /// password is opaque ciphertext on the way back and cannot be compared).
    fn holds(&self, existing: &UserRow, spec: &UserSpec) -> bool {
        let mut want = PpUser::default();
        self.fill(&mut want, spec);
        let same = |a: &str, b: &Option<String>| a == b.as_deref().unwrap_or_default();
        same(&existing.name, &want.name)
            && same(&existing.num, &want.num)
            && same(&existing.add_id, &want.add_id)
            && same(&existing.sip_auth_id, &want.sip_auth_id)
            && same(&existing.hierarchy1, &want.hierarchy1)
            && same(&existing.hierarchy2, &want.hierarchy2)
    }

    /// Creates or updates the owned user of `spec.number`.
    pub async fn upsert_user(&self, spec: &UserSpec) -> Result<()> {
        self.may_write().await?;
        let _held = self.keys.hold([spec.number.as_str()]).await;
        let c = self.client().await?;
        let mut existing = self.user_by_number(&c, &spec.number).await?;
        // the map's answer is tried first; the OMM's refusal of it sends us to the OMM once
        for last in [false, true] {
            let result = match self.owned_only(&spec.number, existing.clone())? {
                // a resync's re-check of a user nothing changed about: write only if the OMM
                // lost or changed what it should hold
                Some(u) if spec.unchanged && self.holds(&u, spec) => return Ok(()),
                Some(u) => {
                    let mut set = PpUser::default();
                    set.uid = Some(Uid::new(u.uid));
                    self.fill(&mut set, spec);
                    c.set_user(set).await
                }
                None => {
                    let mut new = PpUser::default();
                    self.fill(&mut new, spec);
                    c.create_user(new).await
                }
            };
            match result {
                Ok(u) => {
                    self.note_user(&u);
                    return Ok(());
                }
                Err(e)
                    if !last && matches!(e.code(), Some(ErrorCode::NoEnt | ErrorCode::Exist)) =>
                {
                    existing = self.ask_user_by_number(&c, &spec.number).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        unreachable!("the second attempt returns")
    }

    /// Deletes the user of `number` if `ours` says it may; whether it did. The number and
    /// its handset are held for the read and the delete (deleting a user frees its handset).
    pub(crate) async fn delete_if(
        &self,
        number: &str,
        ours: impl Fn(&Self, &UserRow) -> bool,
    ) -> Result<bool> {
        let mut held = self.keys.hold([number]).await;
        let c = self.client().await?;
        match self.user_with_handset(&mut held, &c, number).await? {
            Some(u) if ours(self, &u) => match c.delete_user(Uid::new(u.uid)).await {
                Ok(()) => {
                    self.map().user_gone(u.uid);
                    Ok(true)
                }
                Err(e) if e.code() == Some(&ErrorCode::NoEnt) => {
                    self.map().user_gone(u.uid);
                    Ok(false)
                }
                Err(e) => Err(e.into()),
            },
            _ => Ok(false),
        }
    }

    /// Deletes the owned (non-temporary) user of `number`; its handset stays subscribed,
    /// unbound. `false` if there was none.
    pub async fn delete_user(&self, number: &str) -> Result<bool> {
        self.may_write().await?;
        self.delete_if(number, |l, u| l.owns(u)).await
    }

    /// Gives the owned user of `old` the number `new`; a handset bound to it stays bound.
    pub async fn rename_user(&self, old: &str, new: &str) -> Result<()> {
        self.may_write().await?;
        let _held = self.keys.hold([old, new]).await;
        let c = self.client().await?;
        let found = self.user_by_number(&c, old).await?;
        let Some(u) = self.owned_only(old, found)? else {
            return Ok(());
        };
        // an owned user already at `new` is a stale copy (replay): replace it
        let at_new = self.user_by_number(&c, new).await?;
        if let Some(stale) = self.owned_only(new, at_new)? {
            c.delete_user(Uid::new(stale.uid)).await?;
            self.map().user_gone(stale.uid);
        }
        let mut set = PpUser::default();
        set.uid = Some(Uid::new(u.uid));
        set.num = Some(new.to_owned());
        set.add_id = Some(new.to_owned());
        set.sip_auth_id = Some(new.to_owned());
        let done = c.set_user(set).await?;
        self.note_user(&done);
        Ok(())
    }

    /// Makes the handset known (IPEI + UAK) and attaches it to the owned user of `number`.
    pub async fn bind_handset(&self, number: &str, handset: &HandsetSpec) -> Result<()> {
        self.may_write().await?;
        let ipei: Ipei = handset.ipei.parse().map_err(|e| Error::InvalidIpei {
            ipei: handset.ipei.clone(),
            reason: format!("{e}"),
        })?;
        let mut held = self.keys.hold([number]).await;
        let c = self.client().await?;
        let no_user = || Error::NoUser(number.to_owned());
        let found = self.user_by_number(&c, number).await?;
        let user = self.owned_only(number, found)?.ok_or_else(no_user)?;
        let known = self.map().by_ipei(ipei);
        let device = match known {
            Known::Yes(d) => Some(d),
            Known::No => None,
            Known::Unknown => c
                .fetch_device_by_ipei(ipei)
                .await?
                .map(|d| self.note_device(&d)),
        };
        let device = match device {
            Some(d) => d,
            None => {
                let mut d = PpDevice::default();
                d.ipei = Some(ipei);
                d.uak = Some(Sensitive::new(handset.uak.expose()));
                d.s = Some(SubscriptionState::Yes);
                d.encrypt = Some(handset.encryption);
                d.rel_type = Some(RelType::Unbound);
                d.auto_create = Some(false);
                let created = c.create_device(&d).await?;
                self.note_device(&created)
            }
        };
        let generation = self.keys.handset_generation(device.ppn);
        held.add(device.ppn).await;
        // a serialised change of the handset ran since the reads: read again under the keys
        let (user, device) =
            if self.map().is_complete() || self.keys.handset_generation(device.ppn) != generation {
                // from the map, which every serialised change updates before it lets go
                let user = if self.map().is_complete() {
                    self.user_by_uid(&c, user.uid).await?
                } else {
                    self.ask_user_by_number(&c, number).await?
                };
                let user = self.owned_only(number, user)?.ok_or_else(no_user)?;
                let fresh = if self.map().is_complete() {
                    self.device_by_ppn(&c, device.ppn).await?
                } else {
                    c.fetch_device(omm_axi::Ppn::new(device.ppn))
                        .await?
                        .map(|d| self.note_device(&d))
                };
                let device = fresh.ok_or_else(|| Error::Vanished(handset.ipei.clone()))?;
                (user, device)
            } else {
                (user, device)
            };
        // GURU3's useEncryption, also for a device that existed already
        if device.encrypt != Some(handset.encryption) {
            let mut set = PpDevice::default();
            set.ppn = Some(omm_axi::Ppn::new(device.ppn));
            set.encrypt = Some(handset.encryption);
            let done = c.set_device(&set).await?;
            self.note_device(&done);
        }
        if device.uid == user.uid {
            return Ok(());
        }
        if device.uid != 0 {
            match self.user_by_uid(&c, device.uid).await? {
                Some(u) if !self.owns(&u) => {
                    return Err(self.foreign_holder(&handset.ipei, &u));
                }
                _ => self.detach(&c, device.ppn, device.uid).await?,
            }
        }
        self.detach_previous(&c, &user).await?;
        self.attach(&c, device.ppn, user.uid).await
    }

    /// Detaches the handset of the owned user of `number`, keeping it subscribed; `false` if
    /// none was attached.
    pub async fn release_handset(&self, number: &str) -> Result<bool> {
        self.may_write().await?;
        let mut held = self.keys.hold([number]).await;
        let c = self.client().await?;
        let user = self.user_with_handset(&mut held, &c, number).await?;
        let Some(user) = self.owned_only(number, user)? else {
            return Ok(false);
        };
        if user.ppn == 0 {
            return Ok(false);
        }
        self.detach(&c, user.ppn, user.uid).await?;
        Ok(true)
    }

    /// Numbers of the owned, non-temporary users.
    pub async fn owned_numbers(&self) -> Result<Vec<String>> {
        let c = self.client().await?;
        if let Some(users) = self.map().users() {
            return Ok(users
                .filter(|u| self.owns(u) && !self.is_temp(u) && !u.num.is_empty())
                .map(|u| u.num.to_string())
                .collect());
        }
        let mut out = Vec::new();
        c.scan_users(8, |page| {
            out.extend(
                page.iter()
                    .filter(|u| {
                        u.hierarchy1.as_deref() == Some(self.tags.owner.as_str())
                            && u.hierarchy2.as_deref() != Some(self.tags.temp.as_str())
                    })
                    .filter_map(|u| u.num.clone()),
            );
        })
        .await?;
        Ok(out)
    }

    /// A cheap question the OMM answers whenever it answers anything.
    pub async fn ping(&self) -> Result<()> {
        let c = self.client_now().await?;
        c.ping().await?;
        Ok(())
    }

    pub(crate) async fn attach(&self, c: &Client, ppn: u32, uid: u32) -> Result<()> {
        let (d, u) = c
            .attach(omm_axi::Ppn::new(ppn), Uid::new(uid), RelType::Dynamic)
            .await?;
        self.note_device(&d);
        self.note_user(&u);
        Ok(())
    }

    pub(crate) async fn detach(&self, c: &Client, ppn: u32, uid: u32) -> Result<()> {
        let (d, u) = c.detach(omm_axi::Ppn::new(ppn), Uid::new(uid)).await?;
        self.note_device(&d);
        self.note_user(&u);
        Ok(())
    }

    /// Detaches `user` from the handset it held when read. That handset's key is not held (a
    /// change holds one handset), so another change may have taken it away meanwhile: then
    /// there is nothing left to detach.
    pub(crate) async fn detach_previous(&self, c: &Client, user: &UserRow) -> Result<()> {
        if user.ppn == 0 {
            return Ok(());
        }
        if let Err(e) = self.detach(c, user.ppn, user.uid).await {
            match c.fetch_user(Uid::new(user.uid)).await {
                Ok(Some(now)) if now.bound_ppn().get() != user.ppn => {
                    self.note_user(&now);
                }
                _ => return Err(e),
            }
        }
        Ok(())
    }

    /// A handset attached to an OMM user this broker does not own is never taken from it.
    pub(crate) fn foreign_holder(&self, ipei: &str, holder: &UserRow) -> Error {
        Error::ForeignHolder {
            ipei: ipei.to_owned(),
            holder: if holder.num.is_empty() {
                "?".to_owned()
            } else {
                holder.num.to_string()
            },
            uid: holder.uid,
            owner: self.tags.owner.clone(),
        }
    }
}
