// The audit trail: who changed money or configuration, when, and the values before and after (admins only), and
// the history lines the link popup and the posting detail show ("Cancelled by alice at 1 Dec 2026, 14:05").
import { $, api, download, el, say, session } from "./api.js";
import { when } from "./format.js";

const body = $("#audit-body");

// One entry in words; the API words the action and the person, the time is the firm's.
export const historyWords = (entry) => `${entry.what} by ${entry.who} at ${when(entry.at)}`;

// A list that fills itself with an object's history (path: /links/ID/history or /postings/ID/history).
// ``none`` is what to say when no person has acted on it yet.
export function historyList(path, label, none = "No one has acted on it yet.") {
  const list = el("ul", { class: "history", "aria-label": label });
  api("GET", path).then((entries) => {
    list.replaceChildren(...(entries.length ? entries.map((e) => el("li", { class: e.outcome === "ok" ? null : "failed" },
      historyWords(e))) : [el("li", { class: "muted" }, none)]));
  }).catch((exc) => list.replaceChildren(el("li", { class: "alert" }, exc.message)));
  return list;
}

const shown = (v) => (v === null || v === undefined ? "—" : typeof v === "object" ? JSON.stringify(v) : String(v));
const isRecord = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

// What an entry changed, field by field: only the fields whose value differs, each as "field: before → after".
function change(e) {
  if (e.outcome !== "ok" && e.error) return e.error;
  const [before, after] = [e.before, e.after];
  if (!isRecord(before) && !isRecord(after)) return `${shown(before)} → ${shown(after)}`;
  const b = isRecord(before) ? before : {};
  const a = isRecord(after) ? after : {};
  const fields = [...new Set([...Object.keys(b), ...Object.keys(a)])]
    .filter((k) => JSON.stringify(b[k]) !== JSON.stringify(a[k]));
  if (!fields.length) return "no field changed";
  return el("ul", { class: "changes" }, fields.map((k) => el("li", { "data-field": k },
    el("strong", {}, k), `: ${k in b ? shown(b[k]) : "—"} → ${k in a ? shown(a[k]) : "—"}`)));
}

function query(form) {
  const params = new URLSearchParams();
  for (const [name, value] of new FormData(form)) if (String(value).trim()) params.set(name, String(value).trim());
  return params.toString();
}

function table(entries) {
  if (!entries.length) return el("p", { class: "empty" }, "No audit entries match.");
  return el("table", { id: "audit-list" },
    el("thead", {}, el("tr", {}, ["#", "When", "Who", "What", "Object", "Change"].map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, entries.map((e) => el("tr", { "data-entry": e.seq, class: e.outcome === "ok" ? null : "failed" },
      el("td", {}, String(e.seq)), el("td", { class: "nowrap" }, when(e.at)), el("td", {}, e.who),
      el("td", {}, e.what), el("td", {}, e.object), el("td", { class: "story break" }, change(e))))));
}

function filters(results, status) {
  const field = (name, label, attrs = {}) => el("p", {}, el("label", { for: `audit-${name}` }, label),
    el("input", { id: `audit-${name}`, name, autocomplete: "off", ...attrs }));
  const form = el("form", { class: "row", id: "audit-filters" },
    field("user", "Person"), field("object", "Object (e.g. link:lnk_…)"),
    field("since", "From", { type: "date" }), field("until", "To", { type: "date" }),
    el("button", { type: "submit", class: "primary" }, "Show"),
    el("button", { type: "button", id: "audit-export", onclick: async () => {
      try {
        say(status, `Downloaded ${await download(`/audit/export?${query(form)}`, "audit.xlsx")}.`, "ok");
      } catch (exc) {
        say(status, exc.message, "error");
      }
    } }, "Export to Excel"));
  const load = async () => results.replaceChildren(table(await api("GET", `/audit?${query(form)}`)));
  form.addEventListener("submit", (event) => { event.preventDefault(); load().catch((exc) => say(status, exc.message, "error")); });
  return { form, load };
}

export async function showAudit() {
  if (session.info?.role !== "admin") {
    body.replaceChildren(el("div", { class: "notice warn", id: "admin-only" },
      el("p", {}, "The audit trail is for administrators: ask an admin, or sign in with your own name if you are one.")));
    return;
  }
  const status = el("p", { class: "notice", role: "status", hidden: true });
  const chain = el("p", { id: "audit-chain", role: "status" });
  const results = el("div", { id: "audit-results", "aria-live": "polite" });
  const { form, load } = filters(results, status);
  body.replaceChildren(chain, form, status, results);
  const verdict = await api("GET", "/audit/verify");
  const sealed = verdict.sealed_from === null
    ? " Not sealed: the secrets backend holds no audit keys."
    : ` Sealed from entry ${verdict.sealed_from}.` + verdict.checkpoints.map((c) => ` Matches ${c}.`).join("");
  chain.textContent = verdict.intact ? `${verdict.count} entries, chain intact.${sealed}`
    : `The audit trail is broken at entry ${verdict.bad_entry}: ${verdict.problem}`;
  chain.className = verdict.intact ? "notice ok" : "alert";
  await load();
}
