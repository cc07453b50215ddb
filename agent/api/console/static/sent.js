// Sent Pages: links by status, a column configurator (tick and order, kept in this browser), Export to Excel, cancel.
import { $, api, badge, download, el, say } from "./api.js";
import { day, money, when } from "./format.js";

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

async function load() {
  const chosen = status();
  const links = await api("GET", `/sent-pages${chosen ? `?status=${chosen}` : ""}`);
  const label = document.querySelector(`label[for="${document.querySelector('input[name="sent-status"]:checked').id}"]`).textContent;
  if (!links.length) {
    table.replaceChildren(el("p", { class: "empty" }, `No links in “${label}”.`));
    return;
  }
  // Wide column choices scroll inside their own region, never the whole page.
  table.replaceChildren(el("div", { class: "table-scroll", tabindex: 0, role: "region", "aria-label": `${label} links` }, el("table", { id: "links-table" },
    el("caption", {}, `${label}: ${links.length} link${links.length === 1 ? "" : "s"}`),
    el("thead", {}, el("tr", {}, shown.map((c) => el("th", { class: c === "amount" ? "num" : null, scope: "col" }, COLUMNS[c])),
      el("th", { scope: "col" }, el("span", { class: "muted" }, "Action")))),
    el("tbody", {}, links.map((link) => el("tr", { "data-link": link.id },
      shown.map((c) => cell(link, c)),
      el("td", {}, link.status === "outstanding" ? el("div", { class: "row-actions" },
        el("button", { type: "button", class: "small", "aria-label": `Copy link ${link.id}`, onclick: (event) => copyLink(link, event.currentTarget) }, "Copy"),
        el("button", { type: "button", class: "small danger", "aria-label": `Cancel link ${link.id}`, onclick: () => cancel(link) }, "Cancel"))
        : "")))))));
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

export const showSent = load;
