// Sent Pages: links by status, a column configurator (tick and order, kept in this browser), Export to Excel, cancel;
// below them the payment plans under the same filter, each openable (plans.js's view) and cancellable.
import { $, api, badge, download, el, say } from "./api.js";
import { day, money, when } from "./format.js";
import { openPlanById } from "./plans.js";

// The headings are the export's own (agent/engine/export.py LINK_COLUMNS), so the screen and the workbook agree.
const COLUMNS = {
  created_at: "Created", status: "Status", matter_number: "Matter", payer_name: "Recipient Name",
  payer_email: "Recipient Email", amount: "Amount", description: "Description", invoice_number: "Invoice Number",
  account: "Account", expires_at: "Expires", closed_at: "Closed", status_reason: "Note", url: "Link", id: "Link ID",
};
const DEFAULT = ["created_at", "status", "matter_number", "invoice_number", "payer_name", "amount", "expires_at"];
const STORE = "ledgerlink.sent.columns";
const notice = $("#notice");
const table = $("#sent-table");
const dialog = $("#columns-dialog");
const list = $("#columns-list");

function saved() {
  try {
    const value = JSON.parse(localStorage.getItem(STORE));
    if (Array.isArray(value) && value.every((c) => c in COLUMNS)) return value;
  } catch { /* unreadable: defaults */ }
  return [...DEFAULT];
}
let shown = saved();
const status = () => document.querySelector('input[name="sent-status"]:checked').value;
const label = () => document.querySelector(`label[for="${document.querySelector('input[name="sent-status"]:checked').id}"]`).textContent;

// Plans are their own table, not rows among the links: their columns (instalments, next date) are not a link's, and
// the links' column choice and export stay as they were. The one filter reads for plans as for links: a plan still
// collecting (or waiting for the payer's Direct Debit to start) is outstanding, an ended one has nothing left to
// collect; a plan never expires (null). Each is the query string of its statuses.
const PLAN_STATUS = { outstanding: "?status=active&status=awaiting_mandate", payment_received: "?status=ended",
  cancelled: "?status=cancelled", expired: null, "": "" };
const PLAN_WORDS = { outstanding: "Active", payment_received: "Ended", cancelled: "Cancelled", "": "All" };
const plansTable = $("#sent-plans-table");
const plansExport = $("#sent-plans-export");

function cell(link, column) {
  const value = link[column];
  if (column === "status") return el("td", {}, badge(value));
  if (column === "amount") return el("td", { class: "num" }, money(value, link.currency));
  // The day only: the table stays one line a row at 860 px; the link view and the export have the time.
  if (column.endsWith("_at")) return el("td", { class: "nowrap" }, value ? el("time", { datetime: value, title: when(value) }, day(value)) : "");
  if (column === "matter_number" || column === "invoice_number" || column === "id") return el("td", { class: "nowrap" }, value ?? "");
  if (column === "description" || column === "status_reason") return el("td", { class: "text" }, value ?? "");
  if (column === "url") return el("td", {}, value ? el("a", { href: value, target: "_blank", rel: "noopener" }, "Open") : "");
  return el("td", {}, value ?? "");
}

// An outstanding link to paste into an email or chat of one's own (the guide's manual delivery).
async function copyLink(link, button) {
  try {
    await navigator.clipboard.writeText(link.url);
    say(notice, `Link for ${link.payer_name || link.id} copied: paste it into your email or chat.`, "ok");
  } catch {
    say(notice, `Copy this link: ${link.url}`, "info");  // no clipboard here (permissions): show it to copy by hand
  }
  button.focus();
}

async function cancel(link) {
  if (!confirm(`Cancel the ${money(link.amount, link.currency)} link for ${link.payer_name || "this payer"}? It can no longer be paid.`)) return;
  try {
    await api("POST", `/links/${encodeURIComponent(link.id)}/cancel`, { reason: "cancelled by staff (Sent Pages)" });
    say(notice, `Link ${link.id} cancelled.`, "ok");
  } catch (exc) {
    say(notice, exc.message, "error");
  }
  await load();
}

async function loadLinks() {
  const chosen = status();
  const links = await api("GET", `/sent-pages${chosen ? `?status=${chosen}` : ""}`);
  if (!links.length) {
    table.replaceChildren(el("p", { class: "empty" }, `No links in “${label()}”.`));
    return;
  }
  // Wide column choices scroll inside their own region, never the whole page.
  table.replaceChildren(el("div", { class: "table-scroll", tabindex: 0, role: "region", "aria-label": `${label()} links` }, el("table", { id: "links-table" },
    el("caption", {}, `${label()}: ${links.length} link${links.length === 1 ? "" : "s"}`),
    el("thead", {}, el("tr", {}, shown.map((c) => el("th", { class: c === "amount" ? "num" : null, scope: "col" }, COLUMNS[c])),
      el("th", { scope: "col" }, el("span", { class: "muted" }, "Action")))),
    el("tbody", {}, links.map((link) => el("tr", { "data-link": link.id },
      shown.map((c) => cell(link, c)),
      el("td", {}, link.status === "outstanding" ? el("div", { class: "row-actions" },
        el("button", { type: "button", class: "small", "aria-label": `Copy link ${link.id}`, onclick: (event) => copyLink(link, event.currentTarget) }, "Copy"),
        el("button", { type: "button", class: "small danger", "aria-label": `Cancel link ${link.id}`, onclick: () => cancel(link) }, "Cancel"))
        : "")))))));
}

async function cancelPlan(plan) {
  if (!confirm(`Cancel the payment plan for ${plan.payer_name || "this payer"} on matter ${plan.matter_number}? ` +
    "The instalments still to come are not collected; one already with the bank goes ahead.")) return;
  try {
    await api("POST", `/plans/${encodeURIComponent(plan.id)}/cancel`, { reason: "cancelled by staff (Sent Pages)" });
    say(notice, `Plan ${plan.id} cancelled.`, "ok");
  } catch (exc) {
    say(notice, exc.message, "error");
  }
  await load();
  focusPlan(plan.id);
}

// After a redraw keyboard focus goes back to the plan's row (its Open button), not to the top of the page.
function focusPlan(id) {
  plansTable.querySelector(`tr[data-plan="${CSS.escape(id)}"] button`)?.focus();
}

function nextInstalment(plan) {
  if (!plan.next_due_on) return "—";
  return [el("time", { datetime: plan.next_due_on }, when(plan.next_due_on)), ` · ${money(plan.next_amount, plan.currency)}`];
}

async function loadPlans() {
  const wanted = PLAN_STATUS[status()];
  plansExport.disabled = wanted === null;
  if (wanted === null) {
    plansTable.replaceChildren(el("p", { class: "empty" }, `Payment plans do not expire, so none are in “${label()}”.`));
    return;
  }
  const plans = await api("GET", `/sent-pages/plans${wanted}`);
  const words = `${PLAN_WORDS[status()]} payment plans`;
  if (!plans.length) {
    plansTable.replaceChildren(el("p", { class: "empty" }, `No ${words.toLowerCase()}.`));
    return;
  }
  const num = (text) => el("th", { class: "num", scope: "col" }, text);
  plansTable.replaceChildren(el("div", { class: "table-scroll", tabindex: 0, role: "region", "aria-label": words }, el("table", { id: "plans-list" },
    el("caption", {}, `${words}: ${plans.length}`),
    el("thead", {}, el("tr", {}, ["Created", "Status", "Matter", "Payer"].map((h) => el("th", { scope: "col" }, h)),
      num("Total"), el("th", { scope: "col" }, "Instalments paid"), num("Still to collect"), el("th", { scope: "col" }, "Next instalment"),
      el("th", { scope: "col" }, el("span", { class: "muted" }, "Action")))),
    el("tbody", {}, plans.map((plan) => el("tr", { "data-plan": plan.id },
      el("td", { class: "nowrap" }, el("time", { datetime: plan.created_at, title: when(plan.created_at) }, day(plan.created_at))),
      el("td", {}, badge(plan.status)),
      el("td", { class: "nowrap" }, plan.matter_number ?? ""),
      el("td", {}, plan.payer_name ?? ""),
      el("td", { class: "num" }, money(plan.total, plan.currency)),
      el("td", { class: "nowrap" }, `${plan.paid} of ${plan.instalments}`),
      el("td", { class: "num" }, money(plan.to_collect, plan.currency)),
      el("td", { class: "nowrap" }, nextInstalment(plan)),
      el("td", {}, el("div", { class: "row-actions" },
        el("button", { type: "button", class: "small", "aria-label": `Open plan ${plan.id}`,
          onclick: () => openPlanById(plan.id, () => load().then(() => focusPlan(plan.id)).catch((exc) => say(notice, exc.message, "error"))) }, "Open"),
        ["active", "awaiting_mandate"].includes(plan.status) ? el("button", { type: "button", class: "small danger", "aria-label": `Cancel plan ${plan.id}`, onclick: () => cancelPlan(plan) }, "Cancel") : null))))))));
}

async function load() {
  await Promise.all([loadLinks(), loadPlans()]);
}

function renderColumns() {
  const order = [...shown, ...Object.keys(COLUMNS).filter((c) => !shown.includes(c))];
  list.replaceChildren(...order.map((c, i) => {
    const box = el("input", { type: "checkbox", id: `col-${c}`, checked: shown.includes(c) });
    box.addEventListener("change", () => { shown = order.filter((k) => k === c ? box.checked : shown.includes(k)); commit(`col-${c}`); });
    const move = (delta, text) => el("button", { type: "button", class: "small", "aria-label": `Move ${COLUMNS[c]} ${text.toLowerCase()}`, disabled: i + delta < 0 || i + delta >= order.length,
      onclick: (event) => {
        [order[i], order[i + delta]] = [order[i + delta], order[i]];
        shown = order.filter((k) => shown.includes(k));
        commit(null, event.currentTarget.getAttribute("aria-label"));
      } }, text);
    return el("li", {}, box, el("label", { for: box.id }, COLUMNS[c]), move(-1, "Up"), move(1, "Down"));
  }));
}

// Saves, redraws and keeps keyboard focus on the control just used.
function commit(focusId, focusLabel) {
  localStorage.setItem(STORE, JSON.stringify(shown));
  renderColumns();
  (focusId ? document.getElementById(focusId) : list.querySelector(`button[aria-label="${focusLabel}"]:not(:disabled)`))?.focus();
  load().catch((exc) => say(notice, exc.message, "error"));
}

for (const radio of document.querySelectorAll('input[name="sent-status"]')) {
  radio.addEventListener("change", () => load().catch((exc) => say(notice, exc.message, "error")));
}
$("#sent-columns").addEventListener("click", () => { renderColumns(); dialog.showModal(); });
$("#sent-export").addEventListener("click", async () => {
  const query = new URLSearchParams();
  if (status()) query.append("status", status());
  for (const c of shown) query.append("columns", c);
  try {
    const name = await download(`/sent-pages/export?${query}`, "sent-pages.xlsx");
    say(notice, `Exported ${name}.`, "ok");
  } catch (exc) {
    say(notice, exc.message, "error");
  }
});

plansExport.addEventListener("click", async () => {
  const wanted = PLAN_STATUS[status()];
  try {
    const name = await download(`/sent-pages/plans/export${wanted}`, "payment-plans.xlsx");
    say(notice, `Exported ${name}: a row per instalment.`, "ok");
  } catch (exc) {
    say(notice, exc.message, "error");
  }
});

export const showSent = load;
