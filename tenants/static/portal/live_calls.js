// The live calls page (tenants/templates/tenants/live_calls.html): rows follow the calls
// of the server as its worker reports them, over Server-Sent Events. A static file, not an
// inline script: the Content-Security-Policy allows only the portal's own files.
(() => {
  const table = document.getElementById("live-calls");
  const body = document.getElementById("live-rows");
  const status = document.getElementById("live-status");
  const empty = document.getElementById("no-live-calls");
  const calls = new Map();  // call_id -> {row, state, ts, start, since, ended}
  const KEEP_RELEASED = 60;  // seconds a released call stays on the page
  let offset = 0;  // the server's clock minus the browser's, in seconds
  const now = () => Date.now() / 1000 + offset;

  function clock(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    const h = Math.floor(seconds / 3600), m = Math.floor(seconds / 60) % 60, s = seconds % 60;
    const mmss = String(m).padStart(2, "0") + ":" + String(s).padStart(2, "0");
    return h ? h + ":" + mmss : mmss;
  }

  function draw(call) {
    const cells = call.row.children;
    call.row.className = "state-" + call.state;
    call.row.dataset.state = call.state;
    cells[2].textContent = table.dataset[call.state] || call.state;
    const from = call.start ?? call.since;
    cells[3].textContent = (call.start === null ? "≥ " : "") + clock((call.ended ?? now()) - from);
  }

  function apply(data) {
    let call = calls.get(data.call_id);
    if (call && data.ts < call.ts) return;  // older news than what the row shows
    if (!call) {
      const row = document.createElement("tr");
      row.dataset.callId = data.call_id;
      for (const text of [data.caller, data.callee, "", ""]) {
        const cell = document.createElement("td");
        cell.textContent = text;
        row.appendChild(cell);
      }
      row.children[3].className = "elapsed";
      body.prepend(row);
      call = {row, start: null, since: data.ts, ended: null};
      calls.set(data.call_id, call);
    }
    if (data.state === "initiated") call.start = data.ts;
    call.state = data.state;
    call.ts = data.ts;
    call.row.dataset.ts = data.ts;  // when the worker saw the change (UTC epoch seconds)
    call.ended = data.state === "released" ? data.ts : null;
    draw(call);
  }

  function release(id, at) {
    const call = calls.get(id);
    if (call && call.state !== "released") {
      call.state = "released";
      call.ended = at;
      draw(call);
    }
  }

  function tick() {
    for (const [id, call] of calls) {
      if (call.ended !== null && now() - call.ended > KEEP_RELEASED) {
        call.row.remove();
        calls.delete(id);
      } else {
        draw(call);
      }
    }
    empty.hidden = calls.size > 0;
  }

  function onSnapshot(event) {
    // On every (re)connection: the calls in progress now. A call on the page but not
    // among them ended while the connection was down.
    const data = JSON.parse(event.data);
    offset = data.now - Date.now() / 1000;
    const current = new Set(data.calls.map((call) => call.call_id));
    for (const id of calls.keys()) if (!current.has(id)) release(id, data.now);
    data.calls.forEach(apply);
    tick();
  }

  function onChanges(event) {
    const data = JSON.parse(event.data);
    offset = data.now - Date.now() / 1000;
    data.calls.forEach(apply);
    tick();
  }

  function connect() {
    const source = new EventSource(table.dataset.url);
    source.onopen = () => { status.textContent = status.dataset.live; };
    source.onerror = () => {
      status.textContent = status.dataset.lost;
      // EventSource retries a dropped connection itself, but gives up on an error
      // answer (a portal restarting, say): try again after 1-5 s, spread out so that
      // many viewers do not all come back at the same moment.
      if (source.readyState === EventSource.CLOSED) {
        setTimeout(connect, 1000 + Math.random() * 4000);
      }
    };
    source.addEventListener("snapshot", onSnapshot);
    source.addEventListener("changes", onChanges);
  }

  connect();
  setInterval(tick, 1000);
})();
