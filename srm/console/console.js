// SRM operator console. Talks only to the operator endpoints of its own origin, with the key in
// the Authorization header. Everything that comes from the API is put into the page as text
// (textContent, text nodes, attribute values): nothing is ever parsed as HTML.
(function () {
  'use strict';

  var API = '/srm/v1';
  var KEY_STORE = 'srm.console.operatorKey';
  var UNAVAILABLE = 'SRM-0010';
  var SVG_NS = 'http://www.w3.org/2000/svg';

  var query = new URLSearchParams(window.location.search);
  // ?refresh=<seconds> and ?pageSize=<n> exist so that tests (and big screens) can tune them
  var REFRESH_MS = Math.round(clamp(Number(query.get('refresh')) || 5, 0.2, 300) * 1000);
  var PAGE_SIZE = Math.round(clamp(Number(query.get('pageSize')) || 50, 1, 1000));
  var DENIALS_TOP = 20;
  var MAX_ACCOUNT_ID = 256;

  var state = {
    key: null,
    account: null,
    // bumped on every sign-in, sign-out and lookup (account) or sign-in and sign-out (key):
    // answers that arrive after such a change are dropped
    generation: 0,
    keyGeneration: 0,
    pages: [null], // the cursor of every page walked so far; the last one is shown
    timer: null,
    limit: null,
    activeCount: 0,
    registry: null, // {max, nextRemovalAt} of the last device listing
    removal: null, // {deviceId, generation}: the device whose removal is being asked
    home: null, // the home networks last shown
    missing: {} // features this server lacks (404 SRM-0010), by name
  };

  function $(id) {
    return document.getElementById(id);
  }

  function clamp(value, low, high) {
    return Math.min(high, Math.max(low, value));
  }

  // -- DOM helpers: text only ------------------------------------------------------------

  function el(tag, attributes) {
    var node = document.createElement(tag);
    setAttributes(node, attributes);
    for (var i = 2; i < arguments.length; i++) {
      append(node, arguments[i]);
    }
    return node;
  }

  function svg(tag, attributes) {
    var node = document.createElementNS(SVG_NS, tag);
    setAttributes(node, attributes);
    for (var i = 2; i < arguments.length; i++) {
      append(node, arguments[i]);
    }
    return node;
  }

  function setAttributes(node, attributes) {
    if (!attributes) return;
    Object.keys(attributes).forEach(function (name) {
      var value = attributes[name];
      if (value !== null && value !== undefined && value !== false) {
        node.setAttribute(name, value === true ? '' : String(value));
      }
    });
  }

  function append(node, child) {
    if (child === null || child === undefined || child === false) return;
    if (Array.isArray(child)) {
      child.forEach(function (c) { append(node, c); });
    } else if (typeof child === 'string' || typeof child === 'number') {
      node.appendChild(document.createTextNode(String(child)));
    } else {
      node.appendChild(child);
    }
  }

  function show(node, visible) {
    node.hidden = !visible;
  }

  function say(node, text, kind) {
    node.textContent = text || '';
    node.classList.toggle('error', kind === 'error');
    node.classList.toggle('ok', kind === 'ok');
    show(node, Boolean(text));
  }

  function notify(text, kind) {
    say($('message'), text, kind);
  }

  // -- the API ---------------------------------------------------------------------------

  // *detail*: the answer's one sentence of what exactly was wrong (API.md, "Error body");
  // *retryAfter*: its Retry-After header in seconds (429), or null.
  function ApiError(status, code, message, detail, retryAfter) {
    this.status = status;
    this.code = code;
    this.message = message;
    this.detail = typeof detail === 'string' ? detail : '';
    this.retryAfter = retryAfter === undefined ? null : retryAfter;
  }

  // *parts*: the path's segments after /srm/v1 (see address); *params*: its query, if any.
  function api(method, parts, params, body) {
    var path;
    try {
      path = address(parts, params);
    } catch (refusal) {
      return Promise.reject(refusal); // nothing is sent
    }
    var headers = { Accept: 'application/json', Authorization: 'Bearer ' + state.key };
    var init = {
      method: method,
      headers: headers,
      cache: 'no-store',
      credentials: 'omit',
      referrerPolicy: 'no-referrer'
    };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    return fetch(path, init).then(
      function (response) {
        return response.text().then(function (text) {
          var data = null;
          try {
            data = text ? JSON.parse(text) : null;
          } catch (e) {
            data = null;
          }
          if (response.ok) return data;
          var error = data && data.errorResponse ? data.errorResponse : {};
          var wait = /^\d{1,10}$/.test(response.headers.get('Retry-After') || '')
            ? Number(response.headers.get('Retry-After')) : null;
          throw new ApiError(response.status, error.errorCode || '',
            error.errorMessage || response.statusText || '', data && data.detail, wait);
        });
      },
      function () {
        throw new ApiError(0, '', '');
      }
    );
  }

  // -- addresses -------------------------------------------------------------------------
  // Every request's address is built here, from segments each percent-encoded, and checked
  // before anything is sent. A browser reads a path segment "." or ".." (even percent-encoded)
  // as "this folder" or "the folder above": DELETE .../devices/../sessions would reach
  // .../sessions and end every session of the account. An id that cannot be a segment is
  // refused, and so is any address the browser would resolve to another path than the one
  // built.

  function Unaddressable(kind, value, sent) {
    this.kind = kind; // 'account', 'device', 'session', or 'path' for a whole address
    this.value = value;
    this.sent = sent || ''; // for 'path': where the browser would have sent the request
    this.message = kind + ' "' + value + '" cannot be addressed';
  }

  // An id of a player or an account as a path segment; *kind* names it in messages.
  function id(kind, value) {
    return { kind: kind, value: String(value) };
  }

  // Whether *value*, percent-encoded, stays one segment of its own: not empty, not "." or
  // "..", and left as it is by the browser's URL parser.
  function addressable(value) {
    if (value === '' || value === '.' || value === '..') return false;
    var probe = API + '/probe/' + encode(value) + '/end';
    return new URL(probe, window.location.href).pathname === probe;
  }

  // RFC 3986's strict form: encodeURIComponent leaves !'()* as they are, and a browser
  // encodes ' in a query itself, which would make the address differ from the one built
  function encode(value) {
    return encodeURIComponent(value).replace(/[!'()*]/g, function (c) {
      return '%' + c.charCodeAt(0).toString(16).toUpperCase();
    });
  }

  function queryString(params) {
    var pairs = Object.keys(params || {}).filter(function (name) {
      return params[name] !== null && params[name] !== undefined;
    }).map(function (name) {
      return encode(name) + '=' + encode(String(params[name]));
    });
    return pairs.length ? '?' + pairs.join('&') : '';
  }

  // The address of API + *parts* (fixed words, or id() for ids) with the query *params*;
  // throws Unaddressable instead of returning an address the browser would change.
  function address(parts, params) {
    var path = API;
    parts.forEach(function (part) {
      var ref = typeof part === 'string' ? id('path', part) : part;
      if (!addressable(ref.value)) throw new Unaddressable(ref.kind, ref.value);
      path += '/' + encode(ref.value);
    });
    var search = queryString(params);
    var url = new URL(path + search, window.location.href);
    if (url.origin !== window.location.origin || url.pathname !== path || url.search !== search) {
      throw new Unaddressable('path', path + search, url.pathname + url.search);
    }
    return path + search;
  }

  function accountParts(account) {
    return ['accounts', id('account', account)];
  }

  function unaddressableText(error) {
    if (error.kind === 'path') {
      return 'The console did not send a request for ' + error.value + ': the browser would ' +
        'have sent it to ' + error.sent + ' instead. Nothing was changed.';
    }
    return 'The ' + error.kind + ' id "' + error.value + '" cannot be put in a web address: ' +
      'browsers read "." and ".." as "this folder" and "the folder above", so a request ' +
      'for it would reach another path. The console sent nothing.';
  }

  function isUnavailable(error) {
    return error instanceof ApiError && error.status === 404 && error.code === UNAVAILABLE;
  }

  // A sentence for the operator; *what* names the feature, for "not available" answers.
  function describe(error, what) {
    if (error instanceof Unaddressable) return unaddressableText(error);
    if (!(error instanceof ApiError)) {
      return 'Something went wrong in the console: ' + String(error && error.message || error);
    }
    if (error.status === 0) {
      return 'The SRM server cannot be reached (network error). Check the connection and try again.';
    }
    if (error.status === 403) {
      return 'The operator key was refused (403 SRM-0006). Sign in with a valid key.';
    }
    if (error.status === 503) {
      return 'The session store is unavailable right now (503 SRM-0008). Try again in a moment.';
    }
    if (isUnavailable(error)) {
      return (what || 'This function') + ' is not available on this server (404 SRM-0010).';
    }
    if (error.status === 404 && error.code === 'SRM-0004') {
      return 'That session no longer exists: it was already removed (404 SRM-0004).';
    }
    if (error.status === 400) {
      return 'The server refused the request (400 ' + error.code + '): ' +
        (error.detail || error.message);
    }
    return 'Unexpected answer from the server: HTTP ' + error.status +
      (error.code ? ' ' + error.code : '') + (error.message ? ': ' + error.message : '') + '.' +
      (error.detail ? ' ' + error.detail : '');
  }

  // A refused key ends the sign-in wherever it is noticed.
  function handle(error, what, place) {
    if (error instanceof ApiError && error.status === 403) {
      signOut(describe(error));
      return;
    }
    if (place) {
      say(place, describe(error, what), 'error');
    } else {
      notify(describe(error, what), 'error');
    }
  }

  // -- sign-in ---------------------------------------------------------------------------

  function storedKey() {
    try {
      return window.sessionStorage.getItem(KEY_STORE);
    } catch (e) {
      return null;
    }
  }

  function storeKey(key) {
    try {
      if (key) {
        window.sessionStorage.setItem(KEY_STORE, key);
      } else {
        window.sessionStorage.removeItem(KEY_STORE);
      }
    } catch (e) {
      // no sessionStorage (private mode): the key lives in memory only
    }
  }

  // Any operator call proves a key. The denials report is wanted anyway; a server without
  // it is asked for a limit, which every version has.
  function checkKey() {
    return loadDenials().catch(function (error) {
      if (!isUnavailable(error)) throw error;
      return api('GET', accountParts('console-key-check').concat('limit'));
    });
  }

  function signIn(event) {
    event.preventDefault();
    var input = $('key-input');
    var key = input.value.trim();
    if (!key) {
      notify('Type an operator key to sign in.', 'error');
      input.focus();
      return;
    }
    state.key = key;
    state.generation++;
    var generation = ++state.keyGeneration;
    $('sign-in').disabled = true;
    notify('Checking the key…');
    checkKey().then(
      function () {
        if (generation !== state.keyGeneration) return;
        storeKey(key);
        input.value = '';
        notify('');
        enterWorkspace();
      },
      function (error) {
        if (generation !== state.keyGeneration) return;
        state.key = null;
        var text = error instanceof ApiError && error.status === 403
          ? 'That operator key was not accepted (403 SRM-0006). Check it and try again.'
          : describe(error);
        notify(text, 'error');
        input.focus();
        input.select();
      }
    ).then(function () {
      $('sign-in').disabled = false;
    });
  }

  function signOut(text) {
    state.key = null;
    state.generation++;
    state.keyGeneration++;
    storeKey(null);
    stopRefresh();
    closeAccount();
    $('key-input').value = '';
    $('account-input').value = '';
    $('denials-report').replaceChildren();
    if (window.location.hash) {
      window.history.replaceState(null, '', window.location.pathname + window.location.search);
    }
    show($('workspace'), false);
    show($('session-bar'), false);
    show($('sign-in-view'), true);
    notify(text || 'Signed out.', text ? 'error' : 'ok');
    $('key-input').focus();
  }

  function enterWorkspace() {
    show($('sign-in-view'), false);
    show($('workspace'), true);
    show($('session-bar'), true);
    var account = hashAccount();
    if (account) {
      lookUp(account);
    } else {
      $('account-input').focus();
    }
  }

  // -- account lookup --------------------------------------------------------------------

  function hashAccount() {
    var match = /^#account=(.*)$/.exec(window.location.hash);
    if (!match) return null;
    try {
      return decodeURIComponent(match[1]) || null;
    } catch (e) {
      return null;
    }
  }

  function accountHash(account) {
    return '#account=' + encodeURIComponent(account);
  }

  function search(event) {
    event.preventDefault();
    var account = $('account-input').value.trim();
    if (!account || Array.from(account).length > MAX_ACCOUNT_ID) {
      notify(account ? 'An account id has at most ' + MAX_ACCOUNT_ID + ' characters.'
        : 'Type an account id to look it up.', 'error');
      $('account-input').focus();
      return;
    }
    if (hashAccount() === account) {
      lookUp(account);
    } else {
      window.location.hash = accountHash(account); // hashchange looks it up
    }
  }

  function onHashChange() {
    var account = hashAccount();
    if (state.key && account) lookUp(account);
  }

  function lookUp(account) {
    if (!addressable(account)) {
      // an account no request can name: say so rather than ask for another path
      closeAccount();
      $('account-input').value = account;
      notify(unaddressableText(new Unaddressable('account', account)), 'error');
      return;
    }
    state.account = account;
    state.generation++;
    state.pages = [null];
    state.limit = null;
    $('account-input').value = account;
    $('account-name').textContent = account;
    $('account-summary').textContent = 'Loading…';
    $('sessions').replaceChildren();
    show($('sessions-empty'), false);
    say($('sessions-error'), '');
    say($('limits-error'), '');
    show($('end-all-box'), false);
    resetHousehold();
    show($('account-view'), true);
    show($('household'), true);
    show($('limits'), true);
    show($('usage'), true);
    notify('');
    refreshSessions();
    loadLimit();
    loadUsage();
  }

  function resetHousehold() {
    state.registry = null;
    state.removal = null;
    state.home = null;
    state.missing = {};
    show($('device-box'), false);
    $('devices-summary').textContent = 'Loading…';
    $('devices-body').replaceChildren();
    show($('devices-empty'), false);
    say($('devices-error'), '');
    $('home-networks').replaceChildren();
    $('home-input').value = '';
    $('home-save').disabled = false;
    show($('home-form'), true);
    say($('home-error'), '');
  }

  function closeAccount() {
    state.account = null;
    state.generation++;
    show($('account-view'), false);
    show($('household'), false);
    resetHousehold();
    show($('limits'), false);
    show($('usage'), false);
    $('sessions').replaceChildren();
    $('rules-body').replaceChildren();
    $('usage-chart').replaceChildren();
  }

  // -- sessions --------------------------------------------------------------------------

  function stopRefresh() {
    if (state.timer !== null) {
      window.clearTimeout(state.timer);
      state.timer = null;
    }
  }

  function scheduleRefresh() {
    stopRefresh();
    state.timer = window.setTimeout(refreshSessions, REFRESH_MS);
  }

  function refreshSessions() {
    stopRefresh();
    if (!state.key || !state.account) return;
    if (document.hidden) {
      scheduleRefresh();
      return;
    }
    var generation = state.generation;
    var account = state.account;
    var cursor = state.pages[state.pages.length - 1];
    api('GET', accountParts(account).concat('sessions'), { limit: PAGE_SIZE, cursor: cursor }).then(
      function (listing) {
        if (generation !== state.generation) return;
        say($('sessions-error'), '');
        renderSessions(listing || {});
        refreshHousehold();
        scheduleRefresh();
      },
      function (error) {
        if (generation !== state.generation) return;
        if (error instanceof ApiError && error.status === 400 && state.pages.length > 1) {
          // a cursor the server no longer takes: start the walk again
          state.pages = [null];
          notify('The list changed while you were paging; back to the first page.', 'ok');
          refreshSessions();
          return;
        }
        handle(error, 'The session list', $('sessions-error'));
        if (state.key) scheduleRefresh();
      }
    );
  }

  function byActiveThenNewest(a, b) {
    var active = (b.state === 'ACTIVE') - (a.state === 'ACTIVE');
    if (active) return active;
    return String(b.createdAt || '').localeCompare(String(a.createdAt || ''));
  }

  function renderSessions(listing) {
    var sessions = Array.isArray(listing.sessions) ? listing.sessions.slice() : [];
    sessions.sort(byActiveThenNewest);
    state.activeCount = Number(listing.activeCount) || 0;
    var max = listing.maxSessions;
    $('account-summary').textContent = state.activeCount + ' active of ' +
      (max === undefined || max === null ? '?' : max) + ' allowed';

    // keep the keyboard focus on the same control of the same session across a refresh
    var focused = document.activeElement;
    var keep = null;
    if (focused && focused.dataset && focused.dataset.sessionAction) {
      keep = { id: focused.dataset.sessionRef, action: focused.dataset.sessionAction };
    }

    var rows = sessions.map(sessionRow);
    $('sessions').replaceChildren.apply($('sessions'), rows);
    show($('sessions-empty'), rows.length === 0 && state.pages.length === 1);
    $('end-all').disabled = state.activeCount === 0;

    if (keep) {
      var again = $('sessions').querySelector(
        '[data-session-action="' + keep.action + '"][data-session-ref="' + cssEscape(keep.id) + '"]');
      if (again) again.focus();
    }

    var next = listing.next;
    var hasNext = typeof next === 'string' && next !== '';
    var page = state.pages.length;
    $('next-page').disabled = !hasNext;
    $('next-page').dataset.cursor = hasNext ? next : '';
    $('previous-page').disabled = page === 1;
    $('first-page').disabled = page === 1;
    show($('first-page').parentNode, hasNext || page > 1);
    $('page-info').textContent = 'Page ' + page;
    $('refresh-status').textContent = 'Updated ' + clock(new Date()) + ', every ' +
      (REFRESH_MS / 1000) + ' s';
  }

  function cssEscape(value) {
    return window.CSS && CSS.escape ? CSS.escape(value) : String(value).replace(/["\\]/g, '\\$&');
  }

  function cell(label, content, className) {
    return el('td', { 'data-label': label, class: className || null }, content);
  }

  function sessionRow(s) {
    var active = s.state === 'ACTIVE';
    var actions = [];
    if (active) {
      actions.push(el('button', {
        type: 'button',
        class: 'danger small',
        'data-testid': 'end-session',
        'data-session-action': 'end-session',
        'data-session-ref': s.sessionId,
        'aria-label': 'End session on device ' + text(s.deviceId)
      }, 'End'));
      actions.push(el('button', {
        type: 'button',
        class: 'secondary small',
        'data-testid': 'end-device',
        'data-session-action': 'end-device',
        'data-session-ref': s.sessionId,
        'aria-label': 'End every session of device ' + text(s.deviceId)
      }, 'End device'));
    }
    var row = el('tr', {
      'data-testid': 'session-row',
      'data-session-id': s.sessionId,
      'data-state': s.state,
      class: active ? 'active' : 'ended'
    },
    cell('Device', text(s.deviceId), 'mono'),
    cell('Device type', text(s.deviceType)),
    cell('Content', [el('span', { class: 'mono' }, text(s.contentID)),
      s.contentType ? el('span', { class: 'muted' }, ' ' + s.contentType) : null]),
    cell('Quality', text(s.quality)),
    cell('Network, location', [el('span', { class: 'network', 'data-testid': 'session-network' },
      text(s.network)), ' ', locationBadge(s.location)]),
    cell('State', [el('span', { class: 'badge ' + (active ? 'badge-active' : 'badge-ended'),
      'data-testid': 'session-state' }, text(s.state))].concat(flaggedBadges(s.flagged))),
    cell('Created', time(s.createdAt)),
    cell('Last keep-alive', time(s.lastKeepAliveAt)),
    cell(active ? 'Expires' : 'Ended', active ? time(s.expiresAt, 'never') : time(s.endedAt)),
    cell('End reason', text(s.endReason)),
    cell('Actions', actions, 'actions'));
    row.querySelectorAll('button').forEach(function (button) {
      button.addEventListener('click', function () {
        if (button.dataset.sessionAction === 'end-session') {
          endSession(s, button);
        } else {
          endDevice(s, button);
        }
      });
    });
    return row;
  }

  // The monitor rules (mode = "monitor") that would have refused or evicted for this
  // session's setup: one badge each, after the state
  function flaggedBadges(rules) {
    if (!Array.isArray(rules)) return [];
    return rules.map(function (rule) {
      return el('span', {
        class: 'badge badge-flagged',
        'data-testid': 'session-flagged',
        'data-rule': String(rule),
        title: 'Flagged by monitor rule ' + String(rule) + ': enforced, it would have ' +
          'refused or evicted for this setup'
      }, '⚑ ' + String(rule));
    });
  }

  // "home" or "away" (at setup) as a badge; null (no home network then) as a dash
  function locationBadge(value) {
    var known = value === 'home' || value === 'away';
    return el('span', {
      class: known ? 'badge badge-' + value : null,
      'data-testid': 'session-location',
      'data-location': known ? value : '',
      title: known ? 'Where the session was set up from: ' + value
        : 'The account had no home network when this session was set up'
    }, text(value));
  }

  function text(value) {
    return value === null || value === undefined || value === '' ? '—' : String(value);
  }

  function pad(n) {
    return n < 10 ? '0' + n : String(n);
  }

  function clock(date) {
    return pad(date.getUTCHours()) + ':' + pad(date.getUTCMinutes()) + ':' +
      pad(date.getUTCSeconds()) + ' UTC';
  }

  // UTC, the clock of the server and of the reports; the full value in the tooltip.
  function time(iso, none) {
    if (!iso) return none || '—';
    var date = new Date(iso);
    if (isNaN(date.getTime())) return String(iso);
    var today = new Date();
    var sameDay = date.toISOString().slice(0, 10) === today.toISOString().slice(0, 10);
    var shown = sameDay ? clock(date) : date.toISOString().slice(0, 16).replace('T', ' ') + ' UTC';
    return el('time', { datetime: iso, title: iso }, shown);
  }

  function afterChange(generation, text) {
    if (generation !== state.generation) return;
    notify(text, 'ok');
    refreshSessions();
  }

  function endSession(s, button) {
    var generation = state.generation;
    button.disabled = true;
    var parts = accountParts(state.account).concat('sessions', id('session', s.sessionId));
    api('DELETE', parts).then(
      function () {
        afterChange(generation, 'Session on device ' + text(s.deviceId) + ' ended.');
      },
      function (error) {
        button.disabled = false;
        if (generation === state.generation) handle(error, 'Ending a session');
      }
    );
  }

  function endDevice(s, button) {
    var generation = state.generation;
    button.disabled = true;
    var parts = accountParts(state.account).concat('devices', id('device', s.deviceId), 'sessions');
    api('DELETE', parts).then(
      function (answer) {
        var n = answer && typeof answer.ended === 'number' ? answer.ended : 0;
        afterChange(generation, 'Ended ' + n + ' session' + (n === 1 ? '' : 's') +
          ' of device ' + text(s.deviceId) + '.');
      },
      function (error) {
        button.disabled = false;
        if (generation === state.generation) handle(error, 'Ending one device\'s sessions');
      }
    );
  }

  function askEndAll() {
    $('end-all-question').textContent = 'End all ' + state.activeCount + ' active session' +
      (state.activeCount === 1 ? '' : 's') + ' of account ' + state.account + '? ' +
      'Their players stop at their next keep-alive.';
    show($('end-all-box'), true);
    $('end-all-cancel').focus();
  }

  function cancelEndAll() {
    show($('end-all-box'), false);
    $('end-all').focus();
  }

  function endAll() {
    var generation = state.generation;
    show($('end-all-box'), false);
    $('end-all').disabled = true;
    api('DELETE', accountParts(state.account).concat('sessions')).then(
      function (answer) {
        var n = answer && typeof answer.ended === 'number' ? answer.ended : 0;
        afterChange(generation, 'Ended ' + n + ' session' + (n === 1 ? '' : 's') + '.');
        $('end-all').focus();
      },
      function (error) {
        $('end-all').disabled = false;
        if (generation === state.generation) handle(error, 'Ending all sessions');
      }
    );
  }

  function nextPage() {
    var cursor = $('next-page').dataset.cursor;
    if (!cursor) return;
    state.pages.push(cursor);
    refreshSessions();
  }

  function previousPage() {
    if (state.pages.length > 1) state.pages.pop();
    refreshSessions();
  }

  function firstPage() {
    state.pages = [null];
    refreshSessions();
  }

  // -- households: registered devices and home networks ----------------------------------
  // Both are read again with every refresh of the session table (a setup registers a
  // device; network.learn_home may set a home), and at once after every change made here.

  function refreshHousehold() {
    if (!state.key || !state.account) return;
    if (!state.missing.devices) loadDevices();
    if (!state.missing.home) loadHome();
  }

  // A failed read says so in *place* until the next good read; what an action says stays
  // until the next action (a refresh does not wipe it).
  function loadFailed(place, error, what) {
    handle(error, what, place);
    place.dataset.fromLoad = 'yes';
  }

  function loaded(place) {
    if (place.dataset.fromLoad === 'yes') say(place, '');
    place.dataset.fromLoad = '';
  }

  function actionFailed(place, text) {
    say(place, text, 'error');
    place.dataset.fromLoad = '';
  }

  function missing(feature, error, place, what) {
    if (!isUnavailable(error)) return false;
    state.missing[feature] = true; // asked again only at the next lookup
    say(place, describe(error, what), 'error');
    if (feature === 'devices') {
      $('devices-summary').textContent = '';
      show($('devices-body').closest('.table-wrap'), false);
    } else {
      show($('home-form'), false);
    }
    return true;
  }

  function loadDevices() {
    var generation = state.generation;
    return api('GET', accountParts(state.account).concat('devices')).then(
      function (answer) {
        if (generation === state.generation) renderDevices(answer || {});
      },
      function (error) {
        if (generation !== state.generation) return;
        if (!missing('devices', error, $('devices-error'), 'The device registry')) {
          loadFailed($('devices-error'), error, 'The device registry');
        }
      }
    );
  }

  function plural(n, word) {
    return n + ' ' + word + (n === 1 ? '' : 's');
  }

  // "about 3 days" for a Retry-After of 259200 seconds
  function duration(seconds) {
    var s = Math.max(0, Math.round(Number(seconds) || 0));
    if (s < 120) return plural(s, 'second');
    if (s < 7200) return 'about ' + plural(Math.round(s / 60), 'minute');
    if (s < 172800) return 'about ' + plural(Math.round(s / 3600), 'hour');
    return 'about ' + plural(Math.round(s / 86400), 'day');
  }

  function renderDevices(answer) {
    var devices = Array.isArray(answer.devices) ? answer.devices : [];
    var max = Number(answer.max) || 0;
    state.registry = { max: max, nextRemovalAt: answer.nextRemovalAt || null };
    loaded($('devices-error'));
    var summary = $('devices-summary');
    if (max === 0) {
      summary.replaceChildren('No device registry on this server (devices.max is 0): ' +
        'devices are neither registered nor capped, and the swap cooldown does not apply.' +
        (devices.length ? ' The devices below were registered while it was on.' : ''));
    } else {
      summary.replaceChildren(
        el('strong', null, devices.length + ' of ' + max + ' devices registered. '),
        answer.nextRemovalAt
          ? el('span', { 'data-testid': 'devices-cooldown' },
            'Swap cooldown: the account may remove its next device after ',
            time(answer.nextRemovalAt), '.')
          : el('span', { 'data-testid': 'devices-cooldown' },
            'A device can be removed now.'));
    }

    var focused = document.activeElement;
    var keep = focused && focused.dataset && focused.dataset.deviceAction
      ? focused.dataset.deviceRef : null;
    var body = $('devices-body');
    body.replaceChildren.apply(body, devices.map(deviceRow));
    show($('devices-empty'), devices.length === 0 && max > 0);
    show(body.closest('.table-wrap'), devices.length > 0);
    if (keep !== null) {
      var again = body.querySelector('[data-device-action="remove"][data-device-ref="' +
        cssEscape(keep) + '"]');
      if (again) again.focus();
    }
  }

  function deviceRow(d) {
    var deviceId = String(d.deviceId);
    var pending = state.removal !== null && state.removal.deviceId === deviceId;
    var remove = el('button', {
      type: 'button',
      class: 'danger small',
      'data-testid': 'remove-device',
      'data-device-action': 'remove',
      'data-device-ref': deviceId,
      'aria-label': 'Remove device ' + text(deviceId) + ' from the account',
      disabled: pending
    }, 'Remove');
    remove.addEventListener('click', function () { askRemoveDevice(deviceId); });
    return el('tr', { 'data-testid': 'device-row', 'data-device-id': deviceId,
      class: pending ? 'pending' : null },
    cell('Device', text(deviceId), 'mono'),
    cell('Device type', text(d.deviceType)),
    cell('First seen', time(d.firstSeenAt)),
    cell('Last seen', time(d.lastSeenAt)),
    cell('Actions', remove, 'actions'));
  }

  function deviceButtons(stage) {
    show($('remove-device-confirm'), stage === 'confirm');
    show($('remove-device-force'), stage === 'force');
    $('remove-device-confirm').disabled = false;
    $('remove-device-force').disabled = false;
  }

  function askRemoveDevice(deviceId) {
    state.removal = { deviceId: deviceId, generation: state.generation };
    actionFailed($('devices-error'), '');
    var registry = state.registry || {};
    var cooldown = registry.max > 0
      ? ' A removal starts the account\'s swap cooldown (if the server has one), during ' +
        'which the account cannot remove another device.'
      : '';
    $('device-question').textContent = 'Remove device ' + deviceId + ' from account ' +
      state.account + '? It is unregistered and its active sessions end now (end reason ' +
      'OPERATOR); to play again it must register anew, taking a free place.' + cooldown;
    deviceButtons('confirm');
    show($('device-box'), true);
    markPending();
    $('remove-device-cancel').focus();
  }

  function markPending() {
    var ref = state.removal ? state.removal.deviceId : null;
    $('devices-body').querySelectorAll('[data-testid="device-row"]').forEach(function (row) {
      var pending = row.dataset.deviceId === ref;
      row.classList.toggle('pending', pending);
      row.querySelector('[data-testid="remove-device"]').disabled = pending;
    });
  }

  function closeDeviceBox(focusDevice) {
    var removal = state.removal;
    state.removal = null;
    show($('device-box'), false);
    markPending();
    if (focusDevice && removal) {
      var button = $('devices-body').querySelector('[data-device-action="remove"]' +
        '[data-device-ref="' + cssEscape(removal.deviceId) + '"]');
      if (button) button.focus();
    }
  }

  // The 429 of a removal inside the swap cooldown: say why, and offer the operator's force.
  function offerForce(removal, error) {
    var wait = error.retryAfter;
    var when = wait === null ? 'later'
      : 'in ' + duration(wait) + ' (at ' + new Date(Date.now() + wait * 1000).toISOString()
        .slice(0, 16).replace('T', ' ') + ' UTC)';
    $('device-question').textContent = 'Device ' + removal.deviceId + ' was not removed ' +
      '(429 SRM-0011): this account removed a device recently, and its swap cooldown allows ' +
      'the next removal ' + when + '. The cooldown stops a shared account from swapping ' +
      'devices in and out. As an operator you can remove it anyway: it is unregistered and ' +
      'its sessions end now, and this forced removal does not restart the cooldown.';
    deviceButtons('force');
    $('remove-device-force').focus();
  }

  function removeDevice(force) {
    var removal = state.removal;
    if (!removal || removal.generation !== state.generation) return;
    var generation = state.generation;
    $('remove-device-confirm').disabled = true;
    $('remove-device-force').disabled = true;
    var parts = accountParts(state.account).concat('devices', id('device', removal.deviceId));
    api('DELETE', parts, force ? { force: 'true' } : null).then(
      function (answer) {
        if (generation !== state.generation) return;
        var n = answer && typeof answer.ended === 'number' ? answer.ended : 0;
        if (state.removal === removal) closeDeviceBox(false);
        notify('Device ' + removal.deviceId + ' removed' +
          (force ? ' (swap cooldown skipped)' : '') + ': ended ' + plural(n, 'session') + '.',
        'ok');
        $('devices-refresh').focus();
        refreshSessions(); // and the devices with it
      },
      function (error) {
        if (generation !== state.generation) return;
        if (error instanceof ApiError && error.status === 429 && !force) {
          if (state.removal === removal) offerForce(removal, error); // unless cancelled
          return;
        }
        if (state.removal === removal) closeDeviceBox(true);
        if (error instanceof ApiError && error.status === 404 && error.code === 'SRM-0004') {
          actionFailed($('devices-error'), 'Device ' + removal.deviceId + ' is not registered ' +
            'to this account (any more): nothing was removed (404 SRM-0004).');
          loadDevices();
          return;
        }
        if (error instanceof ApiError && error.status === 403) {
          handle(error);
          return;
        }
        actionFailed($('devices-error'), describe(error, 'Removing a device'));
      }
    );
  }

  function loadHome() {
    var generation = state.generation;
    return api('GET', accountParts(state.account).concat('home')).then(
      function (answer) {
        if (generation === state.generation) renderHome(answer || {});
      },
      function (error) {
        if (generation !== state.generation) return;
        if (!missing('home', error, $('home-error'), 'Home networks')) {
          loadFailed($('home-error'), error, 'Home networks');
        }
      }
    );
  }

  // *replace*: put the networks kept into the input even if it has the focus (after a change)
  function renderHome(answer, replace) {
    var networks = Array.isArray(answer.networks) ? answer.networks.map(String) : [];
    var previous = state.home;
    state.home = networks;
    loaded($('home-error'));
    var list = $('home-networks');
    if (networks.length) {
      list.replaceChildren(el('ul', { class: 'home-list' }, networks.map(function (cidr) {
        return el('li', { class: 'mono', 'data-testid': 'home-network' }, cidr);
      })));
    } else {
      list.replaceChildren(el('p', { class: 'muted', 'data-testid': 'home-none' },
        'No home network is set: new sessions get no location, and rules by location ' +
        'count every session as home.'));
    }
    var input = $('home-input');
    var changed = !previous || previous.join(',') !== networks.join(',');
    if (replace || (document.activeElement !== input && (changed || input.value === ''))) {
      input.value = networks.join(', ');
    }
    $('home-clear').disabled = networks.length === 0;
  }

  function changeHome(method, body, done) {
    var generation = state.generation;
    $('home-save').disabled = true;
    $('home-clear').disabled = true;
    api(method, accountParts(state.account).concat('home'), null, body).then(
      function (answer) {
        if (generation !== state.generation) return;
        $('home-save').disabled = false;
        actionFailed($('home-error'), '');
        renderHome(answer || {}, true); // the input shows what the server keeps
        notify(done(state.home), 'ok');
        refreshSessions();
      },
      function (error) {
        if (generation !== state.generation) return;
        $('home-save').disabled = false;
        $('home-clear').disabled = !(state.home && state.home.length);
        if (error instanceof ApiError && error.status === 400) {
          actionFailed($('home-error'), 'The home networks were not changed (400 ' +
            error.code + '): ' + (error.detail || error.message));
          $('home-input').focus();
          return;
        }
        if (error instanceof ApiError && error.status === 403) {
          handle(error);
          return;
        }
        actionFailed($('home-error'), describe(error, method === 'DELETE'
          ? 'Clearing the home networks' : 'Setting the home networks'));
      }
    );
  }

  function saveHome(event) {
    event.preventDefault();
    var networks = $('home-input').value.split(/[\s,]+/).filter(Boolean);
    changeHome('PUT', { networks: networks }, function (kept) {
      return kept.length ? 'Home networks set: ' + kept.join(', ') + '.'
        : 'Home networks cleared.';
    });
  }

  function clearHome() {
    changeHome('DELETE', undefined, function () {
      return 'Home networks cleared: new sessions get no location.';
    });
  }

  // -- limits ----------------------------------------------------------------------------

  function loadLimit() {
    var generation = state.generation;
    api('GET', accountParts(state.account).concat('limit')).then(
      function (limit) {
        if (generation === state.generation) renderLimit(limit || {});
      },
      function (error) {
        if (generation === state.generation) handle(error, 'The limit', $('limits-error'));
      }
    );
  }

  function renderLimit(limit) {
    var previous = state.limit;
    state.limit = limit;
    say($('limits-error'), '');
    $('limit-state').textContent = 'Account limit: ' + text(limit.maxSessions) +
      (limit.override ? ' (override for this account)' : ' (default)');
    var input = $('limit-input');
    var changedElsewhere = !previous || previous.maxSessions !== limit.maxSessions;
    if (document.activeElement !== input && (changedElsewhere || input.value === '')) {
      input.value = limit.maxSessions === undefined ? '' : String(limit.maxSessions);
    }
    $('limit-remove').disabled = !limit.override;
    var rules = limit.rules && typeof limit.rules === 'object' ? Object.keys(limit.rules) : [];
    $('rules-body').replaceChildren.apply($('rules-body'), rules.sort().map(function (name) {
      return ruleRow(name, limit.rules[name] || {});
    }));
    show($('rules'), rules.length > 0);
  }

  function ruleRow(name, rule) {
    var id = 'rule-' + name.replace(/[^a-z0-9-]/gi, '_');
    var input = el('input', {
      id: id,
      type: 'number',
      min: 0,
      max: 1000000,
      step: 1,
      inputmode: 'numeric',
      value: rule.max,
      'data-testid': 'rule-input',
      'data-rule': name
    });
    var save = el('button', { type: 'button', class: 'small', 'data-testid': 'rule-save',
      'data-rule': name }, 'Set');
    var remove = el('button', { type: 'button', class: 'secondary small',
      'data-testid': 'rule-remove', 'data-rule': name, disabled: !rule.override }, 'Remove');
    save.addEventListener('click', function () {
      var value = parseLimit(input.value);
      if (value === null) {
        say($('limits-error'), 'The limit of rule ' + name +
          ' must be a whole number from 0 to 1,000,000.', 'error');
        input.focus();
        return;
      }
      var rules = {};
      rules[name] = value;
      putLimit({ rules: rules }, 'Rule ' + name + ' set to ' + value + ' for this account.');
    });
    remove.addEventListener('click', function () {
      var rules = {};
      rules[name] = null;
      putLimit({ rules: rules }, 'Override of rule ' + name + ' removed.');
    });
    return el('tr', { 'data-testid': 'rule-row', 'data-rule': name },
      el('th', { scope: 'row', class: 'mono' }, name),
      el('td', { 'data-testid': 'rule-state' }, text(rule.max),
        el('span', { class: 'muted' }, rule.override ? ' (override)' : ' (default)')),
      el('td', { class: 'actions' },
        el('label', { for: id, class: 'visually-hidden' }, 'New max of rule ' + name),
        input, save, remove));
  }

  function parseLimit(raw) {
    var value = String(raw).trim();
    if (!/^\d{1,7}$/.test(value)) return null;
    var n = Number(value);
    return n <= 1000000 ? n : null;
  }

  function putLimit(body, done) {
    var generation = state.generation;
    api('PUT', accountParts(state.account).concat('limit'), null, body).then(
      function (limit) {
        if (generation !== state.generation) return;
        renderLimit(limit || {});
        notify(done, 'ok');
      },
      function (error) {
        if (generation !== state.generation) return;
        handle(error, body.rules ? 'Setting a rule override' : 'Setting the limit override',
          $('limits-error'));
      }
    );
  }

  function saveLimit(event) {
    event.preventDefault();
    var value = parseLimit($('limit-input').value);
    if (value === null) {
      say($('limits-error'), 'The account limit must be a whole number from 0 to 1,000,000.',
        'error');
      $('limit-input').focus();
      return;
    }
    putLimit({ maxSessions: value }, 'Limit override set to ' + value + ' for this account.');
  }

  function removeLimit() {
    var generation = state.generation;
    api('DELETE', accountParts(state.account).concat('limit')).then(
      function (limit) {
        if (generation !== state.generation) return;
        state.limit = null;
        renderLimit(limit || {});
        notify('Override removed: the default limit of ' + text(limit && limit.maxSessions) +
          ' applies.', 'ok');
      },
      function (error) {
        if (generation === state.generation) {
          handle(error, 'Removing the limit override', $('limits-error'));
        }
      }
    );
  }

  // -- usage chart -----------------------------------------------------------------------

  function loadUsage() {
    var generation = state.generation;
    var days = $('usage-days').value;
    var chart = $('usage-chart');
    chart.replaceChildren(el('p', { class: 'muted' }, 'Loading…'));
    api('GET', accountParts(state.account).concat('usage'), { days: days }).then(
      function (usage) {
        if (generation !== state.generation) return;
        var list = usage && Array.isArray(usage.days) ? usage.days : [];
        chart.replaceChildren.apply(chart, usageChart(list.slice().reverse()));
      },
      function (error) {
        if (generation !== state.generation) return;
        chart.replaceChildren();
        handle(error, 'Usage', chart.appendChild(el('p', { class: 'message error' })));
      }
    );
  }

  function niceMax(value) {
    if (value <= 0) return 1;
    var power = Math.pow(10, Math.floor(Math.log10(value)));
    var steps = [1, 2, 2.5, 5, 10];
    for (var i = 0; i < steps.length; i++) {
      if (steps[i] * power >= value) return steps[i] * power;
    }
    return 10 * power;
  }

  function hours(seconds) {
    var h = (Number(seconds) || 0) / 3600;
    return Math.round(h * 10) / 10;
  }

  // Days oldest first: bars of sessions started and denied (left axis), a line of watched
  // hours (right axis). The same figures follow as a table for screen readers and copying.
  function usageChart(days) {
    var W = 520, H = 230, left = 34, right = 46, top = 14, bottom = 34;
    var plotW = W - left - right, plotH = H - top - bottom;
    var countMax = niceMax(Math.max.apply(null, [0].concat(days.map(function (d) {
      return Math.max(Number(d.started) || 0, Number(d.denied) || 0);
    }))));
    var hourMax = niceMax(Math.max.apply(null, [0].concat(days.map(function (d) {
      return hours(d.watchedSeconds);
    }))));
    var slot = plotW / Math.max(days.length, 1);
    var bar = Math.max(1, Math.min(18, slot * 0.36));
    var y = function (v, max) { return top + plotH - (v / max) * plotH; };

    var chart = svg('svg', {
      viewBox: '0 0 ' + W + ' ' + H,
      role: 'img',
      'aria-labelledby': 'usage-title',
      class: 'usage-svg',
      'data-testid': 'usage-svg'
    }, svg('title', { id: 'usage-title' }, 'Sessions started and denied, and hours watched, ' +
      'per UTC day over the last ' + days.length + ' days'));

    [0, 0.5, 1].forEach(function (f) {
      var yy = y(countMax * f, countMax);
      chart.appendChild(svg('line', { x1: left, x2: W - right, y1: yy, y2: yy, class: 'grid' }));
      chart.appendChild(svg('text', { x: left - 6, y: yy + 4, class: 'axis', 'text-anchor': 'end' },
        String(Math.round(countMax * f * 10) / 10)));
      chart.appendChild(svg('text', { x: W - right + 6, y: yy + 4, class: 'axis axis-hours' },
        String(Math.round(hourMax * f * 10) / 10) + ' h'));
    });

    var every = Math.ceil(days.length / 6);
    var points = [];
    days.forEach(function (d, i) {
      var x = left + slot * i + slot / 2;
      var started = Number(d.started) || 0, denied = Number(d.denied) || 0;
      var watched = hours(d.watchedSeconds);
      chart.appendChild(svg('rect', { x: x - bar, y: y(started, countMax), width: bar,
        height: top + plotH - y(started, countMax), class: 'bar-started' },
        svg('title', null, text(d.date) + ': ' + started + ' started')));
      chart.appendChild(svg('rect', { x: x, y: y(denied, countMax), width: bar,
        height: top + plotH - y(denied, countMax), class: 'bar-denied' },
        svg('title', null, text(d.date) + ': ' + denied + ' denied')));
      points.push([x, y(watched, hourMax), d.date, watched]);
      if ((days.length - 1 - i) % every === 0) {
        chart.appendChild(svg('text', { x: x, y: H - bottom + 16, class: 'axis',
          'text-anchor': 'middle' }, String(d.date || '').slice(5)));
      }
    });
    chart.appendChild(svg('line', { x1: left, x2: W - right, y1: top + plotH, y2: top + plotH,
      class: 'baseline' }));
    if (points.length) {
      chart.appendChild(svg('polyline', { class: 'line-hours', points: points.map(function (p) {
        return p[0].toFixed(1) + ',' + p[1].toFixed(1);
      }).join(' ') }));
      points.forEach(function (p) {
        chart.appendChild(svg('circle', { cx: p[0], cy: p[1], r: 3, class: 'dot-hours' },
          svg('title', null, text(p[2]) + ': ' + p[3] + ' h watched')));
      });
    }

    var legend = el('ul', { class: 'legend' },
      el('li', null, el('span', { class: 'swatch swatch-started', 'aria-hidden': 'true' }), 'started'),
      el('li', null, el('span', { class: 'swatch swatch-denied', 'aria-hidden': 'true' }), 'denied'),
      el('li', null, el('span', { class: 'swatch swatch-hours', 'aria-hidden': 'true' }),
        'hours watched (right axis)'));

    var quiet = days.every(function (d) {
      return !Number(d.started) && !Number(d.denied) && !Number(d.watchedSeconds);
    });
    var table = el('table', { class: 'usage-table' },
      el('thead', null, el('tr', null, el('th', { scope: 'col' }, 'Day (UTC)'),
        el('th', { scope: 'col' }, 'Started'), el('th', { scope: 'col' }, 'Denied'),
        el('th', { scope: 'col' }, 'Flagged'),
        el('th', { scope: 'col' }, 'Hours watched'), el('th', { scope: 'col' }, 'Peak active'))),
      el('tbody', null, days.slice().reverse().map(function (d) {
        return el('tr', null, el('td', null, text(d.date)), el('td', null, text(d.started)),
          el('td', null, text(d.denied)),
          el('td', { 'data-testid': 'usage-flagged' }, d.flagged === undefined ? '—'
            : String(Number(d.flagged) || 0)),
          el('td', null, String(hours(d.watchedSeconds))),
          el('td', null, text(d.peakActive)));
      })));
    return [
      chart,
      legend,
      quiet ? el('p', { class: 'muted' }, 'No activity in these days.') : null,
      el('details', null, el('summary', null, 'Figures as a table'), table)
    ].filter(Boolean);
  }

  // -- denials report --------------------------------------------------------------------

  // The panel ranks accounts by denied setups, or (its toggle) by setups flagged by monitor
  // rules; an answer for the ranking no longer asked for is dropped
  function loadDenials() {
    var generation = state.keyGeneration;
    var flagged = $('denials-flagged').checked;
    var report = $('denials-report');
    var query = { top: DENIALS_TOP };
    if (flagged) query.flagged = 'true';
    $('denials-heading').textContent = flagged ? 'Flagged today' : 'Denials today';
    var current = function () {
      return generation === state.keyGeneration && $('denials-flagged').checked === flagged;
    };
    return api('GET', ['reports', 'denials'], query).then(function (answer) {
      if (current()) renderDenials(answer || {}, flagged);
      return answer;
    }, function (error) {
      if (current()) {
        report.replaceChildren(el('p', { class: 'message error' },
          describe(error, 'The denials report')));
      }
      throw error;
    });
  }

  function refreshDenials() {
    loadDenials().catch(function (error) {
      if (error instanceof ApiError && error.status === 403) handle(error);
    });
  }

  function renderDenials(answer, flagged) {
    var accounts = Array.isArray(answer.accounts) ? answer.accounts : [];
    var report = $('denials-report');
    report.dataset.ranking = flagged ? 'flagged' : 'denied';
    var heading = el('p', { class: 'muted' }, (flagged
      ? 'Accounts whose setups monitor rules flagged (they would have been refused or ' +
        'caused an eviction) on '
      : 'Accounts turned away at their limit on ') + text(answer.date) + ' (UTC), most first.');
    if (!accounts.length) {
      report.replaceChildren(heading, el('p', null,
        flagged ? 'No flagged setups so far today.' : 'No denials so far today.'));
      return;
    }
    report.replaceChildren(heading, el('ol', { class: 'denials' }, accounts.map(function (a) {
      var link = el('a', { href: accountHash(String(a.accountId)), class: 'mono',
        'data-testid': 'denials-account' }, text(a.accountId));
      return el('li', null, link, el('span', { class: 'count' },
        flagged ? text(a.flagged) + ' flagged' : text(a.denied) + ' denied'));
    })));
  }

  // -- start -----------------------------------------------------------------------------

  function start() {
    $('sign-in-form').addEventListener('submit', signIn);
    $('sign-out').addEventListener('click', function () { signOut(); });
    $('search-form').addEventListener('submit', search);
    $('end-all').addEventListener('click', askEndAll);
    $('end-all-confirm').addEventListener('click', endAll);
    $('end-all-cancel').addEventListener('click', cancelEndAll);
    $('end-all-box').addEventListener('keydown', function (event) {
      if (event.key === 'Escape') cancelEndAll();
    });
    $('next-page').addEventListener('click', nextPage);
    $('previous-page').addEventListener('click', previousPage);
    $('first-page').addEventListener('click', firstPage);
    $('limit-form').addEventListener('submit', saveLimit);
    $('limit-remove').addEventListener('click', removeLimit);
    $('usage-days').addEventListener('change', function () {
      if (state.account) loadUsage();
    });
    $('denials-refresh').addEventListener('click', refreshDenials);
    $('denials-flagged').addEventListener('change', refreshDenials);
    $('devices-refresh').addEventListener('click', refreshHousehold);
    $('remove-device-confirm').addEventListener('click', function () { removeDevice(false); });
    $('remove-device-force').addEventListener('click', function () { removeDevice(true); });
    $('remove-device-cancel').addEventListener('click', function () { closeDeviceBox(true); });
    $('device-box').addEventListener('keydown', function (event) {
      if (event.key === 'Escape') closeDeviceBox(true);
    });
    $('home-form').addEventListener('submit', saveHome);
    $('home-clear').addEventListener('click', clearHome);
    window.addEventListener('hashchange', onHashChange);
    document.addEventListener('visibilitychange', function () {
      if (!document.hidden && state.account && state.key) refreshSessions();
    });

    if (document.body.dataset.operatorKeys === 'none') {
      show($('no-keys'), true);
      return;
    }
    state.key = storedKey();
    if (state.key) {
      enterWorkspace();
      refreshDenials();
    } else {
      show($('sign-in-view'), true);
      $('key-input').focus();
    }
  }

  start();
})();
