// The riskengine dashboard: plain browser JavaScript, no build step, no outside resources.
// Live alerts come from /api/alerts/stream (Server-Sent Events); the worker figures from /api/stats;
// the chart, top users, search and evidence from the reporting views (/api/reporting/...); a user's
// detection window from /api/users/{id}. Every value from the server goes into the page through
// textContent, never as HTML.
"use strict";

(function () {
  const LEVELS = ["LOW", "MEDIUM", "HIGH", "CRITICAL"];
  const LEVEL_COLORS = { LOW: "#8fb3e0", MEDIUM: "#f0c24b", HIGH: "#ef8a3c", CRITICAL: "#d63b3b" };
  const OTHER_COLORS = ["#2a5bd7", "#2e8b57", "#8e44ad", "#16a085", "#c0392b", "#7f8c8d", "#d35400"];
  const PATTERNS = [
    "VOLUME_SPIKE", "WASH_TRADING", "LARGE_ORDER", "FLASH_CRASH", "SELF_TRADE", "ROUND_TRIP_WASH",
    "SPOOFING", "LAYERING", "QUOTE_STUFFING", "MOMENTUM_IGNITION", "PUMP_AND_DUMP", "PRICE_CRASH",
    "STRUCTURING", "SANCTIONS_HIT", "KYC_LIMIT_BREACH", "UNKNOWN",
  ];
  // Rows kept in the live list: enough to scroll back a while, few enough to stay fast.
  const MAX_ALERT_ROWS = 200;
  const STATS_EVERY_MS = 5000;
  const VIEWS_EVERY_MS = 15000;
  // Most evidence ids one lookup asks for (the reporting view's limit).
  const MAX_EVIDENCE = 200;
  const SVG_NS = "http://www.w3.org/2000/svg";

  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null) continue;
      if (name === "text") node.textContent = String(value);
      else if (name === "className") node.className = value;
      else node.setAttribute(name, String(value));
    }
    for (const child of children) {
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
    return node;
  }

  function formatTime(ms) {
    return ms === null || ms === undefined ? "–" : new Date(ms).toISOString().replace("T", " ").slice(0, 19);
  }

  function formatNumber(value, digits) {
    if (value === null || value === undefined || Number.isNaN(value)) return "–";
    return Number(value).toLocaleString("en-US", { maximumFractionDigits: digits === undefined ? 2 : digits });
  }

  function badge(severity) {
    return el("span", { className: `badge sev-${severity}`, text: severity });
  }

  function note(id, text, isError) {
    const node = $(id);
    node.textContent = text || "";
    node.classList.toggle("error", Boolean(isError));
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  class ApiError extends Error {
    constructor(message, status, body) {
      super(message);
      this.status = status;
      this.body = body;
    }
  }

  async function api(path) {
    const response = await fetch(path, { headers: { Accept: "application/json" } });
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    if (!response.ok) {
      const message = body && body.error ? body.error : `HTTP ${response.status}`;
      throw new ApiError(body && body.parameter ? `${body.parameter}: ${message}` : message, response.status, body);
    }
    return body;
  }

  // --- live alerts -------------------------------------------------------------------------------

  const alerts = new Map(); // alertId -> row
  const alertBody = () => $("alerts").tBodies[0];

  function userButton(userId, testid) {
    if (!userId) return "–";
    const button = el("button", { className: "link", type: "button", "data-testid": testid, text: userId });
    button.addEventListener("click", (event) => {
      event.stopPropagation();
      showUser(userId);
    });
    return button;
  }

  function alertRow(alert, testid, withSymbol) {
    const cells = [
      el("td", { text: formatTime(alert.timestamp) }),
      el("td", {}, badge(alert.severity)),
      el("td", { text: alert.patternType }),
      el("td", {}, userButton(alert.userId, testid === "alert-row" ? "alert-user" : "search-user-link")),
    ];
    if (withSymbol) cells.push(el("td", { text: alert.symbol || "–" }));
    cells.push(el("td", { text: alert.description }));
    const row = el(
      "tr",
      {
        "data-testid": testid,
        "data-alert-id": alert.alertId,
        "data-user-id": alert.userId || "",
        "data-severity": alert.severity,
        "data-pattern": alert.patternType,
      },
      ...cells,
    );
    row.addEventListener("click", () => showAlert(alert, row));
    return row;
  }

  // Live alerts go on top; alerts loaded from the index (newest first) go below what is there. An
  // alert that is merged again (same alertId, more evidence) replaces its row.
  function addAlert(alert, live) {
    const row = alertRow(alert, "alert-row", true);
    row.dataset.source = live ? "live" : "indexed";
    const known = alerts.get(alert.alertId);
    if (known) {
      if (!live) return;
      known.remove();
    }
    if (live) {
      alertBody().prepend(row);
      row.classList.add("fresh");
    } else {
      alertBody().append(row);
    }
    alerts.set(alert.alertId, row);
    while (alerts.size > MAX_ALERT_ROWS) {
      const last = alertBody().lastElementChild;
      alerts.delete(last.dataset.alertId);
      last.remove();
    }
    $("alert-count").textContent = String(alerts.size);
  }

  function setFeed(state) {
    const node = $("feed-status");
    node.textContent = state;
    node.className = `status status-${state === "live" ? "live" : state === "down" ? "down" : "connecting"}`;
  }

  function connect() {
    const source = new EventSource("/api/alerts/stream");
    source.onopen = () => setFeed("live");
    source.onerror = () => {
      // EventSource reconnects by itself unless the server refused the stream outright.
      if (source.readyState === EventSource.CLOSED) {
        setFeed("down");
        setTimeout(connect, 5000);
      } else {
        setFeed("connecting");
      }
    };
    source.addEventListener("alert", (event) => {
      const alert = JSON.parse(event.data);
      addAlert(alert, true);
      countLive(alert);
    });
    source.addEventListener("dropped", (event) => {
      const { count } = JSON.parse(event.data);
      note("alerts-note", `${count} alerts were skipped: this browser fell behind the stream.`, true);
    });
  }

  async function loadRecentAlerts() {
    try {
      const found = await api("/api/reporting/alerts?size=50");
      for (const alert of found.alerts) addAlert(alert, false);
    } catch (error) {
      note("alerts-note", `Earlier alerts unavailable (${error.message}); live alerts still arrive.`);
    }
  }

  // --- worker figures ----------------------------------------------------------------------------

  async function refreshStats() {
    let stats;
    try {
      stats = await api("/api/stats");
    } catch (error) {
      $("workers-up").textContent = "?";
      return;
    }
    $("throughput").textContent = formatNumber(stats.throughputPerSecond, 1);
    $("lag").textContent = formatNumber(stats.consumerLagTotal, 0);
    $("dead-letters").textContent = formatNumber(stats.deadLettersTotal, 0);
    $("analyzed").textContent = formatNumber(stats.analyzed, 0);
    $("workers-up").textContent = `${stats.workersUp} / ${stats.workers.length}`;
    const list = $("workers");
    clear(list);
    for (const worker of stats.workers) {
      const text = worker.up
        ? `${worker.url}: up, partitions ${worker.partitions.join(", ") || "none"}, lag ${worker.consumerLag}`
        : `${worker.url}: down (${worker.error})`;
      list.append(el("li", { className: worker.up ? "up" : "down", "data-testid": "worker", "data-up": worker.up, text }));
    }
    list.append(el("li", { "data-testid": "feed-state", text: `alert feed: ${stats.feed.state}` }));
    const table = $("alerts-by-pattern").tBodies[0];
    clear(table);
    for (const [pattern, count] of Object.entries(stats.alertsByPattern)) {
      table.append(el("tr", { "data-pattern": pattern }, el("td", { text: pattern }), el("td", { text: count })));
    }
  }

  // --- chart: counts over time -------------------------------------------------------------------

  let chart = null; // the last /counts answer, plus live alerts counted into it
  const countedLive = new Set();

  function seriesColor(name, index) {
    return LEVEL_COLORS[name] || OTHER_COLORS[index % OTHER_COLORS.length];
  }

  async function refreshChart() {
    const source = $("chart-source").value;
    const until = Date.now();
    const since = until - Number($("chart-window").value);
    const split = source === "alerts" ? "severity" : "riskLevel";
    try {
      chart = await api(`/api/reporting/counts?source=${source}&split=${split}&since=${since}&until=${until}`);
      countedLive.clear();
      note("chart-note", chart.total ? "" : "Nothing indexed in this window yet.");
    } catch (error) {
      chart = null;
      note("chart-note", `Counts unavailable: ${error.message}`, true);
    }
    drawChart();
  }

  // A live alert is counted into its bucket at once (buckets are added up to its time); the next
  // refresh replaces the figures with the indexed ones.
  function countLive(alert) {
    if (!chart || chart.source !== "alerts" || !chart.buckets.length || countedLive.has(alert.alertId)) return;
    const step = chart.intervalMs;
    const key = Math.floor(alert.timestamp / step) * step;
    const buckets = chart.buckets;
    if (key < buckets[0].time || key > Date.now() + step) return;
    while (buckets[buckets.length - 1].time < key) {
      buckets.push({ time: buckets[buckets.length - 1].time + step, total: 0, counts: {} });
      buckets.shift();
    }
    const bucket = buckets.find((b) => b.time === key);
    if (!bucket) return;
    bucket.counts[alert.severity] = (bucket.counts[alert.severity] || 0) + 1;
    bucket.total += 1;
    chart.total += 1;
    if (!chart.series.includes(alert.severity)) {
      chart.series.push(alert.severity);
      chart.series.sort((a, b) => LEVELS.indexOf(a) - LEVELS.indexOf(b));
    }
    countedLive.add(alert.alertId);
    note("chart-note", "");
    drawChart();
  }

  function drawChart() {
    const box = $("risk-chart");
    clear(box);
    const legend = $("chart-legend");
    clear(legend);
    if (!chart) return;
    const width = Math.max(box.clientWidth, 320);
    const height = 220;
    const left = 36;
    const bottom = 20;
    const top = 8;
    const plot = svg("svg", {
      viewBox: `0 0 ${width} ${height}`,
      "data-testid": "risk-chart-svg",
      "data-total": chart.total,
      role: "img",
      "aria-label": `${chart.source} per ${chart.interval}`,
    });
    const maxTotal = Math.max(1, ...chart.buckets.map((b) => b.total));
    const slot = (width - left - 4) / Math.max(1, chart.buckets.length);
    const scale = (height - top - bottom) / maxTotal;
    plot.append(svg("line", { class: "axis", x1: left, y1: height - bottom, x2: width, y2: height - bottom }));
    plot.append(svg("line", { class: "axis", x1: left, y1: top, x2: left, y2: height - bottom }));
    const label = (x, y, text, anchor) => {
      const node = svg("text", { x, y, "text-anchor": anchor || "start" });
      node.textContent = text;
      plot.append(node);
    };
    label(left - 4, top + 8, String(maxTotal), "end");
    label(left - 4, height - bottom, "0", "end");
    chart.buckets.forEach((bucket, index) => {
      let y = height - bottom;
      const x = left + index * slot + 1;
      const parts = [];
      chart.series.forEach((name, seriesIndex) => {
        const count = bucket.counts[name] || 0;
        if (!count) return;
        const h = count * scale;
        y -= h;
        const bar = svg("rect", {
          x,
          y,
          width: Math.max(1, slot - 2),
          height: h,
          fill: seriesColor(name, seriesIndex),
          "data-testid": "chart-bar",
          "data-series": name,
          "data-count": count,
        });
        parts.push(`${name} ${count}`);
        plot.append(bar);
      });
      if (parts.length) {
        const title = svg("title");
        title.textContent = `${formatTime(bucket.time)}: ${parts.join(", ")}`;
        plot.lastChild.append(title);
      }
    });
    const ticks = [0, Math.floor(chart.buckets.length / 2), chart.buckets.length - 1];
    for (const index of new Set(ticks)) {
      const bucket = chart.buckets[index];
      if (!bucket) continue;
      const anchor = index === 0 ? "start" : index === chart.buckets.length - 1 ? "end" : "middle";
      label(left + index * slot + slot / 2, height - 5, formatTime(bucket.time).slice(11, 16), anchor);
    }
    box.append(plot);
    chart.series.forEach((name, index) => {
      const swatch = el("span", { className: "swatch" });
      swatch.style.background = seriesColor(name, index);
      legend.append(el("span", {}, swatch, name));
    });
  }

  // --- top users ---------------------------------------------------------------------------------

  async function refreshTopUsers() {
    const by = $("top-users-by").value;
    $("top-users-metric").textContent = { max: "max score", sum: "summed score", alerts: "alerts" }[by];
    const body = $("top-users").tBodies[0];
    let found;
    try {
      found = await api(`/api/reporting/top-users?by=${by}&size=10`);
    } catch (error) {
      note("top-users-note", `Top users unavailable: ${error.message}`, true);
      return;
    }
    clear(body);
    for (const user of found.users) {
      const detail =
        by === "alerts"
          ? Object.entries(user.byPattern).map(([p, n]) => `${p} ${n}`).join(", ")
          : `${user.trades} trades, max ${formatNumber(user.maxRiskScore, 3)}`;
      const row = el(
        "tr",
        { "data-testid": "top-user-row", "data-user-id": user.userId },
        el("td", {}, userButton(user.userId, "top-user")),
        el("td", { text: formatNumber(user.value, by === "alerts" ? 0 : 3) }),
        el("td", { text: detail }),
      );
      row.addEventListener("click", () => showUser(user.userId));
      body.append(row);
    }
    note("top-users-note", found.users.length ? "" : "Nothing indexed in the last 24 hours yet.");
  }

  // --- drill-down --------------------------------------------------------------------------------

  let shown = 0; // a later click wins over a slower earlier answer

  function showPanel(which) {
    $("detail-empty").hidden = true;
    $("user-detail").hidden = which !== "user";
    $("alert-detail").hidden = which !== "alert";
    $("detail").scrollIntoView({ block: "nearest" });
  }

  function fact(list, name, value, testid) {
    list.append(el("dt", { text: name }), el("dd", { "data-testid": testid, text: value }));
  }

  async function showUser(userId) {
    const token = ++shown;
    showPanel("user");
    $("user-detail-id").textContent = userId;
    const facts = $("user-window");
    clear(facts);
    clear($("user-history-chart"));
    clear($("user-alerts").tBodies[0]);
    note("user-detail-note", "Loading…");
    note("user-history-note", "");
    const path = encodeURIComponent(userId);
    const [state, history] = await Promise.allSettled([
      api(`/api/users/${path}`),
      api(`/api/reporting/users/${path}/history?size=200&alerts=20`),
    ]);
    if (token !== shown) return;
    if (state.status === "fulfilled") {
      const s = state.value;
      note("user-detail-note", "");
      fact(facts, "trades analyzed", formatNumber(s.tradeCount, 0), "user-trade-count");
      fact(facts, "trades in window", formatNumber(s.recentTrades, 0), "user-recent-trades");
      fact(facts, "latest event time", formatTime(s.watermark), "user-watermark");
      fact(facts, "notional mean (EWMA)", formatNumber(s.notionalMean), "user-notional-mean");
      fact(facts, "notional std (EWMA)", formatNumber(Math.sqrt(Math.max(0, s.notionalVariance || 0))), "user-notional-std");
      fact(facts, "notional in last 24 h", formatNumber(s.dayNotional), "user-day-notional");
      const symbols = Object.entries(s.symbols).map(([sym, price]) => `${sym} @ ${formatNumber(price)}`);
      fact(facts, "reference prices", symbols.join(", ") || "–", "user-symbols");
      const fired = Object.entries(s.lastAlerts).map(([key, at]) => `${key} at ${formatTime(at)}`);
      fact(facts, "last alerts", fired.join("; ") || "–", "user-last-alerts");
      fact(facts, "owner", `partition ${s.lastApplied.partition}, offset ${s.lastApplied.offset}`, "user-owner");
    } else if (state.reason.status === 404) {
      note("user-detail-note", "No worker holds a window for this user (no trade analyzed yet).");
    } else {
      note("user-detail-note", `Window unavailable: ${state.reason.message}`, true);
    }
    if (history.status === "fulfilled") {
      drawHistory(history.value);
    } else {
      note("user-history-note", `History unavailable: ${history.reason.message}`, true);
    }
  }

  function drawHistory(history) {
    const points = history.trades.filter((t) => t.riskScore !== null && t.timestamp !== null);
    const summary = history.summary;
    const levels = LEVELS.filter((l) => summary.byLevel[l]).map((l) => `${l} ${summary.byLevel[l]}`);
    note(
      "user-history-note",
      points.length
        ? `${summary.trades} trades indexed, max score ${formatNumber(summary.maxRiskScore, 3)}, ${levels.join(", ")}`
        : "Nothing indexed for this user yet.",
    );
    if (points.length) {
      const box = $("user-history-chart");
      const width = Math.max(box.clientWidth, 320);
      const height = 120;
      const t0 = points[0].timestamp;
      const span = Math.max(1, points[points.length - 1].timestamp - t0);
      const x = (t) => 30 + ((t - t0) / span) * (width - 40);
      const y = (score) => height - 10 - Math.min(1, score) * (height - 20);
      const plot = svg("svg", { viewBox: `0 0 ${width} ${height}`, "data-testid": "user-history-svg" });
      plot.append(svg("line", { class: "axis", x1: 30, y1: y(0), x2: width, y2: y(0) }));
      for (const score of [0, 1]) {
        const tick = svg("text", { x: 24, y: y(score) + 3, "text-anchor": "end" });
        tick.textContent = String(score);
        plot.append(tick);
      }
      plot.append(
        svg("polyline", {
          points: points.map((p) => `${x(p.timestamp)},${y(p.riskScore)}`).join(" "),
          fill: "none",
          stroke: "#2a5bd7",
          "stroke-width": 1.5,
        }),
      );
      for (const p of points) {
        const dot = svg("circle", { cx: x(p.timestamp), cy: y(p.riskScore), r: 3, fill: LEVEL_COLORS[p.riskLevel] || "#999" });
        const title = svg("title");
        title.textContent = `${p.tradeId} ${formatTime(p.timestamp)} score ${formatNumber(p.riskScore, 3)} ${p.riskLevel}`;
        dot.append(title);
        plot.append(dot);
      }
      box.append(plot);
    }
    const body = $("user-alerts").tBodies[0];
    for (const alert of history.alerts) body.append(alertRow(alert, "user-alert-row", false));
  }

  async function showAlert(alert, row) {
    const token = ++shown;
    showPanel("alert");
    document.querySelectorAll("tr.selected").forEach((r) => r.classList.remove("selected"));
    if (row) row.classList.add("selected");
    $("alert-detail-pattern").textContent = alert.patternType;
    const severity = $("alert-detail-severity");
    severity.textContent = alert.severity;
    severity.className = `badge sev-${alert.severity}`;
    $("alert-detail-description").textContent = alert.description;
    $("alert-detail-action").textContent = alert.recommendedAction;
    const facts = $("alert-detail-facts");
    clear(facts);
    fact(facts, "alert id", alert.alertId, "alert-detail-id");
    facts.append(el("dt", { text: "user" }), el("dd", {}, userButton(alert.userId, "alert-detail-user")));
    fact(facts, "symbol", alert.symbol || "–", "alert-detail-symbol");
    fact(facts, "event time", formatTime(alert.timestamp), "alert-detail-time");
    fact(facts, "rule version", alert.ruleVersion, "alert-detail-rule-version");
    const features = $("alert-features").tBodies[0];
    clear(features);
    for (const f of alert.features || []) {
      const threshold = f.threshold === null || f.threshold === undefined ? "–" : `${f.comparison || ""} ${formatNumber(f.threshold, 4)}`;
      features.append(el("tr", {}, el("td", { text: f.name }), el("td", { text: formatNumber(f.value, 4) }), el("td", { text: threshold })));
    }
    drawOrderStory(alert.orderActivity || []);
    const evidence = $("evidence").tBodies[0];
    clear(evidence);
    const ids = (alert.evidence || []).slice(0, MAX_EVIDENCE);
    if (!ids.length) {
      note("evidence-note", "This alert names no evidence trades.");
      return;
    }
    note("evidence-note", `Looking up ${ids.length} trades…`);
    let found;
    try {
      found = await api(`/api/reporting/trades?ids=${encodeURIComponent(ids.join(","))}`);
    } catch (error) {
      if (token === shown) note("evidence-note", `Evidence unavailable: ${error.message}`, true);
      return;
    }
    if (token !== shown) return;
    const byId = new Map(found.trades.map((t) => [t.originalTrade.tradeId, t]));
    for (const id of ids) {
      const t = byId.get(id);
      if (!t) {
        evidence.append(
          el("tr", { className: "missing", "data-testid": "evidence-missing", "data-trade-id": id },
            el("td", { text: id }), el("td", { colspan: 9, text: "not indexed yet" })),
        );
        continue;
      }
      const trade = t.originalTrade;
      evidence.append(
        el(
          "tr",
          { "data-testid": "evidence-row", "data-trade-id": id },
          el("td", { text: id }),
          el("td", { text: formatTime(t.eventTimestamp) }),
          el("td", { text: trade.symbol }),
          el("td", { text: trade.side }),
          el("td", { text: formatNumber(trade.quantity, 6) }),
          el("td", { text: formatNumber(trade.price, 4) }),
          el("td", { text: formatNumber(trade.notional) }),
          el("td", { text: formatNumber(t.riskScore, 3) }),
          el("td", {}, badge(t.finalRiskLevel)),
          el("td", { text: (t.triggeredPatterns || []).join(", ") || "–" }),
        ),
      );
    }
    const missing = found.missing.length;
    note("evidence-note", missing ? `${missing} of ${ids.length} trades are not in Elasticsearch yet.` : "");
  }

  // --- order book story ---------------------------------------------------------------------------

  const SIDE_COLORS = { BUY: "#1b8a4e", SELL: "#c8382f" };

  // An order-flow alert's activity (its orders' lives and the account's fills) as price against
  // time: a step line per order at its price from placement to cancel or fill, markers for each
  // event, triangles for the fills; and the same as a table.
  function drawOrderStory(activity) {
    const box = $("order-story");
    const chart = $("order-story-chart");
    const rows = $("order-activity").tBodies[0];
    clear(chart);
    clear(rows);
    box.hidden = !activity.length;
    if (!activity.length) return;
    const events = activity.slice().sort((a, b) => a.timestamp - b.timestamp);
    for (const e of events) {
      rows.append(
        el("tr", { "data-testid": "order-activity-row", "data-kind": e.kind, "data-event-id": e.eventId },
          el("td", { text: formatTime(e.timestamp) }), el("td", { text: e.kind }),
          el("td", { text: e.orderId || "–" }), el("td", { text: e.side }),
          el("td", { text: formatNumber(e.price, 6) }), el("td", { text: formatNumber(e.quantity, 6) }),
          el("td", { text: formatNumber(e.remainingQuantity, 6) })),
      );
    }
    const width = Math.max(chart.clientWidth, 480);
    const height = 260;
    const t0 = events[0].timestamp;
    const t1 = events[events.length - 1].timestamp;
    const span = Math.max(1000, t1 - t0);
    const prices = events.map((e) => e.price);
    const low = Math.min(...prices);
    const high = Math.max(...prices);
    const pad = (high - low) * 0.15 || Math.abs(high) * 0.001 || 1;
    const x = (t) => 70 + ((t - t0) / span) * (width - 90);
    const y = (p) => height - 25 - ((p - (low - pad)) / (high - low + 2 * pad)) * (height - 45);
    const plot = svg("svg", {
      viewBox: `0 0 ${width} ${height}`,
      "data-testid": "order-story-svg",
      "data-events": events.length,
    });
    plot.append(svg("line", { class: "axis", x1: 70, y1: height - 25, x2: width - 10, y2: height - 25 }));
    plot.append(svg("line", { class: "axis", x1: 70, y1: 10, x2: 70, y2: height - 25 }));
    for (const value of [low, high]) {
      const label = svg("text", { x: 64, y: y(value) + 3, "text-anchor": "end" });
      label.textContent = formatNumber(value, 6);
      plot.append(label);
    }
    for (const [t, anchor] of [[t0, "start"], [t1, "end"]]) {
      const label = svg("text", { x: x(t), y: height - 8, "text-anchor": anchor });
      label.textContent = formatTime(t).slice(11);
      plot.append(label);
    }
    const orders = new Map();
    for (const e of events) {
      if (e.kind === "TRADE") continue;
      if (!orders.has(e.orderId)) orders.set(e.orderId, []);
      orders.get(e.orderId).push(e);
    }
    for (const [orderId, life] of orders) {
      const side = life[0].side;
      const last = life[life.length - 1];
      const filled = life.some((e) => e.kind === "FILLED");
      const end = last.kind === "CANCELLED" || (last.kind === "FILLED" && last.remainingQuantity === 0) ? last.kind : "OPEN";
      const group = svg("g", {
        "data-testid": "order-life",
        "data-order-id": orderId,
        "data-side": side,
        "data-end": end,
        "data-events": life.length,
      });
      const points = [];
      life.forEach((e, i) => {
        const next = life[i + 1];
        const until = next ? next.timestamp : end === "OPEN" ? t1 : e.timestamp;
        points.push(`${x(e.timestamp)},${y(e.price)}`, `${x(until)},${y(e.price)}`);
      });
      const line = svg("polyline", {
        points: points.join(" "),
        fill: "none",
        stroke: SIDE_COLORS[side] || "#555",
        "stroke-width": 2,
      });
      if (end === "CANCELLED" && !filled) line.setAttribute("stroke-dasharray", "5 3");
      const title = svg("title");
      title.textContent = `order ${orderId} ${side} ${formatNumber(life[0].quantity, 6)} @ ${formatNumber(life[0].price, 6)}: ${life.map((e) => e.kind).join(" → ")}`;
      line.append(title);
      group.append(line);
      const label = svg("text", { x: x(life[0].timestamp) + 6, y: y(life[0].price) - 6, "data-testid": "order-label" });
      label.textContent = `${side} ${formatNumber(life[0].quantity, 6)}`;
      group.append(label);
      for (const e of life) group.append(marker(e, x(e.timestamp), y(e.price), SIDE_COLORS[side] || "#555"));
      plot.append(group);
    }
    for (const e of events) {
      if (e.kind !== "TRADE") continue;
      const cx = x(e.timestamp);
      const cy = y(e.price);
      const up = e.side === "BUY";
      const fill = svg("path", {
        d: up ? `M${cx - 6},${cy + 5} L${cx + 6},${cy + 5} L${cx},${cy - 6} Z` : `M${cx - 6},${cy - 5} L${cx + 6},${cy - 5} L${cx},${cy + 6} Z`,
        fill: SIDE_COLORS[e.side] || "#555",
        "data-testid": "order-fill",
        "data-trade-id": e.eventId,
        "data-side": e.side,
      });
      const title = svg("title");
      title.textContent = `fill ${e.eventId}: ${e.side} ${formatNumber(e.quantity, 6)} @ ${formatNumber(e.price, 6)} at ${formatTime(e.timestamp)}`;
      fill.append(title);
      plot.append(fill);
    }
    chart.append(plot);
  }

  function marker(event, cx, cy, color) {
    let shape;
    if (event.kind === "PLACED") {
      shape = svg("circle", { cx, cy, r: 4, fill: "#fff", stroke: color, "stroke-width": 2 });
    } else if (event.kind === "AMENDED") {
      shape = svg("rect", { x: cx - 4, y: cy - 4, width: 8, height: 8, fill: "#fff", stroke: color, "stroke-width": 2 });
    } else if (event.kind === "CANCELLED") {
      shape = svg("path", { d: `M${cx - 5},${cy - 5} L${cx + 5},${cy + 5} M${cx - 5},${cy + 5} L${cx + 5},${cy - 5}`, stroke: color, "stroke-width": 2 });
    } else {
      shape = svg("circle", { cx, cy, r: 4, fill: color });
    }
    shape.setAttribute("data-testid", "order-event");
    shape.setAttribute("data-kind", event.kind);
    const title = svg("title");
    title.textContent = `${event.kind} ${event.eventId} at ${formatTime(event.timestamp)}: ${formatNumber(event.quantity, 6)} @ ${formatNumber(event.price, 6)}`;
    shape.append(title);
    return shape;
  }

  // --- search ------------------------------------------------------------------------------------

  async function search(event) {
    event.preventDefault();
    const params = new URLSearchParams();
    for (const [name, value] of new FormData(event.target)) {
      if (String(value).trim()) params.set(name, String(value).trim());
    }
    params.set("size", "50");
    const body = $("search-results").tBodies[0];
    clear(body);
    try {
      const found = await api(`/api/reporting/alerts?${params}`);
      for (const alert of found.alerts) body.append(alertRow(alert, "search-row", false));
      note("search-note", `${found.total} alerts${found.total > found.alerts.length ? `, the newest ${found.alerts.length} shown` : ""}`);
    } catch (error) {
      note("search-note", error.message, true);
    }
  }

  // --- start -------------------------------------------------------------------------------------

  function refreshViews() {
    refreshChart();
    refreshTopUsers();
  }

  function start() {
    const patterns = $("search-pattern");
    for (const pattern of PATTERNS) patterns.append(el("option", { text: pattern }));
    $("alert-search").addEventListener("submit", search);
    $("chart-source").addEventListener("change", refreshChart);
    $("chart-window").addEventListener("change", refreshChart);
    $("top-users-by").addEventListener("change", refreshTopUsers);
    $("refresh").addEventListener("click", () => {
      refreshStats();
      refreshViews();
    });
    window.addEventListener("resize", drawChart);
    connect();
    loadRecentAlerts();
    refreshStats();
    refreshViews();
    setInterval(refreshStats, STATS_EVERY_MS);
    setInterval(refreshViews, VIEWS_EVERY_MS);
  }

  start();
})();
