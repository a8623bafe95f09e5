// The console's one script: keeps the Account ID and Passcode in this tab's sessionStorage
// (gone when the tab closes or on "Sign out"; never a cookie, never in a URL), asks the server
// for each page with them as headers, and puts the page into <main>. Links and search forms
// stay plain HTML; this script only carries the headers.
"use strict";

const KEY = "audience-import-console";
const BASE = "/console";

const main = document.getElementById("main");
const login = document.getElementById("login");
const loginForm = document.getElementById("login-form");
const loginError = document.getElementById("login-error");
const nav = document.getElementById("nav");

function credentials() {
  try {
    return JSON.parse(sessionStorage.getItem(KEY));
  } catch {
    return null;
  }
}

function showLogin(message) {
  sessionStorage.removeItem(KEY);
  main.replaceChildren();
  nav.hidden = true;
  login.hidden = false;
  loginError.textContent = message || "";
  document.title = "Sign in · Audience Import console";
  document.getElementById(message ? "login-title" : "account").focus();
}

function headersOf(c) {
  const headers = {
    "Accept": "text/html",
    "X-CleverTap-Account-Id": c.account,
    "X-CleverTap-Passcode": c.passcode,
  };
  if (c.region) headers["X-CleverTap-Region"] = c.region;
  return headers;
}

// While a segment's import runs, its progress refreshes every 5 s: only that section is
// replaced (focus and scrolling stay), and only while the same page is shown.
const IMPORT_REFRESH_MS = 5000;
let importTimer = null;
function watchImport(url) {
  clearTimeout(importTimer);
  if (!main.querySelector("#import[data-running]")) return;
  importTimer = setTimeout(async () => {
    const c = credentials();
    if (!c || here() !== url) return;
    try {
      const response = await fetch(url, { headers: headersOf(c), cache: "no-store" });
      if (!response.ok) return;
      const page = new DOMParser().parseFromString(await response.text(), "text/html");
      const fresh = page.querySelector("#import");
      const shown = main.querySelector("#import");
      if (!fresh || !shown || here() !== url) return;
      shown.replaceWith(fresh);
    } catch {
      return;
    }
    watchImport(url);
  }, IMPORT_REFRESH_MS);
}

async function load(url, push) {
  const c = credentials();
  if (!c) {
    showLogin("");
    return;
  }
  const headers = headersOf(c);
  main.setAttribute("aria-busy", "true");
  let response;
  try {
    response = await fetch(url, { headers, cache: "no-store" });
  } catch {
    main.removeAttribute("aria-busy");
    main.innerHTML = "<h1 tabindex=\"-1\">Cannot reach the server</h1><p>Check your connection and try again.</p>";
    return;
  }
  if (response.status === 401) {
    main.removeAttribute("aria-busy");
    showLogin(c.checked ? "Your session is no longer valid. Sign in again." : "The Account ID or Passcode is wrong.");
    return;
  }
  if (!c.checked && response.ok) sessionStorage.setItem(KEY, JSON.stringify({ ...c, checked: true }));
  // The server escapes every value it puts into a page.
  main.innerHTML = await response.text();
  main.removeAttribute("aria-busy");
  login.hidden = true;
  nav.hidden = false;
  if (push) history.pushState(null, "", url);
  const h1 = main.querySelector("h1");
  document.title = (h1 ? h1.textContent + " · " : "") + "Audience Import console";
  for (const a of nav.querySelectorAll("a")) {
    const current = location.pathname.startsWith(a.pathname);
    if (current) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  if (h1) h1.focus();
  watchImport(url);
}

function here() {
  return location.pathname + location.search;
}

document.addEventListener("click", (event) => {
  const a = event.target.closest("a");
  // In-page links (the skip link) keep their browser behaviour.
  if (!a || (a.getAttribute("href") || "").startsWith("#")) return;
  if (a.origin !== location.origin || event.button !== 0 ||
      event.ctrlKey || event.metaKey || event.shiftKey || event.altKey) return;
  if (a.pathname !== BASE && !a.pathname.startsWith(BASE + "/")) return;
  event.preventDefault();
  load(a.pathname + a.search, true);
});

document.addEventListener("submit", (event) => {
  const form = event.target;
  event.preventDefault();
  if (form === loginForm) {
    const data = new FormData(form);
    sessionStorage.setItem(KEY, JSON.stringify({
      account: String(data.get("account")).trim(),
      passcode: String(data.get("passcode")),
      region: data.get("region") || null,
      checked: false,
    }));
    form.reset();
    const target = location.pathname === BASE || location.pathname === BASE + "/" ? BASE + "/segments" : here();
    load(target, target !== here());
    return;
  }
  // Search forms are method=get: their fields become the query string.
  const params = new URLSearchParams(new FormData(form));
  for (const [k, v] of [...params]) if (!v) params.delete(k);
  const query = params.toString();
  load(new URL(form.action).pathname + (query ? "?" + query : ""), true);
});

document.getElementById("sign-out").addEventListener("click", () => showLogin(""));
window.addEventListener("popstate", () => load(here(), false));

if (credentials()) load(here(), false); else showLogin("");
