// The console shell: hash routing between screens, the Debts screen and the Instant Bank Pay popup (the Payment
// plan popup beside it is plans.js).
import { $, api, el, fillAccounts, formError, say, session } from "./api.js";
import { money, useFirmFormat, when } from "./format.js";
import { deliveryWords, linkView } from "./linkview.js";
import { showBulk } from "./bulk.js";
import { showPayouts } from "./payouts.js";
import { openPlan } from "./plans.js";
import { showPostings } from "./postings.js";
import { showQuick } from "./quick.js";
import { showSent } from "./sent.js";
import { showSettings } from "./settings.js";
import { showAudit } from "./audit.js";


const SCREENS = { debts: showDebts, quick: showQuick, bulk: showBulk, sent: showSent, postings: showPostings, payouts: showPayouts, settings: showSettings, audit: showAudit };
const notice = $("#notice");


async function route() {
  const name = location.hash.slice(1) || "debts";
  const screen = SCREENS[name] ? name : "debts";
  say(notice, "");
  for (const section of document.querySelectorAll("section[data-screen]")) section.hidden = section.dataset.screen !== screen;
  for (const link of document.querySelectorAll("header nav a")) {
    if (link.getAttribute("href") === `#${screen}`) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = `${$(`#screen-${screen} h1`).textContent} · Ledgerlink`;
  try {
    await SCREENS[screen]();
  } catch (exc) {
    say(notice, exc.message, "error");
  }
}

// A fee taken from client money is a compliance breach: a banner on every screen until a person clears it.
function clientMoney(breaches) {
  const banner = $("#client-money");
  banner.hidden = !breaches.length;
  banner.replaceChildren(...(breaches.length ? [el("strong", {}, "Client money: "),
    el("ul", {}, breaches.map((b) => el("li", {}, b)))] : []));
}

async function start() {
  try {
    const [status, accounts, info] = await Promise.all([api("GET", "/status"), api("GET", "/accounts"),
      api("GET", "/console-info")]);
    session.info = info;
    useFirmFormat(info.locale, info.time_zone);
    document.body.dataset.role = info.role;
    $("#signed-in-as").textContent = `${info.user} (${info.role})`;
    session.accounts = accounts;
    session.defaultAccount = accounts.find((a) => a.default)?.name;
    for (const select of document.querySelectorAll("select.accounts")) fillAccounts(select);
    $("#agent-version").textContent = `Ledgerlink ${status.version}`;
    clientMoney(status.client_money || []);
    $("#agent-status").textContent = status.last_sync
      ? `Connected · matters synced ${when(status.last_sync)}` : "Connected · waiting for the first sync";
  } catch (exc) {
    say(notice, `The agent did not answer: ${exc.message}`, "error");
  }
  $("#sign-out").addEventListener("click", async () => {
    try { await api("POST", "/console/sign-out"); } catch { /* signed out here whatever the agent says */ }
    location.replace("/console/login");
  });
  // The skip link moves focus only: the #hash is the router's, so following it would switch screens.
  $(".skip").addEventListener("click", (event) => { event.preventDefault(); $("#main").focus(); });
  for (const dialog of document.querySelectorAll("dialog")) {
    dialog.addEventListener("click", (event) => { if (event.target.closest("[data-close]")) dialog.close(); });
  }
  window.addEventListener("hashchange", route);
  await route();
}

// ------------------------------------------------------------------------------------------------ Debts

const results = $("#search-results");
const matterPanel = $("#matter");

const PAGE = 25;
let owedOffset = 0;

async function showDebts() {
  $("#search-form").onsubmit = (event) => { event.preventDefault(); search($("#search").value.trim()); };
  const account = $("#owed-account");
  if (!account.options.length) {
    account.replaceChildren(el("option", { value: "" }, "All accounts"),
      ...session.accounts.map((a) => el("option", { value: a.name }, `${a.name} (${a.currency})`)));
  }
  $("#owed-filters").onchange = () => { owedOffset = 0; owed(); };
  await owed();
}

// The Debts screen opens on what is owed: every matter with open statements, oldest debt first, a page at a time.
async function owed() {
  const list = $("#owed-list");
  const params = new URLSearchParams({ limit: String(PAGE), offset: String(owedOffset) });
  for (const [name, value] of new FormData($("#owed-filters"))) if (value) params.set(name, String(value));
  let page;
  try {
    page = await api("GET", `/debts?${params}`);
  } catch (exc) {
    list.replaceChildren(el("p", { class: "alert", role: "alert" }, exc.message));
    return;
  }
  for (const d of page.debts) clientNames.set(d.matter.number, d.matter.client_name);
  if (!page.debts.length) {
    list.replaceChildren(el("p", { class: "empty" }, owedOffset ? "No more debts." : "Nothing is owed on these terms."));
    return;
  }
  const last = Math.min(owedOffset + page.debts.length, page.total);
  const turn = (by) => { owedOffset = Math.max(0, owedOffset + by); owed(); };
  list.replaceChildren(el("table", { id: "owed-table" },
    el("caption", {}, `${owedOffset + 1}–${last} of ${page.total} matter${page.total === 1 ? "" : "s"} owing`),
    el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Matter"), el("th", { scope: "col" }, "Client"),
      el("th", { scope: "col" }, "Oldest bill"), el("th", { scope: "col", class: "num" }, "Bills"),
      el("th", { scope: "col", class: "num" }, "Open balance"), el("th", { scope: "col", class: "num" }, "Left to collect"),
      el("th", { scope: "col" }, "Payment link"), el("th", { scope: "col" }, el("span", { class: "muted" }, "Action")))),
    el("tbody", {}, page.debts.map((d) => el("tr", { "data-matter": d.matter.number },
      el("td", { class: "nowrap" }, d.matter.number, el("br"), el("span", { class: "muted" }, d.matter.name)),
      el("td", {}, d.matter.client_name || ""),
      el("td", { class: "nowrap" }, when(d.oldest_issue_date)),
      el("td", { class: "num" }, String(d.statements)),
      el("td", { class: "num" }, money(d.open_balance, d.currency)),
      el("td", { class: "num" }, money(d.left_to_collect, d.currency)),
      el("td", {}, d.matter.link_sent ? "Waiting to be paid" : ""),
      el("td", {}, el("button", { type: "button", class: "small", "aria-label": `Open ${d.matter.number}`,
        onclick: () => openMatter(d.matter.number).then(() => $("#matter").scrollIntoView()) }, "Open")))))),
  el("p", { class: "actions" },
    el("button", { type: "button", id: "owed-previous", disabled: owedOffset === 0, onclick: () => turn(-PAGE) }, "Previous"),
    el("button", { type: "button", id: "owed-next", disabled: last >= page.total, onclick: () => turn(PAGE) }, "Next")));
}

const clientNames = new Map();  // matter number -> client name, from the search (the detail has no client)

// Each matter's outstanding link and its sends (matter number -> delivery), for the words on the debt.
async function deliveries(numbers) {
  if (!numbers.length) return new Map();
  const found = await api("GET", `/link-delivery?${numbers.map((n) => `matter=${encodeURIComponent(n)}`).join("&")}`);
  return new Map(found.map((d) => [d.matter_number, d]));
}

// The debt row's one line: the latest thing that happened to its link, a failure marked as one.
function lastWords(delivery) {
  const last = delivery.sends.at(-1);
  return el("span", { class: last && !last.ok ? "marker failed" : "marker" },
    deliveryWords(delivery.created_at, delivery.sends).at(-1));
}

// Money on its way that the open balance does not show yet (agent/state/owed.py); a refund only once there is one.
function inFlight(m) {
  const facts = [
    el("dt", {}, "Pending collections"), el("dd", {}, money(m.pending_collections, m.currency)),
    el("dt", {}, "Paid, not yet posted"), el("dd", {}, money(m.unposted_payments, m.currency)),
  ];
  if (Number(m.unposted_reversals) !== 0) {
    facts.push(el("dt", {}, "Refunded, not yet posted"), el("dd", {}, money(m.unposted_reversals, m.currency)));
  }
  return facts;
}

// The API's matter detail, flattened for the screens.
async function loadMatter(ref) {
  const d = await api("GET", `/matters/${encodeURIComponent(ref)}`);
  const delivery = d.link_sent ? (await deliveries([d.matter.number])).get(d.matter.number) : undefined;
  return {
    ...d.matter, statements: d.statements, currency: d.currency, open_balance: d.open_balance[d.currency] ?? "0",
    pending_collections: d.pending_collections, unposted_payments: d.unposted_payments,
    unposted_reversals: d.unposted_reversals, amount: d.default_amount,
    description: d.default_description, payer_name: d.payer_name, payer_email: d.payer_email,
    existing: d.existing_link, link_sent: d.link_sent, client_name: clientNames.get(d.matter.number),
    sends: delivery?.sends || [],
  };
}

async function search(text) {
  $("#debts-owed").hidden = Boolean(text);  // a search narrows the screen to what it finds; an empty one goes back
  if (!text) {
    results.replaceChildren(el("p", { class: "alert", role: "alert" }, "Type part of a matter number, matter name, client name or invoice number."));
    return;
  }
  results.replaceChildren(el("p", { class: "muted" }, "Searching…"));
  matterPanel.hidden = true;
  const rows = await api("GET", `/matters?q=${encodeURIComponent(text)}`);
  for (const m of rows) clientNames.set(m.number, m.client_name);
  const delivered = await deliveries(rows.filter((m) => m.link_sent).map((m) => m.number));
  if (!rows.length) {
    results.replaceChildren(el("p", { class: "empty" }, `No matter or client matches “${text}”.`));
    return;
  }
  results.replaceChildren(el("table", { id: "matters-table" },
    el("caption", {}, `${rows.length} matter${rows.length === 1 ? "" : "s"} found`),
    el("thead", {}, el("tr", {}, el("th", {}, "Matter"), el("th", {}, "Matter name"), el("th", {}, "Client"),
      el("th", {}, "Status"), el("th", {}, "Payment link"), el("th", {}, el("span", { class: "muted" }, "Action")))),
    el("tbody", {}, rows.map((m) => el("tr", { "data-matter": m.number },
      el("td", { class: "nowrap" }, m.number),
      el("td", {}, m.name),
      el("td", {}, m.client_name || m.client || ""),
      el("td", {}, m.status === "open" ? "Open" : "Closed"),
      el("td", { class: "delivery-cell" }, delivered.has(m.number) ? lastWords(delivered.get(m.number)) : ""),
      el("td", {}, el("button", { type: "button", class: "small", "aria-label": `Open ${m.number}`, onclick: () => openMatter(m.number) }, "Open")))))));
  if (rows.length === 1) await openMatter(rows[0].number);
}

export async function openMatter(ref) {
  const m = await loadMatter(ref);
  const statements = m.statements || [];
  matterPanel.replaceChildren(
    el("div", { class: "card" },
      el("h2", { id: "matter-title" }, `${m.number} · ${m.name}`),
      m.existing ? el("div", { class: "notice", id: "link-sent-marker" },
        el("p", {}, "This debt has a payment link waiting to be paid."),
        el("ul", { class: "delivery" }, deliveryWords(m.existing.created_at, m.sends).map((w) => el("li", {}, w)))) : null,
      el("dl", { class: "facts" },
        el("dt", {}, "Client"), el("dd", {}, m.client_name || "—"),
        el("dt", {}, "Payer"), el("dd", {}, [m.payer_name, m.payer_email || "no email saved"].filter(Boolean).join(" · ")),
        el("dt", {}, "Open balance"), el("dd", { id: "open-balance" }, money(m.open_balance, m.currency)),
        ...inFlight(m),
        el("dt", {}, "Left to collect"), el("dd", {}, money(m.amount, m.currency))),
      statements.length ? el("table", { id: "statements-table" },
        el("caption", {}, "Open statements"),
        el("thead", {}, el("tr", {}, el("th", {}, "Statement"), el("th", {}, "Issued"), el("th", {}, "Due"),
          el("th", { class: "num" }, "Billed"), el("th", { class: "num" }, "Balance"))),
        el("tbody", {}, statements.map((s) => el("tr", {},
          el("td", { class: "nowrap" }, s.number), el("td", { class: "nowrap" }, when(s.issue_date)),
          el("td", { class: "nowrap" }, when(s.due_date)),
          el("td", { class: "num" }, money(s.amount, s.currency)), el("td", { class: "num" }, money(s.balance, s.currency))))),
      ) : el("p", { class: "empty" }, "No open statements on this matter."),
      el("p", { class: "actions" },
        el("button", { type: "button", class: "primary", id: "instant-bank-pay", onclick: () => openPay(m.number) }, "Instant Bank Pay"),
        el("button", { type: "button", id: "payment-plan", onclick: () => openPlan(m, () => openMatter(m.number).then(() => $("#payment-plan")?.focus()).catch(() => {})) }, "Payment plan"))));
  matterPanel.hidden = false;
}

// ------------------------------------------------------------------------------------------------ the popup

const payDialog = $("#pay-dialog");
const payBody = $("#pay-body");
let payMatter = null;

// Closing redraws the matter (its link words may have changed); keyboard focus goes back to where it was.
payDialog.addEventListener("close", () => {
  if (payMatter) openMatter(payMatter).then(() => $("#instant-bank-pay")?.focus()).catch(() => {});
});

async function openPay(ref) {
  payMatter = ref;
  payBody.replaceChildren(el("p", { role: "status" }, "Checking for an existing payment link…"));
  payDialog.showModal();
  let m;
  try {
    m = await loadMatter(ref);
  } catch (exc) {
    payBody.replaceChildren(el("p", { class: "alert", role: "alert" }, exc.message));
    return;
  }
  if (m.existing) {
    showLink({ ...m.existing, existing: true }, m,
      "This debt already has a pending payment link, so it is shown instead of creating another one.");
  } else {
    payBody.replaceChildren(payForm(m, null));
    $("#pay-amount", payBody)?.focus();
  }
}

function showLink(link, m, note = "") {
  payBody.replaceChildren(linkView(link, { note, sends: link.existing ? m.sends : [], onRecreate: () => {
    payBody.replaceChildren(payForm(m, link));
    $("#pay-amount", payBody)?.focus();
  } }));
  payBody.querySelector("button")?.focus();
}

// The form before a link exists; with `replacing`, it is Cancel & Create New for that link.
function payForm(m, replacing) {
  const statements = m.statements || [];
  const error = el("p", { class: "alert", role: "alert", hidden: true });
  const noEmail = !m.payer_email;
  const amount = el("input", { id: "pay-amount", name: "amount", class: "amount", inputmode: "decimal", value: m.amount, required: true, autocomplete: "off" });
  const description = el("input", { id: "pay-description", name: "description", class: "wide", value: m.description, required: true });
  const account = el("select", { id: "pay-account", name: "account" });
  fillAccounts(account, replacing?.account);
  const chooseAll = el("input", { type: "radio", id: "pay-mode-balance", name: "mode", value: "balance", checked: true });
  const chooseSome = el("input", { type: "radio", id: "pay-mode-statements", name: "mode", value: "statements" });
  const picks = statements.map((s) => ({
    s,
    box: el("input", { type: "checkbox", id: `pick-${s.key}`, checked: true }),
    amount: el("input", { id: `pick-amount-${s.key}`, class: "amount", inputmode: "decimal", value: s.balance, "aria-label": `Amount for ${s.number}` }),
  }));
  const pickTable = el("table", { id: "pick-table", hidden: true },
    el("thead", {}, el("tr", {}, el("th", {}, "Pay"), el("th", {}, "Statement"), el("th", { class: "num" }, "Balance"), el("th", { class: "num" }, "Amount to collect"))),
    el("tbody", {}, picks.map(({ s, box, amount: a }) => el("tr", {},
      el("td", {}, box, " ", el("label", { for: box.id }, `Include ${s.number}`)),
      el("td", {}, s.number), el("td", { class: "num" }, money(s.balance, s.currency)), el("td", { class: "num" }, a)))));
  const sync = () => {
    const bySome = chooseSome.checked;
    pickTable.hidden = !bySome;
    amountField.hidden = bySome;  // the chosen statements' amounts are what is collected
    amount.disabled = bySome;
    for (const p of picks) p.amount.disabled = !p.box.checked;
  };
  for (const input of [chooseAll, chooseSome, ...picks.map((p) => p.box)]) input.addEventListener("change", sync);
  const amountField = el("p", { id: "pay-amount-field" }, el("label", { for: "pay-amount" }, `Amount (${m.currency})`), amount,
    el("span", { class: "help" }, "The remaining balance after pending collections and payments not yet posted."));

  const submit = el("button", { type: "submit", class: "primary", id: "pay-create", disabled: noEmail },
    replacing ? "Cancel old link & create new" : "Create link");
  const form = el("form", { class: "stack", id: "pay-form" },
    el("dl", { class: "facts" },
      el("dt", {}, "Matter"), el("dd", {}, `${m.number} · ${m.name}`),
      el("dt", {}, "Payer"), el("dd", { id: "pay-payer" }, [m.payer_name, m.payer_email].filter(Boolean).join(" · ") || "none"),
      el("dt", {}, "Open balance"), el("dd", {}, money(m.open_balance, m.currency)),
      ...inFlight(m)),
    noEmail ? el("p", { class: "alert", role: "alert", id: "email-required" },
      `Email required: ${m.payer_name || "the payer"} has no email address saved. Add one in the matter system ` +
      "(it is needed even if you will send the link by text); the agent picks it up at the next sync.") : null,
    replacing ? el("p", { class: "warning" }, `Link ${replacing.id} will be cancelled first; the new link is created only once the cancellation is confirmed.`) : null,
    el("p", {}, el("label", { for: "pay-account" }, "Merchant account"), account),
    statements.length > 1 ? el("fieldset", {},
      el("legend", {}, "What to collect"),
      el("p", { class: "choices" },
        el("span", { class: "choice" }, chooseAll, el("label", { for: chooseAll.id }, "The remaining balance (oldest statements first)")),
        el("span", { class: "choice" }, chooseSome, el("label", { for: chooseSome.id }, "Choose statements and amounts"))),
      pickTable) : null,
    amountField,
    el("p", {}, el("label", { for: "pay-description" }, "Description"), description,
      el("span", { class: "help" }, "The service name and today's date; change it if the payer needs more.")),
    error,
    el("p", { class: "actions sticky-actions" }, submit, el("button", { type: "button", "data-close": true }, "Close")));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    // Cancel & Create New keeps the old link's matter (the API's Recreate names none); a new link names it.
    const body = replacing ? { description: description.value.trim(), account: account.value }
      : { matter: m.number, description: description.value.trim(), account: account.value };
    if (chooseSome.checked) {
      body.statements = Object.fromEntries(picks.filter((p) => p.box.checked).map((p) => [p.s.number, p.amount.value.trim()]));
      if (!Object.keys(body.statements).length) { say(error, "Tick at least one statement.", "error"); return; }
    } else {
      body.amount = amount.value.trim();
    }
    submit.disabled = true;
    submit.textContent = replacing ? "Cancelling and creating…" : "Creating…";
    try {
      const link = replacing
        ? await api("POST", `/links/${encodeURIComponent(replacing.id)}/recreate`, body)
        : await api("POST", "/links", body);
      showLink(link, m, replacing ? `Link ${replacing.id} was cancelled and this new link replaces it.`
        : link.existing ? "This debt already had a pending payment link, so it is shown instead of creating another one." : "");
    } catch (exc) {
      formError(error, exc, { amount, description, account });
      submit.disabled = false;
      submit.textContent = replacing ? "Cancel old link & create new" : "Create link";
    }
  });
  return form;
}

// Without a session the first request answers 401 and api() goes to the sign-in page.
start();
