//! Provisioning of Asterisk's PJSIP realtime tables (`ps_endpoints`, `ps_aors`, `ps_auths`) and
//! of hexidian's call-group routes in PostgreSQL, through tokio-postgres.
//!
//! Asterisk reads these rows on every SIP request, so a half-written user would be a security
//! hole (an endpoint without `auth` accepts anyone). Every operation is therefore one
//! transaction, idempotent, and touches only ids that hexidian owns (the side table
//! `hexidian.sip_user`). Every value is a bind parameter; enum-typed columns receive labels from
//! fixed sets only, which also keeps the statements valid on both the modern (`ast_bool_values`)
//! and the legacy (`yesno_values`) schema.
//!
//! What it does not do: create or alter Asterisk's own tables, talk to Asterisk (AMI/ARI), or
//! spawn tasks: [`Store::connect`] returns a [`Driver`] that the caller spawns and that
//! reconnects with back-off after the connection is lost. It does not offer TLS to PostgreSQL;
//! use a Unix socket or a trusted network.
//!
//! ```no_run
//! # async fn demo() -> asterisk_realtime::Result<()> {
//! use asterisk_realtime::{Config, Kind, Store, UserSpec};
//!
//! let (store, driver) = Store::connect(Config::new("host=/run/postgresql dbname=asterisk user=hexidian")?).await?;
//! tokio::spawn(driver.run());
//! let spec = UserSpec { extension: "2001".parse()?, kind: Kind::Sip, name: "Lena".into(), password: Some("e1vdxzqL".parse()?), premium: false, routing: Default::default() };
//! store.upsert_user(spec).await?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod error;
mod migrations;
pub mod session;
mod sql;
mod store;
mod types;

pub use error::{Doing, Error, InvalidInput, PgError, Result};
pub use migrations::{Ledger, Migration};
pub use session::{Driver, Fence, Guard, Session};
pub use store::{
    Change, Config, ManagedUser, Member, MissingPrivilege, Outcome, Route, Store, SweepReport,
    UserSpec,
};
pub use types::{
    CallerDisplay, DtmfMode, EndpointTemplate, Extension, ForwardMode, ForwardRule, Kind, Routing,
    Schema, SipPassword, build_callerid, sanitize_display_name,
};
