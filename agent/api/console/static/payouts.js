// Payouts: what each provider paid into the bank, item by item, whether it adds up, and client money kept whole.
import { $, api, el, say, session } from "./api.js";
import { money, when } from "./format.js";

const notice = $("#notice");
const table = $("#payouts-table");
const dialog = $("#payout-dialog");

// The firm's word for the account's kind (office / client in the UK), from /accounts.
function kindWord(kind) {
  return session.accounts.find((a) => a.kind === kind)?.kind_word || kind;
}

function addsUp(p) {
  return p.adds_up ? "Adds up to the penny"
    : `Does not add up: the items come to ${money(p.items_total, p.currency)}`;
}

function clientMoney(p) {
  if (p.shortfall === null || p.shortfall === undefined) return "";
  return p.breach_cleared_at ? `${money(p.shortfall, p.currency)} of fees taken from client money, cleared ${when(p.breach_cleared_at)}`
    : `Breach: ${money(p.shortfall, p.currency)} of fees taken from client money; transfer it back`;
}

async function show(p) {
  const full = await api("GET", `/payouts/${encodeURIComponent(p.id)}`);
  $("#payout-title").textContent = `Payout ${full.payout_ref}`;
  $("#payout-body").replaceChildren(
    el("p", {}, `${money(full.amount, full.currency)} to the ${full.account} (${kindWord(full.account_kind)}) account, bank reference ${full.bank_reference || "—"}. ${addsUp(full)}.`),
    clientMoney(full) ? el("p", { class: full.breach_cleared_at ? "help" : "alert" }, clientMoney(full)) : null,
    el("table", { id: "payout-items" },
      el("thead", {}, el("tr", {}, ["Item", "Amount", "Payment", "Refund"].map((h) =>
        el("th", { scope: "col", class: h === "Amount" ? "num" : null }, h)))),
      el("tbody", {}, full.items.map((i) => el("tr", {},
        el("td", {}, i.kind), el("td", { class: "num" }, money(i.amount, full.currency)),
        el("td", {}, i.payment_ref || "—"), el("td", {}, i.refund || "")))),
      el("tfoot", {}, el("tr", {}, el("th", { scope: "row" }, "Bank amount"),
        el("td", { class: "num" }, money(full.amount, full.currency)), el("td", {}), el("td", {})))),
    el("p", { class: "actions" }, el("button", { type: "button", "data-close": true }, "Close")));
  dialog.showModal();
}

// The sandbox plays the provider: an admin may have it pay out now instead of after midnight (a demo's payouts,
// fee postings and client-money check within a minute). Real providers pay out on their own schedule.
const sandboxed = () => session.accounts.some((a) => a.provider === "sandbox");

function noneYet() {
  return sandboxed()
    ? "No payouts yet. The sandbox pays out each day's settled payments after midnight (UTC)" +
      (session.info?.role === "admin" ? "; Pay out now pays out today's at once." : "; an admin can pay them out now.")
    : "No payouts yet. Each provider pays out on its own schedule, days after a payment settles; the agent reads them daily.";
}

async function payOutNow() {
  const button = $("#payouts-now");
  button.disabled = true;
  try {
    const run = await api("POST", "/payouts/pay-out-now");
    const done = run.new
      ? `${run.new} payout${run.new === 1 ? "" : "s"} made and read; ${run.postings} posting${run.postings === 1 ? "" : "s"} queued for the books.`
      : "Nothing to pay out: no settled payment since the sandbox's last payout. Pay a link on the sandbox pay page first.";
    say(notice, [done, ...run.breaches.map((b) => b.message)].join(" "), run.breaches.length ? "error" : "info");
    await load();
  } finally {
    button.disabled = false;
  }
}

async function load() {
  $("#payouts-now").hidden = !(sandboxed() && session.info?.role === "admin");
  const rows = await api("GET", "/payouts");
  if (!rows.length) {
    table.replaceChildren(el("p", { class: "empty" }, noneYet()));
    return;
  }
  table.replaceChildren(el("table", { id: "payouts-list" },
    el("thead", {}, el("tr", {}, ["Created", "Account", "Bank amount", "Fees", "Breakdown", "Client money", ""].map((h) =>
      el("th", { scope: "col", class: ["Bank amount", "Fees"].includes(h) ? "num" : null }, h || el("span", { class: "help" }, "Action"))))),
    el("tbody", {}, rows.map((p) => el("tr", { "data-payout": p.id },
      el("td", { class: "nowrap" }, when(p.created_at), el("div", { class: "help" }, p.payout_ref)),
      el("td", {}, `${p.account} (${kindWord(p.account_kind)})`),
      el("td", { class: "num" }, money(p.amount, p.currency)),
      el("td", { class: "num" }, money(p.fees, p.currency)),
      el("td", { class: p.adds_up ? null : "marker failed" }, addsUp(p)),
      el("td", { class: p.shortfall && !p.breach_cleared_at ? "marker failed" : null }, clientMoney(p)),
      el("td", {}, el("button", { type: "button", class: "small", "aria-label": `Show payout ${p.payout_ref}`,
        onclick: () => show(p).catch((exc) => say(notice, exc.message, "error")) }, "Show")))))));
}

$("#payouts-refresh").addEventListener("click", () => load().catch((exc) => say(notice, exc.message, "error")));
$("#payouts-now").addEventListener("click", () => payOutNow().catch((exc) => say(notice, exc.message, "error")));

export const showPayouts = load;
