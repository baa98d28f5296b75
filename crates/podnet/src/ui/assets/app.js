// podnet ui: the page's behaviour. The drawing itself comes from the server (/graph.svg, the
// same one `podnet lab graph -o svg` writes); this script keeps it current (server-sent
// events tell a new revision), draws the flows over it as they come, and traces between
// what is clicked. Hand-written, no library: the page must work with no network beyond
// the podnet that serves it.
'use strict';

// How long a flow stays drawn.
const FLOW_MS = 6000;
// How many flows the list keeps.
const LIST_MAX = 40;
const SVG_NS = 'http://www.w3.org/2000/svg';

const state = {
  revision: 0,
  topology: null,
  loading: false,
  again: false,
  from: null,
  flows: new Map(), // id -> flow, the ones still drawn
};

const $ = (id) => document.getElementById(id);

// Errors of the page itself go into the page too, so that a test reading the DOM sees them.
function showError(message) {
  const box = $('errors');
  const p = document.createElement('p');
  p.className = 'error';
  p.textContent = message;
  box.appendChild(p);
  box.hidden = false;
}
window.addEventListener('error', (e) => showError('error: ' + e.message));
window.addEventListener('unhandledrejection', (e) => {
  const r = e.reason;
  showError('error: ' + (r && r.message ? r.message : String(r)));
});

async function fetchOk(url) {
  const response = await fetch(url, { cache: 'no-store' });
  if (!response.ok) {
    throw new Error(url + ': ' + response.status + ' ' + (await response.text()));
  }
  return response;
}

function namespaceQuery() {
  const ns = $('namespace').value;
  return ns ? '?namespace=' + encodeURIComponent(ns) : '';
}

// Loads the topology and its drawing; a change that comes while loading loads again after.
async function load() {
  if (state.loading) {
    state.again = true;
    return;
  }
  state.loading = true;
  try {
    do {
      state.again = false;
      const q = namespaceQuery();
      const [topo, svg] = await Promise.all([fetchOk('/api/topology' + q), fetchOk('/graph.svg' + q)]);
      const data = await topo.json();
      const text = await svg.text();
      // The two answers were made apart: draw only a matching pair.
      if (String(data.revision) !== svg.headers.get('x-podnet-revision')) {
        state.again = true;
        continue;
      }
      draw(data, text);
    } while (state.again);
  } catch (e) {
    setStatus('down', 'cannot load the cluster: ' + e.message);
  } finally {
    state.loading = false;
  }
}

function draw(data, svgText) {
  const doc = new DOMParser().parseFromString(svgText, 'image/svg+xml');
  const svg = document.importNode(doc.documentElement, true);
  const picture = $('picture');
  picture.replaceChildren(svg);
  state.revision = data.revision;
  state.topology = data.topology;
  document.body.dataset.revision = String(data.revision);
  fillNamespaces(data.topology.namespaces);
  showWarnings(data.warnings);
  const t = data.topology;
  setStatus('live', `${t.nodes.length} nodes · ${t.pods.length} pods · ${t.services.length} Services · revision ${data.revision}`);
  if (state.from) {
    const el = element('pod', state.from);
    if (el) el.classList.add('selected');
    else clearSelection();
  }
  const now = Date.now();
  for (const flow of state.flows.values()) {
    drawFlow(flow, FLOW_MS - (now - flow.at_ms));
  }
}

function fillNamespaces(namespaces) {
  const select = $('namespace');
  const have = Array.from(select.options).map((o) => o.value);
  for (const ns of namespaces) {
    if (!have.includes(ns)) select.add(new Option(ns, ns));
  }
}

function showWarnings(warnings) {
  const box = $('warnings');
  box.replaceChildren(...warnings.map((w) => {
    const p = document.createElement('p');
    p.textContent = '⚠ ' + w;
    return p;
  }));
  box.hidden = warnings.length === 0;
}

function setStatus(kind, text) {
  const s = $('status');
  s.className = kind;
  s.textContent = text;
}

function element(kind, name) {
  return Array.from($('picture').querySelectorAll(`[data-kind="${kind}"]`))
    .find((e) => e.dataset.name === name) || null;
}

function byIp(ip) {
  // A pod or Service before a node: a node's address is also its host-network pods'.
  const all = Array.from($('picture').querySelectorAll('[data-ip]')).filter((e) => e.dataset.ip === ip);
  return all.find((e) => e.dataset.kind !== 'node') || all[0] || null;
}

function centre(el) {
  return [Number(el.dataset.cx), Number(el.dataset.cy)];
}

// A curve through the ends (and the Service the flow went through, when there was one).
function flowPath(points) {
  let d = `M${points[0][0]},${points[0][1]}`;
  for (let i = 1; i < points.length; i++) {
    const [x0, y0] = points[i - 1];
    const [x1, y1] = points[i];
    const bend = Math.min(60, Math.abs(x1 - x0) / 3 + 20);
    d += ` Q${(x0 + x1) / 2},${Math.min(y0, y1) - bend} ${x1},${y1}`;
  }
  return d;
}

function drawFlow(flow, ms) {
  const layer = $('picture').querySelector('#flows');
  if (!layer || ms <= 0) return;
  const ends = [flow.source, flow.via, flow.destination].filter(Boolean).map((e) => byIp(e.ip));
  const known = ends.filter(Boolean);
  if (known.length < 2) return;
  const path = document.createElementNS(SVG_NS, 'path');
  path.setAttribute('class', `flow ${flow.verdict === 'dropped' ? 'dropped' : flow.event === 'closed' ? 'closed' : 'forwarded'}`);
  path.setAttribute('d', flowPath(known.map(centre)));
  path.dataset.flowId = String(flow.id);
  path.dataset.source = flow.source.name || flow.source.ip;
  path.dataset.destination = flow.destination.name || flow.destination.ip;
  const title = document.createElementNS(SVG_NS, 'title');
  title.textContent = describe(flow);
  path.appendChild(title);
  layer.appendChild(path);
  setTimeout(() => path.remove(), ms);
}

function endText(e) {
  const addr = e.port ? `${e.ip}:${e.port}` : e.ip;
  return e.name ? `${e.name} (${addr})` : addr;
}

function describe(f) {
  let s = `${f.time} [${f.node}] ${f.verdict} ${f.protocol} ${endText(f.source)} → ${endText(f.destination)}`;
  if (f.via) s += ` via ${endText(f.via)}`;
  if (f.event === 'closed') s += f.bytes ? ` closed, ${f.bytes[0]} B / ${f.bytes[1]} B` : ' closed';
  if (f.policy) s += ` by policy ${f.policy}`;
  return s;
}

function addFlow(flow) {
  const ms = FLOW_MS - (Date.now() - flow.at_ms);
  if (ms > 0) {
    state.flows.set(flow.id, flow);
    setTimeout(() => state.flows.delete(flow.id), ms);
    drawFlow(flow, ms);
  }
  const li = document.createElement('li');
  li.className = flow.verdict;
  li.textContent = describe(flow);
  const list = $('flow-list');
  list.prepend(li);
  while (list.children.length > LIST_MAX) list.lastElementChild.remove();
}

function clearSelection() {
  state.from = null;
  $('picture').querySelectorAll('.selected').forEach((e) => e.classList.remove('selected'));
  $('selection').textContent = '';
}

// What `podnet trace` takes as the destination for a clicked element.
function destinationOf(el) {
  if (el.dataset.kind === 'pod') {
    // The pod's first declared port (`8080/TCP`), as a connection to it would use.
    const pod = state.topology.pods.find((p) => `${p.namespace}/${p.name}` === el.dataset.name);
    const port = pod && pod.ports[0];
    return 'pod/' + el.dataset.name + (port ? ':' + port.toLowerCase() : '');
  }
  const svc = state.topology.services.find((s) => `${s.namespace}/${s.name}` === el.dataset.name);
  const port = svc && svc.ports[0];
  const suffix = port ? `:${port.port}/${port.protocol.toLowerCase()}` : '';
  return 'svc/' + el.dataset.name + suffix;
}

function onClick(event) {
  const el = event.target.closest('[data-kind]');
  if (!el || (el.dataset.kind !== 'pod' && el.dataset.kind !== 'service')) return;
  if (el.dataset.kind === 'pod' && (!state.from || state.from === el.dataset.name)) {
    const again = state.from === el.dataset.name;
    clearSelection();
    if (again) return;
    state.from = el.dataset.name;
    el.classList.add('selected');
    $('selection').textContent = `from pod ${state.from}: now click a Service or another pod`;
    return;
  }
  if (!state.from) {
    $('selection').textContent = 'click a pod first: the trace starts at a pod';
    return;
  }
  trace(state.from, destinationOf(el));
}

async function trace(from, to) {
  const out = $('trace');
  out.className = 'running';
  out.textContent = `podnet trace ${from} ${to} …`;
  $('selection').textContent = `from pod ${from} to ${to}`;
  const q = `/api/trace?from=${encodeURIComponent(from)}&to=${encodeURIComponent(to)}`;
  try {
    const response = await fetch(q, { cache: 'no-store' });
    const body = await response.json();
    out.className = response.ok ? 'done' : 'failed';
    out.textContent = response.ok ? `$ ${body.command}\n${body.text}` : body.error;
  } catch (e) {
    out.className = 'failed';
    out.textContent = 'the trace failed: ' + e.message;
  }
}

function listen() {
  const events = new EventSource('/api/events');
  // Back after a loss: what changed meanwhile may have been missed.
  events.addEventListener('open', () => {
    if ($('status').className === 'down') load();
  });
  events.addEventListener('error', () => setStatus('down', 'connection to podnet ui lost; retrying…'));
  events.addEventListener('topology', (e) => {
    if (JSON.parse(e.data).revision !== state.revision) load();
  });
  events.addEventListener('flow', (e) => addFlow(JSON.parse(e.data)));
  events.addEventListener('warnings', (e) => showWarnings(JSON.parse(e.data)));
}

async function start() {
  $('picture').addEventListener('click', onClick);
  $('namespace').addEventListener('change', () => load());
  await load();
  const recent = await (await fetchOk('/api/flows')).json();
  recent.forEach(addFlow);
  listen();
}

start().catch((e) => showError('error: ' + e.message));
