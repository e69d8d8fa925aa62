//! Requests, responses and events.

use crate::error::{Error, ErrorCode, OmmError, ProtocolError};
use crate::proto::record::{PpDevice, PpState, PpUser, parse_bool, strip_message_attrs};
use crate::proto::xml::Element;
use crate::secret::{PublicKey, Secret};
use crate::types::{Filter, Ipei, Ppn, RelType, Subscription, SubscriptionMode, Uid};

/// Most records the OMM returns per page (`Limits/@records`).
pub const MAX_RECORDS: u32 = 20;

/// A request ready to be sent: the root element without `seq` (the session adds it).
///
/// The constructors cover what a provisioning tool needs; [`Request::raw`] sends anything else.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    body: RequestBody,
}

#[derive(Clone, Debug, PartialEq)]
enum RequestBody {
    Element(Element),
    /// A record that may hold plaintext secrets, encrypted only at encode time.
    WithUser {
        root: Element,
        user: Box<PpUser>,
    },
}

impl Request {
    /// Any request element; its name decides the expected response (`<name>Resp`).
    pub fn raw(element: Element) -> Self {
        Self {
            body: RequestBody::Element(element),
        }
    }

    fn el(name: &str) -> Element {
        Element::new(name)
    }

    /// Request name (root element name).
    pub fn name(&self) -> &str {
        match &self.body {
            RequestBody::Element(e) | RequestBody::WithUser { root: e, .. } => e.name(),
        }
    }

    /// Log in. `sync_client` asks for a user/device synchronisation session (needed for
    /// `SetPP` and for writing `uak`/`s`).
    #[doc(alias = "Open")]
    pub fn open(
        username: &str,
        password: &Secret,
        sync_client: bool,
        protocol_version: Option<u32>,
    ) -> Self {
        let mut e = Self::el("Open")
            .with_attr("username", username)
            .with_attr("password", password.expose());
        if let Some(v) = protocol_version {
            e.set_attr("protocolVersion", v.to_string());
        }
        if sync_client {
            e.set_attr("UserDeviceSyncClient", "true");
        }
        Self::raw(e)
    }

    /// Keep-alive; `time_stamp` is the client's Unix time.
    #[doc(alias = "Ping")]
    pub fn ping(time_stamp: Option<i64>) -> Self {
        let mut e = Self::el("Ping");
        if let Some(t) = time_stamp {
            e.set_attr("timeStamp", t.to_string());
        }
        Self::raw(e)
    }

    /// Versions of every supported message.
    #[doc(alias = "GetVersions")]
    pub fn get_versions() -> Self {
        Self::raw(Self::el("GetVersions"))
    }

    /// System limits.
    #[doc(alias = "Limits")]
    pub fn limits() -> Self {
        Self::raw(Self::el("Limits"))
    }

    /// System name.
    #[doc(alias = "GetSystemName")]
    pub fn get_system_name() -> Self {
        Self::raw(Self::el("GetSystemName"))
    }

    /// The OMM's RSA key for secrets.
    #[doc(alias = "GetPublicKey")]
    pub fn get_public_key() -> Self {
        Self::raw(Self::el("GetPublicKey"))
    }

    /// Event subscription (1–20 entries, applied atomically by the OMM).
    #[doc(alias = "Subscribe")]
    pub fn subscribe(entries: &[Subscription]) -> Result<Self, Error> {
        if entries.is_empty() || entries.len() > 20 {
            return Err(Error::Config("a subscribe request takes 1 to 20 entries"));
        }
        let mut root = Self::el("Subscribe");
        for s in entries {
            let mut e = Element::new("e")
                .with_attr("cmd", if s.on { "On" } else { "Off" })
                .with_attr("eventType", s.event_type.as_str());
            for (name, f) in [("ppn", s.ppn), ("uid", s.uid)] {
                match f {
                    Filter::None => {}
                    Filter::All => e.set_attr(name, "-1"),
                    Filter::Id(id) => e.set_attr(name, id.to_string()),
                }
            }
            root.push_child(e);
        }
        Ok(Self::raw(root))
    }

    /// Up to `max_records` users with `uid >= from`.
    #[doc(alias = "GetPPUser")]
    pub fn get_pp_user(from: Uid, max_records: Option<u32>) -> Self {
        let mut e = Self::el("GetPPUser").with_attr("uid", from.to_string());
        if let Some(m) = max_records {
            e.set_attr("maxRecords", m.min(MAX_RECORDS).to_string());
        }
        Self::raw(e)
    }

    /// The user with number `num`.
    #[doc(alias = "GetPPUserByNumber")]
    pub fn get_pp_user_by_number(num: &str) -> Self {
        Self::raw(Self::el("GetPPUserByNumber").with_attr("num", num))
    }

    /// Creates a user from the set fields of `user` (`uid` unset or `0`).
    #[doc(alias = "CreatePPUser")]
    pub fn create_pp_user(user: PpUser) -> Self {
        Self::with_user("CreatePPUser", user)
    }

    /// Changes the set fields of `user` (`uid` required).
    #[doc(alias = "SetPPUser")]
    pub fn set_pp_user(user: PpUser) -> Self {
        Self::with_user("SetPPUser", user)
    }

    fn with_user(name: &str, user: PpUser) -> Self {
        Self {
            body: RequestBody::WithUser {
                root: Self::el(name),
                user: Box::new(user),
            },
        }
    }

    /// Deletes a user; a bound device becomes unbound.
    #[doc(alias = "DeletePPUser")]
    pub fn delete_pp_user(uid: Uid) -> Self {
        Self::raw(Self::el("DeletePPUser").with_attr("uid", uid.to_string()))
    }

    /// Switches an existing binding between `Fixed` and `Dynamic`.
    #[doc(alias = "SetPPUserDevRelation")]
    pub fn set_pp_user_dev_relation(uid: Uid, rel_type: &RelType) -> Self {
        Self::raw(
            Self::el("SetPPUserDevRelation")
                .with_attr("uid", uid.to_string())
                .with_attr("relType", rel_type.as_str()),
        )
    }

    /// Up to `max_records` devices with `ppn >= from`.
    #[doc(alias = "GetPPDev")]
    pub fn get_pp_dev(from: Ppn, max_records: Option<u32>) -> Self {
        let mut e = Self::el("GetPPDev").with_attr("ppn", from.to_string());
        if let Some(m) = max_records {
            e.set_attr("maxRecords", m.min(MAX_RECORDS).to_string());
        }
        Self::raw(e)
    }

    /// The device with this IPEI.
    #[doc(alias = "GetPPDevByIPEI")]
    pub fn get_pp_dev_by_ipei(ipei: Ipei) -> Self {
        Self::raw(Self::el("GetPPDevByIPEI").with_attr("ipei", ipei.to_string()))
    }

    /// Pre-provisions a device (`ipei` required).
    #[doc(alias = "CreatePPDev")]
    pub fn create_pp_dev(device: &PpDevice) -> Result<Self, Error> {
        Ok(Self::raw(
            Self::el("CreatePPDev").with_child(device.to_element("pp", None)?),
        ))
    }

    /// Changes the set fields of a device (`ppn` required).
    #[doc(alias = "SetPPDev")]
    pub fn set_pp_dev(device: &PpDevice) -> Result<Self, Error> {
        Ok(Self::raw(
            Self::el("SetPPDev").with_child(device.to_element("pp", None)?),
        ))
    }

    /// Deletes a device (its DECT subscription is gone).
    #[doc(alias = "DeletePPDev")]
    pub fn delete_pp_dev(ppn: Ppn) -> Self {
        Self::raw(Self::el("DeletePPDev").with_attr("ppn", ppn.to_string()))
    }

    /// Binds user and device (`rel_type` `Dynamic` or `Fixed`); sync sessions only.
    #[doc(alias = "SetPP")]
    pub fn attach(ppn: Ppn, uid: Uid, rel_type: &RelType) -> Self {
        let pp = Element::new("pp")
            .with_attr("ppn", ppn.to_string())
            .with_attr("uid", uid.to_string())
            .with_attr("relType", rel_type.as_str());
        let user = Element::new("user")
            .with_attr("uid", uid.to_string())
            .with_attr("ppn", ppn.to_string())
            .with_attr("relType", rel_type.as_str());
        Self::raw(Self::el("SetPP").with_child(pp).with_child(user))
    }

    /// Unbinds user and device; sync sessions only.
    #[doc(alias = "SetPP")]
    pub fn detach(ppn: Ppn, uid: Uid) -> Self {
        let pp = Element::new("pp")
            .with_attr("ppn", ppn.to_string())
            .with_attr("uid", "0")
            .with_attr("relType", "Unbound");
        let user = Element::new("user")
            .with_attr("uid", uid.to_string())
            .with_attr("ppn", "0")
            .with_attr("relType", "Unbound");
        Self::raw(Self::el("SetPP").with_child(pp).with_child(user))
    }

    /// Current subscription mode.
    #[doc(alias = "GetDECTSubscriptionMode")]
    pub fn get_dect_subscription_mode() -> Self {
        Self::raw(Self::el("GetDECTSubscriptionMode"))
    }

    /// Sets the subscription mode; `timeout_min` (1–60) only applies to `Wildcard`.
    #[doc(alias = "SetDECTSubscriptionMode")]
    pub fn set_dect_subscription_mode(mode: &SubscriptionMode, timeout_min: Option<u32>) -> Self {
        let mut e = Self::el("SetDECTSubscriptionMode").with_attr("mode", mode.as_str());
        if let (SubscriptionMode::Wildcard, Some(t)) = (mode, timeout_min) {
            e.set_attr("timeout", t.clamp(1, 60).to_string());
        }
        Self::raw(e)
    }

    /// Enables or disables automatic creation of devices on subscription.
    #[doc(alias = "SetDevAutoCreate")]
    pub fn set_dev_auto_create(enable: bool) -> Self {
        Self::raw(Self::el("SetDevAutoCreate").with_attr("enable", if enable { "1" } else { "0" }))
    }

    /// State of a handset.
    #[doc(alias = "GetPPState")]
    pub fn get_pp_state(ppn: Ppn) -> Self {
        Self::raw(Self::el("GetPPState").with_attr("ppn", ppn.to_string()))
    }

    /// Last contact of a handset.
    #[doc(alias = "GetLastPPDevAction")]
    pub fn get_last_pp_dev_action(ppn: Ppn) -> Self {
        Self::raw(Self::el("GetLastPPDevAction").with_attr("ppn", ppn.to_string()))
    }

    /// Builds the root element with `seq`, encrypting plaintext secrets with `key`.
    pub fn to_element(&self, seq: Option<u32>, key: Option<&PublicKey>) -> Result<Element, Error> {
        let mut root = match &self.body {
            RequestBody::Element(e) => e.clone(),
            RequestBody::WithUser { root, user } => {
                let mut r = root.clone();
                r.push_child(user.to_element("user", key)?);
                r
            }
        };
        if let Some(seq) = seq {
            // seq goes first, as the OMM and every client write it
            let mut with_seq = Element::new(root.name()).with_attr("seq", seq.to_string());
            for (k, v) in root.attributes() {
                with_seq.set_attr(k.clone(), v.clone());
            }
            for c in root.children() {
                with_seq.push_child(c.clone());
            }
            root = with_seq;
        }
        Ok(root)
    }

    /// Encodes the request with its NUL terminator.
    pub fn encode(&self, seq: Option<u32>, key: Option<&PublicKey>) -> Result<Vec<u8>, Error> {
        Ok(self.to_element(seq, key)?.encode())
    }
}

/// A decoded frame from the OMM.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Message {
    /// A `…Resp`.
    Response(Response),
    /// An unsolicited `Event…`.
    Event(Event),
}

impl Message {
    /// Decodes one frame (without NUL).
    pub fn decode(frame: &[u8]) -> Result<Self, ProtocolError> {
        Self::from_element(Element::decode(frame)?)
    }

    /// Classifies an element.
    pub fn from_element(root: Element) -> Result<Self, ProtocolError> {
        if root.name().starts_with("Event") {
            Ok(Self::Event(Event::from_element(root)?))
        } else if root.name().ends_with("Resp") {
            Ok(Self::Response(Response::from_element(root)))
        } else {
            Err(ProtocolError::UnexpectedMessage {
                name: root.name().chars().take(64).collect(),
            })
        }
    }
}

/// A response: name, `seq`, error report and body.
#[derive(Clone, Debug, PartialEq)]
pub struct Response {
    seq: Option<u32>,
    raw_seq: Option<String>,
    body: Element,
}

impl Response {
    fn from_element(body: Element) -> Self {
        let raw_seq = body.attr("seq").map(str::to_owned);
        let seq = raw_seq.as_deref().and_then(|s| s.parse().ok());
        Self { seq, raw_seq, body }
    }

    /// Response name, e.g. `GetPPUserResp`.
    pub fn name(&self) -> &str {
        self.body.name()
    }

    /// The `seq` attribute, if it is a number.
    pub fn seq(&self) -> Option<u32> {
        self.seq
    }

    pub(crate) fn raw_seq(&self) -> Option<&str> {
        self.raw_seq.as_deref()
    }

    /// The whole response element.
    pub fn body(&self) -> &Element {
        &self.body
    }

    /// The error report, if the response carries `errCode`.
    pub fn error(&self) -> Option<OmmError> {
        let code = self.body.attr("errCode")?;
        Some(OmmError {
            request: self.name().trim_end_matches("Resp").to_owned(),
            code: ErrorCode::from_wire(code),
            info: self.body.attr("info").map(str::to_owned),
            bad: self.body.attr("bad").map(str::to_owned),
            max_len: self.body.attr("maxLen").and_then(|v| v.parse().ok()),
        })
    }

    /// `Err(Rejected)` if the response carries `errCode`.
    pub fn into_result(self) -> Result<Self, Error> {
        match self.error() {
            Some(e) => Err(Error::Rejected(e)),
            None => Ok(self),
        }
    }

    /// All `user` children.
    pub fn users(&self) -> Result<Vec<PpUser>, ProtocolError> {
        self.body
            .children_named("user")
            .map(PpUser::from_element)
            .collect()
    }

    /// All `pp` children.
    pub fn devices(&self) -> Result<Vec<PpDevice>, ProtocolError> {
        self.body
            .children_named("pp")
            .map(PpDevice::from_element)
            .collect()
    }

    /// The first `user` child.
    pub fn user(&self) -> Result<PpUser, ProtocolError> {
        let e = self
            .body
            .child("user")
            .ok_or_else(|| self.missing("user"))?;
        PpUser::from_element(e)
    }

    /// The first `pp` child.
    pub fn device(&self) -> Result<PpDevice, ProtocolError> {
        let e = self.body.child("pp").ok_or_else(|| self.missing("pp"))?;
        PpDevice::from_element(e)
    }

    /// A root attribute.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.body.attr(name)
    }

    /// A required root attribute.
    pub fn required(&self, name: &'static str) -> Result<&str, ProtocolError> {
        self.attr(name)
            .ok_or_else(|| ProtocolError::MissingAttribute {
                element: self.name().to_owned(),
                attribute: name,
            })
    }

    /// The public key of an `OpenResp`/`GetPublicKeyResp`.
    pub fn public_key(&self) -> Result<PublicKey, ProtocolError> {
        let (m, e) = match self.body.child("publicKey") {
            Some(k) => (k.attr("modulus"), k.attr("exponent")),
            None => (self.attr("modulus"), self.attr("exponent")),
        };
        let (m, e) = m.zip(e).ok_or_else(|| self.missing("publicKey"))?;
        PublicKey::from_hex(m, e)
            .map_err(|_| ProtocolError::invalid(self.name(), "modulus", m, "not a usable rsa key"))
    }

    /// Handset state from the root attributes (`GetPPStateResp`).
    pub fn pp_state(&self) -> Result<PpState, ProtocolError> {
        let mut s = PpState::from_element(&self.body)?;
        s.extra = strip_message_attrs(std::mem::take(&mut s.extra));
        Ok(s)
    }

    fn missing(&self, child: &'static str) -> ProtocolError {
        ProtocolError::MissingChild {
            element: self.name().to_owned(),
            child,
        }
    }
}

/// An unsolicited event.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// `EventPPCnf`: combined user/device change (sync sessions).
    #[doc(alias = "EventPPCnf")]
    PpCnf {
        /// `deletedUser`.
        deleted_user: bool,
        /// `deletedDev`.
        deleted_device: bool,
        /// The user part (full record, changed attributes, or key only).
        user: Option<Box<PpUser>>,
        /// The device part.
        device: Option<Box<PpDevice>>,
    },
    /// `EventPPDevCnf`: a device was created, changed or deleted.
    #[doc(alias = "EventPPDevCnf")]
    PpDevCnf {
        /// `deleted`.
        deleted: bool,
        /// Full record on create, changed attributes on change, key only on delete.
        device: Box<PpDevice>,
    },
    /// `EventPPUserCnf`: a user was created, changed or deleted.
    #[doc(alias = "EventPPUserCnf")]
    PpUserCnf {
        /// `deleted`.
        deleted: bool,
        /// Full record on create, changed attributes on change, key only on delete.
        user: Box<PpUser>,
    },
    /// `EventDECTSubscriptionMode`.
    #[doc(alias = "EventDECTSubscriptionMode")]
    DectSubscriptionMode {
        /// The new mode.
        mode: SubscriptionMode,
    },
    /// `EventPPState`: changed handset state attributes.
    #[doc(alias = "EventPPState")]
    PpState(Box<PpState>),
    /// Any other event, as received.
    Other(Element),
    /// Not from the OMM: the local event queue was full and this many events were dropped.
    /// Rescan to catch up.
    Lagged(u64),
}

impl Event {
    /// Decodes an `Event…` element; unknown events become [`Event::Other`].
    pub fn from_element(e: Element) -> Result<Self, ProtocolError> {
        let flag = |name: &str| e.attr(name).and_then(parse_bool).unwrap_or(false);
        Ok(match e.name() {
            "EventPPCnf" => Self::PpCnf {
                deleted_user: flag("deletedUser"),
                deleted_device: flag("deletedDev"),
                user: e
                    .child("user")
                    .map(PpUser::from_element)
                    .transpose()?
                    .map(Box::new),
                device: e
                    .child("pp")
                    .map(PpDevice::from_element)
                    .transpose()?
                    .map(Box::new),
            },
            "EventPPDevCnf" => Self::PpDevCnf {
                deleted: flag("deleted"),
                device: Box::new(PpDevice::from_element(e.child("pp").ok_or_else(|| {
                    ProtocolError::MissingChild {
                        element: e.name().to_owned(),
                        child: "pp",
                    }
                })?)?),
            },
            "EventPPUserCnf" => Self::PpUserCnf {
                deleted: flag("deleted"),
                user: Box::new(PpUser::from_element(e.child("user").ok_or_else(|| {
                    ProtocolError::MissingChild {
                        element: e.name().to_owned(),
                        child: "user",
                    }
                })?)?),
            },
            "EventDECTSubscriptionMode" => Self::DectSubscriptionMode {
                mode: e
                    .attr("mode")
                    .ok_or_else(|| ProtocolError::MissingAttribute {
                        element: e.name().to_owned(),
                        attribute: "mode",
                    })?
                    .parse()
                    .unwrap_or_else(|never| match never {}),
            },
            "EventPPState" => {
                let mut s = PpState::from_element(&e)?;
                s.extra = strip_message_attrs(std::mem::take(&mut s.extra));
                Self::PpState(Box::new(s))
            }
            _ => Self::Other(e),
        })
    }
}
