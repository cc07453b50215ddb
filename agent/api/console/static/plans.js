// The Payment plan popup: a matter's debt in Direct Debit instalments, previewed to the penny before it is made.
import { $, api, el, formError, say } from "./api.js";
import { money, when } from "./format.js";

const dialog = $("#plan-dialog");
const body = $("#plan-body");
let onClosed = null;

dialog.addEventListener("close", () => { if (onClosed) onClosed(); });

const STATES = {
  scheduled: "Scheduled", cancelled: "Cancelled", creating: "Being submitted", pending_submission: "With the provider",
  submitted: "With the bank", confirmed: "Paid", paid_out: "Paid", failed: "Failed", charged_back: "Charged back",
  refused: "Refused by the provider",
};

function instalmentTable(plan) {
  return el("table", { id: "plan-instalments" },
    el("caption", {}, `${plan.instalments.length} instalments, ${plan.frequency}`),
    el("thead", {}, el("tr", {}, el("th", {}, "#"), el("th", {}, "Date"), el("th", { class: "num" }, "Amount"), el("th", {}, "Status"))),
    el("tbody", {}, plan.instalments.map((i) => el("tr", {},
      el("td", {}, String(i.seq)), el("td", { class: "nowrap" }, when(i.due_on)),
      el("td", { class: "num" }, money(i.amount, plan.currency)),
      el("td", {}, [STATES[i.state] || i.state, i.note !== plan.note ? i.note : null].filter(Boolean).join(" · "))))),
    el("tfoot", {}, el("tr", {}, el("th", { colspan: 2, scope: "row" }, "Total"), el("th", { class: "num" }, money(plan.total, plan.currency)), el("th", {}))));
}

const STEPS = { before: "Before the instalment", failed: "After it failed" };
const SENDS = { sent: "Sent", sending: "Sending", failed: "Not delivered (tried again)", unknown: "Handed over, delivery unknown", skipped: "Not sent" };

// The emails the payer was sent about the instalments (agent.engine.plan_reminders): what, when, to whom, how it went.
function emailTable(plan) {
  if (!plan.reminders || !plan.reminders.length) return el("p", { id: "plan-emails", class: "hint" }, "No emails to the payer yet.");
  return el("table", { id: "plan-emails" },
    el("caption", {}, "Emails to the payer"),
    el("thead", {}, el("tr", {}, el("th", {}, "#"), el("th", {}, "Email"), el("th", {}, "When"), el("th", {}, "To"), el("th", {}, "Result"))),
    el("tbody", {}, plan.reminders.map((r) => el("tr", {},
      el("td", {}, String(r.seq)), el("td", {}, STEPS[r.step] || r.step), el("td", { class: "nowrap" }, when(r.sent_at || r.due_at)),
      el("td", {}, r.recipient || "—"), el("td", {}, SENDS[r.status] || r.status)))));
}

// A plan awaiting its mandate: the page to send the payer, where they see the instalments and authorise the Direct Debit.
function setupLink(plan) {
  const copy = el("button", { type: "button", class: "small", id: "plan-setup-copy" }, "Copy link");
  const copied = el("span", { class: "hint", role: "status" });
  copy.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(plan.setup_url);
      copied.textContent = "Copied: paste it into your email to the payer.";
    } catch {
      copied.textContent = "Select the link and copy it by hand.";  // no clipboard here (permissions)
    }
  });
  return el("div", { class: "notice", id: "plan-setup" },
    el("p", {}, `Waiting for ${plan.payer_name || "the payer"} to set up the Direct Debit. Nothing is collected until they do; ` +
      "if they finish too close to the first date, the dates move later."),
    el("p", {}, el("a", { href: plan.setup_url, id: "plan-setup-url", target: "_blank", rel: "noopener" }, plan.setup_url), " ", copy, " ", copied));
}

const HOLDING = ["active", "awaiting_mandate"];  // a plan still to collect: one per matter, cancellable
const PLAN_WORDS = { awaiting_mandate: "waiting for the payer's Direct Debit", active: "active", ended: "ended", cancelled: "cancelled" };

function showPlan(plan, note = "") {
  const error = el("p", { class: "alert", role: "alert", hidden: true });
  const cancel = el("button", { type: "button", id: "plan-cancel" }, "Cancel plan");
  cancel.addEventListener("click", async () => {
    if (!confirm("Cancel the instalments still to come? A collection already with the bank goes ahead.")) return;
    cancel.disabled = true;
    try {
      showPlan(await api("POST", `/plans/${encodeURIComponent(plan.id)}/cancel`, { reason: "cancelled in the console" }), "The plan was cancelled.");
    } catch (exc) {
      say(error, exc.message, "error");
      cancel.disabled = false;
    }
  });
  body.replaceChildren(
    ...(note ? [el("p", { class: "notice", role: "status" }, note)] : []),  // (replaceChildren writes a null as "null")
    el("dl", { class: "facts" },
      el("dt", {}, "Plan"), el("dd", { id: "plan-id" }, `${plan.id} · ${PLAN_WORDS[plan.status] || plan.status}`),
      el("dt", {}, "Matter"), el("dd", {}, plan.matter_number),
      el("dt", {}, "Payer"), el("dd", {}, plan.payer_name || "—"),
      el("dt", {}, "Statements"), el("dd", {}, plan.statements.join(", ")),
      el("dt", {}, "Still owed"), el("dd", {}, `${money(plan.owed, plan.currency)}, besides instalments with the bank`)),
    ...(plan.setup_url ? [setupLink(plan)] : []),
    instalmentTable(plan),
    emailTable(plan),
    error,
    el("p", { class: "actions" }, HOLDING.includes(plan.status) ? cancel : null, el("button", { type: "button", "data-close": true }, "Close")));
}

function planForm(m) {
  const error = el("p", { class: "alert", role: "alert", hidden: true });
  const byCount = el("input", { type: "radio", id: "plan-by-count", name: "size", value: "count", checked: true });
  const byAmount = el("input", { type: "radio", id: "plan-by-amount", name: "size", value: "amount" });
  const instalments = el("input", { id: "plan-instalments-count", name: "instalments", "aria-label": "How many instalments", type: "number", min: 2, max: 60, value: 6, class: "amount" });
  const amount = el("input", { id: "plan-amount", name: "amount", "aria-label": `Amount of each instalment (${m.currency})`, class: "amount", inputmode: "decimal", autocomplete: "off", disabled: true });
  const total = el("input", { id: "plan-total", name: "total", class: "amount", inputmode: "decimal", value: m.amount, autocomplete: "off" });
  const frequency = el("select", { id: "plan-frequency", name: "frequency" },
    ["monthly", "fortnightly", "weekly"].map((f) => el("option", { value: f }, f[0].toUpperCase() + f.slice(1))));
  const soon = new Date(Date.now() + 5 * 86400000).toISOString().slice(0, 10);
  const first = el("input", { id: "plan-first", name: "first", type: "date", value: soon, min: new Date().toISOString().slice(0, 10) });
  const preview = el("div", { id: "plan-preview" });
  const create = el("button", { type: "submit", class: "primary", id: "plan-create", disabled: true }, "Set up plan");
  // Offered only when the preview says the payer has no active mandate, and never ticked for the clerk.
  const setUp = el("input", { type: "checkbox", id: "plan-set-up-mandate", name: "set_up_mandate" });
  setUp.addEventListener("change", () => { create.disabled = !setUp.checked; });
  const sync = () => { instalments.disabled = !byCount.checked; amount.disabled = byCount.checked; create.disabled = true; preview.replaceChildren(); };
  for (const input of [byCount, byAmount]) input.addEventListener("change", sync);
  for (const input of [instalments, amount, total, frequency, first]) input.addEventListener("input", () => { create.disabled = true; });
  const terms = () => {
    const t = { matter: m.number, frequency: frequency.value, first: first.value || null, total: total.value.trim() || null,
      set_up_mandate: setUp.checked };
    if (byCount.checked) t.instalments = Number(instalments.value); else t.amount = amount.value.trim();
    return t;
  };
  const inputs = { instalments, amount, total, frequency, first };
  const check = el("button", { type: "button", id: "plan-preview-button" }, "Preview instalments");
  check.addEventListener("click", async () => {
    error.hidden = true;
    try {
      // Previewed as if the setup were asked for, which changes nothing: so the popup learns whether it is needed.
      const plan = await api("POST", "/plans/preview", { ...terms(), set_up_mandate: true });
      setUp.checked = false;
      if (plan.needs_mandate) {
        preview.replaceChildren(instalmentTable(plan), el("div", { class: "notice", id: "plan-no-mandate" },
          el("p", {}, `${m.payer_name || "The payer"} has no active Direct Debit mandate.`),
          el("p", { class: "choices consent" }, setUp,
            el("label", { for: setUp.id }, "Send the payer a page to see these instalments and set up the Direct Debit; the plan starts when they do"))));
        create.disabled = true;
        setUp.focus();
      } else {
        preview.replaceChildren(instalmentTable(plan));
        create.disabled = false;
        create.focus();
      }
    } catch (exc) {
      preview.replaceChildren();
      formError(error, exc, inputs);
    }
  });
  const form = el("form", { class: "stack", id: "plan-form" },
    el("dl", { class: "facts" },
      el("dt", {}, "Matter"), el("dd", {}, `${m.number} · ${m.name}`),
      el("dt", {}, "Payer"), el("dd", {}, [m.payer_name, m.payer_email].filter(Boolean).join(" · ") || "none"),
      el("dt", {}, "Left to collect"), el("dd", {}, money(m.amount, m.currency))),
    el("p", { class: "help" }, "Each instalment is collected by Direct Debit on the payer's mandate and posted as it is paid; " +
      "if the debt is paid another way, the instalments still to come are lowered or cancelled."),
    el("fieldset", {}, el("legend", {}, "Instalments"),
      el("p", { class: "choices" },
        el("span", { class: "choice" }, byCount, el("label", { for: byCount.id }, "Number of instalments")), instalments),
      el("p", { class: "choices" },
        el("span", { class: "choice" }, byAmount, el("label", { for: byAmount.id }, `Each instalment (${m.currency})`)), amount)),
    el("p", {}, el("label", { for: total.id }, `Plan total (${m.currency})`), total,
      el("span", { class: "help" }, "What is left to collect, unless you agreed less.")),
    el("p", {}, el("label", { for: frequency.id }, "How often"), frequency),
    el("p", {}, el("label", { for: first.id }, "First instalment"), first),
    error,
    preview,
    el("p", { class: "actions sticky-actions" }, check, create, el("button", { type: "button", "data-close": true }, "Close")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    create.disabled = true;
    create.textContent = "Setting up…";
    try {
      const plan = await api("POST", "/plans", terms());
      showPlan(plan, plan.status === "awaiting_mandate" ? "The plan is made: send the payer the link below to set up the Direct Debit."
        : "The plan is set up; the first instalment is collected on its date.");
    } catch (exc) {
      formError(error, exc, inputs);
      create.textContent = "Set up plan";
    }
  });
  return form;
}

// Opens the popup on one plan (from its row on Sent Pages); `closed` runs when it closes.
export async function openPlanById(id, closed) {
  onClosed = closed;
  body.replaceChildren(el("p", { role: "status" }, "Opening the payment plan…"));
  dialog.showModal();
  try {
    showPlan(await api("GET", `/plans/${encodeURIComponent(id)}`));  // focus stays on the popup's Close (×)
  } catch (exc) {
    body.replaceChildren(el("p", { class: "alert", role: "alert" }, exc.message));
  }
}

// Opens the popup for a matter (from the matter card); `closed` runs when it closes.
export async function openPlan(m, closed) {
  onClosed = closed;
  body.replaceChildren(el("p", { role: "status" }, "Looking for a payment plan on this matter…"));
  dialog.showModal();
  try {
    const plans = await api("GET", `/plans?matter=${encodeURIComponent(m.number)}`);
    const active = plans.find((p) => HOLDING.includes(p.status));
    if (active) showPlan(active, "This matter already has a payment plan.");
    else { body.replaceChildren(planForm(m)); $("#plan-instalments-count", body)?.focus(); }
  } catch (exc) {
    body.replaceChildren(el("p", { class: "alert", role: "alert" }, exc.message));
  }
}
