// syncnode status page: follows every group's changes (GET /watch, NDJSON)
// with the control token taken from the URL fragment (#token=...), lists
// them, and redraws from /ui/state as soon as one arrives (and every few
// seconds for the graphs). Everything is written with textContent, never
// parsed as HTML.
"use strict";

const token = (() => {
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    sessionStorage.setItem("syncnode-token", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname);
  }
  return sessionStorage.getItem("syncnode-token") || "";
})();

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function row(cells) {
  const tr = el("tr");
  for (const c of cells) {
    const td = el("td");
    if (c instanceof Node) td.append(c); else td.textContent = c === undefined || c === null ? "" : String(c);
    tr.append(td);
  }
  return tr;
}

function code(s) { return el("code", s); }
function when(t) { return t ? new Date(t).toLocaleTimeString() : ""; }
function bytes(n) {
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i];
}
function short(id) { return id.length > 16 ? id.slice(0, 8) + "…" + id.slice(-6) : id; }

function fill(id, rows) {
  const tb = document.querySelector("#" + id + " tbody");
  tb.replaceChildren(...rows);
}

// line returns an SVG polyline of values over the graph's 360 slots (one
// per 10 s sample of the last hour, newest at the right), scaled to top.
function line(values, top, cls) {
  const p = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  const off = 360 - values.length;
  p.setAttribute("points", values.map((v, i) => (off + i) + "," + (80 - 76 * v / top).toFixed(1)).join(" "));
  p.setAttribute("class", cls);
  return p;
}

function graphs(history) {
  const h = history || [];
  const rateTop = Math.max(1, ...h.map(x => Math.max(x.in_rate, x.out_rate)));
  const queueTop = Math.max(1, ...h.map(x => x.queue));
  document.getElementById("rate-graph").replaceChildren(line(h.map(x => x.in_rate), rateTop, "in"), line(h.map(x => x.out_rate), rateTop, "out"));
  document.getElementById("queue-graph").replaceChildren(line(h.map(x => x.queue), queueTop, "queue"));
  document.getElementById("rate-max").textContent = "(top " + bytes(Math.round(rateTop)) + "/s)";
  document.getElementById("queue-max").textContent = "(top " + queueTop + ")";
}

function render(s) {
  const st = s.status;
  graphs(s.history);
  document.getElementById("node").textContent =
    "node " + st.id + " · " + st.peers + " peers · " + st.blobs + " blobs (" + bytes(st.blob_bytes) + (st.taking_up ? ", still taking up the store" : "") + ") · fetch queue " + st.fetch_queue +
    " · " + (st.unreferenced || 0) + " unreferenced, awaiting collection · " + (st.collected || 0) + " collected" +
    (st.store ? " · store " + st.store : "");
  const storeErr = document.getElementById("store-error");
  storeErr.hidden = !st.store_err;
  storeErr.textContent = st.store_err ? "Blob store failing: " + st.store_err : "";
  document.getElementById("updated").textContent = "updated " + when(s.time);

  fill("durability", (st.durability || []).map(d => {
    const name = (s.groups.find(g => g.id === d.group) || {}).name || d.group;
    const risk = el("span", d.at_risk, d.at_risk > 0 ? "risk" : "safe");
    risk.dataset.group = d.group;
    risk.classList.add("at-risk");
    const refs = el("div");
    for (const r of d.at_risk_refs || []) refs.append(code(r), el("br"));
    return row([name, d.copies || 1, d.referenced, risk, refs]);
  }));

  fill("queue", s.queue.map(q => {
    const tr = row([code(q.ref), q.state, q.attempts, when(q.next_attempt), when(q.last_attempt),
      q.last_error || "", (q.tried || []).map(short).join(", "), (q.holders || []).map(short).join(", ")]);
    tr.dataset.ref = q.ref;
    return tr;
  }));
  document.getElementById("queue-empty").hidden = s.queue.length > 0;

  document.getElementById("groups").replaceChildren(...s.groups.map(g => {
    const div = el("div", null, "group");
    div.dataset.group = g.id;
    div.append(el("h3", g.name + " (" + g.prefixes.join(", ") + ")"),
      el("div", "id " + g.id + " · admins, most senior first: " + (g.admins || []).map(a => (g.members.find(m => m.peer === a) || {}).name || short(a)).join(", "), "hint"));
    const ul = el("ul");
    for (const m of g.members) {
      const li = el("li");
      const seen = m.online ? el("span", "online", "online seen") :
        el("span", m.last_seen ? "last seen " + when(m.last_seen) : "not seen", "offline seen");
      const admin = (g.admins || []).includes(m.peer) ? ", admin" : "";
      li.append(el("strong", m.name || "(no name)", "name"), document.createTextNode(" "), code(m.peer),
        document.createTextNode(" " + m.devtype + admin + (m.peer === st.id ? " (this node) " : " ")), seen);
      li.dataset.peer = m.peer;
      ul.append(li);
    }
    div.append(ul);
    return div;
  }));

  document.getElementById("blob-count").textContent = "(" + st.blobs + ")";
  fill("blobs", s.blobs.map(b => {
    const groupName = id => (s.groups.find(g => g.id === id) || {}).name || short(id);
    const shares = Object.entries(b.shares || {}).map(([g, n]) => n + " in " + groupName(g)).join(", ");
    const tr = row([code(b.ref), bytes(b.size), shares, b.pinned ? "pinned" : ""]);
    tr.dataset.ref = b.ref;
    return tr;
  }));
}

// shown stops polling and shows state s: a fixed picture of the page.
let shown = false;
window.show = s => {
  shown = true;
  document.getElementById("error").hidden = true;
  render(s);
};

// The latest changes of every group, newest first, from one stream.
const recent = [];
let groupNames = {};

function drawRecent() {
  fill("recent", recent.map(e => {
    const what = e.key || e.ref || "";
    const who = e.local ? "this node" : (e.name ? e.name + " " : "") + (e.peer ? short(e.peer) : "");
    const detail = e.kind === "row.put" ? JSON.stringify(e.value) : e.shares ? e.shares + " shares" : e.size ? bytes(e.size) : "";
    const tr = row([when(e.time), groupNames[e.group] || short(e.group || ""), e.kind, code(what), who, detail]);
    tr.dataset.kind = e.kind;
    tr.dataset.key = what;
    return tr;
  }));
  document.getElementById("recent-empty").hidden = recent.length > 0;
}

// follow reads every group's changes, from the last marker once it has
// one (from now at first, and after a marker is refused), reconnecting
// after an error.
async function follow() {
  let marker = "";
  for (;;) {
    try {
      const q = marker ? "from=" + encodeURIComponent(marker) : "now=1";
      const resp = await fetch("/watch?" + q, { headers: { Authorization: "Bearer " + token }, cache: "no-store" });
      if (resp.status === 400 || resp.status === 410) marker = "";
      if (!resp.ok) throw new Error(resp.statusText);
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let i;
        while ((i = buf.indexOf("\n")) >= 0) {
          const e = JSON.parse(buf.slice(0, i));
          buf = buf.slice(i + 1);
          if (e.error) {
            if (e.expired || e.bad_marker) marker = "";
            throw new Error(e.error);
          }
          marker = e.marker;
          if (shown || e.kind === "progress") continue;
          recent.unshift(e);
          recent.length = Math.min(recent.length, 50);
          drawRecent();
          pollSoon();
        }
      }
    } catch (e) {
      // The daemon restarted, or the marker was refused: again shortly.
    }
    await new Promise(r => setTimeout(r, 2000));
  }
}

let timer = null, polling = false, again = false;
// pollSoon redraws from the state within a moment, once for a burst.
function pollSoon() {
  if (shown) return;
  if (polling) { again = true; return; }
  clearTimeout(timer);
  timer = setTimeout(poll, 100);
}

async function poll() {
  if (shown) return;
  polling = true;
  again = false;
  const errBox = document.getElementById("error");
  try {
    const resp = await fetch("/ui/state", { headers: { Authorization: "Bearer " + token }, cache: "no-store" });
    if (!resp.ok) {
      const body = await resp.json().catch(() => ({}));
      throw new Error(body.error || resp.statusText);
    }
    const s = await resp.json();
    if (shown) return;
    groupNames = Object.fromEntries(s.groups.map(g => [g.id, g.name]));
    render(s);
    errBox.hidden = true;
  } catch (e) {
    errBox.textContent = "cannot read the node's state: " + e.message;
    errBox.hidden = false;
  }
  polling = false;
  timer = setTimeout(poll, again ? 100 : 5000);
}

poll();
follow();
