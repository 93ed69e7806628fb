// The fleet: every tenant, filtered, sorted and paged by the server
// (`GET /v1/tenants?q=&state=&sort=&limit=&cursor=`), so 10,000 tenants cost one page.
"use strict";

(() => {
  const { api, append, el, table, formatSeconds, formatNumber, breadcrumbs, tenantHref } = Steward;
  const PAGE_SIZE = 50;
  const LANES = ["live", "retry", "reconcile", "backfill"];
  const STATES = ["", "running", "paused", "needs_operator", "not_running", "moved"];
  const COLUMNS = [
    ["Tenant", "id"], ["Name", "name"], ["State", "state"], ["Lanes", null],
    ["Depth", "depth"], ["Oldest", "oldest_age"], ["Budget used", "budget_used"],
    ["Open alerts", "alerts"],
  ];
  // Kept across views: coming back from a tenant shows the same filter and page.
  const fleet = { q: "", state: "", sort: "id", cursors: [null] };
  let filterTimer = null;

  function lanesText(lanes) {
    if (!lanes) return "—";
    return LANES.filter((lane) => lanes[lane])
      .map((lane) => lane + " " + formatNumber(lanes[lane].depth))
      .join(" · ");
  }

  function budgetText(budget) {
    if (!budget || !budget.allowance_per_hour) return "—";
    const percent = Math.round((100 * budget.spent_last_hour) / budget.allowance_per_hour);
    return formatNumber(budget.spent_last_hour) + " / " + formatNumber(budget.allowance_per_hour) +
      " (" + percent + " %)";
  }

  function tenantRow(tenant) {
    return el("tr", { "data-tenant": tenant.id },
      el("td", {}, el("a", { href: tenantHref(tenant.id), class: "tenant-link" }, tenant.id)),
      el("td", {}, tenant.name || ""),
      el("td", {}, el("span", { class: "state state-" + tenant.state }, tenant.state)),
      el("td", { class: "lanes" }, lanesText(tenant.lanes)),
      el("td", { class: "num" }, formatNumber(tenant.depth)),
      el("td", { class: "num" }, formatSeconds(tenant.oldest_age_s)),
      el("td", { class: "num" }, budgetText(tenant.budget)),
      el("td", { class: "num" }, formatNumber(tenant.open_alerts)));
  }

  function sortHeader(label, key) {
    if (!key) return label;
    const active = fleet.sort.replace(/^-/, "") === key;
    const arrow = active ? (fleet.sort.startsWith("-") ? " ▼" : " ▲") : "";
    return el("button", {
      type: "button", class: "sort" + (active ? " active" : ""), "data-sort": key,
      onclick: () => {
        fleet.sort = fleet.sort === key ? "-" + key : key;
        fleet.cursors = [null];
        Steward.render();
      },
    }, label + arrow);
  }

  function pageQuery() {
    const query = new URLSearchParams({ limit: String(PAGE_SIZE), sort: fleet.sort });
    if (fleet.q) query.set("q", fleet.q);
    if (fleet.state) query.set("state", fleet.state);
    const cursor = fleet.cursors[fleet.cursors.length - 1];
    if (cursor) query.set("cursor", cursor);
    return query;
  }

  function controls() {
    const filter = el("input", {
      type: "search", id: "fleet-filter", placeholder: "Filter by id or name", value: fleet.q,
      "aria-label": "Filter by id or name",
    });
    filter.addEventListener("input", () => {
      clearTimeout(filterTimer);
      filterTimer = setTimeout(() => {
        fleet.q = filter.value.trim();
        fleet.cursors = [null];
        Steward.render();
      }, 250);
    });
    const state = el("select", { id: "fleet-state", "aria-label": "State" },
      STATES.map((name) => el("option", { value: name, selected: name === fleet.state },
        name || "any state")));
    state.addEventListener("change", () => {
      fleet.state = state.value;
      fleet.cursors = [null];
      Steward.render();
    });
    return [filter, state];
  }

  Steward.route(/^\/fleet$/, async (main, _params, _query, isCurrent) => {
    breadcrumbs(["Fleet", null]);
    const [filter, state] = controls();
    const summary = el("span", { id: "fleet-summary", class: "muted" }, "Loading…");
    append(main, el("h1", {}, "Fleet"), el("div", { class: "toolbar" }, filter, state, summary));
    if (fleet.q) {
      filter.focus();
      filter.setSelectionRange(filter.value.length, filter.value.length);
    }
    const page = await api("GET", "/v1/tenants?" + pageQuery());
    if (!isCurrent()) return;
    const tenants = page.tenants || [];
    const pageNumber = fleet.cursors.length;
    summary.textContent = (page.total === 1 ? "1 tenant matches" : formatNumber(page.total) + " tenants match") +
      " · page " + pageNumber;
    const previous = el("button", {
      type: "button", id: "fleet-prev", disabled: pageNumber === 1,
      onclick: () => { fleet.cursors.pop(); Steward.render(); },
    }, "← Previous");
    const next = el("button", {
      type: "button", id: "fleet-next", disabled: !page.next_cursor,
      onclick: () => { fleet.cursors.push(page.next_cursor); Steward.render(); },
    }, "Next →");
    append(main,
      table({ id: "fleet-table", class: "data" },
        COLUMNS.map(([label, key]) => sortHeader(label, key)), tenants.map(tenantRow)),
      tenants.length === 0 ? el("p", { class: "muted" }, "No tenant matches.") : null,
      el("div", { class: "pager" }, previous, next));
  });
})();
