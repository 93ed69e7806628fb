// A record's timeline: found by email, Virtuous id or source id (any alias), every
// transition with its time and reason.
"use strict";

(() => {
  const { api, append, el, table, formatValue, breadcrumbs, tenantHref } = Steward;
  const SEARCHES = [
    ["email", "Email"], ["virtuous_id", "Virtuous id"], ["source_id", "Source id"],
  ];
  const KINDS = ["gift", "contact", "refund"];

  const recordsPath = (tenantId) => "/v1/tenants/" + encodeURIComponent(tenantId) + "/records";

  function searchForm(tenantId, query) {
    const by = SEARCHES.find(([name]) => query.has(name)) || SEARCHES[0];
    const select = el("select", { id: "record-by", "aria-label": "Search by" },
      SEARCHES.map(([name, label]) => el("option", { value: name, selected: name === by[0] }, label)));
    const value = el("input", {
      type: "search", id: "record-query", required: true, value: query.get(by[0]) || "",
      placeholder: "donor@example.org, 12345 or pi_…", "aria-label": "Search for",
    });
    const kind = el("select", { id: "record-kind", "aria-label": "Kind" },
      KINDS.map((name) => el("option", { value: name, selected: name === query.get("kind") }, name)));
    const source = el("input", {
      type: "text", id: "record-source", placeholder: "source (stripe, platform name…)",
      value: query.get("source") || "", "aria-label": "Source",
    });
    const sourceFields = el("span", { id: "record-source-fields" }, kind, source);
    const showSourceFields = () => { sourceFields.hidden = select.value !== "source_id"; };
    select.addEventListener("change", showSourceFields);
    showSourceFields();
    const form = el("form", { id: "record-search", class: "toolbar" }, select, value, sourceFields,
      el("button", { type: "submit", id: "record-search-submit", class: "primary" }, "Search"));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const next = new URLSearchParams({ [select.value]: value.value.trim() });
      if (select.value === "source_id") {
        next.set("kind", kind.value);
        next.set("source", source.value.trim());
      }
      window.location.hash = tenantHref(tenantId, "/records?" + next);
    });
    return form;
  }

  // Records matching the query: the list route for email and Virtuous id, the record route
  // for a source id (with its kind and source).
  async function findRecords(tenantId, query) {
    if (query.get("source_id")) {
      const path = recordsPath(tenantId) + "/" + [query.get("kind") || "gift", query.get("source") || "",
        query.get("source_id")].map(encodeURIComponent).join("/");
      try {
        return [await api("GET", path)];
      } catch (error) {
        if (error.status === 404) return [];
        throw error;
      }
    }
    for (const name of ["email", "virtuous_id"]) {
      if (query.get(name)) {
        const answer = await api("GET", recordsPath(tenantId) + "?" + new URLSearchParams({ [name]: query.get(name) }));
        return answer.records || [];
      }
    }
    return null;
  }

  function timeline(record) {
    const rows = (record.history || []).map((transition) => el("tr", {},
      el("td", {}, transition.at),
      el("td", {}, transition.from || "—", " → ",
        el("span", { class: "state state-" + transition.to }, transition.to)),
      el("td", {}, transition.reason || "")));
    return table({ class: "data timeline" }, ["At", "Transition", "Reason"], rows);
  }

  function recordCard(tenantId, record) {
    const deadLetter = record.dead_letter
      ? el("a", { href: tenantHref(tenantId, "/dead-letters/" + record.dead_letter.id) }, String(record.dead_letter.id))
      : null;
    return el("article", { class: "record", "data-record": record.idempotency_key },
      el("h2", {}, record.kind + " " + record.source + "/" + record.source_id + " ",
        el("span", { class: "state state-" + record.state + " record-state" }, record.state)),
      el("dl", { class: "facts" },
        [["Virtuous id", record.virtuous_id], ["Idempotency key", record.idempotency_key],
          ["Updated", record.updated_at], ["Queued", (record.queued || []).map((queued) => queued.lane).join(", ") || null],
          ["Dead letter", deadLetter]]
          .map(([label, value]) => [el("dt", {}, label),
            el("dd", {}, value instanceof Node ? value : formatValue(value))])),
      el("h3", {}, "Timeline"), timeline(record));
  }

  Steward.route(/^\/tenant\/([^/]+)\/records$/, async (main, [tenantId], query, isCurrent) => {
    breadcrumbs(["Fleet", "#/fleet"], [tenantId, tenantHref(tenantId)], ["Records", null]);
    append(main, el("h1", {}, "Find a record of " + tenantId), searchForm(tenantId, query));
    const records = await findRecords(tenantId, query);
    if (!isCurrent() || records === null) return;
    append(main, el("p", { id: "record-count", class: "muted" },
      records.length === 1 ? "1 record" : records.length + " records"),
    el("div", { id: "records" }, records.map((record) => recordCard(tenantId, record))));
  });
})();
