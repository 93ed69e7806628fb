// Steward dashboard: the shared pieces (API calls, DOM building, hash routing).
// Every value from the API enters the page as text (textContent / text nodes), never as
// markup. The views register themselves with `Steward.route` (fleet.js, tenant.js, …).
"use strict";

const Steward = (() => {
  const csrfToken = document.querySelector('meta[name="csrf-token"]').content;
  const routes = [];
  // Bumped on every navigation: a view's late answer never draws into a newer view.
  let renderGeneration = 0;

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  // Calls the /v1 API with the session cookie; state-changing calls carry the CSRF token.
  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    if (method !== "GET") headers["X-CSRF-Token"] = csrfToken;
    const options = { method, headers, credentials: "same-origin" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    const response = await fetch(path, options);
    if (response.status === 401) {
      window.location.assign("/ui/login");
      throw new ApiError(401, "unauthorized", "the session ended; log in again");
    }
    const text = await response.text();
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch (_) {
      json = null;
    }
    if (!response.ok) {
      const error = (json && json.error) || {};
      throw new ApiError(response.status, error.code || "http_" + response.status,
        error.message || "HTTP " + response.status);
    }
    return json;
  }

  // `el("td", {class: "num"}, "3")`: attributes by setAttribute, children as text or nodes.
  function el(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    return append(node, ...children);
  }

  // Like `node.append`, but arrays are spread and null, undefined and false are skipped.
  function append(node, ...children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
    return node;
  }

  // A table from rows of cells; `headers` are strings or nodes.
  function table(attributes, headers, rows) {
    return el("table", attributes,
      el("thead", {}, el("tr", {}, headers.map((header) => el("th", {}, header)))),
      el("tbody", {}, rows));
  }

  function formatSeconds(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    const total = Math.round(Number(seconds));
    if (total < 60) return total + " s";
    if (total < 3600) return Math.floor(total / 60) + " min " + (total % 60) + " s";
    if (total < 86400) return Math.floor(total / 3600) + " h " + Math.floor((total % 3600) / 60) + " min";
    return Math.floor(total / 86400) + " d " + Math.floor((total % 86400) / 3600) + " h";
  }

  function formatNumber(value) {
    if (value === null || value === undefined) return "—";
    return Number(value).toLocaleString("en-US");
  }

  // A value of unknown shape, as short text.
  function formatValue(value) {
    if (value === null || value === undefined) return "—";
    if (typeof value === "object") return JSON.stringify(value);
    return String(value);
  }

  function notice(message, kind) {
    const node = document.getElementById("notice");
    node.textContent = message || "";
    node.className = "notice " + (kind || "info");
    node.hidden = !message;
  }

  function breadcrumbs(...items) {
    const nav = clear(document.getElementById("breadcrumbs"));
    items.forEach(([label, href], index) => {
      if (index > 0) nav.append(document.createTextNode(" / "));
      nav.append(href ? el("a", { href }, label) : el("span", {}, label));
    });
  }

  function tenantHref(tenantId, rest) {
    return "#/tenant/" + encodeURIComponent(tenantId) + (rest || "");
  }

  function route(pattern, view) {
    routes.push({ pattern, view });
  }

  // `#/tenant/x/records?email=a` → path "/tenant/x/records", query {email: "a"}.
  function currentLocation() {
    const hash = window.location.hash.replace(/^#/, "") || "/fleet";
    const [path, search] = hash.split("?");
    return { path, query: new URLSearchParams(search || "") };
  }

  async function render() {
    const generation = ++renderGeneration;
    const main = clear(document.getElementById("main"));
    notice("");
    const { path, query } = currentLocation();
    for (const { pattern, view } of routes) {
      const match = path.match(pattern);
      if (!match) continue;
      const params = match.slice(1).map(decodeURIComponent);
      // A view checks `isCurrent()` after each await before drawing.
      const isCurrent = () => generation === renderGeneration;
      try {
        await view(main, params, query, isCurrent);
      } catch (error) {
        if (isCurrent()) notice(error.message, "error");
      }
      return;
    }
    append(main, el("p", {}, "No such page. "), el("a", { href: "#/fleet" }, "Back to the fleet"));
  }

  window.addEventListener("hashchange", render);
  document.addEventListener("DOMContentLoaded", render);

  return {
    ApiError, api, el, append, clear, table, formatSeconds, formatNumber, formatValue,
    notice, breadcrumbs, tenantHref, route, render,
  };
})();
