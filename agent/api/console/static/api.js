// The one way the console talks to the agent: the local API. The session is an HttpOnly cookie shared by every tab
// of this browser (no script reads it); the X-Ledgerlink-Console header tells the agent the request is the
// console's own, which another site's page cannot send (CSRF).
export class ApiError extends Error {
  constructor(status, message, fields = []) {
    super(message);
    this.status = status;
    this.fields = fields;  // [{field, message}] for a request the API refused as invalid
  }
}

// A refused form in a clerk's words: each wrong field named by its own label, marked aria-invalid and the first
// one focused. ``inputs`` maps the API's field names to the form's elements; a rule the engine refused names its
// field at the start of its message ("amount: ..."), which is read the same way.
export function formError(region, exc, inputs) {
  for (const input of Object.values(inputs)) input.removeAttribute("aria-invalid");
  let problems = (exc.fields || []).map((f) => [f.field.split(".")[0], f.message]);
  if (!problems.length) {
    const named = /^([a-z_]+): (.*)$/s.exec(exc.message || "");
    problems = named && inputs[named[1]] ? [[named[1], named[2]]] : [];
  }
  const marked = problems.filter(([field]) => inputs[field]);
  if (!marked.length) { say(region, exc.message, "error"); return; }
  const label = (input) => (input.labels && input.labels[0] ? input.labels[0].textContent.trim() : input.name);
  for (const [field] of marked) inputs[field].setAttribute("aria-invalid", "true");
  say(region, marked.map(([field, message]) => `${label(inputs[field])}: ${message}`).join(" "), "error");
  inputs[marked[0][0]].focus();
}

// The API answers every error with {"error": "what went wrong, in words"}.
function explain(body, response) {
  return (body && typeof body.error === "string") ? body.error : `${response.status} ${response.statusText}`;
}

export async function api(method, path, body, { raw = false, headers = {} } = {}) {
  const options = { method, credentials: "same-origin", headers: { "X-Ledgerlink-Console": "1", ...headers } };
  if (body instanceof Blob || typeof body === "string") {
    options.body = body;
  } else if (body !== undefined) {
    options.body = JSON.stringify(body);
    options.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, options);
  if (response.status === 401 && !path.startsWith("/status") && path !== "/console/sign-in") {
    location.assign("/console/login?expired=1");
  }
  if (!response.ok) {
    let parsed = null;
    try { parsed = await response.json(); } catch { /* not JSON: use the status line */ }
    throw new ApiError(response.status, explain(parsed, response), (parsed && parsed.fields) || []);
  }
  if (raw) return response;
  return response.status === 204 ? null : response.json();
}

// What every screen shares once signed in: the merchant accounts for the account pickers, and /console-info
// (role, firm name, whether email and SMS are set up).
export const session = { accounts: [], defaultAccount: null, info: null };

// ------------------------------------------------------------------ small DOM helpers shared by every screen

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

export const $ = (selector, root = document) => root.querySelector(selector);

const BADGES = {
  outstanding: "Outstanding", creating: "Being created", payment_received: "Payment received",
  cancelled: "Cancelled", expired: "Expired", failed: "Failed",
  pending: "Pending", posting: "Posting now", posted: "Posted", retrying: "Retrying", incomplete: "Needs allocation",
  removed: "Removed", active: "Active", ended: "Ended", awaiting_mandate: "Awaiting mandate",
};

// A status badge always carries its words; the colour only repeats them.
export function badge(status) {
  return el("span", { class: `badge badge-${status}` }, BADGES[status] || String(status).replace(/_/g, " "));
}

export function say(region, message, kind = "info") {
  region.textContent = message;
  region.className = `notice ${kind}`;
  region.hidden = !message;
}

export async function download(path, filename) {
  const response = await api("GET", path, undefined, { raw: true });
  const blob = await response.blob();
  const name = /filename="?([^";]+)"?/.exec(response.headers.get("Content-Disposition") || "")?.[1] || filename;
  const url = URL.createObjectURL(blob);
  const link = el("a", { href: url, download: name, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
  return name;
}

export function fillAccounts(select, chosen) {
  select.replaceChildren(...session.accounts.map((a) =>
    el("option", { value: a.name, selected: a.name === (chosen || session.defaultAccount) }, `${a.name} (${a.currency})`)));
}
