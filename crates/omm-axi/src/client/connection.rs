//! The connection task: one reader/writer loop per link.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{Client, Command, Config, Events};
use crate::error::{Error, Result};
use crate::proto::{Event, Output, Request, Response, Session};

enum Token {
    Caller(oneshot::Sender<Result<Response>>),
    Login(oneshot::Sender<Result<Response>>),
    Ping,
}

/// Drives the link: reads and writes frames, answers callers, forwards events, sends
/// keep-alives. Spawn it; it resolves when every [`Client`] is dropped (`Ok`) or the link
/// fails (`Err`). Pending requests then fail with [`Error::Closed`].
#[must_use = "the connection does nothing unless spawned or awaited"]
pub struct Connection {
    inner: Pin<Box<dyn Future<Output = Result<()>> + Send>>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection").finish_non_exhaustive()
    }
}

impl Future for Connection {
    type Output = Result<()>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

struct Link<S> {
    stream: S,
    session: Session<Token>,
    events: mpsc::Sender<Event>,
    lagged: u64,
    request_timeout: Duration,
    buf: Vec<u8>,
    last_write: Instant,
}

/// Performs `Open` on a fresh stream and returns the running parts.
pub(super) async fn login<S>(stream: S, config: &Config) -> Result<(Client, Connection, Events)>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (event_tx, event_rx) = mpsc::channel(config.event_capacity);
    let mut link = Link {
        stream,
        session: Session::new(config.max_frame),
        events: event_tx,
        lagged: 0,
        request_timeout: config.request_timeout,
        buf: vec![0u8; 64 * 1024],
        last_write: Instant::now(),
    };
    let open = Request::open(
        &config.username,
        &config.password,
        config.sync_client,
        config.protocol_version,
    );
    let (tx, mut rx) = oneshot::channel();
    link.send(&open, Token::Login(tx)).await?;
    loop {
        link.read_once().await?;
        if let Ok(result) = rx.try_recv() {
            result?;
            break;
        }
    }
    tracing::debug!(host = %config.host, "omm login ok");
    let (cmd_tx, cmd_rx) = mpsc::channel(config.command_capacity);
    let client = Client {
        tx: cmd_tx,
        timeout: config.request_timeout,
        observer: config.observer.clone(),
    };
    let ping_interval = config.ping_interval;
    let connection = Connection {
        inner: Box::pin(link.run(cmd_rx, ping_interval)),
    };
    Ok((client, connection, event_rx))
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Link<S> {
    async fn send(&mut self, request: &Request, token: Token) -> Result<()> {
        let deadline = Instant::now() + self.request_timeout;
        match self.session.send(request, token, Some(deadline.into_std())) {
            Ok((_, bytes)) => {
                self.stream.write_all(&bytes).await?;
                self.stream.flush().await?;
                self.last_write = Instant::now();
                Ok(())
            }
            Err((token, e)) => {
                deliver(token, Err(e));
                Ok(())
            }
        }
    }

    /// Reads once and dispatches everything that became complete.
    async fn read_once(&mut self) -> Result<()> {
        let n = self.stream.read(&mut self.buf).await?;
        if n == 0 {
            return Err(Error::Closed);
        }
        self.session.receive(&self.buf[..n]);
        self.dispatch()
    }

    fn dispatch(&mut self) -> Result<()> {
        while let Some(out) = self.session.poll_output() {
            match out {
                Output::Reply {
                    token: Token::Ping,
                    result,
                    ..
                } => {
                    if let Err(e) = result {
                        tracing::warn!(error = %e, "omm ping failed");
                    }
                }
                Output::Reply { token, result, .. } => deliver(token, result),
                Output::Event(ev) => self.forward(ev),
                Output::Malformed(e) => {
                    tracing::warn!(error = %e, "ignoring unusable frame from omm")
                }
            }
        }
        Ok(())
    }

    fn forward(&mut self, ev: Event) {
        if self.lagged > 0 {
            match self.events.try_send(Event::Lagged(self.lagged)) {
                Ok(()) => self.lagged = 0,
                Err(_) => {
                    self.lagged += 1;
                    return;
                }
            }
        }
        if self.events.try_send(ev).is_err() && !self.events.is_closed() {
            self.lagged += 1;
        }
    }

    fn expire(&mut self) -> Result<()> {
        for (token, err) in self.session.expire(Instant::now().into_std()) {
            match token {
                Token::Ping => {
                    tracing::warn!("omm did not answer a keep-alive ping; closing the link");
                    return Err(err);
                }
                other => deliver(other, Err(err)),
            }
        }
        Ok(())
    }

    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        ping_interval: Duration,
    ) -> Result<()> {
        let result = self.run_inner(&mut commands, ping_interval).await;
        for token in self.session.fail_all() {
            deliver(token, Err(Error::Closed));
        }
        commands.close();
        while let Ok(cmd) = commands.try_recv() {
            let _ = cmd.reply.send(Err(Error::Closed));
        }
        if let Err(e) = &result {
            tracing::warn!(error = %e, "omm connection ended");
        }
        result
    }

    async fn run_inner(
        &mut self,
        commands: &mut mpsc::Receiver<Command>,
        ping_interval: Duration,
    ) -> Result<()> {
        loop {
            let deadline = self.session.next_deadline().map(Instant::from_std);
            let ping_at = self.last_write + ping_interval;
            tokio::select! {
                r = self.stream.read(&mut self.buf) => {
                    let n = r?;
                    if n == 0 {
                        return Err(Error::Closed);
                    }
                    self.session.receive(&self.buf[..n]);
                    self.dispatch()?;
                }
                cmd = commands.recv() => {
                    let Some(cmd) = cmd else { return Ok(()) };
                    self.write_batch(cmd, commands).await?;
                }
                () = sleep_until_opt(deadline) => self.expire()?,
                () = tokio::time::sleep_until(ping_at) => {
                    self.send(&Request::ping(None), Token::Ping).await?;
                }
            }
        }
    }

    /// Encodes this command and any others already queued, then writes them in one go.
    async fn write_batch(
        &mut self,
        first: Command,
        commands: &mut mpsc::Receiver<Command>,
    ) -> Result<()> {
        let deadline = (Instant::now() + self.request_timeout).into_std();
        let mut out = Vec::new();
        let mut next = Some(first);
        let mut count = 0;
        while let Some(cmd) = next.take() {
            match self
                .session
                .send(&cmd.request, Token::Caller(cmd.reply), Some(deadline))
            {
                Ok((_, bytes)) => out.extend_from_slice(&bytes),
                Err((token, e)) => deliver(token, Err(e)),
            }
            count += 1;
            if count < 64 && out.len() < 64 * 1024 {
                next = commands.try_recv().ok();
            }
        }
        if !out.is_empty() {
            self.stream.write_all(&out).await?;
            self.stream.flush().await?;
            self.last_write = Instant::now();
        }
        Ok(())
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn deliver(token: Token, result: Result<Response>) {
    match token {
        Token::Caller(tx) | Token::Login(tx) => {
            let _ = tx.send(result);
        }
        Token::Ping => {}
    }
}
