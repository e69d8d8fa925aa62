//! SIP phones and callers: `sipp` (Debian's `sip-tester`) with the scenarios in
//! `scenarios/`, one process per phone or call, each on its own loopback port.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

const SCENARIOS: &[(&str, &str)] = &[
    ("register.xml", include_str!("scenarios/register.xml")),
    (
        "register-refused.xml",
        include_str!("scenarios/register-refused.xml"),
    ),
    ("uas-answer.xml", include_str!("scenarios/uas-answer.xml")),
    ("uas-busy.xml", include_str!("scenarios/uas-busy.xml")),
    ("uas-ring.xml", include_str!("scenarios/uas-ring.xml")),
    ("call.xml", include_str!("scenarios/call.xml")),
    (
        "call-until-bye.xml",
        include_str!("scenarios/call-until-bye.xml"),
    ),
];

/// `sipp`, or why there is none.
pub(crate) fn binary() -> Result<PathBuf, String> {
    let p = std::env::var_os("HEXIDIAN_SIPP")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("sipp"));
    match std::process::Command::new(&p).arg("-v").output() {
        Ok(o) if String::from_utf8_lossy(&o.stdout).contains("SIPp") => Ok(p),
        Ok(_) => Err(format!("{} is not SIPp", p.display())),
        Err(e) => Err(format!(
            "sipp: {e} (install Debian's sip-tester, or set HEXIDIAN_SIPP)"
        )),
    }
}

/// A UDP port on loopback that was free a moment ago (sipp binds it itself).
pub(crate) fn free_udp_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    s.local_addr().expect("local addr").port()
}

/// How a phone treats the INVITE it gets.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Answer {
    /// Rings this long, then answers; waits for the BYE.
    After(Duration),
    /// 486 Busy Here.
    Busy,
    /// Rings until the call is cancelled.
    Ring,
}

/// One received INVITE: when (sipp's clock, seconds of the day) and its From header.
#[derive(Debug, Clone)]
pub(crate) struct Invite {
    pub(crate) at: f64,
    pub(crate) from: String,
}

pub(crate) struct Sip {
    pub(crate) bin: PathBuf,
    pub(crate) dir: PathBuf,
    pub(crate) asterisk: SocketAddr,
}

/// A registered phone waiting for one call.
pub(crate) struct Phone {
    child: tokio::process::Child,
    trace: PathBuf,
    pub(crate) number: String,
}

impl Sip {
    pub(crate) fn new(bin: PathBuf, dir: &Path, asterisk: SocketAddr) -> Self {
        for (name, text) in SCENARIOS {
            std::fs::write(dir.join(name), text).expect("write scenario");
        }
        Self {
            bin,
            dir: dir.to_owned(),
            asterisk,
        }
    }

    /// sipp for one call of `scenario` from `port`; towards Asterisk unless `server`
    /// (then it waits for the call).
    fn command(&self, scenario: &str, port: u16, server: bool) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(&self.bin);
        if !server {
            c.arg(self.asterisk.to_string());
        }
        c.arg("-sf")
            .arg(self.dir.join(scenario))
            .args(["-i", "127.0.0.1", "-p"])
            .arg(port.to_string())
            .args(["-m", "1", "-nostdin", "-timeout_error"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .current_dir(&self.dir);
        c
    }

    async fn run(mut c: tokio::process::Command, limit: Duration) -> bool {
        c.arg("-timeout").arg(format!("{}s", limit.as_secs()));
        let mut child = c.spawn().expect("spawn sipp");
        match tokio::time::timeout(limit + Duration::from_secs(5), child.wait()).await {
            Ok(Ok(s)) => s.success(),
            _ => {
                let _ = child.kill().await;
                false
            }
        }
    }

    /// REGISTERs `user` from `port`; `true` on 200.
    pub(crate) async fn register(&self, user: &str, password: &str, port: u16) -> bool {
        let mut c = self.command("register.xml", port, false);
        c.args(["-s", user, "-au", user, "-ap", password]);
        Self::run(c, Duration::from_secs(10)).await
    }

    /// REGISTERs `user`; `true` when Asterisk refused it (401, 403 or 404 after the
    /// credentials), `false` when it accepted it or did not answer.
    pub(crate) async fn register_refused(&self, user: &str, password: &str) -> bool {
        let mut c = self.command("register-refused.xml", free_udp_port(), false);
        c.args(["-s", user, "-au", user, "-ap", password]);
        Self::run(c, Duration::from_secs(10)).await
    }

    /// Registers `number` and starts a phone for one call on the same port.
    pub(crate) async fn phone(&self, number: &str, password: &str, answer: Answer) -> Phone {
        let port = free_udp_port();
        assert!(
            self.register(number, password, port).await,
            "phone {number} could not register"
        );
        let trace = self.dir.join(format!("phone-{number}-{port}.msg"));
        let (scenario, pause) = match answer {
            Answer::After(d) => ("uas-answer.xml", d),
            Answer::Busy => ("uas-busy.xml", Duration::ZERO),
            Answer::Ring => ("uas-ring.xml", Duration::ZERO),
        };
        let mut server = self.command(scenario, port, true);
        server
            .arg("-d")
            .arg(pause.as_millis().to_string())
            .args(["-trace_msg", "-message_file"])
            .arg(&trace)
            .args(["-timeout", "60s"]);
        let mut child = server.spawn().expect("spawn sipp phone");
        // sipp has bound its port once its trace file exists
        for _ in 0..250 {
            if trace.exists() {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("sipp phone {number} ({scenario}) exited at once: {status}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(trace.exists(), "sipp phone {number} did not start");
        Phone {
            child,
            trace,
            number: number.to_owned(),
        }
    }

    /// Calls `to` as `from`; returns the final response code (0: none) once the call is over
    /// (`hold` after an answer, then BYE).
    pub(crate) async fn call(&self, from: &str, password: &str, to: &str, hold: Duration) -> u16 {
        self.call_with("call.xml", from, password, to, hold).await
    }

    /// Calls `to` and stays until Asterisk hangs up (token calls, announcements).
    pub(crate) async fn call_until_bye(&self, from: &str, password: &str, to: &str) -> u16 {
        self.call_with("call-until-bye.xml", from, password, to, Duration::ZERO)
            .await
    }

    async fn call_with(
        &self,
        scenario: &str,
        from: &str,
        password: &str,
        to: &str,
        hold: Duration,
    ) -> u16 {
        let port = free_udp_port();
        let trace = self.dir.join(format!("call-{from}-{to}-{port}.msg"));
        let mut c = self.command(scenario, port, false);
        c.args([
            "-s", to, "-key", "caller", from, "-au", from, "-ap", password,
        ])
        .arg("-d")
        .arg(hold.as_millis().to_string())
        .args(["-trace_msg", "-message_file"])
        .arg(&trace);
        Self::run(c, Duration::from_secs(90)).await;
        final_code(&std::fs::read_to_string(&trace).unwrap_or_default())
    }
}

impl Phone {
    /// Waits (at most `limit`) for the phone's scenario to end; `true` if it ran to its end.
    pub(crate) async fn finished(&mut self, limit: Duration) -> bool {
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(Ok(s)) => s.success(),
            _ => false,
        }
    }

    /// The user part of each received INVITE's Request-URI (the number dialled).
    pub(crate) fn request_users(&self) -> Vec<String> {
        parse_trace(&std::fs::read_to_string(&self.trace).unwrap_or_default())
            .into_iter()
            .filter(|m| m.received && m.first_line.starts_with("INVITE "))
            .filter_map(|m| {
                let uri = m.first_line.split(' ').nth(1)?;
                let user = uri.strip_prefix("sip:")?.split('@').next()?;
                Some(user.to_owned())
            })
            .collect()
    }

    /// The INVITEs this phone received so far.
    pub(crate) fn invites(&self) -> Vec<Invite> {
        parse_trace(&std::fs::read_to_string(&self.trace).unwrap_or_default())
            .into_iter()
            .filter(|m| m.received && m.first_line.starts_with("INVITE "))
            .map(|m| Invite {
                at: m.at,
                from: m.header("From").unwrap_or_default(),
            })
            .collect()
    }
}

struct TraceMessage {
    at: f64,
    received: bool,
    first_line: String,
    lines: Vec<String>,
}

impl TraceMessage {
    fn header(&self, name: &str) -> Option<String> {
        self.lines.iter().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }
}

/// Blocks of sipp's `-trace_msg` file: `----- DATE TIME` then `UDP message received …` or
/// `… sent …`, a blank line, the message.
fn parse_trace(text: &str) -> Vec<TraceMessage> {
    let mut out: Vec<TraceMessage> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("-----------------------------------------------") {
            let time = rest.split_whitespace().nth(1).unwrap_or_default();
            let mut parts = time.split(':');
            let secs = match (parts.next(), parts.next(), parts.next()) {
                (Some(h), Some(m), Some(s)) => {
                    h.parse::<f64>().unwrap_or(0.0) * 3600.0
                        + m.parse::<f64>().unwrap_or(0.0) * 60.0
                        + s.parse::<f64>().unwrap_or(0.0)
                }
                _ => 0.0,
            };
            out.push(TraceMessage {
                at: secs,
                received: false,
                first_line: String::new(),
                lines: Vec::new(),
            });
            continue;
        }
        let Some(m) = out.last_mut() else { continue };
        if m.first_line.is_empty() {
            if line.contains("message received") {
                m.received = true;
            } else if !line.trim().is_empty() && !line.contains("message sent") {
                m.first_line = line.trim().to_owned();
            }
        } else {
            m.lines.push(line.to_owned());
        }
    }
    out
}

/// The final response to the caller's authenticated INVITE (CSeq 2), or else to its first
/// one (0: none).
fn final_code(trace: &str) -> u16 {
    let finals: Vec<(bool, u16)> = parse_trace(trace)
        .iter()
        .filter(|m| m.received)
        .filter_map(|m| {
            let cseq = m.header("CSeq")?;
            if !cseq.ends_with("INVITE") {
                return None;
            }
            let code = m
                .first_line
                .strip_prefix("SIP/2.0 ")?
                .split(' ')
                .next()?
                .parse::<u16>()
                .ok()?;
            (code >= 200).then_some((cseq.starts_with("2 "), code))
        })
        .collect();
    finals
        .iter()
        .rev()
        .find(|(second, _)| *second)
        .or_else(|| finals.iter().rev().find(|(_, c)| *c != 401 && *c != 407))
        .map_or(0, |(_, c)| *c)
}
