// The agentgw console: a client of the /admin API (the session cookie signs its requests; state changes carry
// the session's CSRF token). Pages are drawn from JSON with textContent only: nothing an agent or a caller
// wrote is ever parsed as markup.
"use strict";
(function () {
  const $ = (sel) => document.querySelector(sel);
  let me = null; // {subject, roles, csrf, admin, approver}
  let timer = null;

  // -- helpers -------------------------------------------------------------------------------------------
  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "style") node.style.cssText = v; // CSSOM: the CSP refuses style attributes, not this
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (k === "dataset") Object.assign(node.dataset, v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  class ApiError extends Error {
    constructor(status, code, message) { super(message); this.status = status; this.code = code; }
  }

  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    if (method !== "GET") headers["X-CSRF-Token"] = me ? me.csrf : "";
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const r = await fetch(path, {
      method, headers, credentials: "same-origin", body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await r.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
    if (!r.ok) {
      const err = (data && data.error) || {};
      if (r.status === 401 && path.startsWith("/admin/")) showSignin("Your session has ended; sign in again.");
      throw new ApiError(r.status, err.code || "http_" + r.status, err.message || r.statusText);
    }
    return data;
  }

  const fmtTime = (s) => (s ? new Date(s * 1000).toISOString().replace("T", " ").slice(0, 19) : "—");
  const fmtCost = (v) => (v ? "$" + Number(v).toFixed(6) : "—");
  const fmtMs = (v) => (v === undefined || v === null ? "—" : Number(v).toFixed(1) + " ms");
  const badge = (text, kind) => h("span", { class: "badge " + (kind || text) }, text);
  const errorBox = (e) => h("p", { class: "error", role: "alert" }, e.message || String(e));

  function page(title, ...children) {
    clearInterval(timer);
    timer = null;
    const p = $("#page");
    p.replaceChildren(h("h1", {}, title), ...children);
    return p;
  }

  function table(columns, rows, onclick) {
    const head = h("tr", {}, columns.map((c) => h("th", { class: c.num ? "num" : "" }, c.label)));
    const body = rows.map((r) =>
      h("tr", { class: onclick ? "clickable" : "", onclick: onclick ? () => onclick(r) : null },
        columns.map((c) => h("td", { class: c.num ? "num" : "" }, c.cell(r)))));
    return h("table", {}, h("thead", {}, head), h("tbody", {}, body));
  }

  function download(name, type, text) {
    const url = URL.createObjectURL(new Blob([text], { type }));
    const a = h("a", { href: url, download: name });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }

  // -- sign in / out -------------------------------------------------------------------------------------
  function showSignin(message) {
    me = null;
    clearInterval(timer);
    $("#top").hidden = true;
    $("#page").replaceChildren();
    $("#signin").hidden = false;
    $("#signin-error").textContent = message || "";
    $("#credential").focus();
    api("GET", "/console/options").then((o) => { $("#oidc").hidden = !o.oidc; }, () => {});
  }

  const LOGIN_ERRORS = {
    oidc_login_failed: "The sign-in with your identity provider did not complete; try again.",
    console_role_required: "The console is for admins and auditors.",
  };
  const failed = new URLSearchParams(location.search).get("error");
  if (failed) history.replaceState(null, "", location.pathname + location.hash); // shown once, not kept

  async function boot() {
    try {
      me = await api("GET", "/console/session");
    } catch (e) {
      showSignin(failed ? LOGIN_ERRORS[failed] || "The sign-in failed (" + failed + ")." : "");
      return;
    }
    $("#signin").hidden = true;
    $("#top").hidden = false;
    $("#who").textContent = `${me.subject} (${me.roles.join(", ") || "no roles"})`;
    try {
      await api("GET", "/admin/approvals?limit=1");
      $("#nav-approvals").hidden = false;
    } catch (e) {
      $("#nav-approvals").hidden = true; // approvals off, or not for this role
    }
    route();
  }

  $("#signin-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const credential = $("#credential").value;
    try {
      me = await api("POST", "/console/login", { credential });
      $("#credential").value = "";
      await boot();
    } catch (e) {
      $("#signin-error").textContent = e.message;
    }
  });

  $("#signout").addEventListener("click", async () => {
    try { await api("POST", "/console/logout"); } finally { location.hash = ""; showSignin("Signed out."); }
  });

  // -- router --------------------------------------------------------------------------------------------
  function route() {
    if (!me) return;
    const hash = location.hash.replace(/^#\/?/, "") || "tasks";
    const [path, query] = hash.split("?");
    const params = new URLSearchParams(query || "");
    const [name, ...rest] = path.split("/");
    for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === name);
    const pages = { tasks: tasksPage, task: taskPage, usage: usagePage, budgets: budgetsPage, approvals: approvalsPage, registry: registryPage };
    (pages[name] || tasksPage)(decodeURIComponent(rest.join("/")), params);
  }
  window.addEventListener("hashchange", route);

  // -- tasks ---------------------------------------------------------------------------------------------
  const taskFilters = { principal: "", since: "24h", until: "", target: "", status: "", denied: false, min_cost: "", live: true };

  function tasksPage() {
    const f = taskFilters;
    const input = (name, attrs) => h("input", { name, value: f[name], ...attrs, oninput: (e) => { f[name] = e.target.value; } });
    const since = h("select", { name: "since", onchange: (e) => { f.since = e.target.value; load(); } },
      [["1h", "last hour"], ["24h", "last 24 hours"], ["7d", "last 7 days"], ["30d", "last 30 days"], ["", "all time"]]
        .map(([v, l]) => h("option", { value: v, selected: f.since === v }, l)));
    const status = h("select", { name: "status", onchange: (e) => { f.status = e.target.value; load(); } },
      [["", "any"], ["ok", "ok"], ["denied", "denied"], ["error", "error"], ["cancelled", "cancelled"]]
        .map(([v, l]) => h("option", { value: v, selected: f.status === v }, l)));
    const denied = h("input", { type: "checkbox", name: "denied", checked: f.denied, onchange: (e) => { f.denied = e.target.checked; load(); } });
    const live = h("input", { type: "checkbox", name: "live", checked: f.live, onchange: (e) => { f.live = e.target.checked; schedule(); } });
    const search = h("input", { name: "task_id", placeholder: "task id" });
    const form = h("form", { class: "filters", onsubmit: (e) => { e.preventDefault(); load(); } },
      h("label", {}, "Principal", input("principal", { placeholder: "any" })),
      h("label", {}, "Since", since),
      h("label", {}, "Until", input("until", { placeholder: "now", size: 10 })),
      h("label", {}, "Agent, model or tool", input("target", { placeholder: "a2a:*, llm:gpt-*, mcp:docs/*", size: 22 })),
      h("label", {}, "Has status", status),
      h("label", {}, "Min cost (USD)", input("min_cost", { placeholder: "0", size: 8 })),
      h("label", {}, h("span", {}, "Denials only"), denied),
      h("button", { type: "submit" }, "Filter"),
      h("label", {}, h("span", {}, "Live"), live),
      h("span", { style: "flex:1" }),
      h("label", {}, "Find a task", search),
      h("button", { type: "button", onclick: () => { if (search.value.trim()) location.hash = "#/task/" + encodeURIComponent(search.value.trim()) + "?principal=*"; } }, "Open"));
    const out = h("div", { id: "task-list" }, h("p", { class: "muted" }, "Loading…"));
    page("Tasks", form, out);

    async function load() {
      const q = new URLSearchParams({ limit: "200" });
      if (f.principal) q.set("principal", f.principal);
      if (f.since) q.set("since", f.since);
      if (f.status) q.set("status", f.status);
      if (f.denied) q.set("denied", "true");
      for (const name of ["until", "target", "min_cost"]) if (f[name].trim()) q.set(name, f[name].trim());
      try {
        const data = await api("GET", "/admin/tasks?" + q);
        const rows = data.tasks;
        out.replaceChildren(
          h("p", { class: "muted" }, `${rows.length} task(s), newest first; updated ${new Date().toLocaleTimeString()}`),
          table([
            { label: "Started (UTC)", cell: (t) => fmtTime(t.started) },
            { label: "Task", cell: (t) => t.task_id },
            { label: "Principal", cell: (t) => t.principal || "—" },
            { label: "Steps", num: true, cell: (t) => t.records },
            { label: "Denied", num: true, cell: (t) => (t.denied ? badge(String(t.denied), "denied") : "0") },
            { label: "Errors", num: true, cell: (t) => (t.errors ? badge(String(t.errors), "error") : "0") },
            { label: "Tokens", num: true, cell: (t) => t.tokens },
            { label: "Cost", num: true, cell: (t) => fmtCost(t.cost_usd) },
          ], rows, (t) => { location.hash = "#/task/" + encodeURIComponent(t.task_id) + "?principal=" + encodeURIComponent(t.principal || "*"); }));
      } catch (e) {
        out.replaceChildren(errorBox(e));
      }
    }
    function schedule() {
      clearInterval(timer);
      timer = f.live ? setInterval(load, 5000) : null; // running tasks grow while the page is open
    }
    load();
    schedule();
  }

  // -- one task: tree, timeline, step details, verify, export ------------------------------------------
  function flatten(node, depth, out) {
    for (const s of node.steps) {
      out.push({ step: s, depth });
      for (const c of s.child_tasks || []) flatten(c, depth + 1, out);
    }
    for (const c of node.child_tasks) flatten(c, depth + 1, out);
    return out;
  }

  const stepLabel = (s) => `${s.plane} ${s.operation} ${s.target || ""}`.trim();

  function treeView(node, select) {
    const li = h("li", {},
      h("span", { class: "task" }, `task ${node.task_id}`),
      h("span", { class: "muted" }, `  ${node.principal || "—"} · ${node.totals.steps} steps · ${node.totals.input_tokens + node.totals.output_tokens} tokens · ${fmtCost(node.totals.cost_usd)}`));
    const ul = h("ul", {});
    for (const s of node.steps) {
      const item = h("li", {}, h("span", { class: "step", dataset: { record: s.record_id }, onclick: () => select(s) },
        `${stepLabel(s)} `), badge(s.status), h("span", { class: "muted" }, ` ${fmtMs(s.duration_ms)}`));
      const sub = (s.child_tasks || []).map((c) => treeView(c, select));
      if (sub.length) item.append(h("ul", {}, sub));
      ul.append(item);
    }
    for (const c of node.child_tasks) ul.append(treeView(c, select));
    li.append(ul);
    return li;
  }

  function timelineView(root, select) {
    const rows = flatten(root, 0, []);
    const t0 = root.totals.started || 0;
    const span = Math.max(root.totals.duration_ms || 0, 1);
    return h("div", { class: "timeline", id: "timeline" }, rows.map(({ step: s, depth }) => {
      const left = Math.max(0, ((s.ts - t0) * 1000) / span) * 100;
      const width = Math.max(0.3, ((s.duration_ms || 0) / span) * 100);
      const bar = h("div", { class: `tl-bar ${s.plane} ${s.status}`, style: `left:${left}%;width:${Math.min(width, 100 - left)}%`, title: `${stepLabel(s)}: ${fmtMs(s.duration_ms)}` });
      const attempts = [];
      let offset = left;
      for (const a of s.attempts || []) {
        const w = ((a.latency_ms || 0) / span) * 100;
        attempts.push(h("div", { class: "tl-attempt", style: `left:${offset}%;width:${Math.max(0.2, w)}%`, title: `attempt ${a.attempt} ${a.target}: ${a.outcome} ${fmtMs(a.latency_ms)}` }));
        offset += w;
      }
      return h("div", { class: "tl-row", onclick: () => select(s) },
        h("div", { class: "tl-label", style: `padding-left:${depth}rem` }, stepLabel(s)),
        h("div", { class: "tl-track" }, bar, attempts));
    }));
  }

  function stepDetail(s) {
    const u = s.usage || {};
    return h("div", { class: "step-detail", id: "step-detail" },
      h("h2", {}, stepLabel(s), " ", badge(s.status)),
      h("div", { class: "cards" },
        h("div", { class: "card" }, "Latency", h("b", {}, fmtMs(s.duration_ms))),
        h("div", { class: "card" }, "Tokens in / out", h("b", {}, `${u.input_tokens || 0} / ${u.output_tokens || 0}`)),
        h("div", { class: "card" }, "Cost", h("b", {}, fmtCost(s.cost && s.cost.usd))),
        h("div", { class: "card" }, "Chain", h("b", {}, `seq ${s.seq}`))),
      h("h2", {}, "Decisions"),
      (s.decisions || []).length ? table([
        { label: "Stage", cell: (d) => d.stage },
        { label: "Outcome", cell: (d) => badge(d.outcome, d.outcome === "deny" || d.outcome === "denied" ? "bad" : "ok") },
        { label: "Rule", cell: (d) => d.rule || "—" },
        { label: "Detail", cell: (d) => d.detail || "" },
      ], s.decisions) : h("p", { class: "muted" }, "none"),
      (s.attempts || []).length ? [h("h2", {}, "Upstream attempts"), table([
        { label: "#", cell: (a) => a.attempt },
        { label: "Target", cell: (a) => a.target },
        { label: "Outcome", cell: (a) => a.outcome },
        { label: "Status", cell: (a) => a.status ?? "—" },
        { label: "Latency", num: true, cell: (a) => fmtMs(a.latency_ms) },
      ], s.attempts)] : null,
      h("h2", {}, "Summaries (redacted)"),
      h("pre", {}, JSON.stringify({ request: s.request, response: s.response, error: s.error }, null, 2)),
      h("h2", {}, "Place in the hash chain"),
      h("pre", {}, `record ${s.record_id}\nseq ${s.seq}\nprev_hash ${s.prev_hash}\nhash ${s.hash}`));
  }

  function reportHtml(tree, verdict) {
    const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
    const rows = flatten(tree, 0, []).map(({ step: s, depth }) =>
      `<tr><td>${esc(fmtTime(s.ts))}</td><td style="padding-left:${depth + 0.5}em">${esc(stepLabel(s))}</td><td>${esc(s.principal)}</td><td>${esc(s.status)}</td>` +
      `<td>${esc((s.decisions || []).map((d) => `${d.stage} ${d.outcome}${d.rule ? ": " + d.rule : ""}`).join("; "))}</td>` +
      `<td>${esc(fmtMs(s.duration_ms))}</td><td>${esc(((s.usage || {}).input_tokens || 0) + "/" + ((s.usage || {}).output_tokens || 0))}</td>` +
      `<td>${esc(fmtCost(s.cost && s.cost.usd))}</td><td><code>${esc(s.seq)} ${esc(s.hash)}</code></td></tr>`).join("\n");
    const t = tree.totals;
    const check = verdict ? `<p>Records checked: ${esc(verdict.checked)}, ${verdict.ok ? "all intact" : "PROBLEMS FOUND"}.</p>` : "<p>Records not checked.</p>";
    return `<!doctype html><html><head><meta charset="utf-8"><title>agentgw task ${esc(tree.task_id)}</title>
<style>body{font:13px system-ui,sans-serif;margin:2em}table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:4px 6px;text-align:left;vertical-align:top}code{font-size:11px;word-break:break-all}</style></head><body>
<h1>Task ${esc(tree.task_id)}</h1>
<p>Principal ${esc(tree.principal)} · ${esc(t.steps)} steps · ${esc(t.input_tokens)} tokens in / ${esc(t.output_tokens)} out · ${esc(fmtCost(t.cost_usd))} · ${esc(t.denied)} denied · ${esc(t.errors)} errors · ${esc(fmtMs(t.duration_ms))}</p>
${check}
<p>Exported ${esc(new Date().toISOString())} by ${esc(me && me.subject)} from the agentgw console.</p>
<table><thead><tr><th>Time (UTC)</th><th>Step</th><th>Principal</th><th>Status</th><th>Decisions</th><th>Latency</th><th>Tokens</th><th>Cost</th><th>Chain (seq, hash)</th></tr></thead><tbody>
${rows}
</tbody></table>
<h2>Records (JSON)</h2><pre>${esc(JSON.stringify(tree, null, 1))}</pre></body></html>`;
  }

  async function taskPage(id, params) {
    const principal = params.get("principal") || "";
    const q = principal ? "?principal=" + encodeURIComponent(principal) : "";
    page(`Task ${id}`, h("p", { class: "muted" }, "Loading…"));
    let tree;
    try {
      tree = await api("GET", `/admin/tasks/${encodeURIComponent(id)}${q}`);
    } catch (e) {
      page(`Task ${id}`, errorBox(e));
      return;
    }
    const t = tree.totals;
    let verdict = null;
    const verifyOut = h("span", { id: "verify-result", class: "muted" });
    const detail = h("div", {});
    const select = (s) => detail.replaceChildren(stepDetail(s));
    page(`Task ${id}`,
      h("div", { class: "cards" },
        h("div", { class: "card" }, "Principal", h("b", {}, Array.isArray(tree.principal) ? tree.principal.join(", ") : tree.principal || "—")),
        h("div", { class: "card" }, "Steps", h("b", {}, t.steps)),
        h("div", { class: "card" }, "Duration", h("b", {}, fmtMs(t.duration_ms))),
        h("div", { class: "card" }, "Tokens in / out", h("b", {}, `${t.input_tokens} / ${t.output_tokens}`)),
        h("div", { class: "card" }, "Cost", h("b", {}, fmtCost(t.cost_usd))),
        h("div", { class: "card" }, "Denied / errors", h("b", {}, `${t.denied} / ${t.errors}`))),
      h("div", { class: "row-actions" },
        h("button", { type: "button", id: "verify", onclick: async () => {
          verifyOut.textContent = "checking…";
          try {
            verdict = await api("GET", `/admin/tasks/${encodeURIComponent(id)}/verify${q}`);
            verifyOut.replaceChildren(verdict.ok ? badge(`${verdict.checked} records intact`, "ok")
              : badge(`problems: ${verdict.records.filter((r) => !r.ok).map((r) => `seq ${r.seq} ${r.problem}`).join("; ") || "records missing"}`, "bad"));
          } catch (e) { verifyOut.replaceChildren(errorBox(e)); }
        } }, "Verify records"), verifyOut,
        h("button", { type: "button", id: "export-json", onclick: () => download(`task-${id}.json`, "application/json", JSON.stringify({ task: tree, verification: verdict }, null, 2)) }, "Export JSON"),
        h("button", { type: "button", id: "export-html", onclick: () => download(`task-${id}.html`, "text/html", reportHtml(tree, verdict)) }, "Export HTML")),
      h("h2", {}, "Workflow"),
      h("div", { class: "tree", id: "tree" }, h("ul", {}, treeView(tree, select))),
      h("h2", {}, "Timeline"),
      timelineView(tree, select),
      detail);
  }

  // -- usage ---------------------------------------------------------------------------------------------
  const usageState = { group_by: "model", since: "24h", step: "1h", metric: "total_tokens" };

  function usagePage() {
    const u = usageState;
    const sel = (name, options) => h("select", { name, onchange: (e) => { u[name] = e.target.value; load(); } },
      options.map(([v, l]) => h("option", { value: v, selected: u[name] === v }, l)));
    const out = h("div", { id: "usage" }, h("p", { class: "muted" }, "Loading…"));
    page("Usage and spend",
      h("form", { class: "filters", onsubmit: (e) => e.preventDefault() },
        h("label", {}, "Group by", sel("group_by", [["model", "model"], ["principal", "principal"], ["tool", "tool"], ["agent", "agent"]])),
        h("label", {}, "Range", sel("since", [["24h", "last 24 hours"], ["7d", "last 7 days"], ["30d", "last 30 days"]])),
        h("label", {}, "Step", sel("step", [["5m", "5 minutes"], ["1h", "hour"], ["1d", "day"]])),
        h("label", {}, "Chart", sel("metric", [["total_tokens", "tokens"], ["cost", "cost (USD)"], ["calls", "calls"]]))),
      out);

    async function load() {
      const q = new URLSearchParams({ group_by: u.group_by, since: u.since, step: u.step });
      try {
        const data = await api("GET", "/admin/usage?" + q);
        const groups = data.groups || [];
        const series = groups.map((g) => ({ name: String(g.key ?? "—"), points: (g.series || []).map((p) => ({ t: Date.parse(p.t), v: Number(p[u.metric] || 0) })) }));
        const chart = h("div", { class: "chart", id: "usage-chart" });
        const barChart = h("div", { class: "chart", id: "usage-bars" });
        out.replaceChildren(
          h("div", { class: "cards" },
            h("div", { class: "card" }, "Calls", h("b", {}, (data.totals || {}).calls ?? 0)),
            h("div", { class: "card" }, "Tokens", h("b", {}, (data.totals || {}).total_tokens ?? 0)),
            h("div", { class: "card" }, "Cost", h("b", {}, fmtCost((data.totals || {}).cost))),
            h("div", { class: "card" }, "Denied", h("b", {}, (data.totals || {}).denied ?? 0))),
          h("h2", {}, `${u.metric.replace("_", " ")} over time by ${u.group_by}`), chart,
          h("h2", {}, `${u.metric.replace("_", " ")} by ${u.group_by}`), barChart,
          table([
            { label: u.group_by, cell: (g) => g.key ?? "—" },
            { label: "Calls", num: true, cell: (g) => g.calls },
            { label: "Tokens in", num: true, cell: (g) => g.input_tokens },
            { label: "Tokens out", num: true, cell: (g) => g.output_tokens },
            { label: "Cost", num: true, cell: (g) => fmtCost(g.cost) },
            { label: "Denied", num: true, cell: (g) => g.denied },
            { label: "Errors", num: true, cell: (g) => g.errors },
          ], groups));
        window.Charts.line(chart, series, { label: "usage over time" });
        window.Charts.bars(barChart, groups.map((g) => ({ label: String(g.key ?? "—"), value: Number(g[u.metric] || 0) })), { label: "usage by group" });
      } catch (e) {
        out.replaceChildren(errorBox(e));
      }
    }
    load();
  }

  // -- budgets -------------------------------------------------------------------------------------------
  async function budgetsPage() {
    page("Budgets", h("p", { class: "muted" }, "Loading…"));
    try {
      const data = await api("GET", "/admin/budgets");
      const metrics = (o) => Object.entries(o || {}).map(([k, v]) => `${k} ${v}`).join(", ") || "—";
      const windows = (data.rate_windows || []).flatMap((p) => (p.windows || []).map((w) => ({ principal: p.principal, ...w })));
      page("Budgets",
        h("p", { class: "muted" }, `Ledger: ${data.ledger}${data.truncated ? ` (first ${data.limit} shown)` : ""}`),
        h("h2", {}, "Live tasks"),
        (data.tasks || []).length ? table([
          { label: "Task", cell: (t) => h("a", { href: "#/task/" + encodeURIComponent(t.task) + "?principal=" + encodeURIComponent(t.principal || "*") }, t.task) },
          { label: "Principal", cell: (t) => t.principal || "—" },
          { label: "Limits", cell: (t) => metrics(t.limits) },
          { label: "Spent", cell: (t) => metrics(t.spent) },
          { label: "Reserved", cell: (t) => metrics(t.reserved) },
          { label: "Parents", cell: (t) => (t.parents || []).join(" ← ") || "—" },
        ], data.tasks) : h("p", { class: "muted" }, "No task has a budget yet."),
        h("h2", {}, "Rate windows"),
        windows.length ? table([
          { label: "Principal", cell: (w) => w.principal },
          { label: "Window", cell: (w) => w.window },
          { label: "Count", num: true, cell: (w) => w.count },
          { label: "Resets in", num: true, cell: (w) => `${Math.round(w.resets_in_s)} s` },
        ], windows) : h("p", { class: "muted" }, "No rate window is open."));
    } catch (e) {
      page("Budgets", errorBox(e));
    }
  }

  // -- approvals -----------------------------------------------------------------------------------------
  async function approvalsPage() {
    if (!document.querySelector("#approvals")) page("Approvals", h("p", { class: "muted" }, "Loading…"));
    let data;
    try {
      data = await api("GET", "/admin/approvals?state=pending");
    } catch (e) {
      page("Approvals", errorBox(e));
      return;
    }
    const typing = document.activeElement && document.activeElement.name === "reason";
    const note = h("p", { id: "approval-note", class: "muted" });
    const decide = async (a, decision, reason) => {
      try {
        await api("POST", `/admin/approvals/${encodeURIComponent(a.id)}`, { decision, reason: reason || undefined });
        approvalsPage();
      } catch (e) {
        note.replaceChildren(errorBox(e));
      }
    };
    if (typing) return; // an approver is writing a reason: the next refresh redraws
    page("Approvals", note, h("span", { id: "approvals", hidden: true }),
      (data.approvals || []).length ? table([
        { label: "Requested (UTC)", cell: (a) => fmtTime(a.created) },
        { label: "Principal", cell: (a) => a.principal },
        { label: "Task", cell: (a) => (a.task ? h("a", { href: "#/task/" + encodeURIComponent(a.task) + "?principal=" + encodeURIComponent(a.principal || "*") }, a.task) : "—") },
        { label: "Rule", cell: (a) => a.rule || "—" },
        { label: "Target", cell: (a) => a.target },
        { label: "Arguments (redacted)", cell: (a) => h("code", {}, JSON.stringify(a.arguments ?? a.args ?? {})) },
        { label: "Decide", cell: (a) => {
          if (!me.approver) return h("span", { class: "muted" }, "approvers decide");
          const reason = h("input", { placeholder: "reason", size: 14, name: "reason" });
          return h("div", { class: "row-actions" }, reason,
            h("button", { type: "button", class: "primary", onclick: () => decide(a, "approve", reason.value) }, "Approve"),
            h("button", { type: "button", class: "danger", onclick: () => decide(a, "deny", reason.value) }, "Deny"));
        } },
      ], data.approvals) : h("p", { class: "muted" }, "No pending approval requests."));
    timer = setInterval(() => { if (location.hash.startsWith("#/approvals")) approvalsPage(); }, 3000);
  }

  // -- registry and health -------------------------------------------------------------------------------
  async function registryPage() {
    page("Registry and health", h("p", { class: "muted" }, "Loading…"));
    let data;
    try {
      data = await api("GET", "/admin/registry");
    } catch (e) {
      page("Registry and health", errorBox(e));
      return;
    }
    const cell = (v) => (v === undefined || v === null ? "—" : typeof v === "object" ? JSON.stringify(v) : String(v));
    const auto = (rows) => {
      if (!rows || !rows.length) return h("p", { class: "muted" }, "none");
      if (rows.some((r) => r === null || typeof r !== "object")) return h("p", {}, rows.map(cell).join(", "));
      const keys = [...new Set(rows.flatMap((r) => Object.keys(r)))];
      return h("div", { class: "scroll" }, table(keys.map((k) => ({ label: k, cell: (r) => cell(r[k]) })), rows));
    };
    const sections = [];
    if (typeof data.time === "number") sections.push(h("p", { class: "muted" }, `As of ${fmtTime(data.time)} UTC`));
    for (const [plane, body] of Object.entries(data)) {
      if (plane === "time") continue;
      sections.push(h("h2", {}, plane));
      if (Array.isArray(body)) sections.push(auto(body));
      else if (body && typeof body === "object") {
        for (const [k, v] of Object.entries(body)) {
          sections.push(h("h3", {}, k));
          sections.push(Array.isArray(v) ? auto(v) : h("pre", {}, JSON.stringify(v, null, 2)));
        }
      } else sections.push(h("p", {}, cell(body)));
    }
    page("Registry and health", ...sections);
  }

  boot();
})();
