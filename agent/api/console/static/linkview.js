// The "payment link created" view (popup, Quick link), the shared email / text sending popup, and the words for
// what happened to a link: created; emailed to X at T; texted to Y at T; sending failed (why).
import { ApiError, api, badge, el, say, session } from "./api.js";
import { money, when } from "./format.js";
import { historyList } from "./audit.js";

const sendDialog = document.getElementById("send-dialog");
const sendBody = document.getElementById("send-body");
const NOT_SET_UP = { email: "Email is not set up", sms: "Text messages are not set up" };
const askAdmin = (channel) => `${NOT_SET_UP[channel]} for this firm yet; ask your administrator.`;

// Why a channel cannot send yet, in the reader's terms: a clerk is told whom to ask, an admin what to set.
export function notReady(channel) {
  const state = session.info?.[channel];
  if (!state || state.ready) return "";
  if (session.info.role !== "admin") return askAdmin(channel);
  return `${NOT_SET_UP[channel]}: set ${state.missing.join(", ")} in ledgerlink.toml, then restart the agent or ` +
    "reload its configuration.";
}

// A sentence from words that may already end in a full stop (a gateway's own message).
export const sentence = (words) => (/[.!?]$/.test(words) ? words : `${words}.`);

// One send record (agent.engine.sending's SendRecord, as the API returns it) in words.
export function sendWords(send) {
  const reminder = Boolean(send.purpose?.startsWith("reminder"));
  const at = send.sent_at ? ` at ${when(send.sent_at)}` : "";
  const to = send.recipient ? ` to ${send.recipient}` : "";
  if (send.ok) {
    const done = send.channel === "sms" ? "texted" : "emailed";
    return reminder ? `Reminder ${done}${to}${at}` : `${done[0].toUpperCase()}${done.slice(1)}${to}${at}`;
  }
  const what = `${reminder ? "a reminder " : ""}by ${send.channel === "sms" ? "text" : "email"}`;
  return `Sending ${what}${to} failed${at}: ${send.result}`;
}

// A link's whole story, oldest first: created, then each send.
export function deliveryWords(createdAt, sends = []) {
  return [`Link created at ${when(createdAt)}`, ...sends.map(sendWords)];
}

// What a failed send request means to this reader (the API answers 409 when a channel is not set up).
function sendError(exc, channel) {
  if (exc instanceof ApiError && (exc.status === 409 || exc.status >= 500) && /not set up/i.test(exc.message) && session.info?.role !== "admin") {
    return askAdmin(channel);
  }
  return exc.message;
}

async function copy(text, button) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // Clipboard API refused (plain http, permissions): select the text so Ctrl+C works.
    button.closest(".link-view").querySelector("input.link-url").select();
    document.execCommand("copy");
  }
  button.textContent = "Copied";
  setTimeout(() => { button.textContent = "Copy"; }, 2000);
}

// The shared sending popup; the agent's send endpoint sends, records, and its record says whether it went.
function openSend(link, channel, onSent) {
  const byEmail = channel === "email";
  const status = el("p", { class: "notice", role: "status", hidden: true });
  const recipient = byEmail ? link.payer_email : link.payer_phone;
  const send = el("button", { type: "submit", class: "primary" }, byEmail ? "Send email" : "Send text");
  const form = el("form", { class: "stack" },
    el("dl", { class: "facts" },
      el("dt", {}, "To"), el("dd", {}, `${link.payer_name || ""} ${recipient ? `<${recipient}>` : "(the payer's saved " + (byEmail ? "email)" : "mobile number)")}`),
      el("dt", {}, "Amount"), el("dd", {}, money(link.amount, link.currency)),
      el("dt", {}, "Link"), el("dd", { class: "break" }, link.url)),
    status,
    el("p", { class: "actions" }, send, el("button", { type: "button", onclick: () => sendDialog.close() }, "Close")),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    send.disabled = true;
    try {
      const record = await api("POST", `/links/${encodeURIComponent(link.id)}/send`, { channel });
      say(status, sentence(sendWords(record)), record.ok ? "ok" : "error");
      onSent(record);
      if (!record.ok) send.disabled = false;
    } catch (exc) {
      say(status, sendError(exc, channel), "error");
      send.disabled = false;
    }
  });
  document.getElementById("send-title").textContent = byEmail ? "Send via email" : "Send via text";
  sendBody.replaceChildren(form);
  sendDialog.showModal();
  send.focus();
}

// A Send via … button that says before it is pressed when its channel is not set up; ``why`` collects the
// explanations, shown once under the buttons.
function sendButton(link, channel, onSent, why) {
  const label = channel === "email" ? "Send via email" : "Send via text";
  const reason = notReady(channel);
  if (!reason) return el("button", { type: "button", onclick: () => openSend(link, channel, onSent) }, label);
  const id = `why-${channel}-${link.id}`;
  why.push(el("li", { id }, reason));
  return el("button", { type: "button", disabled: true, "aria-describedby": id }, `${label}: not set up`);
}

// onRecreate: when given, a Cancel & Create New button calls it (the popup passes the current amount/description).
// sends: the link's send history so far (the view adds to it as the clerk sends).
export function linkView(link, { onRecreate = null, note = "", sends = [] } = {}) {
  const copyButton = el("button", { type: "button", onclick: (e) => copy(link.url, e.currentTarget) }, "Copy");
  const history = [...sends];
  const story = el("ul", { class: "delivery", "aria-label": "What happened to this link" });
  const tell = () => story.replaceChildren(...deliveryWords(link.created_at, history).map((w) => el("li", {}, w)),
    history.some((s) => s.ok) ? "" : el("li", { class: "muted" }, "Not sent to the payer yet: copy the link, or send it below."));
  tell();
  const onSent = (record) => { history.push(record); tell(); };
  const outstanding = link.status === "outstanding";
  const why = [];
  const buttons = outstanding ? [sendButton(link, "email", onSent, why), sendButton(link, "sms", onSent, why)] : [];
  const view = el("div", { class: "link-view card", "data-link-id": link.id },
    el("h3", {}, link.existing ? "This debt already has a payment link" : "Payment link created", " ", badge(link.status)),
    note ? el("p", { class: "notice" }, note) : null,
    (link.warnings || []).map((w) => el("p", { class: "warning", role: "note" }, w)),
    story,
    el("p", { class: "link-box" },
      el("label", { for: `url-${link.id}` }, "Payment link"),
      el("input", { id: `url-${link.id}`, class: "link-url", readonly: true, value: link.url || "" }),
      copyButton,
      el("button", { type: "button", onclick: () => window.open(link.url, "_blank", "noopener") }, "Open")),
    el("dl", { class: "facts" },
      el("dt", {}, "Amount"), el("dd", { class: "link-amount" }, money(link.amount, link.currency)),
      el("dt", {}, "Description"), el("dd", {}, link.description),
      el("dt", {}, "Payer"), el("dd", {}, [link.payer_name, link.payer_email].filter(Boolean).join(" · ")),
      el("dt", {}, "Account"), el("dd", {}, link.account),
      el("dt", {}, "Expires"), el("dd", {}, when(link.expires_at))),
    el("p", { class: "actions" }, buttons,
      onRecreate && outstanding
        ? el("button", { type: "button", class: "danger", onclick: onRecreate }, "Cancel & Create New") : null),
    why.length ? el("ul", { class: "not-ready" }, why) : null,
    el("section", { class: "link-history" }, el("h4", {}, "History"),
      historyList(`/links/${encodeURIComponent(link.id)}/history`, "Who did what to this link")),
  );
  return view;
}
