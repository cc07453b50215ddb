// The "payment link ready" view (popup, Quick link) and the shared email / text sending popup.
import { api, badge, el, money, say, when } from "./api.js";

const sendDialog = document.getElementById("send-dialog");
const sendBody = document.getElementById("send-body");

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

// What the shared sending popup prefills; the agent's send endpoint does the sending and says where it went.
function openSend(link, channel) {
  const byEmail = channel === "email";
  const status = el("p", { class: "notice", role: "status", hidden: true });
  const recipient = byEmail ? link.payer_email : link.payer_phone;
  const send = el("button", { type: "submit", class: "primary" }, byEmail ? "Send email" : "Send text");
  const form = el("form", { class: "stack" },
    el("dl", { class: "facts" },
      el("dt", {}, "To"), el("dd", {}, `${link.payer_name || ""} ${recipient ? `<${recipient}>` : "(the payer's saved " + (byEmail ? "email)" : "mobile number)")}`),
      el("dt", {}, "Amount"), el("dd", {}, money(link.amount, link.currency)),
      el("dt", {}, "Link"), el("dd", {}, link.url)),
    status,
    el("p", { class: "actions" }, send, el("button", { type: "button", onclick: () => sendDialog.close() }, "Close")),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    send.disabled = true;
    try {
      const result = await api("POST", `/links/${encodeURIComponent(link.id)}/send`, { channel });
      say(status, result?.detail || result?.message || `Sent by ${byEmail ? "email" : "text"}${result?.to ? " to " + result.to : ""}.`, "ok");
    } catch (exc) {
      say(status, exc.message, "error");
      send.disabled = false;
    }
  });
  document.getElementById("send-title").textContent = byEmail ? "Send via email" : "Send via text";
  sendBody.replaceChildren(form);
  sendDialog.showModal();
  send.focus();
}

// onRecreate: when given, a Cancel & Create New button calls it (the popup passes the current amount/description).
export function linkView(link, { onRecreate = null, note = "" } = {}) {
  const copyButton = el("button", { type: "button", onclick: (e) => copy(link.url, e.currentTarget) }, "Copy");
  const view = el("div", { class: "link-view card", "data-link-id": link.id },
    el("h3", {}, link.existing ? "This debt already has a payment link" : "Payment link ready", " ", badge(link.status)),
    note ? el("p", { class: "notice" }, note) : null,
    (link.warnings || []).map((w) => el("p", { class: "warning", role: "note" }, w)),
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
    el("p", { class: "actions" },
      el("button", { type: "button", onclick: () => openSend(link, "email") }, "Send via email"),
      el("button", { type: "button", onclick: () => openSend(link, "sms") }, "Send via text"),
      onRecreate && link.status === "outstanding"
        ? el("button", { type: "button", class: "danger", onclick: onRecreate }, "Cancel & Create New") : null),
  );
  return view;
}
