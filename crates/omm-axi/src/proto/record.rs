//! Typed records (`user`, `pp`, handset state): every known attribute as a typed field, every
//! unknown attribute kept in `extra` in document order, so a record read from one firmware can
//! be written back without loss.

use crate::error::{Error, ProtocolError};
use crate::proto::xml::Element;
use crate::secret::{PublicKey, SecretValue, Sensitive};
use crate::types::{Ipei, Ppn, RelType, SubscriptionMode, SubscriptionState, Uid};

/// Conversion between a typed field and its attribute text.
pub(crate) trait AttrValue: Sized {
    /// `None` if the text is not a valid value of this type.
    fn parse_attr(s: &str) -> Option<Self>;
    fn to_attr(&self, field: &'static str, key: Option<&PublicKey>) -> Result<String, Error>;
}

macro_rules! via_fromstr {
    ($($t:ty),*) => {$(
        impl AttrValue for $t {
            fn parse_attr(s: &str) -> Option<Self> {
                s.parse().ok()
            }
            fn to_attr(&self, _: &'static str, _: Option<&PublicKey>) -> Result<String, Error> {
                Ok(self.to_string())
            }
        }
    )*};
}
via_fromstr!(
    String,
    u32,
    i32,
    i64,
    Uid,
    Ppn,
    RelType,
    SubscriptionMode,
    SubscriptionState
);

impl AttrValue for bool {
    fn parse_attr(s: &str) -> Option<Self> {
        parse_bool(s)
    }
    fn to_attr(&self, _: &'static str, _: Option<&PublicKey>) -> Result<String, Error> {
        Ok(if *self { "1" } else { "0" }.to_owned())
    }
}

/// OM AXI booleans: `1`/`0`/`true`/`false` in any case.
pub(crate) fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" => Some(true),
        "0" => Some(false),
        s if s.eq_ignore_ascii_case("true") => Some(true),
        s if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

impl AttrValue for Ipei {
    fn parse_attr(s: &str) -> Option<Self> {
        Self::parse_lenient(s).ok()
    }
    fn to_attr(&self, _: &'static str, _: Option<&PublicKey>) -> Result<String, Error> {
        Ok(self.to_string())
    }
}

impl AttrValue for Sensitive {
    fn parse_attr(s: &str) -> Option<Self> {
        Some(Self::new(s))
    }
    fn to_attr(&self, _: &'static str, _: Option<&PublicKey>) -> Result<String, Error> {
        Ok(self.expose().to_owned())
    }
}

impl AttrValue for SecretValue {
    fn parse_attr(s: &str) -> Option<Self> {
        Some(Self::Encrypted(s.to_owned()))
    }
    fn to_attr(&self, field: &'static str, key: Option<&PublicKey>) -> Result<String, Error> {
        match self {
            Self::Encrypted(blob) => Ok(blob.clone()),
            Self::Plain(plain) => {
                let key = key.ok_or(Error::Secret {
                    field,
                    source: crate::error::SecretError::NoKey,
                })?;
                key.encrypt(plain.expose())
                    .map_err(|source| Error::Secret { field, source })
            }
        }
    }
}

macro_rules! record {
    (
        $(#[$m:meta])* $name:ident, key = $key:literal,
        { $( $(#[$fm:meta])* $field:ident : $ty:ty = $attr:literal, )* }
    ) => {
        $(#[$m])*
        #[derive(Clone, Default, PartialEq)]
        #[non_exhaustive]
        pub struct $name {
            $( $(#[$fm])* #[doc = concat!("`", $attr, "`")] pub $field: Option<$ty>, )*
            /// Attributes this crate does not model (or whose value it could not parse), in
            /// document order.
            pub extra: Vec<(String, String)>,
        }

        /// Shows only the fields that are set (secrets redacted).
        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let mut d = f.debug_struct(stringify!($name));
                $( if let Some(v) = &self.$field { d.field(stringify!($field), v); } )*
                if !self.extra.is_empty() {
                    d.field("extra", &self.extra);
                }
                d.finish()
            }
        }

        impl $name {
            /// Wire names of the modelled attributes, in encoding order.
            pub const ATTRIBUTES: &'static [&'static str] = &[$($attr),*];

            /// Decodes a record element. Only the key attribute must be well-formed; any other
            /// value that does not parse is kept in `extra`.
            pub fn from_element(e: &Element) -> Result<Self, ProtocolError> {
                let mut out = Self::default();
                for (k, v) in e.attributes() {
                    match k.as_str() {
                        $( $attr => match <$ty as AttrValue>::parse_attr(v) {
                            Some(x) => out.$field = Some(x),
                            None if k == $key => {
                                return Err(ProtocolError::invalid(e.name(), k, v, "not a valid id"));
                            }
                            None => out.extra.push((k.clone(), v.clone())),
                        }, )*
                        _ => out.extra.push((k.clone(), v.clone())),
                    }
                }
                Ok(out)
            }

            /// Encodes the set fields (then `extra`) as element `name`. Plaintext secrets are
            /// encrypted with `key`.
            pub fn to_element(&self, name: &str, key: Option<&PublicKey>) -> Result<Element, Error> {
                let mut e = Element::new(name);
                $( if let Some(v) = &self.$field {
                    e.set_attr($attr, AttrValue::to_attr(v, $attr, key)?);
                } )*
                for (k, v) in &self.extra {
                    if e.attr(k).is_none() {
                        e.set_attr(k.clone(), v.clone());
                    }
                }
                Ok(e)
            }
        }
    };
}

record!(
    /// A PP user (`user` element): the logical extension on the OMM.
    ///
    /// All fields are optional so the same type serves full records, change events (only the
    /// changed attributes) and `Set…` requests (only the attributes to change).
    #[doc(alias = "PPUserType")]
    PpUser, key = "uid",
    {
        uid: Uid = "uid",
        ppn: Ppn = "ppn",
        ppn_old: Ppn = "ppnOld",
        rel_type: RelType = "relType",
        time_stamp: i64 = "timeStamp",
        time_stamp_admin: i64 = "timeStampAdmin",
        time_stamp_relation: i64 = "timeStampRelation",
        name: String = "name",
        num: String = "num",
        hierarchy1: String = "hierarchy1",
        hierarchy2: String = "hierarchy2",
        add_id: String = "addId",
        pin: SecretValue = "pin",
        sip_auth_id: String = "sipAuthId",
        sip_pw: SecretValue = "sipPw",
        sos_num: String = "sosNum",
        voicebox_num: String = "voiceboxNum",
        man_down_num: String = "manDownNum",
        forward_state: String = "forwardState",
        forward_time: u32 = "forwardTime",
        forward_dest: String = "forwardDest",
        lang: String = "lang",
        lang_pp: String = "langPP",
        hold_ring_back_time: u32 = "holdRingBackTime",
        auto_answer: String = "autoAnswer",
        microphone_mute: String = "microphoneMute",
        warning_tone: String = "warningTone",
        allow_barge_in: String = "allowBargeIn",
        call_waiting_disabled: bool = "callWaitingDisabled",
        external: bool = "external",
        tracking_active: bool = "trackingActive",
        locatable: bool = "locatable",
        bt_locatable: bool = "BTlocatable",
        loc_right: bool = "locRight",
        msg_right: bool = "msgRight",
        send_vcard_right: bool = "sendVcardRight",
        recv_vcard_right: bool = "recvVcardRight",
        keep_local_pb: bool = "keepLocalPB",
        vip: bool = "vip",
        sip_register_check: bool = "sipRegisterCheck",
        allow_video_stream: bool = "allowVideoStream",
        bt_sensitivity: String = "BTsensitivity",
        conference_server_type: String = "conferenceServerType",
        conference_server_uri: String = "conferenceServerURI",
        monitoring_mode: String = "monitoringMode",
        cus: String = "CUS",
        has: String = "HAS",
        hss: String = "HSS",
        hrs: String = "HRS",
        hcs: String = "HCS",
        srs: String = "SRS",
        scs: String = "SCS",
        cds: String = "CDS",
        hbs: String = "HBS",
        bts: String = "BTS",
        sws: String = "SWS",
        credential_pw: SecretValue = "credentialPw",
        configuration_data_loaded: bool = "configurationDataLoaded",
        pp_profile_id: u32 = "ppProfileId",
        pp_data: String = "ppData",
        fixed_sip_port: u32 = "fixedSipPort",
        calculated_sip_port: u32 = "calculatedSipPort",
        uid_sec: u32 = "uidSec",
        permanent: bool = "permanent",
        auto_logout_on_charge: bool = "autoLogoutOnCharge",
        hot_desking_support: bool = "hotDeskingSupport",
        use_sip_user_name: String = "useSIPUserName",
        use_sip_user_authentication: String = "useSIPUserAuthentication",
        service_user_name: String = "serviceUserName",
        service_auth_name: String = "serviceAuthName",
        service_auth_password: SecretValue = "serviceAuthPassword",
        alt_display_num: String = "altDisplayNum",
        sip_profile_id: u32 = "sipProfileId",
        pickup_group_num: String = "pickupGroupNum",
        authenticate_logout: bool = "authenticateLogout",
        key_lock_enable: bool = "keyLockEnable",
        key_lock_pin: Sensitive = "keyLockPin",
        key_lock_time: u32 = "keyLockTime",
    }
);

record!(
    /// A PP device (`pp` element): a DECT handset known to the OMM.
    #[doc(alias = "PPDevType")]
    PpDevice, key = "ppn",
    {
        ppn: Ppn = "ppn",
        uid: Uid = "uid",
        rel_type: RelType = "relType",
        time_stamp: i64 = "timeStamp",
        time_stamp_admin: i64 = "timeStampAdmin",
        time_stamp_relation: i64 = "timeStampRelation",
        time_stamp_roaming: i64 = "timeStampRoaming",
        time_stamp_subscription: i64 = "timeStampSubscription",
        ipei: Ipei = "ipei",
        ac: Sensitive = "ac",
        s: SubscriptionState = "s",
        uak: Sensitive = "uak",
        encrypt: bool = "encrypt",
        cap_messaging: bool = "capMessaging",
        cap_messaging_for_internal_use: bool = "capMessagingForInternalUse",
        cap_enh_locating: bool = "capEnhLocating",
        cap_bluetooth: bool = "capBluetooth",
        eth_addr: String = "ethAddr",
        hw_type: String = "hwType",
        pp_profile_capability: bool = "ppProfileCapability",
        pp_default_profile_loaded: bool = "ppDefaultProfileLoaded",
        subscribe_to_pari_only: bool = "subscribeToPARIOnly",
        auto_create: bool = "autoCreate",
        ppn_sec: u32 = "ppnSec",
        omm_id: String = "ommId",
        omm_id_ack: String = "ommIdAck",
        roaming: String = "roaming",
        modic_type: String = "modicType",
        location_data: String = "locationData",
        dect_ie_fixed_id: String = "dectIeFixedId",
        subscription_id: String = "subscriptionId",
    }
);

record!(
    /// Handset state (`GetPPStateResp` root attributes, `EventPPState`).
    #[doc(alias = "GetPPStateResp")]
    PpState, key = "ppn",
    {
        ppn: Ppn = "ppn",
        on_hook: bool = "onHook",
        registered: bool = "registered",
        silent_charging: bool = "silentCharging",
        call_state: String = "callState",
        sw_version: String = "swVersion",
        bluetooth: bool = "bluetooth",
        battery_level: u32 = "batteryLevel",
        sip_event: String = "sipEvent",
        reg_server_type: String = "regServerType",
        reg_server_addr: String = "regServerAddr",
        reg_server_port: u32 = "regServerPort",
        is_usb_connected: bool = "isUsbConnected",
        is_in_charger: bool = "isInCharger",
    }
);

record!(
    /// Last contact of a handset (`GetLastPPDevActionResp/pp`).
    #[doc(alias = "GetLastPPDevAction")]
    LastPpAction, key = "ppn",
    {
        ppn: Ppn = "ppn",
        tr_type: String = "trType",
        rfp_id: u32 = "rfpId",
        rel_time: u64 = "relTime",
    }
);
via_fromstr!(u64);

impl PpUser {
    /// The user id, `Uid::NONE` when absent.
    pub fn uid(&self) -> Uid {
        self.uid.unwrap_or_default()
    }

    /// The bound device, `Ppn::NONE` when unbound or unknown.
    pub fn bound_ppn(&self) -> Ppn {
        self.ppn.unwrap_or_default()
    }
}

impl PpDevice {
    /// The device number, `Ppn::NONE` when absent.
    pub fn ppn(&self) -> Ppn {
        self.ppn.unwrap_or_default()
    }

    /// The bound user, `Uid::NONE` when unbound or unknown.
    pub fn bound_uid(&self) -> Uid {
        self.uid.unwrap_or_default()
    }
}

/// Root attributes that belong to the message, not to a record read from the root.
pub(crate) fn strip_message_attrs(mut extra: Vec<(String, String)>) -> Vec<(String, String)> {
    extra.retain(|(k, _)| !matches!(k.as_str(), "seq" | "errCode" | "info" | "bad" | "maxLen"));
    extra
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_unparsable_attributes_are_preserved() {
        let e = Element::decode(
            br#"<user uid="3" name="A" futureAttr="x" forwardTime="soon" vip="TRUE"/>"#,
        )
        .unwrap();
        let u = PpUser::from_element(&e).unwrap();
        assert_eq!(u.uid(), Uid::new(3));
        assert_eq!(u.vip, Some(true));
        assert_eq!(
            u.extra,
            vec![
                ("futureAttr".into(), "x".into()),
                ("forwardTime".into(), "soon".into())
            ]
        );
        let back = u.to_element("user", None).unwrap();
        assert_eq!(back.attr("futureAttr"), Some("x"));
        assert_eq!(back.attr("forwardTime"), Some("soon"));
    }

    #[test]
    fn bad_key_is_an_error() {
        let e = Element::decode(br#"<pp ppn="twelve"/>"#).unwrap();
        assert!(PpDevice::from_element(&e).is_err());
    }

    #[test]
    fn plaintext_secret_without_key_is_refused() {
        let u = PpUser {
            pin: Some(SecretValue::Plain("1234".into())),
            ..PpUser::default()
        };
        assert!(matches!(
            u.to_element("user", None),
            Err(Error::Secret { field: "pin", .. })
        ));
    }

    #[test]
    fn debug_hides_secrets_and_uak() {
        let e = Element::decode(br#"<user uid="3" sipPw="QUJD" pin="REVG"/>"#).unwrap();
        let dbg = format!("{:?}", PpUser::from_element(&e).unwrap());
        assert!(!dbg.contains("QUJD") && !dbg.contains("REVG"), "{dbg}");
        let e =
            Element::decode(br#"<pp ppn="3" uak="C70FF5D60D1448184995414BA9577C5B" ac="4711"/>"#)
                .unwrap();
        let dbg = format!("{:?}", PpDevice::from_element(&e).unwrap());
        assert!(!dbg.contains("C70FF5") && !dbg.contains("4711"), "{dbg}");
    }
}
