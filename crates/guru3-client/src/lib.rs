//! Client for the consumer side of **GURU3**, the self-registration frontend of event phone
//! networks: its queue of *wire messages* (REST), the websocket that hints at new ones, and
//! the inbound `ASSIGN_HANDSET` message.
//!
//! * [`message`]: typed outbound messages. [`Page::from_json`] splits a GET body into
//!   envelopes, and [`RawMessage::decode`] turns one into a [`Message`]. A malformed message
//!   fails alone, and a type this crate does not know becomes [`Message::Unknown`]: one bad or
//!   new message never fails a page.
//! * [`inbound`]: the POST body (form-encoded `acklist` plus optional `messages`) and GURU3's
//!   per-message OK/NAK results.
//! * [`client`] (feature `client`): [`Client`] (fetch, ack, submit, websocket), and
//!   [`Feed`]/[`Watcher`], which turn the websocket, a poll timer, debounce and re-poll into
//!   "the next page of messages to process".
//!
//! What it does **not** do: apply messages, persist anything, or decide on retries of a
//! message. Consumers must process pages in order and idempotently (GURU3 delivers at least
//! once), and ack a message only after it was applied.
//!
//! No function spawns a task: the caller spawns [`Watcher::run`].
//!
//! ```no_run
//! # async fn demo() -> guru3_client::Result<()> {
//! use guru3_client::client::{Client, Config, FeedConfig, feed};
//!
//! let key = "7$secretsecret".parse().expect("key");
//! let client = Client::new(Config::new("https://guru3.example", key)?)?;
//! let (mut feed, watcher) = feed(client, FeedConfig::default());
//! tokio::spawn(watcher.run());
//! loop {
//!     let page = feed.next_page().await?;
//!     for raw in &page.messages {
//!         match raw.decode() {
//!             Ok(msg) => println!("{msg}"),
//!             Err(e) => eprintln!("message {} is malformed: {e}", raw.id),
//!         }
//!         feed.ack(raw.id);
//!     }
//! }
//! # }
//! ```
//!
//! | feature | default | what |
//! |---|---|---|
//! | `client` | yes | the async client over tokio, hyper, rustls and tokio-tungstenite |
#![warn(missing_docs)]

pub mod error;
pub mod inbound;
pub mod message;
pub mod types;

#[cfg(feature = "client")]
pub mod client;

#[cfg(feature = "client")]
pub use client::{Client, Config, Feed, FeedConfig, Watcher};
pub use error::{Error, Result};
pub use inbound::{Inbound, InboundResult, InboundStatus};
pub use message::{
    CallExtension, Callgroup, DecodeError, DisplayMode, ExtensionKind, ExtensionUpdate, Forward,
    ForwardMode, Handset, Member, Message, Page, RawMessage,
};
pub use types::{ApiKey, AudioHash, EventId, Extension, Ipei, MessageId, SipPassword, Token, Uak};
