//! Client for the Mitel SIP-DECT **OM Application XML Interface** (OM AXI), the management
//! interface of the Open Mobility Manager (OMM): NUL-terminated XML documents over TLS
//! (port 12622) or plain TCP (12621).
//!
//! The crate has two layers:
//!
//! * [`proto`] is sans-IO: a [`FrameBuffer`](proto::FrameBuffer) that reassembles frames from
//!   any chunking, typed [`proto::Request`]s, [`proto::Response`]s and
//!   [`proto::Event`]s, records ([`PpUser`], [`PpDevice`]) that keep unknown attributes,
//!   and a [`Session`](proto::Session) state machine that allocates `seq`, correlates replies
//!   and tracks deadlines. Use it with any runtime.
//! * `client` (feature `client`, on by default) runs a session over tokio: `connect` logs in
//!   and returns a cloneable `Client` handle plus a `Connection` future **that the caller
//!   spawns**; events arrive on a bounded channel.
//!
//! What it deliberately does not do: it never spawns tasks, never reconnects on its own
//! (the `Connection` future ends with an error and the caller reconnects, see
//! [`Backoff`](proto::Backoff)), never reads files or environment variables, and offers no
//! TLS backend for firmwares that only speak static-RSA key exchange or TLS ≤ 1.1: for those,
//! pass your own stream to `connect_stream`.
//!
//! Secrets (`pin`, `sipPw`, …) are passed as [`Secret`]s and encrypted with the OMM's RSA key
//! (PKCS#1 v1.5, 512-bit keys supported) when a request is encoded; neither plaintext nor
//! ciphertext appears in `Debug` output.
//!
//! # Example
//!
//! ```no_run
//! # #[cfg(feature = "client")]
//! # async fn demo() -> omm_axi::Result<()> {
//! use omm_axi::client::{Config, connect, tls};
//! use omm_axi::{Fingerprint, Subscription};
//!
//! let fingerprint: Fingerprint = "f4e57b93e4673658fd0f0a930ba080c98e703c62017e5a82f7acdf3008915a69".parse().expect("64 hex digits");
//! let config = Config::new("10.0.0.2", "omm", "secret").tls(tls::pinned(&[fingerprint]));
//! let (client, connection, mut events) = connect(&config).await?;
//! tokio::spawn(connection);
//! client.subscribe(&Subscription::provisioning()).await?;
//! for user in client.list_users().await? {
//!     println!("{} {:?}", user.uid(), user.name);
//! }
//! while let Some(event) = events.recv().await {
//!     println!("{event:?}");
//! }
//! # Ok(()) }
//! ```
//!
//! # Features
//!
//! | feature | default | what |
//! |---|---|---|
//! | `client` | yes | async client over tokio, TLS via rustls (ring provider) |

#![warn(missing_docs)]

pub mod error;
pub mod proto;
pub mod secret;
pub mod types;

#[cfg(feature = "client")]
pub mod client;

pub use error::{Error, ErrorCode, OmmError, ProtocolError, Result, SecretError};
pub use proto::{Element, Event, LastPpAction, PpDevice, PpState, PpUser, Request};
pub use secret::{PublicKey, Secret, SecretValue, Sensitive};
pub use types::{
    Filter, Ipei, Ppn, RelType, Subscription, SubscriptionMode, SubscriptionState, Uid,
};

#[cfg(feature = "client")]
pub use client::{Client, Config, Connection, Fingerprint, connect, connect_stream};
