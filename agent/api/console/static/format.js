// Money and dates in one style on every screen: the firm's locale and time zone (from /console-info), through the
// browser's Intl API. Every page formats through these functions and nothing else.
const firm = { locale: "en-GB", timeZone: "Europe/London" };
const cache = new Map();

// Called once at start with the agent's answer, before any screen draws.
export function useFirmFormat(locale, timeZone) {
  firm.locale = locale || firm.locale;
  firm.timeZone = timeZone || firm.timeZone;
  cache.clear();
}

function formatter(key, make) {
  if (!cache.has(key)) cache.set(key, make());
  return cache.get(key);
}

// Money arrives as decimal strings; Intl formats a string exactly (no float), with at least the currency's
// decimals and never rounding away more (a typed 12.345 shows as such, so the clerk sees what will be refused).
export function money(amount, currency = "") {
  if (amount === null || amount === undefined || amount === "") return "";
  const text = String(amount);
  const style = currency
    ? formatter(`money:${currency}`, () => new Intl.NumberFormat(firm.locale, { style: "currency", currency, maximumFractionDigits: 20 }))
    : formatter("number", () => new Intl.NumberFormat(firm.locale, { minimumFractionDigits: 2, maximumFractionDigits: 20 }));
  return /^-?\d+(\.\d+)?$/.test(text) ? style.format(text) : text;
}

// A calendar date ("2026-11-27") is the same day everywhere: formatted as UTC so no zone moves it.
function calendarDate(text) {
  const date = new Date(`${text}T00:00:00Z`);
  if (Number.isNaN(date.getTime())) return text;
  return formatter("date", () => new Intl.DateTimeFormat(firm.locale, { dateStyle: "medium", timeZone: "UTC" })).format(date);
}

// The firm's calendar day of a moment, for listings where the time would crowd the table (Sent Pages).
export function day(value) {
  if (!value) return "";
  const date = new Date(String(value));
  if (Number.isNaN(date.getTime())) return String(value);
  return formatter("day", () => new Intl.DateTimeFormat(firm.locale, { dateStyle: "medium", timeZone: firm.timeZone })).format(date);
}

// A moment (ISO with time) in the firm's time zone; a bare date goes to calendarDate.
export function when(value) {
  if (!value) return "";
  const text = String(value);
  if (/^\d{4}-\d{2}-\d{2}$/.test(text)) return calendarDate(text);
  const date = new Date(text);
  if (Number.isNaN(date.getTime())) return text;
  return formatter("moment", () => new Intl.DateTimeFormat(firm.locale,
    { dateStyle: "medium", timeStyle: "short", timeZone: firm.timeZone })).format(date);
}
