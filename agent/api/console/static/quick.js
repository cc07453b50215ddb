// Quick link: a one-off link without a matter; emailed at once or generated to copy.
import { $, api, el, say } from "./api.js";
import { linkView } from "./linkview.js";

const form = $("#quick-form");
const error = $("#quick-error");
const submit = $("#quick-submit");
const result = $("#quick-result");

const sendNow = () => $("#quick-send-yes").checked;

for (const radio of form.querySelectorAll('input[name="send"]')) {
  radio.addEventListener("change", () => { submit.textContent = sendNow() ? "Send Link" : "Generate Link"; });
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  error.hidden = true;
  const data = Object.fromEntries(new FormData(form));
  const body = { name: data.name.trim(), email: data.email.trim(), amount: data.amount.trim(), account: data.account };
  for (const name of ["invoice", "due_date", "description"]) if (data[name].trim()) body[name] = data[name].trim();
  submit.disabled = true;
  try {
    const link = await api("POST", "/links/quick", body);
    let note = link.existing ? "This invoice already had an outstanding link, so it is shown instead of a new one." : "";
    if (sendNow()) {
      try {
        await api("POST", `/links/${encodeURIComponent(link.id)}/send`, { channel: "email" });
        note = `Emailed to ${link.payer_email}.`;
      } catch (exc) {
        note = `The link was created but not emailed: ${exc.message}. Copy it and send it yourself.`;
      }
    }
    result.replaceChildren(linkView(link, { note }));
    result.querySelector("button")?.focus();
  } catch (exc) {
    say(error, exc.message, "error");
  } finally {
    submit.disabled = false;
  }
});

export async function showQuick() {
  // Nothing to load: the account list is filled at start.
}
