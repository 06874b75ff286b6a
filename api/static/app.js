// hearth's web page: chat playground, live view, settings view, API reference.
// Talks only to this page's own origin. The API key lives in sessionStorage and goes out as a
// Bearer header, never in a URL. Everything the server or a model sends is inserted as text
// (textContent, or markdown.js which builds the DOM the same way).
"use strict";

(() => {
  const PREFIX = document.querySelector('meta[name="hearth-api-prefix"]').content;
  const BASE = location.origin + PREFIX;
  const KEY_STORE = "hearth.apiKey";
  const PAINT_EVERY_MS = 100;
  const $ = (id) => document.getElementById(id);

  function el(tag, text, className) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (className) e.className = className;
    return e;
  }

  function row(cells) {
    const tr = el("tr");
    for (const c of cells) {
      const td = el("td");
      if (c instanceof Node) td.append(c); else td.textContent = String(c);
      tr.append(td);
    }
    return tr;
  }

  function showError(id, message) {
    const p = $(id);
    p.textContent = message || "";
    p.hidden = !message;
  }

  // ---- the key ---------------------------------------------------------------------------

  const key = () => sessionStorage.getItem(KEY_STORE) || "";

  function askForKey(message) {
    $("key-panel").hidden = false;
    showError("key-error", message);
    $("key-input").focus();
  }

  function keyChanged() {
    $("key-state").textContent = key() ? "key set (this tab)" : "no key";
    $("key-panel").hidden = Boolean(key());
    if (key()) loadModels();
  }

  $("key-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const value = $("key-input").value.trim();
    if (!value) return;
    // fetch() refuses a header value outside Latin-1 (a TypeError, before any request): say so
    const bad = Array.from(value).find((c) => c.codePointAt(0) > 0xff);
    if (bad !== undefined) {
      showError("key-error", "This key holds " + JSON.stringify(bad) + ", a character an HTTP " +
                "header cannot carry: it is not a hearth key (check what was pasted).");
      return;
    }
    sessionStorage.setItem(KEY_STORE, value);
    $("key-input").value = "";
    keyChanged();
    showView(currentView);
  });
  $("key-change").addEventListener("click", () => askForKey(""));

  class ApiError extends Error {}

  // The OpenAI error envelope's message, else the status line.
  async function errorMessage(resp) {
    try {
      const body = await resp.json();
      if (body && body.error && body.error.message) return body.error.message;
    } catch (_) { /* not JSON */ }
    return "HTTP " + resp.status + " " + resp.statusText;
  }

  // fetch with the key; a 401 asks for the key again. Throws ApiError with the server's message.
  async function api(path, options) {
    const opts = Object.assign({}, options || {});
    opts.headers = Object.assign({"Authorization": "Bearer " + key()}, opts.headers || {});
    opts.cache = "no-store";
    opts.credentials = "omit";
    const resp = await fetch(path.startsWith("/web/") ? path : BASE + path, opts);
    if (resp.status === 401) {
      const message = await errorMessage(resp);
      askForKey(message);
      throw new ApiError(message);
    }
    if (!resp.ok) throw new ApiError(await errorMessage(resp));
    return resp;
  }

  // ---- views -------------------------------------------------------------------------------

  let currentView = "chat";
  let liveTimer = null;

  function showView(name) {
    currentView = name;
    for (const b of document.querySelectorAll("#tabs .tab")) {
      b.classList.toggle("active", b.dataset.view === name);
    }
    for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== "view-" + name;
    clearInterval(liveTimer);
    liveTimer = null;
    if (!key()) return;
    if (name === "live") {
      refreshLive();
      liveTimer = setInterval(refreshLive, 1000);
    } else if (name === "settings") {
      loadSettings();
    } else if (name === "reference") {
      loadReference();
    }
  }

  for (const b of document.querySelectorAll("#tabs .tab")) {
    b.addEventListener("click", () => showView(b.dataset.view));
  }

  // ---- models ------------------------------------------------------------------------------

  let models = [];

  // The picker's "(loaded)" marks change as models load and unload: they are read again when
  // the picker gets focus, after each reply, and from each live view reading. An option's text
  // is changed in place (an open picker stays open); the options are rebuilt only when the
  // list of models itself changed, and the user's choice is kept.
  function optionLabel(id, loaded) {
    return id + (loaded ? " (loaded)" : "");
  }

  // loaded: model id -> whether it is loaded; options it does not name are left as they are
  function markLoaded(loaded) {
    for (const option of $("model").options) {
      if (!loaded.has(option.value)) continue;
      const label = optionLabel(option.value, loaded.get(option.value));
      if (option.textContent !== label) option.textContent = label;
    }
  }

  async function loadModels() {
    try {
      const body = await (await api("/models")).json();
      models = body.data || [];
    } catch (e) {
      showError("model-error", "The model list could not be loaded: " + e.message);
      return;
    }
    showError("model-error", "");
    const select = $("model");
    const chosen = select.value;
    const loaded = new Map(models.map((m) => [m.id, Boolean(m.hearth && m.hearth.loaded)]));
    const same = select.options.length === models.length &&
      models.every((m, i) => select.options[i].value === m.id);
    if (same) {
      markLoaded(loaded);
      return;
    }
    select.replaceChildren();
    for (const m of models) {
      const option = el("option", optionLabel(m.id, loaded.get(m.id)));
      option.value = m.id;
      select.append(option);
    }
    if (chosen && models.some((m) => m.id === chosen)) {
      select.value = chosen;
    } else {
      // the server's default model (GET /health names it; no key needed)
      try {
        const health = await (await fetch("/health", {cache: "no-store"})).json();
        if (models.some((m) => m.id === health.model)) select.value = health.model;
      } catch (_) { /* keep the first */ }
    }
  }

  // ---- chat --------------------------------------------------------------------------------

  let history = []; // {role, content} of this conversation, as sent
  let controller = null;
  // Bumped by "New chat": a send() of an older conversation, finishing late, leaves
  // ``history`` alone.
  let conversation = 0;

  function addMessage(role) {
    const box = el("div", null, "message " + role);
    box.append(el("div", role, "role"));
    const body = el("div", null, "body");
    box.append(body);
    $("messages").append(box);
    return box;
  }

  function renderReply(body, text) {
    body.replaceChildren(window.hearthMarkdown.render(text));
  }

  function setBusy(busy) {
    $("send").disabled = busy;
    $("stop").disabled = !busy;
  }

  function numberOf(id) {
    const v = $(id).value.trim();
    return v === "" ? undefined : Number(v);
  }

  async function send() {
    const text = $("prompt").value;
    if (!text.trim() || controller) return;
    if (!key()) { askForKey(""); return; }
    $("prompt").value = "";
    const turn = conversation;
    history.push({role: "user", content: text});
    const user = addMessage("user");
    user.querySelector(".body").textContent = text;
    const reply = addMessage("assistant");
    const body = reply.querySelector(".body");
    const stats = el("div", "", "stats");
    reply.append(stats);

    const messages = [];
    const system = $("system").value;
    if (system.trim()) messages.push({role: "system", content: system});
    messages.push(...history);
    const request = {model: $("model").value, messages, stream: true,
                     stream_options: {include_usage: true},
                     temperature: numberOf("temperature"), top_p: numberOf("top-p"),
                     max_tokens: numberOf("max-tokens")};
    controller = new AbortController();
    setBusy(true);
    const started = performance.now();
    let first = null, content = "", usage = null, finish = null, chunks = 0;
    // The Markdown is rendered again (whole) at most every PAINT_EVERY_MS while the reply
    // streams, and once more at its end: a long reply costs O(length) per paint, not per token.
    let painted = -1, lastPaint = -Infinity, timer = null;
    const paint = () => {
      clearTimeout(timer);
      timer = null;
      if (content.length === painted) return;
      painted = content.length;
      lastPaint = performance.now();
      renderReply(body, content);
      $("messages").scrollTop = $("messages").scrollHeight;
    };
    const paintSoon = () => {
      if (timer !== null || content.length === painted) return;
      const wait = lastPaint + PAINT_EVERY_MS - performance.now();
      if (wait <= 0) paint(); else timer = setTimeout(paint, wait);
    };
    try {
      const resp = await api("/chat/completions", {
        method: "POST", headers: {"Content-Type": "application/json"},
        body: JSON.stringify(request), signal: controller.signal});
      const reader = resp.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const {done, value} = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, {stream: true});
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const event = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          for (const line of event.split("\n")) {
            if (!line.startsWith("data:")) continue;
            const data = line.slice(5).trim();
            if (data === "[DONE]") continue;
            const chunk = JSON.parse(data);
            if (chunk.error) throw new ApiError(chunk.error.message || "error");
            for (const choice of chunk.choices || []) {
              const delta = (choice.delta && choice.delta.content) || "";
              if (delta) {
                if (first === null) first = performance.now();
                content += delta;
                chunks += 1;
              }
              finish = choice.finish_reason || finish;
            }
            if (chunk.usage) usage = chunk.usage;
          }
        }
        paintSoon();
      }
    } catch (e) {
      if (e.name === "AbortError") {
        finish = "stopped";
      } else {
        const err = el("div", e instanceof ApiError ? e.message : String(e), "error");
        reply.append(err);
        finish = finish || "error";
      }
    } finally {
      controller = null;
      setBusy(false);
      clearTimeout(timer);
      timer = null;
    }
    if (turn !== conversation) return; // "New chat" emptied the page and the history
    paint();
    reply.append(stats); // below an error, if any
    reply.dataset.finish = finish || "";
    if (content && finish !== "error") {
      history.push({role: "assistant", content});
    } else {
      // No reply to send back (an error, or stopped before any token): the question leaves
      // the history too, so the next request has no two user messages in a row.
      history.pop();
      user.dataset.dropped = "true";
      user.title = "Not sent again: this turn got no reply";
    }
    const end = performance.now();
    const tokens = usage ? usage.completion_tokens : chunks;
    const seconds = first !== null ? (end - first) / 1000 : 0;
    const parts = [];
    if (usage) parts.push(usage.prompt_tokens + " prompt + " + usage.completion_tokens + " completion tokens");
    else if (chunks) parts.push("about " + chunks + " tokens");
    if (first !== null) parts.push("first token " + ((first - started) / 1000).toFixed(2) + " s");
    if (seconds > 0 && tokens > 1) parts.push(((tokens - 1) / seconds).toFixed(1) + " tokens/s");
    if (finish) parts.push("finish: " + finish);
    stats.textContent = parts.join(" · ");
    $("messages").scrollTop = $("messages").scrollHeight;
    loadModels(); // the reply may have loaded its model: refresh the "(loaded)" marks
  }

  $("chat-form").addEventListener("submit", (ev) => { ev.preventDefault(); send(); });
  $("prompt").addEventListener("keydown", (ev) => {
    // During an input method's composition (Chinese, Japanese, Korean…) Enter confirms the
    // composed text: it does not send. keyCode 229 is how some browsers mark those keys.
    if (ev.isComposing || ev.keyCode === 229) return;
    if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); send(); }
  });
  $("model").addEventListener("focus", () => { if (key()) loadModels(); });
  $("stop").addEventListener("click", () => { if (controller) controller.abort(); });
  $("new-chat").addEventListener("click", () => {
    conversation += 1;
    if (controller) controller.abort();
    history = [];
    $("messages").replaceChildren();
  });

  // ---- live view ---------------------------------------------------------------------------

  function bytes(n) {
    if (!n) return "–";
    const units = ["B", "KB", "MB", "GB", "TB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return n.toFixed(i ? 1 : 0) + " " + units[i];
  }

  async function refreshLive() {
    let live;
    try {
      live = await (await api("/web/api/live")).json();
    } catch (e) {
      showError("live-error", e.message);
      return;
    }
    showError("live-error", live.scheduler_up ? "" : "The scheduler is not reporting: starting, or gone.");
    $("live-queue").textContent = live.queue_depth;
    $("live-tps").textContent = live.tokens_per_s.toFixed(1);
    $("live-ttft").textContent = live.ttft_p50_s === null ? "–" : (live.ttft_p50_s * 1000).toFixed(0) + " ms";
    $("live-restarts").textContent = live.worker_restarts;
    const tbody = document.querySelector("#live-models tbody");
    tbody.replaceChildren(...live.models.map((m) => {
      const tr = row([m.id + (m.id === live.default_model ? " (default)" : ""),
                      m.loaded ? "yes" : "no", bytes(m.size_bytes),
                      m.loaded ? m.slots_busy + " / " + m.slots_total : "–",
                      m.worker_restarts]);
      tr.dataset.model = m.id;
      tr.dataset.busy = m.slots_busy;
      return tr;
    }));
    const names = new Set([...Object.keys(live.in_flight_by_key), ...Object.keys(live.queue_by_key)]);
    document.querySelector("#live-keys tbody").replaceChildren(...[...names].sort().map(
      (k) => row([k, live.in_flight_by_key[k] || 0, live.queue_by_key[k] || 0])));
    drawChart(live.chart);
    markLoaded(new Map(live.models.map((m) => [m.id, Boolean(m.loaded)])));
  }

  function drawChart(chart) {
    const canvas = $("live-chart");
    const ctx = canvas.getContext("2d");
    const w = canvas.width, h = canvas.height, pad = 28;
    const css = getComputedStyle(canvas);
    ctx.clearRect(0, 0, w, h);
    ctx.font = "11px sans-serif";
    ctx.fillStyle = css.color;
    const points = chart.points;
    const top = Math.max(1, ...points.map((p) => p[1]));
    ctx.strokeStyle = css.borderColor || "#888";
    ctx.beginPath();
    ctx.moveTo(pad, 4); ctx.lineTo(pad, h - pad); ctx.lineTo(w - 4, h - pad);
    ctx.stroke();
    ctx.fillText(top.toFixed(0), 2, 12);
    ctx.fillText("0", 2, h - pad);
    ctx.fillText("-5 min", pad, h - 10);
    ctx.fillText("now", w - 30, h - 10);
    if (points.length < 2) return;
    const x = (ago) => w - 4 - (w - 4 - pad) * Math.min(ago, 300) / 300;
    const y = (v) => h - pad - (h - pad - 8) * v / top;
    ctx.strokeStyle = css.outlineColor || "#2a7";
    ctx.lineWidth = 2;
    ctx.beginPath();
    points.forEach(([ago, v], i) => (i ? ctx.lineTo(x(ago), y(v)) : ctx.moveTo(x(ago), y(v))));
    ctx.stroke();
    ctx.lineWidth = 1;
  }

  // ---- settings view -----------------------------------------------------------------------

  async function loadSettings() {
    let view;
    try {
      view = await (await api("/web/api/settings")).json();
    } catch (e) {
      showError("settings-error", e.message);
      return;
    }
    showError("settings-error", "");
    document.querySelector("#settings-table tbody").replaceChildren(...view.settings.map(
      (s) => {
        const tr = row([s.name, s.value, s.source, s.flag, s.env]);
        tr.dataset.setting = s.name;
        return tr;
      }));
    const perModel = view.models || [];
    $("settings-models").hidden = perModel.length === 0;
    $("settings-models-none").hidden = perModel.length !== 0;
    document.querySelector("#settings-models tbody").replaceChildren(...perModel.map((m) => {
      const tr = row([m.model, m.name, m.value, m.source, m.flag]);
      tr.dataset.model = m.model;
      tr.dataset.setting = m.name;
      return tr;
    }));
    document.querySelector("#settings-keys tbody").replaceChildren(
      ...Object.entries(view.key_names).map(([name, from]) => row([name, from])));
  }

  // ---- API reference (reference.js builds it) ---------------------------------------------

  async function loadReference() {
    $("ref-doc").textContent = "GET " + PREFIX + "/openapi.json";
    let doc;
    try {
      doc = await (await api("/openapi.json")).json();
      if (!models.length) await loadModels();
    } catch (e) {
      showError("reference-error", e.message);
      return;
    }
    showError("reference-error", "");
    const model = $("model").value || (models[0] && models[0].id) || "MODEL";
    $("reference").replaceChildren(window.hearthReference.render(
      doc, {origin: location.origin, prefix: PREFIX, model}));
  }

  // ---- start -------------------------------------------------------------------------------

  keyChanged();
  if (!key()) askForKey("");
  showView("chat");
})();
