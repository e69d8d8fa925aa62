//! The TOML config file and how it becomes [`Settings`]. Secrets are never in the file: each
//! one is named by an environment variable (`*_env`) or a file (`*_file`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use std::time::Duration;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::Deserialize;

use crate::{Settings, StoreSettings};

/// The config file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `[guru3]`
    pub guru3: Guru3Section,
    /// `[omm]`
    pub omm: OmmSection,
    /// `[postgres]`
    pub postgres: PostgresSection,
    /// `[broker]`
    #[serde(default)]
    pub broker: BrokerSection,
    /// `[admin]`
    #[serde(default)]
    pub admin: AdminSection,
    /// `[log]`
    #[serde(default)]
    pub log: LogSection,
    /// `[unbound]`: unbound handsets and the token-call webhook (absent: off).
    pub unbound: Option<UnboundSection>,
    /// `[pbx]`: how hexidian's PJSIP rows look.
    #[serde(default)]
    pub pbx: PbxSection,
    /// `[reconcile]`: the periodic drift check.
    #[serde(default)]
    pub reconcile: ReconcileSection,
    /// `[ha]`: active and standby instances on one database.
    #[serde(default)]
    pub ha: HaSection,
}

/// `[ha]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaSection {
    /// This instance's name among those on the database (default `<host>-<pid>-1`).
    pub instance: Option<String>,
    /// Seconds an active that stopped renewing its lease keeps leadership before a standby
    /// ends its connections and takes over (default 3). An active whose process or
    /// connection is gone is replaced within a poll (a sixth of this), without waiting.
    pub lease_s: Option<u64>,
}

/// `[reconcile]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileSection {
    /// Seconds between two comparisons of the mirror with the PBX rows and the OMM (absent
    /// or 0: off). Each reads the PBX's users and groups and the mirror from PostgreSQL and
    /// the OMM from hexidian's own map (no OMM request); drift is logged and shown on
    /// `/readyz`, the status stream and `/metrics`, never repaired by it.
    pub interval_s: Option<u64>,
}

/// `[pbx]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PbxSection {
    /// `[pbx.premium]`: endpoint settings of GURU3's premium SIP extensions (`isPremium`);
    /// absent: they get the regular ones.
    pub premium: Option<PremiumSection>,
    /// `qualify_frequency` of SIP users in seconds (default 60; 0 = never: use it for
    /// phones that do not answer OPTIONS, which would otherwise be marked unreachable).
    pub qualify_sip_s: Option<i32>,
    /// `qualify_frequency` of DECT and temporary users (default 0: the OMM answers for them).
    pub qualify_dect_s: Option<i32>,
    /// Asterisk kit (`hexidian asterisk-config`): the SIP transport's bind address
    /// (default `0.0.0.0:5060`).
    pub sip_bind: Option<String>,
    /// Asterisk kit: the database role Asterisk reads with (default `asterisk`).
    pub asterisk_db_user: Option<String>,
    /// Asterisk kit: environment variable holding that role's password (written into
    /// `res_pgsql.conf` with `--with-secrets`).
    pub asterisk_db_password_env: Option<String>,
    /// Asterisk kit: file holding it.
    pub asterisk_db_password_file: Option<PathBuf>,
    /// Asterisk kit: numbers starting with this prefix leave the event network, for users
    /// whose extension has `allow_dialout` (default: no dial-out).
    pub dialout_prefix: Option<String>,
    /// Asterisk kit: the PJSIP endpoint (in `pjsip.conf`) dial-out goes to, full number kept.
    pub dialout_endpoint: Option<String>,
    /// Asterisk kit: seconds a user rings (default 60).
    pub ring_timeout_s: Option<u32>,
    /// Asterisk kit: seconds a group rings (default 180).
    pub callgroup_timeout_s: Option<u32>,
    /// Asterisk kit: forwards one call may follow before it fails (default 5).
    pub max_forward_hops: Option<u32>,
}

impl PbxSection {
    /// The endpoint template of regular users.
    pub fn template(&self) -> Result<asterisk_realtime::EndpointTemplate, String> {
        let mut t = asterisk_realtime::EndpointTemplate::default();
        for (what, v) in [
            ("qualify_sip_s", self.qualify_sip_s),
            ("qualify_dect_s", self.qualify_dect_s),
        ] {
            if v.is_some_and(|v| !(0..=86_400).contains(&v)) {
                return Err(format!("[pbx] {what}: 0 to 86400 seconds"));
            }
        }
        if let Some(q) = self.qualify_sip_s {
            t.qualify_sip = q;
        }
        if let Some(q) = self.qualify_dect_s {
            t.qualify_dect = q;
        }
        Ok(t)
    }
}

/// `[pbx.premium]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PremiumSection {
    /// Dialplan context (default: the regular `call-router`).
    pub context: Option<String>,
    /// PJSIP transport (default: none).
    pub transport: Option<String>,
    /// Codec list for `allow` (default `g722,alaw,ulaw`).
    pub allow: Option<String>,
}

impl PremiumSection {
    fn template(
        &self,
        base: &asterisk_realtime::EndpointTemplate,
    ) -> asterisk_realtime::EndpointTemplate {
        let mut t = base.clone();
        if let Some(c) = &self.context {
            t.context.clone_from(c);
        }
        if self.transport.is_some() {
            t.transport.clone_from(&self.transport);
        }
        if let Some(a) = &self.allow {
            t.allow.clone_from(a);
        }
        t
    }
}

/// `[unbound]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnboundSection {
    /// Webhook listen address (the Asterisk-facing one).
    pub listen: String,
    /// Environment variable holding the webhook's shared secret (`X-Hexidian-Key`).
    pub key_env: Option<String>,
    /// File holding it.
    pub key_file: Option<PathBuf>,
    /// Temporary numbers: prefix GURU3 never assigns (default `0100`).
    pub temp_prefix: Option<String>,
    /// Temporary numbers: total digits (default 8).
    pub temp_length: Option<usize>,
    /// Token prefix (default `9955`).
    pub token_prefix: Option<String>,
    /// Seconds between `OK` and moving the handset (default 2).
    pub bind_delay_s: Option<u64>,
    /// Mode to keep the DECT system in (`Configured`, `Wildcard`; default: leave it alone).
    pub subscription_mode: Option<String>,
    /// IPEI patterns never bound (`*`, `?`).
    #[serde(default)]
    pub blocklist: Vec<String>,
    /// Token calls per caller and minute (default 6).
    pub per_caller_per_min: Option<u32>,
    /// Token calls per second in total (default 50).
    pub global_per_s: Option<u32>,
    /// Answer within this many seconds (default 3; the dialplan waits in `CURL()`).
    pub deadline_s: Option<u64>,
    /// Token calls per second from one address (default 20).
    pub per_peer_per_s: Option<u32>,
    /// Temporary users at most (default 2000).
    pub max_temporary: Option<usize>,
    /// Minutes after which a temporary user whose handset left is deleted (default 15).
    pub temp_expiry_min: Option<u64>,
}

/// `[guru3]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Guru3Section {
    /// Base URL, `https://…`.
    pub url: String,
    /// Environment variable holding the event's mgr key.
    pub api_key_env: Option<String>,
    /// File holding the event's mgr key.
    pub api_key_file: Option<PathBuf>,
    /// Event id (checked against the key's prefix; default: the prefix).
    pub event_id: Option<u32>,
    /// Extra CA certificates (PEM) besides the webpki roots.
    pub ca_file: Option<PathBuf>,
    /// `max_messages` per GET (default 1000).
    pub page_size: Option<u32>,
    /// Poll interval in seconds (default 30).
    pub poll_interval_s: Option<u64>,
    /// Allow an `http://` URL to a host other than loopback (the mgr key then travels in
    /// clear text).
    #[serde(default)]
    pub insecure_http: bool,
}

/// `[omm]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OmmSection {
    /// Host name or address.
    pub host: String,
    /// Port (default 12622, or 12621 with `plain`).
    pub port: Option<u16>,
    /// AXI account.
    pub user: String,
    /// Environment variable holding its password.
    pub password_env: Option<String>,
    /// File holding its password.
    pub password_file: Option<PathBuf>,
    /// SHA-256 fingerprints (hex) of the OMM certificate to pin.
    #[serde(default)]
    pub fingerprints: Vec<String>,
    /// Or: a CA file (PEM) that issued the OMM certificate.
    pub ca_file: Option<PathBuf>,
    /// Plain TCP instead of TLS (only on a trusted network).
    #[serde(default)]
    pub plain: bool,
    /// Allow `plain` to a host other than loopback (account password and SIP secrets then
    /// travel unprotected by TLS).
    #[serde(default)]
    pub insecure_plain: bool,
    /// Write DECT tokens into the OMM users' `hierarchy2` (default off: read-only OMM
    /// accounts would see them).
    #[serde(default)]
    pub token_in_hierarchy2: bool,
    /// TLS library: `rustls` (default) or `openssl` (builds with the `openssl` feature, as the
    /// .deb is), for firmwares that offer only static-RSA key exchange or TLS below 1.2.
    #[serde(default)]
    pub tls_backend: TlsBackend,
    /// `openssl` only: the lowest protocol version offered (`TLSv1` … `TLSv1.3`, default
    /// `TLSv1.2`).
    pub min_protocol: Option<String>,
    /// `openssl` only: the TLS ≤ 1.2 cipher list in OpenSSL's syntax (default
    /// `DEFAULT:@SECLEVEL=0`: static RSA and an OMM's small built-in key accepted; the
    /// certificate is checked by pin or CA all the same).
    pub ciphers: Option<String>,
}

/// `[omm] tls_backend`
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsBackend {
    /// rustls: TLS 1.2 (forward-secret suites) and 1.3.
    #[default]
    Rustls,
    /// The system's OpenSSL.
    Openssl,
}

/// `[postgres]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSection {
    /// Connection string without a password (`host=/run/postgresql dbname=asterisk user=hexidian`).
    pub url: Option<String>,
    /// Environment variable holding the connection string.
    pub url_env: Option<String>,
    /// File holding the connection string.
    pub url_file: Option<PathBuf>,
    /// Allow a password inside `url` for a host other than loopback.
    #[serde(default)]
    pub insecure_password_in_url: bool,
}

/// `[broker]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerSection {
    /// Attempts before a message is dead-lettered (default 5).
    pub max_attempts: Option<u32>,
    /// Seconds a message may keep failing before it is dead-lettered (default 240).
    pub retry_budget_s: Option<u64>,
    /// OMM operations in flight (default 32).
    pub dect_concurrency: Option<usize>,
    /// Dead letters in a row with the same reason code that stop the queue instead of
    /// being given up (default 5; 0 turns the breaker off).
    pub breaker_after: Option<u32>,
    /// Seconds after which a shorter run of such dead letters is final (default 10).
    pub breaker_window_s: Option<u64>,
}

/// `[admin]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// Listen address (default `127.0.0.1:9464`; `""` disables).
    #[serde(default = "default_admin")]
    pub listen: String,
    /// Environment variable holding the bearer token every request but `/healthz` must
    /// carry (`Authorization: Bearer …`); required when `listen` is not loopback, because
    /// `/readyz` and `/metrics` show extension numbers and failure reasons.
    pub token_env: Option<String>,
    /// File holding that token (instead of `token_env`).
    pub token_file: Option<PathBuf>,
    /// Clients of the status stream (`/events`, the page at `/`) at once (default 16).
    #[serde(default = "default_stream_clients")]
    pub stream_clients: usize,
}

impl Default for AdminSection {
    fn default() -> Self {
        Self {
            listen: default_admin(),
            token_env: None,
            token_file: None,
            stream_clients: default_stream_clients(),
        }
    }
}

fn default_stream_clients() -> usize {
    16
}

fn default_admin() -> String {
    "127.0.0.1:9464".into()
}

/// `[log]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// `human` (default) or `json`.
    pub format: Option<String>,
}

impl FileConfig {
    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| {
            // the parser's own Display quotes the offending line, which may hold a secret:
            // report its message and the line number only
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            let mut msg = match line {
                Some(l) => format!("{} line {l}: {}", path.display(), e.message()),
                None => format!("{}: {}", path.display(), e.message()),
            };
            if ["api_key", "password", "secret"].iter().any(|k| msg.contains(&format!("`{k}`"))) {
                msg.push_str("\n(secrets are never written in the config file: use the *_env or *_file keys)");
            }
            msg
        })
    }

    /// The example configuration shipped in `examples/hexidian.toml`: the demo and the
    /// end-to-end tests take their feed and broker tuning from it, so they run what
    /// `hexidian run` runs.
    pub fn example() -> Self {
        toml::from_str(include_str!("../../../examples/hexidian.toml"))
            .unwrap_or_else(|e| unreachable!("examples/hexidian.toml does not parse: {e}"))
    }

    /// Feed and broker tuning (everything not about where the peers are).
    pub fn tuning(&self) -> (guru3_client::FeedConfig, broker_core::BrokerConfig) {
        let mut feed = guru3_client::FeedConfig::default();
        if let Some(s) = self.guru3.poll_interval_s {
            feed = feed.poll_interval(Duration::from_secs(s.max(1)));
        }
        let mut broker = broker_core::BrokerConfig::default();
        if let Some(n) = self.broker.max_attempts {
            broker = broker.max_attempts(n);
        }
        if let Some(s) = self.broker.retry_budget_s {
            broker = broker.retry_budget(Duration::from_secs(s));
        }
        if let Some(n) = self.broker.dect_concurrency {
            broker = broker.dect_concurrency(n);
        }
        if self.broker.breaker_after.is_some() || self.broker.breaker_window_s.is_some() {
            let d = broker_core::BrokerConfig::default();
            broker = broker.breaker(
                self.broker.breaker_after.unwrap_or(d.breaker_after),
                self.broker
                    .breaker_window_s
                    .map_or(d.breaker_window, Duration::from_secs),
            );
        }
        (feed, broker)
    }

    /// Refuses transports that would carry secrets unprotected to another host, unless the
    /// matching `insecure_*` option says so.
    pub fn check_transports(&self) -> Result<(), String> {
        if let Some(rest) = self.guru3.url.strip_prefix("http://") {
            let host = url_host(rest);
            if !is_loopback(host) && !self.guru3.insecure_http {
                return Err(format!(
                    "[guru3] url: http:// to {host:?} would send the mgr key in clear text; use https:// \
                     (or set insecure_http = true)"
                ));
            }
        }
        if self.omm.plain && !is_loopback(&self.omm.host) && !self.omm.insecure_plain {
            return Err(format!(
                "[omm] plain = true to {:?} would send the account password without TLS; \
                 pin the certificate instead (or set insecure_plain = true)",
                self.omm.host
            ));
        }
        if let Some(url) = &self.postgres.url {
            if let Some(host) = pg_password_host(url) {
                if !is_loopback(&host) && !self.postgres.insecure_password_in_url {
                    return Err(
                        "[postgres] url holds a password: move the connection string to url_env or \
                         url_file, or use peer/certificate authentication \
                         (or set insecure_password_in_url = true)"
                            .into(),
                    );
                }
            }
        }
        Ok(())
    }

    /// The OMM client's configuration: address, account (the password from its secret
    /// source) and how its certificate is checked.
    pub fn omm_config(&self) -> Result<omm_axi::Config, String> {
        let password = secret(
            "omm password",
            &self.omm.password_env,
            &self.omm.password_file,
        )?;
        let mut omm = omm_axi::Config::new(self.omm.host.clone(), self.omm.user.clone(), password);
        if let Some(p) = self.omm.port {
            omm = omm.port(p);
        }
        if self.omm.tls_backend == TlsBackend::Rustls
            && (self.omm.min_protocol.is_some() || self.omm.ciphers.is_some())
        {
            return Err(
                "[omm]: min_protocol and ciphers apply to tls_backend = \"openssl\" only".into(),
            );
        }
        if self.omm.plain {
            omm = omm.plain();
        } else if self.omm.tls_backend == TlsBackend::Openssl {
            omm = self.omm_openssl(omm)?;
        } else if !self.omm.fingerprints.is_empty() {
            omm = omm.tls(omm_axi::client::tls::pinned(&self.pins()?));
        } else if let Some(path) = &self.omm.ca_file {
            let mut roots = rustls::RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(pem(path)?);
            if added == 0 {
                return Err(format!("{}: no usable CA certificate", path.display()));
            }
            omm = omm.tls(omm_axi::client::tls::with_roots(roots));
        } else {
            return Err("[omm]: set `fingerprints` or `ca_file` (or `plain = true`)".into());
        }
        Ok(omm)
    }

    fn pins(&self) -> Result<Vec<omm_axi::Fingerprint>, String> {
        self.omm
            .fingerprints
            .iter()
            .map(|f| {
                f.parse::<omm_axi::Fingerprint>()
                    .map_err(|e| format!("omm fingerprint {f:?}: {e}"))
            })
            .collect()
    }

    /// `[omm] tls_backend = "openssl"`: the same certificate checks through OpenSSL.
    #[cfg(feature = "openssl")]
    fn omm_openssl(&self, omm: omm_axi::Config) -> Result<omm_axi::Config, String> {
        use omm_axi::client::openssl_tls::OpensslTls;
        let mut tls = if !self.omm.fingerprints.is_empty() {
            OpensslTls::pinned(&self.pins()?)
        } else if let Some(path) = &self.omm.ca_file {
            let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            OpensslTls::with_ca_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))?
        } else {
            return Err("[omm]: set `fingerprints` or `ca_file` (or `plain = true`)".into());
        };
        if let Some(v) = &self.omm.min_protocol {
            tls = tls.min_protocol(v.parse().map_err(|e| format!("[omm] min_protocol: {e}"))?);
        }
        if let Some(c) = &self.omm.ciphers {
            tls = tls.ciphers(c.clone());
        }
        tls.check().map_err(|e| format!("[omm] ciphers: {e}"))?;
        Ok(omm.openssl(tls))
    }

    #[cfg(not(feature = "openssl"))]
    fn omm_openssl(&self, _omm: omm_axi::Config) -> Result<omm_axi::Config, String> {
        Err(
            "[omm] tls_backend = \"openssl\": this hexidian was built without the OpenSSL \
             backend (build with `--features openssl`; the .deb has it)"
                .into(),
        )
    }

    /// Resolves secrets and TLS material into [`Settings`].
    pub fn settings(&self) -> Result<Settings, String> {
        self.check_transports()?;
        let key = secret(
            "guru3 api key",
            &self.guru3.api_key_env,
            &self.guru3.api_key_file,
        )?;
        let key: guru3_client::ApiKey = key.parse().map_err(|e| format!("guru3 api key: {e}"))?;
        let mut guru3 =
            guru3_client::Config::new(&self.guru3.url, key).map_err(|e| e.to_string())?;
        if let Some(id) = self.guru3.event_id {
            guru3 = guru3.event_id(guru3_client::EventId::new(id).map_err(|e| e.to_string())?);
        }
        if let Some(n) = self.guru3.page_size {
            guru3 = guru3.max_messages(n);
        }
        if let Some(path) = &self.guru3.ca_file {
            let (roots, added) = guru3_client::client::tls::webpki_roots_and(pem(path)?);
            if added == 0 {
                return Err(format!("{}: no usable CA certificate", path.display()));
            }
            guru3 = guru3.tls(guru3_client::client::tls::with_roots(roots));
        }
        let (feed, broker) = self.tuning();

        let omm = self.omm_config()?;

        let url = self.postgres_url()?;
        let pg = asterisk_realtime::Config::new(&url).map_err(|e| format!("postgres url: {e}"))?;
        let template = self.pbx.template()?;
        let pg = pg
            .premium_template(self.pbx.premium.as_ref().map(|p| p.template(&template)))
            .template(template)
            .routing_reader(Some(
                self.pbx
                    .asterisk_db_user
                    .clone()
                    .unwrap_or_else(|| "asterisk".into()),
            ));

        let admin = if self.admin.listen.is_empty() {
            None
        } else {
            Some(
                self.admin
                    .listen
                    .parse::<SocketAddr>()
                    .map_err(|e| format!("[admin] listen {:?}: {e}", self.admin.listen))?,
            )
        };
        let admin_token = match (&self.admin.token_env, &self.admin.token_file) {
            (None, None) => None,
            (env, file) => Some(broker_core::model::Secret::new(
                secret("[admin] token", env, file)?.trim(),
            )),
        };
        Ok(Settings {
            guru3,
            feed,
            omm,
            store: StoreSettings::Postgres(Box::new(pg)),
            broker,
            admin,
            admin_token,
            admin_stream_clients: self.admin.stream_clients,
            reconcile_every: self
                .reconcile
                .interval_s
                .filter(|s| *s > 0)
                .map(Duration::from_secs),
            omm_token_field: self.omm.token_in_hierarchy2,
            ha: self.ha_settings()?,
            unbound: match &self.unbound {
                Some(u) => Some(u.settings()?),
                None => None,
            },
        })
    }
}

impl FileConfig {
    /// `[ha]` resolved.
    pub fn ha_settings(&self) -> Result<crate::HaSettings, String> {
        let mut ha = crate::HaSettings::default();
        if let Some(name) = &self.ha.instance {
            if !hexidian_state::leader::valid_instance_name(name) {
                return Err(format!(
                    "[ha] instance {name:?}: 1 to 40 letters, digits, '.', '_' or '-'"
                ));
            }
            ha.instance = name.clone();
        }
        match self.ha.lease_s {
            Some(0) => return Err("[ha] lease_s: at least 1".into()),
            Some(s) => ha.lease = Duration::from_secs(s),
            None => {}
        }
        Ok(ha)
    }

    /// The PostgreSQL connection string (resolved from the environment or a file if so set).
    pub fn postgres_url(&self) -> Result<String, String> {
        match (
            &self.postgres.url,
            &self.postgres.url_env,
            &self.postgres.url_file,
        ) {
            (Some(u), None, None) => Ok(u.clone()),
            (None, env, file) if env.is_some() || file.is_some() => {
                secret("postgres url", env, file)
            }
            _ => Err("[postgres]: set exactly one of url, url_env, url_file".into()),
        }
    }
}

impl UnboundSection {
    fn settings(&self) -> Result<crate::UnboundSettings, String> {
        let listen = self
            .listen
            .parse()
            .map_err(|e| format!("[unbound] listen {:?}: {e}", self.listen))?;
        let key = match (&self.key_env, &self.key_file) {
            (None, None) => None,
            (env, file) => Some(broker_core::model::Secret::new(secret(
                "webhook key",
                env,
                file,
            )?)),
        };
        let temp = unbound_handsets::TempNumbers::new(
            self.temp_prefix.as_deref().unwrap_or("0100"),
            self.temp_length.unwrap_or(8),
        )?;
        let mut c = unbound_handsets::Config::new(temp);
        c.key = key;
        if let Some(p) = &self.token_prefix {
            c.token_prefix = p.clone();
        }
        if let Some(d) = self.bind_delay_s {
            c.bind_delay = Duration::from_secs(d);
        }
        if let Some(m) = &self.subscription_mode {
            if !["Off", "Configured", "Wildcard"].contains(&m.as_str()) {
                return Err(format!(
                    "[unbound] subscription_mode {m:?}: Off, Configured or Wildcard"
                ));
            }
            c.subscription_mode = Some(m.clone());
        }
        c.blocklist = unbound_handsets::Blocklist::new(self.blocklist.clone());
        if let Some(n) = self.per_caller_per_min {
            c.per_caller_per_min = n;
        }
        if let Some(n) = self.global_per_s {
            c.global_per_s = n;
        }
        if let Some(n) = self.per_peer_per_s {
            c.per_peer_per_s = n;
        }
        if let Some(n) = self.max_temporary {
            c.max_temporary = n;
        }
        if let Some(m) = self.temp_expiry_min {
            c.temp_expiry = Duration::from_secs(m.max(1) * 60);
        }
        Ok(crate::UnboundSettings {
            listen,
            deadline: Duration::from_secs(self.deadline_s.unwrap_or(3).max(1)),
            config: c,
        })
    }
}

fn pem(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Reads a secret from exactly one of an environment variable or a file (trailing newline
/// removed). The value never appears in errors.
pub(crate) fn secret(
    what: &str,
    env: &Option<String>,
    file: &Option<PathBuf>,
) -> Result<String, String> {
    match (env, file) {
        (Some(var), None) => {
            #[allow(clippy::disallowed_methods)]
            // the binary reads its secrets from the environment
            let v = std::env::var(var)
                .map_err(|_| format!("{what}: environment variable {var} is not set"))?;
            Ok(v)
        }
        (None, Some(path)) => {
            #[allow(clippy::disallowed_methods)] // systemd's documented hand-over
            let creds = std::env::var_os("CREDENTIALS_DIRECTORY");
            let path = &credential_path(what, path, creds)?;
            let v = std::fs::read_to_string(path)
                .map_err(|e| format!("{what}: {}: {e}", path.display()))?;
            Ok(v.trim_end_matches(['\n', '\r']).to_owned())
        }
        _ => Err(format!(
            "{what}: set exactly one of the *_env and *_file keys"
        )),
    }
}

/// A secret file's path; one starting with `$CREDENTIALS_DIRECTORY/` is in the folder where
/// systemd's `LoadCredential=` put the service's credentials (readable by the service alone).
fn credential_path(
    what: &str,
    path: &Path,
    credentials: Option<std::ffi::OsString>,
) -> Result<PathBuf, String> {
    const VAR: &str = "$CREDENTIALS_DIRECTORY";
    let Ok(rest) = path.strip_prefix(VAR) else {
        return Ok(path.to_owned());
    };
    let dir = credentials.ok_or_else(|| {
        format!(
            "{what}: {} names {VAR}, which is not set (systemd's LoadCredential= sets it; \
             to run by hand, export CREDENTIALS_DIRECTORY=/etc/hexidian/credentials)",
            path.display()
        )
    })?;
    Ok(Path::new(&dir).join(rest))
}

/// `hexidian check-config`: parses the file, resolves secrets and connects to each peer once
/// (`offline`: no peer is contacted). Prints one line per check; fails if any failed.
pub async fn check(path: &Path, offline: bool) -> Result<(), String> {
    let file = FileConfig::load(path)?;
    let settings = file.settings()?;
    if offline {
        tracing::info!(
            "{}: ok (settings, secrets and certificates read; offline: no peer contacted)",
            path.display()
        );
        return Ok(());
    }
    let mut failed = Vec::new();
    let mut line = |what: &str, r: Result<String, String>| match r {
        Ok(ok) => tracing::info!("{what}: ok ({ok})"),
        Err(e) => {
            tracing::error!("{what}: FAILED: {e}");
            failed.push(what.to_owned());
        }
    };
    let guru3 = async {
        let c = guru3_client::Client::new(settings.guru3.clone()).map_err(|e| e.to_string())?;
        // max_messages=0: authenticates and returns [] without touching the queue
        c.fetch_messages_max(0).await.map_err(|e| e.to_string())?;
        Ok(format!("event {}", c.event_id()))
    };
    line("guru3", guru3.await);
    let omm = async {
        let (client, conn, _events) = omm_axi::connect(&settings.omm)
            .await
            .map_err(|e| e.to_string())?;
        let task = tokio::spawn(conn);
        let name = client.fetch_system_name().await.map_err(|e| e.to_string());
        drop(client);
        task.abort();
        name.map(|n| format!("system {n:?}"))
    };
    line("omm", omm.await);
    let pg = async {
        let StoreSettings::Postgres(cfg) = &settings.store else {
            return Ok("in memory".to_owned());
        };
        // read-only: migrations are `hexidian migrate`'s (or `hexidian run`'s) job
        let (store, driver) =
            asterisk_realtime::Store::connect((**cfg).clone().apply_migrations(false))
                .await
                .map_err(|e| e.to_string())?;
        let task = tokio::spawn(driver.run());
        let pending = async {
            let state = hexidian_state::Store::attach(store.session().clone(), false).await?;
            let mut p = store.pending_migrations().await?;
            p.extend(state.pending_migrations().await?);
            Ok::<_, asterisk_realtime::Error>(p)
        };
        // every privilege hexidian's role needs and Asterisk's reads, with the fix
        let reader = file
            .pbx
            .asterisk_db_user
            .clone()
            .unwrap_or_else(|| "asterisk".into());
        let missing = match store.missing_privileges(Some(&reader)).await {
            Ok(m) => m,
            Err(e) => {
                task.abort();
                return Err(e.to_string());
            }
        };
        if !missing.is_empty() {
            task.abort();
            return Err(format!(
                "{} privilege(s) missing (run these as a superuser, or run hexidian-roles.sql \
                 and `hexidian migrate` again):\n  {}",
                missing.len(),
                missing
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n  ")
            ));
        }
        let r = match pending.await.map_err(|e| e.to_string()) {
            Ok(p) if !p.is_empty() => Ok(format!(
                "schema {:?}; hexidian schema: {} migration(s) pending ({}): run `hexidian migrate`",
                store.schema(),
                p.len(),
                p.iter()
                    .map(|(v, d)| format!("{v} {d}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            )),
            Ok(_) => store
                .sync_state()
                .await
                .map_err(|e| e.to_string())
                .map(|(epoch, _)| {
                    format!(
                        "schema {:?}, hexidian schema up to date, resync epoch {epoch}",
                        store.schema()
                    )
                }),
            Err(e) => Err(e),
        };
        task.abort();
        r
    };
    line("postgres", pg.await);
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("failed: {}", failed.join(", ")))
    }
}

/// `hexidian migrate`: applies pending migrations of hexidian's schema and grants Asterisk's
/// reader role (`[pbx] asterisk_db_user`) `SELECT` on the routing views.
pub async fn migrate(path: &Path) -> Result<(), String> {
    let file = FileConfig::load(path)?;
    let url = file.postgres_url()?;
    let cfg = asterisk_realtime::Config::new(&url)
        .map_err(|e| format!("postgres url: {e}"))?
        .routing_reader(Some(
            file.pbx
                .asterisk_db_user
                .clone()
                .unwrap_or_else(|| "asterisk".into()),
        ));
    let (store, driver) = asterisk_realtime::Store::connect(cfg)
        .await
        .map_err(|e| format!("postgres: {e}"))?;
    let task = tokio::spawn(driver.run());
    let pending = async {
        // the PBX ledger ran in connect; the state tables have a ledger of their own
        let state = hexidian_state::Store::attach(store.session().clone(), true).await?;
        let mut p = store.pending_migrations().await?;
        p.extend(state.pending_migrations().await?);
        Ok::<_, asterisk_realtime::Error>(p)
    };
    let pending = pending.await.map_err(|e| format!("postgres: {e}"));
    task.abort();
    match pending? {
        p if p.is_empty() => {
            tracing::info!("hexidian schema up to date");
            Ok(())
        }
        p => Err(format!("{} migration(s) still pending", p.len())),
    }
}

/// The host of `host[:port][/path]` (IPv6 in brackets kept without them).
fn url_host(rest: &str) -> &str {
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let authority = authority.rsplit('@').next().unwrap_or_default();
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or_default();
    }
    authority.split(':').next().unwrap_or_default()
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_matches(['[', ']']);
    host.eq_ignore_ascii_case("localhost")
        || host.starts_with('/')
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// If a PostgreSQL connection string carries a password: the host it goes to (empty: the
/// default, a local socket).
fn pg_password_host(url: &str) -> Option<String> {
    if let Some(rest) = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
    {
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        let (userinfo, hostport) = authority.rsplit_once('@')?;
        let query_pw = rest.contains("password=");
        if !userinfo.contains(':') && !query_pw {
            return None;
        }
        return Some(url_host(hostport).to_owned());
    }
    let mut password = false;
    let mut host = String::from("/");
    for kv in url.split_whitespace() {
        match kv.split_once('=') {
            Some(("password", _)) => password = true,
            Some(("host" | "hostaddr", h)) => host = h.trim_matches('\'').to_owned(),
            _ => {}
        }
    }
    password.then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_premium_template_is_read_from_the_file() {
        let text = std::fs::read_to_string(example())
            .unwrap()
            .replace("# qualify_sip_s = 60", "qualify_sip_s = 0")
            + "\n[pbx.premium]\ncontext = \"call-router-premium\"\ntransport = \"tls-premium\"\n";
        let f: FileConfig = toml::from_str(&text).unwrap();
        let base = f.pbx.template().unwrap();
        assert_eq!(base.qualify_sip, 0, "qualify is configurable");
        assert_eq!(base.qualify_dect, 0);
        let t = f.pbx.premium.as_ref().unwrap().template(&base);
        assert_eq!(t.qualify_sip, 0, "premium users inherit [pbx]'s qualify");
        assert_eq!(t.context, "call-router-premium");
        assert_eq!(t.transport.as_deref(), Some("tls-premium"));
        assert_eq!(
            t.allow,
            asterisk_realtime::EndpointTemplate::default().allow
        );
    }

    #[test]
    fn qualify_outside_a_day_is_refused() {
        let mut f = FileConfig::example();
        assert_eq!(f.pbx.template().unwrap().qualify_sip, 60, "default");
        f.pbx.qualify_sip_s = Some(-1);
        assert!(f.pbx.template().unwrap_err().contains("qualify_sip_s"));
    }

    #[test]
    fn insecure_transports_are_refused_unless_loopback_or_allowed() {
        let mut f = FileConfig::example();
        assert!(f.check_transports().is_ok());
        f.guru3.url = "http://guru3.example.org".into();
        let e = f.check_transports().unwrap_err();
        assert!(e.contains("clear text"), "{e}");
        f.guru3.url = "http://127.0.0.1:8000".into();
        assert!(f.check_transports().is_ok());
        f.guru3.url = "http://[::1]:8000/x".into();
        assert!(f.check_transports().is_ok());
        f.guru3.url = "http://guru3.example.org".into();
        f.guru3.insecure_http = true;
        assert!(f.check_transports().is_ok());

        f.omm.plain = true;
        assert!(f.check_transports().unwrap_err().contains("without TLS"));
        f.omm.insecure_plain = true;
        assert!(f.check_transports().is_ok());

        f.postgres.url = Some("host=db.example.org dbname=a user=h password=hunter2".into());
        let e = f.check_transports().unwrap_err();
        assert!(e.contains("url_env") && !e.contains("hunter2"), "{e}");
        f.postgres.url = Some("postgres://h:hunter2@db.example.org/a".into());
        assert!(f.check_transports().is_err());
        f.postgres.url = Some("postgres://h:hunter2@localhost/a".into());
        assert!(f.check_transports().is_ok());
        f.postgres.url = Some("postgres://h@db.example.org/a".into());
        assert!(f.check_transports().is_ok());
        f.postgres.url = Some("host=db.example.org password=x".into());
        f.postgres.insecure_password_in_url = true;
        assert!(f.check_transports().is_ok());
    }

    fn example() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/hexidian.toml")
    }

    #[test]
    fn the_example_config_parses_and_names_its_secrets() {
        let f = FileConfig::load(&example()).unwrap();
        assert_eq!(f.guru3.api_key_env.as_deref(), Some("HEXIDIAN_GURU3_KEY"));
        assert_eq!(f.admin.listen, "127.0.0.1:9464");
        // the secrets are not there, so resolving says which one is missing (and nothing else)
        let err = f.settings().unwrap_err();
        assert!(err.contains("HEXIDIAN_GURU3_KEY"), "{err}");
    }

    #[test]
    fn a_secret_file_may_live_in_systemds_credentials_directory() {
        let p = |s: &str| PathBuf::from(s);
        let creds = Some(std::ffi::OsString::from(
            "/run/credentials/hexidian.service",
        ));
        assert_eq!(
            credential_path(
                "[omm]",
                &p("$CREDENTIALS_DIRECTORY/omm-password"),
                creds.clone()
            ),
            Ok(p("/run/credentials/hexidian.service/omm-password"))
        );
        assert_eq!(
            credential_path("[omm]", &p("/etc/hexidian/omm-password"), creds.clone()),
            Ok(p("/etc/hexidian/omm-password"))
        );
        // only the whole first component is the variable
        assert_eq!(
            credential_path("[omm]", &p("$CREDENTIALS_DIRECTORYX/pw"), creds),
            Ok(p("$CREDENTIALS_DIRECTORYX/pw"))
        );
        let e =
            credential_path("[omm]", &p("$CREDENTIALS_DIRECTORY/omm-password"), None).unwrap_err();
        assert!(
            e.contains("[omm]") && e.contains("LoadCredential") && e.contains("not set"),
            "{e}"
        );
    }

    #[test]
    fn the_omm_tls_backend_is_chosen_in_the_file() {
        let dir = std::env::temp_dir().join(format!("hexidian-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pw = dir.join("omm-password");
        std::fs::write(&pw, "omm\n").unwrap();
        let load = |extra: &str| {
            let text = std::fs::read_to_string(example())
                .unwrap()
                .replace("[omm]\n", &format!("[omm]\n{extra}\n"));
            let mut f: FileConfig = toml::from_str(&text).unwrap();
            f.omm.password_file = Some(pw.clone());
            f.omm_config()
        };
        assert!(load("").is_ok(), "rustls by default");
        let e = load("ciphers = \"AES256-GCM-SHA384\"").unwrap_err();
        assert!(e.contains("openssl"), "{e}");
        let e = toml::from_str::<FileConfig>(
            &std::fs::read_to_string(example())
                .unwrap()
                .replace("[omm]\n", "[omm]\ntls_backend = \"gnutls\"\n"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("rustls") && e.contains("openssl"), "{e}");
        let openssl = load("tls_backend = \"openssl\"\nmin_protocol = \"TLSv1\"");
        #[cfg(feature = "openssl")]
        {
            openssl.unwrap();
            let e = load("tls_backend = \"openssl\"\nmin_protocol = \"SSLv3\"").unwrap_err();
            assert!(e.contains("min_protocol"), "{e}");
            let e = load("tls_backend = \"openssl\"\nciphers = \"NOPE\"").unwrap_err();
            assert!(e.contains("NOPE"), "{e}");
        }
        #[cfg(not(feature = "openssl"))]
        {
            let e = openssl.unwrap_err();
            assert!(e.contains("--features openssl"), "{e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn secrets_in_the_file_are_refused_with_a_hint() {
        let dir = std::env::temp_dir().join(format!("hexidian-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("bad.toml");
        let text = std::fs::read_to_string(example()).unwrap().replace(
            "password_file = \"$CREDENTIALS_DIRECTORY/omm-password\"",
            "password = \"hunter2\"",
        );
        std::fs::write(&p, text).unwrap();
        let err = FileConfig::load(&p).unwrap_err();
        assert!(err.contains("never written in the config file"), "{err}");
        assert!(!err.contains("hunter2"), "the secret is not echoed: {err}");
        let key = dir.join("key");
        std::fs::write(&key, "7$abcDEF123\n").unwrap();
        let mut f = FileConfig::load(&example()).unwrap();
        f.guru3.api_key_env = None;
        f.guru3.api_key_file = Some(key);
        f.omm.password_file = Some(dir.join("missing"));
        let err = f.settings().unwrap_err();
        assert!(err.starts_with("omm password:"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
