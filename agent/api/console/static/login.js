// Sign-in: a one-time code from /console/login#code=... (the link the agent prints, exchanged once for a session
// token kept in this tab), or an access token pasted into the field.
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

async function redeem(code) {
  try {
    const session = await api("POST", "/console/sign-in", { code });
    token.set(session.token);
    location.replace("/console/#debts");
  } catch (exc) {
    fail(exc instanceof ApiError && exc.status === 401
      ? "This sign-in link was already used or has expired. Ask for a new one, or paste your access token."
      : `Could not reach the agent: ${exc.message}`);
  }
}

const fragment = new URLSearchParams(location.hash.slice(1));
// Take the token out of the address bar and history at once, whatever happens next.
history.replaceState(null, "", location.pathname + location.search);
if (fragment.get("code")) {
  redeem(fragment.get("code"));
} else if (fragment.get("token")) {
  signIn(fragment.get("token"));
} else {
  if (new URLSearchParams(location.search).has("expired")) {
    fail("Your session ended or the token was not accepted. Please sign in again.");
  }
  field.focus();
}
