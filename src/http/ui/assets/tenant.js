// One tenant (`GET /v1/tenants/{id}`): lanes with their ETA, the budget over the last hour,
// actors, alerts (acknowledge), pollers and destinations.
"use strict";

(() => {
  const { api, append, el, table, formatSeconds, formatNumber, formatValue, breadcrumbs, tenantHref } = Steward;
  const SVG = "http://www.w3.org/2000/svg";

  function svg(tag, attributes) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
    return node;
  }

  // Calls per minute over the last hour, oldest first: 60 bars.
  function budgetChart(perMinute) {
    const width = 360;
    const height = 80;
    const peak = Math.max(0, ...perMinute);
    // The tallest bar fills the chart; an idle hour draws none.
    const highest = Math.max(1, peak);
    const barWidth = width / perMinute.length;
    const chart = svg("svg", {
      id: "budget-chart", viewBox: "0 0 " + width + " " + (height + 14), width, height: height + 14,
      role: "img", "aria-label": "Calls per minute over the last hour",
    });
    perMinute.forEach((calls, minute) => {
      const barHeight = Math.round((height * calls) / highest);
      const bar = svg("rect", {
        x: (minute * barWidth + 0.5).toFixed(1), y: height - barHeight,
        width: Math.max(1, barWidth - 1).toFixed(1), height: barHeight, class: "bar",
      });
      const title = svg("title", {});
      title.textContent = (60 - minute) + " min ago: " + calls + " calls";
      bar.append(title);
      chart.append(bar);
    });
    chart.append(svg("line", { x1: 0, y1: height + 0.5, x2: width, y2: height + 0.5, class: "baseline" }));
    const axis = svg("text", { x: 0, y: height + 12, class: "axis" });
    axis.textContent = "−60 min · peak " + peak + " calls/min · now";
    chart.append(axis);
    return chart;
  }

  function budgetSection(budget) {
    if (!budget) return el("p", { class: "muted" }, "Not running: no budget.");
    const used = budget.allowance_per_hour
      ? Math.round((100 * budget.spent_last_hour) / budget.allowance_per_hour) + " %" : "—";
    return el("div", { id: "budget" },
      el("p", {}, formatNumber(budget.spent_last_hour) + " of " +
        formatNumber(budget.allowance_per_hour) + " calls used in the last hour (" + used + ")."),
      Array.isArray(budget.per_minute) && budget.per_minute.length
        ? budgetChart(budget.per_minute)
        : el("p", { class: "muted" }, "This engine does not report calls per minute."),
      budget.warning ? el("p", { class: "warning" }, budget.warning) : null);
  }

  // Lanes in the order the submitter serves them; any other after them.
  const LANE_ORDER = ["live", "retry", "reconcile", "backfill"];

  function lanesSection(lanes) {
    const rank = (lane) => (LANE_ORDER.includes(lane) ? LANE_ORDER.indexOf(lane) : LANE_ORDER.length);
    const ordered = Object.entries(lanes || {}).sort(([a], [b]) => rank(a) - rank(b));
    const rows = ordered.map(([lane, stat]) => el("tr", { "data-lane": lane },
      el("td", {}, lane), el("td", { class: "num" }, formatNumber(stat.depth)),
      el("td", { class: "num" }, formatSeconds(stat.oldest_age_s)),
      el("td", { class: "num" }, stat.eta_s === null ? "—" : formatSeconds(stat.eta_s))));
    return table({ id: "lanes", class: "data" }, ["Lane", "Depth", "Oldest", "ETA"], rows);
  }

  function alertStatus(alert) {
    if (alert.resolved_at) return "resolved " + alert.resolved_at;
    if (alert.acked_at) return "acknowledged " + alert.acked_at;
    return "open";
  }

  function alertsSection(tenantId, alerts) {
    if (!alerts.length) return el("p", { class: "muted" }, "No alerts.");
    const rows = alerts.map((alert) => {
      const ack = el("button", {
        type: "button", class: "ack", "data-alert": alert.code,
        onclick: async () => {
          ack.disabled = true;
          try {
            const path = "/v1/tenants/" + encodeURIComponent(tenantId) + "/alerts/" +
              encodeURIComponent(alert.code) + "/ack";
            await api("POST", path);
            Steward.notice("Alert " + alert.code + " acknowledged.", "info");
            Steward.render();
          } catch (error) {
            ack.disabled = false;
            Steward.notice(error.message, "error");
          }
        },
      }, "Acknowledge");
      return el("tr", { "data-alert": alert.code },
        el("td", {}, el("code", {}, alert.code)), el("td", {}, alert.message),
        el("td", { class: "num" }, formatNumber(alert.count)), el("td", {}, alert.last_at),
        el("td", { class: "alert-status" }, alertStatus(alert)),
        el("td", {}, alert.acked_at || alert.resolved_at ? null : ack));
    });
    return table({ id: "alerts", class: "data" },
      ["Code", "Message", "Count", "Last", "Status", ""], rows);
  }

  function actorsSection(actors) {
    const rows = Object.entries(actors || {}).map(([name, actor]) => el("tr", { "data-actor": name },
      el("td", {}, name), el("td", {}, actor.state),
      el("td", { class: "num" }, formatNumber(actor.mailbox_depth)),
      el("td", { class: "num" }, formatNumber(actor.restarts)),
      el("td", {}, actor.last_error || "")));
    return table({ id: "actors", class: "data" },
      ["Actor", "State", "Mailbox", "Restarts", "Last error"], rows);
  }

  // Pollers and destinations grow fields; show the ones an operator looks at first.
  function listSection(id, items, columns, empty) {
    if (!Array.isArray(items)) return el("p", { class: "error" }, formatValue(items));
    if (!items.length) return el("p", { class: "muted" }, empty);
    const rows = items.map((item) => el("tr", {},
      columns.map((column) => el("td", {}, formatValue(item[column])))));
    return table({ id, class: "data" }, columns, rows);
  }

  Steward.route(/^\/tenant\/([^/]+)$/, async (main, [tenantId], _query, isCurrent) => {
    breadcrumbs(["Fleet", "#/fleet"], [tenantId, null]);
    const status = await api("GET", "/v1/tenants/" + encodeURIComponent(tenantId));
    if (!isCurrent()) return;
    const counts = status.counts || {};
    append(main,
      el("h1", {}, status.name || status.id, " ",
        el("span", { id: "tenant-state", class: "state state-" + status.state }, status.state)),
      el("p", { class: "links" },
        el("a", { href: tenantHref(tenantId, "/dead-letters"), id: "open-dead-letters" },
          "Dead letters (" + formatNumber(counts.dead) + ")"),
        " · ",
        el("a", { href: tenantHref(tenantId, "/records"), id: "open-records" }, "Find a record"),
        " · ",
        el("button", { type: "button", id: "refresh", onclick: () => Steward.render() }, "Refresh")),
      el("section", {}, el("h2", {}, "Lanes"), lanesSection(status.lanes)),
      el("section", {}, el("h2", {}, "Budget, last hour"), budgetSection(status.budget)),
      el("section", {}, el("h2", {}, "Alerts"), alertsSection(tenantId, status.alerts || [])),
      el("section", {}, el("h2", {}, "Actors"), actorsSection(status.actors)),
      el("section", {}, el("h2", {}, "Pollers"), listSection("pollers", status.pollers,
        ["source", "kind", "state", "next_run_at", "consecutive_failures"], "No polled sources.")),
      el("section", {}, el("h2", {}, "Destinations"), listSection("destinations",
        status.destinations, ["name", "kind", "state", "activity", "lag_seconds", "dead_lettered", "last_error"], "No destinations.")));
  });
})();
