/*! outbox.js: sends form[data-outbox] to outbox and keeps a failed send in this browser
 * until outbox has stored it. Events and storage: outbox's README, "Embedding in a site". */
(function () {
  "use strict";
  if (typeof window == "undefined" || window.outbox) return;
  var MAX_COPIES = 20;
  var MAX_BYTES = 6e4; // under sendBeacon's 64 KiB budget
  var TIMEOUT = 15e3;
  var MAX_WAIT = 3e5; // longest backoff
  var STATES = ["sending", "queued", "retrying", "sent", "refused", "dropped"];
  var mem = {}; // trace ID -> every copy this page knows
  var timer, tabs;
  try {
    tabs = new BroadcastChannel("outbox");
    tabs.onmessage = function (e) {
      var c = mem[e.data[1].traceId];
      if (c) delete mem[c.id], tell(c, e.data[0], e.data[1], 1), done(c, e.data[0]);
    };
  } catch (e) {}

  // IndexedDB, else localStorage, else none
  var store = new Promise(function (ok) {
    try {
      var r = indexedDB.open("outbox", 1);
      r.onupgradeneeded = function () { r.result.createObjectStore("q", { keyPath: "id" }); };
      r.onsuccess = function () { ok(idb(r.result)); };
      r.onerror = function () { ok(ls()); };
      setTimeout(function () { ok(ls()); }, 2e3);
    } catch (e) { ok(ls()); }
  });
  function idb(db) {
    function run(mode, f) {
      return new Promise(function (ok, no) {
        var t = db.transaction("q", mode), q = f(t.objectStore("q"));
        t.oncomplete = function () { ok(q.result); };
        t.onerror = t.onabort = function () { no(t.error); };
      });
    }
    return {
      all: function () { return run("readonly", function (s) { return s.getAll(); }); },
      put: function (c) { return run("readwrite", function (s) { return s.put(c); }); },
      del: function (id) { return run("readwrite", function (s) { return s.delete(id); }); }
    };
  }
  function ls() {
    var K = "outbox-queue";
    try {
      localStorage.setItem(K, localStorage.getItem(K) || "[]");
    } catch (e) { return null; }
    function all() { return JSON.parse(localStorage.getItem(K) || "[]"); }
    function save(a) { localStorage.setItem(K, JSON.stringify(a)); }
    function but(id) { return all().filter(function (c) { return c.id != id; }); }
    return {
      all: function () { return Promise.resolve(all()); },
      put: function (c) { return Promise.resolve().then(function () { save(but(c.id).concat(c)); }); },
      del: function (id) { return Promise.resolve().then(function () { save(but(id)); }); }
    };
  }
  function stored() {
    return store.then(function (s) { return s ? s.all() : []; }).catch(function () { return []; });
  }

  function keep(c) {
    return store.then(function (s) {
      if (!s) return "unavailable";
      return s.all().then(function (a) {
        var others = a.filter(function (o) { return o.id != c.id; });
        var bytes = others.reduce(function (n, o) { return n + o.body.length; }, c.body.length);
        if (others.length >= MAX_COPIES || bytes > MAX_BYTES) return "full";
        var o = strip(c);
        o.kept = 1;
        return s.put(o).then(function () { return ""; });
      });
    }).catch(function () { return "full"; });
  }
  function strip(c) {
    var o = {};
    for (var k in c) if (!/^(form|busy|beacon)$/.test(k)) o[k] = c[k];
    return o;
  }
  function forget(c) {
    delete mem[c.id];
    return store.then(function (s) { return s && s.del(c.id); }).catch(function () {});
  }

  // to the page, and outcomes to the other tabs
  function tell(c, state, detail, heard) {
    var form = c.form || (c.f && document.getElementById(c.f));
    detail.traceId = c.id;
    if (tabs && !heard && /sent|refused|dropped/.test(state)) tabs.postMessage([state, detail]);
    if (form && form.outbox) mark(form, state);
    else form = document;
    form.dispatchEvent(new CustomEvent("outbox:" + state, { bubbles: true, detail: detail }));
  }

  // answers "sent", "refused" or ms to wait (-1: backoff)
  function send(c) {
    var abort = new AbortController(), t = setTimeout(function () { abort.abort(); }, TIMEOUT);
    return fetch(c.url, {
      method: "POST", body: c.body, credentials: "omit", signal: abort.signal,
      headers: { "Content-Type": "application/json", "Idempotency-Key": c.id }
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (answer) {
        if (r.ok) return (c.receipt = { status: r.status, receipt: answer }), "sent";
        if (r.status != 408 && r.status != 429 && r.status < 500) {
          if (c.form && r.status == 409) c.form.outbox.id = null;
          tell(c, "refused", { status: r.status, error: answer.error,
            message: answer.message || "outbox answered " + r.status, body: c.body });
          return "refused";
        }
        c.status = r.status;
        return retryAfter(r.headers.get("Retry-After"));
      });
    }, function () { c.status = 0; return -1; }).then(function (v) {
      clearTimeout(t);
      return v;
    });
  }
  function retryAfter(h) {
    if (!h) return -1;
    var ms = /^\d+$/.test(h) ? h * 1e3 : Date.parse(h) - Date.now();
    return ms >= 0 ? ms : -1;
  }

  function attempt(c) {
    if (c.busy) return Promise.resolve();
    var locks = navigator.locks, ran;
    c.busy = 1;
    return locks ? locks.request("outbox:" + c.id, { ifAvailable: true }, function (lock) {
      ran = 1;
      if (lock) return go(c);
      c.busy = 0;
      c.next = Date.now() + 1e3; // another tab sends it
      plan();
    }).catch(function () { if (!ran) return go(c); }) : go(c);
  }
  function go(c) {
    return (c.kept ? stored() : Promise.resolve([c])).then(function (a) {
      if (!a.some(function (o) { return o.id == c.id; })) return void delete mem[c.id];
      if (c.tries) tell(c, "retrying", { attempt: c.tries + 1 });
      return send(c).then(function (r) {
        // told once the copy is gone and the form reset
        if (typeof r == "string") return forget(c).then(function () {
          done(c, r);
          if (r == "sent") tell(c, r, c.receipt);
        });
        c.tries++;
        var now = Date.now(), backoff = Math.min(1e3 * Math.pow(2, c.tries - 1), MAX_WAIT);
        c.hold = r >= 0 ? now + r : 0;
        c.next = now + Math.max(r, backoff * (0.8 + Math.random() / 2.5));
        return (c.kept ? store.then(function (s) { return s.put(strip(c)); }) : Promise.resolve())
          .catch(function () {}).then(function () {
            tell(c, "queued", { kept: !!c.kept, why: c.why, status: c.status,
              retryAt: new Date(c.next).toISOString() });
          });
      });
    }).then(function () {
      c.busy = 0;
      plan();
    });
  }
  function done(c, outcome) {
    var form = c.form;
    if (form && form.outbox.id == c.id) {
      form.outbox.sending = 0;
      if (outcome == "sent") form.reset(), form.outbox.id = null;
    }
  }

  // force: ignore backoff, not Retry-After
  function flush(force) {
    return stored().then(function (a) {
      var now = Date.now(), ids = {};
      a.forEach(function (c) { ids[c.id] = 1; if (!mem[c.id]) mem[c.id] = c; });
      Object.keys(mem).forEach(function (id) {
        var c = mem[id];
        if (c.busy) return;
        if (c.kept && !ids[id]) delete mem[id];
        else if (c.until < now) {
          forget(c);
          tell(c, "dropped", { why: "expired", body: c.body });
        } else if (now >= Math.max(c.hold || 0, force ? 0 : c.next || 0)) attempt(c);
      });
      plan();
    });
  }
  function plan() {
    clearTimeout(timer);
    var next = Infinity;
    for (var id in mem) if (!mem[id].busy) next = Math.min(next, Math.max(mem[id].next, mem[id].hold || 0));
    if (next < Infinity) timer = setTimeout(flush, Math.max(next - Date.now(), 0));
  }

  function mark(form, state) {
    STATES.forEach(function (s) { form.classList.toggle("outbox-" + s, s == state); });
  }
  function fields(form, submitter) {
    var o = Object.create(null), data = new FormData(form, submitter), hp = form.getAttribute("data-outbox-honeypot");
    data.forEach(function (v, k) {
      if (typeof v != "string" || k == "trace_id" || (k == hp && !v)) return;
      o[k] = k in o ? [].concat(o[k], v) : v;
    });
    return o;
  }
  function newId() {
    return Array.prototype.map.call(crypto.getRandomValues(new Uint8Array(16)), function (b) {
      return (b + 256).toString(16).slice(1);
    }).join("");
  }

  function enhance(form) {
    if (form.outbox) return form;
    var st = form.outbox = { id: null, content: null, sending: 0 };
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      if (st.sending) return;
      var f = fields(form, e.submitter), content = JSON.stringify(f);
      // one trace ID per content; an edit replaces the waiting copy
      if (!st.id || st.content != content) {
        if (mem[st.id] && !mem[st.id].busy) forget(mem[st.id]);
        st.id = newId();
      }
      st.content = content;
      if (mem[st.id] && mem[st.id].busy) return;
      f.trace_id = st.id;
      // outbox's idempotency window (24 h default)
      var now = Date.now(), life = (+form.getAttribute("data-outbox-window") || 86400) * 1e3;
      var c = mem[st.id] || { id: st.id, url: form.action, body: JSON.stringify(f), at: now,
        until: now + life, tries: 0, next: 0, f: form.id };
      c.busy = 1;
      c.form = form;
      mem[c.id] = c;
      st.sending = 1;
      mark(form, "sending");
      // kept before the first send
      (c.tries ? Promise.resolve(c.why || "") : keep(c)).then(function (why) {
        c.kept = !why;
        c.why = why || undefined;
        c.busy = 0;
        return attempt(c);
      }).then(function () { st.sending = 0; });
    });
    return form;
  }

  // copies stay: a beacon's answer cannot be read
  function leave() {
    for (var id in mem) {
      var c = mem[id];
      if (!c.beacon && navigator.sendBeacon && navigator.sendBeacon(c.url, c.body)) c.beacon = 1;
    }
  }

  function start() {
    Array.prototype.forEach.call(document.querySelectorAll("form[data-outbox]"), enhance);
    flush(true);
  }
  window.outbox = { enhance: enhance, flush: flush };
  addEventListener("online", function () { flush(true); });
  addEventListener("pagehide", leave);
  if (document.readyState == "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
