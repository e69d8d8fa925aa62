//! Handsets without a user of their own: temporary users, moves to a user, the subscription
//! mode.

use omm_axi::{Client, Ipei, PpUser, Secret, Sensitive, SubscriptionMode, Uid};

use crate::map::{DevRow, UserRow};
use crate::{Error, Link, Result, UserSpec};

/// A device as a handset workflow sees it.
#[derive(Debug, Clone)]
pub struct Device {
    /// Device id.
    pub ppn: u32,
    /// IPEI, when the OMM gave one.
    pub ipei: Option<Ipei>,
    /// UAK.
    pub uak: Option<Sensitive>,
    /// Subscribed to the DECT system.
    pub subscribed: bool,
    /// Number of the user it is attached to.
    pub user: Option<String>,
    /// That user is one of this broker's temporary users.
    pub temp: bool,
}

/// A temporary user and the device attached to it, if any.
pub type TempUser = (String, Option<u32>);

impl Link {
    fn view(&self, d: &DevRow, u: Option<&UserRow>) -> Device {
        Device {
            ppn: d.ppn,
            ipei: d.ipei,
            uak: d.uak.as_ref().map(|u| Sensitive::new(u.expose())),
            subscribed: d.subscribed,
            user: u.filter(|u| !u.num.is_empty()).map(|u| u.num.to_string()),
            temp: u.is_some_and(|u| self.owns(u) && self.is_temp(u)),
        }
    }

    /// Every device with its user: from the map once the OMM was read, else read now.
    pub async fn devices(&self) -> Result<Vec<Device>> {
        let c = self.client().await?;
        if let Some(all) = self.map().devices() {
            return Ok(all.map(|(d, u)| self.view(d, u)).collect());
        }
        let mut users = std::collections::HashMap::new();
        c.scan_users(8, |page| {
            for u in page {
                let row = self.note_user(&u);
                users.insert(row.uid, row);
            }
        })
        .await?;
        let mut out = Vec::new();
        c.scan_devices(8, |page| {
            for d in page {
                let row = self.note_device(&d);
                out.push(self.view(&row, users.get(&row.uid)));
            }
        })
        .await?;
        Ok(out)
    }

    async fn with_user(&self, c: &Client, d: DevRow) -> Result<Device> {
        let user = if d.uid == 0 {
            None
        } else {
            self.user_by_uid(c, d.uid).await?
        };
        Ok(self.view(&d, user.as_ref()))
    }

    /// The device `ppn`: from the map once the OMM was read (every event reaches the map
    /// before it is passed on), else asked.
    pub async fn device(&self, ppn: u32) -> Result<Option<Device>> {
        let c = self.client().await?;
        if self.map().is_complete() {
            return match self.device_by_ppn(&c, ppn).await? {
                Some(d) => Ok(Some(self.with_user(&c, d).await?)),
                None => Ok(None),
            };
        }
        match c.fetch_device(omm_axi::Ppn::new(ppn)).await? {
            Some(d) => {
                let row = self.note_device(&d);
                Ok(Some(self.with_user(&c, row).await?))
            }
            None => {
                self.map().device_gone(ppn);
                Ok(None)
            }
        }
    }

    /// The device attached to the user of `number` (from the map once the OMM was read).
    pub async fn device_of(&self, number: &str) -> Result<Option<Device>> {
        let c = self.client().await?;
        let Some(u) = self.user_by_number(&c, number).await? else {
            return Ok(None);
        };
        if u.ppn == 0 {
            return Ok(None);
        }
        if self.map().is_complete() {
            return Ok(self
                .device_by_ppn(&c, u.ppn)
                .await?
                .map(|d| self.view(&d, Some(&u))));
        }
        match c.fetch_device(omm_axi::Ppn::new(u.ppn)).await? {
            Some(d) => {
                let row = self.note_device(&d);
                Ok(Some(self.view(&row, Some(&u))))
            }
            None => Ok(None),
        }
    }

    /// Creates the temporary user `number` (tagged as temporary) and attaches the handset.
    pub async fn give_temp(&self, ppn: u32, number: &str, sip_password: Secret) -> Result<()> {
        self.may_write().await?;
        let mut held = self.keys.hold([number]).await;
        held.add(ppn).await;
        let c = self.client().await?;
        if let Some(u) = self.user_by_number(&c, number).await? {
            // hexidian's own temporary user of an earlier attempt that did not get as far as
            // the attach (the link broke): it is this handset's now
            if self.owns(&u) && self.is_temp(&u) && (u.ppn == 0 || u.ppn == ppn) {
                if u.ppn == ppn {
                    return Ok(());
                }
                return self.attach(&c, ppn, u.uid).await;
            }
            return Err(Error::Taken(number.to_owned()));
        }
        let mut u = PpUser::default();
        self.fill(
            &mut u,
            &UserSpec {
                number: number.to_owned(),
                name: "Unbound Handset".into(),
                sip_password,
                token: None,
                unchanged: false,
            },
        );
        u.hierarchy2 = Some(self.tags.temp.clone());
        let created = c.create_user(u).await?;
        let row = self.note_user(&created);
        if let Err(e) = self.attach(&c, ppn, row.uid).await {
            if c.delete_user(created.uid()).await.is_ok() {
                self.map().user_gone(row.uid);
            }
            return Err(e);
        }
        Ok(())
    }

    /// Moves the handset to the owned user of `extension`; a temporary user it leaves is
    /// deleted.
    pub async fn move_to(&self, ppn: u32, extension: &str) -> Result<()> {
        self.may_write().await?;
        let mut held = self.keys.hold([extension]).await;
        held.add(ppn).await;
        let c = self.client().await?;
        let target = self
            .user_by_number(&c, extension)
            .await?
            .filter(|u| self.owns(u) && !self.is_temp(u))
            .ok_or_else(|| Error::NoTarget(extension.to_owned()))?;
        let dev = self
            .device_by_ppn(&c, ppn)
            .await?
            .ok_or(Error::NoHandset(ppn))?;
        if dev.uid == target.uid {
            return Ok(());
        }
        if dev.uid != 0 {
            match self.user_by_uid(&c, dev.uid).await? {
                // deleting the temporary user frees the handset in one step
                Some(u) if self.owns(&u) && self.is_temp(&u) => {
                    c.delete_user(Uid::new(dev.uid)).await?;
                    self.map().user_gone(dev.uid);
                }
                Some(u) if !self.owns(&u) => {
                    let ipei = dev.ipei.map(|i| i.to_string()).unwrap_or_default();
                    return Err(self.foreign_holder(&ipei, &u));
                }
                _ => self.detach(&c, ppn, dev.uid).await?,
            }
        }
        self.detach_previous(&c, &target).await?;
        self.attach(&c, ppn, target.uid).await
    }

    /// Every temporary user, with the device attached to it (if any).
    pub async fn temp_users(&self) -> Result<Vec<TempUser>> {
        let c = self.client().await?;
        let temp = |u: &UserRow| {
            (self.owns(u) && self.is_temp(u) && !u.num.is_empty())
                .then(|| (u.num.to_string(), (u.ppn != 0).then_some(u.ppn)))
        };
        if let Some(users) = self.map().users() {
            return Ok(users.filter_map(temp).collect());
        }
        let mut out = Vec::new();
        c.scan_users(8, |page| {
            for u in page {
                let row = self.note_user(&u);
                out.extend(temp(&row));
            }
        })
        .await?;
        Ok(out)
    }

    /// Deletes the temporary user `number` (only a temporary one; gone already is fine).
    pub async fn remove_temp(&self, number: &str) -> Result<()> {
        self.may_write().await?;
        self.delete_if(number, |l, u| l.owns(u) && l.is_temp(u))
            .await?;
        Ok(())
    }

    /// Sets the DECT subscription mode; `Wildcard` for three minutes.
    pub async fn set_subscription_mode(&self, mode: SubscriptionMode) -> Result<()> {
        self.may_write().await?;
        let c = self.client().await?;
        let timeout = (mode == SubscriptionMode::Wildcard).then_some(3);
        c.set_subscription_mode(mode, timeout).await?;
        Ok(())
    }
}
