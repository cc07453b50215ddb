// Settings (admins only): each merchant account's default message, disclaimer, reminders and expiry.
import { $, api, el, say, session } from "./api.js";
import { notReady } from "./linkview.js";

const body = $("#settings-body");

function accountForm(name, current) {
  const status = el("p", { class: "notice", role: "status", hidden: true });
  const id = (field) => `set-${name}-${field}`;
  const form = el("form", { class: "stack card", "data-account": name },
    el("h2", {}, `Account: ${name}`),
    el("p", {}, el("label", { for: id("message") }, "Default message"),
      el("textarea", { id: id("message"), name: "default_message", rows: 3 }, current.default_message || ""),
      el("span", { class: "help" }, "{amount} and {description} are filled in for each link.")),
    el("p", {}, el("label", { for: id("disclaimer") }, "Disclaimer on the payment page"),
      el("textarea", { id: id("disclaimer"), name: "disclaimer", rows: 2 }, current.disclaimer || "")),
    el("p", {}, el("label", { for: id("reminders") }, "Smart reminders: days after sending"),
      el("input", { id: id("reminders"), name: "reminder_days", value: (current.reminder_days || []).join(", "), autocomplete: "off" }),
      el("span", { class: "help" }, "Comma-separated, for example 3, 7, 14. Leave empty for no reminders.")),
    el("p", {}, el("label", { for: id("expiry") }, "Links expire after (days)"),
      el("input", { id: id("expiry"), name: "expiry_days", type: "number", min: 1, max: 90, value: current.expiry_days ?? "" })),
    status,
    el("p", { class: "actions" }, el("button", { type: "submit", class: "primary" }, `Save ${name}`)));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const days = String(data.get("reminder_days")).split(",").map((d) => d.trim()).filter(Boolean);
    if (days.some((d) => !/^\d+$/.test(d))) {
      say(status, "Reminder days must be whole numbers separated by commas.", "error");
      return;
    }
    try {
      await api("PUT", `/settings/accounts/${encodeURIComponent(name)}`, {
        default_message: data.get("default_message"), disclaimer: data.get("disclaimer"),
        reminder_days: days.map(Number), expiry_days: Number(data.get("expiry_days")) || null,
      });
      say(status, "Saved. The agent uses the new settings after its next restart or configuration reload.", "ok");
    } catch (exc) {
      say(status, exc.message, "error");
    }
  });
  return form;
}

// Email and SMS: set up or not, and (for an admin) what is still to set; read-only, both roles see it.
function delivery() {
  const line = (channel, name) => el("li", {}, notReady(channel) || `${name}: set up.`);
  return el("div", { class: "card", id: "delivery-setup" }, el("h2", {}, "Sending links"),
    el("ul", {}, line("email", "Email"), line("sms", "Text messages")));
}

// A non-admin is told why the screen is not theirs and sees only what they may read, never forms they cannot save.
function readOnly() {
  return [
    el("div", { class: "notice warn", id: "admin-only" },
      el("p", {}, "Settings are for administrators. They change what every payer sees (the messages, the disclaimer on " +
        "the payment page, reminders and how long links last), so they need an admin, and you are signed in as " +
        `${session.info?.user || "a clerk"}, a clerk.`),
      el("p", {}, "To change one, ask your administrator.")),
    el("div", { class: "card", id: "accounts-summary" }, el("h2", {}, "Merchant accounts"),
      el("table", {},
        el("thead", {}, el("tr", {}, ["Account", "Provider", "Currency", "Links expire after"].map((h) => el("th", { scope: "col" }, h)))),
        el("tbody", {}, session.accounts.map((a) => el("tr", {},
          el("td", {}, a.default ? `${a.name} (default)` : a.name), el("td", {}, a.provider), el("td", {}, a.currency),
          el("td", {}, `${a.expiry_days} day${a.expiry_days === 1 ? "" : "s"}`)))))),
    delivery(),
  ];
}

export async function showSettings() {
  if (session.info?.role !== "admin") {
    body.replaceChildren(...readOnly());
    return;
  }
  body.replaceChildren(el("p", { class: "muted" }, "Loading…"));
  const forms = [];
  for (const account of session.accounts) {
    forms.push(accountForm(account.name, await api("GET", `/settings/accounts/${encodeURIComponent(account.name)}`)));
  }
  body.replaceChildren(delivery(), ...forms);
}
