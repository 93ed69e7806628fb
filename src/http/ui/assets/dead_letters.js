// Dead letters: the list, one letter's body as formatted JSON in an editor, replay (as-is or
// edited, the idempotency fields guarded here and again by the server) and discard.
"use strict";

(() => {
  const { api, append, el, table, formatNumber, formatValue, breadcrumbs, tenantHref } = Steward;
  // The fields that carry the record's idempotency key into Virtuous; the server refuses a
  // replay that changes, adds or removes any of them (`idempotency_fields_changed`).
  const IDEMPOTENCY_FIELDS = ["transactionSource", "transactionId", "referenceSource", "referenceId"];
  // After a replay the page follows the record until it leaves `pending` (or this passes).
  const FOLLOW_RECORD_MS = 120000;

  const tenantPath = (tenantId) => "/v1/tenants/" + encodeURIComponent(tenantId);

  function letterHref(tenantId, letter) {
    const destination = letter.destination ? "?destination=" + encodeURIComponent(letter.destination) : "";
    return tenantHref(tenantId, "/dead-letters/" + letter.id + destination);
  }

  Steward.route(/^\/tenant\/([^/]+)\/dead-letters$/, async (main, [tenantId], query, isCurrent) => {
    breadcrumbs(["Fleet", "#/fleet"], [tenantId, tenantHref(tenantId)], ["Dead letters", null]);
    const after = query.get("after");
    const page = await api("GET", tenantPath(tenantId) + "/dead-letters?limit=50" +
      (after ? "&after=" + encodeURIComponent(after) : ""));
    if (!isCurrent()) return;
    const letters = page.dead_letters || [];
    const rows = letters.map((letter) => el("tr", { "data-dead-letter": letter.id },
      el("td", {}, el("a", { href: letterHref(tenantId, letter), class: "dead-letter-link" }, String(letter.id))),
      el("td", {}, letter.destination ? "to " + letter.destination : letter.kind),
      el("td", {}, formatValue(letter.source_id || letter.virtuous_id)),
      el("td", {}, letter.reason),
      el("td", { class: "num" }, formatNumber(letter.attempts)),
      el("td", {}, letter.dead_at)));
    append(main, el("h1", {}, "Dead letters of " + tenantId),
      letters.length
        ? table({ id: "dead-letters", class: "data" }, ["Id", "Kind", "Source id", "Reason", "Attempts", "Dead at"], rows)
        : el("p", { class: "muted" }, "No dead letters."),
      page.next_after !== null && page.next_after !== undefined
        ? el("p", {}, el("a", { href: tenantHref(tenantId, "/dead-letters?after=" + page.next_after), id: "dead-letters-next" }, "Next page →"))
        : null);
  });

  // One letter: its own route, else (an engine without it) a search through the pages.
  async function loadLetter(tenantId, id, destination) {
    const suffix = destination ? "?destination=" + encodeURIComponent(destination) : "";
    try {
      return await api("GET", tenantPath(tenantId) + "/dead-letters/" + id + suffix);
    } catch (error) {
      if (error.status !== 404 && error.status !== 405) throw error;
    }
    let after = null;
    for (let pages = 0; pages < 100; pages += 1) {
      const query = new URLSearchParams({ limit: "500" });
      if (after !== null) query.set("after", after);
      if (destination) query.set("destination", destination);
      const page = await api("GET", tenantPath(tenantId) + "/dead-letters?" + query);
      const found = (page.dead_letters || []).find((letter) => String(letter.id) === id &&
        (letter.destination || null) === (destination || null));
      if (found) return found;
      if (page.next_after === null || page.next_after === undefined) break;
      after = page.next_after;
    }
    throw new Steward.ApiError(404, "not_found", "no dead letter " + id + " (replayed or discarded?)");
  }

  // The guarded fields that differ between the stored body and the edited one.
  function changedIdempotencyFields(original, edited) {
    return IDEMPOTENCY_FIELDS.filter((field) =>
      JSON.stringify(original[field]) !== JSON.stringify(edited[field]));
  }

  function guardBox(body) {
    const present = IDEMPOTENCY_FIELDS.filter((field) => field in body);
    return el("div", { class: "guard", id: "idempotency-guard" },
      el("p", {}, el("strong", {}, "Idempotency guard. "),
        "These fields make the record's idempotency key in Virtuous: one key per source fact, " +
        "forever. A replay may edit anything else; changing, adding or removing one of them is " +
        "refused (by this page and by the server)."),
      el("ul", {}, (present.length ? present : IDEMPOTENCY_FIELDS).map((field) =>
        el("li", {}, el("code", {}, field), " = ", field in body ? JSON.stringify(body[field]) : "(absent)"))));
  }

  // Follows the replayed record until it is sent (or dead again): the page shows it move.
  async function followRecord(letter, tenantId, stateNode, isCurrent) {
    const path = tenantPath(tenantId) + "/records/" + [letter.kind, letter.source, letter.source_id]
      .map(encodeURIComponent).join("/");
    const deadline = Date.now() + FOLLOW_RECORD_MS;
    while (isCurrent() && Date.now() < deadline) {
      const record = await api("GET", path);
      stateNode.textContent = record.state;
      stateNode.className = "state state-" + record.state;
      if (record.state !== "pending" && record.state !== "retrying") return;
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }

  Steward.route(/^\/tenant\/([^/]+)\/dead-letters\/(\d+)$/, async (main, [tenantId, id], query, isCurrent) => {
    breadcrumbs(["Fleet", "#/fleet"], [tenantId, tenantHref(tenantId)],
      ["Dead letters", tenantHref(tenantId, "/dead-letters")], [id, null]);
    const destination = query.get("destination");
    const letter = await loadLetter(tenantId, id, destination);
    if (!isCurrent()) return;
    const editable = !letter.destination && letter.body && typeof letter.body === "object";
    const editor = el("textarea", { id: "dl-body", rows: 18, spellcheck: "false", readonly: !editable },
      JSON.stringify(letter.body, null, 2));
    const check = el("p", { id: "dl-check", class: "muted" });
    const replay = el("button", { type: "button", id: "dl-replay", class: "primary" }, "Replay");
    const discard = el("button", { type: "button", id: "dl-discard", class: "danger" }, "Discard");
    const outcome = el("div", { id: "dl-outcome" });
    const suffix = letter.destination ? "?destination=" + encodeURIComponent(letter.destination) : "";
    const letterPath = tenantPath(tenantId) + "/dead-letters/" + letter.id;

    // The edited body, or null (replay as-is); throws with the reason it cannot be sent.
    function editedBody() {
      if (!editable) return null;
      let edited;
      try {
        edited = JSON.parse(editor.value);
      } catch (error) {
        throw new Error("The body is not valid JSON: " + error.message);
      }
      if (!edited || typeof edited !== "object" || Array.isArray(edited)) throw new Error("The body must be a JSON object.");
      const changed = changedIdempotencyFields(letter.body, edited);
      if (changed.length) throw new Error("Refused by the idempotency guard: " + changed.join(", ") + " changed.");
      return JSON.stringify(edited) === JSON.stringify(letter.body) ? null : edited;
    }

    function recheck() {
      try {
        const edited = editedBody();
        check.textContent = edited ? "Edited; the guarded fields are unchanged." : "Unchanged: replays as it is.";
        check.className = "muted";
        replay.disabled = false;
      } catch (error) {
        check.textContent = error.message;
        check.className = "error";
        replay.disabled = true;
      }
    }
    editor.addEventListener("input", recheck);
    recheck();

    replay.addEventListener("click", async () => {
      replay.disabled = true;
      discard.disabled = true;
      try {
        const edited = editedBody();
        const answer = await api("POST", letterPath + "/replay" + suffix, edited ? { body: edited } : undefined);
        Steward.clear(outcome);
        if (letter.destination) {
          outcome.append(el("p", {}, "Replayed to " + letter.destination + "."));
          return;
        }
        const stateNode = el("span", { id: "dl-record-state", class: "state state-" + answer.state }, answer.state);
        outcome.append(el("p", {}, (answer.edited ? "Replayed, edited" : "Replayed as it was") +
          ". The record is now ", stateNode, ". ",
          el("a", { href: tenantHref(tenantId, "/records?" + new URLSearchParams({
            kind: letter.kind, source: letter.source, source_id: letter.source_id })) }, "Its timeline")));
        editor.readOnly = true;
        await followRecord(letter, tenantId, stateNode, isCurrent);
      } catch (error) {
        Steward.notice(error.message, "error");
        recheck();
        discard.disabled = false;
      }
    });

    discard.addEventListener("click", async () => {
      if (discard.dataset.confirming !== "yes") {
        discard.dataset.confirming = "yes";
        discard.textContent = "Really discard? Click again";
        return;
      }
      discard.disabled = true;
      replay.disabled = true;
      try {
        await api("DELETE", letterPath + suffix);
        Steward.notice("Dead letter " + letter.id + " discarded.", "info");
        window.location.hash = tenantHref(tenantId, "/dead-letters");
      } catch (error) {
        Steward.notice(error.message, "error");
        discard.disabled = false;
      }
    });

    append(main, el("h1", {}, "Dead letter " + letter.id),
      el("dl", { class: "facts" },
        [["Reason", letter.reason], ["Status", letter.status], ["Attempts", letter.attempts],
          ["Kind", letter.kind], ["Source", letter.source || letter.destination],
          ["Source id", letter.source_id || letter.virtuous_id],
          ["Idempotency key", letter.idempotency_key], ["Dead at", letter.dead_at]]
          .filter(([, value]) => value !== undefined)
          .map(([label, value]) => [el("dt", {}, label), el("dd", {}, formatValue(value))])),
      editable ? guardBox(letter.body) : el("p", { class: "muted" }, "A destination's dead letter is replayed as it is."),
      el("label", { for: "dl-body" }, "Body"), editor, check,
      el("div", { class: "actions" }, replay, discard), outcome);
  });
})();
