// Quick link: a one-off link without a matter; emailed at once or generated to copy.
import { $, api, el, formError } from "./api.js";
import { linkView, notReady, sendWords, sentence } from "./linkview.js";

const form = $("#quick-form");
const error = $("#quick-error");
const submit = $("#quick-submit");
const result = $("#quick-result");
const sendYes = $("#quick-send-yes");

const sendNow = () => sendYes.checked;
// An email is needed only to send the link now; a link to copy and send by hand needs none.
const label = () => {
  submit.textContent = sendNow() ? "Send Link" : "Generate Link";
  $("#quick-email").required = sendNow();
  $("#quick-email-optional").hidden = sendNow();
};

for (const radio of form.querySelectorAll('input[name="send"]')) radio.addEventListener("change", label);

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  error.hidden = true;
  const data = Object.fromEntries(new FormData(form));
  const body = { name: data.name.trim(), amount: data.amount.trim(), account: data.account };
  for (const name of ["email", "invoice", "due_date", "description"]) if (data[name].trim()) body[name] = data[name].trim();
  submit.disabled = true;
  try {
    const link = await api("POST", "/links/quick", body);
    let note = link.existing ? "This invoice already had an outstanding link, so it is shown instead of a new one." : "";
    const sends = [];
    if (sendNow()) {
      try {
        const record = await api("POST", `/links/${encodeURIComponent(link.id)}/send`, { channel: "email" });
        sends.push(record);
        note = record.ok ? sentence(sendWords(record))
          : `The link was created but not emailed. ${sentence(sendWords(record))} Copy it and send it yourself.`;
      } catch (exc) {
        note = `The link was created but not emailed: ${exc.message}. Copy it and send it yourself.`;
      }
    }
    result.replaceChildren(linkView(link, { note, sends }));
    result.querySelector("button")?.focus();
  } catch (exc) {
    const inputs = Object.fromEntries([...form.elements].filter((e) => e.name && e.type !== "radio").map((e) => [e.name, e]));
    formError(error, exc, inputs);
  } finally {
    submit.disabled = false;
  }
});

// Email not set up: the choice says so before anything is pressed, and the link is generated to copy instead.
export async function showQuick() {
  const why = notReady("email");
  const note = $("#quick-send-why");
  sendYes.disabled = Boolean(why);
  note.textContent = why;
  note.hidden = !why;
  if (why) $("#quick-send-no").checked = true;
  label();
}
