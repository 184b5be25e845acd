// The riskengine dashboard: plain browser JavaScript, no build step, no outside resources.
// Live alerts come from /api/alerts/stream (Server-Sent Events); the worker figures from /api/stats;
// the chart, top users, search and evidence from the reporting views (/api/reporting/...); a user's
// detection window from /api/users/{id}; a symbol's market (price, volume, its alerts) from
// /api/reporting/market. Every value from the server goes into the page through textContent, never
// as HTML. The live list's order and minimum priority are the page URL's `sort` and `minPriority`
// (the controls keep them there), passed through to /api/reporting/alerts.
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

  // --- drawing helpers shared by the charts ------------------------------------------------------

  // The linear map of [d0, d1] onto [r0, r1]; an empty domain maps everything to r0.
  function scale(d0, d1, r0, r1) {
    const span = d1 - d0;
    return (value) => (span ? r0 + ((value - d0) / span) * (r1 - r0) : r0);
  }

  // [low, high] of the values with a margin, so the extreme points do not sit on the frame.
  function paddedRange(values) {
    const low = Math.min(...values);
    const high = Math.max(...values);
    const pad = (high - low) * 0.15 || Math.abs(high) * 0.001 || 1;
    return [low - pad, high + pad];
  }

  // The two axes of a plot area: the value axis at `left`, the time axis at `bottom`.
  function axes(plot, left, top, right, bottom) {
    plot.append(svg("line", { class: "axis", x1: left, y1: bottom, x2: right, y2: bottom }));
    plot.append(svg("line", { class: "axis", x1: left, y1: top, x2: left, y2: bottom }));
  }

  function label(plot, x, y, text, anchor, attrs) {
    const node = svg("text", { x, y, "text-anchor": anchor || "start", ...attrs });
    node.textContent = text;
    plot.append(node);
    return node;
  }

  // `node` with a tooltip: an SVG <title>, which the browser shows on hover (first child, where
  // SVG looks for it).
  function titled(node, text) {
    const title = svg("title");
    title.textContent = text;
    node.prepend(title);
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

  // An alert's priority (0-100; null in alerts from engines before it existed) and its band, the
  // reporting view's bands: >= 80 red, >= 50 amber, below grey.
  const hasPriority = (alert) => typeof alert.priority === "number";

  function priorityBand(priority) {
    if (typeof priority !== "number") return "none";
    return priority >= 80 ? "high" : priority >= 50 ? "medium" : "low";
  }

  function priorityBadge(priority) {
    const band = priorityBand(priority);
    return el("span", {
      className: `badge prio prio-${band}`,
      "data-testid": "priority",
      "data-band": band,
      title: band === "none" ? "no priority (an alert from before priorities)" : `priority ${priority} of 100`,
      text: band === "none" ? "–" : priority,
    });
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

  // A market-level alert (PUMP_AND_DUMP, PRICE_CRASH, ...) names a symbol and no account.
  const isMarketAlert = (alert) => !alert.userId && Boolean(alert.symbol);

  // The market view of the alert's symbol around the alert's time.
  function symbolButton(alert, testid) {
    if (!alert.symbol) return "–";
    const button = el("button", { className: "link", type: "button", "data-testid": testid, text: alert.symbol });
    button.addEventListener("click", (event) => {
      event.stopPropagation();
      showMarket(alert.symbol, alert.timestamp, alert.alertId);
    });
    return button;
  }

  // Test ids of the user and symbol links in each table of alerts.
  const ROW_LINKS = {
    "alert-row": ["alert-user", "alert-symbol"],
    "search-row": ["search-user-link", "search-symbol-link"],
    "user-alert-row": ["search-user-link", "user-alert-symbol"],
    "market-alert-row": ["market-alert-user", "market-alert-symbol"],
  };

  function alertRow(alert, testid) {
    const [userLink, symbolLink] = ROW_LINKS[testid];
    const user = isMarketAlert(alert)
      ? el("span", { className: "market-tag", text: "market" })
      : userButton(alert.userId, userLink);
    const row = el(
      "tr",
      {
        "data-testid": testid,
        "data-alert-id": alert.alertId,
        "data-user-id": alert.userId || "",
        "data-symbol": alert.symbol || "",
        "data-market": isMarketAlert(alert),
        "data-severity": alert.severity,
        "data-pattern": alert.patternType,
        "data-priority": hasPriority(alert) ? alert.priority : "",
        "data-timestamp": alert.timestamp,
      },
      el("td", { text: formatTime(alert.timestamp) }),
      el("td", {}, priorityBadge(alert.priority)),
      el("td", {}, badge(alert.severity)),
      el("td", { text: alert.patternType }),
      el("td", {}, user),
      el("td", {}, symbolButton(alert, symbolLink)),
      el("td", { text: alert.description }),
    );
    row.addEventListener("click", () => showAlert(alert, row, testid === "market-alert-row"));
    return row;
  }

  // The live list's order ("time": newest first; "priority": highest first, then newest, alerts
  // without a priority last) and minimum priority (null: every alert; else alerts without a
  // priority are left out too, as the reporting view does).
  // `refused`: the reporting view refused them (a bad URL value), so nothing is listed.
  const alertView = { sort: "time", minPriority: null, refused: false };
  let alertsLoaded = 0; // a later reload wins over a slower earlier answer
  // The latest live alerts, listed again after a reload (the index may not have them yet).
  const liveSeen = new Map();

  function shownInList(alert) {
    if (alertView.refused) return false;
    return alertView.minPriority === null || (hasPriority(alert) && alert.priority >= alertView.minPriority);
  }

  // True when the alert of `row` goes after `alert` in the list's order.
  function ranksBelow(row, alert) {
    const rowPriority = row.dataset.priority === "" ? -1 : Number(row.dataset.priority);
    const priority = hasPriority(alert) ? alert.priority : -1;
    if (alertView.sort === "priority" && rowPriority !== priority) return rowPriority < priority;
    const rowTime = Number(row.dataset.timestamp);
    if (rowTime !== alert.timestamp) return rowTime < alert.timestamp;
    return row.dataset.alertId > alert.alertId;
  }

  // Newest first: live alerts go on top, alerts loaded from the index (newest first) below what is
  // there, live alerts listed again after a reload to their place. Highest priority first: every
  // alert goes to its place. An alert that is merged again (same alertId, more evidence) replaces
  // its row; one below the minimum priority is not listed.
  function addAlert(alert, live, relisted) {
    const known = alerts.get(alert.alertId);
    if (known && !live) return;
    if (known) {
      known.remove();
      alerts.delete(alert.alertId);
    }
    if (!shownInList(alert)) {
      $("alert-count").textContent = String(alerts.size);
      return;
    }
    const row = alertRow(alert, "alert-row");
    row.dataset.source = live ? "live" : "indexed";
    if (alertView.sort === "priority" || relisted) {
      const next = Array.from(alertBody().rows).find((other) => ranksBelow(other, alert));
      alertBody().insertBefore(row, next || null);
    } else if (live) {
      alertBody().prepend(row);
    } else {
      alertBody().append(row);
    }
    if (live && !relisted) row.classList.add("fresh");
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
      liveSeen.delete(alert.alertId);
      liveSeen.set(alert.alertId, alert);
      if (liveSeen.size > MAX_ALERT_ROWS) liveSeen.delete(liveSeen.keys().next().value);
      addAlert(alert, true);
      countLive(alert);
    });
    source.addEventListener("dropped", (event) => {
      const { count } = JSON.parse(event.data);
      note("alerts-note", `${count} alerts were skipped: this browser fell behind the stream.`, true);
    });
  }

  // The order and minimum priority of the page URL (`?sort=priority&minPriority=80`) into the
  // controls; a value the controls cannot show is passed through as it is, for the reporting view
  // to accept or explain.
  function readAlertView() {
    const params = new URLSearchParams(window.location.search);
    const sort = params.get("sort");
    const minimum = params.get("minPriority");
    alertView.sort = sort === null ? "time" : sort;
    alertView.minPriority = minimum === null || minimum.trim() === "" ? null : minimum.trim();
    if (alertView.sort === "time" || alertView.sort === "priority") $("alerts-sort").value = alertView.sort;
    $("alerts-min-priority").value = alertView.minPriority === null ? "" : alertView.minPriority;
  }

  // The view's parameters, as the page URL and the reporting view take them (defaults left out).
  function viewParams() {
    const params = new URLSearchParams();
    if (alertView.sort !== "time") params.set("sort", alertView.sort);
    if (alertView.minPriority !== null) params.set("minPriority", String(alertView.minPriority));
    return params;
  }

  // The controls changed: into the page URL (reloading or sharing it keeps the view), then the
  // list again from the index, in the new order and with the new minimum.
  function changeAlertView() {
    alertView.sort = $("alerts-sort").value;
    const minimum = $("alerts-min-priority").value.trim();
    alertView.minPriority = minimum === "" ? null : minimum;
    const params = new URLSearchParams(window.location.search);
    params.delete("sort");
    params.delete("minPriority");
    for (const [name, value] of viewParams()) params.set(name, value);
    const query = params.toString();
    window.history.replaceState(null, "", `${window.location.pathname}${query ? `?${query}` : ""}`);
    loadRecentAlerts();
  }

  async function loadRecentAlerts() {
    const token = ++alertsLoaded;
    let found;
    try {
      found = await api(`/api/reporting/alerts?size=50&${viewParams()}`);
    } catch (error) {
      if (token !== alertsLoaded) return;
      if (error.status === 400) {
        // The order or minimum is refused: no list is better than one that seems to follow it.
        alertView.refused = true;
        clear(alertBody());
        alerts.clear();
        $("alert-count").textContent = "0";
        note("alerts-note", `Alerts not listed: ${error.message}`, true);
      } else {
        note("alerts-note", `Earlier alerts unavailable (${error.message}); live alerts still arrive.`);
      }
      return;
    }
    if (token !== alertsLoaded) return;
    note("alerts-note", "");
    alertView.refused = false;
    // A valid minimum from the URL is a number from here on (live alerts compare with it).
    alertView.minPriority = found.minPriority;
    alertView.sort = found.sort;
    clear(alertBody());
    alerts.clear();
    $("alert-count").textContent = "0";
    for (const alert of found.alerts) addAlert(alert, false);
    for (const alert of liveSeen.values()) if (!alerts.has(alert.alertId)) addAlert(alert, true, true);
    $("alerts").dataset.sort = found.sort;
    $("alerts").dataset.minPriority = found.minPriority === null ? "" : found.minPriority;
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
    const pixelsPerAlert = (height - top - bottom) / maxTotal;
    axes(plot, left, top, width, height - bottom);
    label(plot, left - 4, top + 8, String(maxTotal), "end");
    label(plot, left - 4, height - bottom, "0", "end");
    chart.buckets.forEach((bucket, index) => {
      let y = height - bottom;
      const x = left + index * slot + 1;
      const parts = [];
      chart.series.forEach((name, seriesIndex) => {
        const count = bucket.counts[name] || 0;
        if (!count) return;
        const h = count * pixelsPerAlert;
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
      if (parts.length) titled(plot.lastChild, `${formatTime(bucket.time)}: ${parts.join(", ")}`);
    });
    const ticks = [0, Math.floor(chart.buckets.length / 2), chart.buckets.length - 1];
    for (const index of new Set(ticks)) {
      const bucket = chart.buckets[index];
      if (!bucket) continue;
      const anchor = index === 0 ? "start" : index === chart.buckets.length - 1 ? "end" : "middle";
      label(plot, left + index * slot + slot / 2, height - 5, formatTime(bucket.time).slice(11, 16), anchor);
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

  // Shows the named parts of the detail panel ("user", "market", "alert") and hides the others.
  function showPanel(...which) {
    $("detail-empty").hidden = true;
    for (const part of ["user", "market", "alert"]) $(`${part}-detail`).hidden = !which.includes(part);
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
      const x = scale(t0, t0 + span, 30, width - 10);
      const toY = scale(0, 1, height - 10, 10);
      const y = (score) => toY(Math.min(1, score));
      const plot = svg("svg", { viewBox: `0 0 ${width} ${height}`, "data-testid": "user-history-svg" });
      plot.append(svg("line", { class: "axis", x1: 30, y1: y(0), x2: width, y2: y(0) }));
      for (const score of [0, 1]) label(plot, 24, y(score) + 3, String(score), "end");
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
        plot.append(titled(dot, `${p.tradeId} ${formatTime(p.timestamp)} score ${formatNumber(p.riskScore, 3)} ${p.riskLevel}`));
      }
      box.append(plot);
    }
    const body = $("user-alerts").tBodies[0];
    for (const alert of history.alerts) body.append(alertRow(alert, "user-alert-row"));
  }

  // `inMarket`: the alert was picked in the market view, which stays as it is above it.
  async function showAlert(alert, row, inMarket) {
    const token = ++shown;
    if (inMarket) {
      showPanel("market", "alert");
      market.alertId = alert.alertId;
      drawMarket();
    } else if (isMarketAlert(alert)) {
      // A market alert opens its symbol's market around its time above its own details.
      showPanel("market", "alert");
      loadMarket(alert.symbol, alert.timestamp, alert.alertId);
    } else {
      showPanel("alert");
    }
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
    facts.append(el("dt", { text: "symbol" }), el("dd", {}, symbolButton(alert, "alert-detail-symbol")));
    fact(facts, "event time", formatTime(alert.timestamp), "alert-detail-time");
    facts.append(el("dt", { text: "priority" }), el("dd", { "data-testid": "alert-detail-priority" }, priorityBadge(alert.priority)));
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
            el("td", { text: id }), el("td", { colspan: 10, text: "not indexed yet" })),
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
          // The accounts behind a market alert are the users of its evidence trades.
          el("td", {}, userButton(trade.userId, "evidence-user")),
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
    const x = scale(t0, t0 + span, 70, width - 20);
    const y = scale(...paddedRange(prices), height - 25, 20);
    const plot = svg("svg", {
      viewBox: `0 0 ${width} ${height}`,
      "data-testid": "order-story-svg",
      "data-events": events.length,
    });
    axes(plot, 70, 10, width - 10, height - 25);
    for (const value of [Math.min(...prices), Math.max(...prices)]) {
      label(plot, 64, y(value) + 3, formatNumber(value, 6), "end");
    }
    for (const [t, anchor] of [[t0, "start"], [t1, "end"]]) label(plot, x(t), height - 8, formatTime(t).slice(11), anchor);
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
      titled(line, `order ${orderId} ${side} ${formatNumber(life[0].quantity, 6)} @ ${formatNumber(life[0].price, 6)}: ${life.map((e) => e.kind).join(" → ")}`);
      group.append(line);
      label(group, x(life[0].timestamp) + 6, y(life[0].price) - 6, `${side} ${formatNumber(life[0].quantity, 6)}`, "start", {
        "data-testid": "order-label",
      });
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
      plot.append(titled(fill, `fill ${e.eventId}: ${e.side} ${formatNumber(e.quantity, 6)} @ ${formatNumber(e.price, 6)} at ${formatTime(e.timestamp)}`));
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
    return titled(shape, `${event.kind} ${event.eventId} at ${formatTime(event.timestamp)}: ${formatNumber(event.quantity, 6)} @ ${formatNumber(event.price, 6)}`);
  }

  // --- market view ---------------------------------------------------------------------------------

  // The market shown: its symbol, the time it is centred on (an alert's) and that alert's id.
  let market = null;
  let marketShown = 0; // a later market wins over a slower earlier answer
  let marketAnswer = null; // the last /market answer, redrawn on resize

  // The window of `span` ms around `at`: mostly before it (what led to an alert), a quarter after,
  // ending no later than now unless `at` itself is later.
  function marketWindow(at, span) {
    const now = Date.now();
    const until = Math.round(at > now ? at + span / 4 : Math.min(at + span / 4, now));
    return [until - span, until];
  }

  function showMarket(symbol, at, alertId) {
    ++shown; // an alert or user still loading must not take the panel back
    showPanel("market");
    document.querySelectorAll("tr.selected").forEach((r) => r.classList.remove("selected"));
    loadMarket(symbol, at, alertId);
  }

  async function loadMarket(symbol, at, alertId) {
    if (symbol !== undefined) market = { symbol, at, alertId };
    if (!market) return;
    const token = ++marketShown;
    const [since, until] = marketWindow(market.at, Number($("market-window").value));
    const scope = $("market-account-alerts").checked ? "all" : "market";
    $("market-symbol").textContent = market.symbol;
    $("market-range").textContent = `${formatTime(since)} – ${formatTime(until)}`;
    clear($("market-chart"));
    clear($("market-summary"));
    clear($("market-alerts").tBodies[0]);
    clear($("market-accounts").tBodies[0]);
    marketAnswer = null;
    note("market-note", "Loading…");
    const params = new URLSearchParams({ symbol: market.symbol, since, until, scope, alerts: "100" });
    let answer;
    try {
      answer = await api(`/api/reporting/market?${params}`);
    } catch (error) {
      if (token === marketShown) note("market-note", `Market unavailable: ${error.message}`, true);
      return;
    }
    if (token !== marketShown) return;
    marketAnswer = answer;
    const s = answer.summary;
    note("market-note", s.trades ? "" : "No trade of this symbol is indexed in this window.");
    const facts = $("market-summary");
    fact(facts, "trades", formatNumber(s.trades, 0), "market-trades");
    fact(facts, "notional volume", formatNumber(s.volume), "market-volume");
    fact(facts, "price (volume-weighted)", formatNumber(s.price, 6), "market-price");
    fact(facts, "low – high", `${formatNumber(s.low, 6)} – ${formatNumber(s.high, 6)}`, "market-low-high");
    fact(facts, "interval", answer.interval, "market-interval");
    const byPattern = Object.entries(answer.alertsByPattern).map(([p, n]) => `${p} ${n}`);
    fact(facts, scope === "all" ? "alerts" : "market alerts", `${answer.alertsTotal}${byPattern.length ? ` (${byPattern.join(", ")})` : ""}`, "market-alerts-total");
    for (const alert of answer.alerts) {
      const row = alertRow(alert, "market-alert-row");
      if (alert.alertId === market.alertId) row.classList.add("selected");
      $("market-alerts").tBodies[0].append(row);
    }
    for (const account of answer.accounts) {
      $("market-accounts").tBodies[0].append(
        el("tr", { "data-testid": "market-account-row", "data-user-id": account.userId },
          el("td", {}, userButton(account.userId, "market-account")),
          el("td", { text: formatNumber(account.trades, 0) }),
          el("td", { text: formatNumber(account.volume) })),
      );
    }
    drawMarket();
  }

  // Price against time above volume against time, on one time axis: the volume-weighted price of
  // each interval as a line through its low-high band, the notional volume as bars, the alerts as
  // markers at their time (market alerts as diamonds on top, account alerts as dots), and a dashed
  // line at the time the view is centred on.
  function drawMarket() {
    const box = $("market-chart");
    clear(box);
    if (!marketAnswer) return;
    const answer = marketAnswer;
    const width = Math.max(box.clientWidth, 480);
    const height = 300;
    const left = 70;
    const right = width - 10;
    const [priceTop, priceBottom, volumeTop, volumeBottom] = [22, 185, 200, 272];
    const x = scale(answer.since, answer.until, left, right);
    const traded = answer.buckets.filter((b) => b.trades > 0 && b.price !== null);
    const plot = svg("svg", {
      viewBox: `0 0 ${width} ${height}`,
      "data-testid": "market-svg",
      "data-symbol": answer.symbol,
      "data-buckets": answer.buckets.length,
      "data-traded-buckets": traded.length,
      role: "img",
      "aria-label": `${answer.symbol}: price and volume per ${answer.interval}`,
    });
    axes(plot, left, priceTop, right, priceBottom);
    axes(plot, left, volumeTop, right, volumeBottom);
    label(plot, left - 6, volumeTop + 8, "volume", "end");
    const mid = (answer.since + answer.until) / 2;
    for (const [t, anchor] of [[answer.since, "start"], [mid, "middle"], [answer.until, "end"]]) {
      label(plot, x(t), height - 10, formatTime(t).slice(5, 16), anchor);
    }
    // A bucket's figures are drawn at its middle, so bars and points line up with their interval.
    const centre = (b) => x(Math.min(answer.until, Math.max(answer.since, b.time + answer.intervalMs / 2)));
    const slot = Math.max(1, ((right - left) * answer.intervalMs) / Math.max(1, answer.until - answer.since) - 1);
    if (traded.length) {
      const [low, high] = paddedRange(traded.flatMap((b) => [b.low, b.high]));
      const y = scale(low, high, priceBottom, priceTop);
      for (const value of [answer.summary.low, answer.summary.high]) label(plot, left - 6, y(value) + 3, formatNumber(value, 6), "end");
      const band = traded.map((b) => `${centre(b)},${y(b.high)}`).concat(traded.slice().reverse().map((b) => `${centre(b)},${y(b.low)}`));
      plot.append(svg("polygon", { points: band.join(" "), fill: "#2a5bd7", "fill-opacity": 0.12, stroke: "none", "data-testid": "market-band" }));
      plot.append(
        svg("polyline", {
          points: traded.map((b) => `${centre(b)},${y(b.price)}`).join(" "),
          fill: "none",
          stroke: "#2a5bd7",
          "stroke-width": 1.5,
          "data-testid": "market-price-line",
          "data-points": traded.length,
        }),
      );
      const maxVolume = Math.max(...traded.map((b) => b.volume));
      const volume = scale(0, maxVolume || 1, volumeBottom, volumeTop);
      label(plot, left - 6, volumeTop + 20, formatNumber(maxVolume, 0), "end");
      for (const b of traded) {
        const text = `${formatTime(b.time)}: price ${formatNumber(b.price, 6)} (low ${formatNumber(b.low, 6)}, high ${formatNumber(b.high, 6)}), ${b.trades} trades, notional ${formatNumber(b.volume)}`;
        plot.append(
          titled(svg("rect", {
            x: centre(b) - slot / 2,
            y: volume(b.volume),
            width: slot,
            height: volumeBottom - volume(b.volume),
            fill: "#8fb3e0",
            "data-testid": "market-volume-bar",
            "data-time": b.time,
            "data-volume": b.volume,
          }), text),
        );
        plot.append(titled(svg("circle", { cx: centre(b), cy: y(b.price), r: 2.5, fill: "#2a5bd7", "data-testid": "market-price-point", "data-time": b.time, "data-price": b.price }), text));
      }
    }
    if (market && market.at >= answer.since && market.at <= answer.until) {
      plot.append(
        titled(svg("line", { x1: x(market.at), y1: priceTop - 12, x2: x(market.at), y2: volumeBottom, stroke: "#677086", "stroke-dasharray": "2 3", "data-testid": "market-anchor" }),
          `the alert you came from, at ${formatTime(market.at)}`),
      );
    }
    for (const alert of answer.alerts.slice().sort((a, b) => a.timestamp - b.timestamp)) {
      if (alert.timestamp < answer.since || alert.timestamp > answer.until) continue;
      plot.append(alertMarker(alert, x(alert.timestamp), priceTop, volumeBottom));
    }
    box.append(plot);
  }

  // One alert on the market chart: a line at its time in its severity's colour, a diamond on top
  // for a market alert (a dot for an account's); hover tells what it is, a click opens it.
  function alertMarker(alert, cx, top, bottom) {
    const color = LEVEL_COLORS[alert.severity] || "#555";
    const marketLevel = isMarketAlert(alert);
    const group = svg("g", {
      class: `market-alert${market && alert.alertId === market.alertId ? " selected" : ""}`,
      "data-testid": "market-alert",
      "data-alert-id": alert.alertId,
      "data-pattern": alert.patternType,
      "data-severity": alert.severity,
      "data-market": marketLevel,
    });
    group.append(svg("line", { x1: cx, y1: top, x2: cx, y2: bottom, stroke: color, "stroke-width": 1.5, "stroke-opacity": 0.7 }));
    const cy = top - 10;
    group.append(
      marketLevel
        ? svg("path", { d: `M${cx},${cy - 7} L${cx + 7},${cy} L${cx},${cy + 7} L${cx - 7},${cy} Z`, fill: color })
        : svg("circle", { cx, cy, r: 4, fill: color }),
    );
    const who = marketLevel ? "market" : `user ${alert.userId}`;
    titled(group, `${alert.patternType} ${alert.severity} (${who}) at ${formatTime(alert.timestamp)}: ${alert.description}`);
    group.addEventListener("click", () => showAlert(alert, null, true));
    return group;
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
      for (const alert of found.alerts) body.append(alertRow(alert, "search-row"));
      const first = found.sort === "priority" ? "the most urgent" : "the newest";
      const bands = Object.entries(found.byPriority).filter(([, n]) => n).map(([band, n]) => `${band} ${n}`);
      note(
        "search-note",
        `${found.total} alerts${found.total > found.alerts.length ? `, ${first} ${found.alerts.length} shown` : ""}` +
          (found.total ? `; by priority: ${bands.join(", ")}` : ""),
      );
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
    readAlertView();
    $("alerts-sort").addEventListener("change", changeAlertView);
    $("alerts-min-priority").addEventListener("change", changeAlertView);
    $("chart-source").addEventListener("change", refreshChart);
    $("chart-window").addEventListener("change", refreshChart);
    $("top-users-by").addEventListener("change", refreshTopUsers);
    $("refresh").addEventListener("click", () => {
      refreshStats();
      refreshViews();
    });
    $("market-window").addEventListener("change", () => loadMarket());
    $("market-account-alerts").addEventListener("change", () => loadMarket());
    window.addEventListener("resize", () => {
      drawChart();
      drawMarket();
    });
    connect();
    loadRecentAlerts();
    refreshStats();
    refreshViews();
    setInterval(refreshStats, STATS_EVERY_MS);
    setInterval(refreshViews, VIEWS_EVERY_MS);
  }

  start();
})();
