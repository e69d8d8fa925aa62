//! The sans-IO protocol core: framing, XML decoding and encoding, typed messages and the
//! session state machine. Nothing here touches a socket or reads the clock.

pub mod frame;
pub mod message;
pub mod record;
pub mod session;
pub mod xml;

pub use frame::FrameBuffer;
pub use message::{Event, MAX_RECORDS, Message, Request, Response};
pub use record::{LastPpAction, PpDevice, PpState, PpUser};
pub use session::{Backoff, Output, Session};
pub use xml::Element;
