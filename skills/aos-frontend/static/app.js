// The AOS web UI. Every text an agent, a command or a person wrote is put in the page with
// textContent, never as HTML: nothing in a transcript can run script here. The one exception is
// the agent's own text, rendered as Markdown by markdown-it with raw HTML off (it escapes any
// tag), images off and its link check on (no javascript: or data: links); the page's
// Content-Security-Policy forbids inline script besides.

const $ = (id) => document.getElementById(id);
const state = { agent: null, session: null, lastSeq: 0, firstSeq: 0, stream: null, lastEvent: 0, cards: new Map() };
const PAGE = 200; // facts shown when a session opens, and per "older" page

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

const md = window.markdownit ? window.markdownit({ html: false, linkify: true, breaks: true }).disable("image") : null;

function markdown(text) {
  const div = el("div", { class: "markdown" });
  if (!md) { div.textContent = text; return div; }
  div.innerHTML = md.render(text); // safe by construction: see the top of this file
  for (const a of div.querySelectorAll("a")) { a.target = "_blank"; a.rel = "noopener noreferrer"; }
  return div;
}

function banner(text) {
  const b = $("banner");
  b.textContent = text || "";
  b.hidden = !text;
}

async function api(method, path, body) {
  const res = await fetch(path, {
    method,
    headers: body === undefined ? {} : { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await res.json().catch(() => ({}));
  if (res.status === 401) banner("Signed out: open the link `aos ui` prints.");
  if (!res.ok) throw new Error(data.error || `HTTP ${res.status}`);
  return data;
}

// -- agents and sessions --------------------------------------------------------------------------

async function loadAgents(select) {
  const { agents } = await api("GET", "/api/agents");
  const box = $("agent");
  box.replaceChildren(...agents.map((a) => el("option", { value: a.id, text: a.display_name || a.name })));
  if (select) box.value = select;
  state.agent = box.value || null;
  await loadSessions();
}

async function loadSessions(select) {
  const list = $("sessions");
  if (!state.agent) { list.replaceChildren(); return; }
  const { sessions } = await api("GET", `/api/sessions?agent=${encodeURIComponent(state.agent)}`);
  const find = $("session-search").value.trim().toLowerCase();
  const shown = find ? sessions.filter((s) => `${s.title || ""} ${s.id}`.toLowerCase().includes(find)) : sessions;
  list.replaceChildren(...shown.map((s) => {
    const label = `${s.title || s.id} · ${s.phase}`;
    const b = el("button", { type: "button", text: label, onclick: () => openSession(s.id) });
    if (s.id === state.session) b.setAttribute("aria-current", "true");
    return el("li", {}, b);
  }));
  if (select) await openSession(select);
}

// -- the transcript -------------------------------------------------------------------------------

function usageLine(meta) {
  const u = meta && meta.usage;
  if (!u) return null;
  const cost = u.cost == null ? "" : ` · $${Number(u.cost).toFixed(5)}`;
  return el("div", { class: "usage", text: `${u.prompt_tokens} + ${u.completion_tokens} tokens${cost}` });
}

function card(callId, command) {
  let c = state.cards.get(callId);
  if (!c) {
    c = el("li", { class: "card" }, el("div", { class: "cmd", text: `$ ${command || ""}` }),
      el("div", { class: "meta", text: "running…" }));
    state.cards.set(callId, c);
    (state.insertBefore ? $("transcript").insertBefore(c, state.insertBefore) : $("transcript").append(c));
  }
  return c;
}

function forkButton(seq) {
  return el("button", { type: "button", class: "fork", text: "Fork from here", "aria-label": `Fork the session at fact ${seq}`,
    onclick: async () => {
      try {
        const s = await api("POST", `/api/sessions/${encodeURIComponent(state.session)}/fork`, { at_seq: seq });
        await loadSessions(s.id);
      } catch (e) { banner(e.message); }
    } });
}

function approvalItem(a, onDone) {
  const note = el("input", { "aria-label": "Note (optional)", placeholder: "note (optional)" });
  const decide = (decision, always = false) => async () => {
    try { await api("POST", `/api/approvals/${a.approval_id || a.id}`, { decision, always, note: note.value || undefined }); }
    catch (e) { banner(e.message); }
    onDone && onDone();
    refreshApprovals();
  };
  return el("li", { class: "approval" },
    el("div", { text: `${a.skill || "a guard"} asks: ${a.reason || ""}` }),
    el("div", { class: "cmd", text: `$ ${a.command}` }),
    note,
    el("button", { type: "button", text: "Approve", onclick: decide("approve") }),
    el("button", { type: "button", text: "Always allow", title: "approve, and let this agent run this exact command without asking from now on", onclick: decide("approve", true) }),
    el("button", { type: "button", text: "Deny", onclick: decide("deny") }));
}

function render(f, before, live = false) {
  // ``before``: an older page's facts go above what is shown (in order, before that node).
  const t = before ? { append: (node) => $("transcript").insertBefore(node, before) } : $("transcript");
  const b = f.body || {};
  if (f.kind === "message" && f.role === "user") {
    t.append(el("li", { class: "user" }, el("div", { text: b.text ?? JSON.stringify(b) }), forkButton(f.seq)));
  } else if (f.kind === "message" && f.role === "assistant") {
    const streaming = $("transcript").querySelector("li.streaming");
    if (streaming) streaming.remove();
    if (b.text) t.append(el("li", { class: "assistant" }, markdown(b.text), usageLine(f.meta)));
    else if (f.meta && f.meta.usage) t.append(el("li", { class: "end" }, usageLine(f.meta)));
  } else if (f.kind === "tool.started") {
    card(b.call_id, b.command);
  } else if (f.kind === "tool.result") {
    const c = card(b.call_id, "");
    const streamed = c.querySelector("pre.live");
    if (streamed) streamed.remove();
    const meta = c.querySelector(".meta");
    const bits = [b.outcome];
    if (b.exit_code != null) bits.push(`exit ${b.exit_code}`);
    if (b.duration_ms != null) bits.push(`${Math.round(b.duration_ms)} ms`);
    if (b.truncated) bits.push("output truncated");
    meta.textContent = bits.join(" · ");
    if (b.outcome !== "ok" || (b.exit_code && b.exit_code !== 0)) c.classList.add("failed");
    const pre = el("pre", { text: b.output || "" });
    const out = el("details", { open: "" }, el("summary", { text: "output" }), pre);
    if (b.content_id && (b.folded || b.truncated)) {
      // The whole output was kept as content: fetch it when asked.
      const all = el("button", { type: "button", text: "Show all output" });
      all.addEventListener("click", async () => {
        try {
          const r = await api("GET", `/api/content/${encodeURIComponent(b.content_id)}?agent=${encodeURIComponent(state.agent || "")}`);
          pre.textContent = r.text;
          all.remove();
        } catch (e) { banner(e.message); }
      });
      out.append(all);
    }
    c.insertBefore(out, meta);
    c.append(forkButton(f.seq));
  } else if (f.kind === "approval.requested") {
    t.append(approvalItem(b));
    if (live) askNow(b);
  } else if (f.kind === "approval.resolved") {
    closeAsk(b.approval_id);
    t.append(el("li", { class: "end", text: `approval ${b.decision} by ${b.by}${b.note ? `: ${b.note}` : ""}` }));
  } else if (f.kind === "dispatch.end") {
    const u = b.usage || {};
    const cost = u.cost == null ? "" : ` · $${Number(u.cost).toFixed(5)}`;
    t.append(el("li", { class: "end", text: `${b.status} · ${b.steps} steps${cost}${b.reason ? ` · ${b.reason}` : ""}` }));
  } else if (f.kind === "error" || f.kind === "interrupt") {
    t.append(el("li", { class: "end", text: `${f.kind}: ${b.message || b.reason || ""}` }));
  } else {
    t.append(el("li", { class: "end", text: `${f.kind}: ${typeof b === "string" ? b : JSON.stringify(b)}` }));
  }
  if (!before) $("transcript").scrollTop = $("transcript").scrollHeight;
}

function accept(f, live = false) {
  if (f.seq <= state.lastSeq) return; // seen already (a replay after a reconnect)
  state.lastSeq = f.seq;
  render(f, undefined, live);
}

function closeAsk(approvalId) {
  const dialog = $("ask");
  if (dialog.open && dialog.dataset.approval === approvalId) dialog.close(); // answered elsewhere
}

// An approval asked for in the session on screen, while the person watches, opens a modal
// dialog: focus moves into it (the browser keeps it there), Escape or "Later" closes it and
// leaves the approval pending, and focus goes back to where it was.
async function askNow(a) {
  const dialog = $("ask");
  if (dialog.open) return; // one at a time; the rest wait in the inbox
  $("ask-reason").textContent = `${a.skill || "a guard"}: ${a.reason || ""}`;
  $("ask-command").textContent = a.command;
  $("ask-note").value = "";
  dialog.dataset.approval = a.approval_id;
  const before = document.activeElement;
  const decide = (decision, always = false) => async () => {
    dialog.close();
    try { await api("POST", `/api/approvals/${a.approval_id}`, { decision, always, note: $("ask-note").value || undefined }); }
    catch (e) { banner(e.message); }
    refreshApprovals();
  };
  $("ask-approve").onclick = decide("approve");
  $("ask-always").onclick = decide("approve", true);
  $("ask-deny").onclick = decide("deny");
  $("ask-later").onclick = () => dialog.close();
  dialog.addEventListener("close", () => { if (before && before.focus) before.focus(); }, { once: true });
  dialog.showModal();
  $("ask-approve").focus();
}

// Older facts, a page at a time, above what is shown; the scroll position stays where it was.
async function showOlder() {
  if (!state.session || state.firstSeq <= 1) return;
  const sid = state.session;
  const { facts } = await api("GET", `/api/sessions/${encodeURIComponent(sid)}/facts?before=${state.firstSeq}&limit=${PAGE}`);
  if (sid !== state.session || !facts.length) return;
  const list = $("transcript");
  const anchor = list.firstChild;
  const height = list.scrollHeight;
  state.insertBefore = anchor;
  try { for (const f of facts) render(f, anchor); } finally { state.insertBefore = null; }
  state.firstSeq = facts[0].seq;
  $("older").hidden = state.firstSeq <= 1;
  list.scrollTop += list.scrollHeight - height;
}

// -- the live stream ------------------------------------------------------------------------------

function connect() {
  if (state.stream) state.stream.close();
  if (!state.session) return;
  const es = new EventSource(`/api/stream/${encodeURIComponent(state.session)}?after=${state.lastSeq}`);
  state.stream = es;
  state.lastEvent = Date.now();
  es.addEventListener("open", () => { banner(""); state.lastEvent = Date.now(); });
  es.addEventListener("fact", (e) => {
    state.lastEvent = Date.now();
    const f = JSON.parse(e.data);
    accept(f, true);
    if (f.kind === "dispatch.end") loadSessions(); // its phase changed
  });
  es.addEventListener("live", (e) => {
    state.lastEvent = Date.now();
    const ev = JSON.parse(e.data);
    if (ev.type === "output") {
      // What the command prints, as it prints it; its result replaces it with the record.
      const c = card(ev.call_id, "");
      let pre = c.querySelector("pre.live");
      if (!pre) { pre = el("pre", { class: "live", "aria-live": "off" }); c.append(pre); }
      pre.textContent += ev.text;
    } else if (ev.type === "text") {
      // The model's answer as it is written; its fact replaces it, rendered as Markdown.
      let li = $("transcript").querySelector("li.streaming");
      if (!li) { li = el("li", { class: "assistant streaming" }, el("div", { class: "live-text" })); $("transcript").append(li); }
      li.querySelector(".live-text").textContent += ev.text;
    } else if (ev.type === "model.retry") {
      $("transcript").append(el("li", { class: "end retry", text: `the model call failed (${ev.error}); trying again in ${ev.wait_s} s` }));
    }
  });
  es.addEventListener("heartbeat", () => { state.lastEvent = Date.now(); });
  es.addEventListener("error", () => { banner("Connection lost: reconnecting…"); });
}

// A stream that went quiet (no fact and no heartbeat for 40 s) is re-opened from the last fact.
setInterval(() => {
  if (state.stream && Date.now() - state.lastEvent > 40000) {
    banner("Connection lost: reconnecting…");
    connect();
  }
}, 5000);

async function openSession(sid) {
  state.session = sid;
  state.lastSeq = 0;
  state.cards.clear();
  $("transcript").replaceChildren();
  for (const b of $("sessions").querySelectorAll("button")) b.removeAttribute("aria-current");
  const { facts } = await api("GET", `/api/sessions/${encodeURIComponent(sid)}/facts?tail=${PAGE}`);
  state.firstSeq = facts.length ? facts[0].seq : 1;
  $("older").hidden = state.firstSeq <= 1;
  facts.forEach(accept);
  connect();
  loadSessions();
  $("message").focus();
}

// -- approvals ------------------------------------------------------------------------------------

async function refreshApprovals() {
  let approvals = [];
  try { ({ approvals } = await api("GET", "/api/approvals")); } catch { return; }
  const badge = $("badge");
  badge.textContent = String(approvals.length);
  badge.hidden = approvals.length === 0;
  $("approval-list").replaceChildren(...approvals.map((a) => approvalItem(a)));
}

// -- mission control --------------------------------------------------------------------------------

async function refreshMission() {
  if ($("mission").hidden) return;
  let data;
  try { data = await api("GET", "/api/overview"); } catch { return; }
  $("agent-cards").replaceChildren(...data.agents.map((a) => {
    const cost = a.cost_today == null ? "no cost today" : `$${Number(a.cost_today).toFixed(4)} today`;
    return el("li", { class: `agent-card ${a.state}` },
      el("div", {}, el("strong", { text: a.name }), " ", el("span", { class: "state", text: a.state })),
      a.command ? el("div", { class: "cmd", text: `${a.state === "waiting" ? "awaits approval: " : ""}$ ${a.command}` }) : null,
      el("div", { class: "usage", text: `${cost} · ${a.calls_today} model calls` }),
      a.session ? el("button", { type: "button", text: "Open", onclick: () => { show("chat"); state.agent = a.id; $("agent").value = a.id; loadSessions(a.session); } }) : null);
  }));
  $("a2a-feed").replaceChildren(...data.messages.map((m) =>
    el("li", {}, el("span", { class: "usage", text: `${new Date(m.at).toLocaleTimeString()} ` }),
      el("strong", { text: `${m.from} → ${[].concat(m.to || []).join(", ")}` }),
      el("span", { class: "usage", text: m.mode ? ` (${m.mode})` : "" }),
      el("div", { text: m.text || "" }))));
  $("alerts-feed").replaceChildren(...(data.alerts.length ? data.alerts.map((a) =>
    el("li", { class: a.level },
      el("span", { class: "usage", text: `${new Date(a.at).toLocaleString()} ` }),
      el("strong", { text: `${String(a.level).toUpperCase()} ${a.agent}` }),
      el("span", { class: "usage", text: ` ${a.schedule}${a.woke ? ` (woke ${a.woke})` : ""}` }),
      el("div", { text: a.summary || "" }))) : [el("li", { text: "No warnings or alerts." })]));
}

// -- agents ---------------------------------------------------------------------------------------

async function loadAgentEditor() {
  const { agents } = await api("GET", "/api/agents");
  for (const id of ["edit-agent", "skills-agent"]) {
    const box = $(id);
    const keep = box.value;
    box.replaceChildren(...agents.map((a) => el("option", { value: a.id, text: a.name })));
    if (keep && agents.some((a) => a.id === keep)) box.value = keep;
  }
  await fillAgentForm();
}

async function fillAgentForm() {
  const id = $("edit-agent").value;
  const form = $("agent-edit");
  $("agent-saved").textContent = "";
  if (!id) { form.reset(); return; }
  const a = await api("GET", `/api/agents/${encodeURIComponent(id)}`);
  form.elements.display_name.value = a.display_name || "";
  form.elements.model.value = a.model || "";
  form.elements.instructions.value = a.instructions || "";
  form.elements.settings.value = JSON.stringify(a.settings || {}, null, 2);
  form.dataset.revision = a.revision;
}

// -- skills ---------------------------------------------------------------------------------------

async function loadSkills() {
  const agent = $("skills-agent").value;
  const { skills } = await api("GET", `/api/skills${agent ? `?agent=${encodeURIComponent(agent)}` : ""}`);
  $("skill-rows").replaceChildren(...skills.map((s) => {
    const box = el("input", { type: "checkbox", "aria-label": `${s.name} enabled for this agent` });
    box.checked = Boolean(s.enabled);
    box.disabled = !agent || !s.usable;
    box.addEventListener("change", async () => {
      try { await api("POST", `/api/skills/${encodeURIComponent(s.name)}`, { agent, enabled: box.checked }); }
      catch (e) { banner(e.message); }
      loadSkills();
    });
    const st = s.service_status || {};
    const problems = [st.problem, ...(s.diagnostics || []).map((d) => d.message || JSON.stringify(d))]
      .filter(Boolean).join("; ");
    const name = el("button", { type: "button", text: s.name, onclick: () => showSkill(s.name) });
    return el("tr", {}, el("td", {}, name), el("td", {}, box, el("span", { class: "usage", text: ` ${s.why || ""}` })),
      el("td", { text: s.service ? `${st.state || "?"}${st.restarts ? ` · ${st.restarts} restarts` : ""}` : "-" }),
      el("td", { text: (st.hooks || []).join(", ") }), el("td", { text: problems }));
  }));
}

async function showSkill(name) {
  const s = await api("GET", `/api/skills/${encodeURIComponent(name)}`);
  $("skill-title").textContent = `${s.name}: SKILL.md`;
  $("skill-text").textContent = s.body || "";
}

// -- usage and the runtime log --------------------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";

async function loadUsage() {
  const { rows, total } = await api("GET", `/api/usage?group_by=${$("usage-by").value}`);
  const money = (c) => (c == null ? "-" : `$${Number(c).toFixed(5)}`);
  $("usage-rows").replaceChildren(...[...rows, total].map((r) => el("tr", {},
    el("td", { text: r.key }), el("td", { text: String(r.calls) }), el("td", { text: String(r.prompt_tokens) }),
    el("td", { text: String(r.completion_tokens) }), el("td", { text: money(r.cost) }))));
  // A bar per row: cost where known, else tokens.
  const chart = $("usage-chart");
  const value = (r) => (r.cost != null && total.cost ? r.cost : r.prompt_tokens + r.completion_tokens);
  const top = Math.max(1e-12, ...rows.map(value));
  const width = chart.clientWidth || 600;
  const bar = Math.max(4, Math.min(60, width / Math.max(rows.length, 1) - 6));
  chart.replaceChildren(...rows.map((r, i) => {
    const h = Math.round((value(r) / top) * 130);
    const rect = document.createElementNS(SVG, "rect");
    for (const [k, v] of Object.entries({ x: i * (bar + 6), y: 140 - h, width: bar, height: h, class: "bar" })) rect.setAttribute(k, v);
    const tip = document.createElementNS(SVG, "title");
    tip.textContent = `${r.key}: ${money(r.cost)}, ${r.prompt_tokens + r.completion_tokens} tokens`;
    rect.append(tip);
    return rect;
  }));
}

async function loadLog() {
  const f = new FormData($("log-filter"));
  const q = new URLSearchParams();
  for (const [k, v] of f) if (v) q.set(k, v);
  const { entries } = await api("GET", `/api/log?${q}`);
  $("log-rows").replaceChildren(...entries.slice().reverse().map((e) => el("tr", {},
    el("td", { text: new Date(e.ts).toLocaleString() }), el("td", { text: e.actor }), el("td", { text: e.op }),
    el("td", { text: e.outcome }), el("td", { text: e.duration_ms == null ? "" : String(Math.round(e.duration_ms)) }))));
}

const PAGES = ["chat", "approvals", "mission", "agents", "skills", "usage"];

function show(page) {
  for (const p of PAGES) {
    $(p).hidden = page !== p;
    $(`nav-${p}`).toggleAttribute("aria-current", page === p);
  }
  if (page === "approvals") refreshApprovals();
  if (page === "mission") refreshMission();
  if (page === "agents" || page === "skills") loadAgentEditor().then(() => page === "skills" && loadSkills()).catch((e) => banner(e.message));
  if (page === "usage") { loadUsage().catch((e) => banner(e.message)); loadLog().catch((e) => banner(e.message)); }
}

// -- wiring ---------------------------------------------------------------------------------------

$("nav-chat").addEventListener("click", () => show("chat"));
$("older").addEventListener("click", () => showOlder().catch((e) => banner(e.message)));
$("transcript").addEventListener("scroll", (e) => { if (e.target.scrollTop === 0 && !$("older").hidden) showOlder().catch(() => {}); });
$("nav-approvals").addEventListener("click", () => show("approvals"));
$("nav-mission").addEventListener("click", () => show("mission"));
$("nav-agents").addEventListener("click", () => show("agents"));
$("nav-skills").addEventListener("click", () => show("skills"));
$("nav-usage").addEventListener("click", () => show("usage"));
$("edit-agent").addEventListener("change", () => fillAgentForm().catch((e) => banner(e.message)));
$("skills-agent").addEventListener("change", () => loadSkills().catch((e) => banner(e.message)));
$("usage-by").addEventListener("change", () => loadUsage().catch((e) => banner(e.message)));
$("log-filter").addEventListener("submit", (e) => { e.preventDefault(); loadLog().catch((err) => banner(err.message)); });
$("agent-edit").addEventListener("submit", async (e) => {
  e.preventDefault();
  const form = e.target;
  let settings;
  try { settings = JSON.parse(form.elements.settings.value || "{}"); }
  catch { banner("Settings must be JSON (an object)."); return; }
  const body = {
    display_name: form.elements.display_name.value || null,
    model: form.elements.model.value || null,
    instructions: form.elements.instructions.value,
    settings,
    revision: Number(form.dataset.revision),
  };
  try {
    await api("PATCH", `/api/agents/${encodeURIComponent($("edit-agent").value)}`, body);
    await fillAgentForm();
    $("agent-saved").textContent = "Saved.";
  } catch (err) { banner(err.message); }
});
$("agent-archive").addEventListener("click", async () => {
  const id = $("edit-agent").value;
  if (!id || !window.confirm("Archive this agent and its sessions?")) return;
  try { await api("POST", `/api/agents/${encodeURIComponent(id)}/archive`); await loadAgentEditor(); await loadAgents(); }
  catch (err) { banner(err.message); }
});
$("agent").addEventListener("change", (e) => { state.agent = e.target.value; state.session = null; loadSessions(); });
$("agent-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const data = Object.fromEntries(new FormData(e.target));
  try {
    const agent = await api("POST", "/api/agents", data);
    e.target.reset();
    $("new-agent").open = false;
    await loadAgents(agent.id);
  } catch (err) { banner(err.message); }
});
$("session-search").addEventListener("input", () => loadSessions().catch((e) => banner(e.message)));
$("new-session").addEventListener("click", async () => {
  if (!state.agent) { banner("Create an agent first."); return; }
  try {
    const s = await api("POST", "/api/sessions", { agent: state.agent });
    await loadSessions(s.id);
  } catch (err) { banner(err.message); }
});
$("composer").addEventListener("submit", async (e) => {
  e.preventDefault();
  const box = $("message");
  const text = box.value.trim();
  if (!text || !state.session) return;
  try { await api("POST", `/api/sessions/${encodeURIComponent(state.session)}/messages`, { text }); box.value = ""; }
  catch (err) { banner(err.message); }
});
$("message").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("composer").requestSubmit(); }
});
$("interrupt").addEventListener("click", () => {
  if (state.session) api("POST", `/api/sessions/${encodeURIComponent(state.session)}/interrupt`).catch((e) => banner(e.message));
});

// Kernel events (pushed by the service) say when approvals or dispatches change; a slow poll
// covers anything missed while the events stream was down.
const events = new EventSource("/api/events");
events.addEventListener("open", () => { refreshApprovals(); refreshMission(); });
events.addEventListener("approval", (e) => {
  const data = JSON.parse(e.data);
  if (data.decision) closeAsk(data.approval_id);
  refreshApprovals();
  refreshMission();
});
events.addEventListener("dispatch", () => { refreshMission(); if (!$("chat").hidden) loadSessions(); });
events.addEventListener("skill", () => { if (!$("skills").hidden) loadSkills().catch((e) => banner(e.message)); });
setInterval(refreshApprovals, 30000);
setInterval(refreshMission, 2000);
refreshApprovals();
loadAgents().catch((e) => banner(e.message));
