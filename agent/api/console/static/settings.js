// Settings (admin token only): each merchant account's default message, disclaimer, reminders and expiry.
import { $, ApiError, api, el, say, session } from "./api.js";

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

export async function showSettings() {
  body.replaceChildren(el("p", { class: "muted" }, "Loading…"));
  const forms = [];
  for (const account of session.accounts) {
    try {
      forms.push(accountForm(account.name, await api("GET", `/settings/accounts/${encodeURIComponent(account.name)}`)));
    } catch (exc) {
      if (exc instanceof ApiError && exc.status === 403) {
        body.replaceChildren(el("p", { class: "notice warn", id: "admin-only" },
          "Settings are for administrators. Sign out and sign in with the admin token to change them."));
        return;
      }
      throw exc;
    }
  }
  body.replaceChildren(...forms);
}
