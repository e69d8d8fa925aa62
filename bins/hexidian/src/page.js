// hexidian's status page: follows /events (server-sent events over fetch, so that an admin
// token can go in a header), searches /extensions. Everything shown is inserted as text.
"use strict";

const MAX_MESSAGES = 50;
const MAX_HANDSETS = 50;
const state = { seq: 0, handsetSeq: 0, rate: [] };

function $(id) { return document.getElementById(id); }

function headers() {
  const t = sessionStorage.getItem("hexidian-token");
  return t ? { Authorization: "Bearer " + t } : {};
}

// a table row of text cells; `cls` styles one cell
function row(cells, cls) {
  const tr = document.createElement("tr");
  for (const [i, c] of cells.entries()) {
    const td = document.createElement("td");
    td.textContent = c === null || c === undefined ? "" : String(c);
    if (cls && cls[i]) td.className = cls[i];
    tr.appendChild(td);
  }
  return tr;
}

function peer(id, up) {
  const el = $(id);
  el.className = "peer " + (up === true ? "up" : up === false ? "down" : "unknown");
}

function text(id, v) { $(id).textContent = v === null || v === undefined ? "–" : String(v); }

function showStatus(s) {
  peer("peer-guru3", s.guru3 ? s.guru3.last_fetch_ok : null);
  peer("peer-websocket", s.guru3 ? s.guru3.websocket_connected : null);
  peer("peer-omm", s.omm ? s.omm.connected : null);
  peer("peer-postgres", s.postgres ? s.postgres.connected : null);
  const b = s.broker;
  if (b) {
    text("c-done", b.done); text("c-ignored", b.ignored); text("c-dead", b.dead);
    text("c-backlog", b.backlog);
    const now = Date.now();
    state.rate.push([now, b.finished]);
    while (state.rate.length > 2 && now - state.rate[0][0] > 60000) state.rate.shift();
    const [t0, f0] = state.rate[0];
    text("c-rate", now - t0 > 5000 ? Math.round((b.finished - f0) * 60000 / (now - t0)) : "…");
    $("retrying").textContent = b.retrying ? "retrying: " + b.retrying : "";
    const stall = $("stall");
    if (b.stalled) {
      stall.style.display = "block";
      stall.className = b.stalled.refused ? "refused" : "";
      stall.textContent = (b.stalled.refused ? "The queue stops: a peer refuses hexidian's set-up. "
        : "The queue waits: a peer cannot be asked. ") + b.stalled.reason;
    } else {
      stall.style.display = "none";
    }
  }
  const u = s.unbound;
  if (u) {
    text("h-temporary", u.temporary); text("h-bound", u.bound); text("h-failed", u.binds_failed);
    const t = u.temporaries || [];
    $("temporaries").textContent = t.length
      ? "on a temporary number: " + t.map((x) => x.number + " (ppn " + x.ppn + ")").join(", ")
        + (u.temporary > t.length ? ", …" : "")
      : "";
  }
}

function addMessage(m) {
  if (m.seq <= state.seq) return; // already shown (the snapshot and an event may overlap)
  state.seq = m.seq;
  const body = $("messages");
  body.insertBefore(row([m.seq, m.id, m.type, m.number, m.outcome, m.reason],
    { 4: m.outcome }), body.firstChild);
  while (body.children.length > MAX_MESSAGES) body.removeChild(body.lastChild);
}

function addHandset(a) {
  if (a.seq <= state.handsetSeq) return;
  state.handsetSeq = a.seq;
  const body = $("handsets");
  body.insertBefore(row([a.seq, a.what, a.number, a.ppn, a.detail]), body.firstChild);
  while (body.children.length > MAX_HANDSETS) body.removeChild(body.lastChild);
}

function showDeadLetters(list) {
  const body = $("dead");
  body.replaceChildren(...list.map((d) => row([d.id, d.type, d.attempts, d.reason], { 3: "dead" })));
}

function onEvent(name, data) {
  if (name === "snapshot") {
    state.seq = 0; state.handsetSeq = 0;
    $("messages").replaceChildren();
    $("handsets").replaceChildren();
    showStatus(data.status);
    for (const m of data.messages) addMessage(m);
    for (const a of data.handsets) addHandset(a);
    showDeadLetters(data.dead_letters || []);
    search();
  } else if (name === "status") {
    showStatus(data);
  } else if (name === "message") {
    addMessage(data);
  } else if (name === "handset") {
    addHandset(data);
  } else if (name === "dead_letters") {
    showDeadLetters(data);
  }
}

// one server-sent event stream; returns when it ends
async function follow() {
  const r = await fetch("/events", { headers: headers(), cache: "no-store" });
  if (r.status === 401) {
    $("login").style.display = "block";
    throw new Error("token required");
  }
  if (!r.ok) throw new Error("HTTP " + r.status);
  $("login").style.display = "none";
  $("conn").textContent = "live";
  const reader = r.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += decoder.decode(value, { stream: true });
    let end;
    while ((end = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, end);
      buf = buf.slice(end + 2);
      let name = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) name = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (data) onEvent(name, JSON.parse(data));
    }
  }
}

// follows the stream for ever: reconnects (hexidian restarting, the network) after a pause
async function live() {
  for (;;) {
    try {
      await follow();
      $("conn").textContent = "reconnecting…";
    } catch (e) {
      $("conn").textContent = "reconnecting… (" + e.message + ")";
    }
    await new Promise((ok) => setTimeout(ok, 1000));
  }
}

let searching = null;
async function search() {
  const q = $("search").value;
  try {
    const r = await fetch("/extensions?q=" + encodeURIComponent(q), { headers: headers() });
    if (!r.ok) return;
    const res = await r.json();
    $("ext-count").textContent = res.extensions.length + " of " + res.total + " extensions";
    $("extensions").replaceChildren(...res.extensions.map((e) => row([
      e.number, e.name, e.type, e.handset || "",
      e.registered === null ? "?" : e.registered ? "yes" : "no",
    ])));
  } catch (e) {
    // the stream's reconnect shows the trouble
  }
}

$("search").addEventListener("input", () => {
  clearTimeout(searching);
  searching = setTimeout(search, 200);
});

$("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem("hexidian-token", $("token").value);
  $("token").value = "";
});

live();
