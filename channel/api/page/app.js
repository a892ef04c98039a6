// The node's trading page: vanilla JS, no build step. It talks to the node's own API on the
// same origin: JSON-RPC over POST /rpc (Authorization: Bearer <token>) and one WebSocket
// (/ws?token=...) for the live topics. Amounts are e9 integers in decimal strings: they are
// shown and parsed with BigInt, never through floats.
"use strict";

const TOKEN_KEY = "parley-api-token";
const E9 = 10n ** 9n;
const MAX_TRADES = 30;
const MAX_POINTS = 120;
const POLL_MS = 1500;

const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  me: null,            // this node's participant, 0x hex
  markets: [],         // parley_markets
  bySymbol: new Map(),
  books: new Map(),    // market -> {seq, bids: Map(price -> qty), asks: Map, sub}
  trades: new Map(),   // market -> [fill], oldest first
  orders: new Map(),   // order_id -> order
  fills: new Map(),    // fill_id -> own fill
  positions: {seq: null, rows: new Map(), sub: null},
  margin: null,
  tokens: [],
  ws: null,
  wsReady: null,
  pending: new Map(),  // WebSocket request id -> {resolve, reject}
  handlers: new Map(), // subscription id -> function(event)
  nextId: 1,
  exitRunning: false,
};

const $ = (id) => document.getElementById(id);

// -- errors: always shown as text ----------------------------------------------------------------

class ApiError extends Error {
  constructor(message, code, data) {
    super(message);
    this.code = code;
    this.data = data;
  }
}

function showError(what, error) {
  const box = document.createElement("div");
  box.className = "error";
  let text = error instanceof Error ? error.message : String(error);
  if (error instanceof ApiError && error.code !== undefined) {
    text += ` (code ${error.code}${error.data && error.data.reason ? ", reason " + error.data.reason : ""})`;
  }
  box.textContent = `${what}: ${text}`;
  $("errors").prepend(box);
  while ($("errors").children.length > 5) $("errors").lastChild.remove();
}

function clearErrors() { $("errors").replaceChildren(); }

// -- numbers ---------------------------------------------------------------------------------------

function fmt(e9, places = 9) {
  if (e9 === null || e9 === undefined) return "–";
  let n = BigInt(e9);
  const negative = n < 0n;
  if (negative) n = -n;
  const whole = n / E9;
  let frac = (n % E9).toString().padStart(9, "0").slice(0, Math.max(0, places));
  if (places > 0 && places < 9) frac = frac.padEnd(places, "0");
  const text = frac.length ? `${whole}.${frac}` : `${whole}`;
  return negative ? `-${text}` : text;
}

function parseE9(text, what) {
  const value = String(text).trim();
  const match = /^([0-9]{1,11})(?:\.([0-9]{1,9}))?$/.exec(value);
  if (!match) throw new Error(`${what} must be a decimal number with at most 9 decimal places, not "${value}"`);
  return (BigInt(match[1]) * E9 + BigInt((match[2] || "").padEnd(9, "0"))).toString();
}

function priceText(market, e9) {
  const m = state.bySymbol.get(market);
  return fmt(e9, m ? Math.max(m.price_decimals, 0) : 9);
}

function qtyText(market, e9) {
  const m = state.bySymbol.get(market);
  return fmt(e9, m ? Math.max(m.qty_decimals, 0) : 9);
}

function short(hex) { return hex ? `${hex.slice(0, 6)}…${hex.slice(-4)}` : ""; }

// -- the API ---------------------------------------------------------------------------------------

async function rpc(method, params = []) {
  let response;
  try {
    response = await fetch("/rpc", {
      method: "POST",
      headers: {"Content-Type": "application/json", "Authorization": `Bearer ${state.token}`},
      body: JSON.stringify({jsonrpc: "2.0", id: state.nextId++, method, params}),
    });
  } catch (error) {
    throw new ApiError(`the node does not answer (${error.message})`);
  }
  if (response.status === 401) {
    forgetToken();
    throw new ApiError("the API token is wrong (see <data_dir>/api-token)", 401);
  }
  let body;
  try {
    body = await response.json();
  } catch (error) {
    throw new ApiError(`HTTP ${response.status}: not a JSON-RPC answer`);
  }
  if (body.error) throw new ApiError(body.error.message, body.error.code, body.error.data);
  return body.result;
}

function wsUrl() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${location.host}/ws?token=${encodeURIComponent(state.token)}`;
}

function openSocket() {
  state.wsReady = new Promise((resolve, reject) => {
    const ws = new WebSocket(wsUrl());
    state.ws = ws;
    ws.onopen = () => { setLive(true); resolve(ws); };
    ws.onerror = () => reject(new ApiError("the WebSocket did not open"));
    ws.onmessage = (message) => onSocketMessage(JSON.parse(message.data));
    ws.onclose = () => {
      setLive(false);
      for (const {reject: fail} of state.pending.values()) fail(new ApiError("the WebSocket closed"));
      state.pending.clear();
      state.handlers.clear();
      if (state.token) setTimeout(() => connectLive().catch((e) => showError("reconnecting", e)), 2000);
    };
  });
  return state.wsReady;
}

function onSocketMessage(message) {
  if (message.method === "parley_subscription") {
    const handler = state.handlers.get(message.params.subscription);
    if (handler) {
      try { handler(message.params.result); } catch (error) { showError("a live update", error); }
    }
    return;
  }
  if (message.method === "parley_subscription_dropped") {
    showError("live updates", `subscription dropped: ${message.params.reason}; resubscribing`);
    state.ws.close();
    return;
  }
  const waiting = state.pending.get(message.id);
  if (!waiting) return;
  state.pending.delete(message.id);
  if (message.error) waiting.reject(new ApiError(message.error.message, message.error.code, message.error.data));
  else waiting.resolve(message.result);
}

async function wsCall(method, params) {
  const ws = await state.wsReady;
  const id = state.nextId++;
  const answer = new Promise((resolve, reject) => state.pending.set(id, {resolve, reject}));
  ws.send(JSON.stringify({jsonrpc: "2.0", id, method, params}));
  return answer;
}

async function subscribe(topic, params, handler) {
  // events that arrive before the id is known are queued by the server after the answer
  const id = await wsCall("parley_subscribe", [topic, params]);
  state.handlers.set(id, handler);
  return id;
}

async function unsubscribe(id) {
  state.handlers.delete(id);
  try { await wsCall("parley_unsubscribe", [id]); } catch (error) { /* the socket went: nothing to end */ }
}

function setLive(on) {
  $("live").textContent = on ? "live" : "offline";
  $("live").className = `badge ${on ? "on" : "off"}`;
}

// -- the token -------------------------------------------------------------------------------------

function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  $("app").hidden = true;
  $("login").hidden = false;
}

$("token-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  state.token = $("token").value.trim();
  clearErrors();
  try {
    await rpc("parley_stats");
  } catch (error) {
    showError("connecting", error);
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, state.token);
  $("token").value = "";
  start().catch((error) => showError("starting", error));
});

// -- markets: the ladder, trades and a chart ---------------------------------------------------------

function marketCard(market) {
  const card = document.createElement("article");
  card.className = "market";
  card.id = `market-${market.symbol}`;
  card.dataset.market = market.symbol;
  card.innerHTML = `
    <h3></h3>
    <div class="mark muted"></div>
    <div class="ladder">
      <table class="bids"><thead><tr><th>bid</th><th>qty</th></tr></thead><tbody></tbody></table>
      <table class="asks"><thead><tr><th>ask</th><th>qty</th></tr></thead><tbody></tbody></table>
    </div>
    <h4>Trades</h4>
    <svg class="chart" viewBox="0 0 300 80" preserveAspectRatio="none"><polyline points=""></polyline></svg>
    <table class="trades"><thead><tr><th>price</th><th>qty</th><th>taker</th><th>status</th></tr></thead><tbody></tbody></table>`;
  card.querySelector("h3").textContent = `${market.symbol} (${market.kind})`;
  return card;
}

function renderBook(market) {
  const book = state.books.get(market);
  const card = $(`market-${market}`);
  if (!book || !card) return;
  for (const side of ["bids", "asks"]) {
    const levels = [...book[side].entries()].sort((a, b) => {
      const d = BigInt(a[0]) - BigInt(b[0]);
      return side === "bids" ? (d > 0n ? -1 : d < 0n ? 1 : 0) : (d > 0n ? 1 : d < 0n ? -1 : 0);
    });
    const body = card.querySelector(`table.${side} tbody`);
    body.replaceChildren(...levels.slice(0, 15).map(([price, qty]) => {
      const row = document.createElement("tr");
      row.dataset.price = price;
      row.innerHTML = `<td class="price"></td><td class="qty"></td>`;
      row.children[0].textContent = priceText(market, price);
      row.children[1].textContent = qtyText(market, qty);
      return row;
    }));
  }
}

async function subscribeBook(market) {
  const old = state.books.get(market);
  if (old && old.sub) await unsubscribe(old.sub);
  const book = {seq: null, bids: new Map(), asks: new Map(), sub: null};
  state.books.set(market, book);
  book.sub = await subscribe("book", {market, depth: 50}, (event) => {
    if (event.type === "snapshot") {
      book.seq = event.seq;
      book.bids = new Map(event.bids.map(([p, q]) => [p, q]));
      book.asks = new Map(event.asks.map(([p, q]) => [p, q]));
    } else {
      if (book.seq === null || event.seq !== book.seq + 1) {  // a gap: start again from a snapshot
        subscribeBook(market).catch((error) => showError(`${market} book`, error));
        return;
      }
      book.seq = event.seq;
      for (const side of ["bids", "asks"]) {
        for (const [price, qty] of event[side]) {
          if (qty === "0") book[side].delete(price); else book[side].set(price, qty);
        }
      }
    }
    renderBook(market);
  });
}

function renderTrades(market) {
  const card = $(`market-${market}`);
  const trades = state.trades.get(market) || [];
  if (!card) return;
  const recent = trades.slice(-MAX_TRADES).reverse();
  card.querySelector("table.trades tbody").replaceChildren(...recent.map((fill) => {
    const row = document.createElement("tr");
    row.dataset.fill = fill.fill_id;
    row.innerHTML = `<td></td><td></td><td></td><td></td>`;
    row.children[0].textContent = priceText(market, fill.price);
    row.children[1].textContent = qtyText(market, fill.qty);
    row.children[2].textContent = fill.side;
    row.children[2].className = fill.side;
    row.children[3].textContent = fill.final ? "final" : "tentative";
    row.children[3].className = fill.final ? "final" : "tentative";
    return row;
  }));
  const points = trades.slice(-MAX_POINTS).map((fill) => Number(BigInt(fill.price) / 1000n));
  const line = card.querySelector("svg.chart polyline");
  if (points.length === 0) { line.setAttribute("points", ""); return; }
  const low = Math.min(...points), high = Math.max(...points);
  const span = high - low || 1;
  if (points.length === 1) points.push(points[0]);  // one trade: a flat line across
  const step = 300 / (points.length - 1);
  line.setAttribute("points", points.map((p, i) =>
    `${(i * step).toFixed(1)},${(high === low ? 40 : 72 - ((p - low) / span) * 64).toFixed(1)}`).join(" "));
}

function upsert(list, fill) {
  const at = list.findIndex((f) => f.fill_id === fill.fill_id);
  if (fill.event === "vanished") { if (at >= 0) list.splice(at, 1); return; }
  if (at >= 0) list[at] = fill; else list.push(fill);
}

// -- the account: balances, orders, fills, positions, margin -------------------------------------------

function cells(row, values, classes = []) {
  row.replaceChildren(...values.map((value, i) => {
    const cell = document.createElement("td");
    if (value instanceof Node) cell.append(value); else cell.textContent = value;
    if (classes[i]) cell.className = classes[i];
    return cell;
  }));
  return row;
}

async function refreshBalances() {
  const all = await rpc("parley_balances");
  const mine = all[state.me] || {};
  $("balances").querySelector("tbody").replaceChildren(...Object.entries(mine).map(([token, parts]) => {
    const row = document.createElement("tr");
    row.dataset.token = token;
    return cells(row, [token, fmt(parts.free, 4), fmt(parts.held, 4), fmt(parts.locked, 4)]);
  }));
  const to = $("transfer-to");
  if (to.options.length === 0) {
    for (const account of Object.keys(all).filter((a) => a !== state.me)) to.add(new Option(account, account));
  }
  const tokens = $("transfer-token");
  if (tokens.options.length === 0) for (const token of Object.keys(mine)) tokens.add(new Option(token, token));
}

function renderOrders() {
  const open = [...state.orders.values()].filter((o) => o.status === "open" || o.status === "pending");
  $("orders").querySelector("tbody").replaceChildren(...open.map((order) => {
    const cancel = document.createElement("button");
    cancel.type = "button";
    cancel.className = "cancel";
    cancel.textContent = "cancel";
    cancel.addEventListener("click", () => cancelOrder(order.order_id, cancel));
    const row = document.createElement("tr");
    row.dataset.order = order.order_id;
    return cells(row, [order.market, order.side, priceText(order.market, order.price),
      qtyText(order.market, order.remaining), order.status, cancel], ["", order.side]);
  }));
}

function renderFills() {
  const fills = [...state.fills.values()].slice(-50).reverse();
  $("fills").querySelector("tbody").replaceChildren(...fills.map((fill) => {
    const row = document.createElement("tr");
    row.dataset.fill = fill.fill_id;
    const status = fill.final ? "final" : "tentative";
    return cells(row, [fill.market, fill.side, priceText(fill.market, fill.price), qtyText(fill.market, fill.qty),
      fill.liquidity, fmt(fill.fee, 4), status], ["", fill.side, "", "", "", "", status]);
  }));
}

function renderPositions() {
  const rows = [...state.positions.rows.values()];
  $("positions").querySelector("tbody").replaceChildren(...rows.map((p) => {
    const row = document.createElement("tr");
    row.dataset.market = p.market;
    return cells(row, [p.market, p.side, qtyText(p.market, p.size), priceText(p.market, p.entry_price),
      priceText(p.market, p.mark_price), fmt(p.unrealised_pnl, 2),
      p.liquidation_price === null ? "none" : priceText(p.market, p.liquidation_price)],
    ["", p.side === "long" ? "buy" : "sell"]);
  }));
}

function renderMargin() {
  const collateral = state.margin ? state.margin.collateral : {};
  $("margin").querySelector("tbody").replaceChildren(...Object.entries(collateral).map(([token, m]) => {
    const row = document.createElement("tr");
    row.dataset.token = token;
    return cells(row, [token, fmt(m.account_value, 2), fmt(m.initial_margin, 2), fmt(m.maintenance_margin, 2),
      fmt(m.free_collateral, 2), m.health]);
  }));
}

async function subscribePositions() {
  const positions = state.positions;
  if (positions.sub) await unsubscribe(positions.sub);
  positions.seq = null;
  positions.sub = await subscribe("positions", {}, (event) => {
    if (event.type === "snapshot") {
      positions.rows = new Map(event.positions.map((p) => [p.market, p]));
    } else {
      if (positions.seq === null || event.seq !== positions.seq + 1) {
        subscribePositions().catch((error) => showError("positions", error));
        return;
      }
      for (const p of event.positions) positions.rows.set(p.market, p);
      for (const market of event.closed) positions.rows.delete(market);
    }
    positions.seq = event.seq;
    renderPositions();
  });
}

// -- the channel's health and the exit -----------------------------------------------------------------

async function refreshHealth() {
  const [stats, peers, checkpoints] = await Promise.all(
    [rpc("parley_stats"), rpc("parley_peers"), rpc("parley_checkpoints")]);
  $("h-peers").textContent = `${peers.connected.length} connected` +
    (peers.banned.length ? `, ${peers.banned.length} banned` : "");
  const certified = checkpoints.filter((c) => c.certified).pop();
  $("h-certified").textContent = stats.certified !== undefined
    ? `v${stats.certified}${certified ? ` (${checkpoints.length} applied)` : ""}` : "none yet";
  const chain = stats.chain;
  $("h-chain").textContent = chain
    ? `${chain.status}: v${chain.settled_version} (finalised v${chain.finalized_version})` +
      (chain.alert ? ` — alert: ${chain.alert}` : "")
    : "no chain configured";
  $("h-ops").textContent = `${stats.operations} (${stats.pending} pending)`;
  const reasons = Object.entries(stats.rejected_reasons || {});
  $("h-rejected").textContent = reasons.length
    ? reasons.map(([reason, count]) => `${reason}: ${count}`).join(", ") : "none";
  $("who").textContent = `${short(state.me)} · ${location.host}`;
}

const PHASE_TEXT = {
  idle: "no exit", starting: "starting", proposing: "proposing the checkpoint on-chain",
  challenged: "challenging an older checkpoint", waiting: "waiting out the dispute window",
  finalising: "finalising", claiming: "claiming", claimed: "finalised and claimed", failed: "failed",
};

function renderExit(status) {
  state.exitRunning = status.running;
  let text = `${PHASE_TEXT[status.phase] || status.phase}`;
  if (status.version) text += ` · checkpoint v${status.version}`;
  if (status.phase === "waiting" && status.remaining !== null) text += ` · ${status.remaining} s of the window remaining`;
  if (status.finalized && status.phase !== "claimed") text += " · finalised";
  if (status.claimed && status.claimed.length) {
    text += " · claimed " + status.claimed.map((leaf) =>
      leaf.amount_e9 !== undefined ? `${fmt(leaf.amount_e9, 4)} ${leaf.token}` : `${leaf.amount} units of ${leaf.token}`,
    ).join(", ");
  }
  if (status.error) text += ` · ${status.error}`;
  $("exit-status").textContent = text;
  $("exit-status").dataset.phase = status.phase;
  $("exit-events").replaceChildren(...(status.events || []).map((event) => {
    const item = document.createElement("li");
    item.textContent = `${event.step}: ${event.message}`;
    return item;
  }));
  $("exit-start").disabled = status.running;
}

async function refreshExit() { renderExit(await rpc("parley_exitStatus")); }

$("exit-start").addEventListener("click", () => $("exit-dialog").showModal());
$("exit-dialog").addEventListener("close", async () => {
  if ($("exit-dialog").returnValue !== "confirm") return;
  try {
    renderExit(await rpc("parley_exit"));
  } catch (error) {
    showError("emergency exit", error);
  }
});

// -- placing, cancelling, transferring -------------------------------------------------------------------

$("order-type").addEventListener("change", () => {
  const market = $("order-type").value === "market";
  $("order-price").disabled = market;
  $("order-post-only").disabled = market;
});

$("order-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const button = $("order-submit");
  button.disabled = true;
  try {
    const market = $("order-market").value;
    const type = $("order-type").value;
    const params = {market, side: $("order-side").value, qty: parseE9($("order-qty").value, "quantity"), type};
    if (type === "limit") params.price = parseE9($("order-price").value, "price");
    if ($("order-post-only").checked && type === "limit") params.tif = "post_only";
    if ($("order-reduce-only").checked) params.reduce_only = true;
    params.request_id = `page-${crypto.randomUUID()}`;
    const placed = await rpc("parley_placeOrder", params);
    if (placed.order) state.orders.set(placed.order.order_id, placed.order);
    renderOrders();
    const status = placed.order ? placed.order.status : placed.status;
    if (typeof status === "string" && status.startsWith("rejected")) showError("order", status);
  } catch (error) {
    showError("order", error);
  } finally {
    button.disabled = false;
  }
});

async function cancelOrder(orderId, button) {
  button.disabled = true;
  try {
    const cancelled = await rpc("parley_cancelOrder", {order: orderId, request_id: `page-${crypto.randomUUID()}`});
    if (cancelled.order) state.orders.set(orderId, cancelled.order);
    renderOrders();
  } catch (error) {
    showError("cancel", error);
    button.disabled = false;
  }
}

$("transfer-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    await rpc("parley_transfer", {to: $("transfer-to").value, token: $("transfer-token").value,
      amount: parseE9($("transfer-amount").value, "amount"), request_id: `page-${crypto.randomUUID()}`});
    $("transfer-amount").value = "";
    await refreshBalances();
  } catch (error) {
    showError("transfer", error);
  }
});

// -- start -------------------------------------------------------------------------------------------------

async function connectLive() {
  await openSocket();
  for (const market of state.markets) {
    await subscribeBook(market.symbol);
    state.trades.set(market.symbol, await rpc("parley_trades", [market.symbol, MAX_POINTS]));
    renderTrades(market.symbol);
    await subscribe("trades", {market: market.symbol}, (fill) => {
      upsert(state.trades.get(fill.market), fill);
      renderTrades(fill.market);
    });
  }
  for (const fill of await rpc("parley_myTrades", [null, 100])) state.fills.set(fill.fill_id, fill);
  renderFills();
  await subscribe("fills", {}, (fill) => {
    if (fill.event === "vanished") state.fills.delete(fill.fill_id); else state.fills.set(fill.fill_id, fill);
    renderFills();
    refreshBalances().catch((error) => showError("balances", error));
  });
  await subscribe("orders", {}, (event) => {
    if (event.event === "snapshot") {
      state.orders = new Map(event.orders.map((o) => [o.order_id, o]));
    } else {
      state.orders.set(event.order_id, event);
    }
    renderOrders();
    refreshBalances().catch((error) => showError("balances", error));
  });
  if (state.markets.some((m) => m.kind === "perp")) {
    $("perp").hidden = false;
    state.positions.sub = null;
    await subscribePositions();
    await subscribe("account", {}, (event) => { state.margin = event; renderMargin(); });
  }
}

async function refreshMarks() {
  if (!state.markets.some((m) => m.kind === "perp")) return;
  for (const mark of await rpc("parley_markPrices")) {
    const card = $(`market-${mark.market}`);
    if (!card) continue;
    const line = card.querySelector(".mark");
    line.dataset.price = mark.price === null ? "" : mark.price;
    if (mark.price === null) line.textContent = "no oracle price yet";
    else if (mark.fixed_at === null) line.textContent = `oracle ${priceText(mark.market, mark.price)} (fixed at the next checkpoint)`;
    else {
      line.textContent = `mark ${priceText(mark.market, mark.price)}${mark.fresh ? "" : " (stale)"}` +
        `${mark.halted ? " · halted" : ""} · funding rate ${fmt(mark.funding_rate, 6)}` +
        ` · open interest ${qtyText(mark.market, mark.open_interest)}`;
    }
  }
}

async function poll() {
  try {
    await Promise.all([refreshHealth(), refreshBalances(), refreshExit(), refreshMarks()]);
  } catch (error) {
    showError("refreshing", error);
  }
}

async function start() {
  $("login").hidden = true;
  $("app").hidden = false;
  const stats = await rpc("parley_stats");
  state.me = stats.address;
  state.markets = await rpc("parley_markets");
  state.bySymbol = new Map(state.markets.map((m) => [m.symbol, m]));
  $("markets").replaceChildren(...state.markets.map(marketCard));
  const select = $("order-market");
  select.replaceChildren(...state.markets.map((m) => new Option(m.symbol, m.symbol)));
  await poll();
  await connectLive();
  document.body.dataset.ready = "true";
  setInterval(poll, POLL_MS);
}

if (state.token) {
  start().catch((error) => {
    showError("starting", error);
  });
} else {
  $("login").hidden = false;
}
