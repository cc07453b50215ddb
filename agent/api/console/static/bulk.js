// Bulk upload: the file is read by the agent's bulk reader; its row-by-row problems are shown as they are, then
// the clerk reviews (add / delete rows) and chooses Send All or Generate Links for Download.
import { $, api, badge, download, el, say, session } from "./api.js";
import { money, when } from "./format.js";
import { notReady, sendWords } from "./linkview.js";

const form = $("#bulk-form");
const error = $("#bulk-error");
const report = $("#bulk-report");
const review = $("#bulk-review");
const FIELDS = [["invoice", "Invoice number"], ["invoice_date", "Invoice date"], ["due_date", "Due date"],
  ["name", "Recipient name"], ["email", "Recipient email"], ["amount", "Amount"], ["message", "Custom message"]];
let rows = [];

// agent.engine.bulk's BulkProblem: {row, field, value, reason}; the row as a spreadsheet numbers it.
function problemsTable(problems) {
  return el("div", { class: "card", id: "bulk-problems" },
    el("p", { class: "alert", role: "alert" }, "There is a problem with the data in your file that needs fixing before it can be uploaded. Correct these rows and upload it again."),
    el("table", {},
      el("caption", {}, `${problems.length} problem${problems.length === 1 ? "" : "s"} found`),
      el("thead", {}, el("tr", {}, ["Row", "Column", "Value", "Problem"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, problems.map((p) => el("tr", {},
        el("td", {}, String(p.row)), el("td", {}, p.field || ""),
        el("td", { class: "break" }, p.value ?? ""), el("td", {}, p.reason))))));
}

const currency = () => session.accounts.find((a) => a.name === $("#bulk-account").value)?.currency || "";

// A reviewed row's result: the link's status and whether it was emailed (sendWords), or why no link was made.
function resultCell(result) {
  if (!result) return "";
  if (result.error) return el("span", { class: "alert" }, result.error);
  return [badge(result.link.status), " ", result.send ? sendWords(result.send) : "Link created, not sent"];
}

function renderReview(results = {}) {
  if (!rows.length) {
    review.replaceChildren(el("p", { class: "empty" }, "No rows to send. Add one below or upload another file."), addForm());
    return;
  }
  const body = el("tbody", {}, rows.map((row, i) => el("tr", {},
    FIELDS.map(([key]) => el("td", { class: key === "amount" ? "num" : key.endsWith("date") ? "nowrap" : null },
      key === "amount" ? money(row.amount, currency()) : key.endsWith("date") ? when(row[key]) : row[key] || "")),
    el("td", {}, resultCell(results[i])),
    el("td", {}, el("button", { type: "button", class: "small danger", "aria-label": `Delete row ${i + 1}`, onclick: () => { rows.splice(i, 1); renderReview(); } }, "Delete")))));
  review.replaceChildren(el("div", { class: "card" },
    el("h2", {}, `Review: ${rows.length} row${rows.length === 1 ? "" : "s"}`),
    el("table", { id: "bulk-rows" }, el("thead", {}, el("tr", {}, FIELDS.map(([, label]) => el("th", {}, label)), el("th", {}, "Result"), el("th", {}, "Action"))), body),
    el("p", { class: "actions" },
      notReady("email")
        ? el("button", { type: "button", class: "primary", disabled: true, "aria-describedby": "bulk-why" }, "Send All: email not set up")
        : el("button", { type: "button", class: "primary", onclick: () => create(true) }, "Send All"),
      el("button", { type: "button", onclick: () => create(false) }, "Generate Links for Download")),
    notReady("email") ? el("p", { class: "not-ready", id: "bulk-why" }, notReady("email")) : null,
    addForm()));
}

function addForm() {
  const inputs = FIELDS.map(([key, label]) => el("p", {}, el("label", { for: `bulk-add-${key}` }, label),
    el("input", { id: `bulk-add-${key}`, name: key, type: key.endsWith("date") ? "date" : key === "email" ? "email" : "text", autocomplete: "off" })));
  const added = el("form", { class: "stack", id: "bulk-add" }, el("fieldset", {}, el("legend", {}, "Add a row"),
    el("div", { class: "field-grid" }, inputs), el("button", { type: "submit" }, "Add")));
  added.addEventListener("submit", (event) => {
    event.preventDefault();
    rows.push(Object.fromEntries([...new FormData(added)].map(([k, v]) => [k, String(v).trim()]).filter(([, v]) => v)));
    renderReview();
  });
  return added;
}

async function create(send) {
  say(error, "");
  try {
    const result = await api("POST", "/bulk/links", { account: $("#bulk-account").value, rows, send });
    renderReview(result.results);
    const made = result.results.filter((r) => r.link).map((r) => `ids=${encodeURIComponent(r.link.id)}`);
    if (!send && made.length) await download(`/sent-pages/export?${made.join("&")}`, "payment-links.xlsx");
  } catch (exc) {
    say(error, exc.message, "error");
  }
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  error.hidden = true;
  report.replaceChildren();
  const file = $("#bulk-file").files[0];
  if (!file) { say(error, "Choose the file to upload.", "error"); return; }
  try {
    const read = await api("POST", `/bulk/review?filename=${encodeURIComponent(file.name)}`, file, { headers: { "Content-Type": "application/octet-stream" } });
    if (read.problems.length) report.replaceChildren(problemsTable(read.problems));
    // agent.engine.bulk's BulkRow names -> the review's (and /bulk/links') names
    rows = read.ok ? read.rows.map((r) => ({ invoice: r.invoice_number, invoice_date: r.invoice_date, due_date: r.due_date,
      name: r.recipient_name, email: r.recipient_email, amount: r.amount, message: r.message })) : [];
    if (read.ok) renderReview(); else review.replaceChildren();
  } catch (exc) {
    say(error, exc.message, "error");
  }
});

$("#bulk-template").addEventListener("click", () => download("/bulk/template", "bulk-upload-template.csv").catch((exc) => say(error, exc.message, "error")));

export async function showBulk() {
  // Nothing to load until a file is chosen.
}
