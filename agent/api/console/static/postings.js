// Manage Postings: payments written back into the matter system, by state, with retry, reallocate and remove.
import { $, api, badge, el, say, session } from "./api.js";
import { money, when } from "./format.js";
import { historyList } from "./audit.js";

const notice = $("#notice");
const table = $("#postings-table");
const state = $("#postings-state");
const dialog = $("#posting-dialog");
const dialogBody = $("#posting-body");

// What happened to a posting, in words a billing clerk can act on.
function story(p) {
  switch (p.state) {
    case "posted": return `Written into the matter system ${when(p.posted_at)}.${p.note ? " " + p.note + "." : ""}`;
    case "pending": return "Waiting to be written into the matter system.";
    case "posting": return "Being written into the matter system now.";
    case "retrying": return `Not written yet (attempt ${p.attempts}): ${p.last_error}. The agent tries again ${when(p.next_attempt_at)}.`;
    case "failed": return `Failed: ${p.last_error}. Fix the cause, then press Retry.`;
    case "incomplete": return `Needs you: ${p.note || "the payment could not be matched to statements"}. Reallocate it to statements, or Remove it if you record it by hand.`;
    case "removed": return `Removed: ${p.note || "handled by hand"}.`;
    default: return p.last_error || p.note || "";
  }
}

async function act(promise, done) {
  try {
    await promise;
    say(notice, done, "ok");
  } catch (exc) {
    say(notice, exc.message, "error");
  }
  await load();
}

function reallocate(p) {
  const rows = el("tbody");
  const error = el("p", { class: "alert", role: "alert", hidden: true });
  let n = 0;
  const addRow = (number = "", amount = "") => {
    n += 1;
    rows.append(el("tr", {},
      el("td", {}, el("label", { for: `re-st-${n}`, class: "help" }, `Statement ${n}`), el("input", { id: `re-st-${n}`, class: "statement", value: number, autocomplete: "off" })),
      el("td", {}, el("label", { for: `re-am-${n}`, class: "help" }, `Amount ${n}`), el("input", { id: `re-am-${n}`, class: "amount", inputmode: "decimal", value: amount, autocomplete: "off" }))));
  };
  const form = el("form", { class: "stack" },
    el("p", {}, `Split ${money(p.amount, p.currency)} from payment ${p.payment_ref} over statements. The amounts must add up to the payment exactly.`),
    el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "Statement number"), el("th", {}, "Amount"))), rows),
    el("p", {}, el("button", { type: "button", onclick: () => { addRow(); rows.querySelector("tr:last-child input").focus(); } }, "Add a statement")),
    error,
    el("p", { class: "actions" }, el("button", { type: "submit", class: "primary" }, "Reallocate"), el("button", { type: "button", "data-close": true }, "Close")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const statements = {};
    for (const tr of rows.children) {
      const [number, amount] = [...tr.querySelectorAll("input")].map((i) => i.value.trim());
      if (number && amount) statements[number] = amount;
    }
    try {
      const ids = await api("POST", `/postings/${p.id}/reallocate`, { statements });
      dialog.close();
      say(notice, `Posting ${p.id} reallocated into posting${ids.length === 1 ? "" : "s"} ${ids.join(", ")}.`, "ok");
      await load();
    } catch (exc) {
      say(error, exc.message, "error");
    }
  });
  addRow(p.statement_number || "", p.amount);
  $("#posting-title").textContent = `Reallocate posting ${p.id}`;
  dialogBody.replaceChildren(form);
  dialog.showModal();
  form.querySelector("input").focus();
}

function remove(p) {
  const error = el("p", { class: "alert", role: "alert", hidden: true });
  const reason = el("textarea", { id: "remove-reason", rows: 3, required: true });
  const form = el("form", { class: "stack" },
    el("p", {}, `Take posting ${p.id} (${money(p.amount, p.currency)}) out of the queue because you record it by hand in the matter system.`),
    el("p", {}, el("label", { for: "remove-reason" }, "Why"), reason),
    error,
    el("p", { class: "actions" }, el("button", { type: "submit", class: "primary danger" }, "Remove posting"), el("button", { type: "button", "data-close": true }, "Close")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await api("POST", `/postings/${p.id}/remove`, { reason: reason.value.trim() });
      dialog.close();
      say(notice, `Posting ${p.id} removed.`, "ok");
      await load();
    } catch (exc) {
      say(error, exc.message, "error");
    }
  });
  $("#posting-title").textContent = `Remove posting ${p.id}`;
  dialogBody.replaceChildren(form);
  dialog.showModal();
  reason.focus();
}

// Admins only (the API refuses anyone else): money back to the payer, and its reversal posted once. A refund is an
// action on the payment, pre-filled with what is left to refund, showing every posting the payment was split into.
async function refund(p) {
  const ref = encodeURIComponent(p.payment_ref);
  let payment, detail;
  try {
    [payment, detail] = await Promise.all([api("GET", `/payments/${ref}/refund`), api("GET", `/postings/${p.id}`)]);
  } catch (exc) {
    say(notice, exc.message, "error");
    return;
  }
  const error = el("p", { class: "alert", role: "alert", hidden: true });
  const amount = el("input", { id: "refund-amount", inputmode: "decimal", value: payment.left, autocomplete: "off" });
  const reason = el("textarea", { id: "refund-reason", rows: 3, required: true });
  const parts = el("table", { id: "refund-postings" },
    el("thead", {}, el("tr", {}, ["#", "Statement", "Amount", "State"].map((h) => el("th", { scope: "col", class: h === "Amount" ? "num" : null }, h)))),
    el("tbody", {}, detail.allocations.map((a) => el("tr", {},
      el("td", {}, String(a.id)), el("td", {}, a.statement_number || a.matter_number || "—"),
      el("td", { class: "num" }, money(a.amount, a.currency)), el("td", {}, badge(a.state))))));
  const form = el("form", { class: "stack" },
    el("p", {}, `Payment ${payment.payment_ref}: ${money(payment.amount, payment.currency)} paid, ${money(payment.refunded, payment.currency)} refunded, ${money(payment.left, payment.currency)} left to refund. Its reversal is written into the matter system once.`),
    el("p", { class: "help" }, "Its postings:"), parts,
    el("p", {}, el("label", { for: "refund-amount" }, "Amount to refund"), amount),
    el("p", {}, el("label", { for: "refund-reason" }, "Why"), reason),
    error,
    el("p", { class: "actions" }, el("button", { type: "submit", class: "danger" }, "Refund"), el("button", { type: "button", "data-close": true }, "Close")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const done = await api("POST", `/payments/${ref}/refund`, { amount: amount.value.trim(), reason: reason.value.trim() });
      dialog.close();
      say(notice, `Refund ${done.id} of ${money(done.amount, done.currency)}: ${done.status} at the provider; its reversal is queued.`, "ok");
      await load();
    } catch (exc) {
      say(error, exc.message, "error");
    }
  });
  $("#posting-title").textContent = `Refund payment ${payment.payment_ref}`;
  dialogBody.replaceChildren(form);
  dialog.showModal();
  amount.focus();
}

// The posting's own history: who retried, reallocated or removed it, and when.
function history(p) {
  $("#posting-title").textContent = `Posting ${p.id}: history`;
  dialogBody.replaceChildren(el("p", {}, `${money(p.amount, p.currency)} from payment ${p.payment_ref}. ${story(p)}`),
    historyList(`/postings/${p.id}/history`, `Who did what to posting ${p.id}`,
      "No one has retried, reallocated or removed it."),
    el("p", { class: "actions" }, el("button", { type: "button", "data-close": true }, "Close")));
  dialog.showModal();
}

function actions(p, refundHere) {
  const buttons = [el("button", { type: "button", class: "small", onclick: () => history(p) }, "History")];
  if (refundHere) {
    const button = el("button", { type: "button", class: "small", onclick: () => refund(p) }, "Refund payment");
    button.setAttribute("aria-label", `Refund payment ${p.payment_ref}`);
    buttons.push(button);
  }
  if (["failed", "retrying"].includes(p.state)) {
    buttons.push(el("button", { type: "button", class: "small", onclick: () => act(api("POST", `/postings/${p.id}/retry`), `Posting ${p.id} will be retried.`) }, "Retry"));
  }
  // Reallocating and removing move client money between statements: admins only (the API refuses a clerk too).
  const admin = session.info?.role === "admin";
  if (admin && p.state === "incomplete") buttons.push(el("button", { type: "button", class: "small", onclick: () => reallocate(p) }, "Reallocate"));
  if (admin && ["pending", "retrying", "failed", "incomplete"].includes(p.state)) {
    buttons.push(el("button", { type: "button", class: "small danger", onclick: () => remove(p) }, "Remove"));
  }
  return buttons.map((b) => { if (!b.hasAttribute("aria-label")) b.setAttribute("aria-label", `${b.textContent} posting ${p.id}`); return b; });
}

async function load() {
  const chosen = state.value;
  const rows = await api("GET", `/manage-postings${chosen ? `?status=${chosen}` : ""}`);
  if (!rows.length) {
    table.replaceChildren(el("p", { class: "empty" }, chosen ? `No postings in “${state.selectedOptions[0].textContent}”.` : "No payments have come in yet."));
    return;
  }
  // One Refund per payment, on its first posted row: the payment is refunded, not a part of it.
  const admin = document.body.dataset.role === "admin";
  const offered = new Set();
  const refundHere = (p) => {
    if (!admin || p.kind !== "payment" || !p.payment_ref || p.state !== "posted" || offered.has(p.payment_ref)) return false;
    offered.add(p.payment_ref);
    return true;
  };
  table.replaceChildren(el("table", { id: "postings-list" },
    el("thead", {}, el("tr", {}, ["#", "State", "Paid", "Matter", "Statement", "Amount", "What happened", "Action"].map((h) =>
      el("th", { scope: "col", class: h === "Amount" ? "num" : null }, h)))),
    el("tbody", {}, rows.map((p) => el("tr", { "data-posting": p.id },
      el("td", {}, String(p.id)),
      el("td", {}, badge(p.state), p.kind === "reversal" ? el("div", { class: "help" }, "reversal") : null),
      el("td", { class: "nowrap" }, when(p.paid_at), el("div", { class: "help" }, p.payment_ref)),
      el("td", { class: "nowrap" }, p.matter_number || "—"),
      el("td", {}, p.statement_number || "—"),
      el("td", { class: "num" }, money(p.amount, p.currency)),
      el("td", { class: "story" }, story(p)),
      el("td", {}, el("div", { class: "actions" }, actions(p, refundHere(p)))))))));
}

state.addEventListener("change", () => load().catch((exc) => say(notice, exc.message, "error")));
$("#postings-refresh").addEventListener("click", () => load().catch((exc) => say(notice, exc.message, "error")));
$("#postings-retry-failed").addEventListener("click", async () => {
  try {
    const { retried } = await api("POST", "/postings/retry-failed");
    say(notice, retried ? `${retried} failed posting${retried === 1 ? "" : "s"} will be retried.` : "No failed postings to retry.", "ok");
  } catch (exc) {
    say(notice, exc.message, "error");
  }
  await load();
});

export const showPostings = load;
