// Sign-in: the token comes from the pasted field or from /console/login#token=... (the link the agent prints).
import { api, ApiError, token } from "./api.js";

const form = document.getElementById("login-form");
const field = document.getElementById("token");
const error = document.getElementById("login-error");

function fail(message) {
  error.textContent = message;
  error.hidden = false;
  field.focus();
}

async function signIn(value) {
  token.set(value.trim());
  try {
    await api("GET", "/status");
  } catch (exc) {
    token.clear();
    fail(exc instanceof ApiError && exc.status === 401
      ? "That access token was not accepted. Check it and try again."
      : `Could not reach the agent: ${exc.message}`);
    return;
  }
  location.replace("/console/#debts");
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  if (!field.value.trim()) {
    fail("Paste your access token first.");
    return;
  }
  signIn(field.value);
});

const fragment = new URLSearchParams(location.hash.slice(1));
// Take the token out of the address bar and history at once, whatever happens next.
history.replaceState(null, "", location.pathname + location.search);
if (fragment.get("token")) {
  signIn(fragment.get("token"));
} else {
  if (new URLSearchParams(location.search).has("expired")) {
    fail("Your session ended or the token was not accepted. Please sign in again.");
  }
  field.focus();
}
