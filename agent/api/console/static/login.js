// Sign-in: your name and password, or a one-time code from /console/login#code=... (the link the agent prints,
// exchanged once for a session of the person it names). Either way the agent sets the session cookie every tab shares.
import { api, ApiError } from "./api.js";

const form = document.getElementById("login-form");
const name = document.getElementById("name");
const password = document.getElementById("password");
const error = document.getElementById("login-error");

function fail(message, field = name) {
  error.textContent = message;
  error.hidden = false;
  field.focus();
}

async function signIn(body, refused) {
  try {
    await api("POST", "/console/sign-in", body);
    location.replace("/console/#debts");
  } catch (exc) {
    if (exc instanceof ApiError && exc.status === 401) fail(refused, body.code ? name : password);
    else if (exc instanceof ApiError && exc.status === 429) fail(`Sign-in is paused: ${exc.message}.`);
    else fail(`Could not reach the agent: ${exc.message}`);
  }
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  if (!name.value.trim()) return fail("Type your user name first.");
  if (!password.value) return fail("Type your password first.", password);
  signIn({ name: name.value.trim(), password: password.value },
    "That name and password were not accepted. Check them and try again.");
});

const fragment = new URLSearchParams(location.hash.slice(1));
// Take the code out of the address bar and history at once, whatever happens next.
history.replaceState(null, "", location.pathname + location.search);
if (fragment.get("code")) {
  signIn({ code: fragment.get("code") },
    "This sign-in link was already used or has expired. Ask for a new one, or sign in with your name and password.");
} else {
  if (new URLSearchParams(location.search).has("expired")) {
    fail("Your session ended. Please sign in again.");
  }
  name.focus();
}
